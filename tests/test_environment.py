"""The lock, the environment every run records, and a broken dependency named with its fix."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from fer_mm.environment import (LOCK_COMMAND, LOCK_FILE, LOCK_LINE, PROJECT_ROOT, environment_record, git_commit,
                                lock_hash, lock_pins, normalise)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the test extra installs tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BINARY_COUPLED = ("torch", "torchaudio", "torchvision")


def _lock() -> tuple[dict[str, list[tuple[str, str | None]]], set[str]]:
    """The lock's pins (name -> [(version, marker)]) and the packages it says come from pyproject.toml
    (uv writes ``# via fer-mm (pyproject.toml)`` under each)."""
    pins = {}
    for name, version, marker in lock_pins(ROOT):
        pins.setdefault(name, []).append((version, marker))
    direct, current = set(), None
    for line in (ROOT / LOCK_FILE).read_text().splitlines():
        match = LOCK_LINE.match(line)
        current = normalise(match.group(1)) if match else current
        if "fer-mm (pyproject.toml)" in line and current:
            direct.add(current)
    return pins, direct


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in [*project["dependencies"], *extras] if normalise(Requirement(r).name) != "fer-mm"]


def test_lock_and_pyproject_agree():
    pins, direct = _lock()
    requirements = _requirements()
    for req in requirements:
        name = normalise(req.name)
        assert name in pins, f"{req} is in pyproject.toml but not in {LOCK_FILE}: regenerate it ({LOCK_COMMAND})"
        for version, _ in pins[name]:
            assert req.specifier.contains(version, prereleases=True), \
                f"{LOCK_FILE} pins {name}=={version}, outside pyproject.toml's {req}: regenerate it ({LOCK_COMMAND})"
    # a package dropped from pyproject.toml leaves the lock too
    assert direct == {normalise(r.name) for r in requirements}, f"regenerate {LOCK_FILE}: {LOCK_COMMAND}"
    assert LOCK_COMMAND in (ROOT / LOCK_FILE).read_text()[:500], "the lock was made by another command than the README's"


def test_binary_coupled_packages_are_pinned_exactly_in_pyproject():
    pins, _ = _lock()
    by_name = {normalise(r.name): r for r in _requirements()}
    for name in BINARY_COUPLED:
        [spec] = by_name[name].specifier
        assert spec.operator == "==" and "*" not in spec.version, f"{name} must be pinned exactly, not {spec}"
        assert [v for v, _ in pins[name]] == [spec.version]


def test_lock_holds_on_this_platform():
    # every pin whose marker holds here: one version per package (the install would otherwise fail)
    pins, _ = _lock()
    for name, versions in pins.items():
        here = [v for v, marker in versions if marker is None or Marker(marker).evaluate()]
        assert len(here) <= 1, f"{name}: {here}"


def test_environment_record_names_versions_lock_and_commit(tmp_path):
    import numpy

    env = environment_record()
    assert env["packages"]["numpy"] == numpy.__version__
    assert env["lock"] == lock_hash() and re.fullmatch(r"[0-9a-f]{12}", env["lock"])
    # the hash follows the pins, not uv's notes about them
    lock = (PROJECT_ROOT / LOCK_FILE).read_text()
    for name, text in (("notes", lock.replace("# via", "#  via")), ("pin", lock.replace("\nnumpy==", "\nnumpy==9"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / LOCK_FILE).write_text(text)
    assert lock_hash(tmp_path / "notes") == lock_hash() != lock_hash(tmp_path / "pin")
    assert lock_hash(tmp_path) is None
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    # a commit, marked dirty where files differ from it
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True).stdout  # noqa: E731
    git("init", "-q")
    (repo / "a.txt").write_text("1")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD").strip()
    assert git_commit(repo) == head
    (repo / "a.txt").write_text("2")
    git_commit.cache_clear()
    assert git_commit(repo) == head + "-dirty"
    assert git_commit(tmp_path) is None  # not a checkout


def _broken(tmp_path, module: str, error: str) -> dict:
    """An environment (for a subprocess) in which importing ``module`` raises ``error``."""
    shadow = tmp_path / "shadow" / module
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(f"raise {error}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), str(ROOT)]),
            "FER_MM_ROOT": str(tmp_path), "PYTHONWARNINGS": "ignore"}


@pytest.fixture
def broken_torchaudio(tmp_path):
    """An environment whose torchaudio fails to load as 2.11.1 did beside torch 2.11.0."""
    return _broken(tmp_path, "torchaudio",
                   'OSError("libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace")')


def test_train_names_a_dependency_that_fails_to_import(broken_torchaudio, tmp_path):
    out = subprocess.run([sys.executable, "-m", "fer_mm.train", "experiment=ar5_fusion"], capture_output=True,
                         text=True, env=broken_torchaudio, cwd=tmp_path, timeout=300)
    assert out.returncode != 0
    assert "error: torchaudio does not import" in out.stderr and "undefined symbol" in out.stderr
    assert "fix: torchaudio only loads with the torch it was built for" in out.stderr
    assert "pip install -c requirements.lock" in out.stderr and "fer_mm.doctor" in out.stderr
    assert "Error locating target" not in out.stdout + out.stderr
    assert not (tmp_path / "datasets").exists()  # stopped before any work


def test_a_broken_wandb_is_named_before_any_data_work(tmp_path):
    env = _broken(tmp_path, "wandb", 'ImportError("cannot import name Mapping from collections")')
    out = subprocess.run([sys.executable, "-m", "fer_mm.train", "experiment=ar5_fusion"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 1
    assert "error: wandb does not import" in out.stderr and "Mapping from collections" in out.stderr
    assert "logger=csv" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "datasets").exists()


def test_doctor_names_a_dependency_that_fails_to_import(broken_torchaudio, tmp_path):
    out = subprocess.run([sys.executable, "-m", "fer_mm.doctor"], capture_output=True, text=True,
                         env=broken_torchaudio, cwd=tmp_path, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    failed = [line for line in out.stdout.splitlines() if line.lstrip().startswith("FAIL")]
    assert any("import torchaudio" in line and "undefined symbol" in line for line in failed), out.stdout
    assert "FAILED: import torchaudio, torchaudio" in out.stdout
    assert "fix: torchaudio only loads with the torch it was built for" in out.stdout
    assert "ok    haar" in out.stdout  # what does not need torchaudio is still checked


def test_doctor_passes_here():
    out = subprocess.run([sys.executable, "-m", "fer_mm.doctor"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok    haar" in out.stdout and "ok    codec flv+aac" in out.stdout
    assert "required parts work" in out.stdout
