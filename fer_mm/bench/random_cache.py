"""Caches of random content at CREMA-D's size: in memory for the ``pipeline`` benchmark, and on disk as
a finished preprocessing cache (``python -m fer_mm.bench cache``) that a run opens without preprocessing.

Both hold the same content for the same arguments: the release's clip names (``AAAA_SSS_EEE_LL``,
the label from the name's emotion), clip lengths drawn to match it (1.3 to 5 s, mean about 2.5 s,
at 30 fps), random faces and random waveforms.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fer_mm.data.cache import CREMA_D_COLUMNS, LAYOUT_COLUMNS, ClipCache, PreprocessParams, cache_path, finish_cache, \
    versions
from fer_mm.data.sources.crema_d import ACTORS, DEMOGRAPHICS_FILE, index_from_names, release_names, \
    write_demographics
from fer_mm.vocab import SAMPLE_RATE

FPS, FACE = 30, (98, 80)  # the release's frame rate, the method's face crop
CHUNK_BYTES = 1 << 27  # random content is drawn (and written) 128 MB at a time


@dataclass
class MemoryCache:
    """A cache's read side (what :class:`~fer_mm.data.clips.ResidentClips` reads), made in memory."""

    clips: pd.DataFrame
    frames: np.ndarray  # [sum(n_frames), 98, 80] uint8
    samples: np.ndarray  # [sum(n_samples)] int16


def release_clips(n_clips: int, n_actors: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n_clips`` of the release's clip names of its first ``n_actors`` actors, spread evenly over
    the actors (each actor's in a random order), sorted by name; all 7,442 for 91 actors."""
    if not 1 <= n_actors <= len(ACTORS):
        raise ValueError(f"--actors {n_actors}: CREMA-D has 1 to {len(ACTORS)} actors")
    index, _ = index_from_names(release_names(ACTORS[:n_actors]), exclude_known_defects=False)
    if not 1 <= n_clips <= len(index):
        raise ValueError(f"--clips {n_clips}: {n_actors} actors have 1 to {len(index)} clips in the release")
    index = index.iloc[rng.permutation(len(index))]
    turn = index.groupby("actor").cumcount()  # an actor's k-th clip comes before any actor's (k+1)-th
    chosen = index.assign(turn=turn.to_numpy()).sort_values(["turn", "actor"], kind="stable").head(n_clips)
    return chosen.drop(columns="turn").sort_values("name").reset_index(drop=True)


def clip_table(n_clips: int = 7442, n_actors: int = 91, seed: int = 0) -> pd.DataFrame:
    """The cache's ``clips.csv``: CREMA-D's columns, then where each clip lies in the arrays."""
    rng = np.random.default_rng(seed)
    clips = release_clips(n_clips, n_actors, rng)
    seconds = np.clip(1.27 + rng.gamma(2.5, 0.5, n_clips), 1.27, 5.0)  # 1.3 to 5 s, mean about 2.5 s
    n_frames = np.round(seconds * FPS).astype(np.int64)
    n_samples = np.round(seconds * SAMPLE_RATE).astype(np.int64)
    layout = dict(n_frames=n_frames, fps=float(FPS), video_offset=np.cumsum(n_frames) - n_frames,
                  n_samples=n_samples, audio_offset=np.cumsum(n_samples) - n_samples, faces_missing=0, audio_notes="")
    return clips.assign(**layout)[[*CREMA_D_COLUMNS, *LAYOUT_COLUMNS]]


def random_chunks(size: int, dtype, seed: int):
    """``size`` random values, 128 MB at a time: faces (uint8) or waveforms (int16, within +-8000)."""
    rng, step = np.random.default_rng(seed), CHUNK_BYTES // np.dtype(dtype).itemsize
    for start in range(0, size, step):
        n = min(step, size - start)
        yield np.frombuffer(rng.bytes(n), np.uint8) if dtype == np.uint8 else rng.integers(-8000, 8000, n, dtype=dtype)


def fill_random(out: np.ndarray, seed: int) -> None:
    flat, start = out.reshape(-1), 0
    for chunk in random_chunks(out.size, out.dtype, seed):
        flat[start : start + len(chunk)] = chunk
        start += len(chunk)


def memory_cache(n_clips: int = 7442, n_actors: int = 91, seed: int = 0) -> MemoryCache:
    """Random faces and waveforms with CREMA-D's clip names, actors and clip lengths, in memory."""
    clips = clip_table(n_clips, n_actors, seed)
    frames = np.empty((int(clips["n_frames"].sum()), *FACE), np.uint8)
    samples = np.empty(int(clips["n_samples"].sum()), np.int16)
    fill_random(frames, seed + 1)
    fill_random(samples, seed + 2)
    return MemoryCache(clips, frames, samples)


def write_subjects(path: Path, actors, seed: int) -> None:
    """A ``VideoDemographics.csv`` for ``actors`` in the release's format (random ages and sexes)."""
    rng = np.random.default_rng(seed)
    write_demographics(path, [dict(actor=int(a), age=int(rng.integers(20, 75)), sex=("Male", "Female")[i % 2],
                                   race="Caucasian", ethnicity="Not Hispanic") for i, a in enumerate(actors)])


def write_cache(root: Path, cache_dir: Path, n_clips: int = 7442, n_actors: int = 91, seed: int = 0,
                params: PreprocessParams = PreprocessParams()) -> ClipCache:
    """A finished cache of random content where a run with ``data=crema_d data.root=ROOT
    data.cache_dir=CACHE_DIR`` (and ``params`` as its ``data.preprocess``, the config's defaults by
    default) finds it and preprocesses nothing; ``ROOT`` gets a ``VideoDemographics.csv`` and no media."""
    t0 = time.perf_counter()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = cache_path(root, cache_dir, params)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    clips = clip_table(n_clips, n_actors, seed)
    write_subjects(root / DEMOGRAPHICS_FILE, sorted(clips["actor"].unique()), seed)
    shapes = {"video.u8": (np.uint8, (int(clips["n_frames"].sum()), params.face_height, params.face_width)),
              "audio.i16": (np.int16, (int(clips["n_samples"].sum()),))}
    for i, (name, (dtype, shape)) in enumerate(shapes.items()):
        with open(tmp / name, "wb") as f:  # a chunk at a time: memory stays low (5 GB at full size)
            for chunk in random_chunks(int(np.prod(shape)), dtype, seed + 1 + i):
                chunk.tofile(f)
    report = dict(root=str(root.resolve()), cached_clips=len(clips), skipped_count=0, skipped={},
                  actors=int(clips["actor"].nunique()), clips_per_emotion=clips["emotion"].value_counts().sort_index().to_dict(),
                  frames=shapes["video.u8"][1][0], audio_seconds=round(shapes["audio.i16"][1][0] / params.sample_rate, 2),
                  frames_without_face=0, notes={}, seconds=round(time.perf_counter() - t0, 1), versions=versions(params),
                  content="random faces and waveforms (python -m fer_mm.bench cache), not preprocessed from media")
    return finish_cache(tmp, final, clips, params, report)
