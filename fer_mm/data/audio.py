"""Audio: load a clip as 16 kHz mono, and turn waveforms into spectrograms.

Two front-ends, same contract (waveform in, ``[1, n_freq, n_time]`` image out, fresh Gaussian
noise on the samples when training):
- ``ScipySpectrogram``: the method's own, per clip on the CPU: noise added to the samples,
  ``scipy.signal.spectrogram``, flipped so low frequencies are at the bottom, normalised by its
  maximum, resized to a fixed shape.
- ``LogMelSpectrogram``: torchaudio log-mel, batched on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import soundfile as sf
import torch
import torchaudio
from scipy import signal

SAMPLE_RATE = 16_000


@dataclass
class LoadedAudio:
    samples: np.ndarray  # float32 mono in [-1, 1] at ``SAMPLE_RATE``
    notes: list[str]  # what was changed to get there (resampled, downmixed)


def load_wav(path: str, sample_rate: int = SAMPLE_RATE) -> LoadedAudio:
    """Read a WAV as float mono at ``sample_rate``; downmix and resample where the file differs."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    notes = []
    if data.shape[1] > 1:
        notes.append(f"downmixed {data.shape[1]} channels to mono")
        data = data.mean(axis=1, keepdims=True)
    samples = data[:, 0]
    if rate != sample_rate and len(samples):
        from math import gcd

        g = gcd(rate, sample_rate)
        samples = signal.resample_poly(samples, sample_rate // g, rate // g).astype(np.float32)
        notes.append(f"resampled {rate} Hz to {sample_rate} Hz")
    return LoadedAudio(samples, notes)


def int16_to_float(samples: np.ndarray | torch.Tensor):
    return samples / 32768.0


class ScipySpectrogram:
    """The method's spectrogram, computed per clip (in data-loader workers).

    Args:
        n_freq, n_time: output image size.
        nperseg, noverlap: STFT window and overlap in samples (25 ms / 15 ms at 16 kHz).
        noise_std: standard deviation of the Gaussian noise added to the [-1, 1] samples in training.
        log: take ``log1p`` of the power before normalising (the method uses the linear power;
            the log makes quiet formant structure visible and is the default here).
    """

    device_side = False

    def __init__(self, n_freq: int = 128, n_time: int = 128, nperseg: int = 400, noverlap: int = 240,
                 noise_std: float = 0.01, log: bool = True, sample_rate: int = SAMPLE_RATE):
        self.n_freq, self.n_time, self.nperseg, self.noverlap = n_freq, n_time, nperseg, noverlap
        self.noise_std, self.log, self.sample_rate = noise_std, log, sample_rate

    def __call__(self, samples: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        x = samples.astype(np.float64)
        if rng is not None and self.noise_std > 0:
            x = x + rng.normal(0.0, self.noise_std, x.shape)
        _, _, power = signal.spectrogram(x, fs=self.sample_rate, nperseg=self.nperseg, noverlap=self.noverlap)
        if self.log:
            power = np.log1p(power / (power.mean() + 1e-12))
        image = cv2.resize(np.flipud(power).astype(np.float32), (self.n_time, self.n_freq),
                           interpolation=cv2.INTER_AREA)
        # normalised after the resize, so that every image's maximum is exactly 1
        return (image / (image.max() + 1e-12))[None]


class LogMelSpectrogram(torch.nn.Module):
    """Batched log-mel front-end for the training device.

    Takes padded waveforms ``[B, S]`` and their lengths, adds noise in training, and returns
    ``[B, 1, n_freq, n_time]``: each clip's own frames resized to ``n_time`` (so, as with the
    scipy front-end, the image spans the whole clip), scaled to [0, 1] per clip.
    """

    device_side = True

    def __init__(self, n_freq: int = 128, n_time: int = 128, n_fft: int = 1024, win_length: int = 400,
                 hop_length: int = 160, noise_std: float = 0.01, sample_rate: int = SAMPLE_RATE, top_db: float = 80.0):
        super().__init__()
        self.n_freq, self.n_time, self.hop_length, self.noise_std = n_freq, n_time, hop_length, noise_std
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length,
                                                        hop_length=hop_length, n_mels=n_freq)
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=top_db)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None = None,
                augment: bool = False) -> torch.Tensor:
        waves = waves.float()
        if augment and self.noise_std > 0:
            noise = torch.randn(waves.shape, generator=generator, device=waves.device) * self.noise_std
            mask = torch.arange(waves.shape[1], device=waves.device)[None] < lengths[:, None]
            waves = waves + noise * mask
        spec = self.to_db(self.mel(waves))  # [B, n_mels, frames]
        out = []
        for s, n in zip(spec, lengths.tolist()):
            frames = max(1, min(s.shape[-1], n // self.hop_length + 1))
            s = s[:, :frames]
            s = (s - s.min()) / (s.max() - s.min() + 1e-6)
            s = torch.nn.functional.interpolate(s[None, None], size=(self.n_freq, self.n_time), mode="bilinear",
                                                align_corners=False)[0]
            out.append(s.flip(-2))  # low frequencies at the bottom, as in the method's images
        return torch.stack(out)


FRONTENDS = {"scipy": ScipySpectrogram, "logmel": LogMelSpectrogram}


def make_frontend(name: str, **kwargs):
    if name not in FRONTENDS:
        raise ValueError(f"data.audio.frontend={name!r}: unknown front-end; use one of {sorted(FRONTENDS)}")
    return FRONTENDS[name](**kwargs)
