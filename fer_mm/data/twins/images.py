"""Synthetic twins of two image FER sets, FER2013 and CK+, in their released formats.

Like the CREMA-D twin (:mod:`fer_mm.data.twins.crema_d`), they stand in where the real sets cannot
be downloaded, and they are written exactly as released, so real data takes the same code path:

- FER2013: one ``fer2013.csv`` (``emotion,pixels,Usage``; 48x48 gray faces cropped loosely as the
  release's are). The release has no subject ids; the twin's subjects are disjoint across the
  three Usage parts (about 80/10/10), so every split of it is subject-independent, and its class
  frequencies follow the release's (happy most, disgust fewest).
- CK+: ``cohn-kanade-images/Sxxx/yyy/Sxxx_yyy_zzzzzzzz.png`` (640x490 gray; about 1 sequence in 15
  in colour, as in the release), each sequence from a neutral first frame to the peak of an
  expression at its last; ``Emotion/`` files for about ``labelled_share`` of the sequences and
  ``FACS/`` files for all of them, spelled as the release spells them.

Faces are the CREMA-D twin's renderer, expressions the emotions' action units (AUs): CREMA-D's
table for the six emotions it shares, plus surprise and contempt.

Difficulty (FER2013 only): each image *displays* its labelled emotion with probability
``1 - difficulty``, otherwise another class drawn uniformly; the label stays the labelled one.
``displays.csv`` records both, and ``SYNTHETIC.json`` the Bayes ceiling that follows (the best
accuracy a model can expect from the displays; a little above ``1 - difficulty``, since a rare
class's display is better guessed as a frequent one).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from fer_mm.data.parallel import imap_progress
from fer_mm.data.sources import ckplus, fer2013
from fer_mm.data.twins.actors import AU_IDS, Actor
from fer_mm.data.twins.displays import keyed_rng
from fer_mm.data.twins.face import EMOTION_AUS, background, render_face
from fer_mm.data.twins.spec import SPEC_FILE, check_twin_folder
from fer_mm.files import write_atomic

FER2013_TWIN_KIND = "fer-mm synthetic FER2013 twin"
CKPLUS_TWIN_KIND = "fer-mm synthetic CK+ twin"
IMAGE_TWIN_VERSION = 1
DISPLAYS_FILE = "displays.csv"  # FER2013 twin: each row's label and displayed emotion

# AUs the CREMA-D table lacks. Surprise: brows up (1, 2), upper lids up (5), jaw dropped (26) and
# stretched open (27). Contempt: a dimpler (14) on one side of the mouth, with its corner raised.
SURPRISE_AUS = {1: 1.0, 2: 1.0, 5: 0.9, 26: 0.8, 27: 0.5}
CONTEMPT_AUS = {14: 1.0}
FER2013_AUS = {
    "angry": EMOTION_AUS["ANG"], "disgust": EMOTION_AUS["DIS"], "fear": EMOTION_AUS["FEA"],
    "happy": EMOTION_AUS["HAP"], "sad": EMOTION_AUS["SAD"], "surprise": SURPRISE_AUS, "neutral": EMOTION_AUS["NEU"],
}
CKPLUS_AUS = {
    "neutral": EMOTION_AUS["NEU"], "anger": EMOTION_AUS["ANG"], "contempt": CONTEMPT_AUS,
    "disgust": EMOTION_AUS["DIS"], "fear": EMOTION_AUS["FEA"], "happy": EMOTION_AUS["HAP"],
    "sadness": EMOTION_AUS["SAD"], "surprise": SURPRISE_AUS,
}
EXTRA_AUS = (14, 27)  # AUs that Actor.au_gain lacks (adding them there would change the CREMA-D twin)

# Class counts of the release: FER2013's 35,887 images; CK+'s 327 labelled sequences (codes 1..7).
FER2013_RELEASE_COUNTS = {"angry": 4953, "disgust": 547, "fear": 5121, "happy": 8989, "sad": 6077,
                          "surprise": 4002, "neutral": 6198}
CKPLUS_RELEASE_COUNTS = {"anger": 45, "contempt": 18, "disgust": 59, "fear": 25, "happy": 69, "sadness": 28,
                         "surprise": 83}
# the tables above index classes by the formats' class orders
assert tuple(FER2013_AUS) == tuple(FER2013_RELEASE_COUNTS) == fer2013.CLASS_NAMES
assert tuple(CKPLUS_AUS) == ckplus.CLASS_NAMES and tuple(CKPLUS_RELEASE_COUNTS) == ckplus.CLASS_NAMES[1:]
FER2013_SUBJECT_BASE = 100_000  # Actor ids: FER2013 subject i is actor 100000 + i; CK+ Sxxx is 200000 + xxx,
CKPLUS_SUBJECT_BASE = 200_000  # so neither twin shares a face with the other or with CREMA-D's 1001..1091
USAGE_SHARES = {"Training": 0.8, "PublicTest": 0.1, "PrivateTest": 0.1}
CKPLUS_FRAME_W, CKPLUS_FRAME_H = 640, 490
CKPLUS_VIEW_W = 340  # width of the rendered frame the camera sees, around the face: the face fills CK+'s frame
ACTIVE_AU = 0.1  # an AU at the peak weaker than this is not coded in the FACS file
_PIXEL_TEXT = [str(v) for v in range(256)]


# ---------------------------------------------------------------------------------- shared


def _gains(actor: Actor, seed: int) -> dict[int, float]:
    """How strongly this subject shows each AU (the renderer's actor gains, plus the AUs they lack)."""
    r = keyed_rng("au gain", seed, actor.actor)
    return {**actor.au_gain, **{au: float(r.uniform(0.55, 1.3)) for au in EXTRA_AUS}}


def _peak(aus: dict[int, float], strength: float, gains: dict[int, float]) -> dict[int, float]:
    return {au: w * strength * gains[au] for au, w in aus.items()}


def _render(actor: Actor, bg: np.ndarray, aus: dict[int, float], mouth_open: float, motion: tuple, blink: float,
            rng: np.random.Generator) -> np.ndarray:
    """``render_face`` given any of the AUs used here: it draws AU27 as a further jaw drop and
    AU14 as contempt's one-sided dimpled corner (its ``asym``)."""
    drawn = {au: v for au, v in aus.items() if au not in EXTRA_AUS}
    return render_face(actor, bg, drawn, mouth_open + 0.8 * aus.get(27, 0.0), motion, blink, rng,
                       asym=min(1.0, aus.get(14, 0.0)))


# ---------------------------------------------------------------------------------- FER2013

FER2013_KEYS = ("kind", "version", "subjects", "images_per_subject", "seed", "difficulty")  # what makes the twin


def _class_counts(n: int, release: dict[str, int], rare: str, rare_min: int = 3) -> np.ndarray:
    """``n`` images over the classes in the release's proportions (largest remainders), each class
    at least once and ``rare`` at least ``rare_min`` times where ``n`` allows; taken from the largest."""
    freq = np.array(list(release.values()), float)
    exact = n * freq / freq.sum()
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact)[: n - counts.sum()]] += 1
    floor = np.ones(len(counts), int) if n >= len(counts) else np.zeros(len(counts), int)
    floor[list(release).index(rare)] = rare_min if n >= 10 * rare_min else floor[0]
    for k in np.flatnonzero(counts < floor):
        need = floor[k] - counts[k]
        counts[k] += need
        for _ in range(need):
            counts[np.argmax(counts - floor)] -= 1
    return counts


def fer2013_ceiling(counts, difficulty: float) -> float:
    """Bayes ceiling of the displays: per displayed class, the best guess of the label given class counts."""
    counts = np.asarray(counts, float)
    k = len(counts)
    p = np.full((k, k), difficulty / (k - 1))  # label (rows) -> displayed (columns)
    np.fill_diagonal(p, 1 - difficulty)
    return float((counts[:, None] * p).max(axis=0).sum() / counts.sum())


def _fer2013_plan(n_subjects: int, images_per_subject: int, seed: int, difficulty: float):
    """Rows in file order, as (usage, subject, label, displayed); the subjects of each usage."""
    rng = keyed_rng("fer2013 plan", seed)
    order = rng.permutation(np.arange(1, n_subjects + 1))
    n_val = max(1, round(USAGE_SHARES["PublicTest"] * n_subjects))
    n_test = max(1, round(USAGE_SHARES["PrivateTest"] * n_subjects))
    parts = {"Training": order[n_val + n_test :], "PublicTest": order[:n_val], "PrivateTest": order[n_val : n_val + n_test]}
    k = len(fer2013.CLASS_NAMES)
    rows = []
    for usage, subjects in parts.items():  # the release lists Training, then PublicTest, then PrivateTest
        n = len(subjects) * images_per_subject
        labels = rng.permutation(np.repeat(np.arange(k), _class_counts(n, FER2013_RELEASE_COUNTS, "disgust")))
        owners = rng.permutation(np.repeat(np.sort(subjects), images_per_subject))
        for subject, label in zip(owners, labels):
            other = (label + 1 + rng.integers(k - 1)) % k  # any class but the label, uniformly
            rows.append((usage, int(subject), int(label), int(other if rng.random() < difficulty else label)))
    return rows, {usage: sorted(int(s) for s in subjects) for usage, subjects in parts.items()}


def fer2013_spec(n_subjects: int = 120, images_per_subject: int = 25, seed: int = 0, difficulty: float = 0.3) -> dict:
    """What the FER2013 twin's ``SYNTHETIC.json`` records: parameters, images per usage, ceilings."""
    if not 3 <= n_subjects < CKPLUS_SUBJECT_BASE - FER2013_SUBJECT_BASE:
        raise ValueError(f"subjects must be at least 3 (one per usage) and below 100000, got {n_subjects}")
    if images_per_subject < 1:
        raise ValueError(f"images_per_subject must be at least 1, got {images_per_subject}")
    if isinstance(difficulty, bool) or not 0.0 <= float(difficulty) <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1] (the share of images that display another class), got {difficulty}")
    difficulty = float(difficulty)
    rows, parts = _fer2013_plan(n_subjects, images_per_subject, seed, difficulty)
    k = len(fer2013.CLASS_NAMES)
    counts = {u: np.bincount([r[2] for r in rows if r[0] == u], minlength=k) for u in parts}
    total = sum(counts.values())
    return dict(kind=FER2013_TWIN_KIND, version=IMAGE_TWIN_VERSION, subjects=n_subjects,
                images_per_subject=images_per_subject, seed=seed, difficulty=difficulty,
                images={u: len(parts[u]) * images_per_subject for u in parts},
                subjects_per_usage={u: len(s) for u, s in parts.items()},
                classes={u: dict(zip(fer2013.CLASS_NAMES, c.tolist())) for u, c in counts.items()},
                ceiling=fer2013_ceiling(total, difficulty),
                ceilings={u: fer2013_ceiling(c, difficulty) for u, c in counts.items()},
                displayed_as_labelled=float(np.mean([r[2] == r[3] for r in rows])), displays=DISPLAYS_FILE)


def _fer2013_face(actor: Actor, bg: np.ndarray, gains: dict, displayed: str, rng: np.random.Generator) -> np.ndarray:
    """One 48x48 gray face displaying ``displayed``, cropped and scaled as FER2013's are."""
    strength = rng.uniform(0.35, 1.0)
    motion = (rng.uniform(-10, 10), rng.uniform(-8, 8), rng.uniform(0.9, 1.1))
    mouth = rng.uniform(0.0, 0.4) if rng.random() < 0.4 else 0.0
    blink = rng.uniform(0.6, 1.0) if rng.random() < 0.06 else 0.0
    frame = _render(actor, bg, _peak(FER2013_AUS[displayed], strength, gains), mouth, motion, blink, rng)
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    # the release's crops: roughly square, brow-to-chin tall with a little hair and background
    a = actor.half_width * motion[2]
    b = a * actor.aspect
    side = 2.0 * b * rng.uniform(0.94, 1.06)
    x = actor.center[0] + motion[0] + side * rng.uniform(-0.04, 0.04)
    y = actor.center[1] + motion[1] + 0.05 * b + side * rng.uniform(-0.04, 0.04)
    patch = cv2.getRectSubPix(gray, (int(round(side)), int(round(side * rng.uniform(0.97, 1.03)))), (x, y))
    face = cv2.resize(patch, (fer2013.SIZE, fer2013.SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    face = face * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)  # the release's exposure varies photo to photo
    if rng.random() < 0.5:
        face = face[:, ::-1]
    return face.round().clip(0, 255).astype(np.uint8)


def _fer2013_subject(job: tuple) -> dict[int, np.ndarray]:
    """One subject's images: {row index: 48x48 gray face}."""
    subject, seed, rows = job
    actor = Actor.make(FER2013_SUBJECT_BASE + subject, seed)
    bg, gains = background(actor), _gains(actor, seed)
    return {row: _fer2013_face(actor, bg, gains, fer2013.CLASS_NAMES[displayed], keyed_rng("fer2013 image", seed, row))
            for row, displayed in rows}


def generate_fer2013(out_dir: Path, n_subjects: int = 120, images_per_subject: int = 25, seed: int = 0,
                     difficulty: float = 0.3, workers: int = 0, progress: bool = True) -> Path:
    """Write the FER2013 twin (``fer2013.csv``, ``displays.csv``, ``SYNTHETIC.json``) under ``out_dir``.

    A folder that holds another twin (or a ``fer2013.csv`` of no twin) is refused; one that holds
    this twin whole is returned at once.
    """
    out_dir = Path(out_dir)
    spec = fer2013_spec(n_subjects, images_per_subject, seed, difficulty)
    csv_path = out_dir / fer2013.CSV_FILE
    old = check_twin_folder(out_dir, spec, FER2013_KEYS, csv_path)
    if old is not None and csv_path.exists():  # the csv is written last
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, _ = _fer2013_plan(n_subjects, images_per_subject, seed, spec["difficulty"])
    names = fer2013.CLASS_NAMES
    # the spec first: an interrupted run leaves a folder that says which twin it is
    write_atomic(out_dir / SPEC_FILE, json.dumps(spec, indent=2) + "\n")
    write_atomic(out_dir / DISPLAYS_FILE, "row,subject,label,displayed\n" + "".join(
        f"{i},{subject},{names[label]},{names[shown]}\n" for i, (_, subject, label, shown) in enumerate(rows)))
    by_subject: dict[int, list] = {}
    for i, (_, subject, _, shown) in enumerate(rows):
        by_subject.setdefault(subject, []).append((i, shown))
    jobs = [(subject, seed, by_subject[subject]) for subject in sorted(by_subject)]
    faces: dict[int, np.ndarray] = {}
    for done in imap_progress(_fer2013_subject, jobs, workers, "rendering FER2013 subjects", progress):
        faces.update(done)
    lines = [",".join(fer2013.COLUMNS)]
    lines += [f"{label},{' '.join([_PIXEL_TEXT[v] for v in faces[i].ravel().tolist()])},{usage}"
              for i, (usage, _, label, _) in enumerate(rows)]
    write_atomic(csv_path, "\n".join(lines) + "\n")
    return out_dir


# ---------------------------------------------------------------------------------- CK+

CKPLUS_KEYS = ("kind", "version", "subjects", "seed", "labelled_share")  # what makes the twin


def _ckplus_plan(n_subjects: int, seed: int, labelled_share: float) -> list[dict]:
    """The sequences in order: subject and sequence names, emotion shown, labelled, frames, colour."""
    rng = keyed_rng("ckplus plan", seed)
    numbers = np.sort(rng.choice(np.arange(5, 1000), n_subjects, replace=False))
    emotions = list(CKPLUS_RELEASE_COUNTS)
    p = np.array(list(CKPLUS_RELEASE_COUNTS.values()), float)
    p /= p.sum()
    plan = []
    for number in numbers:
        n = int(rng.integers(3, 9))
        seq_numbers = np.sort(rng.choice(np.arange(1, n + 4), n, replace=False))  # the release skips some
        # a subject poses each emotion at most once, but for an eighth sequence
        shown = rng.choice(len(emotions), min(n, len(emotions)), replace=False, p=p).tolist()
        shown += rng.choice(len(emotions), n - len(shown), p=p).tolist()
        for seq, e in zip(seq_numbers, shown):
            plan.append(dict(subject=f"S{number:03d}", sequence=f"{seq:03d}", emotion=emotions[e], labelled=False,
                             frames=int(rng.integers(8, 26)), colour=bool(rng.random() < 1 / 15)))
    for i in rng.choice(len(plan), int(round(labelled_share * len(plan))), replace=False):
        plan[i]["labelled"] = True
    return plan


def ckplus_spec(n_subjects: int = 24, seed: int = 0, labelled_share: float = 0.55) -> dict:
    """What the CK+ twin's ``SYNTHETIC.json`` records: parameters and counts."""
    if not 1 <= n_subjects <= 995:
        raise ValueError(f"subjects must be in 1..995 (CK+ names them S005..S999), got {n_subjects}")
    if isinstance(labelled_share, bool) or not 0.0 <= float(labelled_share) <= 1.0:
        raise ValueError(f"labelled_share must be in [0, 1], got {labelled_share}")
    labelled_share = float(labelled_share)
    plan = _ckplus_plan(n_subjects, seed, labelled_share)
    labelled = [s["emotion"] for s in plan if s["labelled"]]
    return dict(kind=CKPLUS_TWIN_KIND, version=IMAGE_TWIN_VERSION, subjects=n_subjects, seed=seed,
                labelled_share=labelled_share, sequences=len(plan), labelled_sequences=len(labelled),
                frames=sum(s["frames"] for s in plan), colour_sequences=sum(s["colour"] for s in plan),
                labelled_classes={e: labelled.count(e) for e in CKPLUS_RELEASE_COUNTS})


def _last_stem(seq: dict) -> str:
    return f"{seq['subject']}_{seq['sequence']}_{seq['frames']:08d}"


def _facs_path(root: Path, seq: dict) -> Path:
    return root / ckplus.FACS_DIR / seq["subject"] / seq["sequence"] / f"{_last_stem(seq)}_facs.txt"


def _ckplus_sequence(root: Path, actor: Actor, bg: np.ndarray, gains: dict, exposure: np.ndarray, seq: dict,
                     seed: int) -> None:
    rng = keyed_rng("ckplus sequence", seed, seq["subject"], seq["sequence"])
    aus = dict(CKPLUS_AUS[seq["emotion"]])
    if not seq["labelled"]:  # the release left non-prototypic expressions unlabelled: drop some AUs, add others
        aus = {au: w for au, w in aus.items() if rng.random() < 0.7}
        for au in rng.choice(AU_IDS, int(rng.integers(1, 3)), replace=False):
            aus[int(au)] = float(rng.uniform(0.4, 1.0))
    peak = _peak(aus, rng.uniform(0.6, 1.0), gains)
    n = seq["frames"]
    lead = int(rng.integers(1, 4))  # frames before the onset: the first is always neutral
    w = np.clip((np.arange(n) - lead + 1) / max(n - lead, 1), 0, 1)
    temporal = w * w * (3 - 2 * w)  # smooth onset, apex at the last frame
    mouth = rng.uniform(0.0, 0.3)
    drift = (rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-0.03, 0.03))
    blink_at = int(rng.integers(1, n - 2)) if rng.random() < 0.3 else -1
    # the camera is fixed: a window of the rendered frame around the subject's face, scaled up to CK+'s frame
    view = (CKPLUS_VIEW_W, int(round(CKPLUS_VIEW_W * CKPLUS_FRAME_H / CKPLUS_FRAME_W)))
    centre = (float(np.clip(actor.center[0], view[0] / 2, bg.shape[1] - view[0] / 2)),
              float(np.clip(actor.center[1] + 10, view[1] / 2, bg.shape[0] - view[1] / 2)))
    folder = root / ckplus.IMAGES_DIR / seq["subject"] / seq["sequence"]
    folder.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(temporal):
        motion = (drift[0] * t + rng.normal(0, 0.3), drift[1] * t + rng.normal(0, 0.3), 1 + drift[2] * t)
        blink = 0.9 if i == blink_at else 0.0
        frame = _render(actor, bg, {au: v * t for au, v in peak.items()}, mouth * t, motion, blink, rng)
        frame = cv2.LUT(cv2.resize(cv2.getRectSubPix(frame, view, centre), (CKPLUS_FRAME_W, CKPLUS_FRAME_H),
                                   interpolation=cv2.INTER_LINEAR), exposure)
        if not seq["colour"]:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        png = cv2.imencode(".png", frame)[1].tobytes()
        write_atomic(folder / f"{seq['subject']}_{seq['sequence']}_{i + 1:08d}.png", png)
    stem = _last_stem(seq)
    if seq["labelled"]:
        code = next(k for k, name in ckplus.EMOTION_CODES.items() if name == seq["emotion"])
        path = root / ckplus.EMOTION_DIR / seq["subject"] / seq["sequence"] / f"{stem}_emotion.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, f"   {float(code):.7e}\n")
    lines = []
    for au in sorted(a for a, v in peak.items() if v > ACTIVE_AU):
        # FACS A..E from the strength; the release left some intensities uncoded (0)
        level = 0 if rng.random() < 0.1 else 1 + min(4, int(peak[au] * 5))
        lines.append(f"   {float(au):.7e}   {float(level):.7e}\n")
    path = _facs_path(root, seq)  # written last: it marks the sequence done
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(lines))


def _ckplus_subject(job: tuple) -> str:
    """Write one subject's sequences that are not done yet."""
    root, seed, subject, sequences = job
    root = Path(root)
    actor = Actor.make(CKPLUS_SUBJECT_BASE + int(subject[1:]), seed)
    bg, gains = background(actor), _gains(actor, seed)
    # the studio exposes each subject's face well (skin near gray 165), as the release's lighting does;
    # it also keeps the eyes darker than the cheeks, which the Haar cascade looks for
    skin = 0.114 * actor.skin[0] + 0.587 * actor.skin[1] + 0.299 * actor.skin[2]
    gamma = float(np.clip(np.log(165 / 255) / np.log(skin / 255), 0.4, 1.0))
    exposure = (255 * (np.arange(256) / 255) ** gamma).round().astype(np.uint8)
    for seq in sequences:
        _ckplus_sequence(root, actor, bg, gains, exposure, seq, seed)
    return subject


def generate_ckplus(out_dir: Path, n_subjects: int = 24, seed: int = 0, labelled_share: float = 0.55,
                    workers: int = 0, progress: bool = True) -> Path:
    """Write the CK+ twin (``cohn-kanade-images/``, ``Emotion/``, ``FACS/``, ``SYNTHETIC.json``) under ``out_dir``.

    Sequences already written are kept, so a crashed run resumes. A folder that holds another twin
    (or CK+ images of no twin) is refused; one that holds this twin whole is returned at once.
    """
    out_dir = Path(out_dir)
    spec = ckplus_spec(n_subjects, seed, labelled_share)
    old = check_twin_folder(out_dir, spec, CKPLUS_KEYS, out_dir / ckplus.IMAGES_DIR)
    plan = _ckplus_plan(n_subjects, seed, spec["labelled_share"])
    todo = [seq for seq in plan if not _facs_path(out_dir, seq).exists()]
    if old is not None and not todo:
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / SPEC_FILE, json.dumps(spec, indent=2) + "\n")  # first: the folder says which twin it is
    by_subject: dict[str, list] = {}
    for seq in todo:
        by_subject.setdefault(seq["subject"], []).append(seq)
    jobs = [(str(out_dir), seed, subject, seqs) for subject, seqs in sorted(by_subject.items())]
    for _ in imap_progress(_ckplus_subject, jobs, workers, "rendering CK+ subjects", progress):
        pass
    return out_dir
