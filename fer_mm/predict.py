"""``python -m fer_mm.predict checkpoint=PATH input=PATH [output=DIR]``: a trained model on new videos.

``checkpoint`` is a ``.ckpt`` file, a fold's run folder (its selected checkpoint is used) or, with
``runtime=onnx``, a model exported by :mod:`fer_mm.export`. ``input`` is a video file (mp4, mkv,
mov, avi, webm, flv: any frame rate, size, audio codec, rate and channel count), an image (png, jpg,
...), a folder of them, a CREMA-D root (each clip's video paired with its WAV, as training pairs
them), or a live source (``webcam:0``, a stream URL; see :mod:`fer_mm.stream`).

An image model (trained on FER2013, CK+ or a folder set) reads every face of an image (a row per
face) and every frame of a video (the file's row is the mean over its frames, the frames its
timeline); the face detector and crop are the ones it was trained with.

Every step is the training path's own: decode (:func:`~fer_mm.data.media.video.decode_gray`, the audio
through :func:`~fer_mm.data.media.audio.to_mono_rate`), face tracking and cropping with the detector
settings the checkpoint was trained with, int16 quantisation, the evaluation frame sampling of
:func:`~fer_mm.data.clips.clip_item`, then the checkpoint's own :class:`ModelInputs` and network.

Outputs in ``output``: ``predictions.csv`` and ``predictions.json`` (a row per file: ``p_<emotion>``,
the top emotion, frames with a face, the modalities used, the seconds taken, or the reason a file
failed), and for windowed files ``windows.csv`` and ``<file>_timeline.png``. The command exits
non-zero only when no file succeeded.
"""

from __future__ import annotations

from fer_mm.environment import require

if __name__ == "__main__":  # before the imports below: a broken dependency is named with its fix, not hidden
    require("predict")

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import default_collate

from fer_mm.data.media import audio as audio_io
from fer_mm.data.media import faces as face_io
from fer_mm.data.media import video as video_io
from fer_mm.data.cache import PreprocessParams, check_media_file
from fer_mm.data.clips import clip_item
from fer_mm.data.sources.crema_d import AUDIO_DIR, VIDEO_DIR, parse_name, scan_root
from fer_mm.data.images import IMAGE_EXTENSIONS, ImagePreprocessParams, face_crop, read_gray
from fer_mm.models.inputs import ModelInputs
from fer_mm.vocab import AUDIO, EMOTION_NAMES, VIDEO

log = logging.getLogger("fer_mm.predict")

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".flv")
MISSING_AUDIO = ("skip", "silence")
RUNTIMES = ("torch", "onnx")
LONG_CLIP_WINDOW = 2.5  # seconds: the windows of a clip too long to read whole, when no window is given
ONNX_METADATA_KEY = "fer_mm"  # the exported model's metadata: what rebuilds its inputs and preprocessing


class ClipError(ValueError):
    """Why one input cannot be predicted; it is reported and the other inputs go on."""


# ------------------------------------------------------------------------------------ the model


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a fold's run folder -> the checkpoint it selected on validation actors."""
    p = Path(path)
    if p.is_dir():
        metrics = p / "metrics.json"
        if metrics.is_file():
            best = json.loads(metrics.read_text()).get("best_checkpoint")
            if best and Path(best).is_file():
                return Path(best)
        kept = [c for c in sorted((p / "checkpoints").glob("*.ckpt")) if c.name != "last.ckpt"]
        if len(kept) == 1:
            return kept[0]
        raise FileNotFoundError(f"checkpoint={p}: a folder, but not a finished fold's run folder (no metrics.json "
                                f"naming an existing best_checkpoint, and {len(kept)} checkpoints besides last.ckpt)")
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint={p}: no such file")
    return p


def _run_preprocess(path: Path) -> dict | None:
    """The preprocessing of a checkpoint saved before checkpoints carried it: its run's config.yaml."""
    from omegaconf import OmegaConf

    config = path.parent.parent / "config.yaml"
    if config.is_file():
        preprocess = OmegaConf.load(config).get("data", {}).get("preprocess")
        if preprocess is not None:
            return OmegaConf.to_container(preprocess, resolve=True)
    return None


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return logits.float().softmax(1).cpu().numpy()  # as EmotionSystem.test_step makes predictions.csv


class Recognizer:
    """A trained model with what it needs to read a new clip: preprocessing, inputs, backend.

    Args:
        checkpoint: a ``.ckpt``, a fold's run folder, or (``runtime="onnx"``) an exported ``.onnx``.
        runtime: ``torch`` or ``onnx`` (ONNX Runtime runs the network; the inputs are made as in torch).
        device: ``cpu``, ``cuda`` or ``auto``.
        detector, detector_kwargs: another face detector than the one the model was trained with
            (its crops then differ from training's; the outputs record it).
        detector_threads: threads searching a file's frames for faces (0: one per core for detectors
            that run in parallel, ``parallel_frames``, else 1).
    """

    def __init__(self, checkpoint: str | Path, runtime: str = "torch", device: str = "cpu",
                 detector: str | None = None, detector_kwargs: dict | None = None, detector_threads: int = 0):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime={runtime!r}: use one of {list(RUNTIMES)}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device, self.runtime, self.session = torch.device(device), runtime, None
        if runtime == "onnx":
            meta = self._load_onnx(Path(checkpoint))
            self.checkpoint, self.net, self.net_config = Path(checkpoint), None, meta.get("net", {})
            inputs, preprocess, class_names = meta["inputs"], meta["preprocess"], meta["class_names"]
            self.inputs = ModelInputs(meta["modalities"], **inputs)
        else:
            from fer_mm.system import EmotionSystem

            self.checkpoint = resolve_checkpoint(checkpoint)
            if self.checkpoint.suffix == ".onnx":
                raise ValueError(f"checkpoint={checkpoint} is an exported ONNX model: add runtime=onnx")
            # weights only: a checkpoint is data, never code to run
            try:
                saved = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
            except Exception as err:  # torch raises many types for a file that is not a checkpoint
                # torch's own advice (weights_only=False) would run whatever the file holds: not offered
                raise ValueError(f"checkpoint={self.checkpoint}: not a readable fer-mm checkpoint ({type(err).__name__}; "
                                 f"a damaged or foreign file: fer-mm loads checkpoints as weights only)") from err
            hparams = saved.get("hyper_parameters") or {}
            if "net" not in hparams:
                raise ValueError(f"checkpoint={self.checkpoint} was not written by fer-mm's training (no model "
                                 f"hyper-parameters)")
            # the ImageNet file a transfer run started from is not needed (nor perhaps present) here:
            # every weight is in the checkpoint
            net = {k: v for k, v in hparams["net"].items() if k != "pretrained"}
            system = EmotionSystem(net=net, inputs=hparams.get("inputs"), tasks=hparams.get("tasks"))
            system.load_state_dict(saved["state_dict"])
            system.eval().to(self.device)
            self.net, self.inputs, self.net_config = system.net, system.inputs, dict(hparams["net"])
            data_state = saved.get("CremaDDataModule") or saved.get("ImageDataModule") or {}
            preprocess = data_state.get("preprocess") or _run_preprocess(self.checkpoint)
            if preprocess is None:
                log.warning("%s does not say how its faces were cropped (an older checkpoint outside its run "
                            "folder): using the default preprocessing", self.checkpoint)
            class_names = data_state.get("class_names") or list(EMOTION_NAMES[: system.num_classes])
            inputs = hparams.get("inputs") or {}
        self.inputs.eval().to(self.device)
        self.inputs_config = dict(inputs)
        self.class_names = list(class_names)
        # an image model (trained on FER2013, CK+ or a folder set) reads one face per image or frame
        self.images = "format" in (preprocess or {})
        params_class = ImagePreprocessParams if self.images else PreprocessParams
        self.trained_preprocess = params_class(**(preprocess or {}))
        self.params = self.trained_preprocess
        if detector is not None or detector_kwargs:
            overrides = dict(detector=detector or self.params.detector, detector_kwargs=dict(detector_kwargs or {}))
            self.params = params_class(**{**self.trained_preprocess.__dict__, **overrides})
            log.warning("face detector %s differs from training's (%s): crops may differ from those the model "
                        "learnt from", overrides, self.trained_preprocess.detector)
        self.spec = self.inputs.clip_spec
        self.modalities = self.spec.modalities
        if not self.images and self.spec.sample_rate != self.params.sample_rate:
            raise ValueError(f"the model reads {self.spec.sample_rate} Hz audio but was preprocessed at "
                             f"{self.params.sample_rate} Hz")
        # built and tried once, so that a broken detector stops before the first file; one instance
        # per core, as files' frames are searched in parallel (a stream takes one frame at a time)
        self.detectors = []
        if VIDEO in self.modalities and getattr(self.params, "detect", True):
            try:
                self.detectors.append(face_io.make_detector(self.params.detector, **self.params.detector_kwargs))
            except face_io.DetectorError as err:
                if self.params == self.trained_preprocess:
                    raise
                raise ValueError(f"detector={self.params.detector}: {err}") from err
            parallel = getattr(type(self.detectors[0]), "parallel_frames", False)
            threads = detector_threads or (_cores() if parallel else 1)
            self.detectors += [face_io.make_detector(self.params.detector, **self.params.detector_kwargs)
                               for _ in range(threads - 1)]
        self.detector = self.detectors[0] if self.detectors else None

    @property
    def smooth_frames(self) -> int:
        """Frames the face boxes are averaged over, as in training (an image model: each frame alone)."""
        return getattr(self.params, "smooth_frames", 1)

    def locate(self, frames: np.ndarray) -> np.ndarray:
        """Each frame's tracked face box (NaN rows: none); the whole frame for a model trained on face
        crops (``detect=false``), which finds no faces."""
        if self.detector is None:
            return np.tile([0.0, 0.0, frames.shape[2], frames.shape[1]], (len(frames), 1))
        return face_io.detect_faces(frames, self.detectors)

    def crop(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """The faces ``[N, face_height, face_width]`` of ``frames`` in their ``boxes``, as training
        cropped them; whole frames resized for a model trained on face crops."""
        if self.detector is None:
            return np.stack([face_crop(frame, self.params, None) for frame in frames])
        return face_io.crop_faces(frames, boxes, self.params.face_height, self.params.face_width)

    def _load_onnx(self, path: Path) -> dict:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError("runtime=onnx needs ONNX Runtime: pip install -e '.[onnx]'") from err
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint={path}: no such file (export one with python -m fer_mm.export)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if self.device.type == "cuda" \
            else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), providers=providers)
        meta = self.session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
        if meta is None:
            raise ValueError(f"checkpoint={path}: an ONNX model without fer-mm's metadata (export it with "
                             f"python -m fer_mm.export)")
        return json.loads(meta)

    @property
    def clip_seconds(self) -> float:
        """The audio the model reads of a clip (longer audio is centre-cropped): the longest window."""
        return self.spec.max_audio_samples / self.spec.sample_rate

    def check_window(self, window: float | None, hop: float) -> None:
        """A wrong ``window`` or ``hop`` named before any file is read."""
        for key, value in (("window", window), ("hop", hop)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{key}={value!r}: a number of seconds" + (" or null" if key == "window" else ""))
        if window is not None and not 0 < window <= self.clip_seconds:
            raise ValueError(f"window={window}: seconds in (0, {self.clip_seconds:g}], the model's clip length "
                             f"(model.inputs.max_audio_seconds), or null")
        if not hop > 0:
            raise ValueError(f"hop={hop}: seconds between windows, more than 0")

    def network_inputs(self, items: list[dict]) -> dict[str, torch.Tensor]:
        """Clip items (:func:`clip_item`) -> the network's input tensors, as in evaluation."""
        batch = {k: v.to(self.device) for k, v in default_collate(items).items()}
        with torch.inference_mode():
            return self.inputs(batch, augment=False)

    def logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.session is not None:
            feeds = {name: inputs[name].cpu().numpy() for name in self.modalities}
            return torch.from_numpy(self.session.run(["logits"], feeds)[0])
        with torch.inference_mode():
            return self.net(**inputs)

    def probabilities(self, items: list[dict]) -> np.ndarray:
        """``[len(items), classes]`` probabilities of clip items."""
        return _softmax(self.logits(self.network_inputs(items)))

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

    def describe(self) -> dict:
        return dict(checkpoint=str(self.checkpoint), runtime=self.runtime, device=str(self.device),
                    modalities=list(self.modalities), class_names=self.class_names,
                    preprocess=self.params.__dict__, detector_as_trained=self.params == self.trained_preprocess)


# ------------------------------------------------------------------------------------ clips and windows


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


def read_media(video_path: str, audio_path: str | None, rec: Recognizer, missing_audio: str = "skip") -> Media:
    """Decode what the model needs from a file; a :class:`ClipError` says why a file cannot be used.

    The checks are training's (:func:`~fer_mm.data.cache.process_clip`) where they apply to a new
    file: video and audio of lengths more than ``max_length_mismatch`` apart are called truncated
    or mismatched; a clip too long to read whole is read in windows instead of skipped.
    """
    for path in filter(None, (video_path, audio_path)):
        problem = check_media_file(path)
        if problem:
            raise ClipError(problem)
    frames = times = video_seconds = None
    fps, notes, video_start = 30.0, [], 0.0
    mismatch = getattr(rec.params, "max_length_mismatch", 0.5)  # image models' parameters have none
    if VIDEO in rec.modalities:
        try:
            decoded = video_io.decode_gray(video_path)
        except Exception as err:  # PyAV raises many error types for broken containers
            raise ClipError(f"unreadable video: {err}") from err
        declared = decoded.declared_seconds
        if declared and declared - decoded.seconds > mismatch:
            raise ClipError(f"truncated: {decoded.seconds:.2f} s of video decode, of the {declared:.2f} s the "
                            f"file declares")
        frames, fps, times, video_start = decoded.frames, decoded.fps, decoded.times, decoded.start
        video_seconds = decoded.seconds
    audio, rate = None, rec.spec.sample_rate
    if AUDIO in rec.modalities:
        try:
            if audio_path:  # a CREMA-D root: the clip's WAV, as training reads it
                audio, rate = audio_io.read_wav(audio_path)
            else:
                track = audio_io.read_audio_track(video_path)
                if track is not None:
                    audio, rate = audio_io.shift_start(track.samples, track.rate, track.start - video_start), track.rate
                    if track.dropped_packets:
                        notes.append(f"{track.dropped_packets} undecodable audio packets left out")
        except Exception as err:  # soundfile and PyAV raise their own types for malformed files
            raise ClipError(f"unreadable audio: {err}") from err
        if audio is None or len(audio) == 0:
            what = "no audio track" if audio is None else "an empty audio track"
            if frames is None:
                raise ClipError(f"{what}, and the model reads audio only")
            if missing_audio != "silence":
                raise ClipError(f"{what}, and the model reads {'+'.join(rec.modalities)}: use a video-only model, "
                                f"or missing_audio=silence to give it silence")
            audio = silence(video_seconds, rate)
            notes.append(f"{what}: silence given to the audio branch (missing_audio=silence)")
        elif np.abs(audio).max() < rec.params.silence_peak:
            notes.append(f"silent audio: peak {np.abs(audio).max():.2e} of full scale")
    media = Media(frames, fps, audio, int(rate), notes, times, video_seconds)
    if frames is not None and audio is not None:
        audio_seconds = len(audio) / rate
        if abs(media.seconds - audio_seconds) > mismatch:
            raise ClipError(f"truncated or mismatched: video {media.seconds:.2f} s vs audio {audio_seconds:.2f} s")
    return media


def clip_input(rec: Recognizer, frames: np.ndarray | None, detected: np.ndarray | None, audio: np.ndarray | None,
               audio_rate: int) -> tuple[dict, int, list[str]]:
    """One clip's (or window's) item for :meth:`Recognizer.probabilities`, its frames with a face,
    and what was done to its audio (downmixed, resampled).

    ``detected``: the frames' tracked boxes (:class:`~fer_mm.data.media.faces.FaceTracker`); smoothing,
    cropping, downmix, resampling and quantisation are training's own functions.
    """
    faces = pcm = None
    with_face, notes = 0, []
    if VIDEO in rec.modalities:
        try:
            boxes, missing = face_io.smooth_boxes(detected, rec.smooth_frames)
        except face_io.NoFaceError as err:
            raise ClipError(str(err)) from err
        faces = rec.crop(frames, boxes)
        with_face = len(frames) - missing
    if AUDIO in rec.modalities:
        loaded = audio_io.to_mono_rate(audio, audio_rate, rec.spec.sample_rate)
        pcm, notes = audio_io.to_pcm16(loaded.samples), loaded.notes
    return clip_item(faces, pcm, rec.spec), with_face, notes


class Windows:
    """Rolling windows of ``window`` seconds every ``hop`` seconds over frames and audio arriving in
    time order: a file's timeline and a live stream both go through it.

    Each frame's face is tracked as it arrives; a window's boxes are smoothed and cropped within the
    window, and its audio downmixed, resampled and quantised, by the functions training uses.
    """

    def __init__(self, rec: Recognizer, window: float, hop: float, audio_rate: int | None = None):
        rec.check_window(window, hop)
        self.rec, self.window, self.hop, self.audio_rate = rec, float(window), float(hop), audio_rate
        self.tracker = face_io.FaceTracker(rec.detector) if rec.detector is not None else None
        self.times: list[float] = []
        self.frames: list[np.ndarray] = []
        self.detected: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self.audio_first = 0  # index of the first buffered sample since the start
        self.audio_count = 0  # samples received
        self.video_time = 0.0  # time of the latest frame
        self.index = 0  # the next window's number

    @property
    def needs_video(self) -> bool:
        return VIDEO in self.rec.modalities

    @property
    def needs_audio(self) -> bool:
        return AUDIO in self.rec.modalities

    def add_frame(self, t: float, gray: np.ndarray, box: np.ndarray | None = None) -> None:
        """A frame at ``t`` seconds; its face is tracked here unless its tracked ``box`` is given."""
        if not self.needs_video:
            return
        self.times.append(t)
        self.frames.append(gray)
        if box is None:
            box = self.tracker(gray) if self.tracker is not None else self.rec.locate(gray[None])[0]
        self.detected.append(box)
        self.video_time = t

    def add_audio(self, samples: np.ndarray, rate: int) -> None:
        """``samples`` ``[n, channels]`` float at ``rate`` (the stream's own)."""
        if not self.needs_audio:
            return
        if self.audio_rate is None:
            self.audio_rate = rate
        elif rate != self.audio_rate:
            raise ValueError(f"the audio rate changed mid-stream ({self.audio_rate} -> {rate} Hz)")
        self.audio.append(samples)
        self.audio_count += len(samples)

    def span(self, k: int) -> tuple[float, float]:
        return k * self.hop, k * self.hop + self.window

    def _covered(self, end: float) -> bool:
        """Whether everything up to ``end`` seconds has arrived."""
        video = not self.needs_video or (bool(self.times) and self.video_time >= end)
        audio = not self.needs_audio or (self.audio_rate is not None and self.audio_count >= round(end * self.audio_rate))
        return video and audio

    def _length(self) -> float:
        """Seconds received (at the end of a stream)."""
        lengths = []
        if self.needs_video and self.times:
            step = self.times[-1] - self.times[-2] if len(self.times) > 1 else 0.0
            lengths.append(self.times[-1] + step)
        if self.needs_audio and self.audio_rate:
            lengths.append(self.audio_count / self.audio_rate)
        return min(lengths) if lengths else 0.0

    def ready(self, final: bool = False) -> list[dict]:
        """The windows complete now; ``final``: at the end of the input, those that fit in it (an
        input shorter than one window is one window)."""
        out = []
        length = self._length() if final else math.inf
        while True:
            start, end = self.span(self.index)
            if final:
                if end > length + 1e-6 and (self.index > 0 or length <= 0):
                    break
                end = min(end, length)
            elif not self._covered(end):
                break
            out.append(self._item(start, end))
            self.index += 1
            self._trim(self.span(self.index)[0])
        return out

    def _item(self, start: float, end: float) -> dict:
        row = dict(start=round(start, 3), end=round(end, 3))
        frames = detected = audio = None
        if self.needs_video:
            times = np.asarray(self.times)
            pick = np.flatnonzero((times >= start - 1e-9) & (times < end - 1e-9))
            frames = np.stack([self.frames[i] for i in pick]) if len(pick) else None
            detected = np.stack([self.detected[i] for i in pick]) if len(pick) else None
            row["frames"] = len(pick)
        if self.needs_audio:
            if self.audio_rate is None:
                row["error"] = "no audio arrived"
                return row
            a, b = round(start * self.audio_rate) - self.audio_first, round(end * self.audio_rate) - self.audio_first
            buffered = np.concatenate(self.audio) if self.audio else np.zeros((0, 1), np.float32)
            audio = buffered[max(a, 0) : max(b, 0)]
            if not len(audio):
                row["error"] = "no audio in this window"
                return row
        if self.needs_video and frames is None:
            row["error"] = "no frame in this window"
            return row
        try:
            row["item"], row["frames_with_face"], _ = clip_input(self.rec, frames, detected, audio, self.audio_rate)
        except ClipError as err:
            row["error"] = str(err)
        return row

    def _trim(self, start: float) -> None:
        """Forget what no later window reads."""
        if self.needs_video:
            keep = next((i for i, t in enumerate(self.times) if t >= start - 1e-9), len(self.times))
            del self.times[:keep], self.frames[:keep], self.detected[:keep]
        if self.needs_audio and self.audio_rate and self.audio:
            first = round(start * self.audio_rate)
            buffered = np.concatenate(self.audio)
            drop = min(max(first - self.audio_first, 0), len(buffered))
            self.audio = [buffered[drop:]]
            self.audio_first += drop


def predict_windows(rec: Recognizer, rows: list[dict], batch_size: int = 16) -> list[dict]:
    """Fill each window row's probabilities (in batches); a row with an error keeps it."""
    todo = [r for r in rows if "item" in r]
    for i in range(0, len(todo), batch_size):
        chunk = todo[i : i + batch_size]
        for r, p in zip(chunk, rec.probabilities([r["item"] for r in chunk])):
            r["probs"] = p
    for r in rows:
        r.pop("item", None)
    return rows


# ------------------------------------------------------------------------------------ files


@dataclass
class Source:
    """One input to predict: a video file, with its WAV when it comes from a CREMA-D root."""

    video: str
    audio: str | None = None

    @property
    def name(self) -> str:
        return Path(self.video).stem


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def find_inputs(path: str | Path) -> list[Source]:
    """A file, a folder of videos and images (searched recursively), or a CREMA-D root (video + WAV pairs)."""
    p = Path(path)
    if p.is_file():
        return [Source(str(p))]
    if not p.is_dir():
        raise FileNotFoundError(f"input={p}: no such file or folder")
    if (p / VIDEO_DIR).is_dir() and (p / AUDIO_DIR).is_dir():  # a CREMA-D root: pairs as training reads them
        scan = scan_root(p, exclude_known_defects=False)
        sources = [Source(r.video_path, r.audio_path) for r in scan.index.itertuples()]
        for name, reason in scan.problems.items():
            log.warning("input %s: %s", name, reason)
        if sources:
            return sources
    media = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in media)
    if not files:
        raise FileNotFoundError(f"input={p}: no video or image file ({', '.join(media)}) in the folder")
    return [Source(str(f)) for f in files]


def _labelled(name: str) -> dict:
    """The acted emotion of a file named as CREMA-D names its clips; nothing for other names."""
    try:
        clip = parse_name(name)
    except ValueError:
        return {}
    return dict(label_name=EMOTION_NAMES[clip.label])


def _probability_columns(rec: Recognizer, probs: np.ndarray | None) -> dict:
    if probs is None:
        return {f"p_{c}": np.nan for c in rec.class_names}
    out = {f"p_{c}": round(float(v), 6) for c, v in zip(rec.class_names, probs)}
    top = int(np.argmax(probs))
    return dict(out, top=rec.class_names[top], top_p=round(float(probs[top]), 6))


def predict_source(rec: Recognizer, source: Source, window: float | None = None, hop: float = 0.5,
                   missing_audio: str = "skip", batch_size: int = 16) -> tuple[dict, list[dict], dict]:
    """One input -> its file row, its window rows, and what the annotation needs.

    A clip no longer than training reads whole (``data.preprocess.max_seconds``, 10 s by default)
    is read whole, exactly as training reads a clip; ``window`` also gives its timeline. A longer
    clip is read in windows (``window`` seconds, 2.5 by default) and its file row is their mean.
    An image model reads every frame (:func:`predict_frames`). Raises :class:`ClipError` with the
    reason a file cannot be used.
    """
    t0 = time.perf_counter()
    rec.check_window(window, hop)
    if rec.images:
        return predict_frames(rec, source, batch_size)
    media = read_media(source.video, source.audio, rec, missing_audio)
    detected = rec.locate(media.frames) if VIDEO in rec.modalities else None
    long = media.seconds > rec.params.max_seconds
    windows: list[dict] = []
    if window or long:
        timeline = Windows(rec, window or LONG_CLIP_WINDOW, hop, media.audio_rate)
        # the stream's own path, fed from memory: frames at their times with their tracked boxes, then the audio
        if VIDEO in rec.modalities:
            for t, frame, box in zip(media.times, media.frames, detected):
                timeline.add_frame(float(t), frame, box)
        if AUDIO in rec.modalities:
            timeline.add_audio(media.audio, media.audio_rate)
        windows = predict_windows(rec, timeline.ready(final=True), batch_size)
    if long:
        good = [w["probs"] for w in windows if "probs" in w]
        if not good:
            raise ClipError(f"no window of the {media.seconds:.1f} s clip could be read: {windows[0].get('error')}")
        probs, basis = np.mean(good, axis=0), f"mean of {len(good)} windows of {window or LONG_CLIP_WINDOW:g} s"
        with_face = int(np.isfinite(detected[:, 0]).sum()) if detected is not None else 0
        audio_notes = audio_io.mono_rate_notes(media.audio.shape[1], media.audio_rate, rec.spec.sample_rate) \
            if media.audio is not None else []
    else:
        item, with_face, audio_notes = clip_input(rec, media.frames, detected, media.audio, media.audio_rate)
        probs, basis = rec.probabilities([item])[0], "whole clip"
    frames = len(media.frames) if media.frames is not None else None
    row = dict(file=source.video, status="ok", reason="", **_labelled(source.name), **_probability_columns(rec, probs),
               frames_with_face=with_face if frames is not None else None, frames=frames,
               duration_s=round(media.seconds, 3), modalities=_modalities_read(rec, media), basis=basis,
               notes="; ".join(audio_notes + media.notes), seconds=round(time.perf_counter() - t0, 3))
    window_rows = [dict(file=source.video, window=i, start=w["start"], end=w["end"],
                        **_probability_columns(rec, w.get("probs")),
                        frames_with_face=w.get("frames_with_face"), frames=w.get("frames"),
                        reason=w.get("error", "")) for i, w in enumerate(windows)]
    annotation = dict(detected=detected, fps=media.fps, times=media.times, windows=window_rows)
    return row, window_rows, annotation


def predict_image(rec: Recognizer, source: Source) -> tuple[list[dict], dict]:
    """An image -> a row per face (the largest first), and what its annotation needs.

    Every face the detector finds is cropped as training cropped its images
    (:func:`~fer_mm.data.media.faces.crop_faces`) and read as a clip of one frame; a model trained
    on face crops (``detect=false``) reads the whole image as one face. A clip model reads each
    face as a still clip (its frames all the same).
    """
    t0 = time.perf_counter()
    if AUDIO in rec.modalities:
        raise ClipError(f"an image, and the model reads {'+'.join(rec.modalities)}: use a video-only model")
    problem = check_media_file(source.video)
    if problem:
        raise ClipError(problem)
    try:
        image = read_gray(source.video)
    except ValueError as err:
        raise ClipError(f"unreadable image: {err}") from err
    notes = ""
    boxes = rec.locate(image[None]) if rec.detector is None else \
        np.asarray(rec.detector(image), dtype=np.float64).reshape(-1, 4)
    if not len(boxes):
        small = image.shape[0] <= 2 * rec.params.face_height and image.shape[1] <= 2 * rec.params.face_width
        if not small:
            raise ClipError("no face found in the image")
        # a face crop already (FER2013's are 48x48): too small for the detector to find the face in it
        boxes, notes = rec.locate(image[None]), "no face found in an image this small: read whole as a face crop"
        faces = np.stack([face_crop(image, rec.params, None)])
    else:
        boxes = boxes[np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")]
        faces = rec.crop(np.broadcast_to(image, (len(boxes), *image.shape)), boxes)
    probs = rec.probabilities([clip_item(face[None], None, rec.spec) for face in faces])
    seconds = round(time.perf_counter() - t0, 3)
    rows = [dict(file=source.video, status="ok", reason="", face=i, box=",".join(str(int(round(v))) for v in box),
                 **_labelled(source.name), **_probability_columns(rec, p), frames_with_face=1, frames=1,
                 modalities=VIDEO, basis=f"face {i + 1} of {len(faces)}", notes=notes, seconds=seconds)
            for i, (box, p) in enumerate(zip(boxes, probs))]
    return rows, dict(image=image, boxes=boxes)


def predict_frames(rec: Recognizer, source: Source, batch_size: int = 64) -> tuple[dict, list[dict], dict]:
    """A video read by an image model: each frame's tracked face predicted on its own; the file row
    is the mean over the frames with a face, the frames are its timeline."""
    t0 = time.perf_counter()
    media = read_media(source.video, None, rec)
    detected = rec.locate(media.frames)
    found = np.flatnonzero(np.isfinite(detected[:, 0]))
    if not len(found):
        raise ClipError("no face found in any frame")
    faces = rec.crop(media.frames[found], detected[found])
    probs = np.concatenate([rec.probabilities([clip_item(f[None], None, rec.spec) for f in faces[i:i + batch_size]])
                            for i in range(0, len(faces), batch_size)])
    row = dict(file=source.video, status="ok", reason="", **_labelled(source.name),
               **_probability_columns(rec, probs.mean(0)), frames_with_face=len(found), frames=len(media.frames),
               duration_s=round(media.seconds, 3), modalities=VIDEO, basis=f"mean of {len(found)} frames",
               notes="; ".join(media.notes), seconds=round(time.perf_counter() - t0, 3))
    times = media.times
    frame_rows = [dict(file=source.video, window=int(i), start=float(times[i]), end=float(times[i]),
                       **_probability_columns(rec, p), frames_with_face=1, frames=1, reason="")
                  for i, p in zip(found, probs)]
    return row, frame_rows, dict(detected=detected, fps=media.fps, times=times, windows=frame_rows)


def _modalities_read(rec: Recognizer, media: Media) -> str:
    """What the model read: its modalities, the audio marked where it was given silence."""
    silenced = any("missing_audio=silence" in note for note in media.notes)
    return "+".join(f"{m}(silence)" if m == AUDIO and silenced else m for m in rec.modalities)


def failed_row(rec: Recognizer, source: Source, reason: str, seconds: float) -> dict:
    return dict(file=source.video, status="failed", reason=reason, **_labelled(source.name),
                **_probability_columns(rec, None), seconds=round(seconds, 3))


def plot_timeline(windows: pd.DataFrame, class_names: list[str], title: str, path: Path) -> Path:
    """Each emotion's probability over the windows' centres."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = (windows["start"] + windows["end"]) / 2
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for name in class_names:
        ax.plot(centre, windows[f"p_{name}"], marker=".", label=name)
    failed = windows[windows[f"p_{class_names[0]}"].isna()]
    for _, w in failed.iterrows():
        ax.axvspan(w["start"], w["end"], color="0.9", zorder=0)
    ax.set(xlabel="time (s), window centre", ylabel="probability", ylim=(0, 1), title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_annotated(source: Source, annotation: dict, rec: Recognizer, path: Path) -> Path:
    """A copy of the video with the tracked face box and the label of the window around each frame."""
    import av
    import cv2

    boxes, _ = face_io.smooth_boxes(annotation["detected"], rec.smooth_frames)
    windows = annotation["windows"]
    centres = np.array([(w["start"] + w["end"]) / 2 for w in windows]) if windows else None
    with av.open(source.video) as src, av.open(str(path), mode="w") as out:
        stream = src.streams.video[0]
        fps = annotation["fps"]
        ostream = out.add_stream("mpeg4", rate=Fraction(fps).limit_denominator(1001))
        ostream.width, ostream.height, ostream.pix_fmt = stream.codec_context.width, stream.codec_context.height, "yuv420p"
        for i, frame in enumerate(src.decode(stream)):
            if i >= len(boxes):
                break
            img = frame.to_ndarray(format="bgr24")
            x, y, w, h = boxes[i].round().astype(int)
            cv2.rectangle(img, (x, y), (x + w, y + h), (0, 220, 0), 2)
            if centres is not None:
                win = windows[int(np.argmin(np.abs(centres - annotation["times"][i])))]
                label = f"{win['top']} {win['top_p']:.2f}" if win.get("top") else win["reason"] or "?"
                cv2.putText(img, label, (x, max(15, y - 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 220, 0), 2)
            for packet in ostream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in ostream.encode():
            out.mux(packet)
    return path


def write_annotated_image(annotation: dict, faces: list[dict], path: Path) -> Path:
    """The image with each face's box and its top emotion."""
    import cv2

    img = cv2.cvtColor(annotation["image"], cv2.COLOR_GRAY2BGR)
    for (x, y, w, h), face in zip(annotation["boxes"].round().astype(int), faces):
        cv2.rectangle(img, (x, y), (x + w, y + h), (0, 220, 0), 2)
        cv2.putText(img, f"{face['top']} {face['top_p']:.2f}", (x, max(15, y - 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (0, 220, 0), 2)
    cv2.imwrite(str(path), img)
    return path


def _columns(rec: Recognizer) -> list[str]:
    """``predictions.csv``'s columns, fixed so that rows can be written as files finish."""
    return ["file", "status", "reason", "face", "box", "label_name", *[f"p_{c}" for c in rec.class_names], "top",
            "top_p", "frames_with_face", "frames", "duration_s", "modalities", "basis", "notes", "seconds"]


class _AppendCsv:
    """Rows appended as they come, so that a stopped run keeps every finished file's row."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        path.unlink(missing_ok=True)

    def add(self, rows: list[dict]) -> None:
        if rows:
            pd.DataFrame(rows).reindex(columns=self.columns).to_csv(
                self.path, mode="a", header=not self.path.exists(), index=False)


def _output_stems(sources: list[Source]) -> list[str]:
    """A distinct name per source for its images and videos (two folders may hold ``a.mp4``)."""
    seen: dict[str, int] = {}
    stems = []
    for source in sources:
        stem = source.name
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


def predict_files(rec: Recognizer, sources: list[Source], output: Path, window: float | None = None,
                  hop: float = 0.5, missing_audio: str = "skip", annotate: bool = False, batch_size: int = 16,
                  progress: bool = True) -> pd.DataFrame:
    """Predict every source; write ``predictions.csv`` / ``.json``, ``windows.csv`` and the timelines.

    Rows are written as each file finishes; one file's failure (reading it, or drawing its
    timeline or annotated copy) is recorded on its row and the others go on.
    """
    from tqdm import tqdm

    if missing_audio not in MISSING_AUDIO:
        raise ValueError(f"missing_audio={missing_audio!r}: use one of {list(MISSING_AUDIO)}")
    rec.check_window(window, hop)
    output.mkdir(parents=True, exist_ok=True)
    window_columns = ["file", "window", "start", "end", *[f"p_{c}" for c in rec.class_names], "top", "top_p",
                      "frames_with_face", "frames", "reason"]
    files, window_csv = _AppendCsv(output / "predictions.csv", _columns(rec)), _AppendCsv(output / "windows.csv",
                                                                                           window_columns)
    rows = []
    for source, stem in tqdm(list(zip(sources, _output_stems(sources))), desc="predicting", unit="file",
                             disable=not progress):
        t0 = time.perf_counter()
        faces: list[dict] = []
        try:
            if is_image(source.video):
                faces, annotation = predict_image(rec, source)
                row, windows = faces[0], []
            else:
                row, windows, annotation = predict_source(rec, source, window, hop, missing_audio, batch_size)
        except ClipError as err:
            log.warning("%s: %s", source.video, err)
            row, windows = failed_row(rec, source, str(err), time.perf_counter() - t0), []
        except Exception as err:  # noqa: BLE001 - an unforeseen defect of one file must not cost the others
            log.warning("%s: failed: %s: %s", source.video, type(err).__name__, err)
            row, windows = failed_row(rec, source, f"failed: {type(err).__name__}: {err}",
                                      time.perf_counter() - t0), []
        drawings = []
        if windows:
            drawings.append(("timeline", lambda: plot_timeline(
                pd.DataFrame(windows), rec.class_names, f"{Path(source.video).name} ({row['modalities']})",
                output / f"{stem}_timeline.png")))
        if annotate and faces:
            drawings.append(("annotated copy", lambda: write_annotated_image(annotation, faces,
                                                                             output / f"{stem}_annotated.png")))
        elif annotate and row["status"] == "ok" and VIDEO in rec.modalities:
            drawings.append(("annotated copy", lambda: write_annotated(source, annotation, rec,
                                                                       output / f"{stem}_annotated.mp4")))
        for what, draw in drawings:
            try:
                draw()
            except Exception as err:  # noqa: BLE001 - the predictions stand without the picture
                log.warning("%s: no %s: %s: %s", source.video, what, type(err).__name__, err)
                row["notes"] = "; ".join(filter(None, [row.get("notes"), f"no {what}: {err}"]))
        rows += faces or [row]
        files.add(faces or [row])
        window_csv.add(windows)
    table = pd.read_csv(files.path, keep_default_na=True) if files.path.exists() else pd.DataFrame(columns=_columns(rec))
    summary = dict(model=rec.describe(), window=window, hop=hop, missing_audio=missing_audio,
                   files=len(sources), succeeded=int(table.loc[table["status"] == "ok", "file"].nunique()),
                   rows=json.loads(table.to_json(orient="records")))
    (output / "predictions.json").write_text(json.dumps(summary, indent=2) + "\n")
    return table


def is_live(input_: str) -> bool:
    from fer_mm.stream import is_stream_address

    return is_stream_address(input_)


def run(cfg) -> int:
    """The command: 0 when at least one file (or the stream) gave a prediction, 1 otherwise."""
    output = Path(cfg.output)
    rec = Recognizer(cfg.checkpoint, runtime=cfg.runtime, device=cfg.device, detector=cfg.detector,
                     detector_kwargs=cfg.detector_kwargs)
    rec.check_window(cfg.window, cfg.hop)
    if cfg.missing_audio not in MISSING_AUDIO:
        raise ValueError(f"missing_audio={cfg.missing_audio!r}: use one of {list(MISSING_AUDIO)}")
    if is_live(str(cfg.input)) or cfg.realtime:
        from fer_mm.stream import open_source, run_stream

        source = open_source(str(cfg.input), realtime=cfg.realtime, mic=cfg.mic, need_audio=AUDIO in rec.modalities,
                             missing_audio=cfg.missing_audio)
        windows = run_stream(rec, source, cfg.window or LONG_CLIP_WINDOW, cfg.hop, output, show=cfg.show,
                             max_windows=cfg.max_windows)
        return 0 if any("top" in w for w in windows) else 1
    table = predict_files(rec, find_inputs(cfg.input), output, cfg.window, cfg.hop, cfg.missing_audio,
                          cfg.annotate, cfg.batch_size, cfg.progress)
    ok = table[table["status"] == "ok"]
    print(f"\n{ok['file'].nunique()} of {table['file'].nunique()} files predicted ({'+'.join(rec.modalities)}, {rec.runtime}); "
          f"results: {output / 'predictions.csv'}")
    for _, r in table.iterrows():
        face = f" face {int(r['face'])}" if pd.notna(r.get("face")) else ""
        print(f"  {Path(r['file']).name}{face}: " + (f"{r['top']} {r['top_p']:.2f}  ({r['basis']})"
                                                 if r["status"] == "ok" else f"FAILED: {r['reason']}"))
    return 0 if len(ok) else 1


def main() -> None:
    import hydra

    from fer_mm.runs import register_resolvers

    register_resolvers()

    @hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
    def _main(cfg) -> None:
        code = run(cfg)
        if code:
            raise SystemExit(code)

    _main()


if __name__ == "__main__":
    main()
