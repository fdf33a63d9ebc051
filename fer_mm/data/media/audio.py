"""Audio: load a clip's waveform as 16 kHz mono, from a WAV file or a video's audio track.

The spectrogram images a network reads are made on the model side (:mod:`fer_mm.models.frontends`).
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
import soundfile as sf
import torch
from scipy import signal

from fer_mm.data.media.video import stream_start
from fer_mm.vocab import SAMPLE_RATE


@dataclass
class LoadedAudio:
    samples: np.ndarray  # float32 mono in [-1, 1] at ``SAMPLE_RATE``
    notes: list[str]  # what was changed to get there (resampled, downmixed)


def to_mono_rate(data: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE) -> LoadedAudio:
    """``[N, channels]`` float samples at ``rate`` -> mono at ``sample_rate``: every audio source's one way there.

    Channels are averaged; a different rate is resampled with ``scipy.signal.resample_poly``.
    """
    channels = data.shape[1]
    if channels > 1:
        data = data.mean(axis=1, keepdims=True)
    samples = np.ascontiguousarray(data[:, 0], dtype=np.float32)
    if rate != sample_rate and len(samples):
        from math import gcd

        g = gcd(int(rate), sample_rate)
        samples = signal.resample_poly(samples, sample_rate // g, int(rate) // g).astype(np.float32)
    return LoadedAudio(samples, mono_rate_notes(channels, rate, sample_rate))


def mono_rate_notes(channels: int, rate: int, sample_rate: int = SAMPLE_RATE) -> list[str]:
    """What :func:`to_mono_rate` does to audio of ``channels`` at ``rate``."""
    notes = [f"downmixed {channels} channels to mono"] if channels > 1 else []
    return notes + ([f"resampled {rate} Hz to {sample_rate} Hz"] if rate != sample_rate else [])


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """A WAV's samples as float ``[N, channels]`` and its rate."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return data, rate


def load_wav(path: str, sample_rate: int = SAMPLE_RATE) -> LoadedAudio:
    """Read a WAV as float mono at ``sample_rate``; downmix and resample where the file differs."""
    return to_mono_rate(*read_wav(path), sample_rate)


class FloatAudio:
    """PyAV audio frames (any sample format) -> float ``[n, channels]`` arrays at their own rate.

    A change of sample format only (to planar float); rate and channels are left to
    :func:`to_mono_rate`, as for WAV files. Files and live streams both read audio through it:
    call it with each frame, then with ``None`` to flush.
    """

    def __init__(self):
        import av

        self.resampler = av.AudioResampler(format="fltp")

    def __call__(self, frame) -> list[np.ndarray]:
        return [converted.to_ndarray().T for converted in self.resampler.resample(frame)]


@dataclass
class AudioTrack:
    """A container's audio stream as float samples at its own rate."""

    samples: np.ndarray  # [N, channels]
    rate: int
    start: float  # the stream's start time in the container, in seconds
    dropped_packets: int = 0  # packets that could not be decoded (left out)


def read_audio_track(path: str) -> AudioTrack | None:
    """The first audio stream of any container PyAV opens; ``None`` when the file has none.

    Any codec, rate and channel count. A packet that does not decode is left out and counted,
    so one damaged packet does not cost the whole track.
    """
    with av.open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        convert, chunks, dropped = FloatAudio(), [], 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                dropped += 1
                continue
            for frame in frames:
                chunks += convert(frame)
        chunks += convert(None)
        rate = stream.codec_context.sample_rate or stream.rate or SAMPLE_RATE
        start = stream_start(stream)
    samples = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros((0, 1), np.float32)
    return AudioTrack(samples, int(rate), start, dropped)


def shift_start(samples: np.ndarray, rate: int, offset: float) -> np.ndarray:
    """Audio that starts ``offset`` seconds after the video (before, when negative) -> audio that
    starts with it: silence put in front, or the samples before the video left out."""
    n = int(round(offset * rate))
    if n > 0:
        return np.concatenate([np.zeros((n, samples.shape[1]), samples.dtype), samples])
    return samples[-n:]


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16, as the cache stores them (inference quantises alike)."""
    return np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)


def int16_to_float(samples: np.ndarray | torch.Tensor):
    return samples / 32768.0
