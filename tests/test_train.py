import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from fer_mm.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def data_overrides(twin_root, twin_cache) -> list[str]:
    return [f"data.root={twin_root}", f"data.cache_dir={twin_cache.path.parent}", "data.synthetic=null",
            "data.progress=false", "data.batch_size=8", "trainer.enable_progress_bar=false"]


def make_cfg(tmp_path, overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
        del cfg["hydra"]  # as in a real run: the job's config holds no hydra node
    return cfg


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_a_step(experiment, twin_root, twin_cache, tmp_path):
    cfg = make_cfg(tmp_path, [f"experiment={experiment}", "debug=fast", *data_overrides(twin_root, twin_cache)])
    assert cfg.task_name == experiment
    metrics = train(cfg)
    assert 0 <= metrics["test/acc"] <= 1 and metrics["experiment"] == experiment
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == 8 and set(predictions["actor"]) == {1001}  # fast_dev_run: one test batch


def test_outputs_trace_the_fold(twin_root, twin_cache, tmp_path):
    cfg = make_cfg(tmp_path, ["experiment=ar2_video", "debug=limit", "logger=csv", "cv.fold=2",
                              *data_overrides(twin_root, twin_cache)])
    m = train(cfg)
    assert m["actors"]["test"] == [1003] and not set(m["actors"]["test"]) & set(m["actors"]["train"] + m["actors"]["val"])
    assert m["selected_by"] == "val/uar on validation actors" and Path(m["best_checkpoint"]).is_file()
    pred = pd.read_csv(tmp_path / "predictions.csv")
    assert len(pred) == m["n_clips"]["test"] == 16 and set(pred["actor"]) == {1003}
    probs = pred.filter(like="p_").to_numpy()
    assert probs.shape[1] == 6 and abs(probs.sum(1) - 1).max() < 1e-4
    assert (probs.argmax(1) == pred["pred"]).all()
    assert m["test/acc"] == pytest.approx((pred["pred"] == pred["label"]).mean(), abs=1e-6)
    assert sum(map(sum, m["confusion"])) == 16
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "csv" / "metrics.csv").is_file()
    # the checkpoint carries the network's config: it reloads without the run's code path
    from fer_mm.system import EmotionSystem
    system = EmotionSystem.load_from_checkpoint(m["best_checkpoint"], map_location="cpu")
    assert system.net.modalities == ("video",)


def test_same_config_same_results(twin_root, twin_cache, tmp_path):
    results = []
    for run in ("a", "b"):
        cfg = make_cfg(tmp_path / run, ["experiment=ar5_fusion", "debug=limit", "logger=none",
                                        *data_overrides(twin_root, twin_cache)])
        results.append((train(cfg), pd.read_csv(tmp_path / run / "predictions.csv")))
    (a, pa), (b, pb) = results
    for key in ("test/acc", "test/uar", "test/f1", "test/loss"):
        assert a[key] == b[key]
    pd.testing.assert_frame_equal(pa, pb)


def test_wandb_runs_offline_without_a_key(twin_root, twin_cache, tmp_path, wandb_offline):
    cfg = make_cfg(tmp_path / "run", ["experiment=ar5_video_only", "debug=fast", "logger=wandb",
                                      *data_overrides(twin_root, twin_cache)])
    train(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1


def test_loso_multirun_one_folder_per_fold_and_rerun_skips(twin_root, twin_cache, tmp_path):
    cmd = [sys.executable, "-m", "fer_mm.train", "-m", "experiment=ar2_video", "debug=limit", "logger=none",
           "cv.fold=0,1,2", f"paths.log_dir={tmp_path}", *data_overrides(twin_root, twin_cache)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    sweep = tmp_path / "ar2_video" / "loso"
    folds = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.startswith("fold_"))
    assert folds == ["fold_0", "fold_1", "fold_2"]
    tests = [json.loads((sweep / f / "metrics.json").read_text())["actors"]["test"] for f in folds]
    assert tests == [[1001], [1002], [1003]]
    stamps = [(sweep / f / "metrics.json").stat().st_mtime_ns for f in folds]
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("already done") + second.stderr.count("already done") == 3
    assert stamps == [(sweep / f / "metrics.json").stat().st_mtime_ns for f in folds]


def test_wrong_config_names_the_key(twin_root, twin_cache, tmp_path):
    cfg = make_cfg(tmp_path, ["experiment=ar1_video", "debug=fast", "cv.fold=7", *data_overrides(twin_root, twin_cache)])
    with pytest.raises(ValueError, match="cv.fold=7"):
        train(cfg)
    with pytest.raises(Exception, match="model.name='nope'"):
        train(make_cfg(tmp_path / "b", ["debug=fast", "model.net.name=nope", *data_overrides(twin_root, twin_cache)]))


@pytest.mark.parametrize("cv", ["speaker_kfold", "split"])
def test_other_protocols_train(cv, twin_root, twin_cache, tmp_path):
    extra = ["cv.protocol.k=2"] if cv == "speaker_kfold" else []
    cfg = make_cfg(tmp_path, ["experiment=ar2_video", "debug=fast", f"cv={cv}", *extra,
                              *data_overrides(twin_root, twin_cache)])
    m = train(cfg)
    parts = m["actors"]
    assert m["protocol"] == cv and parts["test"] and parts["val"] and parts["train"]
    assert not set(parts["test"]) & set(parts["train"] + parts["val"])


def test_logmel_frontend_runs_on_the_device_side(twin_root, twin_cache, tmp_path):
    cfg = make_cfg(tmp_path, ["experiment=ar5_audio_only", "debug=fast", "data.audio.frontend=logmel",
                              *data_overrides(twin_root, twin_cache)])
    assert 0 <= train(cfg)["test/acc"] <= 1


@pytest.mark.parametrize("overrides, key, expected", [
    (["hydra/launcher=parallel"], "hydra.launcher._target_", "JoblibLauncher"),
    (["hydra/launcher=slurm"], "hydra.launcher._target_", "SlurmLauncher"),
    (["trainer=gpu"], "trainer.accelerator", "auto"),
    (["trainer=ddp"], "trainer.strategy", "ddp"),
])
def test_launcher_and_device_configs_compose(overrides, key, expected):
    from omegaconf import OmegaConf
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=ar5_fusion", *overrides], return_hydra_config=True)
    assert expected in str(OmegaConf.select(cfg, key))
    assert cfg.hydra.sweep.subdir == "fold_0"  # sweep folders are named by fold


def test_class_weights_balanced_and_checked(twin_root, twin_cache, tmp_path):
    cfg = make_cfg(tmp_path / "a", ["experiment=ar2_video", "debug=fast", "model.class_weights=balanced",
                                    *data_overrides(twin_root, twin_cache)])
    assert 0 <= train(cfg)["test/acc"] <= 1
    cfg = make_cfg(tmp_path / "b", ["experiment=ar2_video", "debug=fast", "model.class_weights=[1,2,3]",
                                    *data_overrides(twin_root, twin_cache)])
    with pytest.raises(Exception, match="model.class_weights has 3 values for 6 classes"):
        train(cfg)
