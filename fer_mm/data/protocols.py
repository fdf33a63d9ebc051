"""Evaluation protocols: which actors train, validate and test in each fold.

Every protocol here is speaker-independent: an actor is in exactly one of train, validation
and test. Validation actors come from the non-test actors only, so early stopping and the
choice of checkpoint never see the test actors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


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
            raise ValueError(f"cv.val_fraction must be in (0, 1), got {val_fraction}")
        self.val_fraction, self.seed = val_fraction, seed

    def n_folds(self, actors: Sequence[int]) -> int:
        raise NotImplementedError

    def test_actors(self, actors: list[int], fold: int) -> list[int]:
        raise NotImplementedError

    def split(self, actors: Sequence[int], fold: int) -> Split:
        actors = sorted(set(int(a) for a in actors))
        n = self.n_folds(actors)
        if not 0 <= fold < n:
            raise ValueError(f"cv.fold={fold} is out of range: {self.name} has {n} folds over {len(actors)} actors "
                             f"(use 0..{n - 1})")
        test = self.test_actors(actors, fold)
        train, val = _draw_val([a for a in actors if a not in test], self.val_fraction, self.seed, fold)
        split = Split(fold, tuple(train), tuple(val), tuple(sorted(test)))
        split.check_disjoint()
        return split


class LeaveOneSubjectOut(Protocol):
    """Fold k tests on the k-th actor (sorted by id); validation actors are drawn from the rest."""

    name = "loso"

    def n_folds(self, actors):
        return len(set(actors))

    def test_actors(self, actors, fold):
        return [actors[fold]]


class SpeakerKFold(Protocol):
    """k folds of actors (shuffled once with the seed); fold i tests on group i."""

    name = "speaker_kfold"

    def __init__(self, k: int = 5, val_fraction: float = 0.1, seed: int = 0):
        super().__init__(val_fraction, seed)
        if k < 2:
            raise ValueError(f"cv.k must be at least 2, got {k}")
        self.k = k

    def n_folds(self, actors):
        if len(set(actors)) < self.k:
            raise ValueError(f"cv.k={self.k} folds need at least {self.k} actors, the data has {len(set(actors))}")
        return self.k

    def test_actors(self, actors, fold):
        order = np.random.default_rng(self.seed).permutation(actors)
        return sorted(np.array_split(order, self.k)[fold].tolist())


class SpeakerSplit(Protocol):
    """One speaker-disjoint train/val/test split by actor (70/10/20 by default), seeded."""

    name = "split"

    def __init__(self, train: float = 0.7, val: float = 0.1, test: float = 0.2, seed: int = 0):
        if abs(train + val + test - 1) > 1e-6:
            raise ValueError(f"cv.train + cv.val + cv.test must be 1, got {train + val + test}")
        super().__init__(val / (train + val), seed)
        self.test_fraction = test

    def n_folds(self, actors):
        return 1

    def test_actors(self, actors, fold):
        n_test = max(1, int(round(self.test_fraction * len(actors))))
        return sorted(np.random.default_rng(self.seed).choice(actors, size=n_test, replace=False).tolist())


PROTOCOLS = {p.name: p for p in (LeaveOneSubjectOut, SpeakerKFold, SpeakerSplit)}
