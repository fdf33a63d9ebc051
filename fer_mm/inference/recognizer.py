"""The :class:`Recognizer`: a trained model on one new file at a time, a video (with its WAV from a
CREMA-D root) or an image, giving its rows of ``predictions.csv``, its timeline and what its
annotated copy needs."""

from __future__ import annotations

import time

import numpy as np

from fer_mm.data.media import audio as audio_io
from fer_mm.data.clips import clip_item
from fer_mm.data.images import face_crop
from fer_mm.inference.media import Media, clip_input, read_image, read_media
from fer_mm.inference.model import ClipError, TrainedModel
from fer_mm.inference.outputs import acted_label, reading_columns, window_row
from fer_mm.inference.readings import DEFAULT_SMOOTHING, Smoother, mean_reading, reading_of, smooth_windows
from fer_mm.inference.sources import Source, is_image
from fer_mm.inference.windows import LONG_CLIP_WINDOW, Windows, predict_windows
from fer_mm.vocab import AUDIO, VIDEO


class Recognizer(TrainedModel):
    """A trained model (a checkpoint or an exported ONNX file: :class:`TrainedModel`'s arguments)
    that reads new files."""

    def predict(self, video: str, audio: str | None = None, **options) -> dict:
        """One file's row, as ``predictions.csv`` holds it (options: those of :func:`predict_source`);
        raises :class:`ClipError` with the reason a file cannot be used. For an image file: the row
        of its largest face (:meth:`predict_faces` gives every face's)."""
        if is_image(video):
            return self.predict_faces(video)[0]
        return predict_source(self, Source(str(video), audio), **options)[0]

    def predict_faces(self, image: str) -> list[dict]:
        """A row per face in an image, the largest first (an image model: one face each; a clip
        model reads the image as a still clip)."""
        return predict_image(self, Source(str(image)))[0]


def predict_source(rec: TrainedModel, source: Source, window: float | None = None, hop: float = 0.5,
                   missing_audio: str = "skip", batch_size: int = 16,
                   smoothing: float = DEFAULT_SMOOTHING) -> tuple[dict, list[dict], dict]:
    """One input -> its file row, its window rows, and what the annotation needs.

    A clip no longer than training reads whole (``data.preprocess.max_seconds``, 10 s by default)
    is read whole, exactly as training reads a clip; ``window`` also gives its timeline. A longer
    clip is read in windows (``window`` seconds, 2.5 by default) and its file row is their mean.
    An image model reads every frame (:func:`predict_frames`). The timeline's readings are also
    smoothed over time (:class:`~fer_mm.inference.readings.Smoother`, ``smoothing`` seconds).
    Raises :class:`ClipError` with the reason a file cannot be used.
    """
    t0 = time.perf_counter()
    rec.check_window(window, hop)
    smoother = Smoother(smoothing)
    if rec.images:
        return predict_frames(rec, source, batch_size, smoother.tau)
    media = read_media(source.video, source.audio, rec, missing_audio)
    detected = rec.locate(media.frames) if VIDEO in rec.modalities else None
    long = media.seconds > rec.params.max_seconds
    window_length = window or LONG_CLIP_WINDOW
    windows = _timeline(rec, media, detected, window_length, hop, batch_size) if window or long else []
    smooth_windows(windows, smoother)
    if long:
        reading, basis, with_face, audio_notes = _mean_of_windows(rec, media, detected, windows, window_length)
    else:
        item, with_face, audio_notes = clip_input(rec, media.frames, detected, media.audio, media.audio_rate)
        reading, basis = reading_of(rec.readings([item]), 0), "whole clip"
    frames = len(media.frames) if media.frames is not None else None
    row = dict(file=source.video, status="ok", reason="", **acted_label(source.name), **reading_columns(rec, reading),
               frames_with_face=with_face if frames is not None else None, frames=frames,
               duration_s=round(media.seconds, 3), modalities=_modalities_read(rec, media), basis=basis,
               notes="; ".join(audio_notes + media.notes), seconds=round(time.perf_counter() - t0, 3))
    window_rows = [dict(file=source.video, **window_row(rec, i, w)) for i, w in enumerate(windows)]
    annotation = dict(detected=detected, fps=media.fps, times=media.times, windows=window_rows)
    return row, window_rows, annotation


def _timeline(rec: TrainedModel, media: Media, detected: np.ndarray | None, window: float, hop: float,
              batch_size: int) -> list[dict]:
    """The file's windows with their readings: the stream's own path, fed from memory (frames
    at their times with their tracked boxes, then the audio)."""
    timeline = Windows(rec, window, hop, media.audio_rate)
    if VIDEO in rec.modalities:
        for t, frame, box in zip(media.times, media.frames, detected):
            timeline.add_frame(float(t), frame, box)
    if AUDIO in rec.modalities:
        timeline.add_audio(media.audio, media.audio_rate)
    return predict_windows(rec, timeline.ready(final=True), batch_size)


def _mean_of_windows(rec: TrainedModel, media: Media, detected: np.ndarray | None, windows: list[dict],
                     window: float) -> tuple[dict, str, int, list[str]]:
    """A clip too long to read whole: the mean of its windows' readings, how they were made, its
    frames with a face, and what was done to its audio; a :class:`ClipError` when no window could be read."""
    good = [w["reading"] for w in windows if "reading" in w]
    if not good:
        raise ClipError(f"no window of the {media.seconds:.1f} s clip could be read: {windows[0].get('error')}")
    with_face = int(np.isfinite(detected[:, 0]).sum()) if detected is not None else 0
    audio_notes = audio_io.mono_rate_notes(media.audio.shape[1], media.audio_rate, rec.spec.sample_rate) \
        if media.audio is not None else []
    return mean_reading(good), f"mean of {len(good)} windows of {window:g} s", with_face, audio_notes


def predict_image(rec: TrainedModel, source: Source) -> tuple[list[dict], dict]:
    """An image -> a row per face (the largest first), and what its annotation needs.

    Every face the detector finds is cropped as training cropped its images
    (:meth:`~TrainedModel.crop`) and read as a clip of one frame; a model trained on face crops
    (``detect=false``) reads the whole image as one face. A clip model reads each face as a still
    clip (its frames all the same).
    """
    t0 = time.perf_counter()
    if AUDIO in rec.modalities:
        raise ClipError(f"an image, and the model reads {'+'.join(rec.modalities)}: use a video-only model")
    image = read_image(source.video)
    boxes, faces, notes = _image_faces(rec, image)
    readings = rec.readings([clip_item(face[None], None, rec.spec) for face in faces])
    seconds = round(time.perf_counter() - t0, 3)
    rows = [dict(file=source.video, status="ok", reason="", face=i, box=",".join(str(int(round(v))) for v in box),
                 **acted_label(source.name), **reading_columns(rec, reading_of(readings, i)), frames_with_face=1,
                 frames=1, modalities=VIDEO, basis=f"face {i + 1} of {len(faces)}", notes=notes, seconds=seconds)
            for i, box in enumerate(boxes)]
    return rows, dict(image=image, boxes=boxes)


def _image_faces(rec: TrainedModel, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """An image's face boxes, the largest first, their crops, and a note on how they were found."""
    notes = ""
    boxes = rec.locate(image[None]) if rec.detector is None else \
        np.asarray(rec.detector(image), dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        small = image.shape[0] <= 2 * rec.params.face_height and image.shape[1] <= 2 * rec.params.face_width
        if not small:
            raise ClipError("no face found in the image")
        # a face crop already (FER2013's are 48x48): too small for the detector to find the face in it
        boxes = np.array([[0.0, 0.0, image.shape[1], image.shape[0]]])  # the whole image is the face
        notes = "no face found in an image this small: read whole as a face crop"
        faces = np.stack([face_crop(image, rec.params, None)])
    else:
        boxes = boxes[np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")]
        faces = rec.crop(np.broadcast_to(image, (len(boxes), *image.shape)), boxes)
    return boxes, faces, notes


def predict_frames(rec: TrainedModel, source: Source, batch_size: int = 64,
                   smoothing: float = DEFAULT_SMOOTHING) -> tuple[dict, list[dict], dict]:
    """A video read by an image model: each frame's tracked face read on its own; the file row is
    the mean over the frames with a face, the frames are its timeline (their readings also smoothed
    over time, ``smoothing`` seconds)."""
    t0 = time.perf_counter()
    media = read_media(source.video, None, rec)
    detected = rec.locate(media.frames)
    found = np.flatnonzero(np.isfinite(detected[:, 0]))
    if not len(found):
        raise ClipError("no face found in any frame")
    faces, times = rec.crop(media.frames[found], detected[found]), media.times
    frames = [dict(start=float(times[i]), end=float(times[i]), frames_with_face=1, frames=1,
                   item=clip_item(face[None], None, rec.spec)) for i, face in zip(found, faces)]
    smooth_windows(predict_windows(rec, frames, batch_size), Smoother(smoothing))
    row = dict(file=source.video, status="ok", reason="", **acted_label(source.name),
               **reading_columns(rec, mean_reading([f["reading"] for f in frames])), frames_with_face=len(found),
               frames=len(media.frames), duration_s=round(media.seconds, 3), modalities=VIDEO,
               basis=f"mean of {len(found)} frames", notes="; ".join(media.notes),
               seconds=round(time.perf_counter() - t0, 3))
    frame_rows = [dict(file=source.video, **window_row(rec, int(i), f)) for i, f in zip(found, frames)]
    return row, frame_rows, dict(detected=detected, fps=media.fps, times=times, windows=frame_rows)


def _modalities_read(rec: TrainedModel, media: Media) -> str:
    """What the model read: its modalities, the audio marked where it was given silence."""
    silenced = any("missing_audio=silence" in note for note in media.notes)
    return "+".join(f"{m}(silence)" if m == AUDIO and silenced else m for m in rec.modalities)
