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

Emotion is scored over the clips whose emotion is known: a mixed-dataset run holds samples
without one (label -1, e.g. UTKFace's faces beside FER2013's), which count in no emotion figure.

The tasks beside emotion (:func:`task_scores`, :class:`TaskMetric`), over the clips whose target
is known:
- ``gender_acc``: share of clips whose gender is predicted right;
- ``age_mae``: mean absolute error of the predicted age, in years (with age groups: of the centre of
  the predicted group); ``age_within5``: share of clips whose predicted age is within 5 years;
  ``age_group_acc`` (age groups only): share of clips whose group is predicted right, and per group
  its recall in the record;
- ``au_f1``: F1 of each action unit (present when its probability is over 0.5), and their mean
  over the units present in the labels (``au_f1`` in the logs).
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
from fer_mm.vocab import MODALITIES

SCHEMA_VERSION = 2  # of metrics.json; 2: config hash and result config, dataset id, folds_total
METRIC_NAMES = ("acc", "uar", "f1")


def confusion_matrix(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` over the labelled samples (label -1: no emotion label, left out)."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    known = labels >= 0
    labels, preds = labels[known], preds[known]
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
    """:func:`scores` of a predictions table (``label`` and ``pred`` columns); NaN scores for a model
    without emotion classes (its table has no such columns)."""
    if not num_classes or "label" not in predictions:
        return scores(np.zeros((0, 0)))
    return scores(confusion_matrix(predictions["label"], predictions["pred"], num_classes))


class ConfusionMetric(Metric):
    """A stage's confusion matrix, summed over batches (and processes); ``compute`` gives :func:`scores`."""

    full_state_update = False

    def __init__(self, num_classes: int, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("confusion", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        known = labels >= 0  # -1: a sample without an emotion label counts in no cell
        idx = torch.where(known, labels.long() * self.num_classes + logits.argmax(1), 0)
        # a count per (true, predicted) cell, added in place: bincount would read the indices' range
        # on the host, a sync per batch on a GPU
        self.confusion.view(-1).index_add_(0, idx, known.long())

    def compute(self) -> dict:
        return scores(self.confusion.cpu().numpy())


def predictions_table(clips: pd.DataFrame, labels: np.ndarray, probs: np.ndarray | None,
                      class_names: Sequence[str], tasks: dict | None = None,
                      branches: dict | None = None) -> pd.DataFrame:
    """One row per clip: its identity, true and predicted label, and each class's probability.

    ``clips`` holds the clips' rows (name, actor, sentence, level, and ``dataset`` where a run mixes
    datasets) in the order of ``labels`` and ``probs``; the table is sorted by name, so two runs'
    tables compare row by row. A label of -1 (no emotion label) has an empty ``label_name``;
    ``probs`` None (a model without emotion classes) gives no emotion columns.
    ``tasks``: the other tasks' targets and outputs in the same order (``gender`` / ``age`` /
    ``au``: ``(truth, output)`` with gender as P(male), age in years, AUs as probabilities, and
    ``au_ids``; ``age_groups``: the age's :class:`~fer_mm.models.multitask.AgeGroups`, with age's
    output then the groups' probabilities), which add the columns ``gender, p_male, pred_gender``,
    ``age, pred_age`` (and ``age_group, pred_age_group``, the groups' names) and ``au<k>, p_au<k>``
    per action unit. ``branches``: a fused model's branches' own predicted classes by modality,
    the columns ``pred_video`` and ``pred_audio``.
    """
    identity = dict(name=clips["name"].to_numpy(), actor=clips["actor"].to_numpy(),
                    sentence=clips["sentence"].to_numpy(), level=clips["level"].to_numpy())
    if "dataset" in clips:
        identity["dataset"] = clips["dataset"].to_numpy()
    table = pd.DataFrame(identity)
    if probs is not None:
        pred = probs.argmax(1)
        table = table.assign(label=labels, label_name=[class_names[i] if i >= 0 else "" for i in labels],
                             pred=pred, pred_name=[class_names[i] for i in pred])
        for i, name in enumerate(class_names):
            table[f"p_{name}"] = probs[:, i].round(6)
        for modality, branch_pred in (branches or {}).items():
            table[f"pred_{modality}"] = branch_pred
    tasks = tasks or {}
    if "gender" in tasks:
        truth, p_male = tasks["gender"]
        table["gender"], table["p_male"], table["pred_gender"] = truth, np.round(p_male, 6), (p_male > 0.5).astype(int)
    if "age" in tasks:
        truth, age = tasks["age"]
        groups = tasks.get("age_groups")
        if groups is None:
            table["age"], table["pred_age"] = truth, np.round(age, 3)
        else:
            names, pred_group = np.array(groups.names), np.asarray(age).argmax(1)
            true_group = groups.index(torch.as_tensor(truth)).numpy()
            table["age"], table["pred_age"] = truth, np.asarray(groups.centres)[pred_group]
            table["age_group"] = np.where(np.isnan(truth), "", names[true_group])
            table["pred_age_group"] = names[pred_group]
    if "au" in tasks:
        truth, p_au = tasks["au"]
        for j, au in enumerate(tasks["au_ids"]):
            table[f"au{au}"], table[f"p_au{au}"] = truth[:, j], np.round(p_au[:, j], 6)
    return table.sort_values("name").reset_index(drop=True)


def au_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, float]:
    """Each action unit's F1 from its counts, and their mean over the units present in the labels."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    present = (tp + fn) > 0
    return f1, float(f1[present].mean()) if present.any() else float("nan")


def task_scores(predictions: pd.DataFrame) -> dict:
    """The other tasks' scores from a predictions table (the tasks whose columns it has), over the
    clips whose target is known; ``baseline`` figures are filled in by the caller where known."""
    out = {}
    if "pred_gender" in predictions:
        known = predictions["gender"] >= 0
        hits = (predictions["pred_gender"] == predictions["gender"])[known]
        out["gender"] = dict(acc=float(hits.mean()) if known.any() else float("nan"), n=int(known.sum()))
    if "pred_age" in predictions:
        out["age"] = _age_scores(predictions)
    ids = [c[4:] for c in predictions.columns if c.startswith("p_au")]
    if ids:
        truth = predictions[[f"au{a}" for a in ids]].to_numpy(np.float64)
        pred = predictions[[f"p_au{a}" for a in ids]].to_numpy(np.float64) > 0.5
        known = ~np.isnan(truth)
        present = known & (truth > 0.5)
        tp, fp, fn = ((present & pred).sum(0), (known & ~present & pred).sum(0), (present & ~pred).sum(0))
        f1, macro = au_f1(tp, fp, fn)
        out["au"] = dict(f1_macro=macro, f1={f"AU{a}": round(float(v), 6) for a, v in zip(ids, f1)},
                         support={f"AU{a}": int(n) for a, n in zip(ids, present.sum(0))}, n=int(known.all(1).sum()))
    return out


def _age_scores(predictions: pd.DataFrame) -> dict:
    """Age's MAE and share within 5 years (and with age groups the groups' accuracy and per-group
    recall), over the clips whose age is known."""
    known = predictions["age"].notna()
    errors = (predictions["pred_age"] - predictions["age"])[known].abs()
    nan = float("nan")
    out = dict(mae=float(errors.mean()) if known.any() else nan,
               within5=float((errors <= 5).mean()) if known.any() else nan, n=int(known.sum()))
    if "pred_age_group" in predictions:
        truth, pred = predictions["age_group"][known].astype(str), predictions["pred_age_group"][known].astype(str)
        hits = truth == pred
        out["group_acc"] = float(hits.mean()) if known.any() else nan
        order = sorted(truth.unique(), key=lambda g: float(g.split("-")[0].rstrip("+")))
        out["per_group_acc"] = {g: round(float(hits[truth == g].mean()), 6) for g in order}
        out["per_group_n"] = {g: int((truth == g).sum()) for g in order}
    return out


class TaskMetric(Metric):
    """A stage's sums for the other tasks (gender hits, age errors, action-unit counts), over batches
    and processes; ``compute`` gives ``gender_acc``, ``age_mae`` and ``au_f1`` as :func:`task_scores` does."""

    full_state_update = False

    def __init__(self, n_aus: int = 0, age_groups=None, **kwargs):
        super().__init__(**kwargs)
        self.age_groups = age_groups  # AgeGroups: the age head gives a logit per group
        for name in ("gender_hits", "gender_n", "age_error", "age_n", "age_within5", "age_group_hits"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("au_tp", "au_fp", "au_fn"):
            self.add_state(name, default=torch.zeros(n_aus, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, outputs: dict, batch: dict) -> None:
        # masked sums, never boolean indexing: selecting the known clips would make the host wait for
        # the device to count them, every batch on a GPU
        if "gender" in outputs:
            known = batch["gender"] >= 0
            self.gender_hits += ((outputs["gender"].argmax(1) == batch["gender"]) & known).sum()
            self.gender_n += known.sum()
        if "age" in outputs:
            known = ~torch.isnan(batch["age"])
            age = outputs["age"].float()
            if self.age_groups is not None:
                group = age.argmax(1)
                self.age_group_hits += ((group == self.age_groups.index(batch["age"])) & known).sum()
                age = self.age_groups.years(group)
            # the same sum where every age is known (CREMA-D's actors all have one); with unknown ones
            # the zeros in their place may round the float32 sum's last bit differently
            error = torch.where(known, age - batch["age"], 0).abs()
            self.age_error += error.sum()
            self.age_within5 += ((error <= 5) & known).sum()
            self.age_n += known.sum()
        if "au" in outputs:
            truth, pred = batch["au"], outputs["au"] > 0  # logit > 0: probability > 0.5
            known = ~torch.isnan(truth)
            present = known & (truth > 0.5)
            self.au_tp += (present & pred).sum(0)
            self.au_fp += (known & ~present & pred).sum(0)
            self.au_fn += (present & ~pred).sum(0)

    def compute(self) -> dict:
        out = {}
        if self.gender_n > 0:
            out["gender_acc"] = self.gender_hits / self.gender_n
        if self.age_n > 0:
            out["age_mae"] = self.age_error / self.age_n
            out["age_within5"] = self.age_within5 / self.age_n
            if self.age_groups is not None:
                out["age_group_acc"] = self.age_group_hits / self.age_n
        if len(self.au_tp) and (self.au_tp + self.au_fn).sum() > 0:
            out["au_f1"] = torch.tensor(au_f1(self.au_tp.cpu().numpy(), self.au_fp.cpu().numpy(),
                                              self.au_fn.cpu().numpy())[1])
        return out


def probability_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("p_")]


def branch_accuracies(predictions: pd.DataFrame, num_classes: int) -> dict:
    """A fused model's branches read alone (the ``pred_video`` / ``pred_audio`` columns): each one's
    accuracy and UAR over the labelled clips, by modality."""
    out = {}
    for modality in MODALITIES:
        if f"pred_{modality}" in predictions:
            s = scores(confusion_matrix(predictions["label"], predictions[f"pred_{modality}"], num_classes))
            out[modality] = dict(acc=s["acc"], uar=s["uar"])
    return out


def run_record(*, predictions: pd.DataFrame, class_names: Sequence[str], logged: dict,
               baselines: dict | None = None, **fields) -> dict:
    """The ``metrics.json`` of a fold: the test metrics the system logged, and the fields given.

    With other tasks' columns in ``predictions``, ``tasks`` holds their scores (:func:`task_scores`)
    and each one's ``baseline`` from ``baselines`` (what a model that ignores the input scores).

    The per-class recall and the confusion matrix come from ``predictions``; the report
    recomputes the logged scores from the same table (a test checks that they agree). A fused
    model's ``branches`` hold each branch's own accuracy and UAR inside it (:func:`branch_accuracies`).
    """
    tasks = task_scores(predictions)
    for task, baseline in (baselines or {}).items():  # a figure, or figures named baseline_*
        tasks[task].update(baseline if isinstance(baseline, dict) else dict(baseline=baseline))
    emotion = {}
    if class_names:
        s = prediction_scores(predictions, len(class_names))
        emotion = dict(per_class_recall=dict(zip(class_names, np.round(s["per_class_recall"], 6).tolist())),
                       confusion=s["confusion"])
        branches = branch_accuracies(predictions, len(class_names))
        if branches:
            emotion["branches"] = branches
    return dict(
        schema_version=SCHEMA_VERSION,
        **fields,
        **{k: float(v) for k, v in sorted(logged.items()) if k.startswith("test/")},
        **emotion,
        class_names=list(class_names),
        **({"tasks": tasks} if tasks else {}),
        **({"per_dataset": per_dataset_scores(predictions, class_names)} if "dataset" in predictions else {}),
    )


def per_dataset_scores(predictions: pd.DataFrame, class_names: Sequence[str]) -> dict:
    """Each dataset's test samples scored on their own (a mixed-dataset run): emotion where it has
    emotion labels, and each other task where it has that target."""
    out = {}
    for name, part in predictions.groupby("dataset", sort=False):
        scores = dict(n=len(part))
        if class_names and (part["label"] >= 0).any():
            s = prediction_scores(part, len(class_names))
            scores.update(acc=s["acc"], uar=s["uar"], f1=s["f1"], n_emotion=s["n"])
        tasks = {task: v for task, v in task_scores(part).items() if v.get("n")}
        out[str(name)] = dict(scores, **({"tasks": tasks} if tasks else {}))
    return out


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


def task_columns(out: dict, targets: dict, au_ids: list[int], age_groups=None) -> dict:
    """The other tasks' (truth, output) pairs for :func:`predictions_table`, in the test outputs' order."""
    rows, columns = out["index"], {}
    for task, output in (("gender", "p_male"), ("age", "age"), ("age", "age_group_probs"), ("au", "p_au")):
        if output in out:
            columns[task] = (targets[task][rows], out[output])
    return dict(columns, au_ids=au_ids, age_groups=age_groups) if columns else {}


def target_baselines(targets: dict, rows: dict, age_groups=None) -> dict:
    """What a model that ignores its input scores on the test clips: the training clips' most
    common gender; their mean age (its MAE, ``baseline``, and share within 5 years,
    ``baseline_within5``), and with age groups their most common group (``baseline_group_acc``)."""
    out = {}
    if "gender" in targets:
        train, test = (targets["gender"][rows[p]] for p in ("train", "test"))
        train, test = train[train >= 0], test[test >= 0]
        if len(train) and len(test):
            out["gender"] = float((test == np.bincount(train).argmax()).mean())
    if "age" in targets:
        train, test = (targets["age"][rows[p]] for p in ("train", "test"))
        train, test = train[~np.isnan(train)], test[~np.isnan(test)]
        if len(train) and len(test):
            errors = np.abs(test - train.mean())
            out["age"] = dict(baseline=float(errors.mean()), baseline_within5=float((errors <= 5).mean()))
            if age_groups is not None:
                train_groups, test_groups = (age_groups.index(torch.as_tensor(a)).numpy() for a in (train, test))
                out["age"]["baseline_group_acc"] = float((test_groups == np.bincount(train_groups).argmax()).mean())
    return out


def print_record_summary(m: dict, run_dir: Path) -> None:
    """A fold's record in a few lines: what was tested, its scores, how its checkpoint was chosen."""
    print(f"\n{m['experiment']}  {m['protocol']} fold {m['fold']}  config {m['config_hash']}  test actors "
          f"{m['actors']['test']}  ({m['n_clips']['test']} clips, {m['label']})")
    print("  " + "  ".join(f"{k} {m[k]:.4f}" for k in ("test/acc", "test/uar", "test/f1", "test/loss") if k in m))
    tasks = m.get("tasks", {})
    if tasks:
        age = tasks.get("age", {})
        parts = [f"gender acc {tasks['gender']['acc']:.4f}" if "gender" in tasks else "",
                 f"age MAE {age['mae']:.2f} years, within 5 years {age['within5']:.4f}" if age else "",
                 f"age group acc {age['group_acc']:.4f}" if "group_acc" in age else "",
                 f"AU F1 {tasks['au']['f1_macro']:.4f}" if "au" in tasks else ""]
        print("  " + "  ".join(p for p in parts if p))
    print(f"  checkpoint: {m['selected_by']}; run folder: {run_dir}\n")
