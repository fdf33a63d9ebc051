"""The LightningModule: input transforms, loss, metrics and optimisation around a model."""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Callable, Sequence

import pytorch_lightning as pl
import torch

from fer_mm.balancing import (DEFAULT_ALPHA, branch_scores, check_method, discrepancy, modulate_gradients,
                              ogm_coefficients, opm_drop_probabilities, opm_keep)
from fer_mm.evaluation import METRIC_NAMES, ConfusionMetric, TaskMetric
from fer_mm.losses import emotion_loss, mixup, task_loss
from fer_mm.models import get_model
from fer_mm.models.base import FRAMES, precise_batch_norms
from fer_mm.models.fusion import FusionModel
from fer_mm.models.inputs import ModelInputs
from fer_mm.models.multitask import MultiTaskModel, age_groups, age_loss

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
        tasks: other tasks learnt with emotion, each with its loss ``weight``: ``gender``
            (cross-entropy), ``age`` (in years: ``loss: l1`` or ``mse``; or ``groups: [0, 5, ...]``,
            a cross-entropy over age groups), ``au`` (binary cross-entropy per action
            unit; ``ids`` lists them, ``pos_weight: balanced`` weighs each unit's presence by its
            absence in the training images, set by training once the split is known), plus
            ``emotion`` for the emotion loss's weight (default 1);
            ``hidden`` sets the heads' hidden width (see :class:`MultiTaskModel`). Clips whose
            target is unknown count in no loss or metric of that task: an emotion label of -1
            too (a dataset without emotion labels, mixed with one that has them).

        label_smoothing: the training loss's label smoothing (0: none; validation and test losses
            are always the plain cross-entropy).
        mixup: mixup's Beta(alpha, alpha) parameter (Zhang et al. 2018): in training, each batch's
            inputs (faces and spectrograms alike) and targets are mixed with a shuffled copy of
            itself; 0 turns it off.
        aux_weight: a fused model (video and audio) gets a classifier on each branch's own
            embedding, trained with this weight beside the fused loss (0: none).
        balance: modality balancing of a fused model, ``none``, ``ogm``, ``ogm_ge`` or ``opm``
            (:mod:`fer_mm.balancing`), with ``balance_alpha`` (None: the method's default).
        precise_bn: before each validation in training, the batch norms' running statistics are
            recomputed (an exact average, with the current weights) from the epoch's last
            ``precise_bn`` training batches, as precise BN does (Wu & Johnson 2021): a network whose
            weights move faster than the running averages follow is then read as it trains. 0: off
            (the running averages as they are). Needs validation batches (it runs before them).

    OGM scales the gradients of a step by that step's coefficients: with gradient accumulation, by
    the last batch's.

    ``net.num_classes: 0`` (data without emotion labels, such as UTKFace alone) builds a model
    without an emotion classifier: it learns only its tasks, and logs no emotion metric.

    A fused model's branches are also read alone (:meth:`FusionModel.branch_logits`): each one's
    accuracy inside the fused model is logged per epoch (``val/video_acc``, ``val/audio_acc``;
    in training too where the auxiliary heads or balancing compute them) and kept in the test
    predictions (``pred_video``, ``pred_audio``).
    """

    def __init__(self, net: dict, inputs: dict | None = None,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None, class_weights: Sequence[float] | None = None,
                 init_from: str | None = None, tasks: dict | None = None, label_smoothing: float = 0.0,
                 mixup: float = 0.0, aux_weight: float = 0.0, balance: str = "none",
                 balance_alpha: float | None = None, precise_bn: int = 0):
        super().__init__()
        # init_from is left out: a checkpoint holds its weights already and must load on its own
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "init_from"])
        net, inputs = dict(net), dict(inputs or {})
        if "frames" in net:
            raise ValueError("model.net.frames is not a setting: the frame count is model.inputs.frames")
        self.num_classes = int(net.get("num_classes", 6))
        self.net = get_model(net.pop("name"), frames=int(inputs.get("frames", FRAMES)), **net)
        self._set_recipe(label_smoothing, mixup, aux_weight, balance, balance_alpha, bool(tasks))
        if precise_bn < 0:
            raise ValueError(f"model.precise_bn is a number of training batches, 0 or more, got {precise_bn}")
        self.precise_bn = int(precise_bn)
        self._recent_batches: list[dict] = []  # the epoch's last training batches, for precise_bn
        tasks = {task: dict(spec or {}) for task, spec in (tasks or {}).items()}
        emotion_weight = float(tasks.pop("emotion", {}).get("weight", 1.0))
        if self.num_classes == 0 and not tasks:
            raise ValueError("model.net.num_classes=0 builds no emotion classifier: give the model another task "
                             "(+model.tasks.gender.weight=1, +model.tasks.age.weight=1, or experiment=utkface_gender, "
                             "utkface_age, imdb_wiki_gender_age), or data with emotion labels")
        self.loss_weights = {"emotion": emotion_weight} if self.num_classes else {}
        self.age_groups, self.age_loss = age_groups(tasks.get("age")), age_loss(tasks.get("age"))
        if tasks:
            hidden = {int(spec.pop("hidden")) for spec in tasks.values() if "hidden" in spec} or {64}
            self.loss_weights.update({task: float(spec.get("weight", 1.0)) for task, spec in tasks.items()})
            self.net = MultiTaskModel(self.net, tasks, hidden=hidden.pop(), emotion=self.num_classes > 0)
        self.au_ids = [int(a) for a in tasks["au"]["ids"]] if "au" in tasks else []
        pos_weight = tasks.get("au", {}).get("pos_weight")
        if pos_weight not in (None, "balanced"):
            raise ValueError(f"model.tasks.au.pos_weight={pos_weight!r}: use balanced or null")
        self.balanced_aus = pos_weight == "balanced"
        # set by training from the training images when balanced; saved, so a reloaded model's loss is the same
        self.register_buffer("au_pos_weight", torch.ones(len(self.au_ids)) if self.au_ids else None)
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
            setattr(self, f"{stage}_tasks", TaskMetric(len(self.au_ids), self.age_groups))
            if self.fused:
                setattr(self, f"{stage}_branches", torch.nn.ModuleDict(
                    {m: ConfusionMetric(self.num_classes) for m in self.fusion.branches}))
        self.test_outputs: list[dict[str, torch.Tensor]] = []
        # the balancing's state from the last training step (device tensors): OGM's coefficients for
        # the gradients of this step, OPM's discrepancy ratios for the next step's forward pass
        self._ogm: dict[str, torch.Tensor] = {}
        self._ratios: dict[str, torch.Tensor] = {}

    def _set_recipe(self, label_smoothing: float, mixup: float, aux_weight: float, balance: str,
                    balance_alpha: float | None, tasks: bool) -> None:
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}")
        if mixup < 0:
            raise ValueError(f"model.mixup is Beta(alpha, alpha)'s alpha, 0 or more (0: off), got {mixup}")
        if mixup and tasks:
            raise ValueError("model.mixup mixes emotion targets only: train it without model.tasks")
        self.label_smoothing, self.mixup, self.aux_weight = float(label_smoothing), float(mixup), float(aux_weight)
        self.balance = check_method(balance)
        self.balance_alpha = DEFAULT_ALPHA.get(balance, 0.0) if balance_alpha is None else float(balance_alpha)
        if (aux_weight or balance != "none") and not self.fused:
            keys = " and ".join(k for k, on in ((f"model.aux_weight={aux_weight}", aux_weight),
                                                (f"model.balance={balance!r}", balance != "none")) if on)
            raise ValueError(f"{keys} act on a fused model's two branches, and {type(self.net).__name__} with "
                             f"modalities {list(self.net.modalities)} is not one: use ar5, late_fusion or "
                             f"cross_attention with modalities [video, audio]")
        if aux_weight:
            self.fusion.add_aux_heads(self.num_classes)

    @property
    def fusion(self) -> FusionModel | None:
        """The fused model inside (under the task heads too), where the model fuses two modalities."""
        net = self.net.base if isinstance(self.net, MultiTaskModel) else self.net
        return net if isinstance(net, FusionModel) and len(net.branches) > 1 else None

    @property
    def fused(self) -> bool:
        return self.fusion is not None and self.num_classes > 0

    @property
    def plain_training(self) -> bool:
        """Whether training is one cross-entropy per step with nothing beside it (what folds trained
        together, :mod:`fer_mm.stacked`, reproduce)."""
        return not (self.label_smoothing or self.mixup or self.aux_weight or self.balance != "none"
                    or self.precise_bn)

    def _load_net_weights(self, path: str) -> None:
        # weights only: a checkpoint is data, never code to run
        state = torch.load(path, map_location="cpu", weights_only=True).get("state_dict", {})
        weights = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
        if not weights:
            raise ValueError(f"model.init_from={path}: the checkpoint holds no model weights (no 'net.' keys)")
        # a single-task checkpoint into a model with task heads: its weights are the base model's
        target = self.net.base if isinstance(self.net, MultiTaskModel) and not any(
            k.startswith("base.") for k in weights) else self.net
        _, unexpected = target.load_state_dict(weights, strict=False)
        if len(unexpected) == len(weights):
            raise ValueError(f"model.init_from={path}: none of its weights fit this model (another architecture?)")

    def _confusion(self, stage: str) -> ConfusionMetric:
        return getattr(self, f"{stage}_confusion")

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.net.modalities

    @property
    def emotion(self) -> bool:
        """Whether the model classifies emotion (``num_classes`` > 0)."""
        return self.num_classes > 0

    @property
    def multitask(self) -> bool:
        return isinstance(self.net, MultiTaskModel)

    @property
    def targets(self) -> dict:
        """The other tasks whose targets batches must carry (the datamodule's ``targets``)."""
        return {task: (self.au_ids if task == "au" else None) for task in self.loss_weights if task != "emotion"}

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits of a batch of raw clip tensors (noise on the audio only in training mode)."""
        return self.net(**self.inputs(batch, augment=self.training))

    def outputs(self, batch: dict, inputs: dict | None = None, keep: dict | None = None,
                branches: bool = False) -> dict[str, torch.Tensor]:
        """Every task's output: ``emotion`` logits, and ``gender`` / ``age`` / ``au`` where the model has
        them; with ``branches``, a fused model's ``branches`` (each branch's own logits). ``inputs``:
        the network's inputs where already made (mixup); ``keep``: per-sample branch masks (OPM)."""
        inputs = self.inputs(batch, augment=self.training) if inputs is None else inputs
        fusion = self.fusion
        if fusion is None:
            return self.net.forward_tasks(**inputs) if self.multitask else {"emotion": self.net(**inputs)}
        embeddings = fusion.embeddings(**inputs)
        x = fusion.fuse(embeddings, keep)
        out = self.net.task_outputs(x) if self.multitask else {"emotion": fusion.forward_head(x)}
        if branches and self.fused:
            out["branches"] = fusion.branch_logits(embeddings)
        return out

    def _emotion_loss(self, logits: torch.Tensor, labels: torch.Tensor, stage: str,
                      mix: tuple | None = None) -> torch.Tensor:
        """The emotion loss (:func:`~fer_mm.losses.emotion_loss`): in training with the label
        smoothing, and with mixup's ``(lam, order)``."""
        return emotion_loss(logits, labels, self.class_weights, self.label_smoothing if stage == "train" else 0.0, mix)

    def _mixed_inputs(self, batch: dict) -> tuple[dict, tuple | None]:
        """The network's inputs, mixed with a shuffled copy in training with mixup (:func:`~fer_mm.losses.mixup`)."""
        inputs = self.inputs(batch, augment=self.training)
        if not (self.training and self.mixup):
            return inputs, None
        return mixup(inputs, self.mixup, len(batch["label"]), batch["label"].device)

    def _step(self, batch: dict, stage: str) -> tuple[torch.Tensor, dict]:
        n = len(batch["label"])
        training = stage == "train"
        inputs, mix = self._mixed_inputs(batch)
        keep = None
        if training and self.balance == "opm" and self._ratios:
            drop = opm_drop_probabilities(self._ratios, self.balance_alpha)
            keep = opm_keep(drop, n, batch["label"].device)
            self.log_dict({f"train/opm_drop_{m}": p for m, p in drop.items()}, on_step=False, on_epoch=True,
                          batch_size=n)
        branches = self.fused and (not training or bool(self.aux_weight) or self.balance != "none")
        outputs = self.outputs(batch, inputs, keep, branches)
        loss = 0.0
        if self.emotion:
            logits = outputs["emotion"]
            loss = self.loss_weights["emotion"] * self._emotion_loss(logits, batch["label"], stage, mix)
            self._confusion(stage).update(logits.detach(), batch["label"])
        for m, z in outputs.get("branches", {}).items():
            getattr(self, f"{stage}_branches")[m].update(z.detach(), batch["label"])
            if training and self.aux_weight:
                loss = loss + self.aux_weight * self._emotion_loss(z, batch["label"], stage, mix)
        if training and self.balance != "none":
            scores = branch_scores(outputs["branches"], batch["label"])
            if self.balance == "opm":
                self._ratios = discrepancy(scores)
            else:
                self._ogm = ogm_coefficients(scores, self.balance_alpha)
                self.log_dict({f"train/ogm_coeff_{m}": k for m, k in self._ogm.items()}, on_step=False,
                              on_epoch=True, batch_size=n)
        for task, weight in self.loss_weights.items():
            if task != "emotion":
                task_loss_value = task_loss(task, outputs[task], batch[task], self.au_pos_weight, self.age_groups,
                                            self.age_loss)
                self.log(f"{stage}/{task}_loss", task_loss_value, on_step=False, on_epoch=True, batch_size=n)
                loss = loss + weight * task_loss_value
        if self.multitask:
            getattr(self, f"{stage}_tasks").update({k: v.detach() for k, v in outputs.items() if k != "branches"},
                                                   batch)
        self.log(f"{stage}/loss", loss, on_step=False, on_epoch=True, prog_bar=stage != "test", batch_size=n)
        return loss, outputs

    def on_fit_start(self) -> None:
        if self.balance != "none" and self.trainer.world_size > 1:
            # each process would modulate by its own batch's ratio after DDP averaged the gradients
            raise ValueError(f"model.balance={self.balance!r} balances one process's batch: train it on one device "
                             f"(not trainer=ddp)")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.balance in ("ogm", "ogm_ge") and self._ogm:
            fusion = self.fusion
            modulate_gradients({m: fusion.branch_parameters(m) for m in fusion.branches}, self._ogm,
                               noise=self.balance == "ogm_ge")

    def _log_scores(self, stage: str) -> None:
        if self.emotion:
            s = self._confusion(stage).compute()
            self.log_dict({f"{stage}/{k}": s[k] for k in METRIC_NAMES}, prog_bar=stage == "val")
            self._confusion(stage).reset()
        if self.fused:
            for m, confusion in getattr(self, f"{stage}_branches").items():
                if int(confusion.confusion.sum()):  # training logs its branches only where it reads them
                    s = confusion.compute()
                    self.log_dict({f"{stage}/{m}_acc": s["acc"], f"{stage}/{m}_uar": s["uar"]})
                confusion.reset()
        if self.multitask:
            tasks = getattr(self, f"{stage}_tasks")
            self.log_dict({f"{stage}/{k}": v for k, v in tasks.compute().items()})
            tasks.reset()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.precise_bn:
            self._recent_batches = (self._recent_batches + [batch])[-self.precise_bn:]
        return self._step(batch, "train")[0]

    def on_validation_epoch_start(self) -> None:
        if self.precise_bn and self._recent_batches and self.trainer.state.fn == "fit":
            self.recompute_batch_norms(self._recent_batches)
            self._recent_batches = []

    def recompute_batch_norms(self, batches: list[dict]) -> None:
        """Every batch norm's running statistics made the exact average over ``batches`` (their
        training inputs, augmented as in training) with the current weights (:func:`precise_batch_norms`),
        in training's precision."""
        trainer = self._trainer
        context = trainer.precision_plugin.forward_context() if trainer is not None else contextlib.nullcontext()
        with context:
            precise_batch_norms(self, lambda batch: self.net(**self.inputs(batch, augment=True)), batches)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, outputs = self._step(batch, "test")
        kept = dict(index=batch["index"].cpu(), label=batch["label"].cpu())
        if self.emotion:
            kept["probs"] = outputs["emotion"].float().softmax(1).cpu()
        for m, z in outputs.get("branches", {}).items():
            kept[f"pred_{m}"] = z.argmax(1).cpu()
        if "gender" in outputs:
            kept["p_male"] = outputs["gender"].float().softmax(1)[:, 1].cpu()
        if "age" in outputs and self.age_groups is None:
            kept["age"] = outputs["age"].float().cpu()
        elif "age" in outputs:
            kept["age_group_probs"] = outputs["age"].float().softmax(1).cpu()
        if "au" in outputs:
            kept["p_au"] = outputs["au"].float().sigmoid().cpu()
        self.test_outputs.append(kept)

    def on_train_epoch_end(self) -> None:
        self._log_scores("train")

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def on_test_epoch_start(self) -> None:
        self.test_outputs.clear()
        self.test_confusion.reset()
        self.test_tasks.reset()
        if self.fused:
            for confusion in self.test_branches.values():
                confusion.reset()

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self(batch).softmax(1)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("model.optimizer is not set")
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = _fused_on_cuda(self.optimizer_factory, params)(params=params)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer),
                                                         "interval": "epoch"}}


def _fused_on_cuda(factory: Callable[..., torch.optim.Optimizer],
                   params: list) -> Callable[..., torch.optim.Optimizer]:
    """Adam or AdamW with ``fused=True`` where every parameter is on a GPU and the config set neither
    ``fused`` nor ``foreach``: one kernel for the whole step, and no read of its step count on the
    host. Else the factory as given (so nothing changes on the CPU)."""
    optimizer = factory.func if isinstance(factory, functools.partial) else factory
    if not (isinstance(optimizer, type) and issubclass(optimizer, (torch.optim.Adam, torch.optim.AdamW))):
        return factory
    keywords = getattr(factory, "keywords", {})
    if "fused" in keywords or keywords.get("foreach") or "fused" not in inspect.signature(optimizer).parameters:
        return factory
    if not params or not all(p.is_cuda for p in params):
        return factory
    return functools.partial(factory, fused=True)
