"""Preprocessing: every clip decoded, checked, its face tracked and cropped, into a cache (:mod:`fer_mm.data.cache`).

Building is resumable: each finished clip is written at once to ``<cache>.parts/`` (atomic
rename), so a crashed run restarts where it stopped; the final cache is assembled in a
temporary folder and renamed into place.

A broken setup stops the run with one :class:`~fer_mm.data.cache.PreprocessError` instead of one
warning per clip: a detector that cannot be built or run, the first clips all failing the same
way, or no clip cached at all. Nothing is then stored as finished and skipped clips are retried
on the next run; the reasons so far are written to ``<cache>.parts/preprocess_report.json``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
from collections import Counter
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from fer_mm.data.cache import (CREMA_D_COLUMNS, LAYOUT_COLUMNS, ClipCache, PreprocessError, PreprocessParams,
                               SampleSource, cache_path, finish_cache, open_finished_cache, part_stem, versions)
from fer_mm.data.media import audio as audio_io
from fer_mm.data.media.faces import (DetectorError, NoFaceError, crop_faces, detector_label, make_detector,
                                     track_faces)
from fer_mm.data.media.video import decode_gray
from fer_mm.data.parallel import imap_progress
from fer_mm.data.sources.crema_d import DatasetScan, scan_root
from fer_mm.files import write_atomic

log = logging.getLogger(__name__)

LFS_POINTER_PREFIX = b"version https://git-lfs"


LFS_HINT = ("git-lfs pointer file, not media: the clone was made without git-lfs. "
            "Run `git lfs install && git lfs pull` inside the CREMA-D clone")


FIRST_CLIPS = 20  # when these all fail the same way, the setup is broken, not the clips


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
