"""Displayed versus acted emotion in the synthetic twin, and the Bayes ceiling that follows.

A CREMA-D actor acting anger does not always look or sound angry: the release's raters named
the acted emotion in 40.0% of voice-only ratings, 57.4% of face-only and 63.1% of audio-visual
ones. The twin reproduces that: each clip's voice and face *display* an emotion drawn from a
per-modality confusion matrix (acted -> displayed), independently given the acted emotion, while
the label stays the acted emotion. The matrix of modality m is

    M_m = (1 - w_m) * I + w_m * R_m

where R_m is the raters' acted -> perceived matrix of that modality and w_m the modality's
difficulty weight: 0 displays the acted emotion always, 1 is as confusable as the raters.

A clip's modality depends on the acted emotion only through that modality's display (see
``fer_mm.data.twins.crema_d``), but a model also sees who speaks and which sentence: the release's
design gives each (actor, sentence) its own mix of emotions (in IEO neutral is 1 clip of 16, in
the other sentences 1 of 6). So the best expected accuracy of any model is the Bayes-optimal guess
of the acted emotion from the displays it sees and the clip's (actor, sentence), computed exactly
here from the clip list and the weights.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

import numpy as np

from fer_mm.data.sources.crema_d import parse_name

from fer_mm.vocab import AUDIO, EMOTIONS, MODALITIES, VIDEO, ordered_modalities

# Acted (rows) x perceived (columns) vote counts in EMOTIONS order, summed over all 7,442 clips of
# CREMA-D's processedResults/tabulatedVotes.csv (ids starting 1: voice only, 2: face only,
# 3: audio-visual). CREMA-D: Cao et al. 2014, Open Database License; tests recompute these
# from the release's file where it is present.
RATER_VOTES = {
    AUDIO: ((6289, 2496, 602, 225, 2080, 130),
            (1403, 3319, 1065, 319, 4369, 1117),
            (745, 736, 3726, 345, 4446, 1611),
            (809, 869, 942, 3341, 5198, 381),
            (396, 602, 514, 207, 7807, 714),
            (221, 829, 1363, 153, 6252, 2947)),
    VIDEO: ((6933, 2341, 555, 344, 1729, 301),
            (984, 6641, 1253, 155, 717, 2463),
            (1100, 1249, 5329, 186, 2628, 1682),
            (106, 165, 113, 10829, 1058, 83),
            (466, 811, 427, 444, 7500, 839),
            (416, 1221, 1472, 194, 4996, 3924)),
    "audio-visual": ((8001, 2476, 509, 100, 1044, 116),
                     (924, 7382, 1553, 78, 1003, 1245),
                     (562, 712, 6971, 135, 2260, 1613),
                     (87, 157, 193, 10564, 1310, 46),
                     (399, 551, 515, 193, 8257, 567),
                     (247, 919, 2108, 69, 4814, 4098)),
}

# Weights w per modality. "published" puts the ceilings near the best published speaker-independent
# models on CREMA-D (about 0.70 audio, 0.77 video, 0.83 both on the release's clips); "human" is
# the raters' level (0.40 / 0.57 / 0.62); "none" displays the acted emotion (ceilings 1).
DIFFICULTY_PRESETS = {
    "published": {AUDIO: 0.5, VIDEO: 0.55},
    "human": {AUDIO: 1.0, VIDEO: 1.0},
    "none": {AUDIO: 0.0, VIDEO: 0.0},
}


def ceiling_key(modalities: Iterable[str]) -> str:
    """``video``, ``audio`` or ``video+audio``: how run records and the report name an input set."""
    return "+".join(ordered_modalities(modalities, "modalities"))


def keyed_rng(*keys: object) -> np.random.Generator:
    """A generator seeded by stable keys (crc32 of their text), independent of call order."""
    return np.random.default_rng([zlib.crc32(str(k).encode()) for k in keys])


def resolve_difficulty(value: str | Mapping, key: str = "data.synthetic.difficulty") -> dict[str, float]:
    """A preset name or a mapping ``{audio: w, video: w}`` -> weights per modality, checked."""
    if isinstance(value, str):
        if value not in DIFFICULTY_PRESETS:
            raise ValueError(f"{key}={value!r}: use one of {sorted(DIFFICULTY_PRESETS)} or {{audio: w, video: w}} "
                             f"with weights in [0, 1]")
        value = DIFFICULTY_PRESETS[value]
    if not isinstance(value, Mapping) or set(value) != set(MODALITIES):
        raise ValueError(f"{key}={value}: give a preset ({', '.join(DIFFICULTY_PRESETS)}) or a weight for each of "
                         f"{list(MODALITIES)}, e.g. {{audio: 0.5, video: 0.55}}")
    weights = dict(value)
    for modality, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= float(w) <= 1.0:
            raise ValueError(f"{key}.{modality}={w}: a weight must be in [0, 1] (0: the acted emotion is displayed, "
                             f"1: as confusable as CREMA-D's raters)")
    return {m: float(weights[m]) for m in MODALITIES}


def preset_name(weights: Mapping[str, float]) -> str:
    """The preset these weights are, or ``custom``."""
    return next((name for name, preset in DIFFICULTY_PRESETS.items() if resolve_difficulty(preset) == dict(weights)),
                "custom")


def rater_matrix(modality: str) -> np.ndarray:
    """The raters' acted -> perceived probabilities for ``modality`` (rows sum to 1)."""
    counts = np.asarray(RATER_VOTES[modality], dtype=float)
    return counts / counts.sum(1, keepdims=True)


def display_matrix(modality: str, weight: float) -> np.ndarray:
    """P(displayed | acted) for ``modality`` at difficulty ``weight``."""
    return (1 - weight) * np.eye(len(EMOTIONS)) + weight * rater_matrix(modality)


def draw_displays(name: str, seed: int, difficulty: Mapping[str, float]) -> dict[str, str]:
    """The emotion code each modality of clip ``name`` displays; fixed by (seed, name, modality)."""
    acted = parse_name(name).label
    out = {}
    for modality in MODALITIES:
        rng = keyed_rng("display", seed, name, modality)
        out[modality] = EMOTIONS[int(rng.choice(len(EMOTIONS), p=display_matrix(modality, difficulty[modality])[acted]))]
    return out


def acted_prior(names: Iterable[str]) -> np.ndarray:
    """Share of each acted emotion among ``names``."""
    counts = np.bincount([parse_name(n).label for n in names], minlength=len(EMOTIONS)).astype(float)
    if counts.sum() == 0:
        raise ValueError("no clips to compute a ceiling on")
    return counts / counts.sum()


def design_cells(names: Iterable[str]) -> dict[tuple[int, str], list[str]]:
    """``names`` grouped by what a model can tell apart besides the displays: (actor, sentence)."""
    cells: dict[tuple[int, str], list[str]] = {}
    for name in names:
        clip = parse_name(name)
        cells.setdefault((clip.actor, clip.sentence), []).append(name)
    return cells


def joint_table(prior: np.ndarray, difficulty: Mapping[str, float], modalities: Iterable[str]) -> np.ndarray:
    """P(acted, displays of ``modalities``): shape (6, 6[, 6]), displays in canonical modality order."""
    table = np.asarray(prior, dtype=float)
    for modality in ordered_modalities(modalities, "modalities"):
        table = table[..., None] * display_matrix(modality, difficulty[modality]).reshape(
            (len(EMOTIONS),) + (1,) * (table.ndim - 1) + (len(EMOTIONS),))
    return table


def bayes_rule(names: Iterable[str], difficulty: Mapping[str, float], modalities: Iterable[str]):
    """``guess(name, displays) -> acted label``: the Bayes-optimal guess for clips of ``names``' design."""
    rules = {cell: joint_table(acted_prior(members), difficulty, modalities).argmax(0)
             for cell, members in design_cells(names).items()}
    order = ordered_modalities(modalities, "modalities")

    def guess(name: str, displays: Mapping[str, str]) -> int:
        clip = parse_name(name)
        return int(rules[clip.actor, clip.sentence][tuple(EMOTIONS.index(displays[m]) for m in order)])

    return guess


def bayes_ceiling(names: Iterable[str], difficulty: Mapping[str, float], modalities: Iterable[str]) -> float:
    """Highest expected accuracy on ``names`` of any model seeing ``modalities``.

    The Bayes-optimal accuracy of guessing the acted emotion from the displayed ones, knowing each
    clip's (actor, sentence): per cell, the sum over displays of the max over acted emotions of
    P(acted, displays); cells weighted by their clips. An expected value: on N clips a model's
    accuracy scatters around what it expects by about sqrt(c (1 - c) / N).
    """
    cells = design_cells(names)
    total = sum(len(members) for members in cells.values())
    if total == 0:
        raise ValueError("no clips to compute a ceiling on")
    return float(sum(len(members) * joint_table(acted_prior(members), difficulty, modalities).max(0).sum()
                     for members in cells.values()) / total)


def ceilings(names: Iterable[str], difficulty: Mapping[str, float]) -> dict[str, float]:
    """Bayes ceilings for audio only, video only and both, keyed by :func:`ceiling_key`."""
    names = list(names)
    sets = ([AUDIO], [VIDEO], list(MODALITIES))
    return {ceiling_key(m): bayes_ceiling(names, difficulty, m) for m in sets}
