"""AR1, AR2 and AR4: 2-D CNNs over the stacked frames (or one spectrogram).

The paper's figures are lost; the text fixes the ideas, the numbers here are our choices:
- channels double per stage, 3x3 convolutions (AR2: 5x5, to see more with fewer layers);
- an adaptive average pool to a small fixed grid before the fully connected layers, so the
  same model takes any T and any input size (98x80 faces, 128x128 spectrograms).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from fer_mm.models.base import FRAMES, EmotionModel, conv_block, in_chans_for, make_head
from fer_mm.models.registry import register_model
from fer_mm.vocab import VIDEO


class ARCNN(EmotionModel):
    """Conv stages -> adaptive pool -> fully connected layers -> classifier.

    Args:
        in_chans: input channels (T frames, or 1 for a spectrogram).
        num_classes: classes; 0 for no classifier (a branch of AR5).
        channels: output channels of each stage; every stage ends in a 2x2 max-pool.
        convs_per_stage: convolutions in each stage (2 makes the denser AR5 video branch).
        kernel_size: convolution kernel.
        fc: widths of the fully connected layers; the last is the embedding (``num_features``).
        last_fc_act: ReLU (and dropout) after the last fully connected layer; AR4's extractor
            ends without it (a linear embedding).
        pool_size: grid of the adaptive pool before the fully connected layers.
        norm: batch norm after each convolution (AR1 is plain: conv, ReLU, pool).
        dropout: before every fully connected layer after the first, and before the classifier.
        modality: ``video`` or ``audio``: which input it reads.
    """

    def __init__(self, in_chans: int, num_classes: int = 6, *, channels: Sequence[int] = (32, 64, 128, 128),
                 convs_per_stage: int = 1, kernel_size: int = 3, fc: Sequence[int] = (256,), last_fc_act: bool = True,
                 pool_size: tuple[int, int] = (3, 3), norm: bool = False, dropout: float = 0.3,
                 modality: str = VIDEO):
        super().__init__()
        self.modalities = (modality,)
        stages, prev = [], in_chans
        for width in channels:
            convs = [conv_block(prev if i == 0 else width, width, kernel_size, pool=i == convs_per_stage - 1, norm=norm)
                     for i in range(convs_per_stage)]
            stages.append(nn.Sequential(*convs))
            prev = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        layers: list[nn.Module] = [nn.Flatten()]
        prev = channels[-1] * pool_size[0] * pool_size[1]
        for i, width in enumerate(fc):
            last = i == len(fc) - 1
            if i > 0:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Linear(prev, width))
            if not last or last_fc_act:
                layers.append(nn.ReLU(inplace=True))
            prev = width
        self.fc = nn.Sequential(*layers)
        self.num_features = prev
        self.head = make_head(prev, num_classes, dropout)

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        return self.fc(self.pool(self.stages(self.pick_input(video, audio))))


class AR4(EmotionModel):
    """AR4: a feature extractor (AR1-like, ending in a linear embedding) and an MLP classifier.

    Training modes (``set_stage``):
    - ``end_to_end``: extractor and classifier together;
    - ``extractor``: stage one, the extractor trained through its own linear head;
    - ``classifier``: stage two, the extractor frozen (no gradients, batch-norm statistics and
      dropout fixed) and only the one-hidden-layer classifier trained.

    Args:
        in_chans, num_classes, modality: as :class:`ARCNN`.
        embed_dim: extractor output (the embedding).
        hidden: the classifier's hidden layer.
        dropout: in extractor and classifier.
    """

    STAGES = ("end_to_end", "extractor", "classifier")

    def __init__(self, in_chans: int, num_classes: int = 6, *, embed_dim: int = 128, hidden: int = 64,
                 dropout: float = 0.3, modality: str = VIDEO, stage: str = "end_to_end"):
        super().__init__()
        self.modalities = (modality,)
        self.extractor = ARCNN(in_chans, 0, channels=(32, 64, 128, 128), fc=(256, embed_dim), last_fc_act=False,
                               dropout=dropout, modality=modality)
        self.extractor_head = nn.Linear(embed_dim, num_classes)
        self.classifier = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(embed_dim, hidden),
                                        nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        self.num_features = embed_dim
        self.stage = "end_to_end"
        self.set_stage(stage)

    def set_stage(self, stage: str) -> None:
        if stage not in self.STAGES:
            raise ValueError(f"model.net.stage={stage!r}: use one of {self.STAGES}")
        self.stage = stage
        frozen = stage == "classifier"
        for p in self.extractor.parameters():
            p.requires_grad_(not frozen)
        self.extractor_head.requires_grad_(stage == "extractor")
        self.classifier.requires_grad_(stage != "extractor")
        self.train(self.training)

    def train(self, mode: bool = True) -> "AR4":
        super().train(mode)
        if self.stage == "classifier":
            self.extractor.eval()  # frozen: fixed batch-norm statistics and no dropout
        return self

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        if self.stage == "classifier":
            with torch.no_grad():
                return self.extractor.forward_features(video=video, audio=audio)
        return self.extractor.forward_features(video=video, audio=audio)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if pre_logits:
            return x
        return self.extractor_head(x) if self.stage == "extractor" else self.classifier(x)


@register_model
def ar1(*, frames: int = FRAMES, num_classes: int = 6, modality: str = VIDEO, dropout: float = 0.3) -> ARCNN:
    """AR1: the plain CNN baseline: four conv-ReLU-max-pool blocks (32-64-128-128), FC 256, classifier."""
    return ARCNN(in_chans_for(modality, frames), num_classes, dropout=dropout, modality=modality)


@register_model
def ar2(*, frames: int = FRAMES, num_classes: int = 6, modality: str = VIDEO, dropout: float = 0.3) -> ARCNN:
    """AR2: shallow (two 5x5 conv blocks) and narrow (8 and 16 channels), FC 32: well under 100k parameters."""
    return ARCNN(in_chans_for(modality, frames), num_classes, channels=(8, 16), kernel_size=5, fc=(32,),
                 pool_size=(4, 4), norm=True, dropout=dropout, modality=modality)


@register_model
def ar4(*, frames: int = FRAMES, num_classes: int = 6, modality: str = VIDEO, embed_dim: int = 128, hidden: int = 64,
        dropout: float = 0.3, stage: str = "end_to_end") -> AR4:
    """AR4: AR1-like extractor to a linear embedding, then a one-hidden-layer perceptron."""
    return AR4(in_chans_for(modality, frames), num_classes, embed_dim=embed_dim, hidden=hidden, dropout=dropout,
               modality=modality, stage=stage)
