"""The ``models`` and ``pipeline`` benchmarks: training throughput on ready inputs and along the
whole training path at CREMA-D's size (see :mod:`fer_mm.bench`).
"""

from __future__ import annotations

import argparse
import functools
import resource
import statistics
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from fer_mm.data.clips import ResidentClips, ResidentLoader
from fer_mm.data.protocols import LeaveOneSubjectOut
from fer_mm.models import get_model
from fer_mm.system import EmotionSystem
from fer_mm.vocab import SAMPLE_RATE

BENCH_MODELS = ("ar1", "ar2", "ar3", "ar4", "ar5", "resnet18", "inception_v4", "inception_resnet_v2")
PRECISIONS = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}  # --precision -> Lightning's name
FPS, FACE = 30, (98, 80)  # the release's frame rate, the method's face crop


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


def train_step_throughput(name: str, device: torch.device, batch: int = 32, steps: int = 5, warmup: int = 2,
                          precision: str = "32", channels_last: bool = False, compile: bool = False) -> dict:
    """A model's training steps per second on ready inputs (no data path)."""
    torch.manual_seed(0)
    model = get_model(name).to(device).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    forward = torch.compile(model) if compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    video = torch.randn(batch, 20, *FACE, device=device).contiguous(memory_format=memory_format)
    audio = torch.rand(batch, 1, 128, 128, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 6, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        with _autocast(device, precision):
            loss = torch.nn.functional.cross_entropy(forward(video=video, audio=audio), labels)
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


@dataclass
class MemoryCache:
    """A cache's read side (what :class:`~fer_mm.data.clips.ResidentClips` reads), made in memory."""

    clips: pd.DataFrame
    frames: np.ndarray  # [sum(n_frames), 98, 80] uint8
    samples: np.ndarray  # [sum(n_samples)] int16


def memory_cache(n_clips: int = 7442, n_actors: int = 91, seed: int = 0) -> MemoryCache:
    """Random faces and waveforms with CREMA-D's clip count, actors and clip lengths."""
    rng = np.random.default_rng(seed)
    seconds = np.clip(1.27 + rng.gamma(2.5, 0.5, n_clips), 1.27, 5.0)  # 1.3 to 5 s, mean about 2.5 s
    n_frames = np.round(seconds * FPS).astype(np.int64)
    n_samples = np.round(seconds * SAMPLE_RATE).astype(np.int64)
    clips = pd.DataFrame(dict(
        name=[f"clip{i}" for i in range(n_clips)], actor=1001 + np.arange(n_clips) % n_actors,
        label=rng.integers(0, 6, n_clips), n_frames=n_frames, video_offset=np.cumsum(n_frames) - n_frames,
        n_samples=n_samples, audio_offset=np.cumsum(n_samples) - n_samples))
    frames = rng.integers(0, 256, (int(n_frames.sum()), *FACE), dtype=np.uint8)
    samples = rng.integers(-8000, 8000, int(n_samples.sum()), dtype=np.int16)
    return MemoryCache(clips, frames, samples)


def _system(model: str, frontend: str) -> EmotionSystem:
    return EmotionSystem(net={"name": model}, inputs={"audio": {"frontend": frontend}},
                         optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4))


class _EpochTimer(pl.Callback):
    """Samples/s of a Lightning fit from its ``warmup``-th batch to the end of the epoch."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device = warmup, device
        self.t0, self.samples, self.rate = None, 0, float("nan")

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.warmup:
            _sync(self.device)
            self.t0 = time.perf_counter()
        if self.t0 is not None:
            self.samples += len(batch["label"])

    def on_train_epoch_end(self, trainer, module):
        _sync(self.device)
        if self.t0 is not None:
            self.rate = self.samples / (time.perf_counter() - self.t0)


def _cycle(loader):
    while True:
        yield from loader


def pipeline(args: argparse.Namespace, device: torch.device) -> list[dict]:
    t0 = time.perf_counter()
    cache = memory_cache(args.clips, args.actors)
    split = LeaveOneSubjectOut(val_fraction=0.1).split(cache.clips["actor"].unique(), 0)
    actor = cache.clips["actor"].to_numpy()
    rows = {part: np.flatnonzero(np.isin(actor, getattr(split, part))) for part in ("train", "val", "test")}
    system = _system(args.model, args.frontend)
    resident = ResidentClips(cache, system.inputs.clip_spec, device)
    print(f"in-memory cache: {args.clips} clips of {args.actors} actors, {len(cache.frames):,} frames "
          f"({cache.frames.nbytes / 1e9:.2f} GB) and {cache.samples.nbytes / 1e9:.2f} GB of audio, made in "
          f"{time.perf_counter() - t0:.0f} s; fold 0: {len(rows['train'])} train / {len(rows['val'])} val / "
          f"{len(rows['test'])} test clips\n", flush=True)
    results = []
    for precision in args.precision:
        torch.manual_seed(0)
        model_only = train_step_throughput(args.model, device, args.batch, args.steps, precision=precision,
                                           channels_last=args.channels_last, compile=args.compile)["samples_per_s"]
        system = _system(args.model, args.frontend).to(device)
        batches = _cycle(ResidentLoader(resident, rows["train"], args.batch, train=True))

        def data_step():
            with torch.no_grad(), _autocast(device, precision):
                system.inputs(next(batches), augment=True)

        data_only = _median_rate(data_step, args.batch, args.steps, 1, device)
        timer = _EpochTimer(warmup=1, device=device)
        trainer = pl.Trainer(accelerator=device.type, devices=1, precision=PRECISIONS[precision], max_epochs=1,
                             limit_train_batches=args.steps + 1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
        trainer.fit(system, train_dataloaders=ResidentLoader(resident, rows["train"], args.batch, train=True))
        end_to_end = timer.rate
        system.eval()
        batches = _cycle(ResidentLoader(resident, rows["val"], args.batch, train=False))

        def eval_step():
            with torch.no_grad(), _autocast(device, precision):
                system(next(batches))

        eval_rate = _median_rate(eval_step, args.batch, args.steps, 1, device)
        epoch = len(rows["train"]) / end_to_end + len(rows["val"]) / eval_rate
        fold = args.epochs * epoch + len(rows["test"]) / eval_rate
        folds = len(cache.clips["actor"].unique())
        results.append(dict(model=args.model, precision=precision, model_only=model_only, data_only=data_only,
                            end_to_end=end_to_end, eval=eval_rate, ratio=end_to_end / model_only, fold_s=fold,
                            all_folds_s=folds * fold, folds=folds))
    return results
