"""Run identity: the config hash changes with what shapes a result, and only with that."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fer_mm.runs import config_hash, differing_keys, register_resolvers, result_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(*overrides):
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=["experiment=ar5_fusion", *overrides], return_hydra_config=True)




@pytest.mark.parametrize("overrides", [
    ["model.optimizer.lr=0.05"], ["model.net.name=foo"], ["data=crema_d", "data.root=/nonexistent"],
    ["seed=1"], ["trainer.max_epochs=3"], ["cv=speaker_kfold"], ["model.inputs.audio.frontend=logmel"],
    ["data.batch_size=16"], ["callbacks.early_stopping.patience=3"], ["data.preprocess.smooth_frames=3"],
])
def test_result_relevant_changes_change_the_hash(overrides):
    assert config_hash(_compose(*overrides)) != config_hash(_compose())


@pytest.mark.parametrize("overrides", [
    ["logger=csv"], ["logger=none"], ["overwrite=true"], ["cv.fold=3"], ["data.num_workers=8"],
    ["data.preprocess_workers=2"], ["data.progress=false"], ["trainer.enable_progress_bar=false"],
    ["paths.log_dir=/elsewhere"], ["data.cache_dir=/tmp/caches"], ["model.optimizer.lr=0.001"],
    ["trainer.log_every_n_steps=1"], ["hydra.verbose=true"],
])
def test_logging_paths_workers_and_folds_do_not(overrides):
    assert config_hash(_compose(*overrides)) == config_hash(_compose())


def test_the_run_folder_holds_the_hash():
    cfg = _compose("cv.fold=2")
    assert cfg.hydra.run.dir.endswith(f"/ar5_fusion/loso/{config_hash(cfg)}/fold_2")
    assert len(config_hash(cfg)) == 8 and config_hash(cfg) == config_hash(_compose("cv.fold=2"))
    hashed = result_config(cfg)
    assert "paths" not in hashed and "logger" not in hashed and "fold" not in hashed["cv"]
    assert hashed["model"]["optimizer"]["lr"] == 1e-3 and hashed["data"]["root"].endswith("crema_d_twin/12x4_published_seed0")
    assert "protocol" not in hashed["data"] and "sample_rate" not in hashed["model"]["inputs"]  # aliases, hashed once


def test_the_project_root_does_not_change_the_hash(monkeypatch):
    here = config_hash(_compose())
    monkeypatch.setenv("FER_MM_ROOT", "/some/where/else")
    moved = _compose()
    assert config_hash(moved) == here and result_config(moved)["data"]["root"] == "<paths.root_dir>/datasets/crema_d_twin/12x4_published_seed0"
    assert config_hash(_compose("data.root=/some/where/else/other_twin")) != here


def test_a_stage_one_checkpoint_is_part_of_the_config_but_not_its_fold():
    stage_one = "model.init_from=${paths.log_dir}/ar4_video/loso/%s/fold_${cv.fold}/checkpoints/best.ckpt"
    a0, a1 = _compose(stage_one % "aaaa", "cv.fold=0"), _compose(stage_one % "aaaa", "cv.fold=1")
    b0 = _compose(stage_one % "bbbb", "cv.fold=0")
    assert config_hash(a0) == config_hash(a1) != config_hash(b0) != config_hash(_compose())
    assert result_config(a0)["model"]["init_from"] == \
        "<paths.root_dir>/experiments/ar4_video/loso/aaaa/fold_<fold>/checkpoints/best.ckpt"


def test_differing_keys_names_what_changed():
    a, b = result_config(_compose()), result_config(_compose("model.optimizer.lr=0.05", "seed=2"))
    assert differing_keys([a, b]) == ["model.optimizer.lr", "seed"]  # cv.protocol.seed: ${seed}, named once
    assert differing_keys([a, a]) == []
