"""The LightningModule: loss, metrics and optimisation around a model from the registry."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import ConfusionMatrix, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from fer_mm.models import get_model


def stage_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """acc (micro accuracy), uar (unweighted average recall = macro recall), f1 (macro F1)."""
    return MetricCollection({
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "uar": MulticlassRecall(num_classes, average="macro"),
        "f1": MulticlassF1Score(num_classes, average="macro"),
    }, prefix=prefix)


class EmotionSystem(pl.LightningModule):
    """Cross-entropy classification of clips with any registered model.

    Args:
        net: the model's registry name and arguments (``{"name": "ar5", ...}``). Kept as a config
            (saved with the checkpoint), so ``EmotionSystem.load_from_checkpoint(path)`` rebuilds it.
        optimizer: a partial optimizer (Hydra ``_partial_: true``), completed with the parameters.
        scheduler: optional partial LR scheduler, completed with the optimizer.
        class_weights: optional cross-entropy weights, one per class.
        init_from: optional checkpoint whose model weights are loaded first (AR4's second stage).
    """

    def __init__(self, net: dict, optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None, class_weights: Sequence[float] | None = None,
                 init_from: str | None = None):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        net = dict(net)
        self.num_classes = int(net.get("num_classes", 6))
        self.net = get_model(net.pop("name"), **net)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        weights = torch.tensor(class_weights, dtype=torch.float) if class_weights is not None else None
        if weights is not None and len(weights) != self.num_classes:
            raise ValueError(f"model.class_weights has {len(weights)} values for {self.num_classes} classes")
        self.register_buffer("class_weights", weights, persistent=False)
        if init_from:
            state = torch.load(init_from, map_location="cpu", weights_only=False)["state_dict"]
            self.load_state_dict({k: v for k, v in state.items() if k.startswith("net.")}, strict=False)
        self.train_metrics = stage_metrics(self.num_classes, "train/")
        self.val_metrics = stage_metrics(self.num_classes, "val/")
        self.test_metrics = stage_metrics(self.num_classes, "test/")
        self.test_confusion = ConfusionMatrix(task="multiclass", num_classes=self.num_classes)
        self.test_outputs: list[dict[str, torch.Tensor]] = []

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.net.modalities

    def forward(self, batch: dict) -> torch.Tensor:
        return self.net(video=batch.get("video"), audio=batch.get("audio"))

    def _step(self, batch: dict, metrics: MetricCollection, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch)
        loss = F.cross_entropy(logits, batch["label"], weight=self.class_weights)
        metrics.update(logits, batch["label"])
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test",
                 batch_size=len(batch["label"]))
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss, logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.train_metrics, "train")[0]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, self.val_metrics, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, logits = self._step(batch, self.test_metrics, "test")
        self.test_confusion.update(logits, batch["label"])
        self.test_outputs.append(dict(index=batch["index"].cpu(), label=batch["label"].cpu(),
                                      probs=logits.float().softmax(1).cpu()))

    def on_test_epoch_start(self) -> None:
        self.test_outputs.clear()
        self.test_confusion.reset()

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self(batch).softmax(1)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("model.optimizer is not set")
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer),
                                                         "interval": "epoch"}}
