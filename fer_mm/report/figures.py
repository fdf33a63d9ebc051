"""The report's figures: a confusion matrix per experiment, per-fold accuracy, accuracy against the ceilings.

matplotlib is imported by each plot, so reading runs and writing tables never loads it.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from fer_mm.report.markdown import percent
from fer_mm.vocab import EMOTION_NAMES


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
               width, label=f"{s['experiment']} ({percent(s['pooled']['acc'])}% pooled)")
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
    if len(sizes) == 1 and 0 not in sizes:  # 0: models without emotion classes
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
