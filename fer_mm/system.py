"""The LightningModule: input transforms, loss, metrics and optimisation around a model."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from fer_mm.evaluation import METRIC_NAMES, ConfusionMetric
from fer_mm.models import get_model
from fer_mm.models.inputs import ModelInputs

STAGES = ("train", "val", "test")


class EmotionSystem(pl.LightningModule):
    """Cross-entropy classification of clips with any registered model.

    Takes batches of raw clip tensors (sampled uint8 face frames, padded waveforms; see
    :mod:`fer_mm.data.clips`) and owns what turns them into the network's inputs
    (:class:`ModelInputs`: frame normalisation, the audio front-end and its noise in training).
    Its arguments are saved with the checkpoint, so ``EmotionSystem.load_from_checkpoint(path)``
    rebuilds the model and its inputs without the run's config.

    Args:
        net: the model's registry name and arguments (``{"name": "ar5", ...}``).
        inputs: :class:`ModelInputs` arguments (frames, sample_rate, max_audio_seconds, audio).
        optimizer: a partial optimizer (Hydra ``_partial_: true``), completed with the parameters.
        scheduler: optional partial LR scheduler, completed with the optimizer.
        class_weights: optional cross-entropy weights, one per class.
        init_from: optional checkpoint whose model weights are loaded first (AR4's second stage).
    """

    def __init__(self, net: dict, inputs: dict | None = None,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None, class_weights: Sequence[float] | None = None,
                 init_from: str | None = None):
        super().__init__()
        # init_from is left out: a checkpoint holds its weights already and must load on its own
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "init_from"])
        net, inputs = dict(net), dict(inputs or {})
        if "frames" in net:
            raise ValueError("model.net.frames is not a setting: the frame count is model.inputs.frames")
        self.num_classes = int(net.get("num_classes", 6))
        self.net = get_model(net.pop("name"), frames=int(inputs.get("frames", 20)), **net)
        self.inputs = ModelInputs(self.net.modalities, **inputs)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        weights = torch.tensor(class_weights, dtype=torch.float) if class_weights is not None else None
        if weights is not None and len(weights) != self.num_classes:
            raise ValueError(f"model.class_weights has {len(weights)} values for {self.num_classes} classes")
        self.register_buffer("class_weights", weights, persistent=False)
        if init_from:
            self._load_net_weights(init_from)
        for stage in STAGES:  # one per stage, as Lightning wants metric objects
            setattr(self, f"{stage}_confusion", ConfusionMetric(self.num_classes))
        self.test_outputs: list[dict[str, torch.Tensor]] = []

    def _load_net_weights(self, path: str) -> None:
        # weights only: a checkpoint is data, never code to run
        state = torch.load(path, map_location="cpu", weights_only=True).get("state_dict", {})
        weights = {k: v for k, v in state.items() if k.startswith("net.")}
        if not weights:
            raise ValueError(f"model.init_from={path}: the checkpoint holds no model weights (no 'net.' keys)")
        self.load_state_dict(weights, strict=False)

    def _confusion(self, stage: str) -> ConfusionMetric:
        return getattr(self, f"{stage}_confusion")

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.net.modalities

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits of a batch of raw clip tensors (noise on the audio only in training mode)."""
        return self.net(**self.inputs(batch, augment=self.training))

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch)
        loss = F.cross_entropy(logits, batch["label"], weight=self.class_weights)
        self._confusion(stage).update(logits.detach(), batch["label"])
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test",
                 batch_size=len(batch["label"]))
        return loss, logits

    def _log_scores(self, stage: str) -> None:
        s = self._confusion(stage).compute()
        self.log_dict({f"{stage}/{k}": s[k] for k in METRIC_NAMES}, prog_bar=stage == "val")
        self._confusion(stage).reset()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, logits = self._step(batch, "test")
        self.test_outputs.append(dict(index=batch["index"].cpu(), label=batch["label"].cpu(),
                                      probs=logits.float().softmax(1).cpu()))

    def on_train_epoch_end(self) -> None:
        self._log_scores("train")

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def on_test_epoch_start(self) -> None:
        self.test_outputs.clear()
        self.test_confusion.reset()

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

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
