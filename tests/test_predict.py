"""The predict command: new files through the training path, timelines, live sources, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from fer_mm.inference.model import resolve_checkpoint
from fer_mm.inference.predict import predict_files
from fer_mm.inference.recognizer import Recognizer, predict_source
from fer_mm.inference.sources import Source, find_inputs
from fer_mm.inference.stream import AVSource, open_source, run_stream
from fer_mm.train import train
from videos import independent_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, data_overrides):
    """A short real AR5 fold (audio + video) and a video-only one, as training leaves them."""
    from conftest import compose_run_config

    runs = {}
    for experiment in ("ar5_fusion", "ar5_video_only"):
        out = tmp_path_factory.mktemp(experiment)
        cfg = compose_run_config(out, [f"experiment={experiment}", "debug=limit", "logger=none", *data_overrides])
        runs[experiment] = (out, train(cfg))
    return runs


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    return independent_folder(tmp_path_factory.mktemp("videos"))


def crema_layout(folder: Path, twin_root: Path, names: list[str]) -> Path:
    """A CREMA-D root holding some of the twin's clips."""
    for sub, ext in (("VideoFlash", ".flv"), ("AudioWAV", ".wav")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / sub / f"{name}{ext}").symlink_to(twin_root / sub / f"{name}{ext}")
    return folder


def probabilities(table: pd.DataFrame) -> np.ndarray:
    return table.filter(regex="^p_").to_numpy(dtype=float)


def test_predicting_the_raw_test_clips_gives_the_folds_predictions(trained, twin_root, tmp_path):
    run_dir, record = trained["ar5_fusion"]
    expected = pd.read_csv(run_dir / "predictions.csv")
    assert len(expected) == 16  # the test actor's clips
    root = crema_layout(tmp_path / "raw", twin_root, list(expected["name"]))
    rec = Recognizer(run_dir)  # the run folder: its checkpoint selected on validation actors
    assert rec.checkpoint == Path(record["best_checkpoint"])
    table = predict_files(rec, find_inputs(root), tmp_path / "out", progress=False)
    table["name"] = table["file"].map(lambda f: Path(f).stem)
    got = table.set_index("name").loc[expected["name"]]
    assert (got["status"] == "ok").all() and (got["basis"] == "whole clip").all()
    assert np.abs(probabilities(got.reset_index()) - probabilities(expected)).max() <= 1e-4
    assert (got["label_name"].to_numpy() == expected["label_name"].to_numpy()).all()
    # the checkpoint carries how its faces were made
    saved = torch.load(record["best_checkpoint"], map_location="cpu", weights_only=True)
    assert saved["CremaDDataModule"]["preprocess"]["detector"] == "haar"


def test_the_exported_model_predicts_what_the_checkpoint_predicts(trained, twin_root, tmp_path):
    pytest.importorskip("onnxruntime")
    from fer_mm.inference.export import export_onnx

    run_dir, _ = trained["ar5_fusion"]
    names = list(pd.read_csv(run_dir / "predictions.csv")["name"][:4])
    sources = find_inputs(crema_layout(tmp_path / "raw", twin_root, names))
    onnx_path = export_onnx(run_dir, tmp_path / "m.onnx")
    a = predict_files(Recognizer(run_dir), sources, tmp_path / "torch", progress=False)
    b = predict_files(Recognizer(onnx_path, runtime="onnx"), sources, tmp_path / "onnx", progress=False)
    assert np.abs(probabilities(a) - probabilities(b)).max() <= 1e-4


def test_a_folder_of_other_videos(trained, videos, tmp_path):
    run_dir, _ = trained["ar5_fusion"]
    table = predict_files(Recognizer(run_dir), find_inputs(videos["no_face"].parent), tmp_path, progress=False)
    rows = table.set_index(table["file"].map(lambda f: Path(f).name))
    assert len(rows) == len(videos)
    good = rows[rows["status"] == "ok"]
    assert set(good.index) == {"happy_aac_stereo.mp4", "angry_opus.mkv", "long_12s.mp4"}
    assert np.allclose(probabilities(good).sum(1), 1, atol=1e-4)
    assert (good["modalities"] == "video+audio").all()
    assert good.loc["happy_aac_stereo.mp4", "notes"] == "downmixed 2 channels to mono; resampled 44100 Hz to 16000 Hz"
    assert good.loc["angry_opus.mkv", "notes"] == "resampled 48000 Hz to 16000 Hz"
    assert good.loc["happy_aac_stereo.mp4", "frames_with_face"] > 0.9 * good.loc["happy_aac_stereo.mp4", "frames"]
    reasons = rows["reason"]
    assert reasons["sad_silent.avi"].startswith("no audio track") and "video-only" in reasons["sad_silent.avi"]
    assert reasons["empty_room.mp4"] == "no face found in any frame"
    assert reasons["truncated.mp4"].startswith("unreadable video")
    assert reasons["truncated.mkv"].startswith("truncated:")
    # the long clip: read in windows, its row their mean, a timeline image
    long = rows.loc["long_12s.mp4"]
    assert long["basis"] == "mean of 20 windows of 2.5 s" and long["duration_s"] == pytest.approx(12, abs=0.05)
    windows = pd.read_csv(tmp_path / "windows.csv")
    assert len(windows) == 20 and windows["start"].tolist() == [0.5 * k for k in range(20)]
    assert np.allclose(probabilities(windows).mean(0), probabilities(rows.loc[["long_12s.mp4"]])[0], atol=1e-5)
    assert (tmp_path / "long_12s_timeline.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "predictions.json").read_text())
    assert summary["succeeded"] == 3 and summary["model"]["modalities"] == ["video", "audio"]


def test_a_video_only_model_reads_silent_video(trained, videos, tmp_path):
    run_dir, _ = trained["ar5_video_only"]
    row, _, _ = predict_source(Recognizer(run_dir), Source(str(videos["avi_mjpeg_silent"])))
    assert row["status"] == "ok" and row["modalities"] == "video" and row["frames"] == 37


def test_missing_audio_silence_is_a_documented_choice(trained, videos):
    run_dir, _ = trained["ar5_fusion"]
    row, _, _ = predict_source(Recognizer(run_dir), Source(str(videos["avi_mjpeg_silent"])), missing_audio="silence")
    assert row["status"] == "ok" and "silence given to the audio branch" in row["notes"]
    assert row["modalities"] == "video+audio(silence)"


def test_a_stream_played_at_its_own_rate_gives_the_files_timeline(trained, videos, tmp_path):
    """The live path (a file paced at its frame rate, as a camera delivers frames) and a file's
    timeline give the same windows."""
    run_dir, _ = trained["ar5_fusion"]
    rec = Recognizer(run_dir)
    path = str(videos["mp4_aac_44k_stereo"])
    _, expected, _ = predict_source(rec, Source(path), window=1.0, hop=0.5)
    source = open_source(path, realtime=True)
    t0 = time.perf_counter()
    rows = run_stream(rec, source, 1.0, 0.5, tmp_path, quiet=True)
    elapsed = time.perf_counter() - t0
    assert elapsed >= 0.9 * 3.0  # paced: the 3 s clip took about 3 s
    assert [(r["start"], r["end"]) for r in rows] == [(w["start"], w["end"]) for w in expected]
    assert np.abs(probabilities(pd.DataFrame(rows)) - probabilities(pd.DataFrame(expected))).max() <= 1e-5
    assert all(r["latency_ms"] > 0 for r in rows)
    assert len(pd.read_csv(tmp_path / "windows.csv")) == len(rows)


def test_a_live_source_without_audio_for_an_audio_model_is_named(trained, videos):
    run_dir, _ = trained["ar5_fusion"]
    with pytest.raises(RuntimeError, match="gives no audio.*missing_audio=silence"):
        open_source(str(videos["avi_mjpeg_silent"]), realtime=True, need_audio=True)
    assert isinstance(open_source(str(videos["avi_mjpeg_silent"]), realtime=True, missing_audio="silence"), AVSource)
    with pytest.raises(ValueError, match="webcam:N"):
        open_source("webcam:front")
    with pytest.raises(RuntimeError, match="no camera opens at index 7"):
        open_source("webcam:7", need_audio=False)


def test_checkpoint_argument_errors(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint=.*no such file"):
        resolve_checkpoint(tmp_path / "nothing.ckpt")
    with pytest.raises(FileNotFoundError, match="not a finished fold's run folder"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="runtime='tensorrt'"):
        Recognizer(trained["ar5_fusion"][0], runtime="tensorrt")
    (tmp_path / "noise.ckpt").write_bytes(bytes(range(256)) * 20)
    with pytest.raises(ValueError, match="noise.ckpt: not a readable fer-mm checkpoint"):
        Recognizer(tmp_path / "noise.ckpt")
    with pytest.raises(ValueError, match="detector=nosuch: .*unknown detector"):
        Recognizer(trained["ar5_fusion"][0], detector="nosuch")


def test_an_older_checkpoint_takes_its_preprocessing_from_its_run_folder(trained, tmp_path):
    """Checkpoints written before they carried the preprocessing: the run's config.yaml says it."""
    run_dir, record = trained["ar5_fusion"]
    saved = torch.load(record["best_checkpoint"], map_location="cpu", weights_only=True)
    del saved["CremaDDataModule"]
    old_run = tmp_path / "fold_0"
    (old_run / "checkpoints").mkdir(parents=True)
    torch.save(saved, old_run / "checkpoints" / "best.ckpt")
    config = OmegaConf.load(run_dir / "config.yaml")
    config.data.preprocess.smooth_frames = 3
    OmegaConf.save(config, old_run / "config.yaml")
    assert Recognizer(old_run / "checkpoints" / "best.ckpt").params.smooth_frames == 3


@pytest.mark.slow  # in the slow job: the default suite stays under 10 minutes on 2 cores
def test_the_command_exits_nonzero_only_when_no_file_succeeded(trained, videos, tmp_path):
    run_dir, _ = trained["ar5_fusion"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def predict(input_: Path, out: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fer_mm.predict", f"checkpoint={run_dir}", f"input={input_}",
                               f"output={out}", "progress=false"], capture_output=True, text=True, env=env, cwd=ROOT)

    ok = predict(videos["mp4_aac_44k_stereo"], tmp_path / "ok")
    assert ok.returncode == 0, ok.stderr
    assert "1 of 1 files predicted" in ok.stdout and "happy_aac_stereo.mp4:" in ok.stdout
    bad = predict(videos["truncated"], tmp_path / "bad")
    assert bad.returncode == 1 and "FAILED: unreadable video" in bad.stdout
    assert pd.read_csv(tmp_path / "bad" / "predictions.csv")["status"].tolist() == ["failed"]


def test_a_stream_url_is_read_as_a_live_source(trained, videos, tmp_path):
    """A stream address goes through PyAV as a file does: here a local HTTP server (serving a
    Matroska file, which, unlike an mp4 with its index at the end, plays without seeking)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(videos["mkv_opus_48k"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{videos['mkv_opus_48k'].name}"
        rec = Recognizer(trained["ar5_fusion"][0])
        rows = run_stream(rec, open_source(url), 1.0, 0.5, tmp_path, max_windows=3, quiet=True)
    finally:
        server.shutdown()
    assert [r["start"] for r in rows] == [0.0, 0.5, 1.0] and all("top" in r for r in rows)


def test_microphone_choice():
    from fer_mm.inference.stream import open_microphone

    assert open_microphone("none") is None
    with pytest.raises(RuntimeError, match="mic=alsa:no-such-card: no audio input opens there"):
        open_microphone("alsa:no-such-card")
    with pytest.raises(ValueError, match="mic=pulse: write auto, none, or FORMAT:DEVICE"):
        open_microphone("pulse")


def test_annotated_copy_has_every_frame(trained, videos, tmp_path):
    import av

    run_dir, _ = trained["ar5_fusion"]
    source = videos["mp4_aac_44k_stereo"]
    predict_files(Recognizer(run_dir), [Source(str(source))], tmp_path, window=1.0, annotate=True, progress=False)
    with av.open(str(tmp_path / f"{source.stem}_annotated.mp4")) as out, av.open(str(source)) as src:
        assert out.streams.video[0].frames == src.streams.video[0].frames == 76
        assert (out.streams.video[0].width, out.streams.video[0].height) == (640, 480)


# ---------------------------------------------------------------------------- edge cases of files


@pytest.fixture(scope="module")
def edge_videos(tmp_path_factory) -> dict[str, Path]:
    from videos import face_clip, retime, write_video

    out = tmp_path_factory.mktemp("edge")
    frames, wave = face_clip(1021, "HAP")
    f30 = retime(frames, 30, (320, 240))
    files = {}
    # a variable frame rate: 45 frames at 30 fps, then 15 at 10 fps (3 s in all)
    times = [i / 30 for i in range(45)] + [1.5 + k / 10 for k in range(1, 16)]
    files["vfr"] = write_video(out / "vfr.mkv", [f30[min(i, len(f30) - 1)] for i in range(45)] +
                               [f30[min(45 + 3 * k, len(f30) - 1)] for k in range(15)], 30, "libvpx-vp9",
                               np.tile(wave, 2)[: 3 * 16000], 48_000, "libopus", frame_times=times)
    # the audio starts 1 s after the video and ends with it
    files["offset"] = write_video(out / "offset.mkv", f30, 30, "libvpx-vp9", wave[: int((len(f30) / 30 - 1) * 16000)],
                                  48_000, "libopus", audio_start=1.0)
    files["plain"] = write_video(out / "plain.mkv", f30, 30, "libvpx-vp9", wave, 44_100, "aac")
    files["long_audio"] = write_video(out / "long_audio.mkv", f30[:60], 30, "libvpx-vp9",
                                      np.tile(wave, 3)[: 5 * 16000], 48_000, "libopus")
    parts = [face_clip(1022, e, sentence="ITS") for e in ("ANG", "HAP", "SAD")]
    files["seven_s"] = write_video(out / "seven_s.mp4", retime([f for p in parts for f in p[0]], 30, (320, 240))[:210],
                                   30, "libx264", np.concatenate([p[1] for p in parts])[: 7 * 16000], 44_100, "aac")
    # one damaged audio packet in an otherwise good file
    rng = np.random.default_rng(0)
    import av

    with av.open(str(files["plain"])) as src, av.open(str(out / "bad_packet.mkv"), "w") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in (src.streams.video[0], src.streams.audio[0])}
        damaged = 0
        for packet in src.demux():
            if packet.dts is None:
                continue
            if packet.stream.type == "audio" and damaged == 0 and packet.pts * packet.time_base > 1.5:
                packet = _damaged(packet, rng)
                damaged = 1
            packet.stream = streams[packet.stream_index if packet.stream is None else packet.stream.index]
            dst.mux(packet)
    files["bad_packet"] = out / "bad_packet.mkv"
    return files


def _damaged(packet, rng):
    import av

    bad = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
    bad.pts, bad.dts, bad.time_base, bad.stream = packet.pts, packet.dts, packet.time_base, packet.stream
    return bad


def test_frames_keep_their_times_at_a_variable_frame_rate(trained, edge_videos):
    rec = Recognizer(trained["ar5_fusion"][0])
    row, windows, _ = predict_source(rec, Source(str(edge_videos["vfr"])), window=1.0, hop=0.5)
    assert row["status"] == "ok" and row["duration_s"] == pytest.approx(3.03, abs=0.01)
    # 30 frames in the first second, 10 in a second at 10 fps
    counts = {(w["start"], w["end"]): w["frames"] for w in windows}
    assert counts[(0.0, 1.0)] == 30 and counts[(2.0, 3.0)] == 10


def test_audio_that_starts_later_is_put_in_step_with_the_video(trained, edge_videos):
    from fer_mm.inference.media import read_media

    media = read_media(str(edge_videos["offset"]), None, Recognizer(trained["ar5_fusion"][0]))
    first_sound = np.flatnonzero(np.abs(media.audio[:, 0]) > 1e-3)[0] / media.audio_rate
    assert 1.0 <= first_sound < 1.1  # silence in front, not the speech pulled to the start


def test_audio_much_longer_than_the_video_is_called_mismatched(trained, edge_videos):
    with pytest.raises(Exception, match=r"truncated or mismatched: video 2.00 s vs audio 5.0\d s"):
        Recognizer(trained["ar5_fusion"][0]).predict(edge_videos["long_audio"])
    # a video-only model reads the video alone, which is whole
    assert Recognizer(trained["ar5_video_only"][0]).predict(edge_videos["long_audio"])["status"] == "ok"


def test_a_clip_under_ten_seconds_is_read_whole_as_training_reads_it(trained, edge_videos):
    row = Recognizer(trained["ar5_fusion"][0]).predict(edge_videos["seven_s"])
    assert row["basis"] == "whole clip" and row["duration_s"] == pytest.approx(7.0, abs=0.01)


def test_one_damaged_audio_packet_is_left_out_and_noted(trained, edge_videos):
    row = Recognizer(trained["ar5_fusion"][0]).predict(edge_videos["bad_packet"])
    assert row["status"] == "ok" and "1 undecodable audio packets left out" in row["notes"]


def test_files_of_one_name_in_two_folders_keep_their_own_timelines(trained, videos, tmp_path):
    import shutil

    (tmp_path / "in" / "b").mkdir(parents=True)
    shutil.copy(videos["mkv_opus_48k"], tmp_path / "in" / "clip.mkv")
    shutil.copy(videos["mkv_opus_48k"], tmp_path / "in" / "b" / "clip.mkv")
    predict_files(Recognizer(trained["ar5_fusion"][0]), find_inputs(tmp_path / "in"), tmp_path / "out", window=1.0,
                  progress=False)
    assert (tmp_path / "out" / "clip_timeline.png").is_file() and (tmp_path / "out" / "clip_2_timeline.png").is_file()


@pytest.mark.parametrize("window, hop, match", [(0, 0.5, "window=0"), (8.0, 0.5, "window=8.0"), (2.5, 0, "hop=0"),
                                                ("abc", 0.5, "window='abc': a number of seconds or null")])
def test_wrong_window_settings_are_named_before_any_file(trained, videos, tmp_path, window, hop, match):
    with pytest.raises(ValueError, match=match):
        predict_files(Recognizer(trained["ar5_fusion"][0]), [Source(str(videos["truncated"]))], tmp_path,
                      window=window, hop=hop, progress=False)
    assert not (tmp_path / "predictions.csv").exists()


def test_a_stream_given_silence_gives_the_files_windows(trained, videos, tmp_path):
    rec = Recognizer(trained["ar5_fusion"][0])
    path = str(videos["avi_mjpeg_silent"])
    _, expected, _ = predict_source(rec, Source(path), window=1.0, hop=0.5, missing_audio="silence")
    source = open_source(path, realtime=True, missing_audio="silence")
    rows = run_stream(rec, source, 1.0, 0.5, tmp_path, quiet=True)
    assert [(r["start"], r["end"]) for r in rows] == [(w["start"], w["end"]) for w in expected]
    assert np.abs(probabilities(pd.DataFrame(rows)) - probabilities(pd.DataFrame(expected))).max() <= 1e-5
