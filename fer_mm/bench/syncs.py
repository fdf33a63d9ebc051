"""``python -m fer_mm.bench syncs``: the host-device syncs in the resident path's training and
validation steps, counted in a real Lightning fit (on CUDA, or on the CPU standing in for it).

A sync is a call after which the host waits for the device: it stalls the host's queueing of
kernels until the device has caught up. :class:`SyncCounter`, a ``TorchFunctionMode``, sees
every torch call made from Python and counts those that sync on CUDA:

- reads of a device tensor's values by the host: ``item``, ``tolist``, ``numpy``, ``cpu`` (and
  ``.to`` the host without ``non_blocking``), ``__bool__`` / ``__int__`` / ``__float__`` /
  ``__index__`` / ``__format__`` (``if t:``, ``int(t)``, ``f"{t:.2f}"``), ``allclose``, ``equal``;
- ops whose output size depends on values: ``nonzero``, ``argwhere``, one-argument ``where``,
  ``masked_select``, ``bincount``, ``unique``, ``unique_consecutive``, ``repeat_interleave`` with
  tensor repeats and no ``output_size``, indexing or assigning with a boolean mask;
- uploads: ``torch.tensor`` / ``as_tensor`` / ``asarray`` of host data with ``device=`` the device,
  indexing with a Python list or a host tensor, ``.to(device)`` / ``.cuda()`` / ``copy_`` of a host
  tensor, except ``non_blocking`` from pinned memory (which does not wait).

All of these were checked by hand to reach a ``TorchFunctionMode`` (methods, dunders and factories
alike); ``torch.from_numpy`` does not, and needs not (it copies nothing). The mode sees the calls
made from Python (the step, Lightning's loops, the optimizer's Python code); a sync inside a kernel
or in autograd's backward pass is seen only by CUDA's own debug mode, which the audit also counts
on CUDA (``torch.cuda.set_sync_debug_mode("warn")``).

Which tensor is the device's: the rule. A call counts only where the tensor it reads (or the data it
uploads) would be on the device in a CUDA run.
- On CUDA the tensor's device says, exactly. A non-fused, non-capturable optimizer keeps its
  ``step`` count on the CPU, so the ``item()`` it reads it with is a host read, no sync (and on CUDA
  fer-mm's Adam and AdamW are fused, and read none).
- On the CPU, host and device are one memory; the audit stands in for a CUDA run by taking every
  tensor as the device's except those made on the host while it runs: factories without a
  ``device`` (``torch.tensor(0.0)``, as the optimizer makes its ``step``), a CPU generator's draws,
  and what is computed from such tensors alone. A host tensor moved ``.to`` the device counts as an
  upload, and is the device's from then on. Code that runs on the CPU only, and so never on a GPU
  run, is listed in :data:`HOST_ONLY_SITES` with its reason, and reported apart.

:func:`audit` fits an AR5 (video and audio; ``tasks`` adds gender and age heads) on an in-memory
cache through :class:`~fer_mm.data.clips.ResidentLoader`, for a few whole epochs, and counts from
each stage's first batch's start to its last batch's end: the steps, Lightning's work around them
and the loader's between them. What runs once per epoch after the last step (the epoch means of the
logged losses read for the progress bar, the metrics' computation, checkpoints) is left out. The
last epoch is the steady state; the first adds Lightning's one-time creation of its logging state
(a small upload per logged key). The goal: no sync in either stage's steps.
"""

from __future__ import annotations

import argparse
import linecache
import sys
import warnings
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from torch.overrides import TorchFunctionMode

from fer_mm.bench.pipeline import PRECISIONS, bench_system, memory_cache
from fer_mm.data.clips import ResidentClips, ResidentLoader
from fer_mm.system import EmotionSystem

READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "__format__",
         "__array__", "allclose", "equal"}
SIZED_BY_VALUES = {"nonzero", "argwhere", "masked_select", "bincount", "unique", "unique_consecutive"}
INDEXING = {"__getitem__", "__setitem__", "index_put", "index_put_"}
BUILDS = {"tensor", "as_tensor", "asarray"}
MOVES = {"to", "cuda", "copy_"}
# (file, source text) -> why the call is no sync on CUDA: code that runs on the CPU only. Used on CPU runs
HOST_ONLY_SITES = {
    ("fer_mm/models/inputs.py", "int(lengths.max())"):
        "ModelInputs trims the padding only when the batch is on the CPU (a GPU run never reads the lengths)",
}
# torch's dispatch and Lightning's generic helpers: the site is the caller that gave them the tensor
SKIPPED_FILES = ("torch/overrides.py", "torch/_tensor.py", "torch/functional.py", "torch/utils/_device.py",
                 "lightning_fabric/utilities/apply_func.py", "lightning_utilities/core/apply_func.py")
DEBUG_MESSAGE = "called a synchronizing CUDA operation"


@dataclass(frozen=True)
class Sync:
    """One counted call: the stage and epoch it fell in, what it is and where it came from."""

    stage: str
    epoch: int
    kind: str
    call: str
    site: str
    host_only: str = ""  # why it is no sync on CUDA (a CPU run's host-only site), else empty


def _tensors(*values) -> list[torch.Tensor]:
    """The tensors among ``values``, one level into lists, tuples and dicts."""
    out = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(x for x in v if isinstance(x, torch.Tensor))
        elif isinstance(v, dict):
            out.extend(x for x in v.values() if isinstance(x, torch.Tensor))
    return out


def _target(name: str, args: tuple, kwargs: dict) -> tuple[torch.device | None, torch.Tensor]:
    """(destination device, source tensor) of a move."""
    if name == "copy_":
        return args[0].device, args[1]
    if name == "cuda":
        return torch.device("cuda"), args[0]
    device = kwargs.get("device")
    for a in args[1:]:
        if isinstance(a, (torch.device, str)):
            device = a
        elif isinstance(a, torch.Tensor):
            device = a.device
    return (torch.device(device) if device is not None else None), args[0]


def _short(filename: str) -> str:
    path = Path(filename).as_posix()
    for root in ("site-packages/", "/fer_mm/"):
        if root in path:
            return ("fer_mm/" if root == "/fer_mm/" else "") + path.rsplit(root, 1)[1]
    return path


def _site() -> tuple[str, str]:
    """(``file:line function``, its source line) of the call, past torch's dispatch and this module,
    followed by ``< fer_mm/...`` (the nearest fer-mm caller) where the call is made in a library."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename == __file__
                                 or any(s in Path(frame.f_code.co_filename).as_posix() for s in SKIPPED_FILES)):
        frame = frame.f_back
    if frame is None:
        return "?", ""
    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    site = f"{_short(frame.f_code.co_filename)}:{frame.f_lineno} {frame.f_code.co_name}"
    caller = frame
    while caller is not None and not _short(caller.f_code.co_filename).startswith("fer_mm/"):
        caller = caller.f_back
    if caller is not None and caller is not frame and caller.f_code.co_filename != __file__:
        site += f" < {_short(caller.f_code.co_filename)}:{caller.f_lineno} {caller.f_code.co_name}"
    return site, line


class SyncCounter(TorchFunctionMode):
    """Counts the calls that force a host-device sync on CUDA (see the module's rules), while
    ``stage`` is set; ``device``: where the run computes (a CPU run stands in for a CUDA one)."""

    def __init__(self, device: torch.device | str):
        super().__init__()
        self.device = torch.device(device)
        self.stage, self.epoch = None, 0
        self.syncs: list[Sync] = []
        self.calls: Counter = Counter()  # (stage, epoch) -> torch calls seen
        self.caught: list = []  # the warnings caught around the fit (CUDA's sync debug mode's among them)
        self.debug: Counter = Counter()  # (stage, epoch) -> sync debug mode warnings
        self._host: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # id -> tensor made on the host

    def is_host(self, t: torch.Tensor) -> bool:
        if self.device.type != "cpu":
            return t.device.type == "cpu"
        return self._host.get(id(t)) is t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        kind = self.kind(name, args, kwargs)  # before tracking: a move on the CPU may return its source
        if self.device.type == "cpu":
            self._track(name, args, kwargs, out, kind)
        if self.stage is not None:
            self.calls[self.stage, self.epoch] += 1
            if kind:
                self._record(kind, name)
        return out

    def _track(self, name: str, args: tuple, kwargs: dict, out, kind: str | None) -> None:
        """Note the tensors made on the host (a CPU run's stand-in for the device's tensors)."""
        if not isinstance(out, torch.Tensor):
            return
        if name in MOVES and kind == "upload":
            # now on the device; on the CPU ``.to`` may return the very object it moved, which then
            # counts as the device's from here on (what a CUDA run's code goes on using)
            self._host.pop(id(out), None)
            return
        generator, inputs = kwargs.get("generator"), _tensors(*args, *kwargs.values())
        if generator is not None:
            made_here = generator.device.type == "cpu"
        elif not inputs or (name in BUILDS and args and not isinstance(args[0], torch.Tensor)):
            made_here = kwargs.get("device") is None  # a factory: on the host unless told the device
        else:
            made_here = name not in MOVES and all(self.is_host(t) for t in inputs)
        if made_here:
            self._host[id(out)] = out

    def kind(self, name: str, args: tuple, kwargs: dict) -> str | None:
        """Why the call syncs on CUDA, or None."""
        first = args[0] if args else None
        if name in READS or name in SIZED_BY_VALUES:
            tensors = _tensors(*args)
            device = [t for t in tensors if not self.is_host(t)]
            return None if not device else ("read by the host" if name in READS else "size set by values")
        if name == "where" and len(args) + len(kwargs) == 1:
            return None if self.is_host(first) else "size set by values"
        if name == "repeat_interleave" and "output_size" not in kwargs:
            repeats = args[1] if len(args) > 1 else kwargs.get("repeats", first if len(args) == 1 else None)
            return "size set by values" if isinstance(repeats, torch.Tensor) and not self.is_host(repeats) else None
        if name in INDEXING and isinstance(first, torch.Tensor) and not self.is_host(first):
            return self._index_kind(args[1] if len(args) > 1 else kwargs.get("indices"))
        if name in BUILDS:
            device = kwargs.get("device")
            data_on_host = not isinstance(first, torch.Tensor) or self.is_host(first)
            return "upload" if data_on_host and device is not None and torch.device(device).type == self.device.type \
                else None
        if name in MOVES:
            return self._move_kind(name, args, kwargs)
        return None

    def _index_kind(self, index) -> str | None:
        """What makes an index of a device tensor sync: a boolean mask, or indices from the host."""
        if isinstance(index, torch.Tensor):
            if index.dtype in (torch.bool, torch.uint8):
                return "boolean mask"
            return "index from the host (an upload)" if index.dim() and self.is_host(index) else None
        if isinstance(index, list) and not any(isinstance(i, torch.Tensor) for i in index):
            return "index from a Python list (an upload)"
        if isinstance(index, (list, tuple)):
            return next((k for k in map(self._index_kind, index) if k), None)
        return None

    def _move_kind(self, name: str, args: tuple, kwargs: dict) -> str | None:
        target, source = _target(name, args, kwargs)
        if target is None or not isinstance(source, torch.Tensor):
            return None
        waits = not (kwargs.get("non_blocking") or (len(args) > 2 and args[2] is True))
        if self.device.type == "cpu":  # a host tensor going to the device the CPU stands in for
            to_device = not self.is_host(args[0]) if name == "copy_" else target.type == "cpu"
            return "upload" if to_device and self.is_host(source) else None
        if source.device.type == "cpu" and target.type != "cpu":
            return "upload" if waits or not source.is_pinned() else None
        if source.device.type != "cpu" and target.type == "cpu":
            return "read by the host" if waits else None
        return None

    def _record(self, kind: str, call: str) -> None:
        site, line = _site()
        reason = ""
        if self.device.type == "cpu":
            reason = next((why for (path, text), why in HOST_ONLY_SITES.items()
                           if site.startswith(path) and text in line), "")
        self.syncs.append(Sync(self.stage, self.epoch, kind, call, site, reason))


class SyncWindows(pl.Callback):
    """Sets the counter's stage from each stage's first batch's start to its last batch's end (training
    paused while a validation runs); on CUDA also turns torch's sync debug mode on in those windows."""

    def __init__(self, counter: SyncCounter):
        self.counter, self.paused, self.mark = counter, False, 0

    def _open(self, stage: str, epoch: int) -> None:
        self.counter.stage, self.counter.epoch, self.mark = stage, epoch, len(self.counter.caught)
        if self.counter.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")

    def _close(self) -> None:
        counter = self.counter
        if counter.device.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)
        if counter.stage is not None:
            counter.debug[counter.stage, counter.epoch] += sum(DEBUG_MESSAGE in str(w.message)
                                                               for w in counter.caught[self.mark:])
        counter.stage = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0 or self.paused:  # its first batch, or the first after a validation
            self.paused = False
            self._open("train", trainer.current_epoch)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == trainer.num_training_batches - 1:
            self._close()

    def on_validation_start(self, trainer, module):
        self.paused = self.counter.stage == "train"
        self._close()

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self._open("val", trainer.current_epoch)

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == trainer.num_val_batches[dataloader_idx] - 1:
            self._close()


def _resident(system: EmotionSystem, n_clips: int, device: torch.device, tasks: bool) -> ResidentClips:
    cache = memory_cache(n_clips, n_actors=4)
    targets = None
    if tasks:  # some unknown: -1 gender, NaN age, as in the data
        rng = np.random.default_rng(0)
        targets = dict(gender=np.where(rng.random(n_clips) < 0.2, -1, rng.integers(0, 2, n_clips)).astype(np.int64),
                       age=np.where(rng.random(n_clips) < 0.2, np.nan, rng.uniform(20, 70, n_clips)).astype(np.float32))
    return ResidentClips(cache, system.inputs.clip_spec, device, memory="device", targets=targets)


def audit(device: torch.device | str | None = None, *, batch: int = 4, steps: int = 3, val_steps: int = 2,
          epochs: int = 2, precision: str = "32", tasks: bool = False, frontend: str = "scipy") -> dict:
    """Fit an AR5 for ``epochs`` epochs of ``steps`` training and ``val_steps`` validation batches
    on the resident path, counting syncs in the steps (see the module's rules).

    Returns ``{stage: {"syncs", "sites", "first_epoch", "first_sites", "host_only", "calls"}}`` for
    ``train`` and ``val`` (``syncs``: in the last epoch, ``sites``: their count per ``kind: call at
    site``; ``first_*``: the first epoch's; ``host_only``: a CPU run's calls that are no sync on
    CUDA, with why; ``calls``: the torch calls seen in the last epoch's window, to show it was
    watched; on CUDA also ``debug_warnings`` and ``first_debug_warnings``, torch's sync debug mode's
    warnings in the last and the first epoch), plus ``device``.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    system = bench_system("ar5", frontend, {"gender": {}, "age": {}} if tasks else None)
    resident = _resident(system, (steps + val_steps) * batch, device, tasks)
    train_rows, val_rows = np.arange(steps * batch), np.arange(steps * batch, (steps + val_steps) * batch)
    counter = SyncCounter(device)
    trainer = pl.Trainer(accelerator=device.type, devices=1, precision=PRECISIONS[precision], max_epochs=epochs,
                         logger=False, enable_checkpointing=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[SyncWindows(counter), TQDMProgressBar(refresh_rate=50)])
    with warnings.catch_warnings(record=True) as counter.caught, counter:
        warnings.simplefilter("always")
        trainer.fit(system, train_dataloaders=ResidentLoader(resident, train_rows, batch, train=True),
                    val_dataloaders=ResidentLoader(resident, val_rows, batch, train=False))
    out = {"device": str(device)}
    for stage in ("train", "val"):
        out[stage] = dict(_summary([s for s in counter.syncs if s.stage == stage], epochs),
                          calls=counter.calls[stage, epochs - 1])
        if device.type == "cuda":
            out[stage].update(debug_warnings=counter.debug[stage, epochs - 1],
                              first_debug_warnings=counter.debug[stage, 0])
    return out


def _summary(syncs: list[Sync], epochs: int) -> dict:
    def sites(selected):
        return dict(Counter(f"{s.kind}: {s.call} at {s.site}" for s in selected).most_common())

    real = [s for s in syncs if not s.host_only]
    last, first = [s for s in real if s.epoch == epochs - 1], [s for s in real if s.epoch == 0]
    host = Counter(f"{s.call} at {s.site} ({s.host_only})" for s in syncs if s.host_only and s.epoch == epochs - 1)
    return dict(syncs=len(last), sites=sites(last), first_epoch=len(first), first_sites=sites(first),
                host_only=dict(host.most_common()))


def format_audit(result: dict) -> str:
    """The audit as a small markdown table, then the sites of what it found."""
    lines = ["| stage | torch calls watched | syncs (last epoch) | syncs (first epoch) | host-only (CPU run) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for stage in ("train", "val"):
        r = result[stage]
        host = sum(r["host_only"].values())
        lines.append(f"| {stage} | {r['calls']:,} | {r['syncs']} | {r['first_epoch']} | {host} |")
    for stage in ("train", "val"):
        if "debug_warnings" in result[stage]:
            lines.append(f"\n{stage}: torch.cuda's sync debug mode warned {result[stage]['debug_warnings']} times in "
                         f"the last epoch, {result[stage]['first_debug_warnings']} in the first")
    for stage in ("train", "val"):
        for title, key in (("steady", "sites"), ("first epoch", "first_sites"), ("host-only", "host_only")):
            for site, n in result[stage][key].items():
                lines.append(f"- {stage}, {title}: {n} x {site}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``syncs`` command's options."""
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="training steps per epoch (two epochs)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="32", help="autocast precision")
    parser.add_argument("--tasks", action="store_true", help="with gender and age heads beside emotion")


def print_audit(args: argparse.Namespace) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = audit(device, batch=args.batch, steps=args.steps, epochs=2, precision=args.precision, tasks=args.tasks)
    print(f"device: {device}; torch {torch.__version__}; AR5 video+audio{' + gender, age' if args.tasks else ''}, "
          f"batch {args.batch}, {args.steps} training steps per epoch, precision {args.precision}\n")
    print(format_audit(result))
