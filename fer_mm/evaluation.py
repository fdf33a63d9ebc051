"""Evaluation: the metric definitions, the per-clip predictions table and the run record.

The one place that defines how fer-mm scores a model. The system logs its stage metrics
through :class:`ConfusionMetric` (which calls :func:`scores`), training writes
``predictions.csv`` and ``metrics.json`` through :func:`predictions_table` and
:func:`write_run_record`, and the report recomputes every figure from ``predictions.csv``
with the same :func:`scores`, so a number in a report equals the one logged in training.

- ``acc``: accuracy, the share of clips predicted right (weighted average recall, WAR).
- ``uar``: unweighted average recall, the mean of the per-class recalls (macro recall).
- ``f1``: macro F1, the mean of the per-class F1 scores.
Class means run over the classes present in the labels (a test actor may lack one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torchmetrics import Metric

from fer_mm.files import write_atomic

SCHEMA_VERSION = 2  # of metrics.json; 2: config hash and result config, dataset id, folds_total
METRIC_NAMES = ("acc", "uar", "f1")


def confusion_matrix(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]``."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    return np.bincount(labels * num_classes + preds, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def scores(confusion: np.ndarray) -> dict:
    """acc, uar, f1, per-class recall and the clip count from a confusion matrix."""
    cm = np.asarray(confusion, dtype=np.float64)
    support, predicted, hits = cm.sum(1), cm.sum(0), np.diag(cm)
    present = support > 0
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=present)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(hits), where=(precision + recall) > 0)
    n = cm.sum()
    return dict(acc=float(hits.sum() / n) if n else float("nan"),
                uar=float(recall[present].mean()) if present.any() else float("nan"),
                f1=float(f1[present].mean()) if present.any() else float("nan"),
                per_class_recall=recall.tolist(), confusion=cm.astype(np.int64).tolist(), n=int(n))


def prediction_scores(predictions: pd.DataFrame, num_classes: int) -> dict:
    """:func:`scores` of a predictions table (``label`` and ``pred`` columns)."""
    return scores(confusion_matrix(predictions["label"], predictions["pred"], num_classes))


class ConfusionMetric(Metric):
    """A stage's confusion matrix, summed over batches (and processes); ``compute`` gives :func:`scores`."""

    full_state_update = False

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("confusion", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        idx = labels.long() * self.num_classes + logits.argmax(1)
        self.confusion += torch.bincount(idx, minlength=self.num_classes ** 2).reshape(self.num_classes, -1)

    def compute(self) -> dict:
        return scores(self.confusion.cpu().numpy())


def predictions_table(clips: pd.DataFrame, labels: np.ndarray, probs: np.ndarray,
                      class_names: Sequence[str]) -> pd.DataFrame:
    """One row per clip: its identity, true and predicted label, and each class's probability.

    ``clips`` holds the clips' rows (name, actor, sentence, level) in the order of ``labels``
    and ``probs``; the table is sorted by name, so two runs' tables compare row by row.
    """
    pred = probs.argmax(1)
    table = pd.DataFrame(dict(name=clips["name"].to_numpy(), actor=clips["actor"].to_numpy(),
                              sentence=clips["sentence"].to_numpy(), level=clips["level"].to_numpy(),
                              label=labels, label_name=[class_names[i] for i in labels],
                              pred=pred, pred_name=[class_names[i] for i in pred]))
    for i, name in enumerate(class_names):
        table[f"p_{name}"] = probs[:, i].round(6)
    return table.sort_values("name").reset_index(drop=True)


def probability_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("p_")]


def run_record(*, predictions: pd.DataFrame, class_names: Sequence[str], logged: dict, **fields) -> dict:
    """The ``metrics.json`` of a fold: the test metrics the system logged, and the fields given.

    The per-class recall and the confusion matrix come from ``predictions``; the report
    recomputes the logged scores from the same table (a test checks that they agree).
    """
    s = prediction_scores(predictions, len(class_names))
    return dict(
        schema_version=SCHEMA_VERSION,
        **fields,
        **{k: float(v) for k, v in sorted(logged.items()) if k.startswith("test/")},
        per_class_recall=dict(zip(class_names, np.round(s["per_class_recall"], 6).tolist())),
        confusion=s["confusion"],
        class_names=list(class_names),
    )


def write_run_record(run_dir: Path, record: dict, predictions: pd.DataFrame) -> None:
    """``predictions.csv``, then ``metrics.json``: written last, its presence marks the fold done."""
    write_atomic(run_dir / "predictions.csv", predictions.to_csv(index=False))
    write_atomic(run_dir / "metrics.json", json.dumps(record, indent=2) + "\n")


def read_run_record(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """A finished fold's record and predictions; a record of another schema is named as such."""
    record = json.loads((Path(run_dir) / "metrics.json").read_text())
    version = record.get("schema_version", 1)
    if version != SCHEMA_VERSION:
        raise ValueError(f"{run_dir}/metrics.json has schema version {version}, this fer-mm reads {SCHEMA_VERSION}: "
                         f"re-run the fold (overwrite=true) or report it with the fer-mm that made it")
    return record, pd.read_csv(Path(run_dir) / "predictions.csv")
