"""ResNet-18 (torchvision's architecture) with its first convolution taking T or 1 channels."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

from fer_mm.models.base import EmotionModel, in_chans_for, make_head
from fer_mm.models.registry import load_local_weights, register_model
from fer_mm.vocab import VIDEO


class ResNetBackbone(EmotionModel):
    """torchvision's ResNet body; conv1 rebuilt for ``in_chans``; global average pool (any input size).

    Args:
        in_chans: T stacked frames, or 1 for a spectrogram.
        num_classes: classes; 0 for none.
        layers: blocks per stage ([2, 2, 2, 2] is ResNet-18).
        dropout: before the classifier.
        pretrained: path of a local state dict (torchvision naming; an RGB conv1 is adapted).
        modality: ``video`` or ``audio``.
    """

    def __init__(self, in_chans: int, num_classes: int = 6, *, layers=(2, 2, 2, 2), dropout: float = 0.0,
                 pretrained: str | None = None, modality: str = VIDEO):
        super().__init__()
        self.modalities = (modality,)
        body = ResNet(BasicBlock, list(layers))
        body.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        body.fc = nn.Identity()
        self.body = body
        self.num_features = 512 * BasicBlock.expansion
        self.head = make_head(self.num_features, num_classes, dropout)
        if pretrained:
            load_local_weights(self.body, pretrained, first_conv="conv1")

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        return self.body(self.pick_input(video, audio))


@register_model
def resnet18(*, frames: int = 20, num_classes: int = 6, modality: str = VIDEO, dropout: float = 0.0,
             pretrained: str | None = None) -> ResNetBackbone:
    """ResNet-18 (He et al. 2016) over T stacked frames (or one spectrogram)."""
    return ResNetBackbone(in_chans_for(modality, frames), num_classes, dropout=dropout, pretrained=pretrained,
                          modality=modality)
