"""UTKFace in its released layouts (https://susanqq.github.io/UTKFace/).

The labels are in the file names, ``[age]_[gender]_[race]_[date&time].jpg``: age 0-116, gender
0 male / 1 female, race 0-4 (:data:`RACE_NAMES`), date&time ``yyyymmddHHMMSSFFF``. A root holds
one or more of:

- ``UTKFace/``: the aligned and cropped faces (200x200), named ``<labels>.jpg.chip.jpg``;
- ``crop_part1/``: a cropped subset, named the same way;
- ``part1/``, ``part2/``, ``part3/``: the in-the-wild images, named ``<labels>.jpg``, with
  ``landmark_list_part1.txt`` (...) beside them: one line per image, its file name then 68 (x, y)
  points as 136 integers, ``name x1 y1 x2 y2 ...``.

UTKFace has no emotion labels, no subject ids and no released split.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fer_mm.data.sources.ckplus import find_folder
from fer_mm.data.sources.crema_d import DatasetScan
from fer_mm.vocab import NOT_CODED

LAYOUTS = ("UTKFace", "crop_part1", "wild")  # 'wild' = part1..3, those present
WILD_PARTS = ("part1", "part2", "part3")
RACE_NAMES = ("White", "Black", "Asian", "Indian", "Others")
MAX_AGE = 116
CHIP_SUFFIX = ".chip.jpg"  # the cropped faces' names: <labels>.jpg.chip.jpg
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
LANDMARK_POINTS = 68
LANDMARK_FILE = "landmark_list_{part}.txt"
NAME_FORMAT = "[age]_[gender]_[race]_[date&time].jpg"
COLUMNS = ("name", "actor", "sentence", "emotion", "level", "label", "part", "aus", "gender", "age", "race", "box",
           "path")


def label_stem(name: str) -> str:
    """A file name without ``.chip.jpg`` and its image extension (``1_0_2_<date>.jpg.chip.jpg`` -> ``1_0_2_<date>``)."""
    if name.lower().endswith(CHIP_SUFFIX):
        name = name[:-len(CHIP_SUFFIX)]
    stem, dot, ext = name.rpartition(".")
    return stem if dot and f".{ext.lower()}" in IMAGE_EXTENSIONS else name


def parse_name(name: str) -> dict:
    """The labels in a UTKFace file name: ``age`` (int), ``gender`` (fer-mm's convention, 0 female
    1 male: UTKFace's own 0 male becomes 1), ``race`` (a :data:`RACE_NAMES` name) and ``taken``
    (the date&time digits). ``ValueError`` with the reason where the name does not fit."""
    fields = label_stem(name).split("_")
    malformed = f"malformed name: expected {NAME_FORMAT}"
    if len(fields) == 3 and fields[2].isdigit() and len(fields[2]) > 8:
        # the release's few broken names (39_1_20170116174525125.jpg.chip.jpg) lack the race
        raise ValueError(f"{malformed}, race field missing")
    if len(fields) != 4:
        raise ValueError(f"{malformed}, found {len(fields)} fields")
    age, gender, race, taken = fields
    if not age.isdigit() or int(age) > MAX_AGE:
        raise ValueError(f"{malformed}, age {age!r} is not an integer 0-{MAX_AGE}")
    if gender not in ("0", "1"):
        raise ValueError(f"{malformed}, gender {gender!r} is not 0 (male) or 1 (female)")
    if not race.isdigit() or int(race) >= len(RACE_NAMES):
        raise ValueError(f"{malformed}, race {race!r} is not 0-{len(RACE_NAMES) - 1}")
    if not taken.isdigit() or len(taken) < 8:
        raise ValueError(f"{malformed}, date&time {taken!r} is not yyyymmddHHMMSSFFF digits")
    return dict(age=int(age), gender=1 - int(gender), race=RACE_NAMES[int(race)], taken=taken)


def _is_utk_image(path: Path) -> bool:
    """Whether ``path`` is an image whose name carries UTKFace's labels."""
    if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    try:
        parse_name(path.name)
    except ValueError:
        return False
    return True


def _layout_folders(root: Path, layout: str) -> list[Path]:
    """The folders of one layout in ``root`` (or one level below it), or ``root`` itself by its name."""
    names = WILD_PARTS if layout == "wild" else (layout,)
    if root.name in names:
        return [root]
    found = [find_folder(root, name) for name in names]
    return [f for f in found if f is not None]


def find_layout(root: Path, layout: str | None) -> tuple[str, list[Path]]:
    """The layout to read (``layout``, or the first of :data:`LAYOUTS` the root has) and its folders.

    A folder of UTKFace-named images under another name is read as ``UTKFace`` (``.chip.jpg``
    names) or ``wild`` (``.jpg`` names).
    """
    root = Path(root)
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"data.preprocess.layout={layout!r} is not a UTKFace layout: use one of {', '.join(LAYOUTS)} "
                         f"or null (the first found)")
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={root} is not a folder")
    for name in (layout,) if layout else LAYOUTS:
        folders = _layout_folders(root, name)
        if folders:
            return name, folders
    sample = next((p for p in sorted(root.iterdir()) if _is_utk_image(p)), None)
    if sample is not None:
        own = "UTKFace" if sample.name.lower().endswith(CHIP_SUFFIX) else "wild"
        return layout or own, [root]
    wanted = f"a {layout}/ folder" if layout and layout != "wild" else "part1-3/ folders" if layout else \
        "UTKFace/, crop_part1/ or part1-3/ folders"
    raise FileNotFoundError(f"data.root={root} is not a UTKFace root: it holds no {wanted}, nor UTKFace-named images "
                            f"({NAME_FORMAT}); set data.root to the folder that holds them")


def landmark_file(folder: Path) -> Path | None:
    """``landmark_list_<part>.txt`` for a wild part folder: beside it (the release), or in it."""
    name = LANDMARK_FILE.format(part=folder.name)
    return next((p for p in (folder.parent / name, folder / name) if p.is_file()), None)


def read_landmark_boxes(path: Path, problems: dict) -> dict[str, str]:
    """Each listed image's landmark box ``x,y,w,h`` keyed by its label stem (so a name with or without
    ``.chip.jpg`` matches). Lines that do not parse go to ``problems``, named by file and line."""
    boxes = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        key = f"{path.name} line {number}"
        if len(fields) != 1 + 2 * LANDMARK_POINTS:
            problems[key] = f"expected a file name and {2 * LANDMARK_POINTS} numbers ({LANDMARK_POINTS} x, y " \
                            f"points), found {len(fields) - 1} numbers"
            continue
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            problems[key] = f"expected {2 * LANDMARK_POINTS} numbers after the file name, found a non-number"
            continue
        if not all(math.isfinite(v) for v in values):
            problems[key] = "a landmark is not a finite number"
            continue
        xs, ys = values[0::2], values[1::2]
        x0, y0 = math.floor(min(xs)), math.floor(min(ys))
        w, h = math.ceil(max(xs)) - x0, math.ceil(max(ys)) - y0
        if w < 2 or h < 2:
            problems[key] = f"the landmarks span {w}x{h} pixels, not a face: no box"
            continue
        boxes[label_stem(fields[0].rsplit("/", 1)[-1])] = f"{x0},{y0},{w},{h}"
    return boxes


def _folder_rows(root: Path, folder: Path, boxes: dict[str, str] | None, problems: dict) -> list[dict]:
    """One row per usable image directly in ``folder``; other entries go to ``problems``."""
    rows = []
    for path in sorted(folder.iterdir()):
        rel = path.relative_to(root).as_posix()
        if path.name.startswith(".") or path.name.startswith("landmark_list_"):
            continue
        if path.is_dir():
            problems[rel] = f"stray folder: UTKFace's images lie directly in {folder.name}/"
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            problems[rel] = f"stray file: not an image ({', '.join(IMAGE_EXTENSIONS)})"
            continue
        try:
            labels = parse_name(path.name)
        except ValueError as err:
            problems[rel] = str(err)
            continue
        box = boxes.get(label_stem(path.name), "") if boxes is not None else ""
        rows.append(dict(name=rel, actor=-1, sentence="", emotion="", level="", label=-1, part="", aus=NOT_CODED,
                         gender=labels["gender"], age=float(labels["age"]), race=labels["race"], box=box,
                         path=str(path)))
    return rows


def _wild_boxes(folder: Path, problems: dict) -> dict[str, str]:
    """The landmark boxes of a wild part folder; a missing list is noted in ``problems`` (boxes stay empty)."""
    path = landmark_file(folder)
    if path is None:
        problems[f"{folder.name}/"] = f"no {LANDMARK_FILE.format(part=folder.name)} beside it: its images have no box"
        return {}
    return read_landmark_boxes(path, problems)


def scan(root: Path, p) -> DatasetScan:
    """One row per usable image of the chosen layout (``p.layout``, or the first found), sorted by name.

    UTKFace has no subject ids (``actor`` -1: the caller numbers the images), no emotion labels
    (``label`` -1) and no split (``part`` ""). ``gender`` is fer-mm's 0 female / 1 male; ``age`` in
    years. ``box`` is, for a wild image its landmark list names, exactly the bounding box of its 68
    landmarks (min to max, not widened: it is tighter than a face detector's box, chin to brows);
    "" for the cropped layouts and for wild images the list lacks. Malformed names, stray files and
    landmark lines that do not parse are listed in ``problems``.
    """
    root = Path(root).absolute()
    layout, folders = find_layout(root, getattr(p, "layout", None))
    rows, problems = [], {}
    for folder in folders:
        boxes = _wild_boxes(folder, problems) if layout == "wild" else None
        found = _folder_rows(root, folder, boxes, problems)
        unboxed = sum(1 for r in found if not r["box"])
        if boxes and unboxed:
            problems[f"{folder.name}/ (no landmarks)"] = \
                f"{unboxed} images not in {LANDMARK_FILE.format(part=folder.name)}: their box is empty"
        rows += found
    index = pd.DataFrame(rows, columns=list(COLUMNS)).sort_values("name", kind="stable").reset_index(drop=True)
    return DatasetScan(index=index, problems=problems, demographics=None)
