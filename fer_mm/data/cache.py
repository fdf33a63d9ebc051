"""Preprocessing cache: every clip's face track (uint8) and waveform (int16), memory-mapped.

Layout of one cache (``<cache_dir>/<dataset>-<key>/``; the key hashes the preprocessing
parameters and the dataset root, so a change of either makes a new cache beside the old):

- ``clips.csv``: one row per cached clip: name, actor, sentence, emotion, level, label,
  n_frames, fps, video_offset (in frames), n_samples, audio_offset (in samples),
  faces_missing (frames that reused a neighbour's box), audio_notes.
- ``video.u8``: all face frames, ``[sum(n_frames), height, width]`` uint8, C order.
- ``audio.i16``: all waveforms at 16 kHz, concatenated int16.
- ``params.json``: the parameters that made it; ``preprocess_report.json``: counts, every
  skipped clip or file with its reason, and per-clip notes.

Building is resumable: each finished clip is written at once to ``<cache>.parts/`` (atomic
rename), so a crashed run restarts where it stopped; the final cache is assembled in a
temporary folder and renamed into place. A cache is derived data: safe to delete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fer_mm.data import audio as audio_io
from fer_mm.data import video as video_io
from fer_mm.data.crema_d import scan_root
from fer_mm.data.parallel import imap_progress
from fer_mm.files import write_atomic

log = logging.getLogger(__name__)

CACHE_VERSION = 1
LFS_POINTER_PREFIX = b"version https://git-lfs"
LFS_HINT = ("git-lfs pointer file, not media: the clone was made without git-lfs. "
            "Run `git lfs install && git lfs pull` inside the CREMA-D clone")


@dataclass(frozen=True)
class PreprocessParams:
    """Everything that changes the cache's content (hashed into its folder name)."""

    face_height: int = 98
    face_width: int = 80
    detector: str = "haar"
    detector_kwargs: dict = field(default_factory=dict)
    smooth_frames: int = 5
    sample_rate: int = 16_000
    min_seconds: float = 0.8
    max_seconds: float = 10.0
    silence_peak: float = 1e-3  # peak |sample| below this (of full scale) is silent audio
    max_length_mismatch: float = 0.5  # seconds between video and audio before a file is called truncated
    exclude_known_defects: bool = True

    def key(self, root: Path) -> str:
        text = json.dumps(dict(asdict(self), root=str(Path(root).resolve()), version=CACHE_VERSION), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


def check_media_file(path: str) -> str | None:
    """Why a media file cannot be opened (empty, git-lfs pointer), or None."""
    size = os.path.getsize(path)
    if size == 0:
        return f"empty file: {Path(path).parent.name}/{Path(path).name} has 0 bytes"
    if size < 1024:
        with open(path, "rb") as f:
            if f.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX:
                return f"{LFS_HINT} ({Path(path).parent.name}/{Path(path).name})"
    return None


_DETECTOR = None  # one per worker process


def process_clip(args: tuple) -> dict:
    """Decode, check, detect and crop one clip. Returns arrays, or ``{"skip": reason}``.

    Whatever goes wrong with one clip is reported as its reason; it never stops the run.
    """
    try:
        return _process_clip(*args)
    except Exception as err:  # noqa: BLE001 - an unforeseen defect of one file must not cost the others
        return dict(name=args[0], skip=f"failed: {type(err).__name__}: {err}")


def _process_clip(name: str, video_path: str, audio_path: str, p: dict) -> dict:
    global _DETECTOR
    p = PreprocessParams(**p)
    for path in (audio_path, video_path):
        problem = check_media_file(path)
        if problem:
            return dict(name=name, skip=problem)
    try:
        loaded = audio_io.load_wav(audio_path, p.sample_rate)
    except Exception as err:  # soundfile raises its own types for every malformed header
        return dict(name=name, skip=f"unreadable audio: {err}")
    samples = loaded.samples
    if len(samples) == 0:
        return dict(name=name, skip="no audio: the WAV holds no samples")
    seconds = len(samples) / p.sample_rate
    if seconds < p.min_seconds:
        return dict(name=name, skip=f"too short: {seconds:.2f} s of audio (min_seconds={p.min_seconds})")
    if seconds > p.max_seconds:
        return dict(name=name, skip=f"too long: {seconds:.2f} s of audio (max_seconds={p.max_seconds})")
    if np.abs(samples).max() < p.silence_peak:
        return dict(name=name, skip=f"silent audio: peak {np.abs(samples).max():.2e} of full scale")
    try:
        decoded = video_io.decode_gray(video_path)
    except Exception as err:  # PyAV raises many error types for broken containers
        return dict(name=name, skip=f"unreadable video: {err}")
    video_seconds = len(decoded.frames) / decoded.fps
    if abs(video_seconds - seconds) > p.max_length_mismatch:
        return dict(name=name, skip=f"truncated or mismatched: video {video_seconds:.2f} s vs audio {seconds:.2f} s")
    if _DETECTOR is None:
        cv2.setNumThreads(1)  # clips run in parallel processes; threads inside each only contend
        _DETECTOR = video_io.make_detector(p.detector, **p.detector_kwargs)
    try:
        boxes, missing = video_io.track_faces(decoded.frames, _DETECTOR, p.smooth_frames)
    except ValueError as err:
        return dict(name=name, skip=str(err))
    faces = video_io.crop_faces(decoded.frames, boxes, p.face_height, p.face_width)
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)
    return dict(name=name, faces=faces, audio=pcm, fps=decoded.fps, faces_missing=missing,
                audio_notes="; ".join(loaded.notes))


class ClipCache:
    """Read side: the cached clips as memory-mapped arrays (cheap to open in every worker)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / "clips.csv").is_file():
            raise FileNotFoundError(f"{self.path} is not a fer-mm cache (no clips.csv); run python -m fer_mm.preprocess")
        self.params = json.loads((self.path / "params.json").read_text())
        self.clips = pd.read_csv(self.path / "clips.csv", keep_default_na=False)
        h, w = self.params["face_height"], self.params["face_width"]
        n_frames, n_samples = int(self.clips["n_frames"].sum()), int(self.clips["n_samples"].sum())
        # numpy cannot map an empty file: a cache without clips gets empty arrays
        self._video = np.memmap(self.path / "video.u8", dtype=np.uint8, mode="r", shape=(n_frames, h, w)) \
            if n_frames else np.empty((0, h, w), np.uint8)
        self._audio = np.memmap(self.path / "audio.i16", dtype=np.int16, mode="r", shape=(n_samples,)) \
            if n_samples else np.empty(0, np.int16)
        self._v = self.clips[["video_offset", "n_frames"]].to_numpy()
        self._a = self.clips[["audio_offset", "n_samples"]].to_numpy()

    def __len__(self) -> int:
        return len(self.clips)

    def video(self, i: int) -> np.ndarray:
        """All face frames of clip ``i``: ``[n_frames, 98, 80]`` uint8 (a view, not a copy)."""
        start, n = self._v[i]
        return self._video[start : start + n]

    def audio(self, i: int) -> np.ndarray:
        start, n = self._a[i]
        return self._audio[start : start + n]

    @property
    def report(self) -> dict:
        return json.loads((self.path / "preprocess_report.json").read_text())


def cache_path(root: Path, cache_dir: Path, params: PreprocessParams) -> Path:
    return Path(cache_dir) / f"{Path(root).resolve().name}-{params.key(root)}"


def build_cache(root: Path, cache_dir: Path, params: PreprocessParams = PreprocessParams(), workers: int = 0,
                progress: bool = True) -> ClipCache:
    """Preprocess every clip under ``root`` into a cache (or open the finished one)."""
    final = cache_path(root, cache_dir, params)
    if (final / "clips.csv").is_file():
        return ClipCache(final)
    scan = scan_root(root, params.exclude_known_defects)
    parts = final.with_name(final.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    done = {p.name.split(".")[0] for p in parts.iterdir() if p.suffix in (".npz", ".json") and not p.name.startswith(".")}
    todo = [(r.name, r.video_path, r.audio_path, asdict(params)) for r in scan.index.itertuples() if r.name not in done]
    if done:
        log.info("resuming: %d of %d clips already preprocessed in %s", len(done), len(scan.index), parts)
    t0 = time.time()
    for result in imap_progress(process_clip, todo, workers, "preprocessing clips", progress):
        name = result["name"]
        if "skip" in result:
            log.warning("skipped %s: %s", name, result["skip"])
            write_atomic(parts / f"{name}.json", json.dumps(result))
        else:
            meta = {k: result[k] for k in ("fps", "faces_missing", "audio_notes")}
            write_atomic(parts / f"{name}.npz", lambda p: np.savez(
                open(p, "wb"), faces=result["faces"], audio=result["audio"], meta=json.dumps(meta)))
    for path, reason in scan.problems.items():
        log.warning("skipped %s: %s", path, reason)
    return _assemble(final, parts, root, scan, params, time.time() - t0)


def _assemble(final: Path, parts: Path, root: Path, scan, params: PreprocessParams, seconds: float) -> ClipCache:
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows, skipped, notes = [], dict(scan.problems), {}
    video_offset = audio_offset = 0
    with open(tmp / "video.u8", "wb") as vf, open(tmp / "audio.i16", "wb") as af:
        for r in scan.index.itertuples():
            if (parts / f"{r.name}.json").is_file():
                skipped[r.name] = json.loads((parts / f"{r.name}.json").read_text())["skip"]
                continue
            with np.load(parts / f"{r.name}.npz") as z:
                faces, pcm, meta = z["faces"], z["audio"], json.loads(str(z["meta"]))
            vf.write(np.ascontiguousarray(faces).tobytes())
            af.write(pcm.tobytes())
            rows.append(dict(name=r.name, actor=r.actor, sentence=r.sentence, emotion=r.emotion, level=r.level,
                             label=r.label, n_frames=len(faces), fps=meta["fps"], video_offset=video_offset,
                             n_samples=len(pcm), audio_offset=audio_offset, faces_missing=meta["faces_missing"],
                             audio_notes=meta["audio_notes"]))
            if meta["faces_missing"] or meta["audio_notes"]:
                notes[r.name] = dict(faces_missing=meta["faces_missing"], audio=meta["audio_notes"])
            video_offset += len(faces)
            audio_offset += len(pcm)
    columns = ["name", "actor", "sentence", "emotion", "level", "label", "n_frames", "fps", "video_offset",
               "n_samples", "audio_offset", "faces_missing", "audio_notes"]
    clips = pd.DataFrame(rows, columns=columns)
    clips.to_csv(tmp / "clips.csv", index=False)
    (tmp / "params.json").write_text(json.dumps(dict(asdict(params), version=CACHE_VERSION), indent=2) + "\n")
    report = dict(
        root=str(Path(root).resolve()),
        cached_clips=len(clips),
        skipped_count=len(skipped),
        skipped=dict(sorted(skipped.items())),
        actors=int(clips["actor"].nunique()) if len(clips) else 0,
        clips_per_emotion=clips["emotion"].value_counts().sort_index().to_dict() if len(clips) else {},
        frames=int(video_offset),
        audio_seconds=round(audio_offset / params.sample_rate, 2),
        frames_without_face=int(clips["faces_missing"].sum()) if len(clips) else 0,
        notes=notes,
        seconds=round(seconds, 1),
    )
    (tmp / "preprocess_report.json").write_text(json.dumps(report, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    shutil.rmtree(parts, ignore_errors=True)
    return ClipCache(final)
