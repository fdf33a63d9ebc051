"""FER2013 and CK+ test data made independently of the project's writers, with the quirks real
copies have: a csv with quoted fields and Windows line endings; CK+ frames of two sizes, unlabelled
sequences, a FACS file spelled differently, a stray ``.DS_Store``, frame numbers that start late.
The faces are drawn by the twin's renderer (so that a Haar-trained model finds them); everything
else (expressions, crops, names, file text) is written here."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import cv2
import numpy as np

from fer_mm.data.twins.actors import Actor
from fer_mm.data.twins.face import background, render_face

# Expressions of this module's own: AU weights, plus a one-sided mouth corner for contempt.
EXPRESSIONS = {
    "angry": ({4: 0.9, 7: 0.7, 23: 0.7}, 0.0),
    "contempt": ({}, 0.8),
    "disgust": ({9: 0.9, 10: 0.8}, 0.0),
    "fear": ({1: 0.9, 2: 0.8, 4: 0.4, 5: 0.4, 20: 0.8}, 0.0),
    "happy": ({6: 0.8, 12: 0.9}, 0.0),
    "sad": ({1: 0.7, 4: 0.5, 15: 0.8}, 0.0),
    "surprise": ({1: 0.9, 2: 0.9, 5: 0.4, 26: 0.8}, 0.0),
    "neutral": ({}, 0.0),
}
FER2013_ORDER = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # the release's 0..6
CKPLUS_CODES = {"angry": 1, "contempt": 2, "disgust": 3, "fear": 4, "happy": 5, "sad": 6, "surprise": 7}


def face(actor_id: int, expression: str, strength: float = 1.0, seed: int = 3) -> np.ndarray:
    """A 480x360 BGR frame of a synthetic person showing ``expression`` at ``strength`` (0: neutral)."""
    person = Actor.make(actor_id, seed)
    aus, asym = EXPRESSIONS[expression]
    rng = np.random.default_rng([actor_id, seed, int(strength * 1000)])
    return render_face(person, background(person), {au: w * strength for au, w in aus.items()}, 0.1 * strength,
                       (0.0, 0.0, 1.0), 0.0, rng, asym=asym * strength)


def write_fer2013_csv(path: Path, n: int = 42, seed: int = 0) -> list[tuple[int, np.ndarray, str]]:
    """A FER2013-format csv of ``n`` (at least 7) faces; returns the rows written: (emotion, 48x48 pixels, Usage).

    Every label occurs, every Usage at least once, in shuffled order; one row in four has its
    pixels (and Usage) quoted; lines end in \\r\\n (the csv module's default).
    """
    if n < 7:
        raise ValueError("n must be at least 7: one row per label")
    shuffle = random.Random(seed)
    usages = ["PublicTest", "PrivateTest", "Training"] + [shuffle.choice(["Training"] * 8 + ["PublicTest", "PrivateTest"])
                                                          for _ in range(n - 3)]
    shuffle.shuffle(usages)
    rows = []
    with open(path, "w", newline="") as f:
        plain, quoted = csv.writer(f), csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        plain.writerow(["emotion", "pixels", "Usage"])
        for i, usage in enumerate(usages):
            label = i % 7
            frame = face(9000 + i % 5, FER2013_ORDER[label], strength=0.6 + 0.4 * ((i * 7) % 5) / 4, seed=seed)
            person = Actor.make(9000 + i % 5, seed)
            # a square from the brows' height to below the chin, wider than the face
            x, y, half = int(person.center[0]), int(person.center[1] + 8), int(person.half_width * 1.45)
            gray = cv2.cvtColor(frame[y - half : y + half, x - half : x + half], cv2.COLOR_BGR2GRAY)
            pixels = cv2.resize(gray, (48, 48), interpolation=cv2.INTER_LINEAR)
            text = " ".join(str(int(v)) for v in pixels.flat)
            (quoted if i % 4 == 1 else plain).writerow([label, text, usage])
            rows.append((label, pixels, usage))
    return rows


# (subject, sequence, expression or None where unlabelled, first frame number, frames, colour 640x480)
CKPLUS_SEQUENCES = (
    ("S052", "001", "happy", 1, 5, False),
    ("S052", "002", "angry", 1, 4, False),
    ("S052", "004", None, 1, 4, False),
    ("S055", "001", "surprise", 1, 5, False),
    ("S055", "003", "disgust", 1, 4, False),
    ("S074", "001", "sad", 1, 4, False),
    ("S074", "002", "happy", 3, 5, False),  # frames 00000003..00000007, as where the first ones were dropped
    ("S074", "005", None, 1, 4, False),
    ("S106", "001", "contempt", 1, 4, True),
    ("S106", "002", "fear", 1, 5, True),
    ("S130", "001", "angry", 1, 4, False),
    ("S130", "002", "surprise", 1, 4, False),
    ("S130", "003", None, 1, 5, False),
)
CKPLUS_ACTORS = {"S052": 9101, "S055": 9102, "S074": 9103, "S106": 9105, "S130": 9106}
ODD_FACS = ("S130", "003")  # its FACS file: two-space separators, no newline at the end
STRAY_FILE = Path("cohn-kanade-images") / "S055" / ".DS_Store"


def _ck_frame(bgr: np.ndarray, colour: bool) -> np.ndarray:
    if colour:  # 640x480 colour frames, as some of the release's subjects have
        return cv2.resize(bgr, (640, 480), interpolation=cv2.INTER_CUBIC)
    gray = cv2.cvtColor(cv2.resize(bgr, (640, 480), interpolation=cv2.INTER_CUBIC), cv2.COLOR_BGR2GRAY)
    return cv2.copyMakeBorder(gray, 5, 5, 0, 0, cv2.BORDER_REPLICATE)  # 640x490 gray, the usual size


def write_ckplus_folder(root: Path, seed: int = 3) -> list[dict]:
    """A CK+-layout folder of 5 subjects (each with at least 2 labelled sequences); returns its
    sequences: subject, sequence, label code (None: unlabelled), frame paths, peak frame, size."""
    root = Path(root)
    out = []
    for subject, sequence, expression, first, n, colour in CKPLUS_SEQUENCES:
        folder = root / "cohn-kanade-images" / subject / sequence
        folder.mkdir(parents=True, exist_ok=True)
        shown = expression or ("happy" if subject == "S052" else "sad")  # unlabelled ones still show something
        frames = []
        for k in range(n):
            img = _ck_frame(face(CKPLUS_ACTORS[subject], shown, strength=k / (n - 1), seed=seed), colour)
            path = folder / f"{subject}_{sequence}_{first + k:08d}.png"
            cv2.imwrite(str(path), img)
            frames.append(path)
        stem = frames[-1].stem
        if expression is not None:
            emotion = root / "Emotion" / subject / sequence / f"{stem}_emotion.txt"
            emotion.parent.mkdir(parents=True, exist_ok=True)
            emotion.write_text("   %.7e\n" % CKPLUS_CODES[expression])
        aus, asym = EXPRESSIONS[shown]
        coded = sorted(aus.items()) + ([(14, asym)] if asym else [])
        facs = root / "FACS" / subject / sequence / f"{stem}_facs.txt"
        facs.parent.mkdir(parents=True, exist_ok=True)
        if (subject, sequence) == ODD_FACS:
            facs.write_text("\n".join("  %.7e  %.7e" % (au, round(w * 4)) for au, w in coded))
        else:
            facs.write_text("".join("   %.7e   %.7e\n" % (au, 0 if au == 5 else round(w * 4)) for au, w in coded))
        out.append(dict(subject=subject, sequence=sequence,
                        label=CKPLUS_CODES[expression] if expression else None, frames=frames, peak=frames[-1],
                        size=(640, 480) if colour else (640, 490), colour=colour))
    (root / STRAY_FILE).write_bytes(b"\x00\x00\x00\x01Bud1")  # macOS Finder's metadata, as zips made on a Mac hold
    return out
