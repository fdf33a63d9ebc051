import cv2
import numpy as np
import pytest
import torch

from fer_mm.data.media.audio import load_wav
from fer_mm.models.frontends import (LogMelSpectrogram, ScipySpectrogram, add_noise, make_frontend,
                               resize_area, scipy_spectrogram)
from fer_mm.data.media.faces import track_faces
from fer_mm.data.media.video import sample_frame_indices


SR = 16000


def _tone(seconds=2.0, rate=SR):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)


def _chirp(seconds, rate=SR):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * (100 * t + 1500 * t**2 / seconds))).astype(np.float32)


def _noise(seconds, rate=SR, seed=0):
    n = int(seconds * rate)  # windowed, so loudness varies along the clip as speech does
    return (0.2 * np.random.default_rng(seed).standard_normal(n) * np.hanning(n)).astype(np.float32)


def _batch(clips, size=80000):
    """Zero-padded ``[B, size]`` waveforms and their lengths."""
    waves = torch.zeros(len(clips), size)
    for w, c in zip(waves, clips):
        w[: len(c)] = torch.from_numpy(c)
    return waves, torch.tensor([len(c) for c in clips])


# measured: at most 4e-7 (float32 rounding of the same arithmetic); the tolerance leaves room for
# other BLAS/FFT back-ends
REFERENCE_TOLERANCE = 1e-5


@pytest.mark.parametrize("settings", [{}, dict(n_freq=64, n_time=96, log=False)])
def test_scipy_spectrogram_matches_the_numpy_reference(settings):
    # 0.8 s gives 78 frames, fewer than n_time: cv2's enlarging path; the rest shrink
    seconds = [0.8, 1.3, 2.5, 3.7, 5.0]
    clips = [make(s) for s in seconds for make in (_tone, _chirp, _noise)]
    out = ScipySpectrogram(**settings)(*_batch(clips))
    for image, clip in zip(out.numpy(), clips):
        assert np.abs(image - scipy_spectrogram(clip, **settings)).max() < REFERENCE_TOLERANCE, len(clip)


@pytest.mark.parametrize("width", [60, 127, 128, 200, 498])
def test_resize_area_is_cv2_inter_area(width):
    image = np.random.default_rng(width).random((201, width)).astype(np.float32)
    padded = np.zeros((201, 500), np.float32)
    padded[:, :width] = image
    out = resize_area(torch.from_numpy(padded)[None], torch.tensor([width]), 128, 96)[0].numpy()
    assert np.abs(out - cv2.resize(image, (96, 128), interpolation=cv2.INTER_AREA)).max() < 1e-6


def test_scipy_spectrogram_shape_range_and_orientation():
    out = ScipySpectrogram(n_freq=64, n_time=96)(*_batch([_tone(2.0), _noise(1.3)]))
    assert out.shape == (2, 1, 64, 96) and out.dtype == torch.float32
    assert out.min() >= 0 and out.amax((1, 2, 3)).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    # flipped: the 220 Hz tone's energy sits in the bottom rows (low frequencies at the bottom)
    assert out[0, 0, -8:].mean() > out[0, 0, :8].mean()


@pytest.mark.parametrize("frontend", [ScipySpectrogram, LogMelSpectrogram])
def test_padding_does_not_change_a_clip(frontend):
    fe, clip = frontend(n_freq=64, n_time=96), _chirp(1.3)
    alone = fe(*_batch([clip], size=len(clip)))
    padded = fe(*_batch([clip, _noise(5.0)]))
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


@pytest.mark.parametrize("frontend", [ScipySpectrogram, LogMelSpectrogram])
def test_noise_only_in_training_fresh_seedable_and_masked(frontend):
    fe = frontend(n_freq=64, n_time=96, noise_std=0.02)
    waves, lengths = _batch([_tone(1.3), _chirp(2.5)])
    clean = fe(waves, lengths)
    assert torch.equal(clean, fe(waves, lengths))  # evaluation: no noise, deterministic
    assert not torch.allclose(fe(waves, lengths, augment=True), fe(waves, lengths, augment=True))  # fresh
    noisy = fe(waves, lengths, augment=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, fe(waves, lengths, augment=True, generator=torch.Generator().manual_seed(0)))
    # the same draw, masked to the valid samples by hand: the front-end adds exactly that
    noise = torch.randn(waves.shape, generator=torch.Generator().manual_seed(0)) * 0.02
    by_hand = waves + noise * (torch.arange(waves.shape[1]) < lengths[:, None])
    assert torch.allclose(noisy, fe(by_hand, lengths), atol=1e-6)


def test_add_noise_leaves_the_padding_zero():
    waves, lengths = _batch([_tone(1.0), _tone(2.0)], size=40000)
    noise = add_noise(waves, lengths, 0.05, torch.Generator().manual_seed(0)) - waves
    assert noise[0, 16000:].abs().max() == 0 and noise[1, 32000:].abs().max() == 0
    assert noise[0, :16000].std().item() == pytest.approx(0.05, rel=0.05)


def test_logmel_batched_per_clip_length_and_noise():
    fe = LogMelSpectrogram(n_freq=64, n_time=48, noise_std=0.02)
    waves = torch.zeros(3, 80000)
    lengths = torch.tensor([32000, 80000, 16000])
    for w, n in zip(waves, lengths):
        w[:n] = torch.from_numpy(_tone(n.item() / 16000))
    out = fe(waves, lengths)
    assert out.shape == (3, 1, 64, 48) and 0 <= out.min() and out.max() <= 1
    # each clip spans the whole image: the short clip's image is not mostly padding
    assert out[2, 0, :, -5:].std() > 0.01
    assert torch.equal(out, fe(waves, lengths))
    assert not torch.allclose(out, fe(waves, lengths, augment=True))


def test_frontend_names_the_wrong_key():
    assert isinstance(make_frontend("scipy", n_freq=64), torch.nn.Module)
    with pytest.raises(ValueError, match="model.inputs.audio.frontend"):
        make_frontend("mfcc")


def test_load_wav_resamples_and_downmixes(tmp_path):
    import soundfile as sf
    x = _tone(1.0, 22050)
    sf.write(tmp_path / "a.wav", np.stack([x, x], 1), 22050, subtype="PCM_16")
    loaded = load_wav(str(tmp_path / "a.wav"))
    assert abs(len(loaded.samples) - 16000) <= 1 and loaded.samples.dtype == np.float32
    assert loaded.notes == ["downmixed 2 channels to mono", "resampled 22050 Hz to 16000 Hz"]


def test_frame_sampling_even_and_jittered():
    assert sample_frame_indices(39, 20).tolist() == np.linspace(0, 38, 20).round().astype(int).tolist()
    short = sample_frame_indices(5, 20)  # short clips repeat frames, still in order and covering the clip
    assert short[:5].tolist() == [0, 0, 0, 1, 1] and short[-1] == 4 and (np.diff(short) >= 0).all()
    rng = np.random.default_rng(0)
    edges = np.linspace(0, 100, 21)
    draws = np.stack([sample_frame_indices(100, 20, rng) for _ in range(200)])
    assert (draws >= np.floor(edges[:-1])).all() and (draws < np.ceil(edges[1:])).all()  # inside own segment
    assert (np.diff(draws, axis=1) >= 0).all() and len(np.unique(draws[:, 0])) > 1


class ScriptedDetector:
    """Returns a fixed box on the frames listed, nothing elsewhere."""

    def __init__(self, hits):
        self.hits, self.i = hits, -1

    def __call__(self, gray):
        self.i += 1
        return np.array([[10.0 + self.i, 20, 40, 40]]) if self.i in self.hits else np.zeros((0, 4))


def test_track_faces_reuses_nearest_box_and_counts_misses():
    frames = np.zeros((10, 100, 100), np.uint8)
    boxes, missing = track_faces(frames, ScriptedDetector({2, 7}), smooth_frames=1)
    assert missing == 8
    assert boxes[:5, 0].tolist() == [12] * 5 and boxes[5:, 0].tolist() == [17] * 5
    with pytest.raises(ValueError, match="no face"):
        track_faces(frames, ScriptedDetector(set()))
