import numpy as np
import pytest
import torch

from fer_mm.data.audio import LogMelSpectrogram, ScipySpectrogram, load_wav, make_frontend
from fer_mm.data.video import sample_frame_indices, track_faces


def _tone(seconds=2.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32)


def test_scipy_spectrogram_shape_normalisation_and_noise():
    fe = ScipySpectrogram(n_freq=64, n_time=96, noise_std=0.02)
    x = _tone()
    clean = fe(x)
    assert clean.shape == (1, 64, 96) and clean.dtype == np.float32
    assert clean.max() == pytest.approx(1.0, abs=0.05) and clean.min() >= 0
    assert np.array_equal(clean, fe(x))  # evaluation: no noise, deterministic
    a, b = fe(x, np.random.default_rng(1)), fe(x, np.random.default_rng(2))
    assert not np.allclose(a, b)  # fresh noise each time in training
    # flipped: the 220 Hz tone's energy sits in the bottom rows (low frequencies at the bottom)
    assert clean[0, -8:].mean() > clean[0, :8].mean()


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
    with pytest.raises(ValueError, match="data.audio.frontend"):
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
