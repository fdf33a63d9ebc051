"""Rolling windows over frames and audio arriving in time order: a file's timeline and a live
source both go through :class:`Windows`."""

from __future__ import annotations

import math

import numpy as np

from fer_mm.inference.media import clip_input
from fer_mm.inference.model import ClipError, TrainedModel
from fer_mm.inference.readings import reading_of
from fer_mm.vocab import AUDIO, VIDEO

LONG_CLIP_WINDOW = 2.5  # seconds: the windows of a clip too long to read whole, when no window is given


class Windows:
    """Rolling windows of ``window`` seconds every ``hop`` seconds over frames and audio arriving in
    time order: a file's timeline and a live stream both go through it.

    Each frame's face is tracked as it arrives; a window's boxes are smoothed and cropped within the
    window, and its audio downmixed, resampled and quantised, by the functions training uses.
    """

    def __init__(self, rec: TrainedModel, window: float, hop: float, audio_rate: int | None = None):
        rec.check_window(window, hop)
        self.rec, self.window, self.hop, self.audio_rate = rec, float(window), float(hop), audio_rate
        self.tracker = rec.tracker()
        self.times: list[float] = []
        self.frames: list[np.ndarray] = []
        self.detected: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self.audio_first = 0  # index of the first buffered sample since the start
        self.audio_count = 0  # samples received
        self.video_time = 0.0  # time of the latest frame
        self.index = 0  # the next window's number

    @property
    def needs_video(self) -> bool:
        return VIDEO in self.rec.modalities

    @property
    def needs_audio(self) -> bool:
        return AUDIO in self.rec.modalities

    def add_frame(self, t: float, gray: np.ndarray, box: np.ndarray | None = None) -> None:
        """A frame at ``t`` seconds; its face is tracked here unless its tracked ``box`` is given."""
        if not self.needs_video:
            return
        self.times.append(t)
        self.frames.append(gray)
        if box is None:
            box = self.tracker(gray) if self.tracker is not None else self.rec.locate(gray[None])[0]
        self.detected.append(box)
        self.video_time = t

    def add_audio(self, samples: np.ndarray, rate: int) -> None:
        """``samples`` ``[n, channels]`` float at ``rate`` (the stream's own)."""
        if not self.needs_audio:
            return
        if self.audio_rate is None:
            self.audio_rate = rate
        elif rate != self.audio_rate:
            raise ValueError(f"the audio rate changed mid-stream ({self.audio_rate} -> {rate} Hz)")
        self.audio.append(samples)
        self.audio_count += len(samples)

    def span(self, k: int) -> tuple[float, float]:
        return k * self.hop, k * self.hop + self.window

    def _covered(self, end: float) -> bool:
        """Whether everything up to ``end`` seconds has arrived."""
        video = not self.needs_video or (bool(self.times) and self.video_time >= end)
        audio = not self.needs_audio or (self.audio_rate is not None and self.audio_count >= round(end * self.audio_rate))
        return video and audio

    def _length(self) -> float:
        """Seconds received (at the end of a stream)."""
        lengths = []
        if self.needs_video and self.times:
            step = self.times[-1] - self.times[-2] if len(self.times) > 1 else 0.0
            lengths.append(self.times[-1] + step)
        if self.needs_audio and self.audio_rate:
            lengths.append(self.audio_count / self.audio_rate)
        return min(lengths) if lengths else 0.0

    def ready(self, final: bool = False) -> list[dict]:
        """The windows complete now; ``final``: at the end of the input, those that fit in it (an
        input shorter than one window is one window)."""
        out = []
        length = self._length() if final else math.inf
        while True:
            start, end = self.span(self.index)
            if final:
                if end > length + 1e-6 and (self.index > 0 or length <= 0):
                    break
                end = min(end, length)
            elif not self._covered(end):
                break
            out.append(self._item(start, end))
            self.index += 1
            self._trim(self.span(self.index)[0])
        return out

    def _item(self, start: float, end: float) -> dict:
        row = dict(start=round(start, 3), end=round(end, 3))
        frames = detected = audio = None
        if self.needs_video:
            times = np.asarray(self.times)
            pick = np.flatnonzero((times >= start - 1e-9) & (times < end - 1e-9))
            frames = np.stack([self.frames[i] for i in pick]) if len(pick) else None
            detected = np.stack([self.detected[i] for i in pick]) if len(pick) else None
            row["frames"] = len(pick)
        if self.needs_audio:
            if self.audio_rate is None:
                row["error"] = "no audio arrived"
                return row
            a, b = round(start * self.audio_rate) - self.audio_first, round(end * self.audio_rate) - self.audio_first
            buffered = np.concatenate(self.audio) if self.audio else np.zeros((0, 1), np.float32)
            audio = buffered[max(a, 0) : max(b, 0)]
            if not len(audio):
                row["error"] = "no audio in this window"
                return row
        if self.needs_video and frames is None:
            row["error"] = "no frame in this window"
            return row
        try:
            row["item"], row["frames_with_face"], _ = clip_input(self.rec, frames, detected, audio, self.audio_rate)
        except ClipError as err:
            row["error"] = str(err)
        return row

    def _trim(self, start: float) -> None:
        """Forget what no later window reads."""
        if self.needs_video:
            keep = next((i for i, t in enumerate(self.times) if t >= start - 1e-9), len(self.times))
            del self.times[:keep], self.frames[:keep], self.detected[:keep]
        if self.needs_audio and self.audio_rate and self.audio:
            first = round(start * self.audio_rate)
            buffered = np.concatenate(self.audio)
            drop = min(max(first - self.audio_first, 0), len(buffered))
            self.audio = [buffered[drop:]]
            self.audio_first += drop


def predict_windows(rec: TrainedModel, rows: list[dict], batch_size: int = 16) -> list[dict]:
    """Fill each window row's ``reading`` (its :meth:`~TrainedModel.readings`, in batches); a row
    with an error keeps it."""
    todo = [r for r in rows if "item" in r]
    for i in range(0, len(todo), batch_size):
        chunk = todo[i : i + batch_size]
        readings = rec.readings([r["item"] for r in chunk])
        for j, r in enumerate(chunk):
            r["reading"] = reading_of(readings, j)
    for r in rows:
        r.pop("item", None)
    return rows
