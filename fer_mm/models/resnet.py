"""ResNet-18 and ResNet-50 (torchvision's architecture) with the first convolution taking T or 1 channels."""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from fer_mm.models.base import FRAMES, EmotionModel, in_chans_for, make_head
from fer_mm.models.registry import load_local_weights, register_model
from fer_mm.vocab import VIDEO

_TORCHVISION = "https://download.pytorch.org/models/"
# where a user gets torchvision's ImageNet weights (fer-mm itself never downloads them)
WEIGHT_SOURCES = {
    "resnet18": f"torchvision's ResNet-18 ImageNet weights ({_TORCHVISION}resnet18-f37072fd.pth)",
    "resnet50": f"torchvision's ResNet-50 ImageNet weights ({_TORCHVISION}resnet50-11ad3fa6.pth, "
                f"or the older {_TORCHVISION}resnet50-0676ba61.pth)",
}


class ResNetBackbone(EmotionModel):
    """torchvision's ResNet body; conv1 rebuilt for ``in_chans``; global average pool (any input size).

    Args:
        in_chans: T stacked frames, or 1 for a spectrogram.
        num_classes: classes; 0 for none.
        block: ``BasicBlock`` (ResNet-18/34) or ``Bottleneck`` (ResNet-50/101/152).
        layers: blocks per stage ([2, 2, 2, 2] with BasicBlock is ResNet-18, [3, 4, 6, 3] with
            Bottleneck ResNet-50).
        dropout: before the classifier.
        pretrained: path of a local state dict (torchvision naming; an RGB conv1 is adapted;
            torchvision's 1000-class ``fc`` is not loaded).
        freeze: number of stages frozen, counted from the input: 1 is the stem (conv1, bn1) with
            layer1, 2 adds layer2, ... 4 the whole body. Frozen parameters get no gradient and the
            frozen batch norms stay in eval mode (running statistics fixed) in training.
        modality: ``video`` or ``audio``.
        source: where to get the weights, for the error when ``pretrained`` is missing.
    """

    def __init__(self, in_chans: int, num_classes: int = 6, *, block: type[BasicBlock | Bottleneck] = BasicBlock,
                 layers=(2, 2, 2, 2), dropout: float = 0.0, pretrained: str | None = None, freeze: int = 0,
                 modality: str = VIDEO, source: str | None = None):
        super().__init__()
        if not 0 <= freeze <= 4:
            raise ValueError(f"model.net.freeze={freeze}: the number of frozen stages, 0 to 4")
        self.modalities = (modality,)
        body = ResNet(block, list(layers))
        body.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        body.fc = nn.Identity()
        self.body = body
        self.num_features = 512 * block.expansion
        self.head = make_head(self.num_features, num_classes, dropout)
        if pretrained:
            load_local_weights(self.body, pretrained, first_conv="conv1", source=source)
        self.freeze = freeze
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    def frozen_modules(self) -> list[nn.Module]:
        stages = [[self.body.conv1, self.body.bn1, self.body.layer1], [self.body.layer2], [self.body.layer3],
                  [self.body.layer4]]
        return [m for stage in stages[: self.freeze] for m in stage]

    def train(self, mode: bool = True) -> "ResNetBackbone":
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()  # frozen batch norms keep their (pretrained) running statistics
        return self

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        return self.body(self.pick_input(video, audio))


@register_model
def resnet18(*, frames: int = FRAMES, num_classes: int = 6, modality: str = VIDEO, dropout: float = 0.0,
             pretrained: str | None = None, freeze: int = 0) -> ResNetBackbone:
    """ResNet-18 (He et al. 2016) over T stacked frames (or one spectrogram).

    Args:
        frames: T, the stacked frames (video); ignored for audio.
        num_classes: classes; 0 for the 512-wide embedding.
        modality: ``video`` or ``audio``.
        dropout: before the classifier.
        pretrained: local state dict in torchvision naming (e.g. ``resnet18-f37072fd.pth``).
        freeze: stages frozen from the input (see :class:`ResNetBackbone`).
    """
    return ResNetBackbone(in_chans_for(modality, frames), num_classes, dropout=dropout, pretrained=pretrained,
                          freeze=freeze, modality=modality, source=WEIGHT_SOURCES["resnet18"])


@register_model
def resnet50(*, frames: int = FRAMES, num_classes: int = 6, modality: str = VIDEO, dropout: float = 0.0,
             pretrained: str | None = None, freeze: int = 0) -> ResNetBackbone:
    """ResNet-50 (He et al. 2016; torchvision's Bottleneck [3, 4, 6, 3]) over T stacked frames.

    Meant for transfer: ``pretrained`` is a user-supplied ImageNet state dict in torchvision naming
    (``resnet50-11ad3fa6.pth`` or ``resnet50-0676ba61.pth``); its RGB conv1 is averaged to the T gray
    channels and its 1000-class ``fc`` is left out. fer-mm never downloads it.

    Args:
        frames: T, the stacked frames (video); ignored for audio.
        num_classes: classes; 0 for the 2048-wide embedding.
        modality: ``video`` or ``audio``.
        dropout: before the classifier.
        pretrained: path of the local state dict.
        freeze: stages frozen from the input: 1 = conv1/bn1 + layer1, 2 adds layer2, ..., 4 all.
    """
    return ResNetBackbone(in_chans_for(modality, frames), num_classes, block=Bottleneck, layers=(3, 4, 6, 3),
                          dropout=dropout, pretrained=pretrained, freeze=freeze, modality=modality,
                          source=WEIGHT_SOURCES["resnet50"])
