"""The files an ``input`` names: a video or image, a folder of them, or a CREMA-D root."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fer_mm.data.sources.folders import IMAGE_EXTENSIONS
from fer_mm.data.sources.crema_d import AUDIO_DIR, VIDEO_DIR, scan_root

log = logging.getLogger("fer_mm.predict")  # the predict command's log, where its lines have always been

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".flv")


@dataclass
class Source:
    """One input to predict: a video file, with its WAV when it comes from a CREMA-D root."""

    video: str
    audio: str | None = None

    @property
    def name(self) -> str:
        return Path(self.video).stem


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def find_inputs(path: str | Path) -> list[Source]:
    """A file, a folder of videos and images (searched recursively), or a CREMA-D root (video + WAV pairs)."""
    p = Path(path)
    if p.is_file():
        return [Source(str(p))]
    if not p.is_dir():
        raise FileNotFoundError(f"input={p}: no such file or folder")
    if (p / VIDEO_DIR).is_dir() and (p / AUDIO_DIR).is_dir():  # a CREMA-D root: pairs as training reads them
        scan = scan_root(p, exclude_known_defects=False)
        sources = [Source(r.video_path, r.audio_path) for r in scan.index.itertuples()]
        for name, reason in scan.problems.items():
            log.warning("input %s: %s", name, reason)
        if sources:
            return sources
    media = VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in media)
    if not files:
        raise FileNotFoundError(f"input={p}: no video or image file ({', '.join(media)}) in the folder")
    return [Source(str(f)) for f in files]
