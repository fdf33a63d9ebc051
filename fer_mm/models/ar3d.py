"""AR3: a 3-D CNN over the frame sequence, so kernels see both the face and its motion."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fer_mm.models.base import FRAMES, EmotionModel, make_head
from fer_mm.models.registry import register_model
from fer_mm.vocab import VIDEO


def conv3d_block(in_chans: int, out_chans: int, pool: tuple[int, int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(in_chans, out_chans, 3, padding=1, bias=False), nn.BatchNorm3d(out_chans),
                         nn.ReLU(inplace=True), nn.MaxPool3d(pool, ceil_mode=True))


def averaging_matrix(size: int, out: int) -> Tensor:
    """``[out, size]``: row i averages the input cells of adaptive pooling's region i."""
    m = torch.zeros(out, size)
    for i in range(out):
        start, end = (i * size) // out, math.ceil((i + 1) * size / out)
        m[i, start:end] = 1.0 / (end - start)
    return m


class AdaptiveAvgPool3d(nn.AdaptiveAvgPool3d):
    """``nn.AdaptiveAvgPool3d`` that also exports to ONNX, which has no adaptive pooling.

    Under export (where the input's size is fixed) the same region means are taken as products
    with averaging matrices; otherwise PyTorch's own kernel runs, as it did for every trained model.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not torch.compiler.is_exporting():
            return super().forward(x)
        for axis, out in zip((2, 3, 4), self.output_size):
            weights = averaging_matrix(x.shape[axis], out).to(x.dtype)
            x = (x.movedim(axis, -1) @ weights.T).movedim(-1, axis)
        return x


class AR3(EmotionModel):
    """Video [B, T, H, W] read as one-channel volumes [B, 1, T, H, W].

    Three 3x3x3 conv blocks (16-32-64 channels); the first pools space only (1x2x2), so the
    early layers keep the frame-to-frame relations; then an adaptive pool to (2, 3, 3), FC 256.

    Args:
        num_classes: classes; 0 for none.
        channels: per conv block.
        dropout: before the classifier and the FC layer.
    """

    modalities = (VIDEO,)

    def __init__(self, num_classes: int = 6, *, channels: tuple[int, ...] = (16, 32, 64), fc: int = 256,
                 dropout: float = 0.3):
        super().__init__()
        pools = [(1, 2, 2)] + [(2, 2, 2)] * (len(channels) - 1)
        blocks, prev = [], 1
        for width, pool in zip(channels, pools):
            blocks.append(conv3d_block(prev, width, pool))
            prev = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = AdaptiveAvgPool3d((2, 3, 3))
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(prev * 18, fc), nn.ReLU(inplace=True))
        self.num_features = fc
        self.head = make_head(fc, num_classes, dropout)

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        x = self.pick_input(video, audio).unsqueeze(1)
        return self.fc(self.pool(self.blocks(x)))


@register_model
def ar3(*, frames: int = FRAMES, num_classes: int = 6, dropout: float = 0.3, modality: str = VIDEO) -> AR3:
    """AR3: 3-D CNN over [1, T, 98, 80] volumes (any T; ``frames`` is accepted for a uniform signature)."""
    if modality != VIDEO:
        raise ValueError("ar3 is a video model (3-D convolutions over the frame sequence)")
    return AR3(num_classes, dropout=dropout)
