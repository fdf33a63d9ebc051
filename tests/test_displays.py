"""The twin's displayed emotions and its Bayes ceilings (fer_mm/data/displays.py)."""

import json

import numpy as np
import pandas as pd
import pytest

from fer_mm.data.sources.crema_d import parse_name, release_names

from fer_mm.data.twins.displays import (
    DIFFICULTY_PRESETS,
    RATER_VOTES,
    acted_prior,
    bayes_ceiling,
    bayes_rule,
    ceilings,
    display_matrix,
    draw_displays,
    joint_table,
    resolve_difficulty,
)
from fer_mm.data.twins.actors import Actor
from fer_mm.data.twins.crema_d import generate, synth_clip
from fer_mm.data.twins.face import background
from fer_mm.data.twins.spec import DISPLAYS_FILE, SPEC_FILE, read_spec, twin_spec
from fer_mm.vocab import AUDIO, EMOTIONS, MODALITIES, VIDEO

RELEASE = release_names()
BOTH = "video+audio"


def test_embedded_rater_matrices_are_the_release_votes(crema_meta):
    votes = pd.read_csv(crema_meta("tabulatedVotes.csv"))
    modality = votes.iloc[:, 0].astype(str).str[0].map({"1": AUDIO, "2": VIDEO, "3": "audio-visual"})
    acted = votes["fileName"].map(lambda n: parse_name(n).label)
    for name, rows in RATER_VOTES.items():
        g = votes[modality == name]
        counts = g.groupby(acted[modality == name])[["A", "D", "F", "H", "N", "S"]].sum().to_numpy()
        assert counts.tolist() == [list(r) for r in rows], name
    # per rating, the raters name the acted emotion 40.0% (voice), 57.4% (face), 63.1% (both) of the time
    shares = {m: np.trace(np.asarray(r)) / np.sum(r) for m, r in RATER_VOTES.items()}
    assert shares[AUDIO] == pytest.approx(0.400, abs=5e-4) and shares[VIDEO] == pytest.approx(0.574, abs=5e-4)
    assert shares["audio-visual"] == pytest.approx(0.631, abs=5e-4)


@pytest.mark.parametrize("preset, expected", [
    ("published", {AUDIO: 0.70, VIDEO: 0.77, BOTH: 0.83}),  # near the best published models
    ("human", {AUDIO: 0.41, VIDEO: 0.58, BOTH: 0.62}),  # the raters' level (40.0 / 57.4 / 63.1 per rating)
])
def test_ceilings_on_the_release_are_ordered_and_where_the_presets_aim(preset, expected):
    c = ceilings(RELEASE, resolve_difficulty(preset))
    assert c[AUDIO] < c[VIDEO] < c[BOTH] < 1
    for key, value in expected.items():
        assert c[key] == pytest.approx(value, abs=0.01)
    # no rule beats Bayes: e.g. guessing the displayed emotion
    prior = acted_prior(RELEASE)
    for m in MODALITIES:
        assert c[m] >= float(prior @ np.diag(display_matrix(m, DIFFICULTY_PRESETS[preset][m]))) - 1e-12


def test_no_difficulty_displays_the_acted_emotion():
    assert ceilings(RELEASE, resolve_difficulty("none")) == {AUDIO: 1.0, VIDEO: 1.0, BOTH: 1.0}
    assert all(set(draw_displays(n, 0, resolve_difficulty("none")).values()) == {parse_name(n).emotion}
               for n in RELEASE[:300])


@pytest.mark.parametrize("preset", ["published", "human", {AUDIO: 0.2, VIDEO: 0.9}])
def test_ceilings_match_a_monte_carlo_estimate_from_drawn_displays(preset):
    """The Bayes rule applied to displays drawn as the twin draws them scores the computed ceiling."""
    weights = resolve_difficulty(preset)
    names = RELEASE
    acted = [parse_name(n).label for n in names]
    drawn = [[draw_displays(n, seed, weights) for n in names] for seed in range(4)]  # 4 x 7,442 clips
    for modalities in ([AUDIO], [VIDEO], [VIDEO, AUDIO]):
        guess = bayes_rule(names, weights, modalities)
        hits = np.array([guess(n, d) == a for displays in drawn for n, d, a in zip(names, displays, acted)])
        ceiling = bayes_ceiling(names, weights, modalities)
        se = np.sqrt(ceiling * (1 - ceiling) / len(hits))
        assert abs(hits.mean() - ceiling) < 4 * se, (modalities, hits.mean(), ceiling)


def test_the_ceiling_knows_the_sentence():
    """In IEO neutral is 1 clip of 16, elsewhere 1 of 6: a model hears the sentence, so the ceiling
    uses each (actor, sentence)'s prior and is at least the pooled prior's."""
    weights = resolve_difficulty("human")
    for m in ([AUDIO], [VIDEO], [VIDEO, AUDIO]):
        pooled = float(joint_table(acted_prior(RELEASE), weights, m).max(0).sum())
        assert bayes_ceiling(RELEASE, weights, m) > pooled + 0.001
    ieo = [n for n in RELEASE if "_IEO_" in n]
    assert bayes_ceiling(ieo, weights, [AUDIO]) == pytest.approx(
        float(joint_table(acted_prior(ieo[:16]), weights, [AUDIO]).max(0).sum()))  # every IEO cell alike


def test_displays_follow_the_matrices():
    weights = resolve_difficulty("human")
    drawn = [(parse_name(n).label, EMOTIONS.index(draw_displays(n, 7, weights)[AUDIO])) for n in RELEASE]
    counts = np.zeros((6, 6))
    for a, d in drawn:
        counts[a, d] += 1
    rates = counts / counts.sum(1, keepdims=True)
    assert np.abs(rates - display_matrix(AUDIO, 1.0)).max() < 0.05  # about 1,270 clips per row


def test_the_generated_twin_records_its_displays_and_ceilings(twin_root):
    spec = read_spec(twin_root)
    assert spec["version"] == 2 and spec["difficulty"] == resolve_difficulty("published")
    table = pd.read_csv(twin_root / DISPLAYS_FILE)
    assert len(table) == spec["clips"] == 64
    for row in table.itertuples():
        assert draw_displays(row.name, spec["seed"], spec["difficulty"]) == {VIDEO: row.video, AUDIO: row.audio}
        assert row.acted == parse_name(row.name).emotion
    assert spec["ceilings"] == ceilings(table["name"], spec["difficulty"])


def test_a_modality_renders_its_own_display_only():
    """Changing the face's display leaves the audio alone and vice versa, and the length never
    changes: the acted emotion reaches each modality only through its display."""
    name = "1003_IEO_ANG_MD"
    actor = Actor.make(1003, 0)
    bg = background(actor)
    frames, wave = synth_clip(name, actor, bg, 0, {VIDEO: "ANG", AUDIO: "ANG"})
    frames_f, wave_f = synth_clip(name, actor, bg, 0, {VIDEO: "HAP", AUDIO: "ANG"})
    frames_v, wave_v = synth_clip(name, actor, bg, 0, {VIDEO: "ANG", AUDIO: "SAD"})
    assert np.array_equal(wave, wave_f) and not np.array_equal(wave, wave_v)
    assert all(np.array_equal(a, b) for a, b in zip(frames, frames_v)) and len(frames) == len(frames_v)
    assert not all(np.array_equal(a, b) for a, b in zip(frames, frames_f))
    assert len(frames) == len(frames_f) and len(wave) == len(wave_v)


def test_difficulty_errors_name_the_key():
    with pytest.raises(ValueError, match=r"data.synthetic.difficulty='hard'"):
        resolve_difficulty("hard")
    with pytest.raises(ValueError, match=r"data.synthetic.difficulty.audio=1.5"):
        resolve_difficulty({AUDIO: 1.5, VIDEO: 0.5})
    with pytest.raises(ValueError, match="a weight for each"):
        resolve_difficulty({AUDIO: 0.5})
    with pytest.raises(ValueError, match=r"data.synthetic.difficulty.video=x"):
        resolve_difficulty({AUDIO: 0.5, VIDEO: "x"})
    with pytest.raises(ValueError, match=r"difficulty=None: give a preset"):
        resolve_difficulty(None)


def test_a_folder_holding_another_twin_is_refused(tmp_path):
    (tmp_path / SPEC_FILE).write_text(json.dumps(twin_spec(1, 1, seed=0, difficulty="none")))
    with pytest.raises(ValueError, match=r"holds another twin \(.*difficulty"):
        generate(tmp_path, 1, 1, seed=0, workers=1, progress=False)
