"""Slow checks (``pytest -m slow``): the twin carries learnable emotion cues in each modality."""

import pytest

from fer_mm.data.cache import build_cache
from fer_mm.data.synthetic import generate
from fer_mm.train import train
from tests.test_train import make_cfg

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bigger_twin(tmp_path_factory):
    root = generate(tmp_path_factory.mktemp("twin6") / "crema_d_synth", 6, 2, seed=0, workers=2, progress=False)
    return root, build_cache(root, tmp_path_factory.mktemp("cache6"), workers=2, progress=False)


@pytest.mark.parametrize("experiment", ["ar5_video_only", "ar5_audio_only", "ar5_fusion"])
def test_each_modality_beats_chance_on_unseen_actors(experiment, bigger_twin, tmp_path):
    root, cache = bigger_twin
    cfg = make_cfg(tmp_path, [f"experiment={experiment}", "logger=none", "cv=speaker_kfold", "cv.protocol.k=3",
                              "trainer.max_epochs=8", f"data.root={root}", f"data.cache_dir={cache.path.parent}",
                              "data.synthetic=null", "data.progress=false", "data.batch_size=16",
                              "trainer.enable_progress_bar=false"])
    m = train(cfg)
    assert m["n_clips"]["test"] == 44
    assert m["test/acc"] > 0.3, f"{experiment}: {m['test/acc']:.3f} on unseen actors (chance 0.167)"
