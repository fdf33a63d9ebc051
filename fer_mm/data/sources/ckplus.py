"""CK+ (the extended Cohn-Kanade set) in its released layout.

- ``cohn-kanade-images/Sxxx/yyy/Sxxx_yyy_zzzzzzzz.png``: each sequence goes from a neutral
  face (its first frame) to the peak of an expression (its last frame);
- ``Emotion/Sxxx/yyy/Sxxx_yyy_zzzzzzzz_emotion.txt``: one float code (see :data:`EMOTION_CODES`),
  for the sequences that were given a label (327 of 593 in the release); named after the last frame;
- ``FACS/Sxxx/yyy/Sxxx_yyy_zzzzzzzz_facs.txt``: one line per action unit at the peak,
  ``AU intensity`` as floats (intensity 0 where it was not coded).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from fer_mm.data.sources.crema_d import DatasetScan
from fer_mm.vocab import CKPLUS_CLASSES as CLASS_NAMES, NOT_CODED

IMAGES_DIR, EMOTION_DIR, FACS_DIR = "cohn-kanade-images", "Emotion", "FACS"
# the code in an emotion file -> class index; 0 (neutral) never occurs in the files: the neutral
# samples are the sequences' first frames
EMOTION_CODES = dict(enumerate(CLASS_NAMES))

SUBJECT_RE = re.compile(r"^S(\d+)$")
SEQUENCE_RE = re.compile(r"^\d+$")
FRAME_RE = re.compile(r"^(S\d+)_(\d+)_(\d+)$")


def find_folder(root: Path, name: str) -> Path | None:
    """``root/name``, or ``root/*/name`` (the release's zips unpack into folders of their own, e.g.
    ``extended-cohn-kanade-images/cohn-kanade-images``, ``Emotion_labels/Emotion``)."""
    if (root / name).is_dir():
        return root / name
    return next((d / name for d in sorted(root.iterdir())
                 if d.is_dir() and not d.name.startswith((".", "__")) and (d / name).is_dir()), None)


def read_numbers(path: Path) -> list[list[float]]:
    """The rows of floats in an emotion or FACS file (any whitespace between them)."""
    return [[float(x) for x in line.split()] for line in path.read_text().splitlines() if line.strip()]


def _label_file(folder: Path | None, subject: str, sequence: str, suffix: str) -> tuple[Path | None, str | None]:
    """The sequence's one ``*<suffix>`` file (or None), and what is wrong where there are several."""
    files = sorted((folder / subject / sequence).glob(f"*{suffix}")) if folder is not None else []
    if len(files) > 1:
        return None, f"{len(files)} {suffix} files, expected one"
    return (files[0] if files else None), None


def scan(root: Path, p) -> DatasetScan:
    """One row per sample of the labelled sequences: their last ``p.peak_frames`` frames take the
    sequence's emotion, their first frame is neutral (``p.neutral_first``). Unlabelled sequences
    and files that cannot be used are listed in ``problems``.

    ``aus`` is the FACS file's action units at the peak frames, none at a first (neutral) frame,
    and ``?`` where the sequence has no FACS file.
    """
    images, emotions, facs = _release_folders(Path(root))
    rows, problems = [], {}
    for subject_dir in sorted(d for d in images.iterdir() if not d.name.startswith(".")):
        subject = subject_dir.name
        if not subject_dir.is_dir() or not SUBJECT_RE.match(subject):
            problems[f"{IMAGES_DIR}/{subject}"] = "stray entry: expected subject folders Sxxx"
            continue
        for seq_dir in sorted(d for d in subject_dir.iterdir() if not d.name.startswith(".")):
            rows += _sequence_rows(seq_dir, subject, emotions, facs, p, problems)
    index = pd.DataFrame(rows, columns=["name", "actor", "sentence", "emotion", "level", "label", "part", "aus", "path"])
    return DatasetScan(index=index, problems=problems, demographics=None)


def _release_folders(root: Path) -> tuple[Path, Path, Path | None]:
    """The images' and the emotion labels' folders, which a CK+ root must have, and the FACS folder if any."""
    images = find_folder(root, IMAGES_DIR) if root.is_dir() else None
    if images is None:
        raise FileNotFoundError(f"data.root={root} is not a CK+ root: no {IMAGES_DIR}/ in it or in a folder below it "
                                f"(set data.root to the folder that holds {IMAGES_DIR}/, {EMOTION_DIR}/ and {FACS_DIR}/)")
    emotions, facs = find_folder(root, EMOTION_DIR), find_folder(root, FACS_DIR)
    if emotions is None:
        raise FileNotFoundError(f"{root} has {IMAGES_DIR}/ but no {EMOTION_DIR}/: CK+'s labels are in its "
                                f"Emotion_labels archive; unpack it next to {IMAGES_DIR}/")
    return images, emotions, facs


def _sequence_rows(seq_dir: Path, subject: str, emotions: Path, facs: Path | None, p, problems: dict) -> list[dict]:
    """The samples of one sequence folder: none where it cannot be used, and then ``problems`` says why."""
    key = f"{subject}/{seq_dir.name}"
    if not seq_dir.is_dir() or not SEQUENCE_RE.match(seq_dir.name):
        problems[key] = "stray entry: expected sequence folders (001, 002, ...)"
        return []
    frames = _frames(seq_dir, subject, key, problems)
    if not frames:
        problems[key] = "empty sequence: no frames"
        return []
    code = _emotion_code(emotions, subject, seq_dir.name, key, problems)
    if code is None:
        return []
    aus = _action_units(facs, subject, seq_dir.name, key, problems)
    common = dict(actor=int(SUBJECT_RE.match(subject)[1]), sentence=seq_dir.name)
    peaks = frames[-p.peak_frames:] if len(frames) > p.peak_frames else frames[1:] or frames
    rows = []
    if p.neutral_first and len(frames) > 1:
        rows.append(dict(name=frames[0].stem, **common, emotion=CLASS_NAMES[0], level="first", label=0,
                         part="", aus="", path=str(frames[0])))
    return rows + [dict(name=f.stem, **common, emotion=EMOTION_CODES[int(code)], level="peak", label=int(code),
                        part="", aus=aus, path=str(f)) for f in peaks]


def _frames(seq_dir: Path, subject: str, key: str, problems: dict) -> list[Path]:
    """The sequence's frames in order; other files are listed in ``problems``."""
    frames = []
    for path in seq_dir.iterdir():
        m = FRAME_RE.match(path.stem)
        if path.name.startswith("."):
            continue
        if path.suffix.lower() != ".png" or not m or m[1] != subject or m[2] != seq_dir.name:
            problems[f"{key}/{path.name}"] = f"stray file: expected {subject}_{seq_dir.name}_<frame>.png"
            continue
        frames.append((int(m[3]), path))
    return [path for _, path in sorted(frames)]


def _emotion_code(emotions: Path, subject: str, sequence: str, key: str, problems: dict) -> float | None:
    """The code in the sequence's emotion file; None, and why in ``problems``, where it has none to use."""
    emotion_file, error = _label_file(emotions, subject, sequence, "_emotion.txt")
    if error:
        problems[key] = f"unusable emotion label: {error}"
        return None
    if emotion_file is None:
        problems[key] = "unlabelled: the sequence has no emotion file (not used)"
        return None
    try:
        code = read_numbers(emotion_file)[0][0]
    except (ValueError, IndexError, UnicodeDecodeError):
        problems[key] = f"unusable emotion label: {emotion_file.name} holds no number"
        return None
    if code != int(code) or int(code) not in EMOTION_CODES:
        problems[key] = f"unusable emotion label: code {code:g} in {emotion_file.name} is not one of 0-7"
        return None
    return code


def _action_units(facs: Path | None, subject: str, sequence: str, key: str, problems: dict) -> str:
    """The peak's action units as ``1+2+4``; :data:`NOT_CODED` where the sequence has no readable FACS file."""
    facs_file, _ = _label_file(facs, subject, sequence, "_facs.txt")
    if facs_file is None:
        return NOT_CODED
    try:
        return "+".join(str(u) for u in sorted({int(row[0]) for row in read_numbers(facs_file)}))
    except (ValueError, IndexError, UnicodeDecodeError):
        problems[f"{key}/{facs_file.name}"] = "unreadable FACS file: action units taken as not coded"
        return NOT_CODED
