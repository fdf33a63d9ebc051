"""LightningDataModule: the cache, read through a speaker-independent protocol.

It delivers raw clip tensors (see :mod:`fer_mm.data.clips`); what the network takes is decided
by the model side, whose :class:`~fer_mm.data.clips.ClipSpec` is passed in as ``clip_spec``.
"""

from __future__ import annotations

import fcntl
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from fer_mm.data.cache import ClipCache, PreprocessParams, build_cache, cache_path
from fer_mm.data.clips import ClipSpec, ResidentClips, ResidentLoader, clip_item
from fer_mm.data.protocols import LeaveOneSubjectOut, Protocol, Split
from fer_mm.data.synthetic import read_spec
from fer_mm.vocab import CREMA_D, CREMA_D_TWIN, EMOTION_NAMES

log = logging.getLogger(__name__)
LOADERS = ("resident", "workers")


class ClipDataset(Dataset):
    """Cached clips as raw tensors, one clip per item (:func:`~fer_mm.data.clips.clip_item`),
    with ``label`` and ``index`` (row in the cache). ``train`` jitters the frames."""

    def __init__(self, cache: ClipCache, rows, spec: ClipSpec, train: bool, temporal_jitter: bool = True):
        self.cache, self.rows, self.spec, self.train = cache, np.asarray(rows), spec, train
        self.temporal_jitter = temporal_jitter
        self.labels = cache.clips["label"].to_numpy()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = int(self.rows[i])
        # drawn from torch's generator, which Lightning seeds per worker: runs are repeatable
        jitter = self.train and self.temporal_jitter
        rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,)))) if jitter else None
        item = clip_item(self.cache.video(row), self.cache.audio(row), self.spec, rng)
        return dict(item, label=int(self.labels[row]), index=row)


class CremaDDataModule(pl.LightningDataModule):
    """CREMA-D (or its synthetic twin) -> cache -> protocol split -> batches of raw clip tensors.

    Args:
        root: CREMA-D root (holds ``VideoFlash/``, ``AudioWAV/``, ``VideoDemographics.csv``).
        cache_dir: where preprocessing caches live.
        synthetic: twin parameters (``actors``, ``sentences``, ``seed``, ``difficulty``); when set,
            the twin is generated (or finished) under ``root`` first, and a root that holds another
            twin is refused. ``None`` for real data.
        preprocess: :class:`PreprocessParams` fields.
        protocol: a speaker-independent protocol; ``fold`` picks its fold.
        clip_spec: what the model needs from each clip (its ``ModelInputs.clip_spec``); only
            preparing the cache works without it.
        temporal_jitter: jitter the sampled frames in training.
        loader: ``resident`` (the cache held in device memory, batches gathered with tensor
            ops, no worker processes) or ``workers`` (a DataLoader, one clip per item).
        resident_memory: ``auto``, ``device`` or ``host`` (see :class:`ResidentClips`).
        batch_size, num_workers: batches; ``num_workers`` is for ``loader=workers``.
        preprocess_workers: processes for preprocessing (0: all cores).
    """

    def __init__(self, root: str, cache_dir: str, synthetic: dict | None = None, preprocess: dict | None = None,
                 protocol: Protocol | None = None, fold: int = 0, clip_spec: ClipSpec | None = None,
                 temporal_jitter: bool = True, loader: str = "resident", resident_memory: str = "auto",
                 batch_size: int = 32, num_workers: int = 0, preprocess_workers: int = 0, progress: bool = True):
        super().__init__()
        if loader not in LOADERS:
            raise ValueError(f"data.loader={loader!r}: use one of {list(LOADERS)}")
        self.root, self.cache_dir, self.synthetic = Path(root), Path(cache_dir), synthetic
        self.params = PreprocessParams(**(preprocess or {}))
        if isinstance(clip_spec, dict):  # Hydra's instantiate passes dataclass arguments on as dicts
            clip_spec = ClipSpec(**clip_spec)
        self.protocol, self.fold, self.clip_spec = protocol or LeaveOneSubjectOut(), int(fold), clip_spec
        self.temporal_jitter, self.loader, self.resident_memory = temporal_jitter, loader, resident_memory
        self.batch_size, self.num_workers = batch_size, num_workers
        self.preprocess_workers, self.progress = preprocess_workers, progress
        self.class_names = EMOTION_NAMES
        self.cache: ClipCache | None = None
        self.split: Split | None = None
        self._resident: ResidentClips | None = None

    @property
    def dataset_id(self) -> str:
        return CREMA_D_TWIN if self.twin_spec is not None else CREMA_D

    @property
    def twin_spec(self) -> dict | None:
        """How the twin under ``root`` was generated (its ``SYNTHETIC.json``); None for real data."""
        return read_spec(self.root)

    def state_dict(self) -> dict:
        """Saved in every checkpoint (Lightning calls it): how faces and waveforms were made and what
        the classes are, so that inference on a new video prepares it exactly as training did."""
        return dict(preprocess=asdict(self.params), class_names=list(self.class_names))

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing to restore on resume: the config rebuilds the same datamodule."""

    # disk work: runs once per node
    def prepare_data(self) -> ClipCache:
        # folds of a parallel sweep share the data: one process prepares, the others wait
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".prepare.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._prepare()

    def _prepare(self) -> ClipCache:
        if self.synthetic:
            from fer_mm.data.synthetic import generate

            # every time: it finishes an interrupted twin and refuses a root that holds another one
            log.info("synthetic CREMA-D twin in %s", self.root)
            generate(self.root, n_actors=self.synthetic["actors"], n_sentences=self.synthetic["sentences"],
                     seed=self.synthetic["seed"], difficulty=self.synthetic["difficulty"],
                     workers=self.preprocess_workers, progress=self.progress)
        return build_cache(self.root, self.cache_dir, self.params, workers=self.preprocess_workers,
                           progress=self.progress)

    def setup(self, stage: str | None = None) -> None:
        if self.clip_spec is None:
            raise ValueError("the datamodule needs clip_spec (the model's ModelInputs.clip_spec) to make batches")
        if self.clip_spec.sample_rate != self.params.sample_rate:
            raise ValueError(f"model.inputs.sample_rate={self.clip_spec.sample_rate} differs from the cache's "
                             f"data.preprocess.sample_rate={self.params.sample_rate}")
        if self.cache is None:
            self.cache = ClipCache(cache_path(self.root, self.cache_dir, self.params))
        clips = self.cache.clips
        self.split = self.protocol.split(clips["actor"].unique(), self.fold)
        actor = clips["actor"].to_numpy()
        self.rows = {part: np.flatnonzero(np.isin(actor, getattr(self.split, part))) for part in ("train", "val", "test")}
        for part, rows in self.rows.items():
            if len(rows) == 0:
                raise ValueError(f"fold {self.fold}: the {part} part has no clips (actors {getattr(self.split, part)})")

    def dataset(self, part: str) -> ClipDataset:
        return ClipDataset(self.cache, self.rows[part], self.clip_spec, part == "train", self.temporal_jitter)

    def resident(self) -> ResidentClips:
        """The cache in memory on the trainer's device, loaded once per process."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self._resident is None or self._resident.device != device:
            self._resident = ResidentClips(self.cache, self.clip_spec, device, self.resident_memory)
        return self._resident

    def _loader(self, part: str):
        train = part == "train"
        if self.loader == "resident":
            return ResidentLoader(self.resident(), self.rows[part], self.batch_size, train,
                                  jitter=train and self.temporal_jitter)
        return DataLoader(self.dataset(part), batch_size=self.batch_size, shuffle=train,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self):
        return self._loader("train")

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")

    def predict_dataloader(self):
        return self._loader("test")
