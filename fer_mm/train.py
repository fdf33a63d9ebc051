"""``python -m fer_mm.train experiment=ar5_fusion [cv.fold=K]``: train and test one fold.

Sweep the folds with Hydra's multirun: ``python -m fer_mm.train -m experiment=ar5_fusion
cv.fold='range(0,12)'``. Each fold writes to its own folder,
``experiments/<experiment>/<protocol>/<config hash>/fold_<k>/`` (see :mod:`fer_mm.runs`): the
resolved config, checkpoints, ``metrics.json`` and ``predictions.csv``. A fold whose
``metrics.json`` exists is skipped, so an interrupted sweep resumes; a fold interrupted
mid-training resumes from its ``last.ckpt``. A changed config gets another folder.
"""

from __future__ import annotations

from fer_mm.environment import environment_record, require, software

if __name__ == "__main__":  # before the imports below: a broken dependency is named with its fix, not hidden
    require("train")

import json
import logging
import shutil
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fer_mm.evaluation import predictions_table, read_run_record, run_record, write_run_record
from fer_mm.files import write_atomic
from fer_mm.models import modality_argument, model_modalities
from fer_mm.runs import config_hash, register_resolvers, result_config
from fer_mm.vocab import AUDIO, VIDEO

log = logging.getLogger("fer_mm.train")
register_resolvers()


def _balanced_weights(labels: np.ndarray, num_classes: int) -> list[float]:
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    return (counts.sum() / (num_classes * np.maximum(counts, 1))).tolist()


def _supported_precision(precision: str) -> str:
    """bf16 where the GPU has it; older cards (before Ampere) get fp16 mixed precision instead."""
    if str(precision).startswith("bf16") and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        log.warning("trainer.precision=%s: %s has no bf16, using 16-mixed", precision, torch.cuda.get_device_name())
        return "16-mixed"
    return precision


def check_data_holds_model_inputs(cfg: DictConfig) -> None:
    """Refuse a model that reads a modality its data does not hold (``data.samples.audio: false``),
    naming both config choices and the fix, before the run folder is claimed or any model or data made;
    the model's modalities come from its builder's arguments (:func:`fer_mm.models.model_modalities`)."""
    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    name = net.pop("name")
    reads = model_modalities(name, **net)
    holds = (VIDEO, AUDIO) if (cfg.data.get("samples") or {}).get("audio", True) else (VIDEO,)
    missing, kept = [m for m in reads if m not in holds], [m for m in reads if m in holds]
    if not missing:
        return
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    key = modality_argument(name)
    fix = "a model that reads video" if not kept else \
        f"model.net.{key}=" + (f"[{','.join(kept)}]" if key == "modalities" else kept[0])
    raise ValueError(f"model={choices.get('model', name)} reads {' and '.join(missing)}, which "
                     f"data={choices.get('data', '<this data>')} does not hold (data.samples.audio=false): use {fix}")


def _claim_run_dir(run_dir: Path, cfg: DictConfig, run_hash: str) -> dict | None:
    """The finished record to reuse, or None to (re)train here; never another config's results."""
    saved = run_dir / "config.yaml"
    if cfg.overwrite:
        for stale in ("metrics.json", "predictions.csv"):
            (run_dir / stale).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # a re-run starts afresh, it does not resume
    elif saved.is_file():
        other = OmegaConf.load(saved).get("config_hash")
        if other != run_hash:
            raise RuntimeError(f"{run_dir} holds the results of another config (hash {other}, this one is {run_hash}); "
                               f"choose another folder or pass overwrite=true to replace them")
        if (run_dir / "metrics.json").is_file():
            return read_run_record(run_dir)[0]
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    write_atomic(saved, OmegaConf.to_yaml({"config_hash": run_hash, **resolved}))
    if run_dir.parent.name == run_hash:  # the layout's config level: what the hash covers, once per config
        write_atomic(run_dir.parent / "config.yaml", OmegaConf.to_yaml(result_config(cfg)))
    return None


def train(cfg: DictConfig) -> dict:
    """Train on the fold's training actors, select on its validation actors, test on its test actors."""
    check_data_holds_model_inputs(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_hash = config_hash(cfg)
    hashed = result_config(cfg)  # now: instantiating the data config resolves some of cfg's aliases in place
    done = _claim_run_dir(run_dir, cfg, run_hash)
    if done is not None:
        log.info("fold %s of config %s already done (%s): skipped; overwrite=true re-runs it",
                 cfg.cv.fold, run_hash, run_dir / "metrics.json")
        return done
    pl.seed_everything(cfg.seed, workers=True)
    t0 = time.time()
    system, loggers = _system_and_loggers(cfg, run_hash)
    datamodule = _fold_data(cfg, system)
    environment = environment_record()
    trainer, started = _fit_and_test(cfg, system, datamodule, loggers, run_dir, run_hash, environment)
    predictions, record = _fold_record(cfg, system, datamodule, trainer, run_hash,
                                       dict(seconds=round(time.time() - t0, 1), environment=environment,
                                            **({"environment_at_start": started} if started else {}), config=hashed))
    write_run_record(run_dir, record, predictions)
    _print_summary(record, run_dir)
    return record


def _system_and_loggers(cfg: DictConfig, run_hash: str) -> tuple[pl.LightningModule, list]:
    """The system, then the loggers, before any data work: one that cannot be built (a broken wandb)
    stops the run at once."""
    balanced = cfg.model.class_weights == "balanced"  # known only once the split is made (_fold_data)
    system = hydra.utils.instantiate(cfg.model, class_weights=None if balanced else cfg.model.class_weights)
    tags = [*system.modalities, cfg.cv.name, run_hash]
    loggers = [hydra.utils.instantiate(c, **({"tags": tags} if "wandb" in c._target_ else {}))
               for c in (cfg.get("logger") or {}).values()]
    return system, loggers


def _fold_data(cfg: DictConfig, system: pl.LightningModule) -> pl.LightningDataModule:
    """The fold's data, split; the loss weights that depend on its training part set on ``system``."""
    datamodule = hydra.utils.instantiate(cfg.data, clip_spec=system.inputs.clip_spec, targets=system.targets)
    datamodule.prepare_data()
    if system.num_classes != len(datamodule.class_names):
        raise ValueError(f"model.net.num_classes={system.num_classes}, but the data has {len(datamodule.class_names)} "
                         f"classes ({', '.join(datamodule.class_names)}): set model.net.num_classes="
                         f"{len(datamodule.class_names)}")
    datamodule.setup("fit")
    if cfg.model.class_weights == "balanced":
        labels = datamodule.cache.clips["label"].to_numpy()[datamodule.rows["train"]]
        system.class_weights = torch.tensor(_balanced_weights(labels, system.num_classes))
    if system.balanced_aus:  # each unit's absent / present count in the training images
        aus = datamodule.target_arrays["au"][datamodule.rows["train"]]
        present, known = np.nansum(aus, 0), (~np.isnan(aus)).sum(0)
        weights = np.where(present > 0, (known - present) / np.maximum(present, 1), 1.0)  # 1: never present
        system.au_pos_weight = torch.tensor(weights, dtype=torch.float32)
    return datamodule


def run_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """The ``callbacks`` group's callbacks, then the trainer config's own display callbacks
    (``trainer.callbacks``; trainer=gpu: a rarely redrawn progress bar), made here because the trainer
    is given ``callbacks=``, which replaces that key; a progress bar only where the trainer shows one."""
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    display = [hydra.utils.instantiate(c) for c in (cfg.trainer.get("callbacks") or [])]
    return callbacks + [c for c in display if cfg.trainer.get("enable_progress_bar", True)
                        or not isinstance(c, pl.callbacks.ProgressBar)]


def _fit_and_test(cfg: DictConfig, system, datamodule, loggers: list, run_dir: Path, run_hash: str,
                  environment: dict) -> tuple[pl.Trainer, dict | None]:
    """Fit (resuming from ``last.ckpt`` where a crash left one), then test the checkpoint chosen on
    validation actors; returns the trainer and, for a resumed fold, the environment it started under."""
    callbacks = run_callbacks(cfg)
    for logger in loggers:
        logger.log_hyperparams({"config_hash": run_hash, **OmegaConf.to_container(cfg, resolve=True),
                                "environment": environment})
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                                  precision=_supported_precision(cfg.trainer.get("precision", "32-true")))
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = str(last) if last.is_file() and not trainer.fast_dev_run else None
    started = _environment_at_start(run_dir, environment, resume)
    if resume:
        log.info("resuming fold %s from %s", cfg.cv.fold, resume)
    trainer.fit(system, datamodule=datamodule, ckpt_path=resume)
    trainer.test(system, datamodule=datamodule, ckpt_path=_selected(trainer)[1], verbose=False)
    return trainer, started


def _selected(trainer: pl.Trainer):
    """The checkpoint callback that selects (by a monitored validation metric) and its best path, or None."""
    checkpoint = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
    return checkpoint, checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None


def _fold_record(cfg: DictConfig, system, datamodule, trainer: pl.Trainer, run_hash: str, extra: dict):
    """The fold's predictions table and run record (what it was, what it saw, how it was selected)."""
    checkpoint, best = _selected(trainer)
    out = {k: torch.cat([o[k] for o in system.test_outputs]).numpy() for k in system.test_outputs[0]}
    predictions = predictions_table(datamodule.cache.clips.iloc[out["index"]], out["label"], out["probs"],
                                    datamodule.class_names, _task_columns(out, datamodule.target_arrays, system.au_ids))
    split, rows = datamodule.split, datamodule.rows
    record = run_record(
        predictions=predictions, class_names=list(datamodule.class_names),
        logged={k: v for k, v in trainer.callback_metrics.items()},
        baselines=_baselines(datamodule.target_arrays, rows),
        experiment=cfg.task_name,
        fold=int(cfg.cv.fold),
        folds_total=datamodule.protocol.n_folds(datamodule.cache.clips["actor"].unique()),
        protocol=cfg.cv.name,
        config_hash=run_hash,
        speaker_independent=datamodule.subject_independent,
        label=datamodule.label_source,
        dataset=datamodule.dataset_id,
        twin=datamodule.twin_spec,
        model=cfg.model.net.name,
        modalities=list(system.modalities),
        n_clips=dict(train=len(rows["train"]), val=len(rows["val"]), test=len(predictions)),
        actors=dict(train=list(split.train), val=list(split.val), test=list(split.test)),
        best_checkpoint=best,
        selected_by=f"{checkpoint.monitor} on validation actors" if best else "last epoch (no checkpointing)",
        best_val=float(checkpoint.best_model_score) if best and checkpoint.best_model_score is not None else None,
        epochs=int(trainer.current_epoch),
        precision=str(trainer.precision),
        device=str(trainer.strategy.root_device),
        world_size=int(trainer.world_size),
        seed=int(cfg.seed),
        data_root=str(datamodule.root),
        **extra,
    )
    return predictions, record


def _environment_at_start(run_dir: Path, environment: dict, resume: str | None) -> dict | None:
    """The environment a resumed fold started under, where its software differs from this one (then the
    record keeps both); a fold that starts afresh notes its own, for a later resume to compare."""
    path = run_dir / "environment.json"
    if resume and path.is_file():
        before = json.loads(path.read_text())
        if software(before) != software(environment):
            log.warning("fold %s started under other software than it resumes under (lock %s, now %s): "
                        "metrics.json keeps both environments", run_dir.name, before.get("lock"), environment["lock"])
            return before
        return None
    write_atomic(path, json.dumps(environment, indent=2) + "\n")
    return None


def _task_columns(out: dict, targets: dict, au_ids: list[int]) -> dict:
    """The other tasks' (truth, output) pairs for :func:`predictions_table`, in the test outputs' order."""
    rows, columns = out["index"], {}
    for task, output in (("gender", "p_male"), ("age", "age"), ("au", "p_au")):
        if output in out:
            columns[task] = (targets[task][rows], out[output])
    return dict(columns, au_ids=au_ids) if columns else {}


def _baselines(targets: dict, rows: dict) -> dict:
    """What a model that ignores its input scores on the test clips: the training clips' most
    common gender, and their mean age."""
    out = {}
    if "gender" in targets:
        train, test = (targets["gender"][rows[p]] for p in ("train", "test"))
        train, test = train[train >= 0], test[test >= 0]
        if len(train) and len(test):
            out["gender"] = float((test == np.bincount(train).argmax()).mean())
    if "age" in targets:
        train, test = (targets["age"][rows[p]] for p in ("train", "test"))
        train, test = train[~np.isnan(train)], test[~np.isnan(test)]
        if len(train) and len(test):
            out["age"] = float(np.abs(test - train.mean()).mean())
    return out


def _print_summary(m: dict, run_dir: Path) -> None:
    print(f"\n{m['experiment']}  {m['protocol']} fold {m['fold']}  config {m['config_hash']}  test actors "
          f"{m['actors']['test']}  ({m['n_clips']['test']} clips, {m['label']})")
    print("  " + "  ".join(f"{k} {m[k]:.4f}" for k in ("test/acc", "test/uar", "test/f1", "test/loss") if k in m))
    tasks = m.get("tasks", {})
    if tasks:
        parts = [f"gender acc {tasks['gender']['acc']:.4f}" if "gender" in tasks else "",
                 f"age MAE {tasks['age']['mae']:.2f} years" if "age" in tasks else "",
                 f"AU F1 {tasks['au']['f1_macro']:.4f}" if "au" in tasks else ""]
        print("  " + "  ".join(p for p in parts if p))
    print(f"  checkpoint: {m['selected_by']}; run folder: {run_dir}\n")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    finally:
        wandb = sys.modules.get("wandb")  # absent where it failed to import: nothing to finish
        if wandb is not None and "wandb" in (cfg.get("logger") or {}):
            wandb.finish()  # folds of a sweep never bleed into one W&B run
    return metrics.get("best_val")  # for a sweeper: the validation score, never a test one


if __name__ == "__main__":
    main()
