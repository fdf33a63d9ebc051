"""Gender and age beside emotion across datasets: age as regression or groups, samples without an
emotion label, the random image split, weighted sampling, and a mixed FER2013 + UTKFace run whose
record scores each task over the samples that have its target only. The sets are written here as
released (FER2013's csv, UTKFace's file names), without fer-mm's writers."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from fer_mm.data.clips import ResidentLoader
from fer_mm.data.protocols import ImageSplit
from fer_mm.evaluation import ConfusionMetric, TaskMetric, predictions_table, task_scores
from fer_mm.models.multitask import AgeGroups
from fer_mm.system import EmotionSystem
from fer_mm.train import train

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def write_fer2013(root: Path, per_usage: dict[str, int], seed: int = 0) -> Path:
    """FER2013's csv (``emotion,pixels,Usage``), each face a gray level by its class plus noise."""
    rng = np.random.default_rng(seed)
    lines = ["emotion,pixels,Usage"]
    for usage, n in per_usage.items():
        for i in range(n):
            label = i % len(FER_CLASSES)
            face = np.clip(rng.normal(30 + 30 * label, 10, 48 * 48), 0, 255).astype(int)
            lines.append(f"{label},{' '.join(map(str, face))},{usage}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "fer2013.csv").write_text("\n".join(lines) + "\n")
    return root


def write_utkface(root: Path, n: int, seed: int = 0) -> Path:
    """UTKFace's aligned crops: ``UTKFace/[age]_[gender]_[race]_[date&time].jpg.chip.jpg`` (gender 0 male),
    brighter with age, striped for men; plus one of the release's malformed names (no race)."""
    rng = np.random.default_rng(seed)
    folder = root / "UTKFace"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        age, male = int(rng.integers(1, 80)), int(rng.integers(0, 2))
        image = np.full((200, 200, 3), 40 + 2 * age, np.uint8)
        if male:
            image[::8] = 0
        cv2.imwrite(str(folder / f"{age}_{1 - male}_{int(rng.integers(0, 5))}_20170109{i:09d}.jpg.chip.jpg"), image)
    cv2.imwrite(str(folder / "39_1_20170116174525125.jpg.chip.jpg"), np.zeros((200, 200, 3), np.uint8))
    return root


def test_age_groups_bounds_centres_and_names():
    groups = AgeGroups([0, 5, 10, 20])
    assert groups.names == ["0-4", "5-9", "10-19", "20+"] and groups.centres == [2.5, 7.5, 15.0, 25.0]
    assert groups.index(torch.tensor([0.0, 4.99, 5.0, 19.0, 20.0, 99.0])).tolist() == [0, 0, 1, 2, 3, 3]
    with pytest.raises(ValueError, match=r"model.tasks.age.groups=\[5.0, 5.0\]: give at least two increasing"):
        AgeGroups([5, 5])


def test_samples_without_an_emotion_label_count_in_no_emotion_figure():
    metric = ConfusionMetric(3)
    metric.update(torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]]), torch.tensor([0, -1, 1]))
    assert metric.confusion.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    clips = pd.DataFrame(dict(name=["a", "b", "c"], actor=-1, sentence="", level=""))
    table = predictions_table(clips, np.array([0, -1, 1]), np.eye(3)[[0, 1, 2]], ["x", "y", "z"])
    assert table["label_name"].tolist() == ["x", "", "y"]


def test_a_batch_without_emotion_labels_adds_no_loss_and_no_gradient():
    system = EmotionSystem(net=dict(name="mini_xception", num_classes=3),
                           inputs=dict(frames=1, sample_rate=None), tasks=dict(age=dict(weight=1.0)))
    batch = dict(video=torch.randint(0, 255, (4, 1, 48, 48), dtype=torch.uint8), label=torch.full((4,), -1),
                 age=torch.tensor([10.0, 20.0, 30.0, 40.0]), index=torch.arange(4))
    loss = system.training_step(batch, 0)
    loss.backward()
    head = system.net.base.head[-1].weight
    assert torch.isfinite(loss) and head.grad is not None and torch.count_nonzero(head.grad) == 0


@pytest.mark.parametrize("loss", ["l1", "mse"])
def test_age_regression_loss_is_the_configured_one(loss):
    system = EmotionSystem(net=dict(name="mini_xception", num_classes=0),
                           inputs=dict(frames=1, sample_rate=None), tasks=dict(age=dict(loss=loss)))
    batch = dict(video=torch.zeros(2, 1, 48, 48, dtype=torch.uint8), label=torch.full((2,), -1),
                 age=torch.tensor([float("nan"), 45.0]), index=torch.arange(2))
    system.eval()
    loss_value = system.training_step(batch, 0)
    error = float(system.outputs(batch)["age"][1].detach() - 45.0)
    assert float(loss_value) == pytest.approx(abs(error) if loss == "l1" else error ** 2, rel=1e-5)


def test_age_groups_are_scored_by_group_and_by_the_groups_centres():
    groups = AgeGroups([0, 20, 40])
    metric = TaskMetric(age_groups=groups)
    logits = torch.tensor([[9.0, 0, 0], [0, 9.0, 0], [0, 0, 9.0], [9.0, 0, 0]])
    metric.update(dict(age=logits), dict(age=torch.tensor([5.0, 35.0, 20.0, float("nan")])))
    out = {k: float(v) for k, v in metric.compute().items()}
    # predicted centres 10, 30, 50 against 5, 35, 20: errors 5, 5, 30
    assert out == pytest.approx(dict(age_mae=40 / 3, age_within5=2 / 3, age_group_acc=2 / 3))
    clips = pd.DataFrame(dict(name=list("abcd"), actor=-1, sentence="", level=""))
    table = predictions_table(clips, np.full(4, -1), None, [], dict(
        age=(np.array([5.0, 35.0, 20.0, np.nan]), logits.softmax(1).numpy()), age_groups=groups))
    scores = task_scores(table)["age"]
    assert scores["mae"] == pytest.approx(out["age_mae"]) and scores["group_acc"] == pytest.approx(2 / 3)
    assert scores["per_group_acc"] == {"0-19": 1.0, "20-39": 0.5} and scores["n"] == 3


def test_mixed_datasets_need_one_fold_count_and_every_weight(make_cfg, tmp_path):
    import hydra

    cfg = make_cfg(tmp_path, ["experiment=faces_multitask", "~data.weights.utkface"])
    with pytest.raises(Exception, match="data.weights.utkface is not set: give every dataset its share"):
        hydra.utils.instantiate(cfg.data)
    from fer_mm.data.mixed import PerDatasetProtocol
    from fer_mm.data.protocols import SpeakerKFold

    protocol = PerDatasetProtocol(dict(a=SpeakerKFold(k=3), b=ImageSplit()))
    clips = pd.DataFrame(dict(dataset=["a"] * 6 + ["b"] * 10, actor=[1, 2, 3, 4, 5, 6] + [-1] * 10))
    with pytest.raises(ValueError, match=r"data.protocols give the datasets \{'a': 3, 'b': 1\} folds"):
        protocol.assign(clips, 0)


def test_image_split_is_one_seeded_split_and_refuses_subject_ids():
    clips = pd.DataFrame(dict(actor=np.full(100, -1)))
    split, rows = ImageSplit(seed=3).assign(clips, 0)
    assert [len(rows[p]) for p in ("train", "val", "test")] == [70, 10, 20]
    assert len(np.unique(np.concatenate(list(rows.values())))) == 100
    assert all((rows[p] == ImageSplit(seed=3).assign(clips, 0)[1][p]).all() for p in rows)
    with pytest.raises(ValueError, match="cv=image_split splits images at random, for data without subject ids"):
        ImageSplit().assign(pd.DataFrame(dict(actor=[1, 2, 3])), 0)


def test_weighted_training_draws_each_dataset_in_its_share():
    class Clips:  # only what the loader reads: the modalities it gathers, and where rows live
        spec = type("Spec", (), {"modalities": (), "frames": 1})()

        def upload(self, t):
            return t

        def batch(self, rows, uniform=None):
            return rows

    rows = np.arange(1000)  # 900 of one dataset, 100 of another: drawn half and half
    weights = np.where(rows < 900, 0.5 / 900, 0.5 / 100)
    drawn = torch.cat(list(ResidentLoader(Clips(), rows, 100, train=True, seed=0, weights=weights)))
    assert len(drawn) == 1000 and 0.44 < float((drawn >= 900).float().mean()) < 0.56


def test_a_mixed_run_scores_each_task_over_the_samples_that_have_its_target(make_cfg, tmp_path):
    fer = write_fer2013(tmp_path / "fer2013", dict(Training=42, PublicTest=14, PrivateTest=14))
    utk = write_utkface(tmp_path / "utk", 60)
    cfg = make_cfg(tmp_path / "run", [
        "experiment=faces_multitask", f"data.datasets.fer2013.root={fer}", f"data.datasets.utkface.root={utk}",
        f"paths.cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=1", "data.progress=false",
        "trainer.enable_progress_bar=false", "logger=csv"])
    record = train(cfg)
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    fer_rows, utk_rows = (predictions[predictions["dataset"] == d] for d in ("fer2013", "utkface"))
    assert len(fer_rows) == 14 and len(utk_rows) == 12  # PrivateTest, and 20% of the 60 usable faces
    assert (fer_rows["label"] >= 0).all() and (utk_rows["label"] == -1).all()
    assert (fer_rows["gender"] == -1).all() and fer_rows["age"].isna().all()
    # emotion over FER2013's faces only, gender and age over UTKFace's only
    assert record["test/acc"] == pytest.approx((fer_rows["pred"] == fer_rows["label"]).mean())
    assert sum(map(sum, record["confusion"])) == 14
    gender, age = record["tasks"]["gender"], record["tasks"]["age"]
    assert gender["n"] == age["n"] == 12
    assert gender["acc"] == pytest.approx((utk_rows["pred_gender"] == utk_rows["gender"]).mean())
    assert record["test/gender_acc"] == pytest.approx(gender["acc"], abs=1e-6)
    assert age["mae"] == pytest.approx((utk_rows["pred_age"] - utk_rows["age"]).abs().mean())
    assert record["test/age_mae"] == pytest.approx(age["mae"], rel=1e-5)
    assert record["per_dataset"]["fer2013"]["n_emotion"] == 14 and "tasks" not in record["per_dataset"]["fer2013"]
    assert set(record["per_dataset"]["utkface"]["tasks"]) == {"gender", "age"}
    datasets = record["datasets"]
    assert datasets["fer2013"]["protocol"] == "released" and datasets["utkface"]["protocol"] == "image_split"
    assert datasets["utkface"]["subject_independent"] is None and record["speaker_independent"] is None
    assert datasets["fer2013"]["weight"] == datasets["utkface"]["weight"] == 0.5
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["tasks"] == record["tasks"]
    # its checkpoint reads a new face as trained: FER2013's classes and crops, with gender and age
    from fer_mm.inference.recognizer import Recognizer

    face = tmp_path / "face.png"
    cv2.imwrite(str(face), np.full((48, 48), 120, np.uint8))
    rec = Recognizer(tmp_path / "run")
    row = rec.predict(str(face))
    assert rec.class_names == list(FER_CLASSES) and rec.params.format == "fer2013"
    assert row["status"] == "ok" and 0 <= row["p_male"] <= 1 and row["age"] > 0 and row["top"] in FER_CLASSES


def cell(values: list) -> np.ndarray:
    """A MATLAB 1xN cell array, as savemat writes an object array."""
    out = np.empty((1, len(values)), dtype=object)
    for i, v in enumerate(values):
        out[0, i] = v
    return out


def write_imdb_wiki(root: Path, celebrities: int, per_celebrity: int, seed: int = 0) -> dict[str, str]:
    """``imdb_crop/imdb.mat`` with its images, and ``wiki_crop/wiki.mat`` whose entries carry the same names
    (one each), as the release writes them; returns each image's person (name) by the record's ``name``."""
    from datetime import date

    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    person, names = {}, [f"Person {i}" for i in range(celebrities)]
    for set_name, n_per in (("imdb", per_celebrity), ("wiki", 1)):
        folder = root / f"{set_name}_crop"
        rows = []
        for c, name in enumerate(names):
            for k in range(n_per):
                path = f"{(c + k) % 100:02d}/{set_name}{c}_{k}.jpg"
                (folder / path).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / path), rng.integers(0, 255, (120, 100, 3), dtype=np.uint8))
                born = date(1950 + c, 3, 1)
                rows.append((path, born.toordinal() + 366.0, 1990 + c + k, float(c % 2) if k else np.nan, name, c + 1))
                person[f"{set_name}/{path}"] = name
        struct = dict(dob=np.array([[r[1] for r in rows]]), photo_taken=np.array([[r[2] for r in rows]], float),
                      full_path=cell([r[0] for r in rows]), gender=np.array([[r[3] for r in rows]]),
                      name=cell([r[4] for r in rows]),
                      face_location=cell([np.array([[20.0, 20.0, 80.0, 100.0]]) for _ in rows]),
                      face_score=np.full((1, len(rows)), 3.0), second_face_score=np.full((1, len(rows)), np.nan))
        if set_name == "imdb":
            struct.update(celeb_names=cell(names), celeb_id=np.array([[float(r[5]) for r in rows]]))
        savemat(folder / f"{set_name}.mat", {set_name: struct})
    return person


def test_imdb_wiki_folds_never_put_one_person_in_two_parts(make_cfg, tmp_path):
    import hydra

    from fer_mm.data.datamodule import ImageDataModule

    person = write_imdb_wiki(tmp_path / "imdb_wiki", celebrities=12, per_celebrity=3)
    cfg = make_cfg(tmp_path / "run", ["experiment=imdb_wiki_gender_age", f"data.root={tmp_path / 'imdb_wiki'}",
                                      f"paths.cache_dir={tmp_path / 'cache'}", "data.progress=false"])
    folds = 0
    for fold in range(cfg.cv.protocol.k):
        cfg.data.fold = fold
        datamodule: ImageDataModule = hydra.utils.instantiate(cfg.data, clip_spec=dict(
            modalities=["video"], frames=1, sample_rate=16000, max_audio_samples=16000), targets={"age": None})
        datamodule.prepare_data()
        datamodule.setup("fit")
        clips = datamodule.cache.clips
        people = {part: {person[n] for n in clips["name"].iloc[rows]} for part, rows in datamodule.rows.items()}
        assert not (people["train"] & people["val"] or people["train"] & people["test"] or people["val"] & people["test"])
        assert datamodule.subject_independent is True
        folds += 1
    assert folds == 5 and len(clips) == 12 * 4  # the wiki entry of each person joined its IMDB self
    gender = pd.to_numeric(clips["gender"])
    assert (gender == -1).sum() == 12 + 12  # the NaN genders: each person's first IMDB photo and their wiki one


def test_an_unreadable_image_and_a_malformed_name_are_named_and_skipped(make_cfg, tmp_path):
    import hydra

    root = write_utkface(tmp_path / "utk", 5)
    (root / "UTKFace" / "30_0_1_20170109000000099.jpg.chip.jpg").write_bytes(b"not a jpeg")
    cfg = make_cfg(tmp_path / "run", ["experiment=utkface_age", f"data.root={root}",
                                      f"paths.cache_dir={tmp_path / 'cache'}", "data.progress=false"])
    cache = hydra.utils.instantiate(cfg.data).prepare_data()
    skipped = cache.report["skipped"]
    assert len(cache) == 5
    assert skipped["UTKFace/30_0_1_20170109000000099.jpg.chip.jpg"].startswith("unreadable image")
    assert "race field missing" in skipped["UTKFace/39_1_20170116174525125.jpg.chip.jpg"]


def test_a_folder_of_neither_format_is_named(make_cfg, tmp_path):
    import hydra

    (tmp_path / "photos").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "holiday.jpg"), np.zeros((10, 10, 3), np.uint8))
    for data in ("utkface", "imdb_wiki"):
        cfg = make_cfg(tmp_path / "run", [f"data={data}", "model=mini_xception", f"data.root={tmp_path / 'photos'}",
                                          f"paths.cache_dir={tmp_path / 'cache'}", "data.progress=false"])
        with pytest.raises(FileNotFoundError, match=f"data.root={tmp_path / 'photos'}"):
            hydra.utils.instantiate(cfg.data).prepare_data()


def test_the_report_sets_a_twin_run_against_what_its_faces_display(make_cfg, tmp_path):
    from fer_mm.data.twins.attributes import generate_utkface
    from fer_mm.report.build import report

    twin = generate_utkface(tmp_path / "twin", images=60, seed=1, workers=1, progress=False)
    cfg = make_cfg(tmp_path / "exp" / "utkface_gender" / "image_split" / "h" / "fold_0", [
        "experiment=utkface_gender", f"data.root={twin}", f"paths.cache_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=1", "data.progress=false", "trainer.enable_progress_bar=false", "logger=csv"])
    train(cfg)
    summaries = report([tmp_path / "exp"], tmp_path / "report")["experiments"]
    predictions = pd.read_csv(next((tmp_path / "exp").rglob("predictions.csv")))
    displays = pd.read_csv(twin / "displays.csv").set_index("file").loc[predictions["name"]]
    expected = ((displays["displayed_gender"] == "male").astype(int).to_numpy() == predictions["gender"]).mean()
    assert summaries[0]["tasks"]["pooled"]["ceilings"]["gender"] == pytest.approx(expected)
    assert "| twin ceiling % |" in (tmp_path / "report" / "results.md").read_text()


@pytest.mark.parametrize("experiment", ["utkface_age", "imdb_wiki_gender_age"])
def test_independent_sets_train_with_the_command_unchanged(experiment, make_cfg, tmp_path):
    """UTKFace's folder and IMDB-WIKI's .mat and crops as released (written here), trained as the docs say."""
    if experiment == "utkface_age":
        root = write_utkface(tmp_path / "utk", 40)
    else:
        root = tmp_path / "imdb_wiki"
        write_imdb_wiki(root, celebrities=10, per_celebrity=3)
    record = train(make_cfg(tmp_path / "run", [f"experiment={experiment}", f"data.root={root}", "debug=fast",
                                               f"paths.cache_dir={tmp_path / 'cache'}"]))
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert record["class_names"] == [] and not any(c.startswith("p_") and c != "p_male" for c in predictions)
    assert record["tasks"]["age"]["n"] == predictions["age"].notna().sum() > 0
    assert record["speaker_independent"] is (None if experiment == "utkface_age" else True)
