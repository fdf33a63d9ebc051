"""The ``models`` and ``pipeline`` benchmarks: training throughput on ready inputs and along the
whole training path at CREMA-D's size (see :mod:`fer_mm.bench`).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import resource
import statistics
import time
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch

from fer_mm.bench.random_cache import FACE, MemoryCache, memory_cache
from fer_mm.data.clips import ResidentClips, ResidentLoader
from fer_mm.data.protocols import LeaveOneSubjectOut
from fer_mm.models import get_model
from fer_mm.system import EmotionSystem

BENCH_MODELS = ("ar1", "ar2", "ar3", "ar4", "ar5", "resnet18", "inception_v4", "inception_resnet_v2")
PRECISIONS = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}  # --precision -> Lightning's name


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device: torch.device, precision: str):
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype, enabled=precision != "32")


def _median_rate(step, batch: int, steps: int, warmup: int, device: torch.device) -> float:
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def network_label(channels_last: bool, compile: bool) -> str:
    return " + ".join([name for name, on in (("channels_last", channels_last), ("compile", compile)) if on]) or "eager"


def _to_channels_last(t):
    return t.contiguous(memory_format=torch.channels_last) if torch.is_tensor(t) and t.dim() == 4 else t


def _channels_last_inputs(module, args, kwargs):
    return tuple(map(_to_channels_last, args)), {k: _to_channels_last(v) for k, v in kwargs.items()}


def prepare_network(net: torch.nn.Module, channels_last: bool = False, compile: bool = False) -> torch.nn.Module:
    """``net`` in place as both benchmarks time it: its 4-d weights and inputs in channels_last,
    and its calls compiled (``nn.Module.compile``: the same module, its state dict unchanged)."""
    if channels_last:
        for p in net.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
        net.register_forward_pre_hook(_channels_last_inputs, with_kwargs=True)
    if compile:
        net.compile()
    return net


def train_step_throughput(name: str, device: torch.device, batch: int = 32, steps: int = 5, warmup: int = 2,
                          precision: str = "32", channels_last: bool = False, compile: bool = False) -> dict:
    """A model's training steps per second on ready inputs (no data path)."""
    torch.manual_seed(0)
    model = prepare_network(get_model(name).to(device).train(), channels_last, compile)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    video = torch.randn(batch, 20, *FACE, device=device)
    audio = torch.rand(batch, 1, 128, 128, device=device)
    labels = torch.randint(0, 6, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        with _autocast(device, precision):
            loss = torch.nn.functional.cross_entropy(model(video=video, audio=audio), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rate = _median_rate(step, batch, steps, warmup, device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(model=name, samples_per_s=rate, peak_mib=peak)


# ------------------------------------------------------------------------------ pipeline


def bench_system(model: str, frontend: str, tasks: dict | None = None) -> EmotionSystem:
    """The benchmarks' system: ``model`` with the recipe's AdamW, and ``tasks`` heads where given."""
    return EmotionSystem(net={"name": model}, inputs={"audio": {"frontend": frontend}},
                         optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4), tasks=tasks)


class StepTimer(pl.Callback):
    """Samples/s of a Lightning fit from its ``warmup``-th training batch (counted over epochs) to its end."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device = warmup, device
        self.seen, self.t0, self.samples, self.rate = 0, None, 0, float("nan")

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.seen == self.warmup:
            _sync(self.device)
            self.t0 = time.perf_counter()
        if self.t0 is not None:
            self.samples += len(batch["label"])
        self.seen += 1

    def on_train_end(self, trainer, module):
        _sync(self.device)
        if self.t0 is not None:
            self.rate = self.samples / (time.perf_counter() - self.t0)


def _cycle(loader):
    while True:
        yield from loader


@dataclass
class PipelineData:
    """The in-memory cache, fold 0's rows by part, and the cache resident on the device."""

    cache: MemoryCache
    rows: dict[str, np.ndarray]
    resident: ResidentClips
    seconds: float

    @property
    def folds(self) -> int:
        return int(self.cache.clips["actor"].nunique())

    def summary(self) -> str:
        c = self.cache
        return (f"in-memory cache: {len(c.clips)} clips of {self.folds} actors, {len(c.frames):,} frames "
                f"({c.frames.nbytes / 1e9:.2f} GB) and {c.samples.nbytes / 1e9:.2f} GB of audio, made in "
                f"{self.seconds:.0f} s; fold 0: {len(self.rows['train'])} train / {len(self.rows['val'])} val / "
                f"{len(self.rows['test'])} test clips")


def pipeline_data(args: argparse.Namespace, device: torch.device) -> PipelineData:
    t0 = time.perf_counter()
    cache = memory_cache(args.clips, args.actors)
    split = LeaveOneSubjectOut(val_fraction=0.1).split(cache.clips["actor"].unique(), 0)
    actor = cache.clips["actor"].to_numpy()
    rows = {part: np.flatnonzero(np.isin(actor, getattr(split, part))) for part in ("train", "val", "test")}
    spec = bench_system(args.model, args.frontend).inputs.clip_spec
    return PipelineData(cache, rows, ResidentClips(cache, spec, device), time.perf_counter() - t0)


def end_to_end_rate(system: EmotionSystem, loader: ResidentLoader, device: torch.device, precision: str,
                    steps: int, warmup: int) -> float:
    """Training samples/s of ``system`` in a Lightning fit of ``warmup + steps`` steps (over epochs
    where the loader has fewer batches), timed after the warm-up."""
    timer = StepTimer(warmup, device)
    trainer = pl.Trainer(accelerator=device.type, devices=1, precision=PRECISIONS[precision], max_steps=warmup + steps,
                         limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer])
    trainer.fit(system, train_dataloaders=loader)
    return timer.rate


def evaluation_rate(system: EmotionSystem, loader: ResidentLoader, device: torch.device, precision: str,
                    steps: int, warmup: int = 2) -> float:
    """Evaluation samples/s of ``system`` on ``device``. The end of a Lightning fit leaves the module on
    the CPU (the strategy's teardown), so it is moved back to the device of the batches first."""
    system = system.to(device).eval()
    batches = _cycle(loader)

    def eval_step():
        with torch.no_grad(), _autocast(device, precision):
            system(next(batches))

    return _median_rate(eval_step, loader.batch_size, steps, warmup, device)


def pipeline_row(data: PipelineData, args: argparse.Namespace, device: torch.device, precision: str,
                 batch: int) -> dict:
    """One row of the table: the network alone, the data path alone, the two in a Lightning fit (the
    network prepared alike: channels_last, compile), evaluation, and the folds' times they imply."""
    warmup = 5 if args.compile else 2
    model_only = train_step_throughput(args.model, device, batch, args.steps, warmup, precision,
                                       args.channels_last, args.compile)["samples_per_s"]
    torch.manual_seed(0)
    system = bench_system(args.model, args.frontend).to(device)
    batches = _cycle(ResidentLoader(data.resident, data.rows["train"], batch, train=True))

    def data_step():
        with torch.no_grad(), _autocast(device, precision):
            system.inputs(next(batches), augment=True)

    data_only = _median_rate(data_step, batch, args.steps, 1, device)
    prepare_network(system.net, args.channels_last, args.compile)
    train = ResidentLoader(data.resident, data.rows["train"], batch, train=True)
    end_to_end = end_to_end_rate(system, train, device, precision, args.steps, warmup)
    eval_rate = evaluation_rate(system, ResidentLoader(data.resident, data.rows["val"], batch, train=False), device,
                                precision, args.steps, warmup)
    epoch = len(data.rows["train"]) / end_to_end + len(data.rows["val"]) / eval_rate
    fold = args.epochs * epoch + len(data.rows["test"]) / eval_rate
    return dict(model=args.model, precision=precision, batch=batch,
                network=network_label(args.channels_last, args.compile), model_only=model_only, data_only=data_only,
                end_to_end=end_to_end, eval=eval_rate, ratio=end_to_end / model_only, fold_s=fold,
                all_folds_s=data.folds * fold, folds=data.folds)


def pipeline(data: PipelineData, args: argparse.Namespace, device: torch.device):
    """The table's rows, one per precision and batch size, each as soon as it is measured."""
    for precision, batch in itertools.product(args.precision, args.batch):
        yield pipeline_row(data, args, device, precision, batch)
