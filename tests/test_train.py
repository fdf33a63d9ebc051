import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import pandas as pd
import pytest
import torch
import wandb
from omegaconf import OmegaConf, open_dict

from fer_mm.environment import git_commit, lock_hash
from fer_mm.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# the experiments on CREMA-D; those on image sets (override /data) run in test_image_train.py
CREMA_D_EXPERIMENTS = [e for e in EXPERIMENTS if "override /data" not in (CONF / "experiment" / f"{e}.yaml").read_text()]


@pytest.mark.parametrize("experiment", CREMA_D_EXPERIMENTS)
def test_every_experiment_trains_a_step(experiment, tmp_path, data_overrides, make_cfg):
    cfg = make_cfg(tmp_path, [f"experiment={experiment}", "debug=fast", *data_overrides])
    assert cfg.task_name == experiment
    metrics = train(cfg)
    assert 0 <= metrics["test/acc"] <= 1 and metrics["experiment"] == experiment
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == 8 and set(predictions["actor"]) == {1001}  # fast_dev_run: one test batch


def test_outputs_trace_the_fold(tmp_path, data_overrides, make_cfg):
    cfg = make_cfg(tmp_path, ["experiment=ar2_video", "debug=limit", "logger=csv", "cv.fold=2",
                              *data_overrides])
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
    # the environment it ran under: versions as installed, the lock's hash, the commit
    env = json.loads((tmp_path / "metrics.json").read_text())["environment"]
    assert env == m["environment"] and env["lock"] == lock_hash() and env["commit"] == git_commit()
    assert "environment_at_start" not in m  # it ran under one environment
    assert env["packages"]["torch"] == importlib.metadata.version("torch") == torch.__version__.split("+")[0]
    assert env["torch_cuda"] == torch.version.cuda  # the build: CUDA's version, None for a CPU build
    assert env["packages"]["av"] == av.__version__ and env["packages"]["opencv"].startswith(cv2.__version__)
    # the checkpoint carries the network's config: it reloads without the run's code path
    from fer_mm.system import EmotionSystem
    system = EmotionSystem.load_from_checkpoint(m["best_checkpoint"], map_location="cpu")
    assert system.net.modalities == ("video",)


def test_same_config_same_results(tmp_path, data_overrides, make_cfg):
    results = []
    for run in ("a", "b"):
        cfg = make_cfg(tmp_path / run, ["experiment=ar5_fusion", "debug=limit", "logger=none",
                                        *data_overrides])
        results.append((train(cfg), pd.read_csv(tmp_path / run / "predictions.csv")))
    (a, pa), (b, pb) = results
    for key in ("test/acc", "test/uar", "test/f1", "test/loss"):
        assert a[key] == b[key]
    pd.testing.assert_frame_equal(pa, pb)


def test_a_crashed_fold_resumes_from_its_last_epoch(tmp_path, data_overrides, make_cfg, monkeypatch):
    """last.ckpt follows every epoch, not only the best one: a crash loses no finished epoch."""
    from fer_mm.system import EmotionSystem

    started = []

    def crash_at_epoch_3(self):
        started.append(self.current_epoch)
        if self.current_epoch == 3 and len(started) == 4:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(EmotionSystem, "on_train_epoch_start", crash_at_epoch_3, raising=False)
    overrides = ["experiment=ar2_video", "debug=limit", "logger=none", "trainer.max_epochs=4", *data_overrides]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(make_cfg(tmp_path, overrides))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 2 and not (tmp_path / "metrics.json").exists()
    # resumed under another lock (as after an upgrade): the record keeps the environment it started under
    at_start = json.loads((tmp_path / "environment.json").read_text())
    assert at_start["lock"] == lock_hash()
    (tmp_path / "environment.json").write_text(json.dumps(dict(at_start, lock="0123456789ab")))
    m = train(make_cfg(tmp_path, overrides))  # the same command again
    assert started == [0, 1, 2, 3, 3] and m["epochs"] == 4  # resumed at epoch 3, not at the best epoch
    assert m["environment_at_start"]["lock"] == "0123456789ab" and m["environment"]["lock"] == lock_hash()


def test_wandb_runs_offline_without_a_key(tmp_path, wandb_offline, data_overrides, make_cfg):
    cfg = make_cfg(tmp_path / "run", ["experiment=ar5_video_only", "debug=fast", "logger=wandb",
                                      *data_overrides])
    train(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # the run config records the environment (offline, W&B keeps it as JSON in the run's log file,
    # complete once the run is finished, as train's command line finishes it)
    wandb.finish()
    [log] = runs[0].glob("*.wandb")
    assert f'"lock":{json.dumps(lock_hash())},"commit":{json.dumps(git_commit())}'.encode() in log.read_bytes()


def _train_cli(args, cwd):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-m", "fer_mm.train", *args], capture_output=True, text=True, env=env, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + out.stderr


@pytest.mark.slow  # in the slow job: the default suite stays under 10 minutes on 2 cores
def test_hyperparameter_by_fold_multirun_one_folder_each_and_rerun_skips(tmp_path, data_overrides):
    base = ["experiment=ar2_video", "debug=limit", "logger=none", f"paths.log_dir={tmp_path}", *data_overrides]
    log = _train_cli(["-m", "model.optimizer.lr=1e-3,5e-2", "cv.fold=0,1", *base], tmp_path)
    sweep = tmp_path / "ar2_video" / "loso"
    configs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(configs) == 2, log[-2000:]  # one folder per config ...
    lrs = set()
    for config in configs:
        assert sorted(p.name for p in config.iterdir() if p.is_dir()) == ["fold_0", "fold_1"]  # ... and per fold
        records = [json.loads((config / f / "metrics.json").read_text()) for f in ("fold_0", "fold_1")]
        assert [r["actors"]["test"] for r in records] == [[1001], [1002]]
        assert {r["config_hash"] for r in records} == {config.name}
        lrs.add(records[0]["config"]["model"]["optimizer"]["lr"])
        assert (config / "config.yaml").is_file()  # what the hash covers
    assert lrs == {1e-3, 5e-2}
    stamps = sorted(p.stat().st_mtime_ns for p in sweep.rglob("metrics.json"))
    # the same configs again, one as a single run with the default lr spelled another way: all skipped
    again = _train_cli(["-m", "model.optimizer.lr=0.05,0.001", "cv.fold=0,1", *base], tmp_path)
    single = _train_cli(["cv.fold=1", *base], tmp_path)
    assert again.count("already done") == 4 and single.count("already done") == 1
    assert stamps == sorted(p.stat().st_mtime_ns for p in sweep.rglob("metrics.json"))


def test_changed_config_never_reuses_results(tmp_path, data_overrides, make_cfg):
    first = train(make_cfg(tmp_path, ["experiment=ar2_video", "debug=limit", "logger=none", *data_overrides]))
    same = ["logger=csv", "data.num_workers=2", "trainer.log_every_n_steps=1"]  # logging and workers: same config
    assert train(make_cfg(tmp_path, ["experiment=ar2_video", "debug=limit", *data_overrides, *same])) == first
    changed = make_cfg(tmp_path, ["experiment=ar2_video", "debug=limit", "logger=none", "model.optimizer.lr=0.05",
                                  *data_overrides])
    with pytest.raises(RuntimeError, match="holds the results of another config"):
        train(changed)  # forced into the first run's folder: refused, not reused
    with open_dict(changed):
        changed.overwrite = True
    replaced = train(changed)
    assert replaced["config_hash"] != first["config_hash"]
    assert replaced["config"]["model"]["optimizer"]["lr"] == 0.05


def test_wrong_config_names_the_key(tmp_path, data_overrides, make_cfg):
    cfg = make_cfg(tmp_path, ["experiment=ar1_video", "debug=fast", "cv.fold=7", *data_overrides])
    with pytest.raises(ValueError, match="cv.fold=7"):
        train(cfg)
    with pytest.raises(Exception, match="model.net.name='nope'"):
        train(make_cfg(tmp_path / "b", ["debug=fast", "model.net.name=nope", *data_overrides]))


@pytest.mark.parametrize("cv, folds", [("speaker_kfold", 2), ("split", 1), ("speaker_partition", 5)])
def test_other_protocols_train(cv, folds, tmp_path, data_overrides, make_cfg):
    extra = ["cv.protocol.k=2"] if cv == "speaker_kfold" else []
    cfg = make_cfg(tmp_path, ["experiment=ar2_video", "debug=fast", f"cv={cv}", *extra,
                              *data_overrides])
    m = train(cfg)
    parts = m["actors"]
    assert m["protocol"] == cv and m["folds_total"] == folds and parts["test"] and parts["val"] and parts["train"]
    assert not set(parts["test"]) & set(parts["train"] + parts["val"])


def test_logmel_frontend_trains(tmp_path, data_overrides, make_cfg):
    cfg = make_cfg(tmp_path, ["experiment=ar5_audio_only", "debug=fast", "model.inputs.audio.frontend=logmel",
                              *data_overrides])
    assert 0 <= train(cfg)["test/acc"] <= 1


@pytest.mark.parametrize("overrides, key, expected", [
    (["hydra/launcher=parallel"], "hydra.launcher._target_", "JoblibLauncher"),
    (["hydra/launcher=slurm"], "hydra.launcher._target_", "SlurmLauncher"),
    (["trainer=gpu"], "trainer.accelerator", "auto"),
    (["trainer=ddp"], "trainer.strategy", "ddp"),
])
def test_launcher_and_device_configs_compose(overrides, key, expected):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fer_mm.runs import config_hash
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=ar5_fusion", *overrides], return_hydra_config=True)
    assert expected in str(OmegaConf.select(cfg, key))
    assert cfg.hydra.sweep.subdir == f"{config_hash(cfg)}/fold_0"  # sweep folders: config, then fold


def test_class_weights_balanced_and_checked(tmp_path, data_overrides, make_cfg):
    cfg = make_cfg(tmp_path / "a", ["experiment=ar2_video", "debug=fast", "model.class_weights=balanced",
                                    *data_overrides])
    assert 0 <= train(cfg)["test/acc"] <= 1
    cfg = make_cfg(tmp_path / "b", ["experiment=ar2_video", "debug=fast", "model.class_weights=[1,2,3]",
                                    *data_overrides])
    with pytest.raises(Exception, match="model.class_weights has 3 values for 6 classes"):
        train(cfg)


def test_init_from_loads_only_weights_safely(tmp_path, data_overrides, make_cfg):
    first = train(make_cfg(tmp_path / "a", ["experiment=ar2_video", "debug=limit", "logger=none", *data_overrides]))
    from fer_mm.system import EmotionSystem
    trained = EmotionSystem.load_from_checkpoint(first["best_checkpoint"], map_location="cpu")
    started = EmotionSystem(net={"name": "ar2"}, init_from=first["best_checkpoint"])
    for (name, a), b in zip(trained.net.state_dict().items(), started.net.state_dict().values()):
        assert torch.equal(a, b), name
    assert "init_from" not in started.hparams  # its checkpoints load without the stage-one file
    import pickle
    (tmp_path / "code.ckpt").write_bytes(pickle.dumps({"state_dict": {"net.x": print}}))  # an object, not weights
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        EmotionSystem(net={"name": "ar2"}, init_from=str(tmp_path / "code.ckpt"))
    torch.save({"state_dict": {"head.weight": torch.zeros(1)}}, tmp_path / "empty.ckpt")
    with pytest.raises(ValueError, match="model.init_from=.*no model weights"):
        EmotionSystem(net={"name": "ar2"}, init_from=str(tmp_path / "empty.ckpt"))


@pytest.mark.slow  # in the slow job: the default suite stays under 10 minutes on 2 cores
def test_parallel_launcher_names_folders_by_config_and_fold(tmp_path, data_overrides):
    # the joblib launcher resolves the run folder in its worker processes: the ${run_id:} resolver must be there
    log = _train_cli(["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "experiment=ar2_video",
                      "debug=fast", "cv.fold=0,1", f"paths.log_dir={tmp_path}", *data_overrides], tmp_path)
    [config] = [p for p in (tmp_path / "ar2_video" / "loso").iterdir() if p.is_dir()]
    assert len(config.name) == 8, log[-2000:]
    assert sorted(p.parent.name for p in config.glob("fold_*/predictions.csv")) == ["fold_0", "fold_1"]
