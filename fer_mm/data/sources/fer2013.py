"""FER2013 in its released format: one ``fer2013.csv`` with columns ``emotion,pixels,Usage``.

``pixels`` holds a 48x48 grayscale face as 2,304 space-separated values; ``emotion`` is
0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral; ``Usage`` is Training,
PublicTest or PrivateTest.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fer_mm.vocab import FER2013_CLASSES as CLASS_NAMES, NOT_CODED  # noqa: F401 - its label set

CSV_FILE = "fer2013.csv"
COLUMNS = ("emotion", "pixels", "Usage")
SIZE = 48
USAGE_PARTS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
OTHER_NAMES = ("icml_face_data.csv",)  # Kaggle's copy: the same columns, written ", Usage, pixels"

log = logging.getLogger(__name__)



def csv_path(root: Path) -> Path:
    """The csv in ``root``: ``fer2013.csv``, or Kaggle's ``icml_face_data.csv`` (the same table), in
    ``root`` or a ``fer2013/`` folder in it (as the release's tar unpacks); or ``root`` itself, a csv."""
    root = Path(root)
    if root.is_file():
        return root
    for path in (root / name for name in (CSV_FILE, *OTHER_NAMES)):
        if path.is_file():
            return path
    for path in (root / "fer2013" / name for name in (CSV_FILE, *OTHER_NAMES)):
        if path.is_file():
            return path
    raise FileNotFoundError(f"data.root={root} holds no {CSV_FILE} (FER2013's release: one csv with columns "
                            f"{','.join(COLUMNS)}): set data.root to its folder, or to the csv file itself")


def read_csv(root: Path) -> tuple[pd.DataFrame, np.ndarray, dict[str, str]]:
    """The usable rows of ``fer2013.csv`` (name, label, part), their faces ``[N, 48, 48]`` uint8, and
    every row that cannot be used with its reason (named by its line in the file)."""
    path = csv_path(root)
    table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    table.columns = [c.strip() for c in table.columns]  # some copies write ", Usage"
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path} is not FER2013's csv: no column(s) {missing} (it has {list(table.columns)})")
    rows, faces, problems = [], [], {}
    for i, (emotion, pixels, usage) in enumerate(zip(table["emotion"], table["pixels"], table["Usage"])):
        line = f"line {i + 2}"  # the header is line 1
        emotion, usage = emotion.strip(), usage.strip()
        if usage not in USAGE_PARTS:
            problems[line] = f"unknown Usage {usage!r} (one of {', '.join(USAGE_PARTS)})"
            continue
        if not emotion.isdigit() or int(emotion) >= len(CLASS_NAMES):
            problems[line] = f"emotion {emotion!r} is not a label 0-{len(CLASS_NAMES) - 1}"
            continue
        try:
            values = np.array(pixels.split(), dtype=np.int64)
        except ValueError:
            problems[line] = "pixels: not space-separated integers"
            continue
        if values.size != SIZE * SIZE or values.min() < 0 or values.max() > 255:
            problems[line] = f"pixels: {values.size} values{' out of 0-255' if values.size == SIZE * SIZE else ''}, " \
                             f"a face has {SIZE * SIZE} in 0-255"
            continue
        label = int(emotion)
        rows.append(dict(name=f"fer2013_{i:05d}", actor=-1, sentence="", emotion=CLASS_NAMES[label], level="",
                         label=label, part=USAGE_PARTS[usage], aus=NOT_CODED))
        faces.append(values.astype(np.uint8).reshape(SIZE, SIZE))
    return pd.DataFrame(rows), np.stack(faces) if faces else np.zeros((0, SIZE, SIZE), np.uint8), problems

