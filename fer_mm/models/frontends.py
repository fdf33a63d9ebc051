"""Spectrogram front-ends: waveforms -> the images an audio network reads. Model side: saved with it.

Two front-ends, both batched ``nn.Module``s run on the training device with one contract:
``forward(waves [B, S] in [-1, 1] zero-padded, lengths [B], augment=False, generator=None)``
returns ``[B, 1, n_freq, n_time]`` float32 in [0, 1], low frequencies at the bottom, each clip's
image made from its own valid samples only; with ``augment`` fresh Gaussian noise is added to
the valid samples.
- ``ScipySpectrogram``: the method's own image (``scipy.signal.spectrogram``, log, flip,
  ``cv2.resize`` INTER_AREA, divided by its maximum), reproduced in torch; ``scipy_spectrogram``
  is the per-clip numpy original it is tested against.
- ``LogMelSpectrogram``: torchaudio log-mel, scaled to [0, 1] per clip.

Either can add SpecAugment's masks in training (``spec_augment``; :class:`SpecAugment`).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
import torchaudio
from scipy import signal

from fer_mm.vocab import SAMPLE_RATE


def scipy_spectrogram(samples: np.ndarray, rng: np.random.Generator | None = None, *, n_freq: int = 128,
                      n_time: int = 128, nperseg: int = 400, noverlap: int = 240, noise_std: float = 0.01,
                      log: bool = True, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The method's spectrogram image of one clip, in numpy: the reference ``ScipySpectrogram`` is tested against.

    Args:
        samples: one clip's samples in [-1, 1], unpadded.
        rng: draws the training noise; ``None`` adds none (evaluation).
        n_freq, n_time: output image size.
        nperseg, noverlap: STFT window and overlap in samples (25 ms / 15 ms at 16 kHz).
        noise_std: standard deviation of the Gaussian noise added to the samples when ``rng`` is given.
        log: take ``log1p`` of the power over its mean (the method uses the linear power; the log
            makes quiet formant structure visible and is the default here).
        sample_rate: of ``samples``, in Hz.

    Returns:
        ``[1, n_freq, n_time]`` float32, maximum 1.
    """
    x = samples.astype(np.float64)
    if rng is not None and noise_std > 0:
        x = x + rng.normal(0.0, noise_std, x.shape)
    _, _, power = signal.spectrogram(x, fs=sample_rate, nperseg=nperseg, noverlap=noverlap)
    if log:
        power = np.log1p(power / (power.mean() + 1e-12))
    image = cv2.resize(np.flipud(power).astype(np.float32), (n_time, n_freq), interpolation=cv2.INTER_AREA)
    # normalised after the resize, so that every image's maximum is exactly 1
    return (image / (image.max() + 1e-12))[None]


def add_noise(waves: torch.Tensor, lengths: torch.Tensor, noise_std: float,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Fresh Gaussian noise on each clip's valid samples; the padding stays zero.

    Args:
        waves: ``[B, S]`` zero-padded samples.
        lengths: ``[B]`` valid samples per clip.
        noise_std: standard deviation of the noise.
        generator: draws the noise (must live on ``waves``' device); ``None`` uses torch's global one.
    """
    noise = torch.randn(waves.shape, generator=generator, device=waves.device, dtype=waves.dtype)
    valid = torch.arange(waves.shape[1], device=waves.device) < lengths[:, None]
    return waves + noise * noise_std * valid


class SpecAugment(torch.nn.Module):
    """SpecAugment's frequency and time masking (Park et al. 2019), batched: in each image, ``freq_masks``
    bands of up to ``freq_width`` rows and ``time_masks`` spans of up to ``time_width`` columns are set
    to 0 (the images' floor), each drawn afresh per clip and per call (no time warping).

    Args:
        freq_masks, freq_width: frequency masks per image and their largest width in rows.
        time_masks, time_width: time masks per image and their largest width in columns.
    """

    def __init__(self, freq_masks: int = 2, freq_width: int = 16, time_masks: int = 2, time_width: int = 16):
        super().__init__()
        if min(freq_masks, freq_width, time_masks, time_width) < 0:
            raise ValueError("model.inputs.audio.spec_augment: mask counts and widths must be 0 or more")
        self.freq_masks, self.freq_width, self.time_masks, self.time_width = freq_masks, freq_width, time_masks, time_width

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[B, F, W]`` images -> the same with masks (a new tensor)."""
        keep = torch.ones_like(images, dtype=torch.bool)
        for axis, masks, width in ((1, self.freq_masks, self.freq_width), (2, self.time_masks, self.time_width)):
            if not masks or not width:
                continue
            size = images.shape[axis]
            shape = (images.shape[0], masks, 1)
            widths = (torch.rand(shape, generator=generator, device=images.device) * (min(width, size) + 1)).floor()
            starts = (torch.rand(shape, generator=generator, device=images.device) * (size - widths + 1)).floor()
            idx = torch.arange(size, device=images.device)
            masked = ((idx >= starts) & (idx < starts + widths)).any(1)  # [B, size]
            keep &= ~(masked[:, :, None] if axis == 1 else masked[:, None, :])
        return images * keep


def make_spec_augment(settings: dict | None) -> SpecAugment | None:
    """SpecAugment from ``model.inputs.audio.spec_augment`` (its keys as :class:`SpecAugment`'s), or None."""
    if not settings:
        return None
    try:
        return SpecAugment(**settings)
    except TypeError as err:
        raise TypeError(f"model.inputs.audio.spec_augment: {err}; keys: freq_masks, freq_width, time_masks, "
                        f"time_width") from err


def _area_weights(n_src: torch.Tensor, n_out: int, size: int, enlarging: torch.Tensor) -> torch.Tensor:
    """Per-clip weights of ``cv2.resize``'s INTER_AREA along one axis, as a matrix.

    Args:
        n_src: ``[B]`` (or ``[1]``, shared) valid source pixels of each clip; the rest of ``size`` is
            padding, weight 0.
        n_out: output pixels.
        size: padded source size.
        enlarging: ``[B]`` bool, whether cv2 enlarges either axis of the clip: it averages areas only
            when it does not, and otherwise uses its two-tap "area-like" interpolation on both axes.

    Returns:
        ``[B, n_out, size]`` float64: output pixel ``d`` of clip ``b`` is ``weights[b, d] @ source``.
    """
    n_src = n_src.to(torch.float64)[:, None, None]
    inv = n_out / n_src
    scale = 1 / inv  # computed as cv2 computes it, so that floors land where cv2's do
    d = torch.arange(n_out, dtype=torch.float64, device=n_src.device)[None, :, None]
    s = torch.arange(size, dtype=torch.float64, device=n_src.device)[None, None, :]
    # area: the overlap of output cell [d, d + 1) * scale with source pixel [s, s + 1), over the cell
    # width; cv2 skips slivers under 1e-3 of a pixel
    start = d * scale
    overlap = ((d + 1) * scale - s).clamp(0, 1) - (start - s).clamp(0, 1)
    area = overlap * (overlap > 1e-3) / scale
    # cv2's two-tap form: 1 - f on pixel floor(d * scale) and f on the next, clamped at the last pixel;
    # a hat centred at floor + f gives both
    left = torch.floor(start)
    f = (d + 1) - (left + 1) * inv
    f = torch.where((f <= 0) | (left >= n_src - 1), 0.0, f - torch.floor(f))
    two_tap = (1 - (s - torch.minimum(left, n_src - 1) - f).abs()).clamp(min=0)
    return torch.where(enlarging[:, None, None], two_tap, area) * (s < n_src)


def resize_area(images: torch.Tensor, widths: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``cv2.resize(image[:, :w], (width, height), interpolation=cv2.INTER_AREA)`` for every clip at once.

    Args:
        images: ``[B, H, W]`` float, each clip's columns past its own width being padding.
        widths: ``[B]`` valid columns (time frames) per clip.
        height, width: output size.

    Returns:
        ``[B, height, width]``, the same dtype as ``images``.
    """
    enlarging = (widths < width) | (images.shape[1] < height)
    # every clip has all its rows: two sets of row weights (shrinking, enlarging), picked per clip
    rows = _row_weights(images.shape[1], height, images.device, images.dtype)[enlarging.long()]
    cols = _area_weights(widths, width, images.shape[2], enlarging)
    # time first: the larger axis shrinks before the second product
    return rows @ (images @ cols.to(images.dtype).transpose(1, 2))


@functools.lru_cache(maxsize=16)
def _row_weights(size: int, n_out: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[2, n_out, size]``: the weights of an axis that every clip fills (``size`` pixels), when cv2
    shrinks (0) and when it enlarges (1). Constants of the shapes: made once per size, device and
    dtype, on the device (no upload per batch), as plain tensors whatever the caller's grad mode."""
    with torch.inference_mode(False), torch.no_grad():
        n_src = torch.full((2,), size, dtype=torch.float64, device=device)
        return _area_weights(n_src, n_out, size, torch.arange(2, device=device) == 1).to(dtype)


class ScipySpectrogram(torch.nn.Module):
    """The method's spectrogram image, batched in torch: ``scipy_spectrogram`` for a whole padded batch.

    Per clip, as scipy does: segments of ``nperseg`` samples every ``nperseg - noverlap``, only those
    inside the clip; constant detrend; periodic Tukey(0.25) window; one-sided power spectral density.
    Then ``log1p(power / mean)`` over the clip's own segments, flipped so low frequencies are at the
    bottom, resized with cv2's INTER_AREA arithmetic, divided by its maximum.

    Args:
        n_freq, n_time: output image size.
        nperseg, noverlap: STFT window and overlap in samples (25 ms / 15 ms at 16 kHz).
        noise_std: standard deviation of the Gaussian noise added to the [-1, 1] samples in training.
        log: take ``log1p`` of the power over its mean (the method uses the linear power; the log
            makes quiet formant structure visible and is the default here).
        sample_rate: of the waveforms, in Hz.
        spec_augment: SpecAugment's settings (:class:`SpecAugment`), applied in training; None: none.
    """

    def __init__(self, n_freq: int = 128, n_time: int = 128, nperseg: int = 400, noverlap: int = 240,
                 noise_std: float = 0.01, log: bool = True, sample_rate: int = SAMPLE_RATE,
                 spec_augment: dict | None = None):
        super().__init__()
        self.spec_augment = make_spec_augment(spec_augment)
        self.n_freq, self.n_time, self.nperseg, self.noverlap = n_freq, n_time, nperseg, noverlap
        self.noise_std, self.log, self.sample_rate = noise_std, log, sample_rate
        window = torch.from_numpy(signal.get_window(("tukey", 0.25), nperseg))  # scipy's default, exactly
        # density scaling; the one-sided spectrum doubles every bin that has a negative twin
        density = torch.full((nperseg // 2 + 1,), 2.0, dtype=torch.float64) / (sample_rate * window.square().sum())
        density[0] /= 2
        if nperseg % 2 == 0:
            density[-1] /= 2
        # derived from the arguments, so kept out of checkpoints
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("density", density.float(), persistent=False)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor, augment: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``[B, S]`` zero-padded waveforms and ``[B]`` lengths -> ``[B, 1, n_freq, n_time]`` in [0, 1].

        Args:
            waves: samples in [-1, 1]; ``S`` at least ``nperseg``.
            lengths: valid samples per clip, each at least ``nperseg``.
            augment: add fresh noise to the valid samples (training).
            generator: draws that noise, on ``waves``' device; ``None`` uses torch's global one.
        """
        waves, lengths = waves.float(), lengths.to(waves.device)
        if augment and self.noise_std > 0:
            waves = add_noise(waves, lengths, self.noise_std, generator)
        step = self.nperseg - self.noverlap
        segments = waves.unfold(-1, self.nperseg, step)  # [B, T, nperseg]
        segments = segments - segments.mean(-1, keepdim=True)  # detrend="constant"
        spectrum = torch.view_as_real(torch.fft.rfft(segments * self.window))
        power = spectrum.square().sum(-1) * self.density  # [B, T, bins]
        frames = ((lengths - self.noverlap) // step).clamp(min=1)  # scipy's segment count per clip
        valid = torch.arange(power.shape[1], device=power.device) < frames[:, None]
        power = power * valid[..., None]
        if self.log:
            mean = power.sum((1, 2)) / (frames * power.shape[2])
            power = torch.log1p(power / (mean + 1e-12)[:, None, None])
        image = resize_area(power.transpose(1, 2).flip(1), frames, self.n_freq, self.n_time)
        # normalised after the resize, so that every image's maximum is exactly 1
        image = image / (image.amax((1, 2), keepdim=True) + 1e-12)
        if augment and self.spec_augment is not None:
            image = self.spec_augment(image, generator)
        return image[:, None]


class LogMelSpectrogram(torch.nn.Module):
    """Batched log-mel front-end.

    Each clip's own frames (those centred inside it) are scaled to [0, 1] and resized to
    ``n_time`` (so, as with the scipy front-end, the image spans the whole clip), low frequencies
    at the bottom.

    Args:
        n_freq: mel bands, the image height.
        n_time: image width.
        n_fft, win_length, hop_length: STFT settings in samples.
        noise_std: standard deviation of the Gaussian noise added to the samples in training.
        sample_rate: of the waveforms, in Hz.
        top_db: dynamic range kept below each clip's loudest bin.
        spec_augment: SpecAugment's settings (:class:`SpecAugment`), applied in training; None: none.
    """

    def __init__(self, n_freq: int = 128, n_time: int = 128, n_fft: int = 1024, win_length: int = 400,
                 hop_length: int = 160, noise_std: float = 0.01, sample_rate: int = SAMPLE_RATE, top_db: float = 80.0,
                 spec_augment: dict | None = None):
        super().__init__()
        self.spec_augment = make_spec_augment(spec_augment)
        self.n_freq, self.n_time, self.hop_length, self.noise_std, self.top_db = n_freq, n_time, hop_length, noise_std, top_db
        # zeros, not reflections, past the ends: a clip's last frames then see the same samples
        # whether or not the batch pads it
        with torch.device("cpu"):  # its filterbank is computed from numbers (also where a caller builds on meta)
            self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length,
                                                            hop_length=hop_length, n_mels=n_freq, pad_mode="constant")

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor, augment: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``[B, S]`` zero-padded waveforms and ``[B]`` lengths -> ``[B, 1, n_freq, n_time]`` in [0, 1].

        Args:
            waves: samples in [-1, 1].
            lengths: valid samples per clip.
            augment: add fresh noise to the valid samples (training).
            generator: draws that noise, on ``waves``' device; ``None`` uses torch's global one.
        """
        waves, lengths = waves.float(), lengths.to(waves.device)
        if augment and self.noise_std > 0:
            waves = add_noise(waves, lengths, self.noise_std, generator)
        db = 10 * torch.log10(self.mel(waves).clamp(min=1e-10))  # [B, n_mels, T]
        frames = (lengths // self.hop_length + 1).clamp(1, db.shape[-1])
        valid = (torch.arange(db.shape[-1], device=db.device) < frames[:, None])[:, None]
        # range and min-max over the clip's own frames (torchaudio's AmplitudeToDB would take the
        # top over the whole batch)
        top = db.masked_fill(~valid, -torch.inf).amax((1, 2), keepdim=True)
        db = torch.maximum(db, top - self.top_db)
        low = db.masked_fill(~valid, torch.inf).amin((1, 2), keepdim=True)
        db = (db - low) / (top - low + 1e-6)
        image = resize_area(db.flip(1), frames, self.n_freq, self.n_time)
        if augment and self.spec_augment is not None:
            image = self.spec_augment(image, generator)
        return image[:, None]


FRONTENDS = {"scipy": ScipySpectrogram, "logmel": LogMelSpectrogram}


def make_frontend(name: str, **kwargs) -> torch.nn.Module:
    """The audio front-end called ``name`` (``scipy`` or ``logmel``), built with its own settings."""
    if name not in FRONTENDS:
        raise ValueError(f"model.inputs.audio.frontend={name!r}: unknown front-end; use one of {sorted(FRONTENDS)}")
    return FRONTENDS[name](**kwargs)
