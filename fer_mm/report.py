"""``python -m fer_mm.report RUN_DIR [RUN_DIR ...]``: folds -> tables, comparisons, plots.

Reads the fold folders under each RUN_DIR (``metrics.json`` + ``predictions.csv``), groups them by
experiment and protocol, and writes ``results.md``, ``results.json``, a confusion matrix per
experiment and a per-fold accuracy plot. Every number is recomputed from the per-clip
predictions; the report never re-runs a model.

On the synthetic twin each experiment is also set against its Bayes ceiling: the best accuracy a
model can expect on its test clips from the modalities it sees, known from the twin's generation
parameters (``fer_mm.data.twins.displays``), with its sampling error and the Bayes rule's accuracy on
those very clips. Comparisons read "B minus A", with the richer input set as B where one contains
the other; their paired test runs over test actors, Holm-corrected across the report.

Every fold records the environment it ran under (package versions, the lock's hash, the commit);
the report lists them and warns where runs it sets side by side were made under different ones.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from fer_mm.data.sources.crema_d import parse_name
from fer_mm.data.twins.displays import bayes_ceiling, bayes_rule, draw_displays, resolve_difficulty
from fer_mm.data.twins.spec import TWIN_KIND, TWIN_VERSION
from fer_mm.environment import RESULT_PACKAGES, software
from fer_mm.evaluation import prediction_scores, read_run_record, task_scores
from fer_mm.runs import differing_keys, flatten
from fer_mm.vocab import DATASET_TITLES, EMOTION_NAMES, EMOTIONS

log = logging.getLogger("fer_mm.report")
VOTE_COLUMNS = ("A", "D", "F", "H", "N", "S")  # tabulatedVotes.csv, in EMOTIONS order
VOTE_MODALITIES = {"1": "voice", "2": "face", "3": "audio-visual"}


# ------------------------------------------------------------------------------ loading


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
    )


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
        weighted = [(t[task]["baseline"], t[task]["n"]) for t in per_fold.values() if "baseline" in t.get(task, {})]
        if weighted and len(weighted) == len(folds):
            scores["baseline"] = float(sum(b * n for b, n in weighted) / max(sum(n for _, n in weighted), 1))
    # the emotion scores beside them, so that one table shows what the heads cost or bring
    pooled["emotion"] = {k: v for k, v in prediction_scores(table, n).items() if k in ("acc", "uar", "f1")}
    for f, t in per_fold.items():
        t["emotion"] = {k: v for k, v in prediction_scores(exp.predictions[f], n).items() if k in ("acc", "uar", "f1")}
    return dict(pooled=pooled, per_fold={int(f): t for f, t in per_fold.items()})


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


def _actor_accuracy(exp: Experiment, folds: list[int]) -> pd.Series:
    """Accuracy per (fold, test actor): the unit of the paired test."""
    parts = {f: (exp.predictions[f]["pred"] == exp.predictions[f]["label"]).groupby(exp.predictions[f]["actor"]).mean()
             for f in folds}
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
        if a.protocol == b.protocol and same_data:
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


# ------------------------------------------------------------------------------ output


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _independence_text(summaries: list[dict]) -> str:
    groups = {v: sorted(s["experiment"] for s in summaries if s["subject_independent"] is v) for v in (True, False, None)}
    if not groups[False] and not groups[None]:
        return "All protocols are speaker-independent; "
    text = []
    if groups[True]:
        text.append(f"speaker/subject-independent: {', '.join(groups[True])}")
    if groups[None]:
        text.append(f"subject independence unknown (the data has no subject ids): {', '.join(groups[None])}")
    if groups[False]:
        text.append(f"NOT subject-independent (each image its own subject): {', '.join(groups[False])}")
    return "; ".join(text) + ". In all, "


def _selection(summaries: list[dict]) -> str:
    other = sorted({s["experiment"] for s in summaries if not s["selected_on_validation"]})
    if not other:
        return "checkpoints were chosen on validation actors only."
    return f"checkpoints were chosen on validation actors, except in {', '.join(other)} (the last epoch's model)."


def render_markdown(summaries: list[dict], comparisons: list[dict], humans: dict | None, images: dict,
                    environment: dict | None = None) -> str:
    lines = ["# fer-mm results", ""]
    if environment and environment["differing"]:
        lines += [f"**Warning: these runs were made under different environments** "
                  f"(differing: {', '.join(environment['differing'])}; see [Environment](#environment)): a "
                  f"difference between figures may come from the software alone.", ""]
    datasets = {s["dataset"] for s in summaries}
    lines += [f"Labels: {'; '.join(dict.fromkeys(s['label'] for s in summaries))}. Data: "
              + (f"{DATASET_TITLES[datasets.pop()]}." if len(datasets) == 1 else
                 "mixed: " + ", ".join(DATASET_TITLES[d] for d in sorted(datasets)) + "."),
              _independence_text(summaries) + _selection(summaries), "",
              "## Experiments", "",
              "| experiment | protocol | config | inputs | folds | pooled acc % | ceiling % (± se) | gap (pp) "
              "| Bayes rule on these clips % | fold acc % (mean ± sd) | UAR % | macro F1 % |",
              "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in summaries:
        folds = f"{s['folds_found']}/{s['folds_expected']}"
        ceiling = "-" if s["ceiling"] is None else f"{_pct(s['ceiling'])} ± {_pct(s['ceiling_se'])}"
        lines.append(f"| {s['experiment']} | {s['protocol']} | `{s['config_hash']}` | {'+'.join(s['modalities'])} | "
                     f"{folds} | {_pct(s['pooled']['acc'])} | {ceiling} | {_pct(s['gap_to_ceiling'])} | "
                     f"{_pct(s['ceiling_on_these_clips'])} | {_pct(s['fold_acc_mean'])} ± {_pct(s['fold_acc_std'])} | "
                     f"{_pct(s['pooled']['uar'])} | {_pct(s['pooled']['f1'])} |")
    if any(s["ceiling"] is not None for s in summaries):
        lines += ["", "Ceiling: the best accuracy a model can expect on clips like these test clips from what its "
                  "inputs display (the Bayes-optimal guess of the acted emotion from the displayed ones, knowing each "
                  "clip's actor and sentence), computed exactly from the twin's generation parameters; se: how far "
                  "one sample of this many clips scatters around it; gap = ceiling minus pooled accuracy. Bayes rule "
                  "on these clips: that guess applied to the test clips' actual displays."]
    missing = [s for s in summaries if s["missing_folds"]]
    for s in missing:
        lines.append(f"\nMissing folds of {s['experiment']} ({s['protocol']}): {s['missing_folds']}")
    lines += ["", "## Per-class recall (pooled, %)"]
    for names in dict.fromkeys(tuple(s["class_names"]) for s in summaries):  # one table per label set
        lines += ["", "| experiment | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
        for s in summaries:
            if tuple(s["class_names"]) == names:
                lines.append(f"| {s['experiment']} | " + " | ".join(_pct(r) for r in s["pooled"]["per_class_recall"])
                             + " |")
    lines += _task_lines(summaries)
    if comparisons:
        lines += ["", "## Comparisons (B minus A, on the folds both have; richer minus poorer: B is the one whose inputs "
                  "contain the other's, unless --compare set the order)", "",
                  "| A | B | folds | test actors | Δ pooled acc (pp) | Δ UAR (pp) | Δ per fold (pp, mean ± sd) "
                  "| actors B better / worse / tied | Wilcoxon p | Holm p |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
        for c in comparisons:
            p, p_holm = ("-" if x is None else f"{x:.3g}" for x in (c["wilcoxon_p"], c["wilcoxon_p_holm"]))
            lines.append(f"| {c['a']} | {c['b']} | {c['folds']} | {c['actors']} | {100 * c['pooled_acc_diff']:+.2f} | "
                         f"{100 * c['pooled_uar_diff']:+.2f} | {100 * c['fold_diff_mean']:+.2f} ± "
                         f"{100 * c['fold_diff_std']:.2f} | {c['actors_b_better']} / {c['actors_a_better']} / "
                         f"{c['actors_tied']} | {p} | {p_holm} |")
        lines += ["", "Wilcoxon signed-rank test (two-sided) on the paired accuracy differences per test actor of each "
                  "fold; tied actors dropped. Holm p: Holm-Bonferroni corrected over all the comparisons above that "
                  "have a p-value."]
    if humans:
        lines += ["", "## CREMA-D human raters", "",
                  "Share of individual ratings that name the acted emotion (`tabulatedVotes.csv`: ids starting 1 = voice "
                  "only, 2 = face only, 3 = audio-visual). The CREMA-D paper reports 40.9 / 58.2 / 63.6 % over all clips.",
                  "", "| clips | voice % | face % | audio-visual % | clips rated |", "| --- | ---: | ---: | ---: | ---: |"]
        for scope, h in humans.items():
            lines.append(f"| {scope} | {_pct(h['voice']['share'])} | {_pct(h['face']['share'])} | "
                         f"{_pct(h['audio-visual']['share'])} | {h['voice']['clips']} |")
    if environment:
        lines += _environment_lines(environment)
    if images:
        lines += ["", "## Figures", ""] + [f"![{title}]({name})" for title, name in images.items()]
    return "\n".join(lines) + "\n"


def _environment_lines(environment: dict) -> list[str]:
    envs = environment["environments"]
    lines = ["", "## Environment", ""]
    if not envs:
        return lines + [f"No fold recorded its environment (all {len(environment['unrecorded'])} were made by an "
                        f"older fer-mm)."]
    if len(envs) == 1 and not environment["unrecorded"]:
        lines.append("All folds ran under one environment:")
    elif not environment["differing"]:
        lines.append("The folds that recorded their environment ran under the same software (commits may differ):")
    else:
        lines.append(f"The folds ran under {len(envs)} environments, differing in **{', '.join(environment['differing'])}**:")
    lines += ["", "| environment | folds | python | platform | lock | commit | torch's CUDA | "
              + " | ".join(RESULT_PACKAGES) + " |", "| --- | --- | --- | --- | --- | --- | --- |" + " --- |" * len(RESULT_PACKAGES)]
    for i, group in enumerate(envs, 1):
        env, folds = group["environment"], group["folds"]
        where = folds[0] if len(folds) == 1 else f"{len(folds)} ({folds[0]}, ...)"
        packages = env.get("packages", {})
        lines.append(f"| {i} | {where} | {env.get('python', '-')} | {env.get('platform', '-')} | "
                     f"`{env.get('lock') or '-'}` | `{(env.get('commit') or '-')[:12]}"
                     f"{'-dirty' if (env.get('commit') or '').endswith('-dirty') else ''}` | {env.get('torch_cuda') or '-'} | "
                     + " | ".join(packages.get(p) or "-" for p in RESULT_PACKAGES) + " |")
    if environment["unrecorded"]:
        lines += ["", f"{len(environment['unrecorded'])} folds recorded no environment (made by an older fer-mm), "
                      f"e.g. {environment['unrecorded'][0]}."]
    return lines


def _task_lines(summaries: list[dict]) -> list[str]:
    """The other tasks' tables: gender and age pooled and per fold, against their input-blind baselines,
    and the F1 of each action unit."""
    with_tasks = [s for s in summaries if s["tasks"]]
    if not with_tasks:
        return []
    lines = ["", "## Other tasks", "",
             "Gender and age are constant per subject; they are read from unseen subjects only because no test "
             "subject is in training. Baseline: what a model that ignores its input scores (the training clips' "
             "most common gender; their mean age).", "",
             "| experiment | fold | emotion acc % | emotion UAR % | gender acc % | baseline % | age MAE (years) "
             "| baseline | AU F1 % (mean over AUs) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def cells(t: dict) -> str:
        e, g, a, u = t["emotion"], t.get("gender", {}), t.get("age", {}), t.get("au", {})
        mae = lambda x: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"  # noqa: E731
        return (f"{_pct(e['acc'])} | {_pct(e['uar'])} | {_pct(g.get('acc'))} | {_pct(g.get('baseline'))} | "
                f"{mae(a.get('mae'))} | {mae(a.get('baseline'))} | {_pct(u.get('f1_macro'))} |")

    for s in with_tasks:
        lines.append(f"| {s['experiment']} | pooled | " + cells(s["tasks"]["pooled"]))
        for fold, t in sorted(s["tasks"]["per_fold"].items()):
            lines.append(f"| | {fold} | " + cells(t))
    for s in with_tasks:
        au = s["tasks"]["pooled"].get("au")
        if au:
            names = list(au["f1"])
            lines += ["", f"Action units of {s['experiment']}, pooled: F1 % (test images showing the AU)", "",
                      "| " + " | ".join(names) + " |", "|" + " ---: |" * len(names),
                      "| " + " | ".join(f"{_pct(au['f1'][n]) if au['support'][n] else '-'} ({au['support'][n]})"
                                        for n in names) + " |"]
    return lines


def plot_confusion(cm: np.ndarray, title: str, path: Path, class_names=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i, j in itertools.product(range(len(cm)), repeat=2):
        ax.text(j, i, f"{100 * rates[i, j]:.0f}\n({cm[i, j]})", ha="center", va="center", fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black")
    names = list(class_names) if class_names is not None else list(EMOTION_NAMES)
    ax.set_xticks(range(len(cm)), names, rotation=45)
    ax.set_yticks(range(len(cm)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_fold_accuracy(summaries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / max(len(summaries), 1)
    for k, s in enumerate(summaries):
        folds = sorted(s["per_fold_acc"])
        ax.bar(np.array(folds) + (k - (len(summaries) - 1) / 2) * width, [100 * s["per_fold_acc"][f] for f in folds],
               width, label=f"{s['experiment']} ({_pct(s['pooled']['acc'])}% pooled)")
    folds = sorted({f for s in summaries for f in s["per_fold_acc"]})
    ax.set_xticks(folds)
    ax.set_xlabel("fold")
    ax.set_ylabel("test accuracy %")
    ax.set_ylim(0, 100)
    _chance(ax, summaries)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _chance(ax, summaries: list[dict]) -> None:
    """A chance line where all experiments share one number of classes."""
    sizes = {len(s["class_names"]) for s in summaries}
    if len(sizes) == 1:
        ax.axhline(100 / sizes.pop(), color="grey", lw=0.8, ls="--", label="chance")


def plot_ceilings(summaries: list[dict], path: Path) -> None:
    """Pooled accuracy per experiment as bars, each with its Bayes ceiling as a line across it, and chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(summaries) + 1.5), 4.0))
    x = np.arange(len(summaries))
    bars = ax.bar(x, [100 * s["pooled"]["acc"] for s in summaries], 0.6, color="tab:blue", label="pooled accuracy")
    ax.bar_label(bars, fmt="%.1f", label_type="center", color="white", fontsize=8)
    label = "Bayes ceiling"
    for k, s in enumerate(summaries):
        if s["ceiling"] is None:
            continue
        ax.hlines(100 * s["ceiling"], k - 0.38, k + 0.38, color="black", lw=2.2, label=label)
        label = None  # one legend entry
        ax.annotate(f"gap {100 * s['gap_to_ceiling']:.1f}", (k, 100 * s["ceiling"]), xytext=(0, 3),
                    textcoords="offset points", ha="center", fontsize=7)
    _chance(ax, summaries)
    ax.set_xticks(x, [f"{s['experiment']}\n({'+'.join(s['modalities'])})" for s in summaries], fontsize=7)
    ax.set_ylabel("test accuracy %")
    ax.set_ylim(0, 105)
    ax.set_title("modalities against their ceilings", fontsize=9)
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.06), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def find_votes(experiments: dict[str, Experiment]) -> Path | None:
    for exp in experiments.values():
        for m in exp.folds.values():
            path = Path(m.get("data_root", "")) / "processedResults" / "tabulatedVotes.csv"
            if m.get("data_root") and path.is_file():
                return path
    return None


def report(run_dirs: list[Path], out_dir: Path, votes: Path | None = None,
           pairs: list[tuple[str, str]] | None = None, use_wandb: bool | None = None) -> dict:
    experiments = load_runs(run_dirs)
    if not experiments:
        raise SystemExit(f"no finished folds (metrics.json + predictions.csv) under {', '.join(map(str, run_dirs))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = [summarise(e) for e in experiments.values()]
    by_key = {e.key: e for e in experiments.values()}
    if pairs is None:
        pairs = default_pairs(list(experiments.values()))
    comparisons = []
    for a, b in pairs:
        unknown = {a, b} - set(by_key)
        if unknown:
            raise SystemExit(f"--compare names unknown experiment(s) {sorted(unknown)}; found {sorted(by_key)}")
        c = compare(by_key[a], by_key[b])
        if c:
            comparisons.append(c)
    for c, p in zip(comparisons, holm([c["wilcoxon_p"] for c in comparisons])):
        c["wilcoxon_p_holm"] = p
    environment = environment_summary(experiments)
    if environment["differing"]:
        log.warning("these runs were made under different environments (%s differ): a figure may differ for that "
                    "reason alone (results.md, Environment)", ", ".join(environment["differing"]))
    for c in comparisons:
        if c["environment_differs"]:
            log.warning("%s against %s: made under different environments (%s differ)", c["b"], c["a"],
                        ", ".join(c["environment_differs"]))
    votes = votes or find_votes(experiments)
    humans = None
    if votes:
        tested = set().union(*(set(p["name"]) for e in experiments.values() for p in e.predictions.values()))
        humans = {"all clips of the release": human_baseline(votes)}
        matched = human_baseline(votes, tested)
        if matched["voice"]["clips"]:
            humans["the test clips above"] = matched
    images = {}
    for s, exp in zip(summaries, experiments.values()):
        name = f"confusion_{exp.slug}.png"
        plot_confusion(np.array(s["pooled"]["confusion"]), f"{exp.key}: pooled over {s['folds_found']} folds",
                       out_dir / name, s["class_names"])
        images[f"confusion matrix, {exp.key}"] = name
    plot_fold_accuracy(summaries, out_dir / "per_fold_accuracy.png")
    images["per-fold test accuracy"] = "per_fold_accuracy.png"
    if any(s["ceiling"] is not None for s in summaries):
        plot_ceilings(summaries, out_dir / "ceilings.png")
        images["modalities against their ceilings"] = "ceilings.png"
    results = dict(experiments=summaries, comparisons=comparisons, human_baseline=humans,
                   votes_file=str(votes) if votes else None, environment=environment)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = render_markdown(summaries, comparisons, humans, images, environment)
    (out_dir / "results.md").write_text(markdown)
    if use_wandb is None:
        use_wandb = any(_logged_to_wandb(m) for exp in experiments.values() for m in exp.folds.values())
    if use_wandb:
        _log_wandb(summaries, comparisons, out_dir, images)
    return results


def _logged_to_wandb(record: dict) -> bool:
    import yaml

    path = Path(record["_dir"]) / "config.yaml"
    return path.is_file() and "wandb" in (yaml.safe_load(path.read_text()).get("logger") or {})


def _log_wandb(summaries: list[dict], comparisons: list[dict], out_dir: Path, images: dict) -> None:
    import wandb

    from fer_mm.loggers import wandb_configured

    run = wandb.init(project="fer-mm", job_type="report", name="report", dir=str(out_dir),
                     mode="online" if wandb_configured() else "offline")
    try:
        columns = ["experiment", "protocol", "inputs", "folds", "pooled_acc", "ceiling", "gap_to_ceiling",
                   "fold_acc_mean", "fold_acc_std", "uar", "f1"]
        table = wandb.Table(columns=columns, data=[[s["experiment"], s["protocol"], "+".join(s["modalities"]),
                                                    s["folds_found"], s["pooled"]["acc"], s["ceiling"],
                                                    s["gap_to_ceiling"], s["fold_acc_mean"], s["fold_acc_std"],
                                                    s["pooled"]["uar"], s["pooled"]["f1"]] for s in summaries])
        # the comparison plot gets a table of its own: one sharing "results" is not written as a file offline
        bars = wandb.Table(columns=["experiment", "pooled_acc"], data=[[s["experiment"], s["pooled"]["acc"]]
                                                                      for s in summaries])
        payload = {"results": table,
                   "pooled accuracy": wandb.plot.bar(bars, "experiment", "pooled_acc", title="pooled test accuracy"),
                   **{title: wandb.Image(str(out_dir / name)) for title, name in images.items()}}
        if comparisons:
            payload["comparisons"] = wandb.Table(dataframe=pd.DataFrame(comparisons))
        run.log(payload)
    finally:
        run.finish()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fer_mm.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="sweep or experiment folders (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <first RUN_DIR>/report)")
    parser.add_argument("--votes", type=Path, default=None,
                        help="CREMA-D's tabulatedVotes.csv (default: <data root>/processedResults/ if present)")
    parser.add_argument("--compare", action="append", metavar="A:B", default=None,
                        help="compare experiment B against A (repeatable; default: every pair with the same protocol)")
    parser.add_argument("--wandb", dest="use_wandb", action="store_true", default=None, help="log a W&B summary run")
    parser.add_argument("--no-wandb", dest="use_wandb", action="store_false")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.votes and not args.votes.is_file():
        parser.error(f"--votes {args.votes}: no such file")
    pairs = None
    if args.compare:
        try:
            pairs = [tuple(c.split(":", 1)) for c in args.compare]
        except ValueError:
            parser.error("--compare takes A:B")
    out = args.out or args.run_dirs[0] / "report"
    report(args.run_dirs, out, args.votes, pairs, args.use_wandb)
    print((out / "results.md").read_text())
    print(f"written: {out / 'results.md'}, {out / 'results.json'} and figures in {out}")


if __name__ == "__main__":
    main()
