"""A folder of face images per class, as people arrange their own sets: ``DIR/<class>/<image>``, or
``DIR/train|val|test/<class>/<image>`` for a released split.

Any format OpenCV reads. The subject of each image comes from its file name
(``data.preprocess.subject_pattern``); without one each image is its own subject.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd

from fer_mm.data.sources.crema_d import DatasetScan
from fer_mm.vocab import NOT_CODED

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}


def folder_layout(root: Path) -> tuple[list[tuple[str, Path]], tuple[str, ...]]:
    """A folder set's (part, folder) pairs (``train``/``val``/``test`` split folders, or the root
    alone) and the class folders found in them, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={root} is not a folder")
    tops = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "__")))
    splits = [d for d in tops if d.name.lower() in SPLIT_FOLDERS]
    if splits and len(splits) != len(tops):
        raise ValueError(f"{root} mixes split folders ({', '.join(d.name for d in splits)}) with class folders "
                         f"({', '.join(d.name for d in tops if d not in splits)}); use one layout")
    parts = [(SPLIT_FOLDERS[d.name.lower()], d) for d in splits] or [("", root)]
    found = sorted({d.name for _, top in parts for d in top.iterdir()
                    if d.is_dir() and not d.name.startswith((".", "__"))})
    return parts, tuple(found)


def scan_image_folder(root: Path, p) -> tuple[DatasetScan, tuple[str, ...]]:
    """``root/<class>/...`` (or ``root/<train|val|test>/<class>/...``): one row per image, and the classes.

    Images in subfolders of a class folder belong to it; files that are not images are reported.
    """
    parts, found = folder_layout(root)
    classes = tuple(p.classes) if p.classes else found
    if not classes:
        raise ValueError(f"{root} holds no class folders (expected {root}/<class>/<image>, e.g. {root}/happy/001.png)")
    unknown = sorted(set(found) - set(classes))
    problems, rows = {}, []
    for folder in unknown:
        problems[folder] = f"not a class: the folder is not in data.preprocess.classes={list(classes)}"
    pattern = re.compile(p.subject_pattern) if p.subject_pattern else None
    for part, top in parts:
        for label, cls in enumerate(classes):
            for path in sorted((top / cls).rglob("*")) if (top / cls).is_dir() else []:
                rel = path.relative_to(root).as_posix()
                if path.is_dir() or path.name.startswith("."):
                    continue
                if path.suffix.lower() not in IMAGE_EXTENSIONS:
                    problems[rel] = f"stray file: not an image ({', '.join(IMAGE_EXTENSIONS)})"
                    continue
                subject = rel
                if pattern is not None:
                    m = pattern.search(path.stem)
                    if m is None:
                        problems[rel] = f"no subject id: data.preprocess.subject_pattern={p.subject_pattern!r} " \
                                        f"does not match {path.stem!r}"
                        continue
                    subject = m.group("subject") if "subject" in pattern.groupindex else m.group(1) if m.groups() \
                        else m.group(0)
                rows.append(dict(name=rel, subject=subject, sentence="", emotion=cls, level="", label=label,
                                 part=part, aus=NOT_CODED, path=str(path)))
    index = pd.DataFrame(rows, columns=["name", "subject", "sentence", "emotion", "level", "label", "part", "aus",
                                        "path"])
    # subjects numbered in an order fixed by their names (the same files give the same ids) but
    # unrelated to the folders: protocols that cut runs of ids (speaker_kfold by_id) then never cut
    # a fold out of one class, as they would where each image is its own subject
    ids = {s: i + 1 for i, s in enumerate(sorted(index["subject"].unique(),
                                                 key=lambda s: hashlib.sha1(s.encode()).hexdigest()))}
    index.insert(1, "actor", index.pop("subject").map(ids).astype(np.int64))
    return DatasetScan(index=index, problems=problems, demographics=None), classes
