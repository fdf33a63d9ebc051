"""One evaluation path: metric definitions, the report recomputing what training logged, and a
checkpoint reproducing its own predictions from the cached raw clips."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from fer_mm.data.clips import clip_item
from fer_mm.evaluation import ConfusionMetric, confusion_matrix, probability_columns, scores
from fer_mm.report.build import main as report_main
from fer_mm.system import EmotionSystem
from fer_mm.train import train


def test_scores_on_a_known_confusion():
    labels = [0, 0, 0, 0, 1, 1, 2, 2]
    preds = [0, 0, 0, 1, 1, 0, 2, 2]
    s = scores(confusion_matrix(labels, preds, 4))  # class 3 absent: left out of the class means
    assert s["acc"] == pytest.approx(6 / 8)
    assert s["uar"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    f1_0 = 2 * (3 / 4) * (3 / 4) / (3 / 4 + 3 / 4)
    f1_1 = 2 * (1 / 2) * (1 / 2) / 1
    assert s["f1"] == pytest.approx((f1_0 + f1_1 + 1) / 3)
    assert s["per_class_recall"] == pytest.approx([0.75, 0.5, 1.0, 0.0]) and s["n"] == 8


def test_the_system_metric_is_the_same_definition():
    rng = np.random.default_rng(0)
    labels, logits = rng.integers(0, 6, 200), rng.normal(size=(200, 6))
    metric = ConfusionMetric(6)
    for part in np.array_split(np.arange(200), 7):  # batches of uneven size
        metric.update(torch.from_numpy(logits[part]), torch.from_numpy(labels[part]))
    assert metric.compute() == scores(confusion_matrix(labels, logits.argmax(1), 6))


@pytest.fixture(scope="module")
def fusion_fold(twin_cache, data_overrides, make_cfg, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fusion_fold")
    record = train(make_cfg(run_dir, ["experiment=ar5_fusion", "debug=limit", "logger=csv", "cv.fold=1",
                                      *data_overrides]))
    return run_dir, record


def test_report_recomputes_what_training_logged(fusion_fold, tmp_path):
    run_dir, record = fusion_fold
    logged = pd.read_csv(run_dir / "csv" / "metrics.csv")
    test_row = logged.dropna(subset=["test/acc"]).iloc[-1]
    report_main([str(run_dir), "--out", str(tmp_path), "--no-wandb"])
    [summary] = json.loads((tmp_path / "results.json").read_text())["experiments"]
    assert summary["folds_found"] == 1 and summary["config_hash"] == record["config_hash"]
    for key in ("acc", "uar", "f1"):
        # from predictions.csv (report) = logged by the system in training = the run record
        assert summary["pooled"][key] == pytest.approx(test_row[f"test/{key}"], abs=1e-6)
        assert record[f"test/{key}"] == pytest.approx(test_row[f"test/{key}"], abs=1e-6)
    assert summary["pooled"]["confusion"] == record["confusion"]


def test_checkpoint_reproduces_its_predictions_from_raw_clips(fusion_fold, twin_cache):
    _, record = fusion_fold
    system = EmotionSystem.load_from_checkpoint(record["best_checkpoint"], map_location="cpu").eval()
    assert system.modalities == ("video", "audio") and system.inputs.frames == 20
    predictions = pd.read_csv(record["best_checkpoint"].rsplit("/checkpoints/", 1)[0] + "/predictions.csv")
    rows = {name: i for i, name in enumerate(twin_cache.clips["name"])}
    worst = 0.0
    with torch.no_grad():
        for clip in predictions.itertuples():
            row = rows[clip.name]
            item = clip_item(twin_cache.video(row), twin_cache.audio(row), system.inputs.clip_spec)
            batch = {k: v[None] if torch.is_tensor(v) else torch.tensor([v]) for k, v in item.items()}
            probs = system(batch).softmax(1)[0].numpy()
            logged = predictions.loc[clip.Index, probability_columns(predictions)].to_numpy(float)
            worst = max(worst, float(np.abs(probs - logged).max()))
    assert len(predictions) == 16 and worst <= 1e-5
