"""``python -m fer_mm.train experiment=ar5_fusion [cv.fold=K]``: train and test one fold.

Sweep the folds with Hydra's multirun: ``python -m fer_mm.train -m experiment=ar5_fusion
cv.fold='range(0,12)'``. Each fold writes to its own folder (``experiments/<experiment>/<cv>/
fold_<k>/``): the resolved config, checkpoints, ``metrics.json`` and ``predictions.csv``. A fold
whose ``metrics.json`` exists is skipped, so an interrupted sweep resumes; a fold interrupted
mid-training resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from fer_mm.data.synthetic import SPEC_FILE
from fer_mm.files import write_atomic

log = logging.getLogger("fer_mm.train")
LABEL_SOURCE = "acted emotion (from the clip's file name)"


def _balanced_weights(labels: np.ndarray, num_classes: int) -> list[float]:
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    return (counts.sum() / (num_classes * np.maximum(counts, 1))).tolist()


def _predictions(system, datamodule) -> pd.DataFrame:
    out = {k: torch.cat([o[k] for o in system.test_outputs]).numpy() for k in ("index", "label", "probs")}
    clips = datamodule.cache.clips.iloc[out["index"]].reset_index(drop=True)
    names = datamodule.class_names
    pred = out["probs"].argmax(1)
    frame = pd.DataFrame(dict(name=clips["name"], actor=clips["actor"], sentence=clips["sentence"],
                              level=clips["level"], label=out["label"], label_name=[names[i] for i in out["label"]],
                              pred=pred, pred_name=[names[i] for i in pred]))
    for i, name in enumerate(names):
        frame[f"p_{name}"] = out["probs"][:, i].round(6)
    return frame.sort_values("name").reset_index(drop=True)


def train(cfg: DictConfig) -> dict:
    """Train on the fold's training actors, select on its validation actors, test on its test actors."""
    run_dir = Path(cfg.paths.output_dir)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file() and not cfg.overwrite:
        log.info("fold %s already done (%s exists): skipped; overwrite=true re-runs it", cfg.cv.fold, metrics_path)
        return json.loads(metrics_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    pl.seed_everything(cfg.seed, workers=True)
    t0 = time.time()

    balanced = cfg.model.class_weights == "balanced"
    system = hydra.utils.instantiate(cfg.model, class_weights=None if balanced else cfg.model.class_weights)
    datamodule = hydra.utils.instantiate(cfg.data, modalities=list(system.modalities))
    datamodule.prepare_data()
    datamodule.setup("fit")
    if balanced:  # known only once the split is made
        labels = datamodule.cache.clips["label"].to_numpy()[datamodule.rows["train"]]
        system.class_weights = torch.tensor(_balanced_weights(labels, system.num_classes))

    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    tags = [*system.modalities, cfg.cv.name]
    loggers = [hydra.utils.instantiate(c, **({"tags": tags} if "wandb" in c._target_ else {}))
               for c in (cfg.get("logger") or {}).values()]
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    last = run_dir / "checkpoints" / "last.ckpt"
    if cfg.overwrite and last.is_file():
        shutil.rmtree(last.parent)  # a re-run starts afresh, it does not resume the old run
    resume = str(last) if last.is_file() and not trainer.fast_dev_run else None
    if resume:
        log.info("resuming fold %s from %s", cfg.cv.fold, resume)
    trainer.fit(system, datamodule=datamodule, ckpt_path=resume)

    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    trainer.test(system, datamodule=datamodule, ckpt_path=best, verbose=False)

    predictions = _predictions(system, datamodule)
    names = list(datamodule.class_names)
    confusion = system.test_confusion.compute().cpu().numpy()
    recall = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
    split = datamodule.split
    test_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    metrics = dict(
        experiment=cfg.task_name,
        fold=int(cfg.cv.fold),
        protocol=cfg.cv.name,
        speaker_independent=True,
        label=LABEL_SOURCE,
        model=cfg.model.net.name,
        modalities=list(system.modalities),
        **test_metrics,
        per_class_recall=dict(zip(names, recall.round(6).tolist())),
        confusion=confusion.tolist(),
        class_names=names,
        n_clips=dict(train=len(datamodule.rows["train"]), val=len(datamodule.rows["val"]), test=len(predictions)),
        actors=dict(train=list(split.train), val=list(split.val), test=list(split.test)),
        best_checkpoint=best,
        selected_by=f"{checkpoint.monitor} on validation actors" if best else "last epoch (no checkpointing)",
        best_val=float(checkpoint.best_model_score) if best and checkpoint.best_model_score is not None else None,
        epochs=int(trainer.current_epoch),
        seed=int(cfg.seed),
        data_root=str(datamodule.root),
        synthetic=(datamodule.root / SPEC_FILE).is_file(),
        seconds=round(time.time() - t0, 1),
    )
    predictions.to_csv(run_dir / "predictions.csv", index=False)
    write_atomic(metrics_path, json.dumps(metrics, indent=2) + "\n")  # written last: marks the fold done
    _print_summary(metrics, run_dir)
    return metrics


def _print_summary(m: dict, run_dir: Path) -> None:
    print(f"\n{m['experiment']}  {m['protocol']} fold {m['fold']}  test actors {m['actors']['test']}"
          f"  ({m['n_clips']['test']} clips, {m['label']})")
    print("  " + "  ".join(f"{k} {m[k]:.4f}" for k in ("test/acc", "test/uar", "test/f1", "test/loss") if k in m))
    print(f"  checkpoint: {m['selected_by']}; run folder: {run_dir}\n")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    finally:
        if "wandb" in (cfg.get("logger") or {}):
            import wandb

            wandb.finish()  # folds of a sweep never bleed into one W&B run
    return metrics.get("best_val")  # for a sweeper: the validation score, never a test one


if __name__ == "__main__":
    main()
