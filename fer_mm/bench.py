"""``python -m fer_mm.bench``: training throughput of every model, and data-loading speed.

Measures on the current device (CUDA if available, else CPU), at the default shapes (video
[20, 98, 80], audio [1, 128, 128]) with batch 32:
- train step: forward + backward + AdamW step, samples per second (median of timed steps after
  warm-up), and peak memory (CUDA allocator peak per model; on CPU, the process's peak RSS so far,
  which only grows from row to row);
- data loading from a cache (``--cache DIR``): training items per second with each audio front-end.
Prints a markdown table; record it with the command and the machine.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import numpy as np
import torch

from fer_mm.models import get_model, list_models

BENCH_MODELS = ("ar1", "ar2", "ar3", "ar4", "ar5", "resnet18", "inception_v4", "inception_resnet_v2")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step_throughput(name: str, device: torch.device, batch: int = 32, steps: int = 5, warmup: int = 2,
                          precision: str = "32") -> dict:
    torch.manual_seed(0)
    model = get_model(name).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    video = torch.randn(batch, 20, 98, 80, device=device)
    audio = torch.rand(batch, 1, 128, 128, device=device)
    labels = torch.randint(0, 6, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16,
                              enabled=precision != "32")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(video=video, audio=audio), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(model=name, samples_per_s=batch / statistics.median(times), peak_mib=peak)


def loading_throughput(cache_dir: str, frontend: str, n: int = 200) -> float:
    from fer_mm.data.audio import make_frontend
    from fer_mm.data.cache import ClipCache
    from fer_mm.data.datamodule import ClipDataset

    cache = ClipCache(cache_dir)
    rows = np.arange(min(n, len(cache)))
    dataset = ClipDataset(cache, rows, 20, train=True, frontend=make_frontend(frontend))
    t0 = time.perf_counter()
    items = [dataset[i] for i in range(len(rows))]
    if frontend == "logmel":  # the batched device-side part, as the datamodule runs it
        waves = torch.stack([it["audio"] for it in items])
        lengths = torch.tensor([it["audio_length"] for it in items])
        dataset.frontend(waves, lengths, augment=True)
    return len(rows) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(BENCH_MODELS), choices=list_models())
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", choices=["32", "16", "bf16"], default="32", help="autocast on CUDA")
    parser.add_argument("--cache", default=None, help="a cache folder, to time data loading too")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"device: {where}; torch {torch.__version__}; batch {args.batch}; precision {args.precision}\n")
    memory = "CUDA peak allocated (MiB)" if device.type == "cuda" else "process peak RSS so far (MiB)"
    print(f"| model | train samples/s | {memory} |\n| --- | ---: | ---: |")
    for name in args.models:
        r = train_step_throughput(name, device, args.batch, args.steps, precision=args.precision)
        print(f"| `{name}` | {r['samples_per_s']:,.1f} | {r['peak_mib']:,.0f} |", flush=True)
    if args.cache:
        print("\n| data loading (one process) | training items/s |\n| --- | ---: |")
        for frontend in ("scipy", "logmel"):
            print(f"| video + {frontend} audio | {loading_throughput(args.cache, frontend):,.1f} |", flush=True)


if __name__ == "__main__":
    main()
