"""``python -m fer_mm.export checkpoint=PATH format=onnx output=model.onnx``: a trained network as ONNX.

The exported graph is the network: its inputs are what :class:`~fer_mm.models.inputs.ModelInputs`
makes of a clip (``video``: ``[batch, T, 98, 80]`` float frames, ``audio``: ``[batch, 1, n_freq,
n_time]`` spectrogram images), its outputs one per task it reads: ``logits`` ``[batch, classes]``
(emotion, where the model has emotion classes), ``gender`` ``[batch, 2]`` logits and ``age``
(``[batch]`` years, or ``[batch, groups]`` logits) where it has those heads; the batch size is
dynamic. The model's metadata (key ``fer_mm``) holds what rebuilds the rest of the path: the
inputs' settings, the preprocessing (face detector, crop size, sample rate), the class names, the
tasks' settings (the age groups), which output is which task, and the checkpoint it came from, so
``python -m fer_mm.predict runtime=onnx checkpoint=model.onnx`` prepares clips exactly as training did.
Needs the ``onnx`` extra: ``pip install -e '.[onnx]'``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import hydra
import numpy as np
import torch
from torch import nn

from fer_mm.data.clips import clip_item
from fer_mm.environment import PROJECT_ROOT
from fer_mm.inference.model import ONNX_METADATA_KEY, TrainedModel
from fer_mm.inference.readings import ONNX_OUTPUTS, network_outputs
from fer_mm.vocab import AUDIO, VIDEO

log = logging.getLogger("fer_mm.export")
FORMATS = ("onnx",)
OPSET = 18


class _Network(nn.Module):
    """The network alone, its inputs by name and its outputs those of ``tasks`` (what torch.export traces)."""

    def __init__(self, net: nn.Module, tasks: list[str]):
        super().__init__()
        self.net, self.tasks = net, tasks

    def forward(self, video: torch.Tensor | None = None, audio: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        outputs = network_outputs(self.net, video, audio)
        return tuple(outputs[t] for t in self.tasks)


def example_inputs(rec: TrainedModel, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """The network's inputs for ``batch`` random clips (noise faces, noise audio of 1 to 5 s), made
    by the model's own inputs."""
    spec, rng = rec.spec, np.random.default_rng(seed)
    items = []
    for _ in range(batch):
        faces = rng.integers(0, 256, (spec.frames, rec.params.face_height, rec.params.face_width), dtype=np.uint8)
        pcm = rng.normal(0, 2000, int(rng.uniform(1, 5) * spec.sample_rate)).astype(np.int16)
        items.append(clip_item(faces if VIDEO in spec.modalities else None, pcm if AUDIO in spec.modalities else None,
                               spec))
    return rec.network_inputs(items)


def export_onnx(checkpoint: str | Path, output: str | Path, opset: int = OPSET) -> Path:
    """Export the checkpoint's network to ``output`` with a dynamic batch size and fer-mm's metadata."""
    try:
        import onnx
    except ImportError as err:
        raise ImportError("export needs the onnx package: pip install -e '.[onnx]'") from err
    for chatty in ("onnxscript", "onnx_ir"):  # a line per optimisation step otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    rec = TrainedModel(checkpoint, runtime="torch", device="cpu")
    modalities = tuple(rec.modalities)
    inputs = example_inputs(rec)
    tasks = [t for t in rec.network_outputs(inputs) if t in ONNX_OUTPUTS and (t != "emotion" or rec.class_names)]
    network = _Network(rec.net, tasks).eval()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        torch.onnx.export(network, (), str(output), kwargs={m: inputs[m] for m in modalities},
                          input_names=list(modalities), output_names=[ONNX_OUTPUTS[t] for t in tasks],
                          dynamic_shapes={m: {0: batch} for m in modalities}, opset_version=opset, dynamo=True,
                          external_data=False, verbose=False)
    model = onnx.load(str(output))
    meta = dict(format_version=2, modalities=list(modalities), inputs=rec.inputs_config,
                preprocess=asdict(rec.params), class_names=rec.class_names, tasks=rec.tasks,
                outputs={t: ONNX_OUTPUTS[t] for t in tasks}, checkpoint=str(rec.checkpoint),
                net=rec.net_config, torch=torch.__version__, opset=opset)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(output))
    return output


def run(cfg) -> Path:
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r}: use one of {list(FORMATS)}")
    path = export_onnx(cfg.checkpoint, cfg.output, cfg.opset)
    print(f"exported {cfg.checkpoint} -> {path} ({path.stat().st_size / 1e6:.1f} MB); run it with "
          f"python -m fer_mm.predict runtime=onnx checkpoint={path} input=VIDEO")
    return path


# an absolute path: run as python -m fer_mm.export, this function's module is not __main__, and Hydra
# would look for a relative config_path among importable packages, not beside this file
@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="export")
def main(cfg) -> None:
    run(cfg)
