"""The experiments a report reads: fold folders grouped by experiment, protocol and config, and what
each experiment's folds add up to (pooled scores, the other tasks, the twin's Bayes ceiling)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fer_mm.data.twins.attributes import UTKFACE_TWIN_KIND
from fer_mm.data.twins.displays import bayes_ceiling, bayes_rule, draw_displays, resolve_difficulty
from fer_mm.data.twins.imdb_wiki import IMDB_WIKI_TWIN_KIND
from fer_mm.data.twins.spec import TWIN_KIND, TWIN_VERSION
from fer_mm.evaluation import branch_accuracies, prediction_scores, read_run_record, task_scores
from fer_mm.runs import differing_keys, flatten

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    """The folds of one experiment, protocol and config (one config hash)."""

    name: str
    protocol: str
    config_hash: str
    folds: dict[int, dict] = field(default_factory=dict)  # fold -> metrics.json
    predictions: dict[int, pd.DataFrame] = field(default_factory=dict)
    label: str = ""  # how the report names it: set by :func:`load_runs`
    twin: dict | None = None  # the twin's seed and display weights; None on real data or where unknown

    @property
    def key(self) -> str:
        return self.label or self.name

    @property
    def slug(self) -> str:
        """For file names: unique among the loaded experiments."""
        several = "[" in self.key
        return f"{self.name}_{self.protocol}" + (f"_{self.config_hash}" if several else "")

    @property
    def config(self) -> dict:
        return next(iter(self.folds.values()))["config"]

    @property
    def modalities(self) -> list[str]:
        return next(iter(self.folds.values()))["modalities"]

    def expected_folds(self) -> list[int]:
        return list(range(int(next(iter(self.folds.values()))["folds_total"])))


def twin_generation(record: dict) -> dict | None:
    """The twin's ``{seed, difficulty}`` a fold ran on (from its record's ``twin``), or None on real
    data and on twins of another generator version, whose ceilings this code cannot compute."""
    spec = record.get("twin")
    if not spec or spec.get("version") != TWIN_VERSION or spec.get("kind", TWIN_KIND) != TWIN_KIND:
        return None
    return dict(seed=spec["seed"], difficulty=resolve_difficulty(spec["difficulty"]))


def load_runs(run_dirs: list[Path]) -> dict[str, Experiment]:
    """Every finished fold under ``run_dirs``, grouped by experiment, protocol and config.

    An experiment run with several configs is named with the keys that differ, e.g.
    ``ar5_fusion [model.optimizer.lr=0.05]``.
    """
    experiments: dict[tuple, Experiment] = {}
    for run_dir in run_dirs:
        found = sorted(Path(run_dir).rglob("metrics.json"))
        if not found:
            log.warning("no metrics.json under %s", run_dir)
        for path in found:
            if not path.with_name("predictions.csv").is_file():
                log.warning("skipped %s: predictions.csv is missing", path.parent)
                continue
            m, predictions = read_run_record(path.parent)
            key = (m["experiment"], m["protocol"], m["config_hash"])
            exp = experiments.setdefault(key, Experiment(*key))
            if m["fold"] in exp.folds:
                log.warning("fold %s of %s found twice; keeping %s", m["fold"], key, exp.folds[m["fold"]]["_dir"])
                continue
            m["_dir"] = str(path.parent)
            exp.folds[m["fold"]] = m
            exp.predictions[m["fold"]] = predictions
    by_name: dict[str, list[Experiment]] = {}
    for exp in experiments.values():
        by_name.setdefault(exp.name, []).append(exp)
        twins = {json.dumps(twin_generation(m), sort_keys=True) for m in exp.folds.values()}
        if len(twins) > 1:  # one ceiling needs one generation: say so rather than mix them
            log.warning("%s %s: folds ran on different twins %s; no ceiling", exp.name, exp.protocol, sorted(twins))
        else:
            exp.twin = json.loads(twins.pop())
    for name, group in by_name.items():
        for exp in group:
            exp.label = name if exp.protocol == "loso" else f"{name} ({exp.protocol})"
        same_protocol: dict[str, list[Experiment]] = {}
        for exp in group:
            same_protocol.setdefault(exp.protocol, []).append(exp)
        for variants in same_protocol.values():
            if len(variants) > 1:
                keys = differing_keys([e.config for e in variants])
                for exp in variants:
                    flat = flatten(exp.config)
                    exp.label += " [" + (", ".join(f"{k}={flat.get(k, '-')}" for k in keys)
                                         or f"config {exp.config_hash}") + "]"
    return {e.key: e for e in sorted(experiments.values(), key=lambda e: e.key)}


# ------------------------------------------------------------------------------ summaries


def summarise(exp: Experiment, folds: list[int] | None = None) -> dict:
    folds = sorted(exp.folds) if folds is None else folds
    n = len(exp.folds[folds[0]]["class_names"])
    pooled = pd.concat([exp.predictions[f] for f in folds], ignore_index=True)
    per_fold = {f: prediction_scores(exp.predictions[f], n)["acc"] for f in folds}
    accs = np.array(list(per_fold.values()))
    expected = exp.expected_folds()
    first = exp.folds[folds[0]]
    acc = prediction_scores(pooled, n)
    ceiling = twin_ceiling(pooled, exp.twin, exp.modalities) if exp.twin else {}
    return dict(
        experiment=exp.key, name=exp.name, protocol=exp.protocol, config_hash=exp.config_hash,
        modalities=first["modalities"], label=first["label"], dataset=first["dataset"],
        class_names=first["class_names"], subject_independent=_independence([exp.folds[f] for f in folds]),
        tasks=_task_summary(exp, folds),
        selected_on_validation=all(exp.folds[f]["selected_by"].endswith("on validation actors") for f in folds),
        folds_found=len(folds), folds_expected=len(expected), missing_folds=sorted(set(expected) - set(exp.folds)),
        pooled=acc, twin=exp.twin,
        ceiling=ceiling.get("expected"), ceiling_se=ceiling.get("se"), ceiling_on_these_clips=ceiling.get("realised"),
        gap_to_ceiling=ceiling["expected"] - acc["acc"] if ceiling else None,
        fold_acc_mean=float(accs.mean()), fold_acc_std=float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
        per_fold_acc={int(k): v for k, v in per_fold.items()},
        branches=_branch_summary(exp, folds, n),
    )


def _branch_summary(exp: Experiment, folds: list[int], num_classes: int) -> dict:
    """A fused model's branches read alone (the ``pred_video`` / ``pred_audio`` columns), pooled over
    the folds that recorded them, each beside its own modality's ceiling on the twin."""
    kept = [f for f in folds if any(c in exp.predictions[f] for c in ("pred_video", "pred_audio"))]
    if not kept:
        return {}
    pooled = pd.concat([exp.predictions[f] for f in kept], ignore_index=True)
    fused_acc = prediction_scores(pooled, num_classes)["acc"]
    out = {}
    for modality, scores in branch_accuracies(pooled, num_classes).items():
        ceiling = twin_ceiling(pooled, exp.twin, [modality]) if exp.twin else {}
        out[modality] = dict(scores, folds=len(kept), ceiling=ceiling.get("expected"), fused_acc=fused_acc)
    return out


def _independence(records: list[dict]) -> bool | None:
    """True where every fold kept its subjects apart, False where one did not, None where unknown."""
    values = [r.get("speaker_independent") for r in records]
    return False if False in values else None if None in values else True


def _task_summary(exp: Experiment, folds: list[int]) -> dict:
    """The other tasks' scores pooled over the folds and per fold, each with its input-blind baseline
    (pooled: the folds' baselines weighted by their clips)."""
    per_fold = {f: dict(exp.folds[f].get("tasks", {})) for f in folds}
    if not any(per_fold.values()):
        return {}
    n = len(exp.folds[folds[0]]["class_names"])
    table = pd.concat([exp.predictions[f] for f in folds], ignore_index=True)
    pooled = task_scores(table)
    for task, scores in pooled.items():
        for key in ("baseline", "baseline_within5", "baseline_group_acc"):
            weighted = [(t[task][key], t[task]["n"]) for t in per_fold.values() if key in t.get(task, {})]
            if weighted and len(weighted) == len(folds):
                scores[key] = float(sum(b * n for b, n in weighted) / max(sum(n for _, n in weighted), 1))
    pooled.update(attribute_ceilings(table, exp.folds[folds[0]]))
    # the emotion scores beside them, so that one table shows what the heads cost or bring
    pooled["emotion"] = {k: v for k, v in prediction_scores(table, n).items() if k in ("acc", "uar", "f1")}
    for f, t in per_fold.items():
        t["emotion"] = {k: v for k, v in prediction_scores(exp.predictions[f], n).items() if k in ("acc", "uar", "f1")}
    return dict(pooled=pooled, per_fold={int(f): t for f, t in per_fold.items()})


ATTRIBUTE_TWINS = (UTKFACE_TWIN_KIND, IMDB_WIKI_TWIN_KIND)
SET_FOLDERS = {"imdb_crop/": "imdb/", "wiki_crop/": "wiki/"}  # displays.csv's folders -> the cache's set names


def attribute_ceilings(pooled: pd.DataFrame, record: dict) -> dict:
    """On a UTKFace or IMDB-WIKI twin (alone, or mixed with other data): what reading each tested face's
    displays exactly scores, ``ceilings: {gender: accuracy, age: MAE}``, over the test samples that have
    each target (from the twin's ``displays.csv``); nothing on real data."""
    twins = [(record.get("twin"), record.get("data_root"), "")] + [
        (d.get("twin"), d.get("root"), f"{name}/") for name, d in (record.get("datasets") or {}).items()]
    shown = []
    for twin, root, prefix in twins:
        if not twin or twin.get("kind") not in ATTRIBUTE_TWINS or not (Path(root) / twin["displays"]).is_file():
            continue
        displays = pd.read_csv(Path(root) / twin["displays"])
        names = displays["file"]
        for folder, name in SET_FOLDERS.items():
            names = names.str.replace(f"^{folder}", name, regex=True)
        shown.append(pd.DataFrame(dict(name=prefix + names, displayed_gender=displays["displayed_gender"],
                                       displayed_age=displays["displayed_age"])))
    if not shown:
        return {}
    tested = pooled.merge(pd.concat(shown), on="name", how="inner")
    out = {}
    if "pred_gender" in tested:
        known = tested[(tested["gender"] >= 0) & tested["displayed_gender"].notna()]
        out["gender"] = float(((known["displayed_gender"] == "male").astype(int) == known["gender"]).mean())
    if "pred_age" in tested:
        known = tested[tested["age"].notna() & tested["displayed_age"].notna()]
        out["age"] = float((known["displayed_age"] - known["age"]).abs().mean())
    return {"ceilings": out} if out else {}


def twin_ceiling(pooled: pd.DataFrame, twin: dict, modalities: list[str]) -> dict:
    """How well the Bayes rule does on the twin's clips in ``pooled`` from ``modalities``' displays.

    ``expected``: its expected accuracy on clips of this design (the ceiling); ``se``: how far one
    sample of this size scatters around it; ``realised``: its accuracy on these very clips, whose
    displays the twin's seed fixes.
    """
    names = pooled["name"].tolist()
    expected = bayes_ceiling(names, twin["difficulty"], modalities)
    guess = bayes_rule(names, twin["difficulty"], modalities)
    hits = [guess(n, draw_displays(n, twin["seed"], twin["difficulty"])) == label
            for n, label in zip(names, pooled["label"])]
    return dict(expected=expected, se=math.sqrt(expected * (1 - expected) / len(names)), realised=float(np.mean(hits)))
