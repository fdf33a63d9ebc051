"""Face image sets (FER2013, CK+, a folder per class; UTKFace and IMDB-WIKI, which label gender and
age) -> the cache CREMA-D's clips go into.

An image is cached as a clip of one frame and no audio: the same ``clips.csv``, ``video.u8``
and report (see :mod:`fer_mm.data.cache`), so the datamodule, the protocols, training, the
report and inference read image sets as they read CREMA-D. Besides CREMA-D's columns, an image
cache's ``clips.csv`` holds ``part`` (the released split, where a set has one: FER2013's Usage,
a folder set's ``train/``, ``val/``, ``test/``) and ``aus`` (the action units at that image,
``1+2+5``; empty: none; ``?``: not coded). UTKFace's and IMDB-WIKI's caches also hold each image's
``gender``, ``age``, ``race`` and ``box`` (the release's face box), and their ``label`` is -1: they
label no emotion.

A face is found by the configured detector (the largest one in the image) and cropped as
video frames are (:func:`~fer_mm.data.media.faces.crop_faces`); FER2013's images are face crops
already and are only resized.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import re
from dataclasses import asdict, dataclass, field
from typing import ClassVar
from pathlib import Path

import cv2
import numpy as np

from fer_mm.data.cache import (ClipCache, PreprocessError, SampleSource, cache_path, finish_cache, params_key,
                               versions)
from fer_mm.data.media.faces import DEFAULT_DETECTOR, FaceDetector, NoFaceError, crop_faces, make_detector, track_faces
from fer_mm.data.preprocessing import build_cache, check_media_file
from fer_mm.data.media.faces import crop_faces as crop_boxes
from fer_mm.data.sources import ckplus, fer2013, imdb_wiki, utkface
from fer_mm.data.sources.folders import folder_layout, scan_image_folder
from fer_mm.data.twins import attributes as utkface_twin, images as image_twins, imdb_wiki as imdb_wiki_twin

log = logging.getLogger(__name__)

FORMATS = ("fer2013", "ckplus", "image_folder", "utkface", "imdb_wiki")
ATTRIBUTE_FORMATS = ("utkface", "imdb_wiki")  # gender and age per image, no emotion
COLUMNS = ("name", "actor", "sentence", "emotion", "level", "label", "part", "aus")
ATTRIBUTE_COLUMNS = (*COLUMNS, "gender", "age", "race", "box")


@dataclass(frozen=True)
class ImagePreprocessParams:
    """Everything that changes an image cache's content (hashed into its folder name).

    Args:
        format: ``fer2013``, ``ckplus`` or ``image_folder``.
        face_height, face_width: the cached face's size.
        detect: find and crop the face (false: the images are face crops already and are resized
            whole; FER2013's always are).
        detector, detector_kwargs: as for CREMA-D (``haar``, ``yunet`` or ``package.module:Class``).
        peak_frames: CK+: the last frames of a labelled sequence that take its emotion.
        neutral_first: CK+: the first frame of a labelled sequence is a neutral sample.
        classes: a folder set's class folders, in label order (default: the folder names, sorted).
        subject_pattern: a folder set's subject id: a regular expression searched in each file's
            name, its first group (or the group ``subject``) the id. Without it each image counts
            as its own subject, and the run says that its folds are not subject-independent.
        release_boxes: UTKFace (in-the-wild parts: its landmarks' box) and IMDB-WIKI
            (``face_location``): crop each face from the release's box where it has one, else as
            ``detect`` says.
        layout: UTKFace: ``UTKFace``, ``crop_part1`` or ``wild`` (``part1-3`` with their landmark
            lists); None: the first of them found.
        sets: IMDB-WIKI: ``[imdb]``, ``[wiki]`` or both (None: those found).
        min_face_score, drop_second_face, min_age, max_age: IMDB-WIKI's filters: the release's
            face detector's score at least ``min_face_score``, no second face, an age in range.

    The fields after ``subject_pattern`` enter the cache's key only where they differ from their
    defaults, so the caches of the other formats keep their keys.
    """

    format: str = "image_folder"
    face_height: int = 48
    face_width: int = 48
    detect: bool = True
    detector: str = DEFAULT_DETECTOR
    detector_kwargs: dict = field(default_factory=dict)
    peak_frames: int = 3
    neutral_first: bool = True
    classes: tuple | None = None
    subject_pattern: str | None = None
    release_boxes: bool = True
    layout: str | None = None
    sets: tuple | None = None
    min_face_score: float = 1.0
    drop_second_face: bool = True
    min_age: float = 0.0
    max_age: float = 100.0
    decoders: ClassVar[tuple[str, ...]] = ("opencv",)  # images are read and resized by OpenCV alone
    optional_fields: ClassVar[tuple[str, ...]] = ("release_boxes", "layout", "sets", "min_face_score",
                                                  "drop_second_face", "min_age", "max_age")

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"data.preprocess.format={self.format!r}: use one of {list(FORMATS)}")
        if self.peak_frames < 1:
            raise ValueError(f"data.preprocess.peak_frames must be at least 1, got {self.peak_frames}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        if self.sets is not None:
            object.__setattr__(self, "sets", tuple(self.sets))
        if self.layout is not None and self.layout not in utkface.LAYOUTS:
            raise ValueError(f"data.preprocess.layout={self.layout!r}: use one of {list(utkface.LAYOUTS)} or null")
        unknown = sorted(set(self.sets or ()) - set(imdb_wiki.SETS))
        if unknown:
            raise ValueError(f"data.preprocess.sets: {unknown[0]!r} is not a set of IMDB-WIKI; use {list(imdb_wiki.SETS)}")
        if self.subject_pattern is not None:
            try:
                re.compile(self.subject_pattern)
            except re.error as err:
                raise ValueError(f"data.preprocess.subject_pattern={self.subject_pattern!r}: {err}") from None

    def key(self, root: Path) -> str:
        return params_key(self, root)


def read_gray(path: str) -> np.ndarray:
    """An image file as 8-bit grayscale (colour, alpha and 16-bit images are converted)."""
    data = np.fromfile(path, dtype=np.uint8)  # cv2.imread fails silently on some non-ASCII paths
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if len(data) else None
    if image is None:
        raise ValueError("not an image OpenCV can decode" if len(data) else "empty file")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    return image


def face_crop(image: np.ndarray, p: ImagePreprocessParams, detector: FaceDetector | None) -> np.ndarray:
    """The face of one grayscale image, ``[face_height, face_width]`` uint8 (the whole image without
    ``detector``). Raises :class:`~fer_mm.data.media.faces.NoFaceError` where the detector finds none."""
    if detector is None:
        return cv2.resize(image, (p.face_width, p.face_height), interpolation=cv2.INTER_AREA)
    boxes, _ = track_faces(image[None], detector, smooth_frames=1)
    return crop_faces(image[None], boxes, p.face_height, p.face_width)[0]


def process_image(args: tuple) -> dict:
    """One image's face, as :func:`~fer_mm.data.preprocessing.process_clip` gives a clip's (or ``{"skip": reason}``);
    cropped from the release's ``box`` (``x,y,w,h``) where one is given and ``release_boxes`` is on."""
    name, path, params, box = args
    try:
        p = ImagePreprocessParams(**params)
        problem = check_media_file(path)
        if problem:
            return dict(name=name, skip=problem)
        try:
            image = read_gray(path)
        except ValueError as err:
            return dict(name=name, skip=f"unreadable image: {err}")
        try:
            if box and p.release_boxes:
                face = crop_boxes(image[None], np.array([[float(v) for v in box.split(",")]]), p.face_height,
                                  p.face_width)[0]
                return dict(name=name, faces=face[None], audio=np.zeros(0, np.int16), fps=0.0, faces_missing=0,
                            audio_notes="")
            detector = make_detector(p.detector, shared=True, **p.detector_kwargs) if p.detect else None
            face = face_crop(image, p, detector)
        except NoFaceError:
            return dict(name=name, skip="no face found in the image")
        return dict(name=name, faces=face[None], audio=np.zeros(0, np.int16), fps=0.0, faces_missing=0,
                    audio_notes="")
    except Exception as err:  # noqa: BLE001 - one bad image must not cost the others
        return dict(name=name, skip=f"failed: {type(err).__name__}: {err}")


# ------------------------------------------------------------------------------ a folder per class


def image_source(p: ImagePreprocessParams, scan) -> SampleSource:
    """A :class:`~fer_mm.data.cache.SampleSource` over the rows ``scan(root)`` gives, one image each."""
    params = asdict(p)
    attributes = p.format in ATTRIBUTE_FORMATS
    return SampleSource(scan=scan, job=lambda r: (r.name, r.path, params, getattr(r, "box", "")),
                        process=process_image, columns=ATTRIBUTE_COLUMNS if attributes else COLUMNS)


SCANS = {"ckplus": ckplus.scan, "image_folder": lambda r, p: scan_image_folder(r, p)[0], "utkface": utkface.scan,
         "imdb_wiki": imdb_wiki.scan}


def build_image_cache(root: Path, cache_dir: Path, p: ImagePreprocessParams, workers: int = 0,
                      progress: bool = True) -> ClipCache:
    """The image set under ``root`` in its ``format``, cached (or the finished cache opened)."""
    if p.format == "fer2013":
        return build_fer2013_cache(root, cache_dir, p)
    scan = SCANS[p.format]
    return build_cache(root, cache_dir, p, workers=workers, progress=progress,
                       source=image_source(p, lambda r: scan(r, p)))


def build_fer2013_cache(root: Path, cache_dir: Path, p: ImagePreprocessParams) -> ClipCache:
    """FER2013's faces into a cache (one csv, faces cropped already: read in one pass, no workers).

    ``actor`` is -1 for every image: FER2013 has no subject ids, so its only protocol is its
    released split (``cv=released``)."""
    final = cache_path(root, cache_dir, p)
    if (final / "clips.csv").is_file():
        return ClipCache(final)
    t0 = time.time()
    index, faces, problems = fer2013.read_csv(root)
    if not len(index):
        kinds = sorted({r.split(":")[0] for r in problems.values()})
        raise PreprocessError(f"no image could be cached from {fer2013.csv_path(root)} ({len(problems)} rows, all unusable: "
                              f"{', '.join(kinds)})")
    for line, reason in list(problems.items())[:20]:
        log.warning("skipped %s of %s: %s", line, fer2013.CSV_FILE, reason)
    if (p.face_height, p.face_width) != (fer2013.SIZE, fer2013.SIZE):
        faces = np.stack([cv2.resize(f, (p.face_width, p.face_height), interpolation=cv2.INTER_AREA) for f in faces])
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "video.u8").write_bytes(np.ascontiguousarray(faces).tobytes())
    (tmp / "audio.i16").write_bytes(b"")
    n = len(index)
    clips = index.assign(n_frames=1, fps=0.0, video_offset=np.arange(n), n_samples=0, audio_offset=0,
                         faces_missing=0, audio_notes="")
    # FER2013 is known to hold the same face in more than one part: counted, so that a leak is visible
    seen = {face.tobytes() for face in faces[(clips["part"] == "train").to_numpy()]}
    repeated = {part: int(sum(face.tobytes() in seen for face in faces[(clips["part"] == part).to_numpy()]))
                for part in ("val", "test")}
    if any(repeated.values()):
        log.warning("FER2013: %s images of PublicTest / PrivateTest are pixel for pixel in Training",
                    " / ".join(str(v) for v in repeated.values()))
    report = dict(root=str(fer2013.csv_path(root).resolve()), cached_clips=n, skipped_count=len(problems),
                  same_face_as_training=repeated,
                  skipped=problems, actors=0, clips_per_emotion=clips["emotion"].value_counts().sort_index().to_dict(),
                  clips_per_part=clips["part"].value_counts().to_dict(), frames=n, audio_seconds=0.0,
                  frames_without_face=0, notes={}, seconds=round(time.time() - t0, 1), versions=versions(p))
    return finish_cache(tmp, final, clips, p, report)


def class_names(root: Path, p: ImagePreprocessParams) -> tuple[str, ...]:
    """The classes of an image set, in label order."""
    if p.format == "fer2013":
        return fer2013.CLASS_NAMES
    if p.format == "ckplus":
        return ckplus.CLASS_NAMES
    if p.format in ATTRIBUTE_FORMATS:
        return ()  # no emotion labels
    return tuple(p.classes) if p.classes else folder_layout(root)[1]


# ------------------------------------------------------------------------------ twins

TWIN_KEYS = {"fer2013": ("subjects", "images_per_subject", "seed", "difficulty"), "ckplus": ("subjects", "seed"),
             "utkface": ("images", "seed", "age_noise", "gender_flip"),
             "imdb_wiki": ("celebrities", "images_per_celebrity", "wiki_images", "seed", "age_noise", "gender_flip")}


def twin_folder(fmt: str, synthetic: dict) -> str:
    """The twin's folder under its ``twin_dir``, named by its parameters (twins of other parameters
    never share one): ``120x25_d0.3_seed0`` (FER2013), ``24_seed0`` (CK+), ``2000_a4.0_g0.05_seed0``
    (UTKFace), ``150x8+200_a4.0_g0.05_seed0`` (IMDB-WIKI)."""
    if fmt not in TWIN_KEYS:
        raise ValueError(f"data={fmt} has no synthetic twin: set data.root")
    missing = [k for k in TWIN_KEYS[fmt] if k not in synthetic]
    if missing:
        raise ValueError(f"data.synthetic lacks {missing} (the {fmt} twin takes {list(TWIN_KEYS[fmt])})")
    s = synthetic
    if fmt == "fer2013":
        return f"{s['subjects']}x{s['images_per_subject']}_d{s['difficulty']!r}_seed{s['seed']}"
    if fmt == "utkface":
        return f"{s['images']}_a{s['age_noise']!r}_g{s['gender_flip']!r}_seed{s['seed']}"
    if fmt == "imdb_wiki":
        return (f"{s['celebrities']}x{s['images_per_celebrity']}+{s['wiki_images']}_a{s['age_noise']!r}_"
                f"g{s['gender_flip']!r}_seed{s['seed']}")
    return f"{s['subjects']}_seed{s['seed']}"


def generate_twin(fmt: str, root: Path, synthetic: dict, workers: int = 0, progress: bool = True) -> Path:
    """Write (or finish) the ``fmt`` twin with ``synthetic`` parameters under ``root``."""
    twin_folder(fmt, synthetic)  # checks the keys
    unknown = sorted(set(synthetic) - set(TWIN_KEYS[fmt]))
    if unknown:
        raise ValueError(f"data.synthetic.{unknown[0]}: not a parameter of the {fmt} twin ({list(TWIN_KEYS[fmt])})")
    if fmt == "utkface":
        return utkface_twin.generate_utkface(root, **synthetic, workers=workers, progress=progress)
    if fmt == "imdb_wiki":
        return imdb_wiki_twin.generate_imdb_wiki(root, **synthetic, workers=workers, progress=progress)
    if fmt == "fer2013":
        return image_twins.generate_fer2013(root, n_subjects=synthetic["subjects"],
                                            images_per_subject=synthetic["images_per_subject"], seed=synthetic["seed"],
                                            difficulty=synthetic["difficulty"], workers=workers, progress=progress)
    return image_twins.generate_ckplus(root, n_subjects=synthetic["subjects"], seed=synthetic["seed"], workers=workers,
                                       progress=progress)
