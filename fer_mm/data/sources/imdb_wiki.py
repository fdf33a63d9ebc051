"""IMDB-WIKI in its released layout (https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/).

``imdb_crop/imdb.mat`` with ``imdb_crop/NN/*.jpg``, and ``wiki_crop/wiki.mat`` with
``wiki_crop/NN/*.jpg``. Each .mat (MATLAB v5) holds one struct, ``imdb`` or ``wiki``, whose fields
are 1xN: ``dob`` (a MATLAB serial date number), ``photo_taken`` (a year), ``full_path`` (relative to
the .mat's folder), ``gender`` (0 female, 1 male, NaN unknown), ``name``, ``face_location`` (1x4
``[x1 y1 x2 y2]``, 1-based, crop = ``img(y1:y2, x1:x2)``), ``face_score`` (-Inf where no face was
found), ``second_face_score`` (NaN where there is no second face); IMDB's also ``celeb_names``
(1xM) and ``celeb_id`` (1-based into ``celeb_names``).

The labels are gender and age; there are no emotion labels and no released split.
"""

from __future__ import annotations

import math
import os
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.io import loadmat

from fer_mm.data.sources.crema_d import DatasetScan
from fer_mm.data.sources.utkface import COLUMNS
from fer_mm.vocab import NOT_CODED

SETS = ("imdb", "wiki")
REQUIRED_FIELDS = ("dob", "photo_taken", "full_path", "gender", "name", "face_location", "face_score",
                   "second_face_score")
IMDB_FIELDS = ("celeb_names", "celeb_id")
WIKI_ID_START = 1_000_000  # Wikipedia's people not on IMDB: ids above IMDB's (about 20,000 celebrities)
MAX_LISTED = 1000  # missing files or unreadable entries named one by one, per set and kind; the rest counted
MATLAB_DAY_OFFSET = 366  # MATLAB's day 1 is 0000-01-01, Python's ordinal 1 is 0001-01-01


def find_sets(root: Path, sets=None) -> dict[str, Path]:
    """Set name -> its .mat: ``root/<set>_crop/<set>.mat``, or ``root/<set>.mat`` (root = that folder).
    ``sets`` names the ones to use (None: all found)."""
    root = Path(root)
    wanted = list(SETS) if sets is None else [sets] if isinstance(sets, str) else [str(s) for s in sets]
    unknown = [s for s in wanted if s not in SETS]
    if unknown or not wanted:
        raise ValueError(f"data.preprocess.sets={wanted}: use a list of {', '.join(SETS)}, or null for all found")
    found = {}
    for name in wanted:
        path = next((c for c in (root / f"{name}_crop" / f"{name}.mat", root / f"{name}.mat") if c.is_file()), None)
        if path is not None:
            found[name] = path
        elif sets is not None:
            raise FileNotFoundError(f"data.root={root} holds no {name}_crop/{name}.mat (nor {name}.mat in it), "
                                    f"which data.preprocess.sets={wanted} asks for")
    if not found:
        raise FileNotFoundError(f"data.root={root} is not an IMDB-WIKI root: it holds no imdb_crop/imdb.mat or "
                                f"wiki_crop/wiki.mat (nor imdb.mat or wiki.mat in it); set data.root to the folder "
                                f"that holds imdb_crop/ and wiki_crop/")
    return found


def _load_struct(path: Path):
    """The set's name and its struct (fields as attributes) from a .mat; ``ValueError`` naming the file."""
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except OSError:
        raise
    except NotImplementedError as err:  # scipy's answer to a v7.3 (HDF5) file
        raise ValueError(f"{path} is a MATLAB v7.3 file; IMDB-WIKI's release is v5 ({err})") from err
    except Exception as err:  # loadmat raises several kinds on a file that is not a .mat
        raise ValueError(f"{path} is not a MATLAB .mat file that scipy.io.loadmat reads: {err}") from err
    names = [k for k in SETS if k in mat]
    if not names:
        held = [k for k in mat if not k.startswith("__")]
        raise ValueError(f"{path} holds no struct named {' or '.join(SETS)} (it holds {held})")
    name = path.stem if path.stem in names else names[0]
    struct = mat[name]
    fields = list(getattr(struct, "_fieldnames", []))
    needed = REQUIRED_FIELDS + (IMDB_FIELDS if name == "imdb" else ())
    for field in needed:
        if field not in fields:
            raise ValueError(f"{path} has no field {field} (a release .mat holds {', '.join(needed)})")
    return name, struct


def _cells(value, n: int) -> list:
    """A cell field as a list of n items (squeezing turns a 1x1 cell into its item)."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value.ravel())
    if n == 1 or isinstance(value, str):
        return [value]
    return list(np.atleast_1d(value).ravel())  # a char matrix of equal-length strings


def _text(item) -> str:
    """A cell's string; "" for an empty cell ([] or a 0x0 char array)."""
    if isinstance(item, str):
        return item.strip()
    if isinstance(item, np.ndarray) and item.size == 1 and item.dtype.kind == "U":
        return str(item.item()).strip()
    return ""


def _strings(value) -> list[str]:
    """A cell of strings whose length is its own (full_path, celeb_names)."""
    return [_text(x) for x in _cells(value, 1 if isinstance(value, str) else int(np.size(value)))]


def _numbers(value, n: int, field: str, path: Path) -> np.ndarray:
    """A numeric field as n floats; ``ValueError`` naming the field where it is not that."""
    try:
        numbers = np.atleast_1d(np.asarray(value, dtype=float)).ravel()
    except (TypeError, ValueError):
        numbers = None
    if numbers is None or numbers.size != n:
        raise ValueError(f"{path}: field {field} is not {n} numbers (one per full_path entry)")
    return numbers


def _locations(value, n: int) -> list:
    """face_location as n tuples (x, y, w, h), 0-based pixels, or NaN where an entry is not 4 finite numbers.

    ``[x1 y1 x2 y2]`` covers MATLAB pixels x1..x2 and y1..y2 (1-based, inclusive).
    """
    if isinstance(value, np.ndarray) and value.dtype != object and value.ndim == 2 and value.shape[1] == 4:
        items = list(value)  # written as an Nx4 matrix instead of a cell
    elif isinstance(value, np.ndarray) and value.dtype != object and n == 1:
        items = [value]
    else:
        items = _cells(value, n)
    try:  # all entries 4 numbers (the release): at once
        corners = np.vstack([np.asarray(item, dtype=float).reshape(1, 4) for item in items]) if items else None
    except (TypeError, ValueError):
        corners = None
    if corners is None:
        corners = np.array([_corners(item) for item in items], dtype=float).reshape(-1, 4)
    x1, y1, x2, y2 = corners.T
    boxes = np.stack([x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1], axis=1)
    return [tuple(b) if ok else math.nan for b, ok in zip(boxes.tolist(), np.isfinite(corners).all(axis=1))]


def _corners(item) -> list[float]:
    """One face_location's 4 numbers, or NaNs where it is not 4 numbers."""
    try:
        return list(np.asarray(item, dtype=float).reshape(4))
    except (TypeError, ValueError):
        return [math.nan] * 4


def birth_date(dob: float) -> date | None:
    """The date of a MATLAB serial date number; None where it is not a usable date."""
    if not math.isfinite(dob) or dob < MATLAB_DAY_OFFSET + 1:
        return None
    try:
        return date.fromordinal(int(dob) - MATLAB_DAY_OFFSET)
    except (ValueError, OverflowError):
        return None


def age_at(taken: int, birth: date) -> int:
    """Completed years on 1 July of the year the photo was taken (the release's own convention)."""
    return taken - birth.year - int((7, 1) < (birth.month, birth.day))


def read_mat(path: Path) -> pd.DataFrame:
    """The entries of a release .mat (:func:`read_set`'s table)."""
    return read_set(path)[1]


def read_set(path: Path) -> tuple[str, pd.DataFrame, list[str]]:
    """A release .mat: its struct's name (imdb or wiki); a table with one row per entry: full_path,
    dob, photo_taken, age (NaN where dob or photo_taken is unusable), gender (0 female, 1 male, -1
    unknown), name, face_location ((x, y, w, h) 0-based floats, or NaN), face_score,
    second_face_score, celeb_id (-1 for wiki) and problem ("" or why the entry cannot be used); and
    IMDB's celeb_names ([] for wiki)."""
    path = Path(path)
    name, s = _load_struct(path)
    paths = _strings(s.full_path)
    n = len(paths)
    dob, taken = _numbers(s.dob, n, "dob", path), _numbers(s.photo_taken, n, "photo_taken", path)
    gender = _numbers(s.gender, n, "gender", path)
    names, locations = [_text(x) for x in _cells(s.name, n)], _locations(s.face_location, n)
    if len(names) != n or len(locations) != n:
        field = "name" if len(names) != n else "face_location"
        raise ValueError(f"{path}: field {field} does not have {n} entries (one per full_path entry)")
    celeb = _numbers(s.celeb_id, n, "celeb_id", path) if name == "imdb" else np.full(n, -1.0)
    celeb_names = _strings(s.celeb_names) if name == "imdb" else []
    ages, problems = [], []
    for i in range(n):
        birth, year = birth_date(dob[i]), taken[i]
        ages.append(float(age_at(int(year), birth)) if birth is not None and math.isfinite(year) else math.nan)
        problems.append(_entry_problem(paths[i], year, celeb[i], len(celeb_names), name))
    table = pd.DataFrame(dict(
        full_path=paths, dob=dob, photo_taken=taken, age=ages,
        gender=np.where(np.isin(gender, (0.0, 1.0)), np.nan_to_num(gender), -1).astype(np.int64),
        name=names, face_location=locations,
        face_score=_numbers(s.face_score, n, "face_score", path),
        second_face_score=_numbers(s.second_face_score, n, "second_face_score", path),
        celeb_id=np.where(np.isfinite(celeb), celeb, 0).astype(np.int64), problem=problems))
    return name, table, celeb_names


def _entry_problem(full_path: str, taken: float, celeb: float, celebs: int, name: str) -> str:
    """Why an entry cannot be read ("" where it can)."""
    if not full_path:
        return "unreadable entry: full_path is empty or not a string"
    if not math.isfinite(taken):
        return "unreadable entry: photo_taken is not a year"
    if name == "imdb" and not (math.isfinite(celeb) and celeb == int(celeb) and celeb >= 1
                               and (celebs == 0 or celeb <= celebs)):
        return f"unreadable entry: celeb_id {celeb:g} is not an index 1-{celebs} into celeb_names"
    return ""


def celeb_ids_by_name(celeb_names: list[str]) -> dict[str, int]:
    """IMDB's celebrity name -> its id (1-based); a name given twice keeps its first id."""
    ids: dict[str, int] = {}
    for i, person in enumerate(celeb_names, start=1):
        if person:
            ids.setdefault(person, i)
    return ids


def wiki_ids(table: pd.DataFrame, imdb_ids: dict[str, int]) -> np.ndarray:
    """A subject id for each Wikipedia entry: the IMDB celebrity's id where the name is one (the same
    person in both sets is one subject), else ids from :data:`WIKI_ID_START` up in sorted-name order,
    then one id per entry without a name (in full_path order; nothing says who they are)."""
    names = table["name"].tolist()
    others = sorted({n for n in names if n and n not in imdb_ids})
    own = {n: WIKI_ID_START + i for i, n in enumerate(others)}
    unnamed = sorted(p for p, n in zip(table["full_path"], names) if not n)
    anonymous = {p: WIKI_ID_START + len(others) + i for i, p in enumerate(unnamed)}
    return np.array([imdb_ids.get(n) or own.get(n) or anonymous[p] for n, p in zip(names, table["full_path"])],
                    dtype=np.int64)


def box_string(location) -> str:
    """``x,y,w,h`` in whole pixels covering a face_location (clipped at 0), or "" where it is
    missing or degenerate (under 2 pixels wide or high, as the release's [1 1 1 1] of no face)."""
    if not isinstance(location, tuple):
        return ""
    x, y, w, h = location
    x0, y0 = max(math.floor(x), 0), max(math.floor(y), 0)
    w, h = math.ceil(x + w) - x0, math.ceil(y + h) - y0
    return f"{x0},{y0},{w},{h}" if w >= 2 and h >= 2 else ""


def _param(p, name: str, default):
    value = getattr(p, name, None)
    return default if value is None else value


def _filter_entries(table: pd.DataFrame, set_name: str, p, problems: dict) -> pd.DataFrame:
    """The entries that pass the filters; each filter's count under ``(filtered) <set>: <why>``."""
    min_score, drop_second = float(_param(p, "min_face_score", 1.0)), bool(_param(p, "drop_second_face", True))
    min_age, max_age = float(_param(p, "min_age", 0)), float(_param(p, "max_age", 100))
    score, second = table["face_score"], table["second_face_score"]
    # min_face_score -inf keeps the images where no face was found (their box is then "")
    filters = [
        ("no face found (face_score -Inf)", ~np.isfinite(score) & (min_score > -math.inf)),
        (f"face_score below {min_score:g}", np.isfinite(score) & (score < min_score)),
        ("a second face in the image (second_face_score set)", second.notna() & drop_second),
        ("dob unusable (no date of birth, so no age)", table["age"].isna()),
        (f"age outside [{min_age:g}, {max_age:g}]", (table["age"] < min_age) | (table["age"] > max_age)),
    ]
    keep = table["problem"] == ""
    for why, dropped in filters:
        count = int((keep & dropped).sum())
        if count:
            problems[f"(filtered) {set_name}: {why}"] = f"{count} images"
        keep &= ~dropped
    return table[keep]


def _listed(problems: dict, set_name: str, kind: str, entries: list[tuple[str, str]]) -> None:
    """The first :data:`MAX_LISTED` entries named one by one, then how many more."""
    for key, why in entries[:MAX_LISTED]:
        problems[key] = why
    if len(entries) > MAX_LISTED:
        problems[f"({kind}) {set_name}"] = f"{len(entries) - MAX_LISTED} more not listed"


def _on_disk(folder: Path, full_paths) -> set[str]:
    """The full_paths that exist under ``folder``: each subfolder listed once (no stat per image)."""
    present = set()
    for sub in sorted({fp.rpartition("/")[0] for fp in full_paths}):
        try:
            present |= {f"{sub}/{e}" if sub else e for e in os.listdir(folder / sub)}
        except OSError:
            continue
    return present


def scan(root: Path, p) -> DatasetScan:
    """One row per usable image of the sets (``p.sets``, or all found), sorted by name ``<set>/<full_path>``.

    Filters (``p.min_face_score`` 1.0, ``p.drop_second_face`` True, ``p.min_age`` 0, ``p.max_age``
    100) are counted in ``problems``; missing image files and unreadable entries are named (the first
    1000 of each, then a count). ``actor`` is IMDB's celeb_id; a Wikipedia person takes the IMDB id of
    the same name, else an id from 1,000,000 up (:func:`wiki_ids`; an unnamed entry is its own
    subject). ``box`` is the release's face_location in whole pixels; "" where no face was found,
    which only ``p.min_face_score`` -inf keeps (the whole image is then the sample).
    """
    mats = find_sets(Path(root), _param(p, "sets", None))
    read = {name: read_set(path) for name, path in mats.items()}
    imdb_ids = celeb_ids_by_name(read["imdb"][2]) if "imdb" in read else {}
    frames, problems = [], {}
    for set_name, (_, table, _) in read.items():
        folder = mats[set_name].parent.absolute()
        table = table.assign(actor=table["celeb_id"] if set_name == "imdb" else wiki_ids(table, imdb_ids))
        table = table.assign(key=[f"{set_name}/{fp}" if fp else f"{mats[set_name].name} entry {i + 1}"
                                  for i, fp in enumerate(table["full_path"])])
        bad = table[table["problem"] != ""]
        _listed(problems, set_name, "unreadable", list(zip(bad["key"], bad["problem"])))
        duplicate = table["problem"].eq("") & table["full_path"].duplicated()
        _listed(problems, set_name, "duplicate", [(f"{k} (again)", "duplicate entry: the .mat lists this image twice")
                                                  for k in table.loc[duplicate, "key"]])
        table = _filter_entries(table[~duplicate], set_name, p, problems)
        present = _on_disk(folder, table["full_path"])
        missing = ~table["full_path"].isin(present)
        lost = table[missing]
        _listed(problems, set_name, "missing", [(k, f"missing: no image file {os.path.join(folder, fp)}")
                                                for k, fp in zip(lost["key"], lost["full_path"])])
        table = table[~missing]
        frames.append(pd.DataFrame(dict(
            name=table["key"], actor=table["actor"].astype(np.int64), sentence="", emotion="", level="", label=-1,
            part="", aus=NOT_CODED, gender=table["gender"], age=table["age"].astype(float), race="",
            box=[box_string(loc) if math.isfinite(score) else "" for loc, score in
                 zip(table["face_location"], table["face_score"])],
            path=[os.path.join(folder, fp) for fp in table["full_path"]])))  # not Path: 10x faster
    index = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    index = index[list(COLUMNS)].sort_values("name", kind="stable").reset_index(drop=True)
    return DatasetScan(index=index, problems=problems, demographics=None)
