"""ONNX export: every registry model, run by ONNX Runtime, gives PyTorch's logits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from fer_mm.inference.export import example_inputs, export_onnx  # noqa: E402
from fer_mm.models import list_models  # noqa: E402
from fer_mm.inference.model import ONNX_METADATA_KEY  # noqa: E402
from fer_mm.inference.recognizer import Recognizer  # noqa: E402
from fer_mm.system import EmotionSystem  # noqa: E402


def save_checkpoint(path, net: dict, inputs: dict | None = None):
    """A checkpoint as training writes one (hyper-parameters, weights, the datamodule's state)."""
    system = EmotionSystem(net=net, inputs=inputs)
    torch.save({"hyper_parameters": dict(net=net, inputs=inputs or {}), "state_dict": system.state_dict(),
                "CremaDDataModule": {"preprocess": {"face_height": 98, "face_width": 80},
                                     "class_names": ["anger", "disgust", "fear", "happy", "neutral", "sad"]}}, path)
    return path


# the two Inception networks take 50 s of the default suite's 10 minutes: they run in the slow job, as do the
# models beyond AR5 (45 s with the small cross-attention model below)
SLOW_EXPORTS = {"inception_v4", "inception_resnet_v2", "resnet50", "frame_resnet", "logmel_cnn", "late_fusion",
                "cross_attention"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_EXPORTS else n
                                  for n in list_models()])
def test_onnx_runtime_matches_pytorch_for_every_registry_model(name, tmp_path):
    ckpt = save_checkpoint(tmp_path / f"{name}.ckpt", {"name": name, "num_classes": 6})
    onnx_path = export_onnx(ckpt, tmp_path / f"{name}.onnx")
    torch_model = Recognizer(ckpt)
    onnx_model = Recognizer(onnx_path, runtime="onnx")
    assert onnx_model.modalities == torch_model.modalities and onnx_model.class_names == torch_model.class_names
    # another batch size than the export's (2): the batch is dynamic
    inputs = example_inputs(torch_model, batch=3, seed=1)
    expected, got = torch_model.logits(inputs), onnx_model.logits(inputs)
    assert got.shape == expected.shape == (3, 6)
    assert (got - expected).abs().max().item() <= 1e-4
    import onnx

    [meta] = [json.loads(p.value) for p in onnx.load(str(onnx_path)).metadata_props if p.key == ONNX_METADATA_KEY]
    assert meta["preprocess"]["detector"] == "haar" and meta["modalities"] == list(torch_model.modalities)


def test_onnx_model_carries_the_inputs_it_was_trained_with(tmp_path):
    inputs = {"frames": 12, "max_audio_seconds": 3.0, "audio": {"frontend": "logmel", "n_freq": 64}}
    ckpt = save_checkpoint(tmp_path / "m.ckpt", {"name": "ar5", "num_classes": 6}, inputs)
    rec = Recognizer(export_onnx(ckpt, tmp_path / "m.onnx"), runtime="onnx")
    assert rec.spec.frames == 12 and rec.spec.max_audio_samples == 48_000
    assert type(rec.inputs.frontend).__name__ == "LogMelSpectrogram" and rec.inputs.frontend.n_freq == 64
    assert np.isfinite(rec.logits(example_inputs(rec, 1)).numpy()).all()


def test_an_onnx_file_without_runtime_onnx_is_named(tmp_path):
    ckpt = save_checkpoint(tmp_path / "m.ckpt", {"name": "ar2", "num_classes": 6})
    path = export_onnx(ckpt, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="runtime=onnx"):
        Recognizer(path)


@pytest.mark.slow  # in the slow job: the default suite stays under 10 minutes on 2 cores
def test_the_export_command(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    ckpt = save_checkpoint(tmp_path / "m.ckpt", {"name": "ar2", "num_classes": 6})
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-m", "fer_mm.export", f"checkpoint={ckpt}", "format=onnx",
                           "output=out/m.onnx"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "m.onnx").is_file() and "runtime=onnx" in done.stdout
    assert not list(tmp_path.glob("*.log"))  # nothing left in the folder it ran from
    wrong = subprocess.run([sys.executable, "-m", "fer_mm.export", f"checkpoint={ckpt}", "format=tflite"],
                           cwd=tmp_path, capture_output=True, text=True, env=env)
    assert wrong.returncode == 1 and "format='tflite': use one of ['onnx']" in wrong.stderr


@pytest.mark.slow
def test_a_small_cross_attention_model_exports_with_parity(tmp_path):
    """Attention, across the modalities and over the frames (a transformer over the frames), in ONNX."""
    net = dict(name="cross_attention", video_args=dict(widths=[8, 16], blocks=[1, 1], temporal="transformer"),
               audio_args=dict(channels=[8, 16]), dim=32)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", {**net, "num_classes": 6},
                           inputs={"audio": {"frontend": "logmel", "noise_std": 0.0}})
    torch_model, onnx_model = Recognizer(ckpt), Recognizer(export_onnx(ckpt, tmp_path / "m.onnx"), runtime="onnx")
    inputs = example_inputs(torch_model, batch=3, seed=2)
    assert (onnx_model.logits(inputs) - torch_model.logits(inputs)).abs().max().item() <= 1e-4
