"""``results.md``: the report's tables and notes, one function per section."""

from __future__ import annotations

import math

from fer_mm.environment import RESULT_PACKAGES
from fer_mm.vocab import DATASET_TITLES


def percent(x: float | None) -> str:
    """A share as the report writes it: percent with two decimals, ``-`` where there is none."""
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
    lines += _preamble_lines(summaries, environment)
    lines += _experiment_lines(summaries)
    lines += _branch_lines(summaries)
    lines += _recall_lines(summaries)
    lines += _task_lines(summaries)
    if comparisons:
        lines += _comparison_lines(comparisons)
    if humans:
        lines += _human_lines(humans)
    if environment:
        lines += _environment_lines(environment)
    if images:
        lines += ["", "## Figures", ""] + [f"![{title}]({name})" for title, name in images.items()]
    return "\n".join(lines) + "\n"


def _preamble_lines(summaries: list[dict], environment: dict | None) -> list[str]:
    """The environment warning, the labels and data, and how the protocols kept subjects apart."""
    lines = []
    if environment and environment["differing"]:
        lines += [f"**Warning: these runs were made under different environments** "
                  f"(differing: {', '.join(environment['differing'])}; see [Environment](#environment)): a "
                  f"difference between figures may come from the software alone.", ""]
    datasets = {s["dataset"] for s in summaries}
    return lines + [f"Labels: {'; '.join(dict.fromkeys(s['label'] for s in summaries))}. Data: "
                    + (f"{DATASET_TITLES[datasets.pop()]}." if len(datasets) == 1 else
                       "mixed: " + ", ".join(DATASET_TITLES[d] for d in sorted(datasets)) + "."),
                    _independence_text(summaries) + _selection(summaries), ""]


def _experiment_lines(summaries: list[dict]) -> list[str]:
    """The experiments' table, the note on ceilings where there are any, and the folds missing."""
    lines = ["## Experiments", "",
             "| experiment | protocol | config | inputs | folds | pooled acc % | ceiling % (± se) | gap (pp) "
             "| Bayes rule on these clips % | fold acc % (mean ± sd) | UAR % | macro F1 % |",
             "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in summaries:
        folds = f"{s['folds_found']}/{s['folds_expected']}"
        ceiling = "-" if s["ceiling"] is None else f"{percent(s['ceiling'])} ± {percent(s['ceiling_se'])}"
        lines.append(f"| {s['experiment']} | {s['protocol']} | `{s['config_hash']}` | {'+'.join(s['modalities'])} | "
                     f"{folds} | {percent(s['pooled']['acc'])} | {ceiling} | {percent(s['gap_to_ceiling'])} | "
                     f"{percent(s['ceiling_on_these_clips'])} | {percent(s['fold_acc_mean'])} ± "
                     f"{percent(s['fold_acc_std'])} | {percent(s['pooled']['uar'])} | {percent(s['pooled']['f1'])} |")
    if any(s["ceiling"] is not None for s in summaries):
        lines += ["", "Ceiling: the best accuracy a model can expect on clips like these test clips from what its "
                  "inputs display (the Bayes-optimal guess of the acted emotion from the displayed ones, knowing each "
                  "clip's actor and sentence), computed exactly from the twin's generation parameters; se: how far "
                  "one sample of this many clips scatters around it; gap = ceiling minus pooled accuracy. Bayes rule "
                  "on these clips: that guess applied to the test clips' actual displays."]
    for s in summaries:
        if s["missing_folds"]:
            lines.append(f"\nMissing folds of {s['experiment']} ({s['protocol']}): {s['missing_folds']}")
    return lines


def _branch_lines(summaries: list[dict]) -> list[str]:
    """Each fused model's branches read alone: how much of the fused figure each one carries."""
    rows = [(s, m, b) for s in summaries for m, b in s.get("branches", {}).items()]
    if not rows:
        return []
    lines = ["", "## Each branch inside the fused model", "",
             "| experiment | branch | folds | branch acc % | branch UAR % | its modality's ceiling % | fused acc % "
             "(same folds) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for s, modality, b in rows:
        lines.append(f"| {s['experiment']} | {modality} | {b['folds']} | {percent(b['acc'])} | {percent(b['uar'])} | "
                     f"{percent(b['ceiling'])} | {percent(b['fused_acc'])} |")
    lines += ["", "A branch read alone: its unimodal head where the model has one (`model.aux_weight`, late "
              "fusion's branch classifiers), else the fused head with the other branch's embedding zeroed. A "
              "branch far below its modality's ceiling while the fused figure is high is the imbalance that "
              "`model.balance` addresses."]
    return lines


def _recall_lines(summaries: list[dict]) -> list[str]:
    """Per-class recall: one table per label set."""
    lines = ["", "## Per-class recall (pooled, %)"]
    for names in dict.fromkeys(tuple(s["class_names"]) for s in summaries if s["class_names"]):
        lines += ["", "| experiment | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
        for s in summaries:
            if tuple(s["class_names"]) == names:
                lines.append(f"| {s['experiment']} | " + " | ".join(percent(r) for r in s["pooled"]["per_class_recall"])
                             + " |")
    return lines


def _comparison_lines(comparisons: list[dict]) -> list[str]:
    lines = ["", "## Comparisons (B minus A, on the folds both have; richer minus poorer: B is the one whose inputs "
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
    return lines + ["", "Wilcoxon signed-rank test (two-sided) on the paired accuracy differences per test actor of "
                    "each fold; tied actors dropped. Holm p: Holm-Bonferroni corrected over all the comparisons above "
                    "that have a p-value."]


def _human_lines(humans: dict) -> list[str]:
    lines = ["", "## CREMA-D human raters", "",
             "Share of individual ratings that name the acted emotion (`tabulatedVotes.csv`: ids starting 1 = voice "
             "only, 2 = face only, 3 = audio-visual). The CREMA-D paper reports 40.9 / 58.2 / 63.6 % over all clips.",
             "", "| clips | voice % | face % | audio-visual % | clips rated |", "| --- | ---: | ---: | ---: | ---: |"]
    for scope, h in humans.items():
        lines.append(f"| {scope} | {percent(h['voice']['share'])} | {percent(h['face']['share'])} | "
                     f"{percent(h['audio-visual']['share'])} | {h['voice']['clips']} |")
    return lines


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
             "Each task is scored over the test samples that have its target. Gender (and an actor's age) is "
             "constant per subject: read from unseen subjects only because no test subject is in training (data "
             "without subject ids says so above). Baseline: what a model that ignores its input scores (the training "
             "samples' most common gender; their mean age, and its share within 5 years). Age groups: the share of "
             "test samples in their right group, the MAE then of the predicted group's centre. Twin ceiling (UTKFace "
             "and IMDB-WIKI twins, pooled): the gender accuracy and age MAE of reading the tested faces' displayed "
             "gender and age exactly.", "",
             "| experiment | fold | emotion acc % | emotion UAR % | gender acc % | baseline % | twin ceiling % "
             "| age MAE (years) | baseline | twin floor | age within 5 years % | baseline % | age group acc % "
             "| AU F1 % (mean over AUs) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def cells(t: dict) -> str:
        e, g, a, u = t["emotion"], t.get("gender", {}), t.get("age", {}), t.get("au", {})
        c = t.get("ceilings", {})
        mae = lambda x: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"  # noqa: E731
        return (f"{percent(e['acc'])} | {percent(e['uar'])} | {percent(g.get('acc'))} | {percent(g.get('baseline'))} | "
                f"{percent(c.get('gender'))} | {mae(a.get('mae'))} | {mae(a.get('baseline'))} | {mae(c.get('age'))} | "
                f"{percent(a.get('within5'))} | "
                f"{percent(a.get('baseline_within5'))} | {percent(a.get('group_acc'))} | {percent(u.get('f1_macro'))} |")

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
                      "| " + " | ".join(f"{percent(au['f1'][n]) if au['support'][n] else '-'} ({au['support'][n]})"
                                        for n in names) + " |"]
    return lines
