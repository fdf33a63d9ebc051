"""A new file's content for the model: its video, audio or image decoded with training's checks, and
one clip's (or window's) item for the network, made by training's own functions."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fer_mm.data.media import audio as audio_io
from fer_mm.data.media import video as video_io
from fer_mm.data.preprocessing import check_media_file
from fer_mm.data.clips import clip_item
from fer_mm.data.images import read_gray
from fer_mm.inference.model import ClipError, TrainedModel
from fer_mm.vocab import AUDIO, VIDEO

MISSING_AUDIO = ("skip", "silence")


def check_missing_audio(missing_audio: str) -> None:
    if missing_audio not in MISSING_AUDIO:
        raise ValueError(f"missing_audio={missing_audio!r}: use one of {list(MISSING_AUDIO)}")


@dataclass
class Media:
    """A file's decoded content: grayscale frames with their times, and audio at its own rate that
    starts with the video."""

    frames: np.ndarray | None  # [N, H, W] uint8
    fps: float
    audio: np.ndarray | None  # [n, channels] float
    audio_rate: int
    notes: list[str] = field(default_factory=list)
    times: np.ndarray | None = None  # [N] seconds from the video's start (variable frame rates keep theirs)
    video_seconds: float | None = None  # the decoded video's length (DecodedVideo.seconds)

    @property
    def seconds(self) -> float:
        return self.video_seconds if self.frames is not None else len(self.audio) / self.audio_rate


def silence(seconds: float, rate: int) -> np.ndarray:
    """``missing_audio=silence``: what the audio branch is given, for files and live sources alike."""
    return np.zeros((int(round(seconds * rate)), 1), np.float32)


def check_files(*paths: str | None) -> None:
    """A :class:`ClipError` for a file training would not read (missing, empty, not media)."""
    for path in filter(None, paths):
        problem = check_media_file(path)
        if problem:
            raise ClipError(problem)


def read_media(video_path: str, audio_path: str | None, rec: TrainedModel, missing_audio: str = "skip") -> Media:
    """Decode what the model needs from a file; a :class:`ClipError` says why a file cannot be used.

    The checks are training's (:func:`~fer_mm.data.cache.process_clip`) where they apply to a new
    file: video and audio of lengths more than ``max_length_mismatch`` apart are called truncated
    or mismatched; a clip too long to read whole is read in windows instead of skipped.
    """
    check_files(video_path, audio_path)
    mismatch = getattr(rec.params, "max_length_mismatch", 0.5)  # image models' parameters have none
    media, video_start = Media(None, 30.0, None, int(rec.spec.sample_rate)), 0.0
    if VIDEO in rec.modalities:
        decoded = _read_video(video_path, mismatch)
        media.frames, media.fps, media.times, video_start = decoded.frames, decoded.fps, decoded.times, decoded.start
        media.video_seconds = decoded.seconds
    if AUDIO in rec.modalities:
        media.audio, rate, media.notes = _read_audio(video_path, audio_path, video_start, media.audio_rate)
        media.audio_rate = int(rate)
        _fill_missing_audio(media, rec, missing_audio)
    if media.frames is not None and media.audio is not None:
        audio_seconds = len(media.audio) / media.audio_rate
        if abs(media.seconds - audio_seconds) > mismatch:
            raise ClipError(f"truncated or mismatched: video {media.seconds:.2f} s vs audio {audio_seconds:.2f} s")
    return media


def _read_video(path: str, mismatch: float) -> video_io.DecodedVideo:
    """The file's grayscale frames; a :class:`ClipError` when they do not decode, or decode more than
    ``mismatch`` seconds short of the length the file declares."""
    try:
        decoded = video_io.decode_gray(path)
    except Exception as err:  # PyAV raises many error types for broken containers
        raise ClipError(f"unreadable video: {err}") from err
    declared = decoded.declared_seconds
    if declared and declared - decoded.seconds > mismatch:
        raise ClipError(f"truncated: {decoded.seconds:.2f} s of video decode, of the {declared:.2f} s the "
                        f"file declares")
    return decoded


def _read_audio(video_path: str, audio_path: str | None, video_start: float,
                rate: int) -> tuple[np.ndarray | None, int, list[str]]:
    """The clip's audio at its own rate (``rate`` where there is none) starting with the video, and
    notes on it: a CREMA-D clip's WAV as training reads it, else the file's own track."""
    audio, notes = None, []
    try:
        if audio_path:
            audio, rate = audio_io.read_wav(audio_path)
        else:
            track = audio_io.read_audio_track(video_path)
            if track is not None:
                audio, rate = audio_io.shift_start(track.samples, track.rate, track.start - video_start), track.rate
                if track.dropped_packets:
                    notes.append(f"{track.dropped_packets} undecodable audio packets left out")
    except Exception as err:  # soundfile and PyAV raise their own types for malformed files
        raise ClipError(f"unreadable audio: {err}") from err
    return audio, rate, notes


def _fill_missing_audio(media: Media, rec: TrainedModel, missing_audio: str) -> None:
    """No audio, or none in the track: silence in its place where asked (``missing_audio=silence``),
    else a :class:`ClipError`; silent audio is noted."""
    if media.audio is None or len(media.audio) == 0:
        what = "no audio track" if media.audio is None else "an empty audio track"
        if media.frames is None:
            raise ClipError(f"{what}, and the model reads audio only")
        if missing_audio != "silence":
            raise ClipError(f"{what}, and the model reads {'+'.join(rec.modalities)}: use a video-only model, "
                            f"or missing_audio=silence to give it silence")
        media.audio = silence(media.video_seconds, media.audio_rate)
        media.notes.append(f"{what}: silence given to the audio branch (missing_audio=silence)")
    elif np.abs(media.audio).max() < rec.params.silence_peak:
        media.notes.append(f"silent audio: peak {np.abs(media.audio).max():.2e} of full scale")


def read_image(path: str) -> np.ndarray:
    """An image file in grayscale; a :class:`ClipError` says why it cannot be used."""
    check_files(path)
    try:
        return read_gray(path)
    except ValueError as err:
        raise ClipError(f"unreadable image: {err}") from err


def clip_input(rec: TrainedModel, frames: np.ndarray | None, detected: np.ndarray | None, audio: np.ndarray | None,
               audio_rate: int) -> tuple[dict, int, list[str]]:
    """One clip's (or window's) item for :meth:`~TrainedModel.probabilities`, its frames with a face,
    and what was done to its audio (downmixed, resampled).

    ``detected``: the frames' tracked boxes (:meth:`~TrainedModel.locate`); smoothing, cropping,
    downmix, resampling and quantisation are training's own functions.
    """
    faces = pcm = None
    with_face, notes = 0, []
    if VIDEO in rec.modalities:
        boxes, missing = rec.smoothed_boxes(detected)
        faces = rec.crop(frames, boxes)
        with_face = len(frames) - missing
    if AUDIO in rec.modalities:
        loaded = audio_io.to_mono_rate(audio, audio_rate, rec.spec.sample_rate)
        pcm, notes = audio_io.to_pcm16(loaded.samples), loaded.notes
    return clip_item(faces, pcm, rec.spec), with_face, notes
