"""The names every part of fer-mm shares: modalities, datasets and their label sets.

Defined here once; configs, batches (dicts keyed by modality), dataset readers, models, run
records and the report all use these. The ground floor: it imports nothing of fer-mm.
"""

from __future__ import annotations

from typing import Iterable

# the label sets, in label order
EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")  # CREMA-D's, as its file names code them
EMOTION_NAMES = ("anger", "disgust", "fear", "happy", "neutral", "sad")
FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # its emotion column 0..6
CKPLUS_CLASSES = ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")  # its codes 0..7

SAMPLE_RATE = 16_000  # CREMA-D's AudioWAV: 16 kHz, mono, 16-bit; fer-mm's default everywhere

VIDEO = "video"
AUDIO = "audio"
MODALITIES = (VIDEO, AUDIO)

# what a run record's ``dataset`` says: real CREMA-D, or the twin fer-mm generates
CREMA_D = "crema_d"
CREMA_D_TWIN = "crema_d_twin"
DATASET_TITLES = {CREMA_D: "real CREMA-D", CREMA_D_TWIN: "the synthetic CREMA-D twin (not real CREMA-D)",
                  "fer2013": "FER2013", "fer2013_twin": "the synthetic FER2013 twin (not real FER2013)",
                  "ckplus": "CK+", "ckplus_twin": "the synthetic CK+ twin (not real CK+)",
                  "image_folder": "a folder of face images per class",
                  "utkface": "UTKFace", "utkface_twin": "the synthetic UTKFace twin (not real UTKFace)",
                  "imdb_wiki": "IMDB-WIKI", "imdb_wiki_twin": "the synthetic IMDB-WIKI twin (not real IMDB-WIKI)",
                  "mixed": "several datasets mixed (see the record's datasets)"}

# the tasks a model can learn beside emotion (fer_mm.data.targets, fer_mm.models.multitask)
TASKS = ("gender", "age", "au")
GENDER_NAMES = ("female", "male")
NOT_CODED = "?"  # an action-unit cell a dataset did not code (CK+'s unlabelled sequences, FER2013)

LABEL_SOURCE = "acted emotion (from the clip's file name)"
IMAGE_LABEL_SOURCES = {
    "fer2013": "FER2013's emotion column",
    "ckplus": "CK+'s emotion files (the last frames of a labelled sequence) and neutral first frames",
    "image_folder": "the image's class folder",
    "utkface": "no emotion; gender, age and race from UTKFace's file names",
    "imdb_wiki": "no emotion; gender, and age from date of birth and year taken, in IMDB-WIKI's .mat",
}


def ordered_modalities(modalities: Iterable[str], key: str) -> tuple[str, ...]:
    """``modalities`` checked and in canonical order (video, audio); ``key`` names the config key in errors."""
    given = list(modalities)
    if not given or set(given) - set(MODALITIES) or len(set(given)) != len(given):
        raise ValueError(f"{key}={given}: use [{VIDEO}], [{AUDIO}] or [{VIDEO}, {AUDIO}]")
    return tuple(m for m in MODALITIES if m in given)
