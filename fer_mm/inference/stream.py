"""Live sources for :mod:`fer_mm.inference.predict`: ``input=webcam:N``, a stream URL, or a file with
``realtime=true`` (played at its own frame rate: how the tests drive this code without a camera).

A source yields frames and audio chunks in the order they arrive; :func:`run_stream` feeds them
to :class:`~fer_mm.inference.windows.Windows`, the same rolling windows a file's timeline goes
through, smooths the readings over time as a file's timeline does, and prints each window's
prediction and latency as it completes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np
import pandas as pd

from fer_mm.data.media import video as video_io
from fer_mm.data.media.audio import FloatAudio
from fer_mm.inference.media import silence
from fer_mm.inference.model import TrainedModel
from fer_mm.inference.outputs import face_label, window_row
from fer_mm.inference.readings import DEFAULT_SMOOTHING, Smoother, smooth_windows
from fer_mm.inference.windows import Windows, predict_windows

log = logging.getLogger("fer_mm.stream")

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
WEBCAM = "webcam:"
MICROPHONES = (("pulse", "default"), ("alsa", "default"))  # tried in turn by mic=auto


def is_stream_address(address: str) -> bool:
    return address.startswith(WEBCAM) or address.split("://", 1)[0].lower() in STREAM_SCHEMES and "://" in address


class AVSource:
    """A file or stream address read with PyAV: ``("video", t, gray)`` and ``("audio", chunk, rate)`` events.

    Frames carry their times from the video's start and the audio is made to start with the
    video, as a file's timeline reads them (:func:`~fer_mm.inference.media.read_media`); with
    ``realtime`` each frame waits for its time, as a live source would deliver it. A packet that
    does not decode is left out.
    """

    def __init__(self, address: str, realtime: bool = False, need_audio: bool = True):
        self.address, self.realtime = address, realtime
        try:
            self.container = av.open(address, timeout=10) if "://" in address else av.open(address)
        except Exception as err:  # PyAV raises many error types for unreachable or broken sources
            raise RuntimeError(f"input={address}: cannot open it: {err}") from err
        if not self.container.streams.video:
            self.close()
            raise RuntimeError(f"input={address}: no video stream")
        self.video = self.container.streams.video[0]
        self.audio = self.container.streams.audio[0] if need_audio and self.container.streams.audio else None
        self.fps = video_io.frame_rate(self.video)

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    def close(self) -> None:
        self.container.close()

    def __iter__(self) -> Iterator[tuple]:
        wall, n = time.perf_counter(), 0
        video_start = video_io.stream_start(self.video)
        streams = [self.video] + ([self.audio] if self.audio is not None else [])
        convert, rate, offset = FloatAudio(), None, None
        with self.container:
            for packet in self.container.demux(*streams):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    log.warning("%s: a packet that does not decode was left out", self.address)
                    continue
                for frame in frames:
                    if isinstance(frame, av.VideoFrame):
                        t = video_io.frame_time(frame, video_start, n, self.fps)
                        n += 1
                        if self.realtime:
                            time.sleep(max(0.0, wall + t - time.perf_counter()))
                        yield "video", t, frame.to_ndarray(format="gray")
                        continue
                    rate = frame.sample_rate
                    if offset is None:  # samples to put in front of the audio (< 0: to leave out)
                        offset = round((video_io.stream_start(self.audio) - video_start) * rate)
                        if offset > 0:
                            yield "audio", np.zeros((offset, frame.layout.nb_channels), np.float32), rate
                    for chunk in convert(frame):
                        if offset < 0:
                            chunk, offset = chunk[-offset:], min(0, offset + len(chunk))
                        if len(chunk):
                            yield "audio", chunk, rate
            if rate is not None:
                for chunk in convert(None):
                    yield "audio", chunk, rate


class CameraSource:
    """A webcam through OpenCV (frames stamped with the time they arrive), with a microphone
    through PyAV where one opens (its samples counted from the first frame)."""

    def __init__(self, index: int, mic: str = "auto", need_audio: bool = True):
        self.capture = cv2.VideoCapture(index)
        if not self.capture.isOpened():
            raise RuntimeError(f"input=webcam:{index}: no camera opens at index {index}")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 30.0
        self.mic = open_microphone(mic) if need_audio else None

    @property
    def has_audio(self) -> bool:
        return self.mic is not None

    def close(self) -> None:
        self.capture.release()
        if self.mic is not None:
            self.mic.close()

    def __iter__(self) -> Iterator[tuple]:
        chunks: queue.Queue = queue.Queue()
        stop = threading.Event()
        started = False
        try:
            while True:
                ok, bgr = self.capture.read()
                if not ok:
                    break
                if not started:  # the microphone starts with the first frame: both count time from it
                    start, started = time.perf_counter(), True
                    if self.mic is not None:
                        threading.Thread(target=_read_microphone, args=(self.mic, chunks, stop), daemon=True).start()
                yield "video", time.perf_counter() - start, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
                while not chunks.empty():
                    item = chunks.get()
                    if isinstance(item, Exception):
                        raise RuntimeError(f"the microphone stopped: {item}") from item
                    yield ("audio", *item)
        finally:
            stop.set()
            self.close()


def open_microphone(mic: str):
    """A PyAV input container for ``mic`` (``FORMAT:DEVICE``, ``auto`` or ``none``); None where none opens."""
    if mic == "none":
        return None
    if mic != "auto" and ":" not in mic:
        raise ValueError(f"mic={mic}: write auto, none, or FORMAT:DEVICE for PyAV (pulse:default, alsa:hw:0)")
    tries = MICROPHONES if mic == "auto" else [tuple(mic.split(":", 1))]
    for fmt, device in tries:
        try:
            container = av.open(device, format=fmt)
        except Exception as err:  # noqa: BLE001 - no such device or driver: try the next one
            log.info("microphone %s:%s does not open: %s", fmt, device, err)
            continue
        if container.streams.audio:
            log.info("microphone: %s:%s", fmt, device)
            return container
        container.close()
    if mic != "auto":
        raise RuntimeError(f"mic={mic}: no audio input opens there")
    return None


def _read_microphone(container, chunks: queue.Queue, stop: threading.Event) -> None:
    """Audio chunks into ``chunks``; an error is put there too, for the reading side to raise."""
    stream = container.streams.audio[0]
    convert = FloatAudio()
    try:
        for frame in container.decode(stream):
            for chunk in convert(frame):
                chunks.put((chunk, frame.sample_rate))
            if stop.is_set():
                break
    except Exception as err:  # noqa: BLE001 - handed over to the thread that can report it
        chunks.put(err)


def open_source(address: str, realtime: bool = False, mic: str = "auto", need_audio: bool = True,
                missing_audio: str = "skip"):
    """The live source for ``input``; an audio+video model without audio needs ``missing_audio=silence``."""
    if address.startswith(WEBCAM):
        index = address[len(WEBCAM):]
        if not index.isdigit():
            raise ValueError(f"input={address}: write webcam:N with N the camera's index (webcam:0)")
        source = CameraSource(int(index), mic, need_audio)
    else:
        if not realtime and not is_stream_address(address):
            raise ValueError(f"input={address} is not a live source (webcam:N or a stream URL); "
                             f"add realtime=true to play a file as one")
        source = AVSource(address, realtime, need_audio)
    if need_audio and not source.has_audio and missing_audio != "silence":
        source.close()
        raise RuntimeError(f"input={address} gives no audio (no microphone, or no audio stream) and the model "
                           f"reads audio: use a video-only checkpoint, name a microphone (mic=FORMAT:DEVICE), "
                           f"or missing_audio=silence")
    return source


class _WindowLog:
    """A live source's finished windows: each predicted, its readings smoothed over time, appended to
    ``windows.csv`` and printed as it completes, and shown over the latest frame (``show``: the
    smoothed readings)."""

    def __init__(self, rec: TrainedModel, csv: Path, show: bool, quiet: bool, max_windows: int | None,
                 smoothing: float = DEFAULT_SMOOTHING):
        self.rec, self.csv, self.show, self.quiet, self.max_windows = rec, csv, show, quiet, max_windows
        self.smoother = Smoother(smoothing)
        self.rows: list[dict] = []
        self.latest: np.ndarray | None = None  # the latest frame
        csv.unlink(missing_ok=True)

    def add(self, done: list[dict], prepare_ms: float) -> bool:
        """``done`` windows, each ``prepare_ms`` in the making; True once ``max_windows`` are in."""
        for w in done:
            t0 = time.perf_counter()
            smooth_windows(predict_windows(self.rec, [w]), self.smoother)
            row = dict(window_row(self.rec, len(self.rows), w),
                       latency_ms=round((time.perf_counter() - t0) * 1000 + prepare_ms, 1))
            self.rows.append(row)
            pd.DataFrame([row]).to_csv(self.csv, mode="a", header=len(self.rows) == 1, index=False)
            if not self.quiet:
                label = face_label(row)
                what = f"{label}   smoothed: {face_label(row, smoothed=True)}" if label else f"-- {row['reason']}"
                print(f"[{row['start']:7.2f} - {row['end']:7.2f} s] {what}   {row['latency_ms']:6.1f} ms", flush=True)
            if self.show and self.latest is not None:
                try:
                    _show(self.latest, row)
                except RuntimeError as err:  # no GUI: the predictions go on, printed
                    log.warning("%s", err)
                    self.show = False
            if self.max_windows and len(self.rows) >= self.max_windows:
                return True
        return False


def _ready(windows: Windows, final: bool = False) -> tuple[list[dict], float]:
    """The windows complete now (:meth:`Windows.ready`), and the milliseconds each took to prepare."""
    t0 = time.perf_counter()
    done = windows.ready(final)
    return done, (time.perf_counter() - t0) * 1000 / max(len(done), 1)


def run_stream(rec: TrainedModel, source, window: float, hop: float, output: Path, show: bool = False,
               max_windows: int | None = None, quiet: bool = False, smoothing: float = DEFAULT_SMOOTHING) -> list[dict]:
    """Rolling predictions over a live source; each window printed as it completes and appended to
    ``output/windows.csv``, its readings also smoothed over time (``smoothing`` seconds, as a
    file's timeline is). Returns the window rows."""
    output.mkdir(parents=True, exist_ok=True)
    windows = Windows(rec, window, hop)
    give_silence = windows.needs_audio and not source.has_audio  # missing_audio=silence: keeps pace with the frames
    finished = _WindowLog(rec, output / "windows.csv", show, quiet, max_windows, smoothing)
    events = iter(source)
    try:
        for event in events:
            if event[0] == "video":
                _, t, gray = event
                finished.latest = gray
                windows.add_frame(t, gray)
                if give_silence:  # up to the end of this frame, as a file's silence lasts to its last frame's end
                    missing = round((t + 1.0 / source.fps) * rec.spec.sample_rate) - windows.audio_count
                    if missing > 0:
                        windows.add_audio(silence(missing / rec.spec.sample_rate, rec.spec.sample_rate),
                                          rec.spec.sample_rate)
            else:
                _, chunk, rate = event
                windows.add_audio(chunk, rate)
            if finished.add(*_ready(windows)):
                return finished.rows
        finished.add(*_ready(windows, final=True))
        return finished.rows
    finally:
        if hasattr(events, "close"):  # a generator: closing it releases the camera or the container
            events.close()


def _show(gray: np.ndarray, row: dict) -> None:
    """The latest frame with the window's smoothed readings."""
    img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    label = face_label(row, smoothed=True) or row["reason"]
    cv2.putText(img, label, (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 220, 0), 2)
    try:
        cv2.imshow("fer-mm", img)
        cv2.waitKey(1)
    except cv2.error as err:
        raise RuntimeError("show=true needs an OpenCV with GUI support (pip install opencv-python in place of "
                           "opencv-python-headless); the predictions go on, printed") from err
