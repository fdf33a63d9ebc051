"""Video: decode every frame, find the face, crop it to a grayscale 98x80 track.

The method crops the detected face in every frame. fer-mm keeps that, but makes it robust
and fast: detection runs on a downscaled frame, boxes are smoothed over time (a jittery crop
would teach the network the detector's noise), and a frame without a detection reuses the
nearest detected box and is counted.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from typing import Protocol, Sequence

import av
import cv2
import numpy as np

from fer_mm.data.media.detectors import YuNetFaceDetector


class FaceDetector(Protocol):
    """A callable finding faces in a grayscale frame. A class attribute ``parallel_frames = True``
    says that instances in several threads run at once (inference then searches a file's frames
    in parallel)."""

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        """Boxes ``[N, 4]`` as (x, y, w, h) in pixels of ``gray``."""


OPENCV4_FIX = "pip install 'opencv-python-headless<5'"


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


# haar: the method's (and the default); yunet: a CNN for faces of varied size and pose (see detectors.py)
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


def make_detector(name: str, **kwargs) -> FaceDetector:
    return detector_class(name)(**kwargs)


def detector_settings(name: str, **kwargs) -> dict:
    """The detector's constructor arguments with its defaults filled in (what the report records)."""
    bound = inspect.signature(detector_class(name)).bind(**kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


@dataclass
class DecodedVideo:
    frames: np.ndarray  # [N, H, W] uint8 grayscale
    fps: float
    declared_seconds: float | None = None  # the length the container states for the stream, where it states one
    times: np.ndarray | None = None  # [N] each frame's time in seconds from the stream's start
    start: float = 0.0  # the stream's start time in the container, in seconds

    @property
    def seconds(self) -> float:
        """Up to the end of the last frame (``N / fps`` at a constant frame rate)."""
        if self.times is None or not len(self.times):
            return len(self.frames) / self.fps
        return float(self.times[-1]) + 1.0 / self.fps


def frame_rate(stream) -> float:
    """A video stream's frame rate as the file states it (30 where it states none)."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 30.0


def stream_start(stream) -> float:
    """When a stream starts in its container, in seconds (streams of one file may start apart)."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0


def frame_time(frame, start: float, index: int, fps: float) -> float:
    """A decoded frame's time from its stream's start (the index over the frame rate where it has none)."""
    return frame.time - start if frame.time is not None else index / fps


def declared_seconds(container, stream) -> float | None:
    """The length a container states for one stream: its own duration, else (Matroska) its
    DURATION tag, else the container's, which may include longer streams."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            h, m, sec = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            pass
    return container.duration / av.time_base if container.duration else None


def decode_gray(path: str) -> DecodedVideo:
    """Every frame of the first video stream as grayscale, with its time; frame rate read from the file."""
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps, start = frame_rate(stream), stream_start(stream)
        frames, times = [], []
        for i, f in enumerate(container.decode(stream)):
            frames.append(f.to_ndarray(format="gray"))
            times.append(frame_time(f, start, i, fps))
        declared = declared_seconds(container, stream)
    if not frames:
        raise ValueError("the video holds no decodable frames")
    return DecodedVideo(np.stack(frames), fps, declared, np.asarray(times, dtype=np.float64), start)


class NoFaceError(ValueError):
    """No frame of a clip has a face (kept apart from errors raised by the detector itself)."""


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
    return other boxes than its single-threaded one, which is why :func:`~fer_mm.data.cache.load_detector`
    keeps OpenCV to one thread.)
    """
    detectors = list(detector) if isinstance(detector, (list, tuple)) else [detector]
    if len(detectors) == 1 or len(frames) < 2:
        found = [detectors[0](frame) for frame in frames]
    else:
        from concurrent.futures import ThreadPoolExecutor

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


def sample_frame_indices(n_frames: int, t: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``t`` evenly spaced frame indices; with ``rng``, each is jittered within its segment.

    Without ``rng`` this is the method's exact evaluation sampling (``linspace`` over the clip).
    With it, index k is drawn uniformly from the k-th of ``t`` equal segments (temporal jitter
    augmentation that keeps the order and the coverage of the clip).
    """
    if n_frames <= 0:
        raise ValueError("a clip must have at least one frame")
    if rng is None:
        return np.linspace(0, n_frames - 1, t).round().astype(np.int64)
    edges = np.linspace(0, n_frames, t + 1)
    picks = edges[:-1] + rng.random(t) * (edges[1:] - edges[:-1])
    return np.minimum(picks.astype(np.int64), n_frames - 1)
