"""Sequence models: face frames as time (a 2-D CNN shared across frames, then a temporal model), and
a log-mel 2-D CNN whose output keeps its time axis.

Both give tokens (``forward_tokens``: ``[B, N, D]``, N frames or time steps) beside the pooled
embedding, so cross-modal attention (:mod:`fer_mm.models.fusion`) can attend over them.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from fer_mm.models.attention import AttentionBlock, positions
from fer_mm.models.base import FRAMES, EmotionModel, make_head
from fer_mm.models.registry import register_model
from fer_mm.vocab import AUDIO, VIDEO

TEMPORAL_MODELS = ("conv", "transformer", "mean")
NORMS = ("group", "batch")


def norm_layer(kind: str):
    """The normalisation after each convolution: ``batch`` (BatchNorm) or ``group`` (GroupNorm, 8
    groups: a sample's own statistics, the same in training and evaluation).

    With BatchNorm, read these networks with precise statistics (``model.precise_bn``): with Adam
    at 1e-3 on a few hundred clips their weights move faster than the running statistics follow,
    and after 4 epochs on the 12-actor twin a late-fusion model read with its running statistics
    was at chance on its validation actors (17.6%), against 48.5% with statistics recomputed from
    the training clips. With GroupNorm the same run did not learn in 4 epochs (15% on its training
    clips)."""
    if kind == "group":
        return lambda channels: nn.GroupNorm(min(8, channels), channels)
    if kind == "batch":
        return nn.BatchNorm2d
    raise ValueError(f"model.net.norm={kind!r}: use one of {list(NORMS)}")


def _stage(in_chans: int, out_chans: int, blocks: int, stride: int, norm) -> nn.Sequential:
    """ResNet stage: ``blocks`` basic blocks, the first one striding (with a 1x1 projection shortcut
    where the shape changes), as torchvision's ``_make_layer``."""
    downsample = None
    if stride != 1 or in_chans != out_chans:
        downsample = nn.Sequential(nn.Conv2d(in_chans, out_chans, 1, stride, bias=False), norm(out_chans))
    layers = [BasicBlock(in_chans, out_chans, stride, downsample, norm_layer=norm)]
    layers += [BasicBlock(out_chans, out_chans, norm_layer=norm) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class FrameEncoder(nn.Module):
    """A small ResNet for one gray face: a strided 3x3 stem and a 2x2 max-pool (a 98x80 face becomes
    25x20), then stages of basic blocks (every stage after the first halves the grid), global
    average pool. ``[N, 1, H, W]`` -> ``[N, widths[-1]]``. ResNet-18's shape at a quarter of its
    width and half its depth: T frames per clip must fit a CPU's budget."""

    def __init__(self, widths: Sequence[int] = (24, 48, 96, 192), blocks: Sequence[int] = (1, 1, 1, 1),
                 norm: str = "batch"):
        super().__init__()
        make_norm = norm_layer(norm)
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"model.net.widths {list(widths)} and model.net.blocks {list(blocks)}: one block count "
                             f"per stage width")
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 2, 1, bias=False), make_norm(widths[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True))
        stages, prev = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            stages.append(_stage(prev, width, n, 1 if i == 0 else 2, make_norm))
            prev = width
        self.stages = nn.Sequential(*stages)
        self.num_features = prev

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x)).mean((2, 3))


class TemporalConv(nn.Module):
    """Residual 1-D convolutions (kernel 3, batch norm, ReLU) over the time axis of ``[B, T, D]`` tokens."""

    def __init__(self, dim: int, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList(nn.Sequential(nn.Conv1d(dim, dim, 3, padding=1, bias=False),
                                                  nn.BatchNorm1d(dim),
                                                  nn.ReLU(inplace=True), nn.Dropout(dropout))
                                    for _ in range(layers))

    def forward(self, x: Tensor) -> Tensor:
        x = x.transpose(1, 2)
        for layer in self.layers:
            x = x + layer(x)
        return x.transpose(1, 2)


class TemporalTransformer(nn.Module):
    """Sinusoidal positions, then self-attention blocks over ``[B, T, D]`` tokens."""

    def __init__(self, dim: int, layers: int = 2, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.blocks = nn.ModuleList(AttentionBlock(dim, heads, dropout=dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + positions(x.shape[1], x.shape[2], x.device)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def make_temporal(kind: str, dim: int, layers: int, heads: int, dropout: float) -> nn.Module:
    if kind == "conv":
        return TemporalConv(dim, layers, dropout)
    if kind == "transformer":
        return TemporalTransformer(dim, layers, heads, dropout)
    if kind == "mean":
        return nn.Identity()
    raise ValueError(f"model.net.temporal={kind!r}: use one of {list(TEMPORAL_MODELS)}")


class FrameSequenceNet(EmotionModel):
    """Face frames as time: a 2-D CNN shared across the T frames, then a temporal model over the T
    frame embeddings, then the mean over time.

    Unlike the AR networks, which stack the frames as channels (the first convolution sees all of
    them at once and fixes T), each frame is encoded alone and the order of the frames is modelled
    afterwards: the same network takes any T and crop size.

    Args:
        num_classes: classes; 0 for no classifier (a fusion branch).
        widths, blocks: the frame CNN's stage widths and basic blocks per stage.
        norm: ``group`` or ``batch`` normalisation in the frame CNN (see :func:`norm_layer`).
        temporal: ``conv`` (residual 1-D convolutions over time), ``transformer`` (self-attention
            over the frames, sinusoidal positions) or ``mean`` (none: the frames' mean).
        temporal_layers, heads: the temporal model's depth, and the transformer's heads.
        dropout: in the temporal model and before the classifier.
    """

    modalities = (VIDEO,)

    def __init__(self, num_classes: int = 6, *, widths: Sequence[int] = (24, 48, 96, 192),
                 blocks: Sequence[int] = (1, 1, 1, 1), temporal: str = "conv", temporal_layers: int = 2,
                 heads: int = 4, dropout: float = 0.2, norm: str = "batch"):
        super().__init__()
        self.frames = FrameEncoder(widths, blocks, norm)
        self.num_features = self.frames.num_features
        self.temporal = make_temporal(temporal, self.num_features, temporal_layers, heads, dropout)
        self.head = make_head(self.num_features, num_classes, dropout)

    def forward_tokens(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        """``[B, T, num_features]``: each frame's embedding after the temporal model."""
        x = self.pick_input(video, audio)
        b, t, h, w = x.shape
        return self.temporal(self.frames(x.reshape(b * t, 1, h, w)).reshape(b, t, -1))

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        return self.forward_tokens(video, audio).mean(1)


class LogMelCNN(EmotionModel):
    """A 2-D CNN over a log-mel image ``[B, 1, F, W]`` (the ``logmel`` front-end), keeping time.

    Stages of two 3x3 conv-norm-ReLU and a 2x2 max-pool; then the frequency axis is averaged down to
    ``freq_bins`` bands, which with the channels and a fully connected layer make one token per
    time step (where the energy sits in frequency is kept: a convolution alone cannot tell a high
    voice from a low one); the embedding is the tokens' mean plus their maximum over time (as the
    PANNs CNNs pool).

    Args:
        num_classes: classes; 0 for no classifier (a fusion branch).
        channels: stage widths.
        embed: the embedding's width (``num_features``).
        freq_bins: frequency bands kept per token (their count times ``channels[-1]`` is a token's width).
        norm: ``group`` or ``batch`` normalisation after each convolution (see :func:`norm_layer`).
        dropout: before the fully connected layer and the classifier.
    """

    modalities = (AUDIO,)

    def __init__(self, num_classes: int = 6, *, channels: Sequence[int] = (16, 32, 64, 128), embed: int = 256,
                 dropout: float = 0.3, freq_bins: int = 4, norm: str = "batch"):
        super().__init__()
        make_norm = norm_layer(norm)

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), make_norm(cout), nn.ReLU(inplace=True)]

        stages, prev = [], 1
        for width in channels:
            stages.append(nn.Sequential(*conv(prev, width), *conv(width, width), nn.MaxPool2d(2, ceil_mode=True)))
            prev = width
        self.stages = nn.Sequential(*stages)
        self.freq_bins = int(freq_bins)
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(prev * self.freq_bins, embed), nn.ReLU(inplace=True))
        self.num_features = embed
        self.head = make_head(embed, num_classes, dropout)

    def forward_tokens(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        """``[B, W', num_features]``: one token per pooled time step."""
        x = self.stages(self.pick_input(video, audio))  # [B, C, F', W']
        x = nn.functional.adaptive_avg_pool2d(x, (self.freq_bins, x.shape[-1]))
        return self.fc(x.flatten(1, 2).transpose(1, 2))

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        tokens = self.forward_tokens(video, audio)
        return tokens.mean(1) + tokens.amax(1)


@register_model
def frame_resnet(*, frames: int = FRAMES, num_classes: int = 6, modality: str = VIDEO,
                 widths: Sequence[int] = (24, 48, 96, 192), blocks: Sequence[int] = (1, 1, 1, 1),
                 temporal: str = "conv", temporal_layers: int = 2, heads: int = 4,
                 dropout: float = 0.2, norm: str = "batch") -> FrameSequenceNet:
    """Face frames as time: a small ResNet shared across the T frames, then a temporal model
    (``temporal``: ``conv``, ``transformer`` or ``mean``). Any T (``frames`` is not fixed in the
    weights) and any crop size."""
    if modality != VIDEO:
        raise ValueError(f"frame_resnet reads face frames (modality=video), not {modality}")
    return FrameSequenceNet(num_classes, widths=widths, blocks=blocks, temporal=temporal,
                            temporal_layers=temporal_layers, heads=heads, dropout=dropout, norm=norm)


@register_model
def logmel_cnn(*, frames: int = FRAMES, num_classes: int = 6, modality: str = AUDIO,
               channels: Sequence[int] = (16, 32, 64, 128), embed: int = 256, dropout: float = 0.3,
               freq_bins: int = 4, norm: str = "batch") -> LogMelCNN:
    """A log-mel 2-D CNN (two convolutions per stage, frequency mean, mean + max over time); its
    config sets the ``logmel`` front-end and SpecAugment in training."""
    if modality != AUDIO:
        raise ValueError(f"logmel_cnn reads a spectrogram (modality=audio), not {modality}")
    return LogMelCNN(num_classes, channels=channels, embed=embed, dropout=dropout, freq_bins=freq_bins, norm=norm)
