"""Small CNNs of the FER2013 face-image systems: the common Keras CNN and mini-Xception.

Both were designed for one 48x48 grayscale face (T=1, ``[B, 1, 48, 48]``); here the first
convolution takes ``in_chans`` (T stacked frames, or 1) and global average pooling makes any
input size of at least 48x48 work (CREMA-D clips: ``[B, 20, 98, 80]``).
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from fer_mm.models.base import FRAMES, EmotionModel, conv_block, dense_layers, in_chans_for, make_head
from fer_mm.models.registry import register_model
from fer_mm.vocab import VIDEO


class FERCNN(EmotionModel):
    """Pairs of 3x3 convolutions with a max-pool after each pair, then two dense layers.

    This follows the CNN most FER2013 webcam demos train in Keras (no single paper: a VGG-style
    design, Simonyan & Zisserman 2015, on the FER2013 challenge data, Goodfellow et al. 2013):
    conv 64-64, pool, 128-128, pool, 256-256, pool (3x3, ReLU, batch norm), dropout, dense 1024,
    dense 1024, softmax. Adapted: global average pooling replaces ``Flatten`` (any input size, and
    256 instead of 6*6*256 inputs to the first dense layer); conv -> batch norm -> ReLU order
    (as :func:`conv_block`).

    Args:
        in_chans: T stacked frames, or 1 (a face image or a spectrogram).
        num_classes: classes; 0 for the embedding (the second dense layer, ``num_features`` wide).
        channels: widths of the conv stages; each stage is ``convs_per_stage`` convs and a 2x2 max-pool.
        convs_per_stage: convolutions per stage.
        fc: widths of the dense layers; the last is the embedding.
        conv_dropout: after each stage's pool.
        dropout: before each dense layer and before the classifier.
        modality: ``video`` or ``audio``.
    """

    def __init__(self, in_chans: int, num_classes: int = 7, *, channels: Sequence[int] = (64, 128, 256),
                 convs_per_stage: int = 2, fc: Sequence[int] = (1024, 1024), conv_dropout: float = 0.25,
                 dropout: float = 0.5, modality: str = VIDEO):
        super().__init__()
        self.modalities = (modality,)
        stages, prev = [], in_chans
        for width in channels:
            convs = [conv_block(prev if i == 0 else width, width, 3, pool=i == convs_per_stage - 1)
                     for i in range(convs_per_stage)]
            stages.append(nn.Sequential(*convs, nn.Dropout(conv_dropout)))
            prev = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc, prev = dense_layers(prev, fc, dropout)
        self.num_features = prev
        self.head = make_head(prev, num_classes, dropout)

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        return self.fc(self.pool(self.stages(self.pick_input(video, audio))))


class SeparableConv2d(nn.Sequential):
    """Keras' ``SeparableConv2D`` without bias: a depthwise kxk convolution, then a pointwise 1x1."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 3):
        super().__init__(
            nn.Conv2d(in_chans, in_chans, kernel_size, padding=kernel_size // 2, groups=in_chans, bias=False),
            nn.Conv2d(in_chans, out_chans, 1, bias=False),
        )


class XceptionModule(nn.Module):
    """mini-Xception's residual module: sepconv-BN-ReLU-sepconv-BN, 3x3/2 max-pool, plus a 1x1/2 conv-BN shortcut."""

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.shortcut = nn.Sequential(nn.Conv2d(in_chans, out_chans, 1, stride=2, bias=False),
                                      nn.BatchNorm2d(out_chans))
        self.body = nn.Sequential(
            SeparableConv2d(in_chans, out_chans), nn.BatchNorm2d(out_chans), nn.ReLU(inplace=True),
            SeparableConv2d(out_chans, out_chans), nn.BatchNorm2d(out_chans),
            nn.MaxPool2d(3, stride=2, padding=1),  # Keras' padding="same": ceil(n / 2), as the shortcut
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


class MiniXception(EmotionModel):
    """mini-Xception (Arriaga, Ploger & Valdenegro 2017, "Real-time convolutional neural networks for
    emotion and gender classification"; their ``face_classification`` code).

    Base: two 3x3 convolutions (8 filters, no padding) with batch norm and ReLU; then four
    residual modules (16, 32, 64, 128 filters), each two depthwise-separable 3x3 convolutions with
    batch norm (ReLU between), a 3x3 max-pool of stride 2, and a 1x1 stride-2 conv + batch norm
    shortcut. No fully connected layer.

    The paper's head is a 3x3 convolution to the classes, then global average pooling and softmax.
    Here, to keep the split forward, ``forward_features`` is the global-average-pooled 128-channel
    map and ``head`` a ``Linear`` (a 1x1 convolution after the pooling: by linearity the same as
    a 1x1 convolution before it). A 3x3 convolution before the pooling differs from that only at
    the borders of the map, where its zero padding drops part of the kernel.

    Parameters: 49,783 for 7 classes and one 48x48 channel (51,151 with T=20, 6 classes: 51,022).
    The paper says "approximately 60,000"; its Keras model has 58,423: the same layers, with the
    3x3 head (8,071 instead of 903) and the batch norms' running statistics (1,472) counted.

    Args:
        in_chans: T stacked frames, or 1 (a face image or a spectrogram).
        num_classes: classes; 0 for the 128-wide embedding.
        channels: widths of the residual modules.
        stem_chans: width of the two base convolutions.
        dropout: before the classifier (the paper has none).
        modality: ``video`` or ``audio``.
    """

    def __init__(self, in_chans: int, num_classes: int = 7, *, channels: Sequence[int] = (16, 32, 64, 128),
                 stem_chans: int = 8, dropout: float = 0.0, modality: str = VIDEO):
        super().__init__()
        self.modalities = (modality,)
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_chans, 3, bias=False), nn.BatchNorm2d(stem_chans), nn.ReLU(inplace=True),
            nn.Conv2d(stem_chans, stem_chans, 3, bias=False), nn.BatchNorm2d(stem_chans), nn.ReLU(inplace=True),
        )
        modules, prev = [], stem_chans
        for width in channels:
            modules.append(XceptionModule(prev, width))
            prev = width
        self.stages = nn.Sequential(*modules)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = prev
        self.head = make_head(prev, num_classes, dropout)

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        return self.pool(self.stages(self.stem(self.pick_input(video, audio))))


@register_model
def fer_cnn(*, frames: int = FRAMES, num_classes: int = 6, modality: str = VIDEO, dropout: float = 0.5,
            conv_dropout: float = 0.25) -> FERCNN:
    """The Keras FER2013 CNN: conv 64-64, 128-128, 256-256 (each pair then a max-pool), dense 1024-1024.

    Args:
        frames: T, the stacked frames (1 for face images); ignored for audio.
        num_classes: classes; 0 for the 1024-wide embedding.
        modality: ``video`` or ``audio``.
        dropout: before each dense layer and the classifier.
        conv_dropout: after each conv stage.
    """
    return FERCNN(in_chans_for(modality, frames), num_classes, dropout=dropout, conv_dropout=conv_dropout,
                  modality=modality)


@register_model
def mini_xception(*, frames: int = FRAMES, num_classes: int = 6, modality: str = VIDEO,
                  dropout: float = 0.0) -> MiniXception:
    """mini-Xception (Arriaga et al. 2017): about 50k parameters, real-time on a CPU.

    Args:
        frames: T, the stacked frames (1 for face images); ignored for audio.
        num_classes: classes; 0 for the 128-wide embedding.
        modality: ``video`` or ``audio``.
        dropout: before the classifier (the paper has none).
    """
    return MiniXception(in_chans_for(modality, frames), num_classes, dropout=dropout, modality=modality)
