"""InceptionV4 and Inception-ResNet-v2 (Szegedy et al. 2017), for 1 or T channels and small inputs.

Block layout and widths as in the paper (and timm's implementation); adapted: the stem takes
``in_chans`` channels, and an adaptive average pool replaces the fixed 8x8 pool, so 98x80
faces (9x7 after the stem, 1x1 after the last reduction) and 128x128 spectrograms both work.
Inputs must be at least about 75x75 pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fer_mm.models.base import FRAMES, EmotionModel, in_chans_for, make_head
from fer_mm.models.registry import load_local_weights, register_model
from fer_mm.vocab import VIDEO


class ConvBN(nn.Sequential):
    def __init__(self, in_chans: int, out_chans: int, kernel_size, stride: int = 1, padding=0):
        super().__init__(nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, bias=False),
                         nn.BatchNorm2d(out_chans, eps=1e-3), nn.ReLU(inplace=True))


def _seq(*specs) -> nn.Sequential:
    """Chain of ConvBN from (in, out, kernel, stride, padding) tuples."""
    return nn.Sequential(*[ConvBN(*s) for s in specs])


def _avg_branch(in_chans: int, out_chans: int) -> nn.Sequential:
    return nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), ConvBN(in_chans, out_chans, 1))


class Concat(nn.Module):
    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


class SplitTail(nn.Module):
    """A branch whose last step splits in two (1x3 and 3x1) and concatenates (Inception-C)."""

    def __init__(self, trunk: nn.Module, in_chans: int, out_chans: int):
        super().__init__()
        self.trunk = trunk
        self.a = ConvBN(in_chans, out_chans, (1, 3), padding=(0, 1))
        self.b = ConvBN(in_chans, out_chans, (3, 1), padding=(1, 0))

    def forward(self, x: Tensor) -> Tensor:
        x = self.trunk(x)
        return torch.cat([self.a(x), self.b(x)], 1)


def inception_v4_stem(in_chans: int) -> nn.Sequential:
    return nn.Sequential(
        _seq((in_chans, 32, 3, 2), (32, 32, 3), (32, 64, 3, 1, 1)),
        Concat(nn.MaxPool2d(3, 2), ConvBN(64, 96, 3, 2)),  # 160
        Concat(_seq((160, 64, 1), (64, 96, 3)),
               _seq((160, 64, 1), (64, 64, (1, 7), 1, (0, 3)), (64, 64, (7, 1), 1, (3, 0)), (64, 96, 3))),  # 192
        Concat(ConvBN(192, 192, 3, 2), nn.MaxPool2d(3, 2)),  # 384
    )


def inception_a() -> Concat:
    return Concat(ConvBN(384, 96, 1), _seq((384, 64, 1), (64, 96, 3, 1, 1)),
                  _seq((384, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1)), _avg_branch(384, 96))


def reduction_a() -> Concat:
    return Concat(ConvBN(384, 384, 3, 2), _seq((384, 192, 1), (192, 224, 3, 1, 1), (224, 256, 3, 2)),
                  nn.MaxPool2d(3, 2))  # 1024


def inception_b() -> Concat:
    return Concat(ConvBN(1024, 384, 1),
                  _seq((1024, 192, 1), (192, 224, (1, 7), 1, (0, 3)), (224, 256, (7, 1), 1, (3, 0))),
                  _seq((1024, 192, 1), (192, 192, (7, 1), 1, (3, 0)), (192, 224, (1, 7), 1, (0, 3)),
                       (224, 224, (7, 1), 1, (3, 0)), (224, 256, (1, 7), 1, (0, 3))),
                  _avg_branch(1024, 128))


def reduction_b() -> Concat:
    return Concat(_seq((1024, 192, 1), (192, 192, 3, 2)),
                  _seq((1024, 256, 1), (256, 256, (1, 7), 1, (0, 3)), (256, 320, (7, 1), 1, (3, 0)), (320, 320, 3, 2)),
                  nn.MaxPool2d(3, 2))  # 1536


def inception_c() -> Concat:
    return Concat(ConvBN(1536, 256, 1), SplitTail(ConvBN(1536, 384, 1), 384, 256),
                  SplitTail(_seq((1536, 384, 1), (384, 448, (3, 1), 1, (1, 0)), (448, 512, (1, 3), 1, (0, 1))), 512, 256),
                  _avg_branch(1536, 256))


class Residual(nn.Module):
    """Inception-ResNet unit: x + scale * up(branches(x)), then ReLU (not after the very last)."""

    def __init__(self, branches: Concat, mid: int, chans: int, scale: float, relu: bool = True):
        super().__init__()
        self.branches, self.up = branches, nn.Conv2d(mid, chans, 1)
        self.scale, self.act = scale, nn.ReLU(inplace=False) if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.scale * self.up(self.branches(x)))


def block35() -> Residual:
    return Residual(Concat(ConvBN(320, 32, 1), _seq((320, 32, 1), (32, 32, 3, 1, 1)),
                           _seq((320, 32, 1), (32, 48, 3, 1, 1), (48, 64, 3, 1, 1))), 128, 320, 0.17)


def block17() -> Residual:
    return Residual(Concat(ConvBN(1088, 192, 1),
                           _seq((1088, 128, 1), (128, 160, (1, 7), 1, (0, 3)), (160, 192, (7, 1), 1, (3, 0)))),
                    384, 1088, 0.10)


def block8(relu: bool = True) -> Residual:
    return Residual(Concat(ConvBN(2080, 192, 1),
                           _seq((2080, 192, 1), (192, 224, (1, 3), 1, (0, 1)), (224, 256, (3, 1), 1, (1, 0)))),
                    448, 2080, 0.20, relu)


class InceptionNet(EmotionModel):
    """A feature body (``features``) + adaptive average pool + classifier."""

    def __init__(self, features: nn.Sequential, num_features: int, num_classes: int, dropout: float,
                 modality: str, pretrained: str | None):
        super().__init__()
        self.modalities = (modality,)
        self.features = features
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = num_features
        self.head = make_head(num_features, num_classes, dropout)
        if pretrained:
            load_local_weights(self, pretrained, first_conv="features.0.0.0.0")

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        return self.pool(self.features(self.pick_input(video, audio)))


@register_model
def inception_v4(*, frames: int = FRAMES, num_classes: int = 6, modality: str = VIDEO, dropout: float = 0.2,
                 pretrained: str | None = None) -> InceptionNet:
    """InceptionV4: stem, 4 x Inception-A, Reduction-A, 7 x Inception-B, Reduction-B, 3 x Inception-C."""
    features = nn.Sequential(inception_v4_stem(in_chans_for(modality, frames)), *[inception_a() for _ in range(4)],
                             reduction_a(), *[inception_b() for _ in range(7)], reduction_b(),
                             *[inception_c() for _ in range(3)])
    return InceptionNet(features, 1536, num_classes, dropout, modality, pretrained)


@register_model
def inception_resnet_v2(*, frames: int = FRAMES, num_classes: int = 6, modality: str = VIDEO, dropout: float = 0.2,
                        pretrained: str | None = None) -> InceptionNet:
    """Inception-ResNet-v2: stem, Mixed-5b, 10 x Block35, Mixed-6a, 20 x Block17, Mixed-7a, 10 x Block8, 1x1 to 1536."""
    stem = nn.Sequential(
        _seq((in_chans_for(modality, frames), 32, 3, 2), (32, 32, 3), (32, 64, 3, 1, 1)), nn.MaxPool2d(3, 2),
        _seq((64, 80, 1), (80, 192, 3)), nn.MaxPool2d(3, 2),
        Concat(ConvBN(192, 96, 1), _seq((192, 48, 1), (48, 64, 5, 1, 2)),
               _seq((192, 64, 1), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1)), _avg_branch(192, 64)),  # 320
    )
    mixed_6a = Concat(ConvBN(320, 384, 3, 2), _seq((320, 256, 1), (256, 256, 3, 1, 1), (256, 384, 3, 2)),
                      nn.MaxPool2d(3, 2))  # 1088
    mixed_7a = Concat(_seq((1088, 256, 1), (256, 384, 3, 2)), _seq((1088, 256, 1), (256, 288, 3, 2)),
                      _seq((1088, 256, 1), (256, 288, 3, 1, 1), (288, 320, 3, 2)), nn.MaxPool2d(3, 2))  # 2080
    features = nn.Sequential(stem, *[block35() for _ in range(10)], mixed_6a, *[block17() for _ in range(20)],
                             mixed_7a, *[block8() for _ in range(9)], block8(relu=False), ConvBN(2080, 1536, 1))
    return InceptionNet(features, 1536, num_classes, dropout, modality, pretrained)
