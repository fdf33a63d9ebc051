"""Several folds' models trained at once on one device (``folds_together=K``).

K copies of one network, each initialised as it would be alone, have their parameters and buffers
stacked on a leading fold axis (``torch.func.stack_module_state``) and run with ``torch.func.vmap``:
each layer runs once for all K folds (a convolution becomes one grouped convolution), so a small
network fills a GPU and the host issues K times fewer kernels. Each fold keeps what makes it that
fold: its batches come from its own training actors in its own order (its own loader), batch norm
keeps its own statistics (the buffers are stacked too), Adam(W) updates its slice elementwise as
it would alone, and it selects its best epoch on its own validation actors and stops on its own.

What differs from training a fold alone: the random draws of dropout, flips and audio noise (one
draw for the K folds, not each fold's own stream) and float rounding (grouped kernels sum in
another order). Without those draws, each fold's results equal its results alone within float
tolerance (tests/test_folds.py).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from fer_mm.evaluation import METRIC_NAMES
from fer_mm.system import EmotionSystem

STACKABLE_OPTIMIZERS = (torch.optim.AdamW, torch.optim.Adam)


@dataclass
class Selection:
    """How a fold picks its checkpoint and when it stops: the config's checkpoint and early-stopping
    callbacks' settings (``monitor`` on validation actors, ``mode``; ``patience`` None: no early stop)."""

    monitor: str = "val/uar"
    mode: str = "max"
    patience: int | None = None
    min_delta: float = 0.0

    @classmethod
    def from_callbacks(cls, callbacks: dict) -> "Selection":
        """The settings of a config's ``callbacks`` (its monitoring ModelCheckpoint and its EarlyStopping)."""
        checkpoint = next((c for c in callbacks.values() if c.get("monitor") and "ModelCheckpoint" in c["_target_"]), {})
        stopping = next((c for c in callbacks.values() if "EarlyStopping" in c["_target_"]), None)
        chosen = checkpoint or stopping or {}
        return cls(monitor=chosen.get("monitor", "val/uar"), mode=chosen.get("mode", "max"),
                   patience=int(stopping["patience"]) if stopping else None,
                   min_delta=float(stopping.get("min_delta", 0.0)) if stopping else 0.0)

    def better(self, score: float, best: float, delta: float = 0.0) -> bool:
        if math.isnan(best):  # nothing to beat yet
            return True
        return score - delta > best if self.mode == "max" else score + delta < best


@dataclass
class FoldResult:
    """What training gave one fold: its best weights (the network's state dict, on the CPU), the epoch
    (0-based) and score that chose them, the epochs it trained, and each epoch's logged metrics."""

    best_state: dict | None = None
    best_epoch: int = -1
    best_score: float = float("nan")
    epochs: int = 0
    stopped: bool = False
    history: list[dict] = field(default_factory=list)
    monitor: str = ""  # the validation metric that chose the weights
    wait: int = 0  # early stopping's epochs without improvement, and its best score
    stop_best: float = float("nan")


def optimizer_settings(factory) -> tuple[bool, dict]:
    """(decoupled weight decay, lr/betas/eps/weight_decay) of an Adam or AdamW partial, which the
    stacked update reproduces; another optimizer is refused, naming the key."""
    cls = getattr(factory, "func", factory)
    keywords = dict(getattr(factory, "keywords", {}) or {})
    if cls not in STACKABLE_OPTIMIZERS:
        raise ValueError(f"folds_together>1 trains with Adam or AdamW, but model.optimizer is {cls.__name__}: "
                         f"train one fold at a time (folds_together=1)")
    unsupported = {k for k in ("amsgrad", "maximize") if keywords.get(k)}
    if unsupported:
        raise ValueError(f"folds_together>1 does not support model.optimizer.{sorted(unsupported)[0]}")
    decoupled = cls is torch.optim.AdamW
    return decoupled, dict(lr=float(keywords.get("lr", 1e-3)), betas=tuple(keywords.get("betas", (0.9, 0.999))),
                           eps=float(keywords.get("eps", 1e-8)),
                           weight_decay=float(keywords.get("weight_decay", 1e-2 if decoupled else 0.0)))


def epoch_learning_rates(optimizer_factory, scheduler_factory, epochs: int) -> list[float]:
    """The learning rate of each epoch, as the config's epoch scheduler sets it (replayed on a stand-in)."""
    stand_in = optimizer_factory(params=[torch.zeros(1, requires_grad=True)])
    scheduler = scheduler_factory(optimizer=stand_in) if scheduler_factory is not None else None
    rates = []
    for _ in range(epochs):
        rates.append(float(stand_in.param_groups[0]["lr"]))
        if scheduler is not None:
            stand_in.step()
            scheduler.step()
    return rates


class StackedNets:
    """K networks of one architecture as stacked tensors, run for any subset of the folds with vmap.

    The trainable parameters live in one ``[K, P]`` tensor (``flat``; each network's parameters are
    views of its row), so the optimiser updates all of them, for all folds, in a few kernels."""

    def __init__(self, nets: list[torch.nn.Module], device: torch.device):
        nets = [net.to(device) for net in nets]
        params, self.buffers = stack_module_state(nets)
        self.k = len(nets)
        self.trainable = [n for n, p in nets[0].named_parameters() if p.requires_grad]
        self.frozen = {n: p.detach() for n, p in params.items() if n not in self.trainable}
        self.shapes = {n: params[n].shape[1:] for n in self.trainable}
        self.flat = torch.cat([params[n].detach().reshape(self.k, -1) for n in self.trainable], 1).requires_grad_()
        self.base = copy.deepcopy(nets[0]).to("meta")

    def params(self) -> dict[str, Tensor]:
        """Every parameter, stacked ``[K, ...]``: the trainable ones as views of :attr:`flat` (made anew
        for each forward, so each backward reaches ``flat``)."""
        out, start = dict(self.frozen), 0
        for name in self.trainable:
            size = self.shapes[name].numel()
            out[name] = self.flat[:, start:start + size].view(self.k, *self.shapes[name])
            start += size
        return out

    def _call(self, params, buffers, inputs):
        return functional_call(self.base, (params, buffers), (), inputs)

    def __call__(self, folds: list[int], inputs: dict[str, Tensor], train: bool) -> Tensor:
        """Logits ``[len(folds), B, C]`` of each fold's network on its ``B`` clips (``inputs``: the folds'
        inputs concatenated on the batch axis, in the order of ``folds``)."""
        self.base.train(train)
        params, buffers = self.params(), self.buffers
        every = folds == list(range(self.k))
        if not every:  # a step where some folds have no batch or another batch size (an epoch's end)
            index = torch.tensor(folds, device=self.flat.device)
            params = {n: p[index] for n, p in params.items()}
            buffers = {n: b[index] for n, b in buffers.items()}
        inputs = {k: v.unflatten(0, (len(folds), -1)) for k, v in inputs.items()}
        out = vmap(self._call, randomness="different")(params, buffers, inputs)
        if train and not every:  # batch norm's running statistics, updated in the copies: written back
            with torch.no_grad():
                for name, value in buffers.items():
                    self.buffers[name][index] = value
        return out

    def state(self, k: int) -> dict[str, Tensor]:
        """Fold ``k``'s network as a state dict, copied to the CPU."""
        return {n: t[k].detach().cpu().clone() for n, t in {**self.params(), **self.buffers}.items()}


class StackedAdam:
    """Adam / AdamW over stacked parameters: each fold's row of :attr:`StackedNets.flat` updated
    elementwise as torch's optimizer updates it alone (its single-tensor form), only in the folds that
    took the step. (A parameter that gets no gradient in a step counts as a zero gradient here, where
    torch's optimizer would skip it: no fer-mm network leaves one unused.)"""

    def __init__(self, nets: StackedNets, optimizer_factory):
        self.nets = nets
        self.decoupled, s = optimizer_settings(optimizer_factory)
        self.betas, self.eps, self.weight_decay = s["betas"], s["eps"], s["weight_decay"]
        self.steps = torch.zeros(nets.k, 1, dtype=torch.float64, device=nets.flat.device)
        self.exp_avg, self.exp_avg_sq = torch.zeros_like(nets.flat), torch.zeros_like(nets.flat)

    def zero_grad(self) -> None:
        self.nets.flat.grad = None

    @torch.no_grad()
    def step(self, active: Tensor, lr: float) -> None:
        """One update of the folds where ``active`` ([K] bool) is true, at learning rate ``lr``."""
        param, grad = self.nets.flat, self.nets.flat.grad
        if grad is None:
            return
        beta1, beta2 = self.betas
        keep = active[:, None]
        self.steps += keep
        steps = self.steps.clamp(min=1)
        step_size = (lr / (1 - beta1 ** steps)).float()
        correction2 = ((1 - beta2 ** steps) ** 0.5).float()
        new = param * (1 - lr * self.weight_decay) if self.decoupled else param
        if not self.decoupled and self.weight_decay:
            grad = grad + self.weight_decay * param
        avg = self.exp_avg.lerp(grad, 1 - beta1)
        avg_sq = self.exp_avg_sq * beta2 + (1 - beta2) * grad * grad
        new = new - step_size * avg / (avg_sq.sqrt() / correction2 + self.eps)
        param.copy_(torch.where(keep, new, param))
        self.exp_avg.copy_(torch.where(keep, avg, self.exp_avg))
        self.exp_avg_sq.copy_(torch.where(keep, avg_sq, self.exp_avg_sq))


def _limit(n: int, limit) -> int:
    """Lightning's ``limit_*_batches``: an int caps the batches, a float takes that share of them."""
    if limit is None:
        return n
    return min(n, int(limit)) if isinstance(limit, int) or float(limit) > 1 else int(n * float(limit))


def _grouped(batches: dict[int, dict]) -> list[tuple[list[int], dict]]:
    """The folds' batches of one step, grouped by size (vmap takes equal shapes), each group's batches
    concatenated on the batch axis."""
    sizes: dict[int, list[int]] = {}
    for k, batch in batches.items():
        sizes.setdefault(len(batch["label"]), []).append(k)
    return [(folds, {key: torch.cat([batches[k][key] for k in folds]) for key in batches[folds[0]]})
            for folds in sizes.values()]


@dataclass
class StackedFit:
    """Fits the K folds' systems together (see the module's docstring).

    ``systems`` are the folds' :class:`EmotionSystem` s (emotion only), ``loaders`` each fold's
    ``train`` and ``val`` loaders (made once, as Lightning makes them, so a fold draws its orders as it
    would alone); the other fields are the trainer's settings."""

    systems: list[EmotionSystem]
    loaders: list[dict]
    device: torch.device
    max_epochs: int
    min_epochs: int = 1
    limit_train_batches: object = None
    limit_val_batches: object = None
    precision: str = "32-true"
    selection: Selection = field(default_factory=Selection)
    progress: bool = True

    def __post_init__(self):
        for system in self.systems:
            if len(system.loss_weights) > 1 or not system.emotion:
                raise ValueError("folds_together>1 trains emotion-only systems; model.tasks needs one fold at a time "
                                 "(folds_together=1)")
            if not system.plain_training:
                raise ValueError("folds_together>1 trains with the plain cross-entropy: model.label_smoothing, "
                                 "model.mixup, model.aux_weight and model.balance need one fold at a time "
                                 "(folds_together=1)")
        if str(self.precision).startswith("16"):  # fp16 needs loss scaling, which the stacked update lacks
            raise ValueError("folds_together>1 trains in 32-true or bf16-mixed precision, and this GPU has no bf16: "
                             "set trainer.precision=32-true")
        self.k = len(self.systems)
        self.nets = StackedNets([s.net for s in self.systems], self.device)
        for system in self.systems:
            system.to(self.device)
        self.inputs = self.systems[0].inputs  # the same for every fold: one config
        self.optimizer = StackedAdam(self.nets, self.systems[0].optimizer_factory)
        self.rates = epoch_learning_rates(self.systems[0].optimizer_factory, self.systems[0].scheduler_factory,
                                          self.max_epochs)
        self._masks: dict[tuple[int, ...], Tensor] = {}
        self.results = [FoldResult(monitor=self.selection.monitor) for _ in self.systems]

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=str(self.precision).startswith("bf16"))

    def _losses(self, folds: list[int], logits: Tensor, labels: Tensor, stage: str) -> Tensor:
        """Each fold's emotion loss (its own class weights), its confusion updated; their sum."""
        total = logits.new_zeros((), dtype=torch.float32)
        for j, (k, labels_k) in enumerate(zip(folds, labels.unflatten(0, (len(folds), -1)))):
            system = self.systems[k]
            loss = system.loss_weights["emotion"] * F.cross_entropy(logits[j], labels_k, weight=system.class_weights)
            getattr(system, f"{stage}_confusion").update(logits[j].detach(), labels_k)
            self._sums[k] = self._sums[k] + loss.detach() * len(labels_k)
            self._counts[k] += len(labels_k)
            total = total + loss
        return total

    def _epoch(self, epoch: int, stage: str, bar) -> None:
        train = stage == "train"
        limit = self.limit_train_batches if train else self.limit_val_batches
        live = [k for k in range(self.k) if not self.results[k].stopped]
        loaders = {k: self.loaders[k][stage] for k in live}
        for loader in loaders.values():
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
        steps = {k: _limit(len(loader), limit) for k, loader in loaders.items()}
        iterators = {k: iter(loader) for k, loader in loaders.items()}
        self._sums = {k: torch.zeros((), device=self.device) for k in live}
        self._counts = dict.fromkeys(live, 0)
        for i in range(max(steps.values(), default=0)):
            batches = {k: {key: v.to(self.device, non_blocking=True) for key, v in next(iterators[k]).items()}
                       for k in live if i < steps[k]}
            with torch.set_grad_enabled(train):
                if train:
                    self.optimizer.zero_grad()
                total = None
                for folds, batch in _grouped(batches):
                    with self._autocast():
                        logits = self.nets(folds, self.inputs(batch, augment=train), train)
                    loss = self._losses(folds, logits.float(), batch["label"], stage)
                    total = loss if total is None else total + loss
                if train:
                    total.backward()
                    self.optimizer.step(self._active(tuple(batches)), self.rates[epoch])
            if bar is not None:
                bar.update(1)
        for k in live:
            self._log(k, epoch, stage)

    def _active(self, folds: tuple[int, ...]) -> Tensor:
        """The [K] mask of the folds that took this step, made once per set of folds (no upload per step)."""
        if folds not in self._masks:
            mask = torch.zeros(self.k, dtype=torch.bool)
            mask[list(folds)] = True
            self._masks[folds] = mask.to(self.device)
        return self._masks[folds]

    def _log(self, k: int, epoch: int, stage: str) -> None:
        confusion = getattr(self.systems[k], f"{stage}_confusion")
        scores = confusion.compute()
        confusion.reset()
        loss = float(self._sums[k]) / max(self._counts[k], 1)
        entry = self.results[k].history
        if not entry or entry[-1]["epoch"] != epoch:
            entry.append(dict(epoch=epoch))
        # as Lightning logs them: float32
        entry[-1].update({f"{stage}/{m}": float(torch.tensor(scores[m], dtype=torch.float32)) for m in METRIC_NAMES},
                         **{f"{stage}/loss": float(torch.tensor(loss, dtype=torch.float32))})

    def _select(self, epoch: int) -> None:
        """Each fold's checkpoint choice and early stop after epoch ``epoch``'s validation, as Lightning's
        ModelCheckpoint (a strictly better score) and EarlyStopping (``patience`` epochs without a
        ``min_delta`` improvement, not before ``min_epochs``) decide them."""
        for k, result in enumerate(self.results):
            if result.stopped:
                continue
            result.epochs = epoch + 1
            score = result.history[-1][self.selection.monitor]
            if result.best_epoch < 0 or self.selection.better(score, result.best_score):
                result.best_state, result.best_epoch, result.best_score = self.nets.state(k), epoch, score
            if self.selection.patience is not None:
                if self.selection.better(score, result.stop_best, self.selection.min_delta):
                    result.stop_best, result.wait = score, 0
                else:
                    result.wait += 1
                result.stopped = result.wait >= self.selection.patience and epoch + 1 >= self.min_epochs

    def fit(self) -> list[FoldResult]:
        """Train every fold, each until its last epoch or its early stop; each fold's best weights."""
        for epoch in range(self.max_epochs):
            if all(r.stopped for r in self.results):
                break
            live = [k for k in range(self.k) if not self.results[k].stopped]
            total = max(_limit(len(self.loaders[k]["train"]), self.limit_train_batches) for k in live)
            bar = tqdm(total=total, desc=f"folds together, epoch {epoch}", disable=not self.progress,
                       mininterval=5, leave=False)
            self._epoch(epoch, "train", bar)
            bar.close()
            with torch.no_grad():
                self._epoch(epoch, "val", None)
            self._select(epoch)
        return self.results
