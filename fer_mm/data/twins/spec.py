"""What makes a CREMA-D twin and what it is called: its parameters, its folder name, its ``SYNTHETIC.json``.

Apart from the generator (:mod:`fer_mm.data.twins.crema_d`), so that naming a twin (the
``twin_dir`` config resolver) or reading its record never loads the renderer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from fer_mm.data.sources.crema_d import ACTORS, KNOWN_DEFECTS, SENTENCES, release_names
from fer_mm.data.twins.displays import ceilings, preset_name, resolve_difficulty

TWIN_KIND = "fer-mm synthetic CREMA-D twin"  # SYNTHETIC.json's kind (image twins have theirs)
SPEC_FILE = "SYNTHETIC.json"  # marks a folder as a generated twin (and records how it was made)
DISPLAYS_FILE = "displays.csv"  # each clip's displayed emotion per modality (the twin's ground truth of difficulty)
# 2: displayed emotions (difficulty), level-free intensity, emotion-free clip length, per-modality timing
TWIN_VERSION = 2


def twin_names(n_actors: int = len(ACTORS), n_sentences: int = len(SENTENCES)) -> list[str]:
    """The clip names of a twin with the first ``n_actors`` actors and ``n_sentences`` sentences.

    All of the release's names for them, less its four known defects (91 x 12: 7,438 clips).
    """
    if not 1 <= n_actors <= len(ACTORS):
        raise ValueError(f"data.synthetic.actors (--actors) must be in 1..{len(ACTORS)}, got {n_actors}")
    if not 1 <= n_sentences <= len(SENTENCES):
        raise ValueError(f"data.synthetic.sentences (--sentences) must be in 1..{len(SENTENCES)}, got {n_sentences}")
    # IEO first: it is the sentence that carries the three intensity levels.
    sentences = ("IEO",) + tuple(s for s in SENTENCES if s != "IEO")
    return [n for n in release_names(ACTORS[:n_actors], sentences[:n_sentences]) if n not in KNOWN_DEFECTS]


GENERATION_KEYS = ("kind", "version", "actors", "sentences", "seed", "difficulty")  # what makes a twin; the rest follows


def twin_spec(n_actors: int = 12, n_sentences: int = 4, seed: int = 0, difficulty="published") -> dict:
    """What ``SYNTHETIC.json`` records about a twin: its parameters and its Bayes ceilings."""
    weights = resolve_difficulty(difficulty, "data.synthetic.difficulty (--difficulty)")
    names = twin_names(n_actors, n_sentences)
    return dict(kind=TWIN_KIND, version=TWIN_VERSION, actors=n_actors, sentences=n_sentences,
                seed=seed, difficulty=weights, difficulty_preset=preset_name(weights), clips=len(names),
                ceilings=ceilings(names, weights), displays=DISPLAYS_FILE)


def twin_dirname(synthetic: Mapping) -> str:
    """The twin's folder under the data folder; it tells twins apart: ``crema_d_twin/12x4_published_seed0``."""
    twin_names(synthetic["actors"], synthetic["sentences"])  # checks them
    weights = resolve_difficulty(synthetic["difficulty"])
    difficulty = preset_name(weights)
    if difficulty == "custom":
        difficulty = "_".join(f"{m}{w!r}" for m, w in weights.items())  # repr: weights that differ, names that differ
    return f"crema_d_twin/{synthetic['actors']}x{synthetic['sentences']}_{difficulty}_seed{synthetic['seed']}"


def read_spec(root: Path) -> dict | None:
    """A twin's ``SYNTHETIC.json``, or None where ``root`` is not a generated twin."""
    path = Path(root) / SPEC_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def check_twin_folder(out_dir: Path, spec: dict, keys: tuple[str, ...], data: Path) -> dict | None:
    """The folder's spec where it holds this twin (whole or in part), None where it is new.

    Raises ValueError, naming what differs, where it holds another twin or data that is no twin.
    """
    old = read_spec(out_dir)
    if old is None:
        if data.exists():
            raise ValueError(f"{out_dir} holds {data.name} but no {SPEC_FILE}: real data or another tool's; "
                             f"generate into another folder")
        return None
    changed = [f"{k}: {old.get(k)!r} there, {spec[k]!r} asked" for k in keys if old.get(k) != spec[k]]
    if changed:
        raise ValueError(f"{out_dir} holds another twin ({'; '.join(changed)}); generate into another folder or "
                         f"delete it")
    return old
