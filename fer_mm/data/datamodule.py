"""LightningDataModules: a cache, read through a speaker-independent protocol.

They deliver raw clip tensors (see :mod:`fer_mm.data.clips`); what the network takes is decided
by the model side, whose :class:`~fer_mm.data.clips.ClipSpec` is passed in as ``clip_spec``.
:class:`CremaDDataModule` reads CREMA-D's clips, :class:`ImageDataModule` face image sets
(FER2013, CK+, a folder per class), cached as clips of one frame; both go through
:class:`FaceDataModule`. Besides the emotion ``label``, a batch carries the targets of the
model's other tasks (``targets``: gender, age, action units; see :mod:`fer_mm.data.targets`).
"""

from __future__ import annotations

import fcntl
import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from fer_mm.data import targets as targets_io
from fer_mm.data.cache import ClipCache, PreprocessParams, cache_path
from fer_mm.data.preprocessing import build_cache
from fer_mm.data.clips import SHARED_CLIPS, ClipSpec, ResidentClips, ResidentLoader, clip_item
from fer_mm.data.images import ImagePreprocessParams, build_image_cache, class_names, generate_twin, twin_folder
from fer_mm.data.sources.folders import folder_layout
from fer_mm.data.protocols import LeaveOneSubjectOut, Split
from fer_mm.data.twins import crema_d as crema_d_twin
from fer_mm.data.twins.spec import read_spec
from fer_mm.data.sources.crema_d import DEMOGRAPHICS_FILE
from fer_mm.vocab import AUDIO, CREMA_D, CREMA_D_TWIN, EMOTION_NAMES, IMAGE_LABEL_SOURCES, LABEL_SOURCE

log = logging.getLogger(__name__)
LOADERS = ("resident", "workers")
SAMPLE_KEYS = ("frames", "sample_rate", "audio", "num_classes")  # what a data config's ``samples`` declares


class ClipDataset(Dataset):
    """Cached clips as raw tensors, one clip per item (:func:`~fer_mm.data.clips.clip_item`),
    with ``label``, ``index`` (row in the cache) and the other tasks' ``targets`` (arrays by cache
    row). ``train`` jitters the frames."""

    def __init__(self, cache: ClipCache, rows, spec: ClipSpec, train: bool, temporal_jitter: bool = True,
                 targets: dict[str, np.ndarray] | None = None):
        self.cache, self.rows, self.spec, self.train = cache, np.asarray(rows), spec, train
        self.temporal_jitter = temporal_jitter
        self.labels = cache.clips["label"].to_numpy()
        self.targets = targets or {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = int(self.rows[i])
        # drawn from torch's generator, which Lightning seeds per worker: runs are repeatable
        jitter = self.train and self.temporal_jitter
        rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,)))) if jitter else None
        item = clip_item(self.cache.video(row), self.cache.audio(row), self.spec, rng)
        extra = {k: torch.as_tensor(v[row]) for k, v in self.targets.items()}
        return dict(item, label=int(self.labels[row]), index=row, **extra)


class FaceDataModule(pl.LightningDataModule):
    """A cache -> protocol split -> batches of raw clip tensors. Subclasses make the cache
    (:meth:`_prepare`, :meth:`cache_location`) and name the dataset and its classes.

    Args:
        cache_dir: where preprocessing caches live.
        protocol: how the data is split; ``fold`` picks its fold.
        clip_spec: what the model needs from each clip (its ``ModelInputs.clip_spec``); only
            preparing the cache works without it.
        targets: the model's other tasks (``{"gender": ..., "age": ..., "au": [ids]}``): their
            targets go into every batch.
        temporal_jitter: jitter the sampled frames in training.
        loader: ``resident`` (the cache held in device memory, batches gathered with tensor
            ops, no worker processes) or ``workers`` (a DataLoader, one clip per item).
        resident_memory: ``auto``, ``device`` or ``host`` (see :class:`ResidentClips`).
        batch_size, num_workers: batches; ``num_workers`` is for ``loader=workers``.
        preprocess_workers: processes for preprocessing (0: all cores).
        samples: what the config declares each sample is (``frames``, ``sample_rate``, ``audio``,
            ``num_classes``; the model's inputs copy it); subclasses refuse a declaration their
            cache would contradict (:meth:`check_samples`).
    """

    def __init__(self, cache_dir: str, protocol=None, fold: int = 0, clip_spec: ClipSpec | None = None,
                 targets: dict | None = None, temporal_jitter: bool = True, loader: str = "resident",
                 resident_memory: str = "auto", batch_size: int = 32, num_workers: int = 0,
                 preprocess_workers: int = 0, progress: bool = True, samples: dict | None = None):
        super().__init__()
        if loader not in LOADERS:
            raise ValueError(f"data.loader={loader!r}: use one of {list(LOADERS)}")
        unknown = set(samples or {}) - set(SAMPLE_KEYS)
        if unknown:
            raise ValueError(f"data.samples.{sorted(unknown)[0]} is not a setting: use {', '.join(SAMPLE_KEYS)}")
        self.samples = dict(samples or {})
        self.cache_dir = Path(cache_dir)
        if isinstance(clip_spec, dict):  # Hydra's instantiate passes dataclass arguments on as dicts
            clip_spec = ClipSpec(**clip_spec)
        self.protocol, self.fold, self.clip_spec = protocol or LeaveOneSubjectOut(), int(fold), clip_spec
        self.targets = dict(targets or {})
        self.temporal_jitter, self.loader, self.resident_memory = temporal_jitter, loader, resident_memory
        self.batch_size, self.num_workers = batch_size, num_workers
        self.preprocess_workers, self.progress = preprocess_workers, progress
        self.cache: ClipCache | None = None
        self.split: Split | None = None
        self.target_arrays: dict[str, np.ndarray] = {}
        self._resident: ResidentClips | None = None
        self.device = torch.device("cpu")  # where batches are made without a trainer (folds trained together)
        self.upload_seconds = 0.0  # loading the resident cache, in this datamodule (0: another fold's served)

    # what a dataset says about itself
    class_names: tuple[str, ...] = EMOTION_NAMES
    dataset_id: str = CREMA_D
    label_source: str = LABEL_SOURCE

    @property
    def twin_spec(self) -> dict | None:
        """How the twin under ``root`` was generated (its ``SYNTHETIC.json``); None for real data."""
        return read_spec(self.root)

    @property
    def subject_independent(self) -> bool | None:
        """Whether no subject is in two parts of the split: True for the subject protocols over
        real subject ids; None where the data has no subject ids to tell (FER2013)."""
        return True

    def cache_location(self) -> Path:
        raise NotImplementedError

    def _prepare(self) -> ClipCache:
        raise NotImplementedError

    def check_clip_spec(self) -> None:
        """Refuse a model that needs what the data cannot give, naming the key."""

    def sample_facts(self) -> dict:
        """What each cached sample is, in ``data.samples``' keys (``frames`` only where it is fixed)."""
        raise NotImplementedError

    def check_samples(self) -> None:
        """Refuse a ``data.samples`` that the cache contradicts (its preprocessing and label set say what
        it holds): the model copies that declaration, so a wrong one builds a model for other data."""
        for key, actual in self.sample_facts().items():
            declared = self.samples.get(key, actual)
            if declared != actual:
                raise ValueError(f"data.samples.{key}={declared}, but the cache of this data holds {key}={actual}: "
                                 f"leave data.samples.{key} as its data config declares it")

    def demographics(self):
        """The subjects' sex and age by ``actor`` id, where the data has them (None otherwise)."""
        return None

    def train_weights(self) -> np.ndarray | None:
        """Each training row's sampling weight (None: every row once per epoch, shuffled)."""
        return None

    def record_fields(self) -> dict:
        """What a run's record says about this data beyond the common fields (none here)."""
        return {}

    def state_dict(self) -> dict:
        """Saved in every checkpoint (Lightning calls it): how faces and waveforms were made and what
        the classes are, so that inference on a new video prepares it exactly as training did."""
        return dict(preprocess=asdict(self.params), class_names=list(self.class_names))

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing to restore on resume: the config rebuilds the same datamodule."""

    # disk work: runs once per node
    def prepare_data(self) -> ClipCache:
        # folds of a parallel sweep share the data: one process prepares, the others wait
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".prepare.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.clip_spec is None:
            raise ValueError("the datamodule needs clip_spec (the model's ModelInputs.clip_spec) to make batches")
        self.check_clip_spec()
        if self.cache is None:
            self.cache = ClipCache(self.cache_location())
        clips = self.cache.clips
        self.split, self.rows = self.protocol.assign(clips, self.fold)
        for part, rows in self.rows.items():
            if len(rows) == 0:
                raise ValueError(f"fold {self.fold}: the {part} part has no clips (actors {getattr(self.split, part)})")
        self.target_arrays = targets_io.target_arrays(clips, self.targets, self.demographics(), self.dataset_id)

    def dataset(self, part: str) -> ClipDataset:
        return ClipDataset(self.cache, self.rows[part], self.clip_spec, part == "train", self.temporal_jitter,
                           self.target_arrays)

    def resident(self) -> ResidentClips:
        """The cache in memory on the trainer's device: loaded once per process, and shared by the folds
        that run in it (:data:`~fer_mm.data.clips.SHARED_CLIPS`); ``upload_seconds`` times the loading."""
        device = self.trainer.strategy.root_device if self.trainer is not None else self.device
        if self._resident is None or self._resident.device != device:
            self._resident = SHARED_CLIPS.get(self.cache, self.clip_spec, device, self.resident_memory,
                                              self.target_arrays)
            self.upload_seconds = SHARED_CLIPS.upload_seconds
        return self._resident

    def _loader(self, part: str):
        train = part == "train"
        if self.loader == "resident":
            seed = None  # drawn by the loader from torch's generator
            if train and self.trainer is not None and self.trainer.world_size > 1:
                # every process draws the same order: rank 0's seed (each draws one, keeping torch's generators alike)
                seed = self.trainer.strategy.broadcast(int(torch.randint(2**62, (1,))), src=0)
            return ResidentLoader(self.resident(), self.rows[part], self.batch_size, train,
                                  jitter=train and self.temporal_jitter, seed=seed,
                                  weights=self.train_weights() if train else None)
        weights = self.train_weights() if train else None
        sampler = WeightedRandomSampler(weights, len(weights)) if weights is not None else None
        return DataLoader(self.dataset(part), batch_size=self.batch_size, shuffle=train and sampler is None,
                          sampler=sampler, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self):
        return self._loader("train")

    def val_dataloader(self):
        return self._loader("val")

    def test_dataloader(self):
        return self._loader("test")

    def predict_dataloader(self):
        return self._loader("test")


class CremaDDataModule(FaceDataModule):
    """CREMA-D (or its synthetic twin) -> cache -> protocol split -> batches of raw clip tensors.

    Args:
        root: CREMA-D root (holds ``VideoFlash/``, ``AudioWAV/``, ``VideoDemographics.csv``).
        synthetic: twin parameters (``actors``, ``sentences``, ``seed``, ``difficulty``); when set,
            the twin is generated (or finished) under ``root`` first, and a root that holds another
            twin is refused. ``None`` for real data.
        preprocess: :class:`PreprocessParams` fields.
        The other arguments: :class:`FaceDataModule`'s.
    """

    def __init__(self, root: str, cache_dir: str, synthetic: dict | None = None, preprocess: dict | None = None,
                 **kwargs):
        super().__init__(cache_dir, **kwargs)
        self.root, self.synthetic = Path(root), synthetic
        self.params = PreprocessParams(**(preprocess or {}))
        self.check_samples()

    @property
    def dataset_id(self) -> str:
        return CREMA_D_TWIN if self.twin_spec is not None else CREMA_D

    def cache_location(self) -> Path:
        return cache_path(self.root, self.cache_dir, self.params)

    def demographics(self):
        return targets_io.read_subjects(self.root / DEMOGRAPHICS_FILE)

    def sample_facts(self) -> dict:
        # no fixed frame count: the model picks its T from each clip's frames
        return dict(sample_rate=self.params.sample_rate, audio=True, num_classes=len(self.class_names))

    def _prepare(self) -> ClipCache:
        if self.synthetic:
            # every time: it finishes an interrupted twin and refuses a root that holds another one
            log.info("synthetic CREMA-D twin in %s", self.root)
            crema_d_twin.generate(self.root, n_actors=self.synthetic["actors"], n_sentences=self.synthetic["sentences"],
                                  seed=self.synthetic["seed"], difficulty=self.synthetic["difficulty"],
                                  workers=self.preprocess_workers, progress=self.progress)
        return build_cache(self.root, self.cache_dir, self.params, workers=self.preprocess_workers,
                           progress=self.progress)

    def check_clip_spec(self) -> None:
        if self.clip_spec.sample_rate != self.params.sample_rate:
            raise ValueError(f"model.inputs.sample_rate={self.clip_spec.sample_rate} differs from the cache's "
                             f"data.preprocess.sample_rate={self.params.sample_rate}")


class ImageDataModule(FaceDataModule):
    """A face image set (FER2013, CK+ or a folder per class) -> cache -> protocol split -> batches.

    Each image is a clip of one frame without audio, so a model reads it with
    ``model.inputs.frames=1`` and video only (its data config's ``samples``, which the model copies).

    Args:
        root: the set's folder in its released layout (see :mod:`fer_mm.data.images`); ``None``:
            its synthetic twin, made under ``twin_dir`` from ``synthetic`` (FER2013, CK+, UTKFace
            and IMDB-WIKI).
        twin_dir: where twins are made, one folder per set of ``synthetic`` parameters.
        synthetic: the twin's parameters (see :mod:`fer_mm.data.twins.images`); read only when
            ``root`` is None.
        preprocess: :class:`~fer_mm.data.images.ImagePreprocessParams` fields (``format`` first).
        The other arguments: :class:`FaceDataModule`'s.
    """

    def __init__(self, root: str | None, cache_dir: str, twin_dir: str | None = None, synthetic: dict | None = None,
                 preprocess: dict | None = None, **kwargs):
        super().__init__(cache_dir, **kwargs)
        self.params = ImagePreprocessParams(**(preprocess or {}))
        if self.params.format == "image_folder" and not self.params.classes and root is not None:
            # the classes as found now, in the cache's key: a class folder added later makes a new
            # cache rather than shifting the labels of the old one
            self.params = replace(self.params, classes=folder_layout(root)[1])
        self.synthetic = dict(synthetic or {}) if root is None else None
        if root is None:
            if self.params.format == "image_folder" or not twin_dir:
                raise ValueError(f"data.root is not set: data={self.params.format} needs the folder of the images")
            root = Path(twin_dir) / twin_folder(self.params.format, self.synthetic)
        self.root = Path(root)
        self.check_samples()

    @property
    def dataset_id(self) -> str:
        return self.params.format + ("_twin" if self.twin_spec is not None else "")

    @property
    def class_names(self) -> tuple[str, ...]:
        return class_names(self.root, self.params)

    @property
    def label_source(self) -> str:
        return IMAGE_LABEL_SOURCES[self.params.format]

    @property
    def subject_independent(self) -> bool | None:
        if self.split is None:
            return None
        if self.params.format in ("fer2013", "utkface"):
            return None  # no subject ids
        if self.params.format == "image_folder" and not self.params.subject_pattern:
            return False  # each image its own subject: a person's images may be in two parts
        parts = [set(getattr(self.split, p)) for p in ("train", "val", "test")]
        return not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])

    def cache_location(self) -> Path:
        return cache_path(self.root, self.cache_dir, self.params)

    def sample_facts(self) -> dict:
        return dict(frames=1, sample_rate=None, audio=False, num_classes=len(self.class_names))

    def _prepare(self) -> ClipCache:
        if self.synthetic is not None:
            log.info("synthetic %s twin in %s", self.params.format, self.root)
            generate_twin(self.params.format, self.root, self.synthetic, workers=self.preprocess_workers,
                          progress=self.progress)
        if self.params.format == "image_folder" and not self.params.subject_pattern:
            log.warning("data=image_folder without data.preprocess.subject_pattern: every image counts as its own "
                        "subject, so one person's images can be in training and test (runs record it)")
        return build_image_cache(self.root, self.cache_dir, self.params, workers=self.preprocess_workers,
                                 progress=self.progress)

    def check_clip_spec(self) -> None:
        if AUDIO in self.clip_spec.modalities:
            raise ValueError(f"data={self.params.format} holds face images, no audio: use a video-only model "
                             f"(model.net.modalities=[video])")
        if self.clip_spec.frames != 1:
            raise ValueError(f"model.inputs.frames={self.clip_spec.frames}, but data={self.params.format} holds single "
                             f"images: set model.inputs.frames=1")
