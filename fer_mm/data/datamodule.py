"""LightningDataModule: the cache, read through a speaker-independent protocol."""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from fer_mm.data.audio import int16_to_float, make_frontend
from fer_mm.data.cache import ClipCache, PreprocessParams, build_cache, cache_path
from fer_mm.data.crema_d import EMOTION_NAMES, VIDEO_DIR
from fer_mm.data.protocols import LeaveOneSubjectOut, Protocol, Split
from fer_mm.data.video import sample_frame_indices

log = logging.getLogger(__name__)
MODALITIES = ("video", "audio")


class ClipDataset(Dataset):
    """Cached clips as model inputs.

    Each item: ``video`` [T, H, W] float, normalised as (x - 127) / 128; ``audio`` either a
    spectrogram [1, F, W] (CPU front-end) or a zero-padded waveform [S] with ``audio_length``
    (device front-end); ``label``; ``index`` (row in the cache, for predictions). With
    ``train=True``, frames are jittered within their segments and noise is added to the audio.
    """

    def __init__(self, cache: ClipCache, rows: Sequence[int], frames: int, train: bool, frontend,
                 modalities: Sequence[str] = MODALITIES, max_audio_samples: int = 80_000, temporal_jitter: bool = True):
        self.cache, self.rows, self.frames, self.train = cache, np.asarray(rows), frames, train
        self.frontend, self.modalities, self.max_audio_samples = frontend, tuple(modalities), max_audio_samples
        self.temporal_jitter = temporal_jitter
        self.labels = cache.clips["label"].to_numpy()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = int(self.rows[i])
        # drawn from torch's generator, which Lightning seeds per worker: runs are repeatable
        rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,)))) if self.train else None
        item = dict(label=int(self.labels[row]), index=row)
        if "video" in self.modalities:
            clip = self.cache.video(row)
            idx = sample_frame_indices(len(clip), self.frames, rng if self.temporal_jitter else None)
            item["video"] = (torch.from_numpy(clip[idx].astype(np.float32)) - 127.0) / 128.0
        if "audio" in self.modalities:
            pcm = self.cache.audio(row)
            if self.frontend.device_side:
                wave = np.zeros(self.max_audio_samples, np.float32)
                start = max(0, (len(pcm) - self.max_audio_samples) // 2)  # centre crop of over-long clips
                part = int16_to_float(pcm[start : start + self.max_audio_samples].astype(np.float32))
                wave[: len(part)] = part
                item["audio"], item["audio_length"] = torch.from_numpy(wave), len(part)
            else:
                spec = self.frontend(int16_to_float(pcm.astype(np.float32)), rng)
                item["audio"] = torch.from_numpy(np.ascontiguousarray(spec))
        return item


class CremaDDataModule(pl.LightningDataModule):
    """CREMA-D (or its synthetic twin) -> cache -> protocol split -> batches.

    Args:
        root: CREMA-D root (holds ``VideoFlash/``, ``AudioWAV/``, ``VideoDemographics.csv``).
        cache_dir: where preprocessing caches live.
        synthetic: twin parameters (``actors``, ``sentences``, ``seed``); when set and ``root``
            has no clips yet, the twin is generated there first. ``None`` for real data.
        preprocess: :class:`PreprocessParams` fields.
        protocol: a speaker-independent protocol; ``fold`` picks its fold.
        frames: frames per clip stacked as channels (T).
        audio: front-end name (``scipy`` or ``logmel``) and its arguments.
        modalities: which inputs batches carry (``video``, ``audio``).
    """

    def __init__(self, root: str, cache_dir: str, synthetic: dict | None = None, preprocess: dict | None = None,
                 protocol: Protocol | None = None, fold: int = 0, frames: int = 20, temporal_jitter: bool = True,
                 audio: dict | None = None, max_audio_seconds: float = 5.0, modalities: Sequence[str] = MODALITIES,
                 batch_size: int = 32, num_workers: int = 0, preprocess_workers: int = 0, progress: bool = True):
        super().__init__()
        bad = set(modalities) - set(MODALITIES)
        if bad or not modalities:
            raise ValueError(f"data.modalities={list(modalities)}: use one or both of {list(MODALITIES)}")
        self.root, self.cache_dir, self.synthetic = Path(root), Path(cache_dir), synthetic
        self.params = PreprocessParams(**(preprocess or {}))
        self.protocol, self.fold = protocol or LeaveOneSubjectOut(), int(fold)
        self.frames, self.temporal_jitter, self.modalities = frames, temporal_jitter, tuple(modalities)
        audio = dict(audio or {"frontend": "scipy"})
        self.frontend = make_frontend(audio.pop("frontend"), **audio)
        self.max_audio_samples = int(max_audio_seconds * self.params.sample_rate)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.preprocess_workers, self.progress = preprocess_workers, progress
        self.class_names = EMOTION_NAMES
        self.cache: ClipCache | None = None
        self.split: Split | None = None

    # disk work: runs once per node
    def prepare_data(self) -> ClipCache:
        # folds of a parallel sweep share the data: one process prepares, the others wait
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".prepare.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._prepare()

    def _prepare(self) -> ClipCache:
        if self.synthetic and not (self.root / VIDEO_DIR).is_dir():
            from fer_mm.data.synthetic import generate

            log.info("generating the synthetic CREMA-D twin in %s", self.root)
            generate(self.root, n_actors=self.synthetic["actors"], n_sentences=self.synthetic["sentences"],
                     seed=self.synthetic.get("seed", 0), workers=self.preprocess_workers, progress=self.progress)
        return build_cache(self.root, self.cache_dir, self.params, workers=self.preprocess_workers,
                           progress=self.progress)

    def setup(self, stage: str | None = None) -> None:
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
        return ClipDataset(self.cache, self.rows[part], self.frames, part == "train", self.frontend, self.modalities,
                           self.max_audio_samples, self.temporal_jitter)

    def _loader(self, part: str) -> DataLoader:
        return DataLoader(self.dataset(part), batch_size=self.batch_size, shuffle=part == "train",
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

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Batched device-side audio front-end (log-mel), with noise in training only."""
        if "audio" in batch and self.frontend.device_side:
            self.frontend.to(batch["audio"].device)
            training = self.trainer is not None and self.trainer.training
            batch["audio"] = self.frontend(batch["audio"], batch["audio_length"], augment=training)
        return batch
