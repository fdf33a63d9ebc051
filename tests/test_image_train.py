"""Image FER and the multi-task heads through training, the run record and the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fer_mm.report.build import report
from fer_mm.train import train
from image_sets import write_ckplus_folder, write_fer2013_csv

CONF = Path(__file__).resolve().parents[1] / "conf"
IMAGE_EXPERIMENTS = {"fer2013_mini_xception": "fer2013_twin", "ckplus_resnet50": "ckplus_twin",
                     "ckplus_au": "ckplus_twin"}


# gender and age from faces, trained on sets written in their release formats in test_face_tasks.py
FACE_EXPERIMENTS = {"faces_multitask", "utkface_gender", "utkface_age", "imdb_wiki_gender_age"}


def test_image_experiments_are_all_tested_here():
    experiments = {p.stem for p in (CONF / "experiment").glob("*.yaml") if "override /data" in p.read_text()}
    assert experiments == set(IMAGE_EXPERIMENTS) | FACE_EXPERIMENTS


@pytest.mark.parametrize("experiment", sorted(IMAGE_EXPERIMENTS))
def test_every_image_experiment_trains_a_step_on_its_twin(experiment, request, tmp_path, image_overrides, make_cfg):
    root = request.getfixturevalue(IMAGE_EXPERIMENTS[experiment])
    m = train(make_cfg(tmp_path, [f"experiment={experiment}", "debug=fast", *image_overrides(root)]))
    assert m["experiment"] == experiment and m["dataset"] == IMAGE_EXPERIMENTS[experiment]
    assert m["modalities"] == ["video"] and len(m["class_names"]) == (7 if "fer2013" in experiment else 8)
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert np.allclose(predictions.filter(regex="^p_[a-z]+$").sum(axis=1), 1, atol=1e-4)
    if experiment == "ckplus_au":
        assert "p_au12" in predictions and set(m["tasks"]["au"]["f1"]) >= {"AU1", "AU12", "AU27"}


def test_independent_fer2013_csv_trains_with_the_command_unchanged(tmp_path, image_overrides, make_cfg):
    data = tmp_path / "FER2013"
    data.mkdir()
    write_fer2013_csv(data / "fer2013.csv", n=60)
    m = train(make_cfg(tmp_path / "run", ["experiment=fer2013_mini_xception", "debug=limit", *image_overrides(data)]))
    assert m["dataset"] == "fer2013" and m["protocol"] == "released"
    assert m["speaker_independent"] is None  # FER2013 has no subject ids: unknown, and said so
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert len(predictions) == m["n_clips"]["test"] > 0
    assert m["test/acc"] == pytest.approx((predictions["pred"] == predictions["label"]).mean(), abs=1e-6)


def test_independent_ckplus_folder_trains_with_the_command_unchanged(tmp_path, image_overrides, make_cfg):
    """With ImageNet weights from a local file (here torchvision's architecture, random weights); the
    checkpoint then predicts without that file."""
    from torchvision.models import resnet50

    from fer_mm.inference.recognizer import Recognizer

    data = tmp_path / "CK+"
    sequences = write_ckplus_folder(data)
    weights = tmp_path / "resnet50-imagenet.pth"
    torch.save(resnet50().state_dict(), weights)
    m = train(make_cfg(tmp_path / "run", ["experiment=ckplus_resnet50", "debug=limit", "cv.fold=1",
                                          f"model.net.pretrained={weights}", *image_overrides(data)]))
    subjects = {int(s["subject"][1:]) for s in sequences if s["label"] is not None}
    assert m["dataset"] == "ckplus" and m["speaker_independent"] is True and m["folds_total"] == 5
    parts = [set(m["actors"][p]) for p in ("train", "val", "test")]
    assert set().union(*parts) == subjects and sum(map(len, parts)) == len(subjects)
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert set(predictions["actor"]) == set(m["actors"]["test"])
    weights.unlink()  # every weight is in the checkpoint
    row = Recognizer(tmp_path / "run").predict(str(sequences[0]["peak"]))
    assert row["status"] == "ok" and row["top"] in m["class_names"]


def test_multitask_reports_gender_and_age_per_fold_and_pooled(tmp_path, data_overrides, make_cfg):
    runs = tmp_path / "ar5_fusion_multitask"
    records = []
    for fold in (0, 1):
        cfg = make_cfg(runs / f"fold_{fold}", ["experiment=ar5_fusion_multitask", "debug=limit", "logger=csv",
                                               "cv=speaker_kfold", "cv.protocol.k=4", f"cv.fold={fold}",
                                               *data_overrides])
        records.append(train(cfg))
    m = records[0]
    predictions = pd.read_csv(runs / "fold_0" / "predictions.csv")
    assert {"gender", "p_male", "pred_gender", "age", "pred_age"} <= set(predictions.columns)
    # the record recomputes the logged metrics from predictions.csv
    assert m["tasks"]["gender"]["acc"] == pytest.approx(m["test/gender_acc"], abs=1e-6)
    assert m["tasks"]["age"]["mae"] == pytest.approx(m["test/age_mae"], abs=1e-3)
    assert m["tasks"]["age"]["mae"] == pytest.approx((predictions["pred_age"] - predictions["age"]).abs().mean(),
                                                     abs=1e-3)
    demographics = pd.read_csv(Path(m["data_root"]) / "VideoDemographics.csv").set_index("ActorID")
    test_actor = m["actors"]["test"][0]
    assert (predictions["age"] == demographics.loc[test_actor, "Age"]).all()
    assert (predictions["gender"] == int(demographics.loc[test_actor, "Sex"] == "Male")).all()
    train_ages = demographics.loc[m["actors"]["train"], "Age"]
    train_clips = {a: 16 for a in m["actors"]["train"]}  # IEO: 16 clips per actor
    mean_age = sum(train_ages[a] * n for a, n in train_clips.items()) / sum(train_clips.values())
    assert m["tasks"]["age"]["baseline"] == pytest.approx(abs(demographics.loc[test_actor, "Age"] - mean_age), abs=1e-3)
    # the checkpoint rebuilds the heads; the model's forward keeps the emotion contract
    from fer_mm.system import EmotionSystem

    system = EmotionSystem.load_from_checkpoint(m["best_checkpoint"], map_location="cpu").eval()
    batch = dict(video=torch.zeros(2, 20, 98, 80, dtype=torch.uint8), audio=torch.zeros(2, 16000),
                 audio_length=torch.tensor([16000, 16000]))
    assert system(batch).shape == (2, 6)
    outputs = system.outputs(batch)
    assert outputs["gender"].shape == (2, 2) and outputs["age"].shape == (2,)
    # the report: a row per fold and a pooled one, each with its baseline
    results = report([runs], tmp_path / "report", use_wandb=False)
    tasks = results["experiments"][0]["tasks"]
    assert set(tasks["per_fold"]) == {0, 1}
    assert tasks["pooled"]["gender"]["n"] == sum(r["n_clips"]["test"] for r in records)
    pooled = pd.concat([pd.read_csv(runs / f"fold_{f}" / "predictions.csv") for f in (0, 1)])
    assert tasks["pooled"]["age"]["mae"] == pytest.approx((pooled["pred_age"] - pooled["age"]).abs().mean(), abs=1e-6)
    markdown = (tmp_path / "report" / "results.md").read_text()
    assert "## Other tasks" in markdown and "| ar5_fusion_multitask (speaker_kfold) | pooled |" in markdown


@pytest.fixture(scope="module")
def ckplus_au_run(tmp_path_factory, ckplus_twin, image_overrides, make_cfg):
    """A short ckplus_au fold on the CK+ twin: (its run folder's parent, its record)."""
    run = tmp_path_factory.mktemp("ckplus_au_run") / "ckplus_au"
    m = train(make_cfg(run / "fold_0", ["experiment=ckplus_au", "debug=limit", *image_overrides(ckplus_twin)]))
    return run, m


def test_au_head_reports_f1_per_action_unit(tmp_path, ckplus_au_run):
    run, m = ckplus_au_run
    predictions = pd.read_csv(run / "fold_0" / "predictions.csv")
    au = m["tasks"]["au"]
    for name, f1 in au["f1"].items():  # recomputed here from the table
        k = name[2:]
        truth, pred = predictions[f"au{k}"] > 0.5, predictions[f"p_au{k}"] > 0.5
        tp, fp, fn = (truth & pred).sum(), (~truth & pred).sum(), (truth & ~pred).sum()
        assert f1 == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0, abs=1e-6)
        assert au["support"][name] == truth.sum()
    present = [n for n in au["f1"] if au["support"][n]]
    assert au["f1_macro"] == pytest.approx(np.mean([au["f1"][n] for n in present]), abs=1e-6)
    # pos_weight balanced: each AU's absent / present count in the training images, kept in the checkpoint
    weights = torch.load(m["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]["au_pos_weight"]
    ids = [int(n[2:]) for n in au["f1"]]
    assert weights[ids.index(17)] == 1 and weights[ids.index(12)] > 1  # AU17: never drawn by the twin
    report([run], tmp_path / "report", use_wandb=False)
    markdown = (tmp_path / "report" / "results.md").read_text()
    assert "Action units of ckplus_au" in markdown and "| neutral | anger | contempt |" in markdown


def test_image_data_refuses_what_it_cannot_give(tmp_path, fer2013_twin, image_overrides, make_cfg):
    base = ["experiment=fer2013_mini_xception", "debug=fast", *image_overrides(fer2013_twin)]
    with pytest.raises(ValueError, match="no subject ids .* cv=released"):
        train(make_cfg(tmp_path / "a", [*base, "cv=loso"]))
    with pytest.raises(ValueError, match="model.inputs.frames=20, but data=fer2013 holds single images"):
        train(make_cfg(tmp_path / "b", [*base, "model.inputs.frames=20"]))
    with pytest.raises(ValueError, match=r"but the data has 7 classes \(angry, .*\): set model.net.num_classes=7"):
        train(make_cfg(tmp_path / "c", [*base, "model.net.num_classes=6"]))
    with pytest.raises(ValueError, match="model.tasks.gender: fer2013_twin has no gender labels"):
        train(make_cfg(tmp_path / "d", [*base, "+model.tasks.gender.weight=1"]))


def test_task_losses_ignore_unknown_targets():
    from fer_mm.losses import task_loss as _task_loss

    out = torch.tensor([[2.0, -1.0], [0.0, 5.0]])
    assert _task_loss("gender", out, torch.tensor([0, -1])) == pytest.approx(
        torch.nn.functional.cross_entropy(out[:1], torch.tensor([0])).item())
    assert _task_loss("age", torch.tensor([30.0, 50.0]), torch.tensor([35.0, float("nan")])).item() == 5.0
    au = _task_loss("au", torch.zeros(2, 2), torch.tensor([[1.0, float("nan")], [float("nan"), float("nan")]]))
    assert au.item() == pytest.approx(np.log(2))
    assert _task_loss("age", torch.tensor([1.0]), torch.tensor([float("nan")])).item() == 0.0


def test_image_twin_settings_are_named_when_wrong(tmp_path, make_cfg):
    with pytest.raises(ValueError, match=r"data.synthetic.colour: not a parameter of the ckplus twin"):
        train(make_cfg(tmp_path, ["experiment=ckplus_au", "debug=fast", "+data.synthetic.colour=1",
                                  f"data.cache_dir={tmp_path / 'cache'}", f"data.twin_dir={tmp_path / 'twins'}"]))


def test_predict_reads_images_per_face_and_videos_per_frame(tmp_path, ckplus_au_run, twin_root):
    """An image model on new files: each face of an image, each frame of a video; a test image of
    the fold read from its file gives the fold's own prediction."""
    import cv2

    from fer_mm.inference.predict import predict_files
    from fer_mm.inference.recognizer import Recognizer
    from fer_mm.inference.sources import find_inputs
    from image_sets import face

    run, m = ckplus_au_run
    rec = Recognizer(run / "fold_0")
    assert rec.images and rec.class_names[0] == "neutral"
    fold = pd.read_csv(run / "fold_0" / "predictions.csv")
    peak = fold.iloc[-1]
    path = next(Path(m["data_root"]).rglob(f"{peak['name']}.png"))
    row = rec.predict(str(path))
    columns = [c for c in fold.columns if c.startswith("p_") and not c.startswith("p_au")]
    assert np.allclose([row[c] for c in columns], peak[columns].to_numpy(float), atol=1e-5)
    # two people side by side: a row each, the larger face first
    small = cv2.resize(face(9201, "sad"), (240, 180))
    canvas = np.full((360, 720, 3), 90, np.uint8)
    canvas[:, :480], canvas[90:270, 480:] = face(9200, "happy"), small
    cv2.imwrite(str(tmp_path / "two.png"), canvas)
    faces = rec.predict_faces(str(tmp_path / "two.png"))
    assert len(faces) == 2 and faces[0]["box"] != faces[1]["box"]
    assert int(faces[0]["box"].split(",")[2]) > int(faces[1]["box"].split(",")[2])
    # a video: one timeline row per frame with a face, the file row their mean
    video = next((twin_root / "VideoFlash").glob("*.flv"))
    (tmp_path / "in").mkdir()
    for f in (video, tmp_path / "two.png"):
        (tmp_path / "in" / f.name).write_bytes(f.read_bytes())
    table = predict_files(rec, find_inputs(tmp_path / "in"), tmp_path / "out", progress=False)
    assert len(table) == 3 and (table["status"] == "ok").all()
    frames = pd.read_csv(tmp_path / "out" / "windows.csv")
    row = table[table["file"].str.endswith(".flv")].iloc[0]
    assert len(frames) == row["frames_with_face"] > 0 and row["basis"] == f"mean of {len(frames)} frames"
    assert np.allclose(frames[columns].mean().to_numpy(), row[columns].to_numpy(float), atol=2e-6)
    assert (tmp_path / "out" / f"{video.stem}_timeline.png").is_file()


def test_an_image_model_with_task_heads_exports_to_onnx(tmp_path, ckplus_au_run):
    """The ONNX model holds the emotion network (the task heads stay in PyTorch) and reads an image as
    the checkpoint does."""
    import cv2

    pytest.importorskip("onnxruntime")
    from fer_mm.inference.export import export_onnx
    from fer_mm.inference.recognizer import Recognizer
    from image_sets import face

    run, _ = ckplus_au_run
    cv2.imwrite(str(tmp_path / "one.png"), face(9300, "surprise"))
    onnx = Recognizer(export_onnx(run / "fold_0", tmp_path / "m.onnx"), runtime="onnx")
    torch_row, onnx_row = (r.predict(str(tmp_path / "one.png")) for r in (Recognizer(run / "fold_0"), onnx))
    assert onnx.images and onnx_row["box"] == torch_row["box"]
    columns = [f"p_{c}" for c in onnx.class_names]
    assert np.allclose([onnx_row[c] for c in columns], [torch_row[c] for c in columns], atol=1e-4)


def test_a_live_source_runs_an_image_model_window_by_window(ckplus_au_run, twin_root):
    """The stream's path (Windows) with an image model: each window reads one tracked face."""
    from fer_mm.data.media.video import decode_gray
    from fer_mm.inference.recognizer import Recognizer
    from fer_mm.inference.windows import Windows, predict_windows

    rec = Recognizer(ckplus_au_run[0] / "fold_0")
    decoded = decode_gray(str(next((twin_root / "VideoFlash").glob("*.flv"))))
    windows = Windows(rec, 0.5, 0.5)
    for t, frame in zip(decoded.times, decoded.frames):
        windows.add_frame(float(t), frame)
    rows = predict_windows(rec, windows.ready(final=True))
    assert len(rows) >= 3 and all(abs(sum(r["reading"]["emotion"]) - 1) < 1e-4 for r in rows)


def test_init_from_a_single_task_checkpoint_loads_the_base_of_a_multitask_model(tmp_path):
    from fer_mm.system import EmotionSystem

    net = {"name": "mini_xception", "num_classes": 7}
    single = EmotionSystem(net=net, inputs={"frames": 1})
    torch.save({"state_dict": single.state_dict()}, tmp_path / "single.ckpt")
    multi = EmotionSystem(net=net, inputs={"frames": 1}, tasks={"gender": {"weight": 1}},
                          init_from=str(tmp_path / "single.ckpt"))
    for key, value in single.net.state_dict().items():
        assert torch.equal(multi.net.base.state_dict()[key], value)
    torch.save({"state_dict": {"net.other.weight": torch.zeros(1)}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="none of its weights fit"):
        EmotionSystem(net=net, inputs={"frames": 1}, init_from=str(tmp_path / "foreign.ckpt"))
