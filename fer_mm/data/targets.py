"""The targets of the tasks beside emotion: gender, age and action units, by cache row.

- ``gender``: 0 female, 1 male (:data:`fer_mm.vocab.GENDER_NAMES`), -1 unknown; per image where the
  cache has a ``gender`` column (UTKFace's file names, IMDB-WIKI's ``.mat``), else from the subjects'
  table (CREMA-D's ``VideoDemographics.csv``: its ``Sex``);
- ``age``: years, NaN unknown; per image from an ``age`` column (an IMDB-WIKI celebrity's age
  changes from photo to photo), else from the subjects' table (``Age``);
- ``au``: one column per requested action unit, 1 present, 0 absent, NaN not coded; from an
  image cache's ``aus`` column (CK+'s FACS files).

Gender (and, within one recording session, age) is constant per subject: a model can only be said to
read them from faces or voices when the test subjects were never seen in training, which every
subject protocol here ensures (UTKFace has no subject ids: its runs say so).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fer_mm.data.sources.crema_d import read_demographics
from fer_mm.vocab import GENDER_NAMES, NOT_CODED, TASKS

log = logging.getLogger(__name__)


def read_subjects(path: Path) -> pd.DataFrame | None:
    """``gender`` (0/1, -1 unknown) and ``age`` (float) by actor from CREMA-D's ``VideoDemographics.csv``;
    None where the file is absent."""
    if not Path(path).is_file():
        return None
    table = read_demographics(path)
    sex = table["sex"].astype(str).str.strip().str.lower()
    gender = sex.map({name: i for i, name in enumerate(GENDER_NAMES)}).fillna(-1).astype(np.int64)
    age = pd.to_numeric(table["age"], errors="coerce").astype(np.float32)
    return pd.DataFrame(dict(gender=gender, age=age), index=table.index)


def au_matrix(aus: pd.Series, ids: list[int]) -> np.ndarray:
    """``[N, len(ids)]`` float32 from ``aus`` strings (``1+2+5``; empty: none; ``?``: not coded -> NaN)."""
    out = np.zeros((len(aus), len(ids)), np.float32)
    column = {au: j for j, au in enumerate(ids)}
    for i, text in enumerate(aus.astype(str)):
        if text == NOT_CODED:
            out[i] = np.nan
            continue
        for au in filter(None, text.split("+")):
            if int(au) in column:
                out[i, column[int(au)]] = 1.0
    return out


def target_arrays(clips: pd.DataFrame, tasks: dict, subjects: pd.DataFrame | None, dataset: str) -> dict[str, np.ndarray]:
    """Each requested task's targets by cache row; a task the data has no labels for is refused by name."""
    out = {}
    for task, spec in tasks.items():
        if task in ("gender", "age") and task in clips:  # per image: a dataset that labels each one
            values = pd.to_numeric(clips[task].replace("", np.nan), errors="coerce")
            known = values.notna() & (values >= 0)
            if not known.any():
                raise ValueError(f"model.tasks.{task}: {dataset} has no {task} label on any sample; drop the task "
                                 f"for this data")
            if (~known).any():
                log.info("model.tasks.%s: %d of %d samples have no %s label (left out of its loss and metrics)",
                         task, int((~known).sum()), len(clips), task)
            out[task] = values.where(known, -1).to_numpy(np.int64) if task == "gender" else \
                values.where(known).to_numpy(np.float32)
        elif task in ("gender", "age"):
            if subjects is None:
                raise ValueError(f"model.tasks.{task}: {dataset} has no {task} labels (they come from a subjects table "
                                 f"such as CREMA-D's VideoDemographics.csv); drop the task for this data")
            values = clips["actor"].map(subjects[task])
            unknown = int(values.isna().sum()) if task == "age" else int((values.fillna(-1) < 0).sum())
            if unknown:
                log.warning("model.tasks.%s: %d of %d clips have no %s label (left out of its loss and metrics)",
                            task, unknown, len(clips), task)
            out[task] = values.fillna(-1).to_numpy(np.int64) if task == "gender" else values.to_numpy(np.float32)
        elif task == "au":
            if "aus" not in clips or (clips["aus"].astype(str) == NOT_CODED).all():
                raise ValueError(f"model.tasks.au: {dataset} has no action-unit labels (CK+'s FACS files have them); "
                                 f"drop the task for this data")
            out[task] = au_matrix(clips["aus"], list(spec))
        else:
            raise ValueError(f"model.tasks.{task}: unknown task; use {list(TASKS)}")
    return out
