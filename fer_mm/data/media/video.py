"""Video: decode every frame as grayscale with its time, and sample a clip's frames.

The faces in the frames are found, tracked and cropped by :mod:`fer_mm.data.media.faces`.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np


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
