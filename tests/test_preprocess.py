import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile as sf

import fer_mm.data.cache as cache_mod
import fer_mm.data.preprocessing as preprocessing_mod
import fer_mm.data.media.faces as face_io
from fer_mm.data.cache import ClipCache, PreprocessError, PreprocessParams
from fer_mm.data.preprocessing import build_cache
from fer_mm.data.twins.actors import Actor
from fer_mm.data.twins.crema_d import write_flv
from fer_mm.data.twins.face import background


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
    versions = report["versions"]  # what shaped the frames besides the parameters
    assert versions["opencv"] == cv2.__version__ and versions["av"] == av.__version__
    assert versions["numpy"] == np.__version__ and versions["soundfile"] == sf.__version__
    assert versions["detector"] == {"name": "haar", "settings": {
        "scale_factor": 1.15, "min_neighbors": 4, "min_size": 36, "downscale": 0.5,
        "cascade": "haarcascade_frontalface_default.xml"}}


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
    write_flv(flv / "1001_IEO_FEA_HI.flv", [background(actor)] * 60, tone)
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


def _crash_after(n: int, calls: list):
    """process_clip that records each clip and crashes the run at the (n+1)-th, as a killed run would."""
    real = preprocessing_mod.process_clip

    def process(args):
        if len(calls) == n:
            raise Crash("simulated crash")
        calls.append(args[0])
        return real(args)

    return process


def test_interrupted_preprocessing_resumes(twin_root, twin_cache, tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "VideoFlash").mkdir(parents=True)
    (root / "AudioWAV").mkdir()
    names = list(twin_cache.clips["name"][:8])
    for name in names:
        _copy_pair(twin_root, root, name)
    real = preprocessing_mod.process_clip
    calls = []
    monkeypatch.setattr(preprocessing_mod, "process_clip", _crash_after(3, calls))
    with pytest.raises(Crash):
        build_cache(root, tmp_path, workers=1, progress=False)
    assert not (cache_mod.cache_path(root, tmp_path, PreprocessParams()) / "clips.csv").exists()
    done = list(calls)

    calls.clear()
    monkeypatch.setattr(preprocessing_mod, "process_clip", lambda args: calls.append(args[0]) or real(args))
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
    from fer_mm.data.media.faces import make_detector
    with pytest.raises(ValueError, match="data.preprocess.detector"):
        make_detector("mtcnn")


def test_preprocess_command_reports_the_cache(twin_root, twin_cache):
    out = subprocess.run([sys.executable, "-m", "fer_mm.preprocess", f"data.root={twin_root}",
                          f"data.cache_dir={twin_cache.path.parent}", "data.progress=false"],
                         capture_output=True, text=True, cwd=twin_root.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"cache: {twin_cache.path}" in out.stdout and "clips cached: 64 from 4 actors, skipped: 0" in out.stdout


def test_synth_command_rejects_bad_sizes(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fer_mm.synth", str(tmp_path), "--actors", "92"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "(--actors) must be in 1..91" in out.stderr


def test_a_root_with_nothing_usable_stops_and_stores_nothing(tmp_path):
    root = tmp_path / "root"
    (root / "VideoFlash").mkdir(parents=True)
    (root / "AudioWAV").mkdir()
    for name in ("1001_DFA_ANG_XX", "1001_DFA_DIS_XX"):
        (root / "VideoFlash" / f"{name}.flv").write_bytes(b"")
    (root / "AudioWAV" / "1001_DFA_ANG_XX.wav").write_bytes(b"")
    (root / "AudioWAV" / "1001_DFA_DIS_XX.wav").write_text("version https://git-lfs.github.com/spec/v1\n")
    with pytest.raises(PreprocessError, match=r"no clip could be cached .*1 x empty file, 1 x git-lfs") as err:
        build_cache(root, tmp_path / "cache", workers=1, progress=False)
    final = cache_mod.cache_path(root, tmp_path / "cache", PreprocessParams())
    assert not final.exists()  # nothing stored as finished: the next run tries again
    report = json.loads((final.with_name(final.name + ".parts") / "preprocess_report.json").read_text())
    assert str(final.name) in str(err.value) and "preprocess_report.json" in str(err.value)
    assert "empty file" in report["skipped"]["1001_DFA_ANG_XX"] and "git lfs" in report["skipped"]["1001_DFA_DIS_XX"]


def test_an_unforeseen_error_in_one_clip_becomes_its_reason(tmp_path):
    from dataclasses import asdict
    result = preprocessing_mod.process_clip(("1001_DFA_ANG_XX", str(tmp_path / "gone.flv"), str(tmp_path / "gone.wav"),
                                     asdict(PreprocessParams())))
    assert result["name"] == "1001_DFA_ANG_XX" and result["skip"].startswith("failed: FileNotFoundError")


def test_reason_kind_drops_what_is_particular_to_a_clip():
    kind = preprocessing_mod.reason_kind
    assert kind("empty file: VideoFlash/1001_DFA_ANG_XX.flv has 0 bytes") == kind("empty file: AudioWAV/x.wav") \
        == "empty file"
    assert kind("too short: 0.40 s of audio (min_seconds=0.8)") == "too short"
    assert kind("no face found in any frame") == "no face found in any frame"
    assert kind("failed: KeyError: 'fps'") == "failed: KeyError" != kind("failed: OSError: [Errno 5] I/O error")
    assert kind("face detector failed: RuntimeError: CUDA out of memory") == "face detector failed: RuntimeError"


class BrokenDetector:  # cannot be built: a missing model file, a missing library
    def __init__(self):
        raise RuntimeError("model weights not found")


class NoFaceDetector:  # runs, but never finds a face
    def __init__(self, calls: str = ""):
        self.calls = calls

    def __call__(self, gray):
        if self.calls:  # one byte per frame, written from whichever process runs it
            with open(self.calls, "ab") as f:
                f.write(b".")
        return np.empty((0, 4))


class FailsOnFacesDetector(NoFaceDetector):  # passes the blank-frame check, raises on every real frame
    def __call__(self, gray):
        super().__call__(gray)
        if gray.any():
            raise RuntimeError("this build has no kernel for uint8 images")
        return np.empty((0, 4))


def _small_root(twin_root, twin_cache, path, n):
    (path / "VideoFlash").mkdir(parents=True)
    (path / "AudioWAV").mkdir()
    for name in twin_cache.clips["name"][:n]:
        _copy_pair(twin_root, path, name)
    return path


@pytest.mark.parametrize("missing", ["CascadeClassifier", "data"])
def test_haar_without_opencv4_stops_before_any_clip(twin_root, tmp_path, monkeypatch, missing):
    monkeypatch.delattr(cv2, missing)  # as on OpenCV 5
    monkeypatch.setattr(preprocessing_mod, "process_clip", lambda args: pytest.fail("a clip was processed"))
    with pytest.raises(PreprocessError, match=r"data.preprocess.detector=haar .*opencv-python-headless<5"):
        build_cache(twin_root, tmp_path, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither a cache nor its parts


def test_preprocess_command_stops_at_once_on_a_broken_detector(twin_root, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "fer_mm.preprocess", f"data.root={twin_root}",
                          f"data.cache_dir={tmp_path}", "data.progress=false",
                          "data.preprocess.detector=test_preprocess:BrokenDetector"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "data.preprocess.detector=test_preprocess:BrokenDetector" in out.stderr
    assert "model weights not found" in out.stderr and "clips cached" not in out.stdout
    assert not any(p.name.startswith(twin_root.name) for p in tmp_path.iterdir())


@pytest.mark.parametrize("detector, words", [
    ("NoFaceDetector", "(no face found in any frame)"),
    ("FailsOnFacesDetector", "(face detector failed: RuntimeError), e.g. 1001_IEO_"),
])
def test_a_detector_failing_on_every_clip_stops_after_the_first_clips(twin_root, twin_cache, tmp_path, detector, words):
    calls = tmp_path / "calls"
    params = PreprocessParams(detector=f"{__name__}:{detector}", detector_kwargs={"calls": str(calls)})
    with pytest.raises(PreprocessError, match="the first 5 clips failed the same way") as err:
        build_cache(twin_root, tmp_path, params, workers=2, progress=False, first_clips=5)
    assert words in str(err.value) and f"data.preprocess.detector={__name__}:{detector}" in str(err.value)
    final = cache_mod.cache_path(twin_root, tmp_path, params)
    report = json.loads((final.with_name(final.name + ".parts") / "preprocess_report.json").read_text())
    assert not final.exists() and report["processed_this_run"] == 5 and len(report["skipped"]) == 5
    # the pool was stopped, not drained: far fewer frames reached the detector than the clips hold
    assert calls.stat().st_size < twin_cache.report["frames"] / 2


def test_a_fixed_detector_reprocesses_every_clip(twin_root, twin_cache, tmp_path, monkeypatch):
    root = _small_root(twin_root, twin_cache, tmp_path / "root", 4)
    monkeypatch.setitem(face_io.DETECTORS, "haar", NoFaceDetector)  # a detector broken in this environment
    calls = []
    real = preprocessing_mod.process_clip
    monkeypatch.setattr(preprocessing_mod, "process_clip", lambda args: calls.append(args[0]) or real(args))
    with pytest.raises(PreprocessError, match="all 4 clips failed the same way"):
        build_cache(root, tmp_path, workers=1, progress=False)
    final = cache_mod.cache_path(root, tmp_path, PreprocessParams())
    assert not final.exists() and len(calls) == 4
    # an empty cache stored as finished by an older version is not trusted either
    final.mkdir()
    (final / "clips.csv").write_text(",".join(twin_cache.clips.columns) + "\n")
    shutil.copy(twin_cache.path / "params.json", final / "params.json")

    monkeypatch.setitem(face_io.DETECTORS, "haar", face_io.HaarFaceDetector)  # the user fixed the setup
    calls.clear()
    cache = build_cache(root, tmp_path, workers=1, progress=False)
    assert sorted(calls) == sorted(twin_cache.clips["name"][:4])  # no skip record was reused
    assert len(cache) == 4 and cache.report["skipped_count"] == 0
    assert not final.with_name(final.name + ".parts").exists()


def test_a_resumed_run_whose_remaining_clips_fail_alike_still_finishes(twin_root, twin_cache, tmp_path, monkeypatch):
    # the first run caches 3 clips and is interrupted; the 5 left all lack a face: their own defect, not
    # a broken setup, since clips were cached before. The resumed run skips them and finishes.
    root = _small_root(twin_root, twin_cache, tmp_path / "root", 8)
    real, calls = preprocessing_mod.process_clip, []
    monkeypatch.setattr(preprocessing_mod, "process_clip", _crash_after(3, calls))
    with pytest.raises(Crash):
        build_cache(root, tmp_path, workers=1, progress=False)
    monkeypatch.setattr(preprocessing_mod, "process_clip", real)
    monkeypatch.setitem(face_io.DETECTORS, "haar", NoFaceDetector)
    cache = build_cache(root, tmp_path, workers=1, progress=False, first_clips=4)
    assert list(cache.clips["name"]) == calls and len(cache.report["skipped"]) == 5


def test_a_cache_made_under_other_decoders_is_rebuilt_and_the_old_one_named(twin_root, twin_cache, tmp_path,
                                                                             monkeypatch, caplog):
    root = _small_root(twin_root, twin_cache, tmp_path / "root", 2)
    first = build_cache(root, tmp_path / "caches", workers=1, progress=False)
    assert json.loads((first.path / "params.json").read_text())["decoders"] == cache_mod.decoder_versions()
    real = cache_mod.decoder_versions
    monkeypatch.setattr(cache_mod, "decoder_versions", lambda names: dict(opencv="4.99.0", av="99.0.0"))  # a new lock
    with caplog.at_level("WARNING", logger=cache_mod.__name__):
        second = build_cache(root, tmp_path / "caches", workers=1, progress=False)
    assert second.path != first.path and first.path.is_dir() and len(second) == 2
    assert json.loads((second.path / "params.json").read_text())["decoders"] == dict(opencv="4.99.0", av="99.0.0")
    [warning] = [r.getMessage() for r in caplog.records if "made under OpenCV" in r.getMessage()]
    assert str(first.path) in warning and f"OpenCV {cv2.__version__} and PyAV {av.__version__} is at" in warning
    assert "under OpenCV 4.99.0 and PyAV 99.0.0" in warning
    monkeypatch.setattr(cache_mod, "decoder_versions", real)  # back under the first versions: found, not rebuilt
    monkeypatch.setattr(preprocessing_mod, "process_clip", lambda args: pytest.fail("a clip was processed"))
    assert build_cache(root, tmp_path / "caches", workers=1, progress=False).path == first.path
    # a cache of an older fer-mm (a key without the decoders) made under these very versions is moved into place
    params = json.loads((first.path / "params.json").read_text())
    del params["decoders"]
    (first.path / "params.json").write_text(json.dumps(params))
    older = first.path.rename(first.path.with_name(first.path.name.rsplit("-", 1)[0] + "-0123456789"))
    adopted = build_cache(root, tmp_path / "caches", workers=1, progress=False)
    assert adopted.path == first.path and not older.exists() and len(adopted) == 2
    assert json.loads((first.path / "params.json").read_text())["decoders"] == cache_mod.decoder_versions()
