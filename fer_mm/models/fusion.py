"""AR5: the two-branch network fusing video and audio embeddings."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from fer_mm.models.ar_cnn import ARCNN
from fer_mm.models.base import FRAMES, EmotionModel, dense_layers, in_chans_for, make_head
from fer_mm.models.registry import get_model, register_model
from fer_mm.vocab import AUDIO, VIDEO, ordered_modalities


@register_model
def ar5_video_branch(*, frames: int = FRAMES, num_classes: int = 0, modality: str = VIDEO,
                     dropout: float = 0.3) -> ARCNN:
    """AR5's dense video branch: four stages of two 3x3 conv-BN-ReLU (32-64-128-256), FC 512."""
    return ARCNN(in_chans_for(modality, frames), num_classes, channels=(32, 64, 128, 256), convs_per_stage=2,
                 fc=(512,), norm=True, dropout=dropout, modality=modality)


@register_model
def ar5_audio_branch(*, frames: int = FRAMES, num_classes: int = 0, modality: str = AUDIO,
                     dropout: float = 0.3) -> ARCNN:
    """AR5's spectrogram branch: four conv-BN-ReLU-pool blocks (16-32-64-128), FC 256."""
    return ARCNN(in_chans_for(modality, frames), num_classes, channels=(16, 32, 64, 128), fc=(256,), norm=True,
                 dropout=dropout, modality=modality)


class AR5(EmotionModel):
    """Two branches, each ending in an embedding; concatenated, then fully connected layers.

    Each branch is any registered backbone (its ``forward_features``), followed by a linear
    projection to the branch's embedding length. The lengths are separate arguments, so one
    modality can be given more weight in the fused vector. ``modalities`` selects video-only,
    audio-only or fused without code changes: only the selected branches are built.

    Args:
        frames: T, the video branch's input channels.
        num_classes: classes.
        modalities: ``("video", "audio")``, ``("video",)`` or ``("audio",)``.
        video_branch, audio_branch: registered model names for the branches.
        video_embed, audio_embed: embedding length of each branch.
        fc: hidden widths of the fusion layers after concatenation.
        dropout: in the branches and the fusion layers.
        modality_dropout: in training, the share of samples whose embedding of one modality
            (drawn at random) is zeroed, so the fused layers cannot lean on one branch alone
            (ModDrop, Neverova et al. 2015). 0 disables it; it has no effect with one modality.
    """

    def __init__(self, frames: int = FRAMES, num_classes: int = 6, *, modalities: Sequence[str] = (VIDEO, AUDIO),
                 video_branch: str = "ar5_video_branch", audio_branch: str = "ar5_audio_branch", video_embed: int = 256,
                 audio_embed: int = 128, fc: Sequence[int] = (256,), dropout: float = 0.3,
                 modality_dropout: float = 0.0):
        super().__init__()
        if not 0 <= modality_dropout <= 1:
            raise ValueError(f"model.net.modality_dropout must be in [0, 1], got {modality_dropout}")
        self.modality_dropout = modality_dropout
        self.modalities = ordered_modalities(modalities, "model.net.modalities")
        self.branches = nn.ModuleDict()
        self.project = nn.ModuleDict()
        for modality, name, embed in ((VIDEO, video_branch, video_embed), (AUDIO, audio_branch, audio_embed)):
            if modality not in self.modalities:
                continue
            if embed < 1:
                raise ValueError(f"model.net.{modality}_embed must be positive, got {embed}")
            branch = get_model(name, frames=frames, num_classes=0, modality=modality)
            self.branches[modality] = branch
            self.project[modality] = nn.Sequential(nn.Linear(branch.num_features, embed), nn.ReLU(inplace=True))
        fused = sum(video_embed if m == VIDEO else audio_embed for m in self.modalities)
        self.fusion, prev = dense_layers(fused, fc, dropout)
        self.num_features = prev
        self.head = make_head(prev, num_classes, dropout)

    def embeddings(self, video: Tensor | None = None, audio: Tensor | None = None) -> dict[str, Tensor]:
        """Each branch's projected embedding, by modality."""
        inputs = {VIDEO: video, AUDIO: audio}
        out = {}
        for modality, branch in self.branches.items():
            if inputs[modality] is None:
                raise ValueError(f"AR5 with modalities {list(self.modalities)} needs {modality} in the batch")
            out[modality] = self.project[modality](branch.forward_features(**{modality: inputs[modality]}))
        return out

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        embeddings = list(self.embeddings(video, audio).values())
        if self.training and self.modality_dropout > 0 and len(embeddings) > 1:
            batch, device = embeddings[0].shape[0], embeddings[0].device
            dropped = torch.rand(batch, device=device) < self.modality_dropout
            which = torch.randint(len(embeddings), (batch,), device=device)
            embeddings = [e * ~(dropped & (which == i))[:, None] for i, e in enumerate(embeddings)]
        return self.fusion(torch.cat(embeddings, 1))


@register_model
def ar5(*, frames: int = FRAMES, num_classes: int = 6, modalities: Sequence[str] = (VIDEO, AUDIO),
        video_branch: str = "ar5_video_branch", audio_branch: str = "ar5_audio_branch", video_embed: int = 256,
        audio_embed: int = 128, fc: Sequence[int] = (256,), dropout: float = 0.3,
        modality_dropout: float = 0.0) -> AR5:
    """AR5: two-branch fusion (video-only / audio-only / fused by ``modalities``)."""
    return AR5(frames, num_classes, modalities=modalities, video_branch=video_branch, audio_branch=audio_branch,
               video_embed=video_embed, audio_embed=audio_embed, fc=fc, dropout=dropout,
               modality_dropout=modality_dropout)
