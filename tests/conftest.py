"""Shared fixtures: a tiny synthetic twin and its cache (made once per test session), configs
composed as a run composes them, and the real CREMA-D metadata where it is present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

META = Path(__file__).resolve().parents[1].parent / "shared" / "crema_d_meta"
CONF = Path(__file__).resolve().parents[1] / "conf"

# 4 actors x sentence IEO (16 clips each): enough actors for train/val/test in every protocol.
TWIN_ACTORS, TWIN_SENTENCES = 4, 1


def meta_file(name: str) -> Path:
    path = META / name
    if not path.is_file():
        pytest.skip(f"real CREMA-D metadata not found at {path}")
    return path


@pytest.fixture(scope="session")
def crema_meta():
    """``crema_meta(name)``: a file of the real release's metadata; the test skips where it is absent."""
    return meta_file


@pytest.fixture(scope="session")
def twin_root(tmp_path_factory) -> Path:
    from fer_mm.data.twins.crema_d import generate

    return generate(tmp_path_factory.mktemp("twin") / "crema_d_synth", TWIN_ACTORS, TWIN_SENTENCES, seed=0,
                    workers=2, progress=False)


@pytest.fixture(scope="session")
def twin_cache(twin_root, tmp_path_factory):
    from fer_mm.data.preprocessing import build_cache

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


@pytest.fixture(scope="session")
def data_overrides(twin_root, twin_cache) -> list[str]:
    """Overrides that point a run at the tiny twin and its cache, quietly, in small batches."""
    return [f"data.root={twin_root}", f"data.cache_dir={twin_cache.path.parent}", "data.synthetic=null",
            "data.progress=false", "data.batch_size=8", "trainer.enable_progress_bar=false"]


def compose_run_config(output_dir: Path, overrides: list[str]):
    """The job config of ``python -m fer_mm.train OVERRIDES``, writing to ``output_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from fer_mm.runs import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir)
        del cfg["hydra"]  # as in a real run: the job's config holds no hydra node
    return cfg


@pytest.fixture(scope="session")
def make_cfg():
    """``make_cfg(output_dir, overrides)``: see :func:`compose_run_config`."""
    return compose_run_config


# Tiny image twins (FER2013: 12 subjects x 8 faces; CK+: 6 subjects), made once per test session.
@pytest.fixture(scope="session")
def fer2013_twin(tmp_path_factory) -> Path:
    from fer_mm.data.twins.images import generate_fer2013

    return generate_fer2013(tmp_path_factory.mktemp("fer2013") / "twin", n_subjects=12, images_per_subject=8, seed=0,
                            workers=1, progress=False)


@pytest.fixture(scope="session")
def ckplus_twin(tmp_path_factory) -> Path:
    from fer_mm.data.twins.images import generate_ckplus

    return generate_ckplus(tmp_path_factory.mktemp("ckplus") / "twin", n_subjects=6, seed=0, workers=2,
                           progress=False)


@pytest.fixture(scope="session")
def image_overrides(tmp_path_factory):
    """``image_overrides(root)``: overrides that point a run at an image set, quietly, in small batches,
    with one cache folder for the session."""
    cache_dir = tmp_path_factory.mktemp("image_cache")

    def overrides(root: Path) -> list[str]:
        # no W&B: a run left open by train() (main() finishes it) would take over a later test's
        return [f"data.root={root}", f"data.cache_dir={cache_dir}", "data.progress=false", "data.batch_size=8",
                "trainer.enable_progress_bar=false", "logger=none"]

    return overrides
