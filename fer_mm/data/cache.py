"""Preprocessing cache: every clip's face track (uint8) and waveform (int16), memory-mapped.

Layout of one cache (``<cache_dir>/<dataset>-<key>/``; the key hashes the preprocessing
parameters, the dataset root and the versions of OpenCV and PyAV, so a change of any makes a new
cache beside the old):

- ``clips.csv``: one row per cached clip: name, actor, sentence, emotion, level, label,
  n_frames, fps, video_offset (in frames), n_samples, audio_offset (in samples),
  faces_missing (frames that reused a neighbour's box), audio_notes.
- ``video.u8``: all face frames, ``[sum(n_frames), height, width]`` uint8, C order.
- ``audio.i16``: all waveforms at 16 kHz, concatenated int16.
- ``params.json``: the parameters that made it; ``preprocess_report.json``: counts, every
  skipped clip or file with its reason, per-clip notes, and the versions of the libraries
  and the detector settings that shaped the frames.

Building is resumable: each finished clip is written at once to ``<cache>.parts/`` (atomic
rename), so a crashed run restarts where it stopped; the final cache is assembled in a
temporary folder and renamed into place. A cache is derived data: safe to delete.

A broken setup stops the run with one :class:`PreprocessError` instead of one warning per
clip: a detector that cannot be built or run, the first clips all failing the same way, or
no clip cached at all. Nothing is then stored as finished and skipped clips are retried on
the next run; the reasons so far are written to ``<cache>.parts/preprocess_report.json``.
"""

from __future__ import annotations

import functools
import hashlib
import re
import json
import logging
import os
import shutil
import time
from collections import Counter
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import av
import cv2
import numpy as np
import pandas as pd
import scipy
import soundfile

from fer_mm.data.media import audio as audio_io
from fer_mm.data.media.faces import (DEFAULT_DETECTOR, DetectorError, NoFaceError, crop_faces, detector_label,
                                     detector_settings, make_detector, track_faces)
from fer_mm.data.media.video import decode_gray
from fer_mm.data.sources.crema_d import DatasetScan, scan_root
from fer_mm.vocab import SAMPLE_RATE
from fer_mm.data.parallel import imap_progress
from fer_mm.files import write_atomic

log = logging.getLogger(__name__)

CACHE_VERSION = 1
LFS_POINTER_PREFIX = b"version https://git-lfs"
LFS_HINT = ("git-lfs pointer file, not media: the clone was made without git-lfs. "
            "Run `git lfs install && git lfs pull` inside the CREMA-D clone")
FIRST_CLIPS = 20  # when these all fail the same way, the setup is broken, not the clips


class PreprocessError(RuntimeError):
    """Preprocessing cannot give a usable cache (a broken detector or setup); nothing was stored as finished."""


@dataclass(frozen=True)
class PreprocessParams:
    """Everything that changes the cache's content (hashed into its folder name)."""

    face_height: int = 98
    face_width: int = 80
    detector: str = DEFAULT_DETECTOR
    detector_kwargs: dict = field(default_factory=dict)
    smooth_frames: int = 5
    sample_rate: int = SAMPLE_RATE
    min_seconds: float = 0.8
    max_seconds: float = 10.0
    silence_peak: float = 1e-3  # peak |sample| below this (of full scale) is silent audio
    max_length_mismatch: float = 0.5  # seconds between video and audio before a file is called truncated
    exclude_known_defects: bool = True
    decoders: ClassVar[tuple[str, ...]] = ("opencv", "av")  # whose versions key the cache: video and audio decoding

    def key(self, root: Path) -> str:
        return params_key(self, root)


DECODER_NAMES = {"opencv": "OpenCV", "av": "PyAV"}


def decoder_versions(names: tuple[str, ...] = ("opencv", "av")) -> dict:
    """The versions of the libraries that read the media and find the faces. Other releases of them
    give other frames and crops (a new OpenCV or PyAV changed the main job's figure), so the ones a
    dataset uses (its params' ``decoders``) are part of its cache's key: a cache is rebuilt under
    other versions, never reused (see :func:`other_decoder_caches`)."""
    known = dict(opencv=cv2.__version__, av=av.__version__)
    return {name: known[name] for name in names}


def params_key(params, root: Path) -> str:
    """The cache folder's key: a hash of the preprocessing parameters (a dataclass), the data root and
    the versions of the decoders they name."""
    text = json.dumps(dict(asdict(params), root=str(Path(root).resolve()), version=CACHE_VERSION,
                           decoders=decoder_versions(params.decoders)), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def other_decoder_caches(final: Path, root: Path, params) -> dict[Path, dict]:
    """Finished caches beside ``final`` of the same data and parameters under another key: made under
    other decoder versions, or by an older fer-mm whose key had none. Path -> their versions."""
    mine = json.dumps(dict(asdict(params), version=CACHE_VERSION), sort_keys=True, default=str)
    found = {}
    for other in sorted(Path(final).parent.glob(final.name.rsplit("-", 1)[0] + "-*")):
        try:
            saved = json.loads((other / "params.json").read_text())
            report = json.loads((other / "preprocess_report.json").read_text())
        except (OSError, ValueError):
            continue  # not a finished cache
        saved.pop("decoders", None)
        same = json.dumps(saved, sort_keys=True, default=str) == mine and report.get("root") == str(Path(root).resolve())
        if other != final and same:
            found[other] = {k: report.get("versions", {}).get(k) for k in params.decoders}
    return found


def _describe(versions: dict) -> str:
    return " and ".join(f"{DECODER_NAMES[k]} {v}" for k, v in versions.items())


def adopt_or_name_other_caches(final: Path, root: Path, params) -> None:
    """Before building ``final``: a cache of an older fer-mm made under these very decoder versions is
    moved into place (its key just lacked them); one made under others is named in a warning and kept."""
    now = decoder_versions(params.decoders)
    for other, made_with in other_decoder_caches(final, root, params).items():
        if made_with == now and not (final / "clips.csv").is_file():
            saved = json.loads((other / "params.json").read_text())
            write_atomic(other / "params.json", json.dumps(dict(saved, decoders=now), indent=2) + "\n")
            os.replace(other, final)
            log.info("cache %s (made under %s, as now) moved to %s: its key now names the decoders", other,
                     _describe(now), final)
        elif made_with != now:
            log.warning("a cache of this data and these parameters made under %s is at %s; building another under "
                        "%s, since the decoders shape the crops (delete the old one when no run needs it)",
                        _describe(made_with), other, _describe(now))


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


def versions(p: PreprocessParams) -> dict:
    """What shaped the cached frames and waveforms besides the parameters (not hashed into the key)."""
    return dict(opencv=cv2.__version__, av=av.__version__, numpy=np.__version__, scipy=scipy.__version__,
                soundfile=soundfile.__version__,
                detector=dict(name=p.detector, settings=detector_settings(p.detector, **p.detector_kwargs)))


def process_clip(args: tuple) -> dict:
    """Decode, check, detect and crop one clip. Returns arrays, or ``{"skip": reason}``.

    Whatever goes wrong with one clip is reported as its reason; it never stops the run.
    """
    try:
        return _process_clip(*args)
    except Exception as err:  # noqa: BLE001 - an unforeseen defect of one file must not cost the others
        return dict(name=args[0], skip=f"failed: {type(err).__name__}: {err}")


def _process_clip(name: str, video_path: str, audio_path: str, p: dict) -> dict:
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
        decoded = decode_gray(video_path)
    except Exception as err:  # PyAV raises many error types for broken containers
        return dict(name=name, skip=f"unreadable video: {err}")
    video_seconds = len(decoded.frames) / decoded.fps
    if abs(video_seconds - seconds) > p.max_length_mismatch:
        return dict(name=name, skip=f"truncated or mismatched: video {video_seconds:.2f} s vs audio {seconds:.2f} s")
    try:
        detector = make_detector(p.detector, shared=True, **p.detector_kwargs)
        boxes, missing = track_faces(decoded.frames, detector, p.smooth_frames)
    except NoFaceError as err:
        return dict(name=name, skip=str(err))
    except Exception as err:  # noqa: BLE001 - the detector's own failure, named as such
        return dict(name=name, skip=f"face detector failed: {type(err).__name__}: {err}")
    faces = crop_faces(decoded.frames, boxes, p.face_height, p.face_width)
    pcm = audio_io.to_pcm16(samples)
    return dict(name=name, faces=faces, audio=pcm, fps=decoded.fps, faces_missing=missing,
                audio_notes="; ".join(loaded.notes))


CREMA_D_COLUMNS = ("name", "actor", "sentence", "emotion", "level", "label")
TEXT_COLUMNS = {c: str for c in ("name", "sentence", "emotion", "level", "part", "aus", "audio_notes")}


@dataclass(frozen=True)
class SampleSource:
    """A dataset other than CREMA-D as :func:`build_cache` sees it (image sets: see ``fer_mm.data.images``).

    ``scan(root)`` gives one index row per sample to cache (its ``columns`` go into ``clips.csv``)
    and the files it cannot use; ``job(row)`` the picklable arguments of ``process``, which makes
    one sample as :func:`process_clip` does (``faces``, ``audio``, ``fps``, ``faces_missing``,
    ``audio_notes``) or gives ``{"skip": reason}``.
    """

    scan: Callable[[Path], DatasetScan]
    job: Callable[[Any], tuple]
    process: Callable[[tuple], dict]
    columns: tuple[str, ...]


def part_stem(name: str) -> str:
    """A sample's file name in ``<cache>.parts/``: its name where that is a safe file name (every
    CREMA-D clip), else a hash of it (image paths hold folders and dots)."""
    return name if re.fullmatch(r"[\w-]+", name) else "h" + hashlib.sha1(name.encode()).hexdigest()[:20]


class ClipCache:
    """Read side: the cached clips as memory-mapped arrays (cheap to open in every worker)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path / "clips.csv").is_file():
            raise FileNotFoundError(f"{self.path} is not a fer-mm cache (no clips.csv); run python -m fer_mm.preprocess")
        self.params = json.loads((self.path / "params.json").read_text())
        # text columns kept as text: CK+'s sequence "001" is not the number 1, nor an AU list "12" a number
        self.clips = pd.read_csv(self.path / "clips.csv", keep_default_na=False, dtype=TEXT_COLUMNS)
        h, w = self.params["face_height"], self.params["face_width"]
        n_frames, n_samples = int(self.clips["n_frames"].sum()), int(self.clips["n_samples"].sum())
        # numpy cannot map an empty file: a cache without clips gets empty arrays
        self.frames = np.memmap(self.path / "video.u8", dtype=np.uint8, mode="r", shape=(n_frames, h, w)) \
            if n_frames else np.empty((0, h, w), np.uint8)
        self.samples = np.memmap(self.path / "audio.i16", dtype=np.int16, mode="r", shape=(n_samples,)) \
            if n_samples else np.empty(0, np.int16)
        self._v = self.clips[["video_offset", "n_frames"]].to_numpy()
        self._a = self.clips[["audio_offset", "n_samples"]].to_numpy()

    def __len__(self) -> int:
        return len(self.clips)

    def video(self, i: int) -> np.ndarray:
        """All face frames of clip ``i``: ``[n_frames, 98, 80]`` uint8 (a view, not a copy)."""
        start, n = self._v[i]
        return self.frames[start : start + n]

    def audio(self, i: int) -> np.ndarray:
        start, n = self._a[i]
        return self.samples[start : start + n]

    @property
    def report(self) -> dict:
        return json.loads((self.path / "preprocess_report.json").read_text())


def cache_path(root: Path, cache_dir: Path, params: PreprocessParams) -> Path:
    return Path(cache_dir) / f"{Path(root).resolve().name}-{params.key(root)}"


def build_cache(root: Path, cache_dir: Path, params: PreprocessParams = PreprocessParams(), workers: int = 0,
                progress: bool = True, first_clips: int = FIRST_CLIPS, source: SampleSource | None = None) -> ClipCache:
    """Preprocess every clip under ``root`` into a cache (or open the finished one).

    ``source``: another dataset's samples (``params`` then its own parameters); CREMA-D's by default.

    Raises :class:`PreprocessError`, storing nothing as finished, when the detector does not
    work, when the first ``first_clips`` clips (all, when fewer) fail the same way, or when
    no clip could be cached.
    """
    final = cache_path(root, cache_dir, params)
    cache = open_finished_cache(final, root, params)
    if cache is not None:
        return cache
    source = source or crema_d_source(params)
    run = CacheRun(root, params, source.scan(root), final.with_name(final.name + ".parts"))
    check_detector(params)
    todo, resumed = run.resume(source.job)
    # the first clips tell a broken setup only when they are the first ever: a resumed run's work
    # list is weighted towards the clips that legitimately failed before
    t0 = time.time()
    run.process(source.process, todo, workers, progress, watch=0 if resumed else min(first_clips, len(run.scan.index)))
    run.log_scan_problems()
    run.check_some_cached()
    return _assemble(final, run.parts, root, run.scan, params, run.skipped, time.time() - t0, source.columns)


def open_finished_cache(final: Path, root: Path, params) -> ClipCache | None:
    """The finished cache at ``final`` (an older fer-mm's moved there first), or None to build it."""
    if not (final / "clips.csv").is_file():
        adopt_or_name_other_caches(final, root, params)
    if not (final / "clips.csv").is_file():
        return None
    cache = ClipCache(final)
    if len(cache):
        return cache
    log.warning("%s holds no clip (stored by an older version as finished): preprocessing again", final)
    shutil.rmtree(final)
    return None


def crema_d_source(params: PreprocessParams) -> SampleSource:
    """CREMA-D's clips as :func:`build_cache` reads them (``process_clip`` looked up now, so tests may patch it)."""
    return SampleSource(scan=lambda root: scan_root(root, params.exclude_known_defects),
                        job=lambda r: (r.name, r.video_path, r.audio_path, asdict(params)),
                        process=process_clip, columns=CREMA_D_COLUMNS)


def check_detector(params) -> None:
    """Build and try the detector before any worker starts: a broken one is one message, not one per clip.

    A new instance, not the process's: the setup may have changed since that one was built.
    """
    if not getattr(params, "detect", True):  # face crops (an image set with detect=false) need none
        return
    try:
        make_detector(params.detector, **params.detector_kwargs)
    except DetectorError as err:
        raise PreprocessError(str(err)) from err


@dataclass
class CacheRun:
    """One run of :func:`build_cache`: its samples, the folder of finished ones, and those skipped so far.

    Skips are kept in memory, not in ``parts``: a skipped clip is retried by the next run, since its
    reason may have been a broken setup that the user has fixed since.
    """

    root: Path
    params: Any
    scan: DatasetScan
    parts: Path
    skipped: dict = field(default_factory=dict)  # name -> reason
    seen: int = 0  # samples processed by this run

    def resume(self, job: Callable[[Any], tuple]) -> tuple[list[tuple], bool]:
        """The jobs of the samples not finished yet, and whether an earlier run finished some."""
        self.parts.mkdir(parents=True, exist_ok=True)
        for stale in self.parts.glob("*.json"):  # a stopped run's report, or skip records of older versions
            stale.unlink()
        done = {p.name.split(".")[0] for p in self.parts.glob("*.npz") if not p.name.startswith(".")}
        if done:
            log.info("resuming: %d of %d clips already preprocessed in %s", len(done), len(self.scan.index), self.parts)
        return [job(r) for r in self.scan.index.itertuples() if part_stem(r.name) not in done], bool(done)

    def process(self, process: Callable[[tuple], dict], todo: list, workers: int, progress: bool, watch: int) -> None:
        """Each job's sample written to ``parts`` at once, or its skip recorded; stops when the first
        ``watch`` samples all failed the same way."""
        # closing: a stop ends the generator at once, which terminates the worker pool
        with closing(imap_progress(process, todo, workers, "preprocessing clips", progress)) as results:
            for result in results:
                self.seen += 1
                self.keep(result)
                if self.seen == watch and len(self.skipped) == self.seen \
                        and len({reason_kind(r) for r in self.skipped.values()}) == 1:
                    raise self.stopped(_systematic(self.skipped, self.params, len(self.scan.index)))

    def keep(self, result: dict) -> None:
        name = result["name"]
        if "skip" in result:
            log.warning("skipped %s: %s", name, result["skip"])
            self.skipped[name] = result["skip"]
        else:
            meta = {k: result[k] for k in ("fps", "faces_missing", "audio_notes")}
            write_atomic(self.parts / f"{part_stem(name)}.npz", functools.partial(_save_part, result=result, meta=meta))

    def log_scan_problems(self) -> None:
        """The files the scan could not use: a few of each kind (the report lists them all)."""
        for kind, paths in _by_kind(self.scan.problems).items():
            for path in paths[:3]:
                log.warning("skipped %s: %s", path, self.scan.problems[path])
            if len(paths) > 3:
                log.warning("... and %d more skipped as %r (all listed in the preprocessing report)", len(paths) - 3, kind)

    def check_some_cached(self) -> None:
        if len(self.skipped) == len(self.scan.index):  # every clip is either in parts or skipped: none was cached
            kinds = Counter(reason_kind(r) for r in {**self.scan.problems, **self.skipped}.values())
            summary = ", ".join(f"{n} x {kind}" for kind, n in kinds.most_common(3)) or "nothing to read"
            raise self.stopped(f"no clip could be cached from {self.root} ({len(self.scan.index)} clips found; "
                               f"{summary})")

    def stopped(self, message: str) -> PreprocessError:
        """The stop, with the would-be report written beside the parts so that every reason stays visible."""
        report = dict(root=str(Path(self.root).resolve()), stopped=message, clips_found=len(self.scan.index),
                      processed_this_run=self.seen, skipped_count=len(self.scan.problems) + len(self.skipped),
                      skipped=dict(sorted({**self.scan.problems, **self.skipped}.items())),
                      versions=versions(self.params))
        path = write_atomic(self.parts / "preprocess_report.json", json.dumps(report, indent=2, default=str) + "\n")
        return PreprocessError(f"preprocessing stopped: {message}. Nothing was stored as finished (the next run "
                               f"tries again); every reason so far: {path}")


def _save_part(path: Path, result: dict, meta: dict) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
        np.savez(f, faces=result["faces"], audio=result["audio"], meta=json.dumps(meta))


def _by_kind(problems: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path, reason in problems.items():
        out.setdefault(reason_kind(reason), []).append(path)
    return out


def reason_kind(reason: str) -> str:
    """A skip reason without what is particular to one clip: its text up to the first colon
    (names, sizes and durations come after it), with the exception type for ``failed: Type: ...``."""
    head, _, rest = reason.partition(": ")
    return f"{head}: {rest.partition(':')[0]}" if head.endswith("failed") else head


def _systematic(skipped: dict, p: PreprocessParams, n_clips: int) -> str:
    name, reason = next(iter(skipped.items()))
    kind = reason_kind(reason)
    which = f"the first {len(skipped)} clips" if len(skipped) < n_clips else f"all {n_clips} clips"
    message = f"{which} failed the same way ({kind}), e.g. {name}: {reason}"
    if kind.startswith("no face found in"):
        message += (f". The face detector {detector_label(p.detector, p.detector_kwargs)} finds no face in any of them: check its "
                    f"settings (e.g. min_size against the video size) or choose another detector")
        if hasattr(p, "detect"):
            message += "; if the images are face crops already, set data.preprocess.detect=false"
    elif kind.startswith("face detector failed"):
        message += f". The face detector {detector_label(p.detector, p.detector_kwargs)} fails on every clip: fix it or choose another one"
    return message


def _assemble(final: Path, parts: Path, root: Path, scan, params, skipped: dict, seconds: float,
              columns: tuple[str, ...] = CREMA_D_COLUMNS) -> ClipCache:
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows, notes = [], {}
    video_offset = audio_offset = 0
    with open(tmp / "video.u8", "wb") as vf, open(tmp / "audio.i16", "wb") as af:
        for r in scan.index.itertuples():
            if r.name in skipped:
                continue
            with np.load(parts / f"{part_stem(r.name)}.npz") as z:
                faces, pcm, meta = z["faces"], z["audio"], json.loads(str(z["meta"]))
            vf.write(np.ascontiguousarray(faces).tobytes())
            af.write(pcm.tobytes())
            rows.append(dict({c: getattr(r, c) for c in columns}, n_frames=len(faces), fps=meta["fps"],
                             video_offset=video_offset, n_samples=len(pcm), audio_offset=audio_offset,
                             faces_missing=meta["faces_missing"], audio_notes=meta["audio_notes"]))
            if meta["faces_missing"] or meta["audio_notes"]:
                notes[r.name] = dict(faces_missing=meta["faces_missing"], audio=meta["audio_notes"])
            video_offset += len(faces)
            audio_offset += len(pcm)
    clips = pd.DataFrame(rows, columns=[*columns, *LAYOUT_COLUMNS])
    skipped = {**scan.problems, **skipped}
    report = dict(
        root=str(Path(root).resolve()),
        cached_clips=len(clips),
        skipped_count=len(skipped),
        skipped=dict(sorted(skipped.items())),
        actors=int(clips["actor"].nunique()),
        clips_per_emotion=clips["emotion"].value_counts().sort_index().to_dict(),
        frames=int(video_offset),
        audio_seconds=round(audio_offset / params.sample_rate, 2) if audio_offset else 0.0,
        frames_without_face=int(clips["faces_missing"].sum()),
        notes=notes,
        seconds=round(seconds, 1),
        versions=versions(params),
    )
    cache = finish_cache(tmp, final, clips, params, report)
    shutil.rmtree(parts, ignore_errors=True)
    return cache


# what a cache row says about where its arrays lie, after the dataset's own columns
LAYOUT_COLUMNS = ("n_frames", "fps", "video_offset", "n_samples", "audio_offset", "faces_missing", "audio_notes")


def finish_cache(tmp: Path, final: Path, clips: pd.DataFrame, params, report: dict) -> ClipCache:
    """Write the tables of a cache whose arrays are in ``tmp``, then move it into place at ``final``."""
    clips.to_csv(tmp / "clips.csv", index=False)
    (tmp / "params.json").write_text(json.dumps(dict(asdict(params), version=CACHE_VERSION,
                                                     decoders=decoder_versions(params.decoders)), indent=2) + "\n")
    (tmp / "preprocess_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return ClipCache(final)
