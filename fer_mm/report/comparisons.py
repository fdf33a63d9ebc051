"""Experiments set against each other (paired tests over test actors, Holm-corrected), against CREMA-D's
human raters, and the environments their folds ran under."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from fer_mm.data.sources.crema_d import parse_name
from fer_mm.environment import software
from fer_mm.report.experiments import Experiment, summarise
from fer_mm.runs import differing_keys
from fer_mm.vocab import EMOTIONS

VOTE_COLUMNS = ("A", "D", "F", "H", "N", "S")  # tabulatedVotes.csv, in EMOTIONS order
VOTE_MODALITIES = {"1": "voice", "2": "face", "3": "audio-visual"}


def _actor_accuracy(exp: Experiment, folds: list[int]) -> pd.Series:
    """Accuracy per (fold, test actor): the unit of the paired test."""
    labelled = {f: exp.predictions[f][exp.predictions[f]["label"] >= 0] for f in folds}  # -1: no emotion label
    parts = {f: (p["pred"] == p["label"]).groupby(p["actor"]).mean() for f, p in labelled.items()}
    return pd.concat(parts, names=["fold", "actor"])


def compare(a: Experiment, b: Experiment) -> dict | None:
    """b minus a, on the folds both have: pooled differences, and a paired test over test actors.

    The paired unit is a test actor of a fold (its accuracy under a and under b): with 5 folds a
    signed-rank test over folds could never reach p < 0.0625, over 40 actors it can.
    """
    common = sorted(set(a.folds) & set(b.folds))
    if not common:
        return None
    sa, sb = summarise(a, common), summarise(b, common)
    fold_diffs = np.array([sb["per_fold_acc"][f] - sa["per_fold_acc"][f] for f in common])
    actor_a, actor_b = _actor_accuracy(a, common), _actor_accuracy(b, common)
    if not actor_a.index.equals(actor_b.index):
        raise ValueError(f"{a.key} and {b.key} tested other actors in the same folds; are they the same protocol and data?")
    diffs = (actor_b - actor_a).to_numpy()
    if len(diffs) >= 2 and np.any(diffs != 0):
        test = stats.wilcoxon(diffs, zero_method="wilcox", alternative="two-sided")
        p_value, statistic = float(test.pvalue), float(test.statistic)
    else:
        p_value, statistic = None, None
    return dict(
        a=a.key, b=b.key, folds=len(common), actors=len(diffs),
        pooled_acc_diff=sb["pooled"]["acc"] - sa["pooled"]["acc"],
        pooled_uar_diff=sb["pooled"]["uar"] - sa["pooled"]["uar"],
        fold_diff_mean=float(fold_diffs.mean()),
        fold_diff_std=float(fold_diffs.std(ddof=1)) if len(fold_diffs) > 1 else 0.0,
        actors_b_better=int((diffs > 0).sum()), actors_a_better=int((diffs < 0).sum()), actors_tied=int((diffs == 0).sum()),
        wilcoxon_statistic=statistic, wilcoxon_p=p_value,
        environment_differs=environment_differences([x.folds[f].get("environment") for x in (a, b) for f in common]),
    )


def environment_differences(environments: list[dict | None]) -> list[str]:
    """The entries (``packages.av``, ``lock``, ...) whose values differ between ``environments``; the commit
    is left out (other code, same software), and so are records without one (made by an older fer-mm)."""
    known = [software(e) for e in environments if e]
    return differing_keys(known) if len(known) > 1 else []


def environment_summary(experiments: dict[str, Experiment]) -> dict:
    """The environments the folds ran under (each with the folds that used it), the result-shaping
    entries that differ between them, and the folds that recorded none (made before fer-mm recorded it)."""
    groups: dict[str, dict] = {}
    unrecorded = []
    for exp in experiments.values():
        for fold, m in sorted(exp.folds.items()):
            env = m.get("environment")
            if not env:
                unrecorded.append(f"{exp.key} fold {fold}")
                continue
            group = groups.setdefault(json.dumps(env, sort_keys=True), dict(environment=env, folds=[]))
            group["folds"].append(f"{exp.key} fold {fold}")
    envs = list(groups.values())
    return dict(environments=envs, differing=environment_differences([g["environment"] for g in envs]),
                unrecorded=unrecorded)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values over the given ones (None: no test, left out of the family).

    Step-down: the k-th smallest of m p-values is multiplied by m - k + 1 (k from 1); the
    adjusted values are made monotone in that order and capped at 1.
    """
    tested = [i for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(sorted(tested, key=lambda i: p_values[i])):
        running = max(running, min(1.0, (len(tested) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def default_pairs(experiments: list[Experiment]) -> list[tuple[str, str]]:
    """Every pair with the same protocol on the same data as (A, B); where one's inputs strictly contain
    the other's, the richer one is B, so each difference reads "richer minus poorer" (e.g. fused minus audio)."""
    pairs = []
    for a, b in itertools.combinations(experiments, 2):
        same_data = all(next(iter(a.folds.values()))[k] == next(iter(b.folds.values()))[k]
                        for k in ("dataset", "class_names"))
        emotion = bool(next(iter(a.folds.values()))["class_names"])  # the pairs compare emotion accuracy
        if a.protocol == b.protocol and same_data and emotion:
            pairs.append((b.key, a.key) if set(a.modalities) > set(b.modalities) else (a.key, b.key))
    return pairs


def human_baseline(votes_path: Path, clips: set[str] | None = None) -> dict:
    """Share of individual ratings naming the acted emotion, per rating modality.

    ``tabulatedVotes.csv`` holds one row per clip and modality (ids starting 1: voice only,
    2: face only, 3: audio-visual) with each emotion's vote count; the share is the sum over clips
    of the votes for the acted emotion divided by the sum of all votes.
    """
    votes = pd.read_csv(votes_path)
    missing = {"fileName", *VOTE_COLUMNS} - set(votes.columns)
    if missing:
        raise ValueError(f"{votes_path} is not CREMA-D's tabulatedVotes.csv: no column(s) {sorted(missing)}")
    votes["modality"] = votes.iloc[:, 0].astype(str).str[0].map(VOTE_MODALITIES)
    if clips is not None:
        votes = votes[votes["fileName"].isin(clips)]
    acted = votes["fileName"].map(lambda n: EMOTIONS.index(parse_name(n).emotion)).to_numpy()
    counts = votes[list(VOTE_COLUMNS)].to_numpy()
    votes["hit"] = counts[np.arange(len(votes)), acted]
    votes["total"] = counts.sum(1)
    out = {}
    for modality in VOTE_MODALITIES.values():
        g = votes[votes["modality"] == modality]
        out[modality] = dict(share=float(g["hit"].sum() / max(g["total"].sum(), 1)), clips=int(g["fileName"].nunique()),
                             ratings=int(g["total"].sum()))
    return out
