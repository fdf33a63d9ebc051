"""FER2013 in its released format: one ``fer2013.csv`` with columns ``emotion,pixels,Usage``.

``pixels`` holds a 48x48 grayscale face as 2,304 space-separated values; ``emotion`` is
0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral; ``Usage`` is Training,
PublicTest or PrivateTest.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
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


def build_cache(root: Path, cache_dir: Path, p):
    """FER2013's faces into a cache (one csv, faces cropped already: read in one pass, no workers).

    ``actor`` is -1 for every image: FER2013 has no subject ids, so its only protocol is its
    released split (``cv=released``)."""
    import cv2

    from fer_mm.data.cache import ClipCache, PreprocessError, cache_path, finish_cache, versions

    final = cache_path(root, cache_dir, p)
    if (final / "clips.csv").is_file():
        return ClipCache(final)
    t0 = time.time()
    index, faces, problems = read_csv(root)
    if not len(index):
        kinds = sorted({r.split(":")[0] for r in problems.values()})
        raise PreprocessError(f"no image could be cached from {csv_path(root)} ({len(problems)} rows, all unusable: "
                              f"{', '.join(kinds)})")
    for line, reason in list(problems.items())[:20]:
        log.warning("skipped %s of %s: %s", line, CSV_FILE, reason)
    if (p.face_height, p.face_width) != (SIZE, SIZE):
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
    report = dict(root=str(csv_path(root).resolve()), cached_clips=n, skipped_count=len(problems),
                  same_face_as_training=repeated,
                  skipped=problems, actors=0, clips_per_emotion=clips["emotion"].value_counts().sort_index().to_dict(),
                  clips_per_part=clips["part"].value_counts().to_dict(), frames=n, audio_seconds=0.0,
                  frames_without_face=0, notes={}, seconds=round(time.time() - t0, 1), versions=versions(p))
    return finish_cache(tmp, final, clips, p, report)
