"""What a model does to a clip before its network sees it: part of the model, saved with it.

The data side delivers sampled face frames (uint8) and a waveform (float, zero-padded, with its
valid length); :class:`ModelInputs` turns them into the network's inputs. It belongs to the
model, not the data, so a checkpoint carries it (the system saves its arguments) and inference
on a new video applies exactly what training applied.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from fer_mm.data.clips import ClipSpec
from fer_mm.models.base import FRAMES
from fer_mm.models.frontends import make_frontend
from fer_mm.vocab import AUDIO, SAMPLE_RATE, VIDEO, ordered_modalities

PIXEL_CENTRE, PIXEL_SCALE = 127.0, 128.0  # uint8 faces -> about [-1, 1]
# (centre, scale) of each normalisation: the method's, and ImageNet's statistics on gray pixels (the
# channel means of its mean and std: x / 255 - 0.449) / 0.226), for networks pretrained on ImageNet
NORMALIZATIONS = {"centre": (PIXEL_CENTRE, PIXEL_SCALE), "imagenet": (0.449 * 255, 0.226 * 255)}


class ModelInputs(nn.Module):
    """Raw clip tensors -> the network's inputs.

    ``video`` uint8 ``[B, T, H, W]`` -> float ``(x - 127) / 128``; ``audio`` float ``[B, S]``
    with ``audio_length`` ``[B]`` -> the front-end's image ``[B, 1, n_freq, n_time]``, with fresh
    Gaussian noise on the samples when ``augment`` (training).

    Args:
        modalities: the inputs the network reads.
        frames: T, face frames per clip (evenly spaced; jittered by the data side in training).
        sample_rate: the waveform's rate; must equal the cache's. None where the data holds no
            audio (face images), allowed only for a model that reads none; its clip window is then
            counted at fer-mm's default rate.
        max_audio_seconds: S / sample_rate: longer clips are centre-cropped, shorter ones padded.
        audio: the front-end: ``frontend`` (``scipy``: the method's spectrogram, or ``logmel``)
            and its arguments.
        flip: in training, mirror the faces of a random half of each batch left to right (the
            usual augmentation of the image FER systems; a face's expression reads the same mirrored).
        normalize: ``centre`` (``(x - 127) / 128``) or ``imagenet`` (ImageNet's statistics, for
            weights pretrained on it: their frozen batch norms expect that scale).
        crop_jitter: in training, shift each clip's faces (all its frames alike) by up to this many
            pixels in each direction, drawn per clip, the edges repeated: the face detector's crop
            never sits at exactly the same place. 0: none.
    """

    def __init__(self, modalities: Sequence[str], frames: int = FRAMES, sample_rate: int | None = SAMPLE_RATE,
                 max_audio_seconds: float = 5.0, audio: dict | None = None, flip: bool = False,
                 normalize: str = "centre", crop_jitter: int = 0):
        super().__init__()
        self.modalities = ordered_modalities(modalities, "model.net.modalities")
        if frames < 1:
            raise ValueError(f"model.inputs.frames must be at least 1, got {frames}")
        if sample_rate is None and AUDIO in self.modalities:
            raise ValueError("model.inputs.sample_rate is null (the data holds no audio), but the model reads audio: "
                             "use a video-only model (model.net.modalities=[video])")
        # no audio read: the clip window (max_audio_seconds) still counts in samples, at the default rate
        sample_rate = SAMPLE_RATE if sample_rate is None else sample_rate
        self.frames, self.sample_rate, self.flip = int(frames), int(sample_rate), bool(flip)
        if crop_jitter < 0:
            raise ValueError(f"model.inputs.crop_jitter must be 0 or more pixels, got {crop_jitter}")
        self.crop_jitter = int(crop_jitter)
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"model.inputs.normalize={normalize!r}: use one of {list(NORMALIZATIONS)}")
        self.normalize = normalize
        self.pixel_centre, self.pixel_scale = NORMALIZATIONS[normalize]
        self.max_audio_samples = int(round(max_audio_seconds * sample_rate))
        audio = dict(audio or {"frontend": "scipy"})
        self.frontend = make_frontend(audio.pop("frontend", "scipy"), sample_rate=self.sample_rate, **audio) \
            if AUDIO in self.modalities else None

    @property
    def clip_spec(self) -> ClipSpec:
        return ClipSpec(self.modalities, self.frames, self.sample_rate, self.max_audio_samples)

    def forward(self, batch: dict, augment: bool = False) -> dict[str, Tensor]:
        out = {}
        if VIDEO in self.modalities:
            # a copy, then in place: one pass fewer, and the batch is never written to
            out[VIDEO] = batch[VIDEO].to(torch.float32, copy=True).sub_(self.pixel_centre).div_(self.pixel_scale)
            if augment and self.flip:
                mirrored = torch.rand(len(out[VIDEO]), device=out[VIDEO].device) < 0.5
                out[VIDEO] = torch.where(mirrored[:, None, None, None], out[VIDEO].flip(-1), out[VIDEO])
            if augment and self.crop_jitter:
                out[VIDEO] = jitter_crops(out[VIDEO], self.crop_jitter)
        if AUDIO in self.modalities:
            waves, lengths = batch[AUDIO], batch["audio_length"]
            if waves.device.type == "cpu":
                # each clip's image is made from its own samples only, so padding beyond the batch's
                # longest clip can go: the same images, less work (not on a GPU, where reading the
                # length would make the host wait for the device)
                waves = waves[:, : max(int(lengths.max()), 1)]
            # in float32 under mixed precision too: the same images in training and in inference
            with torch.autocast(waves.device.type, enabled=False):
                out[AUDIO] = self.frontend(waves.float(), lengths, augment=augment)
        return out

    def extra_repr(self) -> str:
        return f"modalities={list(self.modalities)}, frames={self.frames}, sample_rate={self.sample_rate}, " \
               f"max_audio_samples={self.max_audio_samples}" + (", flip=True" if self.flip else "") \
            + (f", normalize={self.normalize}" if self.normalize != "centre" else "") \
            + (f", crop_jitter={self.crop_jitter}" if self.crop_jitter else "")


def jitter_crops(video: Tensor, pixels: int) -> Tensor:
    """``[B, T, H, W]`` faces, each clip shifted by its own offsets in ``[-pixels, pixels]`` (rows and
    columns), the border pixels repeated into the gap; one gather for the whole batch."""
    b, _, h, w = video.shape
    shift = torch.randint(-pixels, pixels + 1, (2, b, 1), device=video.device)
    rows = (torch.arange(h, device=video.device) + shift[0]).clamp(0, h - 1)  # [B, H]
    cols = (torch.arange(w, device=video.device) + shift[1]).clamp(0, w - 1)  # [B, W]
    video = video.gather(2, rows[:, None, :, None].expand(-1, video.shape[1], -1, w))
    return video.gather(3, cols[:, None, None, :].expand(-1, video.shape[1], h, -1))
