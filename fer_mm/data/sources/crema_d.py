"""CREMA-D index: clip names, file pairing, actor demographics, known defects.

A clip name is ``AAAA_SSS_EEE_LL``: actor (1001-1091), sentence (12 codes), acted
emotion (6 codes) and intensity level (LO/MD/HI for sentence IEO, XX otherwise).
The acted emotion from the file name is the label everywhere in fer-mm; the raters'
perceived emotion (``processedResults``) is a different target and is never mixed in.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from fer_mm.vocab import EMOTIONS

SENTENCES = ("DFA", "IEO", "IOM", "ITH", "ITS", "IWL", "IWW", "MTI", "TAI", "TIE", "TSI", "WSI")
SENTENCE_TEXT = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
LEVELS = ("LO", "MD", "HI", "XX")
ACTORS = tuple(range(1001, 1092))
# The one sentence recorded at three intensities; all others are at XX (unspecified).
LEVELLED_SENTENCE = "IEO"

# The 20 sentence/emotion combinations the release lacks (7,462 possible, 7,442 released).
MISSING_FROM_RELEASE = frozenset(
    [(1002, "TIE", "NEU"), (1076, "ITS", "NEU")]
    + [(actor, sentence, e) for actor, sentence in ((1008, "WSI"), (1009, "MTI"), (1019, "ITH")) for e in EMOTIONS]
)

# Clips of the release that are broken; excluded from the index by default.
KNOWN_DEFECTS = {
    "1076_MTI_SAD_XX": "known defect: no audio, very short",
    "1076_MTI_NEU_XX": "known defect: very short, no audio in the video",
    "1064_TIE_SAD_XX": "known defect: the video has no duration",
    "1064_IEO_DIS_MD": "known defect: one minute long, holds all emotions of its sentence",
}

NAME_RE = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")
VIDEO_DIR, AUDIO_DIR, DEMOGRAPHICS_FILE = "VideoFlash", "AudioWAV", "VideoDemographics.csv"
VIDEO_EXT, AUDIO_EXT = ".flv", ".wav"


@dataclass(frozen=True)
class ClipName:
    actor: int
    sentence: str
    emotion: str
    level: str

    @property
    def name(self) -> str:
        return f"{self.actor}_{self.sentence}_{self.emotion}_{self.level}"

    @property
    def label(self) -> int:
        return EMOTIONS.index(self.emotion)


def parse_name(name: str) -> ClipName:
    """Parse ``AAAA_SSS_EEE_LL``; raise ``ValueError`` naming the part that is wrong."""
    m = NAME_RE.match(name)
    if not m:
        raise ValueError(f"{name!r} is not a CREMA-D clip name (expected AAAA_SSS_EEE_LL, e.g. 1001_DFA_ANG_XX)")
    actor, sentence, emotion, level = int(m["actor"]), m["sentence"], m["emotion"], m["level"]
    if actor not in ACTORS:
        raise ValueError(f"{name!r}: actor {actor} is outside 1001-1091")
    if sentence not in SENTENCES:
        raise ValueError(f"{name!r}: unknown sentence code {sentence!r}")
    if emotion not in EMOTIONS:
        raise ValueError(f"{name!r}: unknown emotion code {emotion!r} (one of {', '.join(EMOTIONS)})")
    if level not in LEVELS:
        raise ValueError(f"{name!r}: unknown level {level!r} (one of {', '.join(LEVELS)})")
    return ClipName(actor, sentence, emotion, level)


def release_names(actors: Iterable[int] = ACTORS, sentences: Iterable[str] = SENTENCES) -> list[str]:
    """The clip names the real release holds for these actors and sentences, sorted."""
    names = []
    for actor in actors:
        for sentence in sentences:
            for emotion in EMOTIONS:
                if (actor, sentence, emotion) in MISSING_FROM_RELEASE:
                    continue
                if sentence == LEVELLED_SENTENCE and emotion != "NEU":
                    levels = ("LO", "MD", "HI")
                else:
                    levels = ("XX",)
                names += [f"{actor}_{sentence}_{emotion}_{level}" for level in levels]
    return sorted(names)


def read_demographics(path: Path) -> pd.DataFrame:
    """``VideoDemographics.csv`` as a frame indexed by actor id (age, sex, race, ethnicity)."""
    df = pd.read_csv(path)
    df = df.rename(columns=str.lower).rename(columns={"actorid": "actor"})
    return df.set_index("actor")


def index_from_names(names: Iterable[str], exclude_known_defects: bool = True) -> tuple[pd.DataFrame, dict[str, str]]:
    """Index frame (one row per clip) from clip names, and the excluded clips with reasons."""
    rows, excluded = [], {}
    for name in sorted(set(names)):
        clip = parse_name(name)
        if exclude_known_defects and name in KNOWN_DEFECTS:
            excluded[name] = KNOWN_DEFECTS[name]
            continue
        rows.append(dict(name=name, actor=clip.actor, sentence=clip.sentence, emotion=clip.emotion,
                         level=clip.level, label=clip.label))
    return pd.DataFrame(rows, columns=["name", "actor", "sentence", "emotion", "level", "label"]), excluded


@dataclass
class DatasetScan:
    """What a CREMA-D root holds: paired clips, and every file that cannot be used, with the reason."""

    index: pd.DataFrame  # name, actor, sentence, emotion, level, label, video_path, audio_path
    problems: dict[str, str]  # clip name or file path -> reason
    demographics: pd.DataFrame | None


def scan_root(root: Path, exclude_known_defects: bool = True) -> DatasetScan:
    """Pair ``VideoFlash/<name>.flv`` with ``AudioWAV/<name>.wav`` under a CREMA-D root.

    Stray files (a name that is not a clip name, another extension) and unpaired clips are
    reported, not indexed. Content checks (empty, truncated, git-lfs pointers) happen in
    preprocessing, where the files are opened anyway.
    """
    root = Path(root)
    video_dir, audio_dir = root / VIDEO_DIR, root / AUDIO_DIR
    if not video_dir.is_dir() and not audio_dir.is_dir():
        raise FileNotFoundError(
            f"{root} is not a CREMA-D root: it has neither {VIDEO_DIR}/ nor {AUDIO_DIR}/ "
            f"(set data.root to the folder that holds them)"
        )
    problems: dict[str, str] = {}

    def collect(folder: Path, ext: str) -> dict[str, Path]:
        found = {}
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            rel = f"{folder.name}/{path.name}"
            if path.is_dir() or path.name.startswith("."):
                continue
            if path.suffix.lower() != ext:
                problems[rel] = f"stray file: expected only *{ext} files in {folder.name}/"
                continue
            try:
                parse_name(path.stem)
            except ValueError as err:
                problems[rel] = f"stray file: {err}"
                continue
            found[path.stem] = path
        return found

    videos, audios = collect(video_dir, VIDEO_EXT), collect(audio_dir, AUDIO_EXT)
    for name in sorted(set(videos) ^ set(audios)):
        missing = f"{AUDIO_DIR}/{name}{AUDIO_EXT}" if name in videos else f"{VIDEO_DIR}/{name}{VIDEO_EXT}"
        problems[name] = f"unpaired: {missing} is missing"
    index, excluded = index_from_names(set(videos) & set(audios), exclude_known_defects)
    problems.update(excluded)
    index["video_path"] = [str(videos[n]) for n in index["name"]]
    index["audio_path"] = [str(audios[n]) for n in index["name"]]
    demo_path = root / DEMOGRAPHICS_FILE
    demographics = read_demographics(demo_path) if demo_path.is_file() else None
    return DatasetScan(index=index, problems=problems, demographics=demographics)


def write_demographics(path: Path, rows: list[dict]) -> None:
    """Write ``VideoDemographics.csv`` in the release's format (quoted strings)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        writer.writerow(["ActorID", "Age", "Sex", "Race", "Ethnicity"])
        for r in rows:
            writer.writerow([r["actor"], r["age"], r["sex"], r["race"], r["ethnicity"]])
