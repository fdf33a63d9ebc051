"""The ``latency`` benchmark: inference on new clips, stage by stage, one clip at a time (see
:mod:`fer_mm.bench`)."""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from fer_mm.data.cache import PreprocessParams
from fer_mm.data.media.faces import detect_faces
from fer_mm.data.twins.actors import Actor
from fer_mm.data.twins.crema_d import synth_clip, write_flv
from fer_mm.data.twins.face import FPS as TWIN_FPS, background
from fer_mm.inference.export import export_onnx
from fer_mm.inference.media import clip_input, read_media
from fer_mm.inference.recognizer import Recognizer
from fer_mm.system import EmotionSystem
from fer_mm.vocab import EMOTIONS, SAMPLE_RATE

FEATURES = ("features: crops, frame sampling, audio", "features: normalisation, spectrogram")


def latency_clips(folder, n: int, seconds: float) -> list[str]:
    """``n`` clips of ``seconds`` in the release's video format, rendered by the twin's renderer."""
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


def untrained_checkpoint(model: str, folder: Path) -> Path:
    """A checkpoint of an untrained ``model`` with the default preprocessing (it costs what a trained one does)."""
    net = {"name": model, "num_classes": 6}
    path = Path(folder) / "model.ckpt"
    torch.save({"hyper_parameters": {"net": net, "inputs": {}}, "state_dict": EmotionSystem(net=net).state_dict(),
                "CremaDDataModule": {"preprocess": asdict(PreprocessParams())}}, path)
    return path


def runtimes(args: argparse.Namespace, folder: Path) -> dict[str, Recognizer]:
    """The model under PyTorch and, where ONNX Runtime is installed, under it; with ``args.detectors``'
    detector in place of the checkpoint's where one is given."""
    detector, detector_kwargs = args.detectors[0] if args.detectors else (None, None)
    checkpoint = args.checkpoint or untrained_checkpoint(args.model, folder)
    found = {"PyTorch": Recognizer(checkpoint, detector=detector, detector_kwargs=detector_kwargs)}
    try:
        found["ONNX Runtime"] = Recognizer(export_onnx(checkpoint, Path(folder) / "model.onnx"), runtime="onnx",
                                           detector=detector, detector_kwargs=detector_kwargs)
    except ImportError as err:
        print(f"(no ONNX Runtime row: {err})")
    return found


def stage_times(clips: list[str], models: dict[str, Recognizer]) -> dict[str, list[float]]:
    """Milliseconds of each stage for each clip after the first (a warm-up), as ``predict`` runs them."""
    rec = models["PyTorch"]
    times: dict[str, list[float]] = {}

    def timed(stage: str, fn, *a):
        t0 = time.perf_counter()
        out = fn(*a)
        times.setdefault(stage, []).append((time.perf_counter() - t0) * 1000)
        return out

    for i, path in enumerate(clips):
        media = timed("decode (frames + audio track)", read_media, path, None, rec)
        detected = timed("face tracking (detector on every frame)", detect_faces, media.frames, rec.detectors)
        item, _, _ = timed(FEATURES[0], clip_input, rec, media.frames, detected, media.audio, media.audio_rate)
        inputs = timed(FEATURES[1], rec.network_inputs, [item])
        for name, runtime in models.items():
            timed(f"model ({name})", runtime.network_outputs, inputs)
        if i == 0:
            times.clear()
    return times


def percentiles(stage: str, ms, **extra) -> dict:
    return dict(stage=stage, p50=float(np.percentile(ms, 50)), p95=float(np.percentile(ms, 95)), **extra)


def latency_rows(times: dict[str, list[float]], runtime_names, seconds: float) -> list[dict]:
    """A row per stage, then per runtime features + model and the whole pipeline (with its x real time)."""
    rows = [percentiles(k, v) for k, v in times.items()]
    per_clip = np.sum([times[k] for k in times if not k.startswith("model")], axis=0)
    features = np.add(*(times[k] for k in FEATURES))
    for name in runtime_names:
        model = np.asarray(times[f"model ({name})"])
        rows.append(percentiles(f"features + model ({name})", features + model))
        whole = per_clip + model  # decode + tracking + features + model
        rows.append(percentiles(f"whole pipeline ({name})", whole,
                                realtime=seconds * 1000 / float(np.percentile(whole, 50))))
    return rows


def latency(args: argparse.Namespace) -> list[dict]:
    """Per-clip inference latency by stage (see :mod:`fer_mm.bench`); a row per stage."""
    with tempfile.TemporaryDirectory() as tmp:
        models = runtimes(args, Path(tmp))
        times = stage_times(latency_clips(tmp, args.clips + 1, args.seconds), models)
    return latency_rows(times, models, args.seconds)
