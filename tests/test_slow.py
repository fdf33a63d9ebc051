"""Slow checks (``pytest -m slow``): on the default-size twin, each modality carries cues that
transfer to an unseen actor (LOSO fold 0, the default training recipe)."""

import pytest

from fer_mm.data.preprocessing import build_cache
from fer_mm.data.twins.crema_d import generate
from fer_mm.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_twin(tmp_path_factory):
    root = generate(tmp_path_factory.mktemp("twin12") / "crema_d_synth", 12, 4, seed=0, workers=2, progress=False)
    return root, build_cache(root, tmp_path_factory.mktemp("cache12"), workers=2, progress=False)


@pytest.mark.parametrize("experiment", ["ar5_video_only", "ar5_audio_only", "ar5_fusion"])
def test_each_modality_beats_chance_on_an_unseen_actor(experiment, default_twin, tmp_path, make_cfg):
    root, cache = default_twin
    cfg = make_cfg(tmp_path, [f"experiment={experiment}", "logger=none", f"data.root={root}",
                              f"data.cache_dir={cache.path.parent}", "data.synthetic=null", "data.progress=false",
                              "trainer.enable_progress_bar=false"])
    m = train(cfg)
    assert m["n_clips"]["test"] == 34
    assert m["test/acc"] > 0.3, f"{experiment}: {m['test/acc']:.3f} on an unseen actor (chance 0.167)"


@pytest.mark.parametrize("experiment", ["frame_resnet_video", "logmel_audio", "late_fusion", "cross_attention_fusion"])
def test_the_models_beyond_ar5_beat_chance_on_an_unseen_actor(experiment, default_twin, tmp_path, make_cfg):
    """A fold of a few epochs of each new model (its own recipe) on the default twin."""
    root, cache = default_twin
    cfg = make_cfg(tmp_path, [f"experiment={experiment}", "logger=none", f"data.root={root}",
                              f"data.cache_dir={cache.path.parent}", "data.synthetic=null", "data.progress=false",
                              "trainer.enable_progress_bar=false", "trainer.max_epochs=8"])
    m = train(cfg)
    assert m["test/acc"] > 0.3, f"{experiment}: {m['test/acc']:.3f} on an unseen actor (chance 0.167)"
    if experiment in ("late_fusion", "cross_attention_fusion"):
        assert set(m["branches"]) == {"video", "audio"} and "test/video_acc" in m
