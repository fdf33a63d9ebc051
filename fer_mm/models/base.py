"""The contract every model keeps, and the small helpers the families share."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor, nn
from fer_mm.vocab import MODALITIES, VIDEO

# T, face frames per clip (the method's): the default of every builder, of ModelInputs and of the
# system; a config's frame count is its data's ``samples.frames`` (conf/data/)
FRAMES = 20


class EmotionModel(nn.Module):
    """Logits from video [B, T, H, W] and/or audio [B, 1, F, W]; inputs it does not use are ignored.

    As in timm: ``forward_features`` gives the embedding (``num_features`` wide) and
    ``forward_head(x, pre_logits=True)`` returns it before the classifier, so fusion can take
    any branch's embedding. ``num_classes=0`` builds a model without a classifier.
    """

    modalities: tuple[str, ...] = (VIDEO,)
    num_features: int

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(video=video, audio=audio))

    def pick_input(self, video: Tensor | None, audio: Tensor | None) -> Tensor:
        x = video if self.modalities == (VIDEO,) else audio
        if x is None:
            raise ValueError(f"{type(self).__name__} takes {self.modalities[0]}, which the batch does not hold")
        return x


def make_head(num_features: int, num_classes: int, dropout: float = 0.0) -> nn.Module:
    if num_classes == 0:
        return nn.Identity()
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))


def dense_layers(in_features: int, widths, dropout: float = 0.0) -> tuple[nn.Sequential, int]:
    """Dropout -> linear -> ReLU per width (AR5's fusion layers, the FER CNN's dense layers), and the
    output width."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Dropout(dropout), nn.Linear(in_features, width), nn.ReLU(inplace=True)]
        in_features = width
    return nn.Sequential(*layers), in_features


def conv_block(in_chans: int, out_chans: int, kernel_size: int = 3, pool: bool = True, norm: bool = True,
               act_layer: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """conv -> (batch norm) -> activation -> (2x2 max-pool): the unit of the AR CNNs."""
    layers: list[nn.Module] = [nn.Conv2d(in_chans, out_chans, kernel_size, padding=kernel_size // 2, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(out_chans))
    layers.append(act_layer(inplace=True))
    if pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return nn.Sequential(*layers)


def in_chans_for(modality: str, frames: int) -> int:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {list(MODALITIES)}, got {modality!r}")
    return frames if modality == VIDEO else 1


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def precise_batch_norms(module: nn.Module, forward: Callable[[object], object], batches: Iterable) -> None:
    """Precise BN (Wu & Johnson 2021): the running statistics of ``module``'s batch norms set to the
    exact average of their batch statistics over ``forward(batch)`` for each batch, with the current
    weights. Norms kept in evaluation mode in training (a frozen pretrained stage) keep theirs;
    ``module``'s mode is restored."""
    was_training = module.training
    module.train()
    norms = [m for m in module.modules() if isinstance(m, BATCH_NORMS) and m.training and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the passes below
    try:
        for batch in batches:
            forward(batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        module.train(was_training)
