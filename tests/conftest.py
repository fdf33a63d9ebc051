"""Shared fixtures: a tiny synthetic twin and its cache, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

META = Path(__file__).resolve().parents[1].parent / "shared" / "crema_d_meta"

# 4 actors x sentence IEO (16 clips each): enough actors for train/val/test in every protocol.
TWIN_ACTORS, TWIN_SENTENCES = 4, 1


def meta_file(name: str) -> Path:
    path = META / name
    if not path.is_file():
        pytest.skip(f"real CREMA-D metadata not found at {path}")
    return path


@pytest.fixture(scope="session")
def twin_root(tmp_path_factory) -> Path:
    from fer_mm.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("twin") / "crema_d_synth", TWIN_ACTORS, TWIN_SENTENCES, seed=0,
                    workers=2, progress=False)


@pytest.fixture(scope="session")
def twin_cache(twin_root, tmp_path_factory):
    from fer_mm.data.cache import build_cache

    return build_cache(twin_root, tmp_path_factory.mktemp("cache"), workers=2, progress=False)


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B as on a fresh machine: no API key, no mode set; its global state reset afterwards."""
    import wandb

    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield
    wandb.finish()
    wandb.teardown()
