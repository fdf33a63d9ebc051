"""``python -m fer_mm.models.summary``: parameters and multiply-accumulates of every registered model.

MACs are counted with forward hooks on convolutions and linear layers (the layers that hold
nearly all the arithmetic), for one sample at the default shapes: video [20, 98, 80] and
audio [1, 128, 128]. Prints the model table of docs/models.md.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from fer_mm.models import get_model, list_models
from fer_mm.models.base import FRAMES

DEFAULT_VIDEO = (FRAMES, 98, 80)
DEFAULT_AUDIO = (1, 128, 128)


def count_macs(model: nn.Module, **inputs: torch.Tensor) -> int:
    total = 0

    def hook(module, args, output):
        nonlocal total
        if isinstance(module, nn.modules.conv._ConvNd):
            per_output = module.in_channels // module.groups * int(torch.tensor(module.kernel_size).prod())
            total += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(**inputs)
    finally:
        for h in handles:
            h.remove()
    return total


def model_rows(frames: int = DEFAULT_VIDEO[0]) -> list[dict]:
    video = torch.zeros(1, frames, *DEFAULT_VIDEO[1:])
    audio = torch.zeros(1, *DEFAULT_AUDIO)
    rows = []
    for name in list_models():
        torch.manual_seed(0)
        model = get_model(name, frames=frames, num_classes=6)
        rows.append(dict(model=name, inputs="+".join(model.modalities),
                         params=sum(p.numel() for p in model.parameters()),
                         macs=count_macs(model, video=video, audio=audio),
))
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | inputs | parameters | MACs per sample |", "| --- | --- | ---: | ---: |"]
    for r in rows:
        lines.append(f"| `{r['model']}` | {r['inputs']} | {r['params']:,} | {r['macs'] / 1e6:,.1f} M |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=DEFAULT_VIDEO[0])
    args = parser.parse_args()
    print(markdown_table(model_rows(args.frames)))


if __name__ == "__main__":
    main()
