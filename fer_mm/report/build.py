"""The report's entry point: runs in, ``results.md``, ``results.json`` and figures out, and a W&B summary run
where the folds logged to W&B."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fer_mm import report as package  # its docstring is the command's help
from fer_mm.loggers import wandb_configured
from fer_mm.report.comparisons import compare, default_pairs, environment_summary, holm, human_baseline
from fer_mm.report.experiments import Experiment, load_runs, summarise
from fer_mm.report.figures import plot_ceilings, plot_confusion, plot_fold_accuracy
from fer_mm.report.markdown import render_markdown

log = logging.getLogger(__name__)


def find_votes(experiments: dict[str, Experiment]) -> Path | None:
    """CREMA-D's ``tabulatedVotes.csv`` in the data root of the first fold whose release has it."""
    for exp in experiments.values():
        for m in exp.folds.values():
            path = Path(m.get("data_root", "")) / "processedResults" / "tabulatedVotes.csv"
            if m.get("data_root") and path.is_file():
                return path
    return None


def report(run_dirs: list[Path], out_dir: Path, votes: Path | None = None,
           pairs: list[tuple[str, str]] | None = None, use_wandb: bool | None = None) -> dict:
    """Writes the report of the folds under ``run_dirs`` into ``out_dir``; returns what ``results.json`` holds."""
    experiments = load_runs(run_dirs)
    if not experiments:
        raise SystemExit(f"no finished folds (metrics.json + predictions.csv) under {', '.join(map(str, run_dirs))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = [summarise(e) for e in experiments.values()]
    comparisons = _comparisons(experiments, pairs)
    environment = environment_summary(experiments)
    _warn_of_environments(environment, comparisons)
    votes = votes or find_votes(experiments)
    humans = _human_rows(votes, experiments) if votes else None
    images = _figures(summaries, experiments, out_dir)
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


def _comparisons(experiments: dict[str, Experiment], pairs: list[tuple[str, str]] | None) -> list[dict]:
    """``pairs`` (default: :func:`default_pairs`) compared, with their Holm-corrected p-values."""
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
    return comparisons


def _warn_of_environments(environment: dict, comparisons: list[dict]) -> None:
    if environment["differing"]:
        log.warning("these runs were made under different environments (%s differ): a figure may differ for that "
                    "reason alone (results.md, Environment)", ", ".join(environment["differing"]))
    for c in comparisons:
        if c["environment_differs"]:
            log.warning("%s against %s: made under different environments (%s differ)", c["b"], c["a"],
                        ", ".join(c["environment_differs"]))


def _human_rows(votes: Path, experiments: dict[str, Experiment]) -> dict:
    """The raters over the whole release, and over the clips these runs tested where the votes have them."""
    tested = set().union(*(set(p["name"]) for e in experiments.values() for p in e.predictions.values()))
    humans = {"all clips of the release": human_baseline(votes)}
    matched = human_baseline(votes, tested)
    if matched["voice"]["clips"]:
        humans["the test clips above"] = matched
    return humans


def _figures(summaries: list[dict], experiments: dict[str, Experiment], out_dir: Path) -> dict[str, str]:
    """Draws the figures into ``out_dir``: {title: file name}, in the order results.md shows them."""
    images = {}
    for s, exp in zip(summaries, experiments.values()):
        if not s["class_names"]:  # a model without emotion classes (gender and age only)
            continue
        name = f"confusion_{exp.slug}.png"
        plot_confusion(np.array(s["pooled"]["confusion"]), f"{exp.key}: pooled over {s['folds_found']} folds",
                       out_dir / name, s["class_names"])
        images[f"confusion matrix, {exp.key}"] = name
    plot_fold_accuracy(summaries, out_dir / "per_fold_accuracy.png")
    images["per-fold test accuracy"] = "per_fold_accuracy.png"
    if any(s["ceiling"] is not None for s in summaries):
        plot_ceilings(summaries, out_dir / "ceilings.png")
        images["modalities against their ceilings"] = "ceilings.png"
    return images


def _logged_to_wandb(record: dict) -> bool:
    import yaml

    path = Path(record["_dir"]) / "config.yaml"
    return path.is_file() and "wandb" in (yaml.safe_load(path.read_text()).get("logger") or {})


def _log_wandb(summaries: list[dict], comparisons: list[dict], out_dir: Path, images: dict) -> None:
    import wandb

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
        branches = [[s["experiment"], m, b["acc"], b["uar"], b["ceiling"], b["fused_acc"]]
                    for s in summaries for m, b in s.get("branches", {}).items()]
        if branches:  # each fused model's branches read alone, beside the fused figure
            payload["branches"] = wandb.Table(columns=["experiment", "branch", "branch_acc", "branch_uar",
                                                       "modality_ceiling", "fused_acc"], data=branches)
        if comparisons:
            payload["comparisons"] = wandb.Table(dataframe=pd.DataFrame(comparisons))
        run.log(payload)
    finally:
        run.finish()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fer_mm.report", description=package.__doc__,
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
