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

import copy
import gc
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
from omegaconf import DictConfig, OmegaConf, open_dict

from fer_mm.evaluation import (predictions_table, print_record_summary, read_run_record, run_record, target_baselines,
                               task_columns, write_run_record)
from fer_mm.files import write_atomic
from fer_mm.models import modality_argument, model_modalities
from fer_mm.runs import TimedCheckpointIO, config_hash, register_resolvers, result_config
from fer_mm.stacked import Selection, StackedFit
from fer_mm.vocab import AUDIO, VIDEO

log = logging.getLogger("fer_mm.train")
register_resolvers()


def _balanced_weights(labels: np.ndarray, num_classes: int) -> list[float]:
    counts = np.bincount(labels[labels >= 0], minlength=num_classes).astype(float)  # -1: no emotion label
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
    """Train on the fold's training actors, select on its validation actors, test on its test actors
    (``folds_together=K``: this fold and the K - 1 after it at once, :func:`train_together`)."""
    check_data_holds_model_inputs(cfg)
    if int(cfg.get("folds_together") or 1) > 1:
        return train_together(cfg)
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
    trainer, started, timings = _fit_and_test(cfg, system, datamodule, loggers, run_dir, run_hash, environment)
    predictions, record = _fold_record(cfg, system, datamodule, trainer, run_hash,
                                       dict(_selection(trainer), seconds=round(time.time() - t0, 1),
                                            timings=dict(timings, total_s=round(time.time() - t0, 3)),
                                            environment=environment,
                                            **({"environment_at_start": started} if started else {}), config=hashed))
    write_run_record(run_dir, record, predictions)
    print_record_summary(record, run_dir)
    return record


def train_together(cfg: DictConfig) -> dict:
    """Folds ``cv.fold`` .. ``cv.fold + K - 1`` (those the protocol has) trained at once on one device
    (:mod:`fer_mm.stacked`), each in its own ``fold_<k>`` folder with its own checkpoint and record, as
    if trained alone; folds already done are skipped. Returns the first fold's record."""
    together, first, run_dir = int(cfg.folds_together), int(cfg.cv.fold), Path(cfg.paths.output_dir)
    if run_dir.name != f"fold_{first}":
        raise ValueError(f"folds_together={together} writes each fold to a fold_<k> folder beside the first one's, "
                         f"but this run's folder {run_dir} is not named fold_{first}")
    if cfg.trainer.get("strategy") == "ddp" or cfg.trainer.get("fast_dev_run"):
        raise ValueError(f"folds_together={together} runs on one device without fast_dev_run: use trainer=default or "
                         f"trainer=gpu, or folds_together=1")
    run_hash, hashed, t0 = config_hash(cfg), result_config(cfg), time.time()
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.trainer.accelerator != "cpu" and \
        torch.cuda.is_available() else torch.device("cpu")
    folds, records = [], {}
    fold, last = first, first + together - 1
    while fold <= last:
        fold_cfg = _fold_config(cfg, fold, run_dir.parent / f"fold_{fold}")
        done = _claim_run_dir(Path(fold_cfg.paths.output_dir), fold_cfg, run_hash)
        if done is not None:
            records[fold] = done
        else:
            pl.seed_everything(cfg.seed, workers=True)  # each fold starts as it would alone
            system, _ = _system_and_loggers(fold_cfg, run_hash, loggers=False)
            datamodule = _fold_data(fold_cfg, system)
            datamodule.device = device
            loaders = dict(train=datamodule.train_dataloader(), val=datamodule.val_dataloader())
            folds.append((fold_cfg, system, datamodule, loaders))
            last = min(last, datamodule.protocol.n_folds(datamodule.cache.clips["actor"].unique()) - 1)
        fold += 1
    if folds:
        fit_start = time.perf_counter()
        results = _fit_folds_together(cfg, folds, device)
        # the stacked fit's seconds are the K folds' together; each fold's upload is its own (0 where shared)
        fit_s = round(time.perf_counter() - fit_start, 3)
        for (fold_cfg, system, datamodule, _), result in zip(folds, results):
            records[int(fold_cfg.cv.fold)] = _test_fold(fold_cfg, system, datamodule, result, run_hash, dict(
                seconds=round(time.time() - t0, 1), config=hashed,
                folds_together=[int(c.cv.fold) for c, *_ in folds]),
                dict(upload_s=round(datamodule.upload_seconds, 3), fit_s=fit_s))
    return records[first]


def _fold_config(cfg: DictConfig, fold: int, output_dir: Path) -> DictConfig:
    fold_cfg = copy.deepcopy(cfg)
    with open_dict(fold_cfg):
        fold_cfg.cv.fold, fold_cfg.paths.output_dir = fold, str(output_dir)
    return fold_cfg


def _fit_folds_together(cfg: DictConfig, folds: list, device: torch.device) -> list:
    """The stacked fit of the folds, with the trainer's and the callbacks' settings."""
    selection = Selection.from_callbacks(OmegaConf.to_container(cfg.get("callbacks") or {}, resolve=True))
    t = cfg.trainer
    return StackedFit([f[1] for f in folds], [f[3] for f in folds], device, max_epochs=int(t.max_epochs),
                      min_epochs=int(t.get("min_epochs") or 1), limit_train_batches=t.get("limit_train_batches"),
                      limit_val_batches=t.get("limit_val_batches"), precision=_supported_precision(
                          t.get("precision", "32-true")), selection=selection,
                      progress=bool(t.get("enable_progress_bar", True))).fit()


def _test_fold(cfg: DictConfig, system, datamodule, result, run_hash: str, extra: dict, timings: dict) -> dict:
    """One fold of a stacked fit: its best weights saved as its checkpoint, its epochs logged, then
    tested and recorded as a fold trained alone is."""
    run_dir = Path(cfg.paths.output_dir)
    system.net.load_state_dict(result.best_state)
    _, loggers = _system_and_loggers(cfg, run_hash, system=system)
    environment = environment_record()
    _log_config(loggers, cfg, run_hash, environment)
    for logger in loggers:
        for step, entry in enumerate(result.history):
            logger.log_metrics(entry, step=step)
    trainer = _make_trainer(cfg, [], loggers)
    t0 = time.perf_counter()
    trainer.test(system, datamodule=datamodule, verbose=False)
    t1 = time.perf_counter()
    best = run_dir / "checkpoints" / "best.ckpt"
    trainer.save_checkpoint(best)
    selection = _selection_fields(result.monitor, str(best), result.best_score, result.epochs)
    timings = dict(timings, test_s=round(t1 - t0, 3), checkpoint_s=round(time.perf_counter() - t1, 3))
    predictions, record = _fold_record(cfg, system, datamodule, trainer, run_hash,
                                       dict(selection, **extra, timings=timings, environment=environment))
    write_run_record(run_dir, record, predictions)
    print_record_summary(record, run_dir)
    for logger in loggers:
        logger.finalize("success")
    _finish_wandb(cfg)  # one W&B run per fold, one after another
    return record


def _system_and_loggers(cfg: DictConfig, run_hash: str, system: pl.LightningModule | None = None,
                        loggers: bool = True) -> tuple[pl.LightningModule, list]:
    """The system (unless given), then the loggers (unless ``loggers`` is false), before any data work:
    one that cannot be built (a broken wandb) stops the run at once."""
    if system is None:
        balanced = cfg.model.class_weights == "balanced"  # known only once the split is made (_fold_data)
        system = hydra.utils.instantiate(cfg.model, class_weights=None if balanced else cfg.model.class_weights)
    tags = [*system.modalities, cfg.cv.name, run_hash]
    made = [hydra.utils.instantiate(c, **({"tags": tags} if "wandb" in c._target_ else {}))
            for c in (cfg.get("logger") or {}).values()] if loggers else []
    return system, made


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


def _log_config(loggers: list, cfg: DictConfig, run_hash: str, environment: dict) -> None:
    for logger in loggers:
        logger.log_hyperparams({"config_hash": run_hash, **OmegaConf.to_container(cfg, resolve=True),
                                "environment": environment})


def _make_trainer(cfg: DictConfig, callbacks: list, loggers: list, **kwargs) -> pl.Trainer:
    """The run's Lightning Trainer (``trainer`` config; bf16 falls back to fp16 where the GPU lacks it)."""
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                   precision=_supported_precision(cfg.trainer.get("precision", "32-true")), **kwargs)


def _finish_wandb(cfg: DictConfig) -> None:
    """End this fold's W&B run, so folds never bleed into one run."""
    wandb = sys.modules.get("wandb")  # absent where it failed to import: nothing to finish
    if wandb is not None and "wandb" in (cfg.get("logger") or {}):
        wandb.finish()


def run_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """The ``callbacks`` group's callbacks, then the trainer config's own display callbacks
    (``trainer.callbacks``; trainer=gpu: a rarely redrawn progress bar), made here because the trainer
    is given ``callbacks=``, which replaces that key; a progress bar only where the trainer shows one."""
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    display = [hydra.utils.instantiate(c) for c in (cfg.trainer.get("callbacks") or [])]
    return callbacks + [c for c in display if cfg.trainer.get("enable_progress_bar", True)
                        or not isinstance(c, pl.callbacks.ProgressBar)]


def _fit_and_test(cfg: DictConfig, system, datamodule, loggers: list, run_dir: Path, run_hash: str,
                  environment: dict) -> tuple[pl.Trainer, dict | None, dict]:
    """Fit (resuming from ``last.ckpt`` where a crash left one), then test the checkpoint chosen on
    validation actors; returns the trainer, for a resumed fold the environment it started under, and
    the seconds its parts took."""
    _log_config(loggers, cfg, run_hash, environment)
    checkpoint_io = TimedCheckpointIO()
    trainer = _make_trainer(cfg, run_callbacks(cfg), loggers, plugins=[checkpoint_io])
    last = run_dir / "checkpoints" / "last.ckpt"
    resume = str(last) if last.is_file() and not trainer.fast_dev_run else None
    started = _environment_at_start(run_dir, environment, resume)
    if resume:
        log.info("resuming fold %s from %s", cfg.cv.fold, resume)
    t0 = time.perf_counter()
    trainer.fit(system, datamodule=datamodule, ckpt_path=resume)
    t1 = time.perf_counter()
    trainer.test(system, datamodule=datamodule, ckpt_path=_selected(trainer)[1], verbose=False)
    # seconds of this fold's parts: loading the resident cache (0 where an earlier fold's served),
    # fitting (with validation and checkpoints), testing, and of those the checkpoint writes
    timings = dict(upload_s=round(datamodule.upload_seconds, 3), fit_s=round(t1 - t0, 3),
                   test_s=round(time.perf_counter() - t1, 3), checkpoint_s=round(checkpoint_io.seconds, 3))
    return trainer, started, timings


def _selected(trainer: pl.Trainer):
    """The checkpoint callback that selects (by a monitored validation metric) and its best path, or None."""
    checkpoint = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
    return checkpoint, checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None


def _selection_fields(monitor: str | None, best: str | None, score: float | None, epochs: int) -> dict:
    """The record's fields saying how the fold's weights were chosen."""
    return dict(best_checkpoint=best,
                selected_by=f"{monitor} on validation actors" if best else "last epoch (no checkpointing)",
                best_val=score if best else None, epochs=int(epochs))


def _selection(trainer: pl.Trainer) -> dict:
    """How a fitted trainer chose the fold's weights."""
    checkpoint, best = _selected(trainer)
    score = checkpoint.best_model_score if best else None
    return _selection_fields(checkpoint.monitor if best else None, best, None if score is None else float(score),
                             trainer.current_epoch)


def _fold_record(cfg: DictConfig, system, datamodule, trainer: pl.Trainer, run_hash: str, extra: dict):
    """The fold's predictions table and run record (what it was, what it saw, how it was selected:
    ``extra`` holds :func:`_selection`'s fields)."""
    out = {k: torch.cat([o[k] for o in system.test_outputs]).numpy() for k in system.test_outputs[0]}
    predictions = predictions_table(datamodule.cache.clips.iloc[out["index"]], out["label"], out.get("probs"),
                                    datamodule.class_names, task_columns(out, datamodule.target_arrays, system.au_ids,
                                                                         system.age_groups),
                                    branches={m: out[f"pred_{m}"] for m in system.modalities if f"pred_{m}" in out})
    split, rows = datamodule.split, datamodule.rows
    record = run_record(
        predictions=predictions, class_names=list(datamodule.class_names),
        logged={k: v for k, v in trainer.callback_metrics.items()},
        baselines=target_baselines(datamodule.target_arrays, rows, system.age_groups),
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
        precision=str(trainer.precision),
        device=str(trainer.strategy.root_device),
        world_size=int(trainer.world_size),
        seed=int(cfg.seed),
        data_root=str(datamodule.root),
        **datamodule.record_fields(),
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    finally:
        _finish_wandb(cfg)
        # the fold's trainer, system and datamodule are reference cycles: freed now, before the next
        # fold of a sweep in this process starts (the resident cache they shared stays for it)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return metrics.get("best_val")  # for a sweeper: the validation score, never a test one


if __name__ == "__main__":
    main()
