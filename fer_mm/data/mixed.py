"""Several face image datasets in one model: emotion from one, gender and age from another.

:class:`MixedDataModule` takes image datamodules by name (``data.datasets``), caches each as it
would alone, and joins their caches into one (``<cache_dir>/mixed-<key>/``: the same layout, with a
``dataset`` column), so batches, training, evaluation and inference read it as any cache. Each
sample carries only the targets its dataset has: an emotion label of -1, a gender of -1 and an age
of NaN are unknown, and count in no loss and no metric of that task.

Each dataset is split by its own protocol (``data.protocols.<name>``: its released split, its
subjects, or a random image split where it has no subject ids), and its training samples are drawn
in the share ``data.weights.<name>`` of every epoch. Actor ids are kept apart by dataset (dataset
``i``'s actor ``a`` is ``(i + 1) * 10**7 + a``; -1, no subject id, stays -1).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from fer_mm.data.cache import ClipCache, LAYOUT_COLUMNS
from fer_mm.data.datamodule import FaceDataModule, ImageDataModule
from fer_mm.data.protocols import PARTS, Protocol, Split
from fer_mm.vocab import AUDIO

log = logging.getLogger(__name__)
ACTOR_STRIDE = 10**7
MIXED_VERSION = 1


class PerDatasetProtocol:
    """Each dataset's rows split by that dataset's own protocol; fold ``k`` is fold ``k`` of each (their
    protocols must have as many folds)."""

    name = "per_dataset"

    def __init__(self, protocols: dict[str, Protocol]):
        self.protocols = protocols

    def n_folds(self, actors=None) -> int:
        return max(self.fold_counts().values())

    def fold_counts(self) -> dict[str, int]:
        """Each dataset's folds; they must agree where more than one dataset has several (fold k of one
        and fold k of another), else one dataset's test samples would repeat across the folds."""
        counts = {name: p.n_folds(self.actors[name]) for name, p in self.protocols.items()}
        if len(set(counts.values())) > 1:
            raise ValueError(f"data.protocols give the datasets {counts} folds: mixed datasets need one fold count "
                             f"(e.g. all one split, or all speaker_kfold with the same k)")
        return counts

    def assign(self, clips: pd.DataFrame, fold: int) -> tuple[Split, dict[str, np.ndarray]]:
        self.actors = {name: clips.loc[clips["dataset"] == name, "actor"].unique() for name in self.protocols}
        self.fold_counts()
        rows = {part: [] for part in PARTS}
        self.splits = {}
        for name, protocol in self.protocols.items():
            mine = np.flatnonzero(clips["dataset"].to_numpy() == name)
            self.splits[name], parts = protocol.assign(clips.iloc[mine].reset_index(drop=True), fold)
            for part in PARTS:
                rows[part].append(mine[parts[part]])
        rows = {part: np.sort(np.concatenate(r)) for part, r in rows.items()}
        split = Split(fold, *(tuple(sorted({a for s in self.splits.values() for a in getattr(s, part)}))
                              for part in PARTS))
        return split, rows


class MixedDataModule(FaceDataModule):
    """Image datasets mixed in one cache, each split by its own protocol and drawn in its own share.

    Args:
        datasets: name -> an image datamodule (:class:`~fer_mm.data.datamodule.ImageDataModule`,
            its own config); their faces must be the same size.
        protocols: name -> the protocol that splits that dataset.
        weights: name -> its share of each training epoch (default: in proportion to its
            training samples, as one dataset's would be).
        The other arguments: :class:`FaceDataModule`'s (``protocol`` must be left unset: each
        dataset has its own).
    """

    def __init__(self, datasets: dict, cache_dir: str, protocols: dict | None = None, weights: dict | None = None,
                 **kwargs):
        if kwargs.get("protocol") is not None:
            raise ValueError("data.protocol: a mixed dataset splits each dataset by its own protocol "
                             "(data.protocols.<name>): use cv=per_dataset")
        protocols, weights = dict(protocols or {}), dict(weights or {})
        if not datasets:
            raise ValueError("data.datasets is empty: name the datasets to mix, e.g. fer2013 and utkface")
        for name, member in datasets.items():
            if not isinstance(member, ImageDataModule):
                raise ValueError(f"data.datasets.{name}: a face image dataset (an ImageDataModule config such as "
                                 f"data/fer2013.yaml), got {type(member).__name__}")
            if name not in protocols:
                raise ValueError(f"data.protocols.{name} is not set: give each dataset its protocol (released, "
                                 f"a subject protocol, or image_split where it has no subject ids)")
        unknown = sorted((set(protocols) | set(weights)) - set(datasets))
        if unknown:
            raise ValueError(f"data.protocols / data.weights name {unknown[0]!r}, which is not in data.datasets "
                             f"({', '.join(datasets)})")
        unweighted = [name for name in datasets if weights and name not in weights]
        if unweighted:
            raise ValueError(f"data.weights.{unweighted[0]} is not set: give every dataset its share (0 leaves it out "
                             f"of training), or set no weights (each in proportion to its size)")
        bad = {k: v for k, v in weights.items() if not (isinstance(v, (int, float)) and v >= 0)}
        if bad or (weights and not sum(weights.values()) > 0):
            raise ValueError(f"data.weights: shares must be numbers of at least 0, not all 0 (got {weights})")
        self.members, self.weights = dict(datasets), weights
        super().__init__(cache_dir, protocol=PerDatasetProtocol(protocols), **{k: v for k, v in kwargs.items()
                                                                            if k != "protocol"})
        first = next(iter(self.members.values()))
        self.params = first.params  # how faces are cropped at inference (all members share the face size)
        self.check_samples()

    @property
    def root(self) -> Path:
        """The joined cache (the datasets' own roots are in the record's ``datasets``)."""
        return self.cache_location()

    @property
    def class_names(self) -> tuple[str, ...]:
        named = {name: m.class_names for name, m in self.members.items() if m.class_names}
        if len(set(named.values())) > 1:
            raise ValueError(f"data.datasets label emotion with different classes ({named}): mix datasets that share "
                             f"one label set, or one with emotion labels and others without")
        return next(iter(named.values()), ())

    dataset_id = "mixed"

    @property
    def label_source(self) -> str:
        return "; ".join(f"{name}: {m.label_source}" for name, m in self.members.items())

    @property
    def twin_spec(self) -> None:
        return None  # each dataset's is in the record's ``datasets``

    def sample_facts(self) -> dict:
        return dict(frames=1, sample_rate=None, audio=False, num_classes=len(self.class_names))

    def check_clip_spec(self) -> None:
        if AUDIO in self.clip_spec.modalities or self.clip_spec.frames != 1:
            raise ValueError("a mixed face image dataset holds single images without audio: use a video-only model "
                             "with model.inputs.frames=1")

    def cache_location(self) -> Path:
        """``mixed-<key>``: the key hashes each dataset's cache and the state of its table, so a dataset
        cache rebuilt in place (a fixed file, more images) makes a new join rather than reusing the old."""
        made = {}
        for name, member in self.members.items():
            table = member.cache_location() / "clips.csv"
            state = table.stat() if table.is_file() else None
            made[name] = [str(table.parent), state.st_mtime_ns if state else None, state.st_size if state else None]
        key = hashlib.sha1(json.dumps(dict(made, version=MIXED_VERSION), sort_keys=True).encode()).hexdigest()[:10]
        return self.cache_dir / f"mixed-{key}"

    def prepare_data(self) -> ClipCache:
        # each dataset's cache as it is made alone (each under its own lock), then the join under this one's
        self.member_caches = {name: m.prepare_data() for name, m in self.members.items()}
        return super().prepare_data()

    def _prepare(self) -> ClipCache:
        caches = self.member_caches
        sizes = {name: (c.params["face_height"], c.params["face_width"]) for name, c in caches.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"data.datasets.<name>.preprocess.face_height / face_width differ ({sizes}): mixed "
                             f"datasets must crop faces to one size")
        final = self.cache_location()
        if (final / "clips.csv").is_file():
            return ClipCache(final)
        return join_caches(caches, self.class_names, final, asdict(self.params))

    @property
    def subject_independent(self) -> bool | None:
        each = self.member_independence()
        if not each:
            return None
        values = list(each.values())
        return False if False in values else None if None in values else True

    def member_independence(self) -> dict[str, bool | None]:
        """Whether each dataset's parts share no subject (None: it has no subject ids)."""
        splits = getattr(self.protocol, "splits", None)
        if not splits:
            return {}
        for name, member in self.members.items():
            member.split = splits[name]  # its own rule then judges it (no subject ids: None)
        return {name: member.subject_independent for name, member in self.members.items()}

    def train_weights(self) -> np.ndarray | None:
        if not self.weights:
            return None
        names = self.cache.clips["dataset"].to_numpy()[self.rows["train"]]
        counts = {name: int((names == name).sum()) for name in self.members}
        return np.array([self.weights.get(n, 0.0) / max(counts[n], 1) for n in names], dtype=np.float64)

    def record_fields(self) -> dict:
        clips, independent = self.cache.clips, self.member_independence()
        names = clips["dataset"].to_numpy()
        total = sum(self.weights.values()) if self.weights else None
        datasets = {}
        for name, member in self.members.items():
            datasets[name] = dict(
                dataset=member.dataset_id, protocol=self.protocol.protocols[name].name,
                subject_independent=independent.get(name), label=member.label_source, root=str(member.root),
                n_clips={part: int((names[self.rows[part]] == name).sum()) for part in PARTS},
                weight=None if total is None else self.weights.get(name, 0.0) / total, twin=member.twin_spec)
        return dict(datasets=datasets)


def join_caches(caches: dict[str, ClipCache], class_names: tuple, final: Path, params: dict) -> ClipCache:
    """The caches' samples in one cache at ``final`` (their frames concatenated, their tables joined
    with a ``dataset`` column, labels in ``class_names``' order, actors kept apart by dataset)."""
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tables, offset = [], 0
    with open(tmp / "video.u8", "wb") as video:
        for i, (name, cache) in enumerate(caches.items()):
            video.write(np.ascontiguousarray(cache.frames).tobytes())
            table = cache.clips.copy()
            table["video_offset"] = table["video_offset"] + offset
            offset += len(cache.frames)
            table.insert(0, "dataset", name)
            table["name"] = name + "/" + table["name"].astype(str)
            table["actor"] = np.where(table["actor"] >= 0, (i + 1) * ACTOR_STRIDE + table["actor"], -1)
            labelled = table["label"] >= 0
            table["label"] = np.where(labelled, table["emotion"].map({c: k for k, c in enumerate(class_names)})
                                      .fillna(-1), -1).astype(np.int64)
            tables.append(table)
    (tmp / "audio.i16").write_bytes(b"")
    clips = pd.concat(tables, ignore_index=True)
    for task, unknown in (("gender", -1), ("age", "")):
        clips[task] = clips[task].replace("", unknown) if task in clips else unknown
    layout = [c for c in clips.columns if c in LAYOUT_COLUMNS]
    clips = clips[[c for c in clips.columns if c not in LAYOUT_COLUMNS] + layout]
    clips.to_csv(tmp / "clips.csv", index=False)
    (tmp / "params.json").write_text(json.dumps(dict(params, mixed=[str(c.path) for c in caches.values()]),
                                                indent=2) + "\n")
    report = dict(datasets={name: dict(cache=str(c.path), clips=len(c)) for name, c in caches.items()},
                  cached_clips=len(clips), actors=int(clips.loc[clips["actor"] >= 0, "actor"].nunique()),
                  skipped_count=0, skipped={}, frames_without_face=0,  # each dataset's own report has its skips
                  clips_per_emotion=clips["emotion"].replace("", "(none)").value_counts().sort_index().to_dict())
    (tmp / "preprocess_report.json").write_text(json.dumps(report, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    log.info("mixed cache %s: %s", final, ", ".join(f"{n} {len(c)}" for n, c in caches.items()))
    return ClipCache(final)
