"""Two-branch fusion of video and audio: AR5 (embeddings concatenated), late fusion (logits
weighed), cross-modal attention (tokens attending to each other's).

Every fused model is a :class:`FusionModel`: one branch per modality (any registered model,
built without its classifier), ``embeddings`` (each branch's output) and ``fuse`` (the fused
features) apart, so the system can read each branch's own prediction inside the fused model
(:meth:`FusionModel.branch_logits`: from auxiliary heads where the system added them, else the
fused head with the other branch zeroed), drop one branch's embedding per sample
(``keep``), and find each branch's parameters (:meth:`FusionModel.branch_parameters`) to
modulate their gradients.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from fer_mm.models.ar_cnn import ARCNN
from fer_mm.models.attention import AttentionBlock, positions
from fer_mm.models.base import FRAMES, EmotionModel, dense_layers, in_chans_for, make_head
from fer_mm.models.registry import get_model, register_model
from fer_mm.vocab import AUDIO, MODALITIES, VIDEO, ordered_modalities


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


def _masked(x: Tensor, keep: Tensor | None) -> Tensor:
    """``x`` ``[B, ...]`` with the samples where ``keep`` ``[B]`` is 0 zeroed."""
    return x if keep is None else x * keep.reshape(-1, *[1] * (x.dim() - 1)).to(x.dtype)


def _check_modalities(name: str, modalities: Sequence[str]) -> tuple[str, ...]:
    modalities = ordered_modalities(modalities, "model.net.modalities")
    if modalities != MODALITIES:
        raise ValueError(f"{name} fuses video and audio: model.net.modalities must be [video, audio], got "
                         f"{list(modalities)}; for one modality train its branch alone")
    return modalities


def _branches(frames: int, video_branch: str, audio_branch: str, video_args: Mapping | None,
              audio_args: Mapping | None) -> nn.ModuleDict:
    """A video and an audio branch, each a registered model built without its classifier."""
    return nn.ModuleDict({m: get_model(name, frames=frames, num_classes=0, modality=m, **dict(args or {}))
                          for m, name, args in ((VIDEO, video_branch, video_args), (AUDIO, audio_branch, audio_args))})


class FusionModel(EmotionModel):
    """A model with one branch per modality and a fusion over their outputs.

    Subclasses build ``branches`` (a ``ModuleDict`` by modality) and implement ``embeddings`` and
    ``fuse``; ``forward_features`` is ``fuse(embeddings(...))``.
    """

    branches: nn.ModuleDict

    def branch_outputs(self, video: Tensor | None, audio: Tensor | None) -> dict[str, Tensor]:
        inputs = {VIDEO: video, AUDIO: audio}
        missing = [m for m in self.branches if inputs[m] is None]
        if missing:
            raise ValueError(f"{type(self).__name__} with modalities {list(self.modalities)} needs "
                             f"{' and '.join(missing)} in the batch")
        return {m: self.branch_output(m, inputs[m]) for m in self.branches}

    def branch_output(self, modality: str, x: Tensor) -> Tensor:
        return self.branches[modality].forward_features(**{modality: x})

    def embeddings(self, video: Tensor | None = None, audio: Tensor | None = None) -> dict[str, Tensor]:
        """Each branch's output by modality (what ``fuse`` takes)."""
        raise NotImplementedError

    def fuse(self, embeddings: Mapping[str, Tensor], keep: Mapping[str, Tensor] | None = None,
             unimodal: bool = False) -> Tensor:
        """The fused features; ``keep``: modality -> ``[B]`` 0/1, the samples whose embedding of that
        modality is zeroed where 0 (the balancing's feature dropping); ``unimodal``: a branch's own
        reading (no random modality dropout)."""
        raise NotImplementedError

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        return self.fuse(self.embeddings(video, audio))

    def pooled(self, modality: str, embedding: Tensor) -> Tensor:
        """A branch's embedding as one vector per sample (token sequences averaged)."""
        return embedding if embedding.dim() == 2 else embedding.mean(1)

    def aux_width(self, modality: str) -> int:
        return self.branches[modality].num_features

    @property
    def aux_heads(self) -> nn.ModuleDict | None:
        """The unimodal auxiliary heads, where :meth:`add_aux_heads` added them."""
        return self._modules.get("unimodal_heads")

    def add_aux_heads(self, num_classes: int) -> None:
        """A classifier per branch on its own embedding (the unimodal auxiliary heads)."""
        self.add_module("unimodal_heads", nn.ModuleDict({m: nn.Linear(self.aux_width(m), num_classes)
                                                    for m in self.branches}))

    def branch_logits(self, embeddings: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each branch's own logits inside the fused model: its auxiliary head where it has one, else
        the fused head with every other branch zeroed."""
        if self.aux_heads is not None:
            return {m: self.aux_heads[m](self.pooled(m, e)) for m, e in embeddings.items()}
        out = {}
        for m, e in embeddings.items():
            zeros = {other: torch.zeros(len(e), device=e.device) for other in embeddings if other != m}
            out[m] = self.forward_head(self.fuse(embeddings, zeros, unimodal=True))
        return out

    def branch_parameters(self, modality: str) -> Iterator[nn.Parameter]:
        """The parameters that only ``modality``'s branch uses (its encoder and its projection)."""
        yield from self.branches[modality].parameters()


class AR5(FusionModel):
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
        video_args, audio_args: further arguments of each branch's builder.
    """

    def __init__(self, frames: int = FRAMES, num_classes: int = 6, *, modalities: Sequence[str] = (VIDEO, AUDIO),
                 video_branch: str = "ar5_video_branch", audio_branch: str = "ar5_audio_branch", video_embed: int = 256,
                 audio_embed: int = 128, fc: Sequence[int] = (256,), dropout: float = 0.3,
                 modality_dropout: float = 0.0, video_args: Mapping | None = None, audio_args: Mapping | None = None):
        super().__init__()
        if not 0 <= modality_dropout <= 1:
            raise ValueError(f"model.net.modality_dropout must be in [0, 1], got {modality_dropout}")
        self.modality_dropout = modality_dropout
        self.modalities = ordered_modalities(modalities, "model.net.modalities")
        self.branches = nn.ModuleDict()
        self.project = nn.ModuleDict()
        args = {VIDEO: dict(video_args or {}), AUDIO: dict(audio_args or {})}
        for modality, name, embed in ((VIDEO, video_branch, video_embed), (AUDIO, audio_branch, audio_embed)):
            if modality not in self.modalities:
                continue
            if embed < 1:
                raise ValueError(f"model.net.{modality}_embed must be positive, got {embed}")
            branch = get_model(name, frames=frames, num_classes=0, modality=modality, **args[modality])
            self.branches[modality] = branch
            self.project[modality] = nn.Sequential(nn.Linear(branch.num_features, embed), nn.ReLU(inplace=True))
        fused = sum(video_embed if m == VIDEO else audio_embed for m in self.modalities)
        self.fusion, prev = dense_layers(fused, fc, dropout)
        self.num_features = prev
        self.head = make_head(prev, num_classes, dropout)

    def embeddings(self, video: Tensor | None = None, audio: Tensor | None = None) -> dict[str, Tensor]:
        """Each branch's projected embedding, by modality."""
        return {m: self.project[m](e) for m, e in self.branch_outputs(video, audio).items()}

    def fuse(self, embeddings: Mapping[str, Tensor], keep: Mapping[str, Tensor] | None = None,
             unimodal: bool = False) -> Tensor:
        embeddings = [_masked(e, (keep or {}).get(m)) for m, e in embeddings.items()]
        if self.training and self.modality_dropout > 0 and len(embeddings) > 1 and not unimodal:
            batch, device = embeddings[0].shape[0], embeddings[0].device
            dropped = torch.rand(batch, device=device) < self.modality_dropout
            which = torch.randint(len(embeddings), (batch,), device=device)
            embeddings = [e * ~(dropped & (which == i))[:, None] for i, e in enumerate(embeddings)]
        return self.fusion(torch.cat(embeddings, 1))

    def aux_width(self, modality: str) -> int:
        return self.project[modality][0].out_features

    def branch_parameters(self, modality: str) -> Iterator[nn.Parameter]:
        yield from self.branches[modality].parameters()
        yield from self.project[modality].parameters()


class LateFusion(FusionModel):
    """Each branch classifies on its own; the fused logits are their weighed sum, with learnt weights
    per class (a softmax over the modalities, equal at the start).

    The branches' classifiers are the unimodal heads: :meth:`branch_logits` is their output
    whether or not auxiliary heads were asked for, and their loss (``model.aux_weight``) trains
    each branch to classify alone.

    Args:
        frames, num_classes, modalities: as :class:`AR5` (both modalities).
        video_branch, audio_branch: registered models for the branches.
        dropout: before each branch's classifier.
        video_args, audio_args: further arguments of each branch's builder.
    """

    def __init__(self, frames: int = FRAMES, num_classes: int = 6, *, modalities: Sequence[str] = (VIDEO, AUDIO),
                 video_branch: str = "frame_resnet", audio_branch: str = "logmel_cnn", dropout: float = 0.3,
                 video_args: Mapping | None = None, audio_args: Mapping | None = None):
        super().__init__()
        if num_classes < 1:
            raise ValueError("late_fusion combines the branches' logits: it needs model.net.num_classes > 0")
        self.modalities = _check_modalities("late_fusion", modalities)
        self.branches = _branches(frames, video_branch, audio_branch, video_args, audio_args)
        self.classifiers = nn.ModuleDict({m: make_head(b.num_features, num_classes, dropout)
                                          for m, b in self.branches.items()})
        self.weights = nn.Parameter(torch.zeros(len(self.branches), num_classes))
        self.num_features = num_classes
        self.head = nn.Identity()

    def embeddings(self, video: Tensor | None = None, audio: Tensor | None = None) -> dict[str, Tensor]:
        return self.branch_outputs(video, audio)

    def fuse(self, embeddings: Mapping[str, Tensor], keep: Mapping[str, Tensor] | None = None,
             unimodal: bool = False) -> Tensor:
        weights = self.weights.softmax(0)
        logits = [_masked(self.classifiers[m](e), (keep or {}).get(m)) for m, e in embeddings.items()]
        return sum(w * x for w, x in zip(weights, logits))

    def add_aux_heads(self, num_classes: int) -> None:
        pass  # the branches' own classifiers are the unimodal heads

    def branch_logits(self, embeddings: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {m: self.classifiers[m](e) for m, e in embeddings.items()}

    def branch_parameters(self, modality: str) -> Iterator[nn.Parameter]:
        yield from self.branches[modality].parameters()
        yield from self.classifiers[modality].parameters()


class CrossAttentionFusion(FusionModel):
    """Cross-modal attention: the video tokens attend to the audio tokens and the audio tokens to the
    video tokens (one cross-attention block each per layer), then each modality's tokens are
    averaged, concatenated and classified.

    A branch with ``forward_tokens`` (the frame and log-mel networks) gives a token per frame or
    time step; any other branch (AR5's) gives its embedding as one token. Tokens are projected to
    ``dim`` and given sinusoidal positions and a learnt modality embedding.

    Args:
        frames, num_classes, modalities: as :class:`AR5` (both modalities).
        video_branch, audio_branch: registered models for the branches.
        dim, heads, layers: the attention's width, heads and depth.
        fc: hidden widths after the concatenation.
        dropout: in the attention blocks and the fully connected layers.
        video_args, audio_args: further arguments of each branch's builder.
    """

    def __init__(self, frames: int = FRAMES, num_classes: int = 6, *, modalities: Sequence[str] = (VIDEO, AUDIO),
                 video_branch: str = "frame_resnet", audio_branch: str = "logmel_cnn", dim: int = 128, heads: int = 4,
                 layers: int = 1, fc: Sequence[int] = (128,), dropout: float = 0.2,
                 video_args: Mapping | None = None, audio_args: Mapping | None = None):
        super().__init__()
        self.modalities = _check_modalities("cross_attention", modalities)
        self.branches = _branches(frames, video_branch, audio_branch, video_args, audio_args)
        self.project = nn.ModuleDict({m: nn.Linear(b.num_features, dim) for m, b in self.branches.items()})
        self.modality_embed = nn.Parameter(torch.zeros(len(self.branches), dim))
        nn.init.normal_(self.modality_embed, std=0.02)
        self.cross = nn.ModuleList(nn.ModuleDict({m: AttentionBlock(dim, heads, dropout=dropout, cross=True)
                                                  for m in self.branches})
                                   for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.fusion, prev = dense_layers(dim * len(self.branches), fc, dropout)
        self.num_features = prev
        self.head = make_head(prev, num_classes, dropout)

    def branch_output(self, modality: str, x: Tensor) -> Tensor:
        branch = self.branches[modality]
        if hasattr(branch, "forward_tokens"):
            return branch.forward_tokens(**{modality: x})
        return branch.forward_features(**{modality: x})[:, None]

    def embeddings(self, video: Tensor | None = None, audio: Tensor | None = None) -> dict[str, Tensor]:
        """Each branch's tokens ``[B, N, dim]``, projected, with positions and the modality embedding."""
        out = {}
        for i, (m, tokens) in enumerate(self.branch_outputs(video, audio).items()):
            x = self.project[m](tokens)
            out[m] = x + positions(x.shape[1], x.shape[2], x.device) + self.modality_embed[i]
        return out

    def fuse(self, embeddings: Mapping[str, Tensor], keep: Mapping[str, Tensor] | None = None,
             unimodal: bool = False) -> Tensor:
        tokens = {m: _masked(e, (keep or {}).get(m)) for m, e in embeddings.items()}
        for layer in self.cross:
            tokens = {m: layer[m](x, context=tokens[other])
                      for m, x in tokens.items() for other in tokens if other != m}
        return self.fusion(torch.cat([self.norm(x).mean(1) for x in tokens.values()], 1))

    def aux_width(self, modality: str) -> int:
        return self.project[modality].out_features

    def branch_parameters(self, modality: str) -> Iterator[nn.Parameter]:
        yield from self.branches[modality].parameters()
        yield from self.project[modality].parameters()


@register_model
def ar5(*, frames: int = FRAMES, num_classes: int = 6, modalities: Sequence[str] = (VIDEO, AUDIO),
        video_branch: str = "ar5_video_branch", audio_branch: str = "ar5_audio_branch", video_embed: int = 256,
        audio_embed: int = 128, fc: Sequence[int] = (256,), dropout: float = 0.3,
        modality_dropout: float = 0.0, video_args: Mapping | None = None, audio_args: Mapping | None = None) -> AR5:
    """AR5: two-branch fusion (video-only / audio-only / fused by ``modalities``)."""
    return AR5(frames, num_classes, modalities=modalities, video_branch=video_branch, audio_branch=audio_branch,
               video_embed=video_embed, audio_embed=audio_embed, fc=fc, dropout=dropout,
               modality_dropout=modality_dropout, video_args=video_args, audio_args=audio_args)


@register_model
def late_fusion(*, frames: int = FRAMES, num_classes: int = 6, modalities: Sequence[str] = (VIDEO, AUDIO),
                video_branch: str = "frame_resnet", audio_branch: str = "logmel_cnn", dropout: float = 0.3,
                video_args: Mapping | None = None, audio_args: Mapping | None = None) -> LateFusion:
    """Late fusion: each branch's logits, weighed per class by learnt weights."""
    return LateFusion(frames, num_classes, modalities=modalities, video_branch=video_branch,
                      audio_branch=audio_branch, dropout=dropout, video_args=video_args, audio_args=audio_args)


@register_model
def cross_attention(*, frames: int = FRAMES, num_classes: int = 6, modalities: Sequence[str] = (VIDEO, AUDIO),
                    video_branch: str = "frame_resnet", audio_branch: str = "logmel_cnn", dim: int = 128,
                    heads: int = 4, layers: int = 1, fc: Sequence[int] = (128,), dropout: float = 0.2,
                    video_args: Mapping | None = None, audio_args: Mapping | None = None) -> CrossAttentionFusion:
    """Cross-modal attention between the video frame tokens and the audio time tokens."""
    return CrossAttentionFusion(frames, num_classes, modalities=modalities, video_branch=video_branch,
                                audio_branch=audio_branch, dim=dim, heads=heads, layers=layers, fc=fc,
                                dropout=dropout, video_args=video_args, audio_args=audio_args)
