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

A cache is derived data: safe to delete. It is built by :mod:`fer_mm.data.preprocessing`; this
module is its layout, its key and its read side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import av
import cv2
import numpy as np
import pandas as pd
import scipy
import soundfile

from fer_mm.data.media.faces import DEFAULT_DETECTOR, detector_settings
from fer_mm.data.sources.crema_d import DatasetScan
from fer_mm.files import write_atomic
from fer_mm.vocab import SAMPLE_RATE

log = logging.getLogger(__name__)

CACHE_VERSION = 1


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


def params_fields(params) -> dict:
    """A params dataclass as a dict, less its ``optional_fields`` that hold their defaults: fields
    added for a new format leave the other formats' keys and ``params.json`` as they were."""
    fields = asdict(params)
    for name in getattr(params, "optional_fields", ()):
        if fields[name] == type(params).__dataclass_fields__[name].default:
            del fields[name]
    return fields


def params_key(params, root: Path) -> str:
    """The cache folder's key: a hash of the preprocessing parameters (a dataclass), the data root and
    the versions of the decoders they name."""
    text = json.dumps(dict(params_fields(params), root=str(Path(root).resolve()), version=CACHE_VERSION,
                           decoders=decoder_versions(params.decoders)), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def other_decoder_caches(final: Path, root: Path, params) -> dict[Path, dict]:
    """Finished caches beside ``final`` of the same data and parameters under another key: made under
    other decoder versions, or by an older fer-mm whose key had none. Path -> their versions."""
    mine = json.dumps(dict(params_fields(params), version=CACHE_VERSION), sort_keys=True, default=str)
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


def versions(p: PreprocessParams) -> dict:
    """What shaped the cached frames and waveforms besides the parameters (not hashed into the key)."""
    return dict(opencv=cv2.__version__, av=av.__version__, numpy=np.__version__, scipy=scipy.__version__,
                soundfile=soundfile.__version__,
                detector=dict(name=p.detector, settings=detector_settings(p.detector, **p.detector_kwargs)))


CREMA_D_COLUMNS = ("name", "actor", "sentence", "emotion", "level", "label")


TEXT_COLUMNS = {c: str for c in ("name", "sentence", "emotion", "level", "part", "aus", "audio_notes", "race", "box",
                                  "dataset")}


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


# what a cache row says about where its arrays lie, after the dataset's own columns
LAYOUT_COLUMNS = ("n_frames", "fps", "video_offset", "n_samples", "audio_offset", "faces_missing", "audio_notes")


def finish_cache(tmp: Path, final: Path, clips: pd.DataFrame, params, report: dict) -> ClipCache:
    """Write the tables of a cache whose arrays are in ``tmp``, then move it into place at ``final``."""
    clips.to_csv(tmp / "clips.csv", index=False)
    (tmp / "params.json").write_text(json.dumps(dict(params_fields(params), version=CACHE_VERSION,
                                                     decoders=decoder_versions(params.decoders)), indent=2) + "\n")
    (tmp / "preprocess_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return ClipCache(final)
