"""The command line of :mod:`fer_mm.bench`: ``python -m fer_mm.bench models|pipeline|cache|latency|detectors``."""

from __future__ import annotations

import argparse
import logging
import platform
import time
import warnings

import torch

from fer_mm import bench
from fer_mm.bench.detectors import built_detectors, format_table, recall_table, twin_table
from fer_mm.bench.latency import latency
from fer_mm.bench.pipeline import BENCH_MODELS, PRECISIONS, pipeline, pipeline_data, train_step_throughput
from fer_mm.bench.random_cache import write_cache
from fer_mm.bench.syncs import add_arguments, print_audit
from fer_mm.data.media.faces import DEFAULT_DETECTOR, DetectorError, detector_spec
from fer_mm.models import list_models

COMPARED_DETECTORS = [(DEFAULT_DETECTOR, {}), ("yunet", {})]  # what ``detectors`` compares by default


class DetectorOption(argparse.Action):
    """``--detector NAME`` adds a detector, ``--detector-kwargs JSON`` gives the one before it its
    settings: the config's ``detector`` and ``detector_kwargs``, once per detector."""

    def __call__(self, parser, namespace, value, option_string=None):
        specs = list(getattr(namespace, self.dest) or [])
        if option_string == "--detector":
            specs.append((value, {}))
        elif not specs:
            parser.error("--detector-kwargs sets the --detector before it: give that first")
        else:
            try:
                specs[-1] = detector_spec(specs[-1][0], value)
            except DetectorError as err:
                parser.error(str(err))
        setattr(namespace, self.dest, specs)


def add_detector_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--detector", dest="detectors", action=DetectorOption, metavar="NAME",
                        help=f"{what}: haar, yunet or package.module:Class (as data.preprocess.detector)")
    parser.add_argument("--detector-kwargs", dest="detectors", action=DetectorOption, metavar="JSON",
                        help='the settings of the --detector before it (as data.preprocess.detector_kwargs), '
                             'e.g. \'{"downscale": 0.5}\'')


def add_training_commands(sub) -> None:
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
    pipe.add_argument("--channels-last", action="store_true", help="the network in channels_last (model-only and end to end)")
    pipe.add_argument("--compile", action="store_true", help="the network torch.compile'd (model-only and end to end)")
    pipe.add_argument("--batch", type=int, nargs="+", default=[32], help="batch sizes: a row per precision and batch")
    pipe.add_argument("--steps", type=int, default=200, help="timed steps after warm-up")
    models.add_argument("--batch", type=int, default=32)
    models.add_argument("--steps", type=int, default=5, help="timed steps after warm-up")
    add_arguments(sub.add_parser("syncs", help="host-device syncs in the resident path's training and eval steps"))


def add_cache_command(sub) -> None:
    cache = sub.add_parser("cache", help="a finished preprocessing cache of random content at CREMA-D's size, which "
                                         "data=crema_d data.root=ROOT data.cache_dir=CACHE_DIR opens without preprocessing")
    cache.add_argument("--root", required=True, help="the dataset root it is keyed by (gets VideoDemographics.csv)")
    cache.add_argument("--cache-dir", required=True)
    cache.add_argument("--clips", type=int, default=7442)
    cache.add_argument("--actors", type=int, default=91)
    cache.add_argument("--seed", type=int, default=0)


def add_inference_commands(sub) -> None:
    lat = sub.add_parser("latency", help="inference on new clips, by stage, one clip at a time (CPU)")
    lat.add_argument("--checkpoint", default=None, help="a trained checkpoint (default: an untrained --model)")
    lat.add_argument("--model", default="ar5", choices=list_models())
    lat.add_argument("--clips", type=int, default=20, help="timed clips (after one warm-up clip)")
    lat.add_argument("--seconds", type=float, default=2.5, help="each clip's length")
    add_detector_options(lat, "another face detector than the checkpoint's")
    det = sub.add_parser("detectors", help="face detectors' recall and speed on synthetic frames of varied faces")
    add_detector_options(det, "a detector to compare, once per detector (default: haar and yunet)")
    det.add_argument("--n", type=int, default=40, help="frames per condition")
    det.add_argument("--seed", type=int, default=0)
    det.add_argument("--twin", help="a generated twin's folder: the detectors on its videos instead")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fer_mm.bench", description=bench.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add_training_commands(sub)
    add_cache_command(sub)
    add_inference_commands(sub)
    args = parser.parse_args(argv)
    if args.command == "latency" and len(args.detectors or ()) > 1:
        parser.error("latency times one --detector")
    if args.command == "detectors":
        args.detectors = args.detectors or COMPARED_DETECTORS
    return args


def duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 \
        else f"{seconds:.1f} s"


def rate(samples_per_s: float) -> str:
    """A rate in a table: whole numbers, with three significant digits below 100 (a slow CPU's)."""
    return f"{samples_per_s:,.0f}" if samples_per_s >= 100 else f"{samples_per_s:.3g}"


def device_line(device: torch.device, batch: int | None = None) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return f"device: {where}; torch {torch.__version__}" + (f"; batch {batch}" if batch is not None else "")


def print_detectors(args: argparse.Namespace) -> None:
    detectors = built_detectors(args.detectors)
    print(f"CPU ({platform.processor() or platform.machine()}); {args.n} frames per condition; seed {args.seed}\n")
    rows = twin_table(args.twin, detectors) if args.twin else recall_table(detectors, args.n, args.seed)
    print(format_table(rows))


def print_latency(args: argparse.Namespace) -> None:
    print(f"{device_line(torch.device('cpu'), 1)}; {args.clips} clips of {args.seconds:g} s, one at a time\n")
    print("| stage | p50 (ms) | p95 (ms) | x real time (p50) |\n| --- | ---: | ---: | ---: |")
    for r in latency(args):
        factor = f"{r['realtime']:.1f}" if "realtime" in r else ""
        print(f"| {r['stage']} | {r['p50']:.1f} | {r['p95']:.1f} | {factor} |", flush=True)


def print_models(args: argparse.Namespace, device: torch.device) -> None:
    print(f"{device_line(device, args.batch)}; precision {args.precision}\n")
    memory = "CUDA peak allocated (MiB)" if device.type == "cuda" else "process peak RSS so far (MiB)"
    print(f"| model | train samples/s | {memory} |\n| --- | ---: | ---: |")
    for name in args.models:
        r = train_step_throughput(name, device, args.batch, args.steps, precision=args.precision)
        print(f"| `{name}` | {r['samples_per_s']:,.1f} | {r['peak_mib']:,.0f} |", flush=True)


def print_pipeline(args: argparse.Namespace, device: torch.device) -> None:
    """The table's header first, then each row as soon as it is measured: a run stopped early shows
    the rows it finished."""
    print(f"{device_line(device)}; front-end {args.frontend}; {args.steps} timed steps", flush=True)
    data = pipeline_data(args, device)
    print(data.summary() + "\n")
    print(f"| model | precision | batch | network | model-only samples/s | data path samples/s | end-to-end samples/s | "
          f"end-to-end / model-only | eval samples/s | one fold ({args.epochs} epochs) | "
          f"{data.folds} folds, one after another |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    for r in pipeline(data, args, device):
        print(f"| `{r['model']}` | {r['precision']} | {r['batch']} | {r['network']} | {rate(r['model_only'])} | "
              f"{rate(r['data_only'])} | {rate(r['end_to_end'])} | {r['ratio']:.2f} | {rate(r['eval'])} | "
              f"{duration(r['fold_s'])} | {duration(r['all_folds_s'])} |", flush=True)


def print_cache(args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    cache = write_cache(args.root, args.cache_dir, args.clips, args.actors, args.seed)
    size = sum(f.stat().st_size for f in cache.path.iterdir()) / 1e9
    print(f"cache: {cache.path} ({len(cache)} clips of {cache.clips['actor'].nunique()} actors, {len(cache.frames):,} "
          f"frames, {size:.2f} GB) written in {time.perf_counter() - t0:.1f} s; random content, no preprocessing; "
          f"open it with data=crema_d data.root={args.root} data.cache_dir={args.cache_dir}", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)  # the tables are the output
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    if args.command == "detectors":
        print_detectors(args)
    elif args.command == "latency":
        print_latency(args)
    elif args.command == "cache":
        print_cache(args)
    elif args.command == "syncs":
        print_audit(args)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        (print_models if args.command == "models" else print_pipeline)(args, device)


if __name__ == "__main__":
    main()
