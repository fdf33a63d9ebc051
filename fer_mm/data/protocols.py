"""Evaluation protocols: which actors train, validate and test in each fold.

Every protocol here is speaker-independent: an actor is in exactly one of train, validation
and test. Validation actors come from the non-test actors only, so early stopping and the
choice of checkpoint never see the test actors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    fold: int
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    def check_disjoint(self) -> None:
        a, b, c = set(self.train), set(self.val), set(self.test)
        if a & b or a & c or b & c:
            raise AssertionError(f"fold {self.fold}: actors overlap between train/val/test: {sorted((a & b) | (a & c) | (b & c))}")


def _draw_val(candidates: Sequence[int], val_fraction: float, seed: int, fold: int) -> tuple[list[int], list[int]]:
    """Split ``candidates`` into (train, val) actors, deterministically from (seed, fold).

    At least two validation actors where four or more remain: one actor alone makes model
    selection follow that actor's quirks.
    """
    candidates = sorted(candidates)
    n_val = max(2 if len(candidates) >= 4 else 1, int(round(val_fraction * len(candidates))))
    n_val = n_val if len(candidates) > 1 else 0
    val = set(np.random.default_rng([seed, fold]).choice(candidates, size=n_val, replace=False).tolist())
    return [a for a in candidates if a not in val], sorted(val)


class Protocol:
    name = "protocol"

    def __init__(self, val_fraction: float = 0.1, seed: int = 0):
        if not 0 < val_fraction < 1:
            raise ValueError(f"cv.protocol.val_fraction must be in (0, 1), got {val_fraction}")
        self.val_fraction, self.seed = val_fraction, seed

    def n_folds(self, actors: Sequence[int]) -> int:
        raise NotImplementedError

    def test_actors(self, actors: list[int], fold: int) -> list[int]:
        raise NotImplementedError

    def parts(self, actors: list[int], fold: int) -> tuple[list[int], list[int], list[int]]:
        """(train, val, test) actors of ``fold``: the protocol's test actors, validation drawn from the rest."""
        test = self.test_actors(actors, fold)
        train, val = _draw_val([a for a in actors if a not in test], self.val_fraction, self.seed, fold)
        return train, val, test

    def split(self, actors: Sequence[int], fold: int) -> Split:
        actors = sorted(set(int(a) for a in actors))
        n = self.n_folds(actors)
        if not 0 <= fold < n:
            raise ValueError(f"cv.fold={fold} is out of range: {self.name} has {n} folds over {len(actors)} actors "
                             f"(use 0..{n - 1})")
        train, val, test = self.parts(actors, fold)
        split = Split(fold, tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)))
        split.check_disjoint()
        return split


    def assign(self, clips: pd.DataFrame, fold: int) -> tuple[Split, dict[str, np.ndarray]]:
        """The fold's split and the cache rows of its train, val and test parts (by ``actor``)."""
        if (clips["actor"] < 0).all():
            raise ValueError(f"cv={self.name} splits by subject, and this data has no subject ids (FER2013 holds "
                             f"none): use its released split, cv=released")
        split = self.split(clips["actor"].unique(), fold)
        actor = clips["actor"].to_numpy()
        return split, {part: np.flatnonzero(np.isin(actor, getattr(split, part))) for part in PARTS}


PARTS = ("train", "val", "test")


class ReleasedSplit(Protocol):
    """The train / val / test split a dataset was released with (its ``part`` column): FER2013's
    Usage (Training / PublicTest / PrivateTest), or a folder set's ``train/``, ``val/``, ``test/``.

    One fold. Where the release has no validation part, ``val_fraction`` of the training images
    (drawn with ``seed``; whole subjects where the data has subject ids) validate. Whether the parts
    share subjects cannot be known without subject ids: runs record it as unknown then.
    """

    name = "released"

    def n_folds(self, actors: Sequence[int]) -> int:
        return 1

    def assign(self, clips: pd.DataFrame, fold: int) -> tuple[Split, dict[str, np.ndarray]]:
        if fold != 0:
            raise ValueError(f"cv.fold={fold} is out of range: cv=released has one fold (use 0)")
        part = clips["part"].to_numpy() if "part" in clips else np.array([""] * len(clips))
        if not np.isin(part, ("train", "test")).any():
            raise ValueError("cv=released needs a released split, and this data has none (FER2013's Usage column, or "
                             "train/ and test/ folders): use a subject-independent protocol, e.g. cv=speaker_kfold")
        rows = {p: np.flatnonzero(part == p) for p in PARTS}
        if not len(rows["val"]):
            actors = clips["actor"].to_numpy()
            train_actors = np.unique(actors[rows["train"]])
            if (train_actors >= 0).all() and len(train_actors) > 1:  # whole subjects: none both trains and validates
                _, val = _draw_val(train_actors.tolist(), self.val_fraction, self.seed, fold)
                chosen = np.isin(actors[rows["train"]], val)
            else:
                rng = np.random.default_rng([self.seed, fold])
                chosen = rng.random(len(rows["train"])) < self.val_fraction
            rows["train"], rows["val"] = rows["train"][~chosen], rows["train"][chosen]
        actors = clips["actor"].to_numpy()
        split = Split(fold, *(tuple(sorted(int(a) for a in np.unique(actors[rows[p]]))) for p in PARTS))
        return split, rows


class ImageSplit(Protocol):
    """One random split of the images into train / val / test (70/10/20 by default), seeded: for data
    released with no subject ids and no split (UTKFace). Whether a person is in two parts cannot be
    known then, and runs record it as unknown. Data with subject ids is refused: split it by subject.
    """

    name = "image_split"

    def __init__(self, train: float = 0.7, val: float = 0.1, test: float = 0.2, seed: int = 0):
        if abs(train + val + test - 1) > 1e-6 or min(train, val, test) <= 0:
            raise ValueError(f"cv.protocol.train + cv.protocol.val + cv.protocol.test must be 1, each above 0, "
                             f"got {train} + {val} + {test}")
        super().__init__(val, seed)
        self.shares = (train, val, test)

    def n_folds(self, actors: Sequence[int]) -> int:
        return 1

    def assign(self, clips: pd.DataFrame, fold: int) -> tuple[Split, dict[str, np.ndarray]]:
        if fold != 0:
            raise ValueError(f"cv.fold={fold} is out of range: cv={self.name} has one fold (use 0)")
        if (clips["actor"] >= 0).any():
            raise ValueError(f"cv={self.name} splits images at random, for data without subject ids; this data has "
                             f"subject ids: split it by subject (cv=split, cv=speaker_kfold)")
        order = np.random.default_rng([self.seed, fold]).permutation(len(clips))
        n_test = max(1, int(round(self.shares[2] * len(clips))))
        n_val = max(1, int(round(self.shares[1] * len(clips))))
        rows = dict(test=np.sort(order[:n_test]), val=np.sort(order[n_test:n_test + n_val]),
                    train=np.sort(order[n_test + n_val:]))
        return Split(fold, (-1,), (-1,), (-1,)), rows


class LeaveOneSubjectOut(Protocol):
    """Fold k tests on the k-th actor (sorted by id); validation actors are drawn from the rest."""

    name = "loso"

    def n_folds(self, actors):
        return len(set(actors))

    def test_actors(self, actors, fold):
        return [actors[fold]]


class SpeakerKFold(Protocol):
    """k folds of actors; fold i tests on group i, validation actors come from the other groups.

    ``order="by_id"`` makes the groups blocks of consecutive actor ids with the remainder in the
    last ones, as HiCMAE and AVF-MAE++ cut CREMA-D (1001-1018, 1019-1036, 1037-1054, 1055-1072,
    1073-1091): the same test folds as those papers. ``order="shuffled"`` cuts a permutation
    drawn with the seed.

    ``train_actors`` (a learning curve): each fold trains on that many of its training actors,
    drawn with the seed and the fold, the test and validation actors unchanged; None: all of them.
    """

    name = "speaker_kfold"
    ORDERS = ("by_id", "shuffled")

    def __init__(self, k: int = 5, val_fraction: float = 0.1, seed: int = 0, order: str = "by_id",
                 train_actors: int | None = None):
        super().__init__(val_fraction, seed)
        if k < 2:
            raise ValueError(f"cv.protocol.k must be at least 2, got {k}")
        if order not in self.ORDERS:
            raise ValueError(f"cv.protocol.order={order!r}: use one of {list(self.ORDERS)}")
        if train_actors is not None and train_actors < 1:
            raise ValueError(f"cv.protocol.train_actors must be at least 1 (or null: all), got {train_actors}")
        self.k, self.order, self.train_actors = k, order, train_actors

    def parts(self, actors: list[int], fold: int) -> tuple[list[int], list[int], list[int]]:
        train, val, test = super().parts(actors, fold)
        if self.train_actors is not None:
            if self.train_actors > len(train):
                raise ValueError(f"cv.protocol.train_actors={self.train_actors}: fold {fold} has {len(train)} "
                                 f"training actors")
            rng = np.random.default_rng([self.seed, fold, 1])
            train = sorted(rng.choice(train, size=self.train_actors, replace=False).tolist())
        return train, val, test

    def n_folds(self, actors):
        if len(set(actors)) < self.k:
            raise ValueError(f"cv.protocol.k={self.k} folds need at least {self.k} actors, "
                             f"the data has {len(set(actors))}")
        return self.k

    def test_actors(self, actors, fold):
        if self.order == "shuffled":
            return sorted(np.array_split(np.random.default_rng(self.seed).permutation(actors), self.k)[fold].tolist())
        size, extra = divmod(len(actors), self.k)
        ends = np.cumsum([size + (i >= self.k - extra) for i in range(self.k)])  # the remainder goes last
        return list(actors[ends[fold] - size - (fold >= self.k - extra):ends[fold]])


class SpeakerSplit(Protocol):
    """One speaker-disjoint train/val/test split by actor (70/10/20 by default), seeded."""

    name = "split"

    def __init__(self, train: float = 0.7, val: float = 0.1, test: float = 0.2, seed: int = 0):
        if abs(train + val + test - 1) > 1e-6:
            raise ValueError(f"cv.protocol.train + cv.protocol.val + cv.protocol.test must be 1, "
                             f"got {train + val + test}")
        super().__init__(val / (train + val), seed)
        self.test_fraction = test

    def n_folds(self, actors):
        return 1

    def test_actors(self, actors, fold):
        n_test = max(1, int(round(self.test_fraction * len(actors))))
        return sorted(np.random.default_rng(self.seed).choice(actors, size=n_test, replace=False).tolist())


class SpeakerPartition(Protocol):
    """A train/dev/test partition by actor counts, drawn afresh for each repeat.

    VAVL (Goncalves et al., 2023) splits CREMA-D's 91 actors into 63 train, 14 development and
    14 test actors, and its code ships five such partitions. Fold k here is the partition drawn
    with (seed, k): one permutation of the actors, cut into test, dev and train. Validation actors
    are exactly the dev actors, so model selection never sees the test actors. Unlike the k-fold
    protocols, an actor can be tested in several repeats and in none.

    The counts describe the whole corpus. On data with fewer actors (the small synthetic twin, a
    subset) each part keeps its share of the actors present, at least one each:
    ``test = max(1, round(n * test / total))``, val likewise, train the rest; a warning names
    the sizes used, and metrics.json lists the actors of every part. Scaling keeps the config
    usable on the twin; the twin's numbers were never comparable with published ones anyway.
    Data with more actors than the counts is an error: the partition would silently leave actors
    out, which is almost always a mistyped count.
    """

    name = "speaker_partition"

    def __init__(self, train: int = 63, val: int = 14, test: int = 14, repeats: int = 5, seed: int = 0):
        if min(train, val, test) < 1:
            raise ValueError(f"cv.protocol.train/val/test must each be at least 1 actor, got {train}/{val}/{test}")
        if repeats < 1:
            raise ValueError(f"cv.protocol.repeats must be at least 1, got {repeats}")
        super().__init__(val / (train + val), seed)
        self.counts, self.repeats = (int(train), int(val), int(test)), int(repeats)

    def n_folds(self, actors):
        return self.repeats

    def sizes(self, n_actors: int) -> tuple[int, int, int]:
        """(train, val, test) counts for ``n_actors`` actors: the configured ones, or their shares (see above)."""
        train, val, test = self.counts
        total = train + val + test
        if n_actors == total:
            return train, val, test
        if n_actors > total:
            raise ValueError(f"cv.protocol.train + cv.protocol.val + cv.protocol.test = {total}, but the data has "
                             f"{n_actors} actors: set counts that add up to {n_actors}")
        n_test = max(1, int(round(n_actors * test / total)))
        n_val = max(1, int(round(n_actors * val / total)))
        if n_actors - n_test - n_val < 1:
            raise ValueError(f"cv.protocol.train/val/test = {train}/{val}/{test} leave no training actor among the "
                             f"{n_actors} actors of the data")
        log.warning("the data has %d actors, not the %d that cv.protocol.train/val/test = %d/%d/%d name: "
                    "using %d/%d/%d, the same shares", n_actors, total, train, val, test,
                    n_actors - n_test - n_val, n_val, n_test)
        return n_actors - n_test - n_val, n_val, n_test

    def parts(self, actors, fold):
        _, n_val, n_test = self.sizes(len(actors))
        order = np.random.default_rng([self.seed, fold]).permutation(actors).tolist()
        return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


PROTOCOLS = {p.name: p for p in (LeaveOneSubjectOut, SpeakerKFold, SpeakerSplit, SpeakerPartition, ReleasedSplit,
                                  ImageSplit)}
