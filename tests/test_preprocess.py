import json
import shutil

import numpy as np
import pytest
import soundfile as sf

import fer_mm.data.cache as cache_mod
from fer_mm.data.cache import ClipCache, PreprocessParams, build_cache
from fer_mm.data.synthetic import Actor, _background, write_flv


def test_cache_shapes_counts_and_report(twin_cache, twin_root):
    clips = twin_cache.clips
    assert len(twin_cache) == 64 and clips["actor"].nunique() == 4
    assert clips["emotion"].value_counts().to_dict() == {"ANG": 12, "DIS": 12, "FEA": 12, "HAP": 12, "SAD": 12, "NEU": 4}
    for i in (0, 17, 63):
        faces, pcm = twin_cache.video(i), twin_cache.audio(i)
        assert faces.dtype == np.uint8 and faces.shape[1:] == (98, 80)
        assert faces.shape[0] == clips["n_frames"][i] and faces.std() > 5  # an image, not a blank
        assert pcm.dtype == np.int16 and len(pcm) == clips["n_samples"][i]
        wav, rate = sf.read(twin_root / "AudioWAV" / f"{clips['name'][i]}.wav", dtype="int16")
        assert rate == 16000 and np.array_equal(wav, pcm)  # the waveform is cached losslessly
        assert abs(len(faces) / 30 - len(pcm) / 16000) < 0.1
    report = twin_cache.report
    assert report["cached_clips"] == 64 and report["skipped_count"] == 0 and report["frames"] == clips["n_frames"].sum()
    assert report["frames_without_face"] < 0.05 * report["frames"]


def _copy_pair(src_root, dst_root, src, dst=None):
    dst = dst or src
    shutil.copy(src_root / "VideoFlash" / f"{src}.flv", dst_root / "VideoFlash" / f"{dst}.flv")
    shutil.copy(src_root / "AudioWAV" / f"{src}.wav", dst_root / "AudioWAV" / f"{dst}.wav")


@pytest.fixture(scope="module")
def broken_root(twin_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    (root / "VideoFlash").mkdir()
    (root / "AudioWAV").mkdir()
    good = "1001_IEO_SAD_HI"
    for name in ("1001_IEO_SAD_LO", "1001_IEO_SAD_MD", "1001_IEO_SAD_HI"):
        _copy_pair(twin_root, root, name)
    flv, wav = root / "VideoFlash", root / "AudioWAV"
    _copy_pair(twin_root, root, good, "1001_IEO_ANG_LO")
    (flv / "1001_IEO_ANG_LO.flv").write_bytes(b"")
    _copy_pair(twin_root, root, good, "1001_IEO_ANG_MD")
    (wav / "1001_IEO_ANG_MD.wav").write_text("version https://git-lfs.github.com/spec/v1\n"
                                             "oid sha256:4d7a2146\nsize 143444\n")
    _copy_pair(twin_root, root, good, "1001_IEO_ANG_HI")
    data = (flv / "1001_IEO_ANG_HI.flv").read_bytes()
    (flv / "1001_IEO_ANG_HI.flv").write_bytes(data[: len(data) // 3])
    _copy_pair(twin_root, root, good, "1001_IEO_DIS_LO")
    (flv / "1001_IEO_DIS_LO.flv").write_bytes(np.random.default_rng(0).bytes(50_000))
    _copy_pair(twin_root, root, good, "1001_IEO_DIS_MD")
    sf.write(wav / "1001_IEO_DIS_MD.wav", np.zeros(32000), 16000, subtype="PCM_16")
    _copy_pair(twin_root, root, good, "1001_IEO_DIS_HI")
    sf.write(wav / "1001_IEO_DIS_HI.wav", np.zeros(0), 16000, subtype="PCM_16")
    _copy_pair(twin_root, root, good, "1001_IEO_FEA_LO")
    sf.write(wav / "1001_IEO_FEA_LO.wav", np.full(6000, 0.1), 16000, subtype="PCM_16")
    _copy_pair(twin_root, root, good, "1001_IEO_FEA_MD")
    sf.write(wav / "1001_IEO_FEA_MD.wav", np.full(16000 * 12, 0.1), 16000, subtype="PCM_16")
    # a video with no face in it, with a matching 2 s track
    actor = Actor.make(1001, 0)
    tone = (0.3 * np.sin(np.arange(32000) * 0.05)).astype(np.float32)
    write_flv(flv / "1001_IEO_FEA_HI.flv", [_background(actor)] * 60, tone)
    sf.write(wav / "1001_IEO_FEA_HI.wav", tone, 16000, subtype="PCM_16")
    shutil.copy(twin_root / "VideoFlash" / f"{good}.flv", flv / "1001_IEO_HAP_LO.flv")  # no WAV
    shutil.copy(twin_root / "AudioWAV" / f"{good}.wav", wav / "1001_IEO_HAP_MD.wav")  # no FLV
    (flv / "notes.txt").write_text("stray")
    (wav / "readme.wav").write_bytes(b"RIFF")
    shutil.copy(twin_root / "AudioWAV" / f"{good}.wav", wav / "1001_IEO_HAP_HI.mp3")
    # a good clip stored as 44.1 kHz stereo: resampled, downmixed and noted
    _copy_pair(twin_root, root, "1001_IEO_NEU_XX")
    x, _ = sf.read(twin_root / "AudioWAV" / "1001_IEO_NEU_XX.wav")
    from scipy.signal import resample_poly
    y = resample_poly(x, 441, 160)
    sf.write(wav / "1001_IEO_NEU_XX.wav", np.stack([y, y], 1), 44100, subtype="PCM_16")
    _copy_pair(twin_root, root, good, "1064_IEO_DIS_MD")  # a known defect of the release
    return root


def test_broken_inputs_are_reported_and_skipped(broken_root, tmp_path, caplog):
    cache = build_cache(broken_root, tmp_path, workers=2, progress=False)
    assert sorted(cache.clips["name"]) == ["1001_IEO_NEU_XX", "1001_IEO_SAD_HI", "1001_IEO_SAD_LO", "1001_IEO_SAD_MD"]
    skipped = cache.report["skipped"]
    expected = {
        "1001_IEO_ANG_LO": "empty file",
        "1001_IEO_ANG_MD": "git lfs pull",
        "1001_IEO_ANG_HI": "truncated",
        "1001_IEO_DIS_LO": "unreadable video",
        "1001_IEO_DIS_MD": "silent audio",
        "1001_IEO_DIS_HI": "no audio",
        "1001_IEO_FEA_LO": "too short",
        "1001_IEO_FEA_MD": "too long",
        "1001_IEO_FEA_HI": "no face",
        "1001_IEO_HAP_LO": "unpaired: AudioWAV/1001_IEO_HAP_LO.wav is missing",
        "1001_IEO_HAP_MD": "unpaired: VideoFlash/1001_IEO_HAP_MD.flv is missing",
        "VideoFlash/notes.txt": "stray file",
        "AudioWAV/readme.wav": "stray file",
        "AudioWAV/1001_IEO_HAP_HI.mp3": "stray file",
        "1064_IEO_DIS_MD": "known defect",
    }
    assert set(skipped) == set(expected)
    for key, words in expected.items():
        assert words in skipped[key], (key, skipped[key])
    assert cache.report["skipped_count"] == len(expected)
    notes = cache.report["notes"]["1001_IEO_NEU_XX"]["audio"]
    assert "downmixed 2 channels" in notes and "resampled 44100 Hz to 16000 Hz" in notes
    row = cache.clips.index[cache.clips["name"] == "1001_IEO_NEU_XX"][0]
    assert abs(cache.clips["n_samples"][row] / 16000 - cache.clips["n_frames"][row] / 30) < 0.1
    # one readable warning line per problem
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum(m.startswith("skipped ") for m in warned) == len(expected)


class Crash(RuntimeError):
    pass


def test_interrupted_preprocessing_resumes(twin_root, twin_cache, tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "VideoFlash").mkdir(parents=True)
    (root / "AudioWAV").mkdir()
    names = list(twin_cache.clips["name"][:8])
    for name in names:
        _copy_pair(twin_root, root, name)
    real = cache_mod.process_clip
    calls = []

    def crash_after_three(args):
        if len(calls) == 3:
            raise Crash("simulated crash")
        calls.append(args[0])
        return real(args)

    monkeypatch.setattr(cache_mod, "process_clip", crash_after_three)
    with pytest.raises(Crash):
        build_cache(root, tmp_path, workers=1, progress=False)
    assert not (cache_mod.cache_path(root, tmp_path, PreprocessParams()) / "clips.csv").exists()
    done = list(calls)

    calls.clear()
    monkeypatch.setattr(cache_mod, "process_clip", lambda args: calls.append(args[0]) or real(args))
    cache = build_cache(root, tmp_path, workers=1, progress=False)
    assert len(calls) == 8 - 3 and not set(calls) & set(done)  # finished clips are not redone
    assert list(cache.clips["name"]) == names
    for i in range(8):  # the same frames as a cache built in one go
        assert np.array_equal(cache.video(i), twin_cache.video(i)) and np.array_equal(cache.audio(i), twin_cache.audio(i))
    calls.clear()
    build_cache(root, tmp_path, workers=1, progress=False)
    assert calls == []  # a finished cache is opened, not rebuilt


def test_cache_key_follows_the_parameters(twin_root, tmp_path):
    a = cache_mod.cache_path(twin_root, tmp_path, PreprocessParams())
    b = cache_mod.cache_path(twin_root, tmp_path, PreprocessParams(smooth_frames=3))
    assert a != b and a.parent == b.parent


def test_opening_a_missing_cache_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="fer_mm.preprocess"):
        ClipCache(tmp_path)


def test_unknown_detector_names_the_key():
    from fer_mm.data.video import make_detector
    with pytest.raises(ValueError, match="data.preprocess.detector"):
        make_detector("mtcnn")


def test_preprocess_command_reports_the_cache(twin_root, twin_cache):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "fer_mm.preprocess", f"data.root={twin_root}",
                          f"data.cache_dir={twin_cache.path.parent}", "data.progress=false"],
                         capture_output=True, text=True, cwd=twin_root.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"cache: {twin_cache.path}" in out.stdout and "clips cached: 64 from 4 actors, skipped: 0" in out.stdout


def test_synth_command_rejects_bad_sizes(tmp_path):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "fer_mm.synth", str(tmp_path), "--actors", "92"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--actors must be in 1..91" in out.stderr


def test_a_root_with_nothing_usable_gives_an_empty_cache_with_reasons(tmp_path):
    (tmp_path / "root" / "VideoFlash").mkdir(parents=True)
    (tmp_path / "root" / "AudioWAV").mkdir()
    (tmp_path / "root" / "VideoFlash" / "1001_DFA_ANG_XX.flv").write_bytes(b"")
    (tmp_path / "root" / "AudioWAV" / "1001_DFA_ANG_XX.wav").write_bytes(b"")
    cache = build_cache(tmp_path / "root", tmp_path / "cache", workers=1, progress=False)
    assert len(cache) == 0 and "empty file" in cache.report["skipped"]["1001_DFA_ANG_XX"]


def test_an_unforeseen_error_in_one_clip_becomes_its_reason(tmp_path):
    from dataclasses import asdict
    result = cache_mod.process_clip(("1001_DFA_ANG_XX", str(tmp_path / "gone.flv"), str(tmp_path / "gone.wav"),
                                     asdict(PreprocessParams())))
    assert result["name"] == "1001_DFA_ANG_XX" and result["skip"].startswith("failed: FileNotFoundError")
