"""A trained model loaded from its checkpoint or exported ONNX file, with what reads a new clip for
it: the preprocessing it was trained with, its inputs, its face detectors and the backend that runs it.

A checkpoint is read as training writes it: ``hyper_parameters`` (``net``, ``inputs``, ``tasks``: the
gender and age heads it reads, :mod:`fer_mm.inference.readings`),
``state_dict``, and the datamodule's state (``CremaDDataModule``, ``ImageDataModule`` or ``MixedDataModule``:
``preprocess``, ``class_names``). An exported model carries the same in its metadata
(:data:`ONNX_METADATA_KEY`, written by :mod:`fer_mm.inference.export`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.utils.data import default_collate

from fer_mm.data.cache import PreprocessParams
from fer_mm.data.media import faces as face_io
from fer_mm.data.images import ImagePreprocessParams, face_crop
from fer_mm.inference.readings import network_outputs, read_outputs, read_tasks
from fer_mm.models.inputs import ModelInputs
from fer_mm.models.multitask import age_groups
from fer_mm.system import EmotionSystem
from fer_mm.vocab import EMOTION_NAMES, VIDEO

log = logging.getLogger("fer_mm.predict")  # the predict command's log, where its lines have always been

RUNTIMES = ("torch", "onnx")
ONNX_METADATA_KEY = "fer_mm"  # the exported model's metadata: what rebuilds its inputs and preprocessing


class ClipError(ValueError):
    """Why one input cannot be predicted; it is reported and the other inputs go on."""


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


def read_checkpoint(path: Path) -> dict:
    """What a fer-mm checkpoint holds, loaded as weights only: a checkpoint is data, never code to run."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        # torch's own advice (weights_only=False) would run whatever the file holds: not offered
        raise ValueError(f"checkpoint={path}: not a readable fer-mm checkpoint ({type(err).__name__}; "
                         f"a damaged or foreign file: fer-mm loads checkpoints as weights only)") from err
    if "net" not in (saved.get("hyper_parameters") or {}):
        raise ValueError(f"checkpoint={path} was not written by fer-mm's training (no model hyper-parameters)")
    return saved


def _run_preprocess(path: Path) -> dict | None:
    """The preprocessing of a checkpoint saved before checkpoints carried it: its run's config.yaml."""
    config = path.parent.parent / "config.yaml"
    if config.is_file():
        preprocess = OmegaConf.load(config).get("data", {}).get("preprocess")
        if preprocess is not None:
            return OmegaConf.to_container(preprocess, resolve=True)
    return None


def _onnx_session(path: Path, device: torch.device):
    """An ONNX Runtime session of an exported model, and the metadata fer-mm wrote into it."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError("runtime=onnx needs ONNX Runtime: pip install -e '.[onnx]'") from err
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint={path}: no such file (export one with python -m fer_mm.export)")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.type == "cuda" \
        else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), providers=providers)
    meta = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
    if meta is None:
        raise ValueError(f"checkpoint={path}: an ONNX model without fer-mm's metadata (export it with "
                         f"python -m fer_mm.export)")
    return session, json.loads(meta)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class TrainedModel:
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
        load = self._load_onnx if runtime == "onnx" else self._load_checkpoint
        inputs, preprocess, class_names = load(checkpoint)
        self.inputs.eval().to(self.device)
        self.inputs_config = dict(inputs)
        self.class_names = list(class_names)  # empty for a model without an emotion classifier
        self.age_groups = age_groups(self.tasks.get("age"))  # None: age is a regression, or not read
        self._set_preprocessing(preprocess, detector, detector_kwargs)
        self.spec = self.inputs.clip_spec
        self.modalities = self.spec.modalities
        if not self.images and self.spec.sample_rate != self.params.sample_rate:
            raise ValueError(f"the model reads {self.spec.sample_rate} Hz audio but was preprocessed at "
                             f"{self.params.sample_rate} Hz")
        self.detectors = self._load_detectors(detector_threads)
        self.detector = self.detectors[0] if self.detectors else None

    def _load_onnx(self, checkpoint: str | Path) -> tuple[dict, dict, list[str]]:
        """An exported model: ONNX Runtime runs its network, its metadata rebuilds the inputs.
        Returns the inputs' settings, the preprocessing and the class names."""
        self.checkpoint = Path(checkpoint)
        self.session, meta = _onnx_session(self.checkpoint, self.device)
        self.net, self.net_config = None, meta.get("net", {})
        # exported before the task heads were: the emotion logits alone
        self.tasks, self.onnx_outputs = read_tasks(meta.get("tasks")), meta.get("outputs", {"emotion": "logits"})
        inputs, preprocess, class_names = meta["inputs"], meta["preprocess"], meta["class_names"]
        self.inputs = ModelInputs(meta["modalities"], **inputs)
        return inputs, preprocess, class_names

    def _load_checkpoint(self, checkpoint: str | Path) -> tuple[dict, dict | None, list[str]]:
        """A training checkpoint: its system rebuilt from its hyper-parameters, with its weights, on
        the device. Returns the inputs' settings, the preprocessing (None: not recorded) and the
        class names."""
        self.checkpoint = resolve_checkpoint(checkpoint)
        if self.checkpoint.suffix == ".onnx":
            raise ValueError(f"checkpoint={checkpoint} is an exported ONNX model: add runtime=onnx")
        saved = read_checkpoint(self.checkpoint)
        hparams = saved["hyper_parameters"]
        # the ImageNet file a transfer run started from is not needed (nor perhaps present) here:
        # every weight is in the checkpoint
        net = {k: v for k, v in hparams["net"].items() if k != "pretrained"}
        # aux_weight builds the unimodal heads whose weights the checkpoint holds (inference reads the fused output)
        system = EmotionSystem(net=net, inputs=hparams.get("inputs"), tasks=hparams.get("tasks"),
                               aux_weight=hparams.get("aux_weight", 0.0))
        system.load_state_dict(saved["state_dict"])
        system.eval().to(self.device)
        self.net, self.inputs, self.net_config = system.net, system.inputs, dict(hparams["net"])
        self.tasks, self.onnx_outputs = read_tasks(hparams.get("tasks")), {}
        # the datamodule's state, saved under its class name (CremaDDataModule, ImageDataModule, MixedDataModule)
        data_state = next((v for k, v in saved.items() if k.endswith("DataModule") and isinstance(v, dict)), {})
        preprocess = data_state.get("preprocess") or _run_preprocess(self.checkpoint)
        if preprocess is None:
            log.warning("%s does not say how its faces were cropped (an older checkpoint outside its run "
                        "folder): using the default preprocessing", self.checkpoint)
        class_names = data_state.get("class_names") or list(EMOTION_NAMES[: system.num_classes])
        return hparams.get("inputs") or {}, preprocess, class_names

    def _set_preprocessing(self, preprocess: dict | None, detector: str | None, detector_kwargs: dict | None) -> None:
        """The preprocessing the model was trained with, and the one used here: the same, or with
        another face detector."""
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

    def _load_detectors(self, threads: int) -> list:
        """The face detectors, none for a model that reads no video or was trained on face crops."""
        if VIDEO not in self.modalities or not getattr(self.params, "detect", True):
            return []
        # built and tried once, so that a broken detector stops before the first file; one instance
        # per core, as files' frames are searched in parallel (a stream takes one frame at a time)
        try:
            first = self._detector()
        except face_io.DetectorError as err:
            if self.params == self.trained_preprocess:
                raise
            raise ValueError(f"detector={self.params.detector}: {err}") from err
        parallel = getattr(type(first), "parallel_frames", False)
        threads = threads or (_cores() if parallel else 1)
        return [first] + [self._detector() for _ in range(threads - 1)]

    def _detector(self) -> face_io.FaceDetector:
        return face_io.make_detector(self.params.detector, **self.params.detector_kwargs)

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

    def tracker(self) -> face_io.FaceTracker | None:
        """A face tracker for frames that arrive one at a time (None: the whole frame is the face)."""
        return face_io.FaceTracker(self.detector) if self.detector is not None else None

    def smoothed_boxes(self, detected: np.ndarray) -> tuple[np.ndarray, int]:
        """The tracked boxes smoothed as training smooths them, and how many frames had none; a
        :class:`ClipError` when no frame has a face."""
        try:
            return face_io.smooth_boxes(detected, self.smooth_frames)
        except face_io.NoFaceError as err:
            raise ClipError(str(err)) from err

    def crop(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """The faces ``[N, face_height, face_width]`` of ``frames`` in their ``boxes``, as training
        cropped them; whole frames resized for a model trained on face crops."""
        if self.detector is None:
            return np.stack([face_crop(frame, self.params, None) for frame in frames])
        return face_io.crop_faces(frames, boxes, self.params.face_height, self.params.face_width)

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
        """Clip items (:func:`~fer_mm.data.clips.clip_item`) -> the network's input tensors, as in evaluation."""
        batch = {k: v.to(self.device) for k, v in default_collate(items).items()}
        with torch.inference_mode():
            return self.inputs(batch, augment=False)

    def network_outputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The network's outputs by task (:func:`~fer_mm.inference.readings.network_outputs`): the
        checkpoint's network, or the exported model's outputs under their tasks' names."""
        if self.session is not None:
            feeds = {name: inputs[name].cpu().numpy() for name in self.modalities}
            tasks = list(self.onnx_outputs)
            results = self.session.run([self.onnx_outputs[t] for t in tasks], feeds)
            return {t: torch.from_numpy(r) for t, r in zip(tasks, results)}
        with torch.inference_mode():
            return network_outputs(self.net, **inputs)

    def logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The emotion logits ``[B, classes]`` of the network's inputs."""
        return self.network_outputs(inputs)["emotion"]

    def readings(self, items: list[dict]) -> dict[str, np.ndarray]:
        """What the model reads of clip items: ``emotion`` probabilities ``[N, classes]`` (where the
        model has emotion classes), ``p_male`` ``[N]`` (a gender head), ``age`` ``[N]`` in years (an
        age head: the regression's value, or with age groups the probability-weighted mean of the
        groups' centres) and ``age_group_probs`` ``[N, groups]`` (age groups);
        see :mod:`fer_mm.inference.readings`."""
        return read_outputs(self.network_outputs(self.network_inputs(items)), self.class_names, self.age_groups)

    @property
    def reads(self) -> list[str]:
        """The readings this model gives (the keys of :meth:`readings`)."""
        names = ["emotion"] if self.class_names else []
        if "gender" in self.tasks:
            names.append("p_male")
        if "age" in self.tasks:
            names += ["age"] + (["age_group_probs"] if self.age_groups is not None else [])
        return names

    def describe(self) -> dict:
        return dict(checkpoint=str(self.checkpoint), runtime=self.runtime, device=str(self.device),
                    modalities=list(self.modalities), class_names=self.class_names, tasks=self.tasks,
                    preprocess=self.params.__dict__, detector_as_trained=self.params == self.trained_preprocess)
