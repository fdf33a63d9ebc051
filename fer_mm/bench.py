"""``python -m fer_mm.bench``: how fast fer-mm trains, measured on the current device.

Two commands (CUDA if available, else CPU); each prints markdown tables to record with the
command and the machine:

- ``models``: training-step throughput of every model on ready inputs (video ``[20, 98, 80]``,
  spectrogram ``[1, 128, 128]``): forward + backward + AdamW, samples/s (median of timed steps
  after warm-up), and peak memory (CUDA allocator peak per model; on CPU the process's peak RSS
  so far, which only grows from row to row).
- ``pipeline``: the full training path at CREMA-D's size with no preprocessing: an in-memory cache
  of random faces and waveforms (``--clips 7442 --actors 91``, clip lengths drawn to match the
  release: 1.3 to 5 s, mean about 2.5 s, at 30 fps), then, per precision:
  model-only samples/s (the network on ready inputs), data-path samples/s (resident batches and
  the model's input transforms: frame sampling, normalisation, audio crop, noise, spectrogram),
  end-to-end training samples/s (the system in a Lightning Trainer fed by the resident loader),
  evaluation samples/s, and from those one LOSO fold's time for the default recipe (15 epochs)
  and all folds' time run one after another.
- ``latency``: inference on new clips of ``--seconds`` (2.5) in CREMA-D's own format (FLV, 480x360
  at 30 fps, AAC audio; rendered by the twin's renderer), one clip at a time as ``predict`` reads
  them: p50 and p95 in ms of decoding (frames and audio track), face tracking (the detector on
  every frame), features (box smoothing, crops, frame sampling, downmix, resampling, spectrogram)
  and the network under PyTorch and under ONNX Runtime; then features + model and the whole
  pipeline against the clip's length. ``--checkpoint`` times a trained model (default: an untrained
  AR5, which costs the same).
- ``detectors``: face detectors' recall and ms per frame on synthetic 640x480 frames (the twin's
  faces at several sizes, rolls, squeezes for yaw, occluded, dark, blurred, on clutter; see
  :mod:`fer_mm.data.media.detectors`), or with ``--twin ROOT`` on a twin's own videos.
"""

from __future__ import annotations

import argparse
import functools
import logging
import platform
import resource
import statistics
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from fer_mm.vocab import SAMPLE_RATE
from fer_mm.models import get_model, list_models

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


def _system(model: str, frontend: str):
    from fer_mm.system import EmotionSystem

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
    from fer_mm.data.clips import ResidentClips, ResidentLoader
    from fer_mm.data.protocols import LeaveOneSubjectOut

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


def _latency_clips(folder, n: int, seconds: float) -> list[str]:
    """``n`` clips of ``seconds`` in the release's video format, rendered by the twin's renderer."""
    from pathlib import Path

    from fer_mm.data.twins.crema_d import FPS as TWIN_FPS, Actor, background, synth_clip, write_flv
    from fer_mm.vocab import EMOTIONS

    paths = []
    for i in range(n):
        actor = Actor.make(1001 + i % 91, 0)
        emotion = EMOTIONS[i % len(EMOTIONS)]
        name = f"{actor.actor}_ITS_{emotion}_XX"
        frames, wave = synth_clip(name, actor, background(actor), 0, {"audio": emotion, "video": emotion})
        # a clip of exactly ``seconds``: the rendered one repeated as needed, then cut
        reps = int(np.ceil(seconds * TWIN_FPS / len(frames)))
        frames = (frames * reps)[: int(round(seconds * TWIN_FPS))]
        wave = np.tile(wave, reps)[: int(round(seconds * SAMPLE_RATE))]
        path = Path(folder) / f"{name}.flv"
        write_flv(path, frames, wave)
        paths.append(str(path))
    return paths


def latency(args: argparse.Namespace) -> list[dict]:
    """Per-clip inference latency by stage (see the module doc); a row per stage."""
    import tempfile
    from pathlib import Path

    from dataclasses import asdict

    from fer_mm.data.media import video as video_io
    from fer_mm.data.cache import PreprocessParams
    from fer_mm.inference.media import clip_input, read_media
    from fer_mm.inference.recognizer import Recognizer
    from fer_mm.system import EmotionSystem

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            net = {"name": args.model, "num_classes": 6}
            torch.save({"hyper_parameters": {"net": net, "inputs": {}}, "state_dict": EmotionSystem(net=net).state_dict(),
                        "CremaDDataModule": {"preprocess": asdict(PreprocessParams())}}, Path(tmp) / "model.ckpt")
            checkpoint = Path(tmp) / "model.ckpt"
        detector, detector_kwargs = _detector_spec(args.detector) if args.detector else (None, None)
        rec = Recognizer(checkpoint, detector=detector, detector_kwargs=detector_kwargs)
        runtimes = {"PyTorch": rec}
        try:
            from fer_mm.inference.export import export_onnx

            runtimes["ONNX Runtime"] = Recognizer(export_onnx(checkpoint, Path(tmp) / "model.onnx"), runtime="onnx",
                                                  detector=detector, detector_kwargs=detector_kwargs)
        except ImportError as err:
            print(f"(no ONNX Runtime row: {err})")
        clips = _latency_clips(tmp, args.clips + 1, args.seconds)
        times: dict[str, list[float]] = {}

        def timed(stage: str, fn, *a):
            t0 = time.perf_counter()
            out = fn(*a)
            times.setdefault(stage, []).append((time.perf_counter() - t0) * 1000)
            return out

        for i, path in enumerate(clips):  # the first is a warm-up
            media = timed("decode (frames + audio track)", read_media, path, None, rec)
            detected = timed("face tracking (detector on every frame)", video_io.detect_faces, media.frames,
                             rec.detectors)
            item, _, _ = timed("features: crops, frame sampling, audio", clip_input, rec, media.frames, detected,
                               media.audio, media.audio_rate)
            inputs = timed("features: normalisation, spectrogram", rec.network_inputs, [item])
            for name, runtime in runtimes.items():
                timed(f"model ({name})", runtime.logits, inputs)
            if i == 0:
                times.clear()
    rows = [dict(stage=k, p50=float(np.percentile(v, 50)), p95=float(np.percentile(v, 95))) for k, v in times.items()]
    per_clip = np.sum([times[k] for k in times if not k.startswith("model")], axis=0)
    features = np.add(times["features: crops, frame sampling, audio"], times["features: normalisation, spectrogram"])
    for name in runtimes:
        model = np.asarray(times[f"model ({name})"])
        rows.append(dict(stage=f"features + model ({name})", p50=float(np.percentile(features + model, 50)),
                         p95=float(np.percentile(features + model, 95))))
        whole = per_clip + model  # decode + tracking + features + model
        rows.append(dict(stage=f"whole pipeline ({name})", p50=float(np.percentile(whole, 50)),
                         p95=float(np.percentile(whole, 95)),
                         realtime=args.seconds * 1000 / float(np.percentile(whole, 50))))
    return rows


def _detector_spec(spec: str) -> tuple[str, dict]:
    """``name`` or ``name{json kwargs}``, e.g. ``yunet{"downscale": 0.5}`` -> (name, kwargs)."""
    import json

    name, _, kwargs = spec.partition("{")
    return name, json.loads("{" + kwargs) if kwargs else {}


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 \
        else f"{seconds:.1f} s"


def _device_line(device: torch.device, batch: int) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return f"device: {where}; torch {torch.__version__}; batch {batch}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fer_mm.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="training-step throughput of every model on ready inputs")
    models.add_argument("--models", nargs="*", default=list(BENCH_MODELS), choices=list_models())
    models.add_argument("--precision", choices=list(PRECISIONS), default="32", help="autocast precision")
    pipe = sub.add_parser("pipeline", help="the whole training path at CREMA-D's size, no preprocessing")
    pipe.add_argument("--clips", type=int, default=7442)
    pipe.add_argument("--actors", type=int, default=91)
    pipe.add_argument("--model", default="ar5", choices=list_models())
    pipe.add_argument("--precision", nargs="+", choices=list(PRECISIONS), default=["32"])
    pipe.add_argument("--frontend", default="scipy", help="model.inputs.audio.frontend")
    pipe.add_argument("--epochs", type=int, default=15, help="the recipe's epochs per fold")
    pipe.add_argument("--channels-last", action="store_true", help="model-only: channels_last memory format")
    pipe.add_argument("--compile", action="store_true", help="model-only: torch.compile the model")
    for p in (models, pipe):
        p.add_argument("--batch", type=int, default=32)
        p.add_argument("--steps", type=int, default=5, help="timed steps after warm-up")
    lat = sub.add_parser("latency", help="inference on new clips, by stage, one clip at a time (CPU)")
    lat.add_argument("--checkpoint", default=None, help="a trained checkpoint (default: an untrained --model)")
    lat.add_argument("--model", default="ar5", choices=list_models())
    lat.add_argument("--clips", type=int, default=20, help="timed clips (after one warm-up clip)")
    lat.add_argument("--seconds", type=float, default=2.5, help="each clip's length")
    lat.add_argument("--detector", default=None,
                     help='another face detector than the checkpoint\'s, optionally with JSON arguments: yunet{"threads": 2}')
    det = sub.add_parser("detectors", help="face detectors' recall and speed on synthetic frames of varied faces")
    det.add_argument("--detectors", nargs="+", default=["haar", "yunet"],
                     help='registered names, each optionally with JSON arguments: yunet{"downscale": 0.5}')
    det.add_argument("--n", type=int, default=40, help="frames per condition")
    det.add_argument("--seed", type=int, default=0)
    det.add_argument("--twin", help="a generated twin's folder: the detectors on its videos instead")
    args = parser.parse_args(argv)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # the tables are the output
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    if args.command == "detectors":
        from fer_mm.data.media.detectors import format_table, recall_table, twin_table

        from fer_mm.data.media.video import make_detector

        detectors = {spec: make_detector(name, **kwargs) for spec in args.detectors
                     for name, kwargs in [_detector_spec(spec)]}
        print(f"CPU ({platform.processor() or platform.machine()}); {args.n} frames per condition; seed {args.seed}\n")
        rows = twin_table(args.twin, detectors) if args.twin else recall_table(detectors, args.n, args.seed)
        print(format_table(rows))
        return
    if args.command == "latency":
        print(f"{_device_line(torch.device('cpu'), 1)}; {args.clips} clips of {args.seconds:g} s, one at a time\n")
        print("| stage | p50 (ms) | p95 (ms) | x real time (p50) |\n| --- | ---: | ---: | ---: |")
        for r in latency(args):
            factor = f"{r['realtime']:.1f}" if "realtime" in r else ""
            print(f"| {r['stage']} | {r['p50']:.1f} | {r['p95']:.1f} | {factor} |", flush=True)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.command == "models":
        print(f"{_device_line(device, args.batch)}; precision {args.precision}\n")
        memory = "CUDA peak allocated (MiB)" if device.type == "cuda" else "process peak RSS so far (MiB)"
        print(f"| model | train samples/s | {memory} |\n| --- | ---: | ---: |")
        for name in args.models:
            r = train_step_throughput(name, device, args.batch, args.steps, precision=args.precision)
            print(f"| `{name}` | {r['samples_per_s']:,.1f} | {r['peak_mib']:,.0f} |", flush=True)
        return
    print(f"{_device_line(device, args.batch)}; front-end {args.frontend}; channels_last {args.channels_last}; "
          f"compile {args.compile}")
    results = pipeline(args, device)
    print(f"| model | precision | model-only samples/s | data path samples/s | end-to-end samples/s | "
          f"end-to-end / model-only | eval samples/s | one fold ({args.epochs} epochs) | "
          f"{results[0]['folds']} folds, one after another |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| `{r['model']}` | {r['precision']} | {r['model_only']:,.0f} | {r['data_only']:,.0f} | "
              f"{r['end_to_end']:,.0f} | {r['ratio']:.2f} | {r['eval']:,.0f} | {_duration(r['fold_s'])} | "
              f"{_duration(r['all_folds_s'])} |", flush=True)


if __name__ == "__main__":
    main()
