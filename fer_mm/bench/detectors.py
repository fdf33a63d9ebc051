"""The ``detectors`` benchmark: face detectors' recall and speed on synthetic frames with a known face.

:func:`recall_table` measures detectors on synthetic frames (the twin's face renderer, at several
sizes and poses, on cluttered 640x480 frames with a known true box); :func:`twin_table` checks them
on a twin's real-format videos. Both run from the command line::

    python -m fer_mm.bench detectors --detector haar --detector yunet --n 40
    python -m fer_mm.bench detectors --detector haar --detector yunet --twin datasets/crema_d_twin/40x4_published_seed0

The renders are cartoon faces, not real ones: the table ranks detectors by how they cope with
size, roll, yaw (approximated by a horizontal squeeze), occlusion, low light and blur, and by how
often they fire on clutter; it does not give their recall on real faces.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from fer_mm.data.media.faces import make_detector
from fer_mm.data.media.video import decode_gray, sample_frame_indices
from fer_mm.data.sources.crema_d import VIDEO_DIR, VIDEO_EXT, parse_name
from fer_mm.data.twins.actors import Actor
from fer_mm.data.twins.face import EMOTION_AUS, FRAME_H, FRAME_W, render_face
from fer_mm.data.twins.spec import read_spec

FRAME = (640, 480)  # width, height of the benchmark frames


@dataclass(frozen=True)
class Condition:
    """How the faces of one row of :func:`recall_table` are drawn (``None``: frames without a face)."""

    name: str
    width: tuple[float, float] | None = (80, 200)  # face ellipse width in px (before the squeeze), log-uniform
    roll: float = 0.0  # in-plane rotation, uniform in +-roll degrees
    squeeze: tuple[float, float] = (1.0, 1.0)  # horizontal scale: a stand-in for yaw
    occlude: bool = False  # a bar over the lower 45% of the face (a mask) or one side (a hand)
    dark: bool = False  # gain 0.25, sensor noise
    blur: float = 0.0  # Gaussian blur sigma, px


CONDITIONS = (
    *(Condition(f"frontal w={w}", (w, w)) for w in (24, 32, 48, 64, 96, 144, 200, 300)),
    Condition("roll +-20", roll=20),
    Condition("roll +-40", roll=40),
    Condition("squeeze 0.7 (yaw ~45)", squeeze=(0.7, 0.7)),
    Condition("squeeze 0.5 (yaw ~60)", squeeze=(0.5, 0.5)),
    Condition("occluded", occlude=True),
    Condition("dark", dark=True),
    Condition("blur s=3", blur=3.0),
    Condition("mixed", width=(24, 300), roll=40, squeeze=(0.5, 1.0)),  # plus random occlusion, dark, blur
    Condition("no face", width=None),
)

_REF_HALF_WIDTH = 100.0  # the face is rendered once at this size, then warped to the wanted one
_REF_CENTER = (240.0, 180.0)


def _clutter(rng: np.random.Generator, size=FRAME) -> np.ndarray:
    """A busy BGR background: gradient, shapes, lines and texture (no faces)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    grad = 1 + rng.uniform(-0.3, 0.3) * (xx / w - 0.5) + rng.uniform(-0.3, 0.3) * (yy / h - 0.5)
    img = (base[None, None] * grad[..., None]).clip(0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(8, 20))):
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        kind = rng.integers(3)
        p = rng.uniform([0, 0], [w, h]).astype(int)
        if kind == 0:
            q = p + rng.uniform(20, 200, 2).astype(int)
            cv2.rectangle(img, tuple(map(int, p)), tuple(map(int, q)), colour, -1)
        elif kind == 1:
            axes = tuple(int(v) for v in rng.uniform(8, 80, 2))
            cv2.ellipse(img, tuple(map(int, p)), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        else:
            q = rng.uniform([0, 0], [w, h]).astype(int)
            cv2.line(img, tuple(map(int, p)), tuple(map(int, q)), colour, int(rng.integers(1, 6)), cv2.LINE_AA)
    img = img.astype(np.float32) + rng.normal(0, 6, (h, w, 1))
    return cv2.GaussianBlur(img.clip(0, 255).astype(np.uint8), (3, 3), 0)


def _face_sprite(rng: np.random.Generator, seed: int) -> tuple[np.ndarray, np.ndarray, object]:
    """A rendered face (BGR float), its alpha matte and its actor, at the reference size and place.

    The renderer draws on a background; rendering on two flat ones with the same noise gives the
    matte (everything it draws, blur included, is linear in the background).
    """
    actor = replace(Actor.make(int(rng.integers(1, 10_000)), seed), center=_REF_CENTER, half_width=_REF_HALF_WIDTH)
    emotion = list(EMOTION_AUS)[int(rng.integers(len(EMOTION_AUS)))]
    aus = {au: w * rng.uniform(0.3, 1.0) for au, w in EMOTION_AUS[emotion].items()}
    mouth = float(rng.uniform(0, 1))
    state = int(rng.integers(2**31))
    lo, hi = 60.0, 190.0
    renders = [render_face(actor, np.full((FRAME_H, FRAME_W, 3), v, np.uint8), aus, mouth, (0, 0, 1), 0.0,
                           np.random.default_rng(state)).astype(np.float32) for v in (lo, hi)]
    alpha = np.clip(1 - (renders[1] - renders[0]).mean(axis=2) / (hi - lo), 0, 1)
    colour = (renders[0] - (1 - alpha[..., None]) * lo)  # premultiplied
    return colour, alpha, actor


def synthetic_frame(condition: Condition, rng: np.random.Generator, seed: int = 0,
                    size=FRAME) -> tuple[np.ndarray, np.ndarray | None]:
    """One grayscale frame of ``condition`` and its true box (x, y, w, h), or None without a face.

    The true box is the axis-aligned bounding box of the face ellipse (forehead to chin, cheek to
    cheek; hair excluded) after the frame's rotation, squeeze, scaling and placement.
    """
    w, h = size
    bg = _clutter(rng, size).astype(np.float32)
    if condition.width is None:
        return cv2.cvtColor(bg.astype(np.uint8), cv2.COLOR_BGR2GRAY), None
    mixed = condition.name == "mixed"
    colour, alpha, actor = _face_sprite(rng, seed)
    a, b = _REF_HALF_WIDTH, _REF_HALF_WIDTH * actor.aspect
    cx, cy = _REF_CENTER
    occlude = condition.occlude or (mixed and rng.random() < 0.25)
    if occlude:
        shade = tuple(float(v) for v in rng.uniform(0, 255, 3))
        if rng.random() < 0.5:  # a mask over nose and mouth
            box = (cx - 1.1 * a, cy + 0.1 * b, cx + 1.1 * a, cy + 1.1 * b)
        else:  # a hand over one side
            side = rng.choice([-1, 1])
            box = (cx + side * 0.2 * a, cy - 1.1 * b, cx + side * 1.1 * a, cy + 1.1 * b)
        x0, x1 = sorted((int(box[0]), int(box[2])))
        cv2.rectangle(colour, (x0, int(box[1])), (x1, int(box[3])), shade, -1)
        cv2.rectangle(alpha, (x0, int(box[1])), (x1, int(box[3])), 1.0, -1)
    lo_w, hi_w = condition.width
    width = float(np.exp(rng.uniform(np.log(lo_w), np.log(hi_w))))
    squeeze = float(rng.uniform(*condition.squeeze))
    roll = np.deg2rad(rng.uniform(-condition.roll, condition.roll))
    s = width / (2 * a)
    # face centre -> origin, squeeze x, scale, rotate, -> a random place where the face fits
    lin = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]]) @ np.diag([s * squeeze, s])
    t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    ellipse = lin @ np.stack([a * np.cos(t), b * np.sin(t)])
    lo_c, hi_c = -ellipse.min(axis=1), np.array([w, h]) - ellipse.max(axis=1)
    centre = rng.uniform(lo_c, np.maximum(hi_c, lo_c + 1))
    m = np.hstack([lin, (centre - lin @ np.array([cx, cy]))[:, None]])
    warped = cv2.warpAffine(colour, m, size, flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    matte = cv2.warpAffine(alpha, m, size, flags=cv2.INTER_LINEAR)
    img = warped + (1 - matte[..., None]) * bg
    gray = cv2.cvtColor(img.clip(0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    if condition.dark or (mixed and rng.random() < 0.25):
        gray = gray * 0.25 + rng.normal(0, 3, gray.shape)
    sigma = condition.blur or (rng.choice([0.0, 2.0, 3.0]) if mixed else 0.0)
    if sigma:
        gray = cv2.GaussianBlur(gray, (0, 0), sigma)
    pts = ellipse + centre[:, None]
    box = np.array([*pts.min(axis=1), *(pts.max(axis=1) - pts.min(axis=1))])
    return gray.clip(0, 255).astype(np.uint8), box


def box_iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """IoU of each (x, y, w, h) row of ``boxes`` with ``box``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0 = np.maximum(boxes[:, 0], box[0]), np.maximum(boxes[:, 1], box[1])
    x1 = np.minimum(boxes[:, 0] + boxes[:, 2], box[0] + box[2])
    y1 = np.minimum(boxes[:, 1] + boxes[:, 3], box[1] + box[3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (boxes[:, 2] * boxes[:, 3] + box[2] * box[3] - inter)


def centres_inside(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    c = boxes[:, :2] + boxes[:, 2:] / 2
    return (c[:, 0] >= box[0]) & (c[:, 0] <= box[0] + box[2]) & (c[:, 1] >= box[1]) & (c[:, 1] <= box[1] + box[3])


def _score(found: np.ndarray, truth: np.ndarray | None, iou: float) -> tuple[bool, bool, int]:
    """(hit by IoU, hit by centre, false detections) of one frame."""
    found = np.asarray(found, dtype=np.float64).reshape(-1, 4)
    if truth is None:
        return False, False, len(found)
    inside = centres_inside(found, truth)
    return bool((box_iou(found, truth) >= iou).any()), bool(inside.any()), int((~inside).sum())


def _score_frames(detector, frames: list, iou: float) -> tuple[np.ndarray, float]:
    """``[frames, 3]`` of :func:`_score` per (gray, true box) frame, and the median ms per frame."""
    hits, times = [], []
    for gray, truth in frames:
        t0 = time.perf_counter()
        found = detector(gray)
        times.append(time.perf_counter() - t0)
        hits.append(_score(found, truth, iou))
    return np.array(hits, dtype=np.float64), 1000 * float(np.median(times))


def recall_table(detectors: dict, n: int = 40, seed: int = 0, conditions=CONDITIONS, iou: float = 0.5) -> list[dict]:
    """Recall per condition and detector on synthetic 640x480 frames, and milliseconds per frame.

    ``detectors``: name -> callable (gray frame -> boxes [N, 4]). Every detector sees the same
    ``n`` frames per condition. A face counts as found by IoU when a detection's IoU with the true
    box is >= ``iou``, and by centre when a detection's centre lies inside the true box; false
    detections are those whose centre lies outside it (all of them on frames without a face).
    Rows: dict(condition, detector, recall_iou, recall_centre, false_per_frame, ms).
    """
    rows = []
    for k, cond in enumerate(conditions):
        rng = np.random.default_rng([seed, k])
        frames = [synthetic_frame(cond, rng, seed) for _ in range(n)]
        for name, detector in detectors.items():
            detector(frames[0][0])  # warm-up (lazy initialisation, thread pools)
            h, ms = _score_frames(detector, frames, iou)
            rows.append(dict(condition=cond.name, detector=name,
                             recall_iou=None if cond.width is None else float(h[:, 0].mean()),
                             recall_centre=None if cond.width is None else float(h[:, 1].mean()),
                             false_per_frame=float(h[:, 2].mean()), ms=ms))
    return rows


def twin_table(root, detectors: dict, clips: int = 8, frames_per_clip: int = 10) -> list[dict]:
    """Detectors on a generated twin's videos (flv1 480x360, the release's format).

    The true box is the actor's face ellipse at rest (the twin moves it by at most 6 px and 3%).
    Rows: dict(detector, frames, recall_iou, recall_centre, false_per_frame, ms).
    """
    root = Path(root)
    spec = read_spec(root)
    if spec is None:
        raise ValueError(f"{root} is not a generated twin (no SYNTHETIC.json)")
    paths = sorted((root / VIDEO_DIR).glob(f"*{VIDEO_EXT}"))
    paths = [paths[i] for i in np.linspace(0, len(paths) - 1, min(clips, len(paths))).round().astype(int)]
    frames = []
    for path in paths:
        actor = Actor.make(parse_name(path.stem).actor, spec["seed"])
        a, b = actor.half_width, actor.half_width * actor.aspect
        truth = np.array([actor.center[0] - a, actor.center[1] - b, 2 * a, 2 * b])
        video = decode_gray(str(path)).frames
        frames += [(video[i], truth) for i in sample_frame_indices(len(video), frames_per_clip)]
    rows = []
    for name, detector in detectors.items():
        h, ms = _score_frames(detector, frames, 0.5)
        rows.append(dict(detector=name, frames=len(frames), recall_iou=float(h[:, 0].mean()),
                         recall_centre=float(h[:, 1].mean()), false_per_frame=float(h[:, 2].mean()), ms=ms))
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown: one row per condition, per detector 'IoU/centre recall' and a false/ms summary."""
    names = list(dict.fromkeys(r["detector"] for r in rows))
    if "condition" not in rows[0]:
        lines = ["| detector | frames | recall IoU>=0.5 | recall centre | false/frame | ms/frame |", "|---" * 6 + "|"]
        lines += [f"| {r['detector']} | {r['frames']} | {r['recall_iou']:.2f} | {r['recall_centre']:.2f} | "
                  f"{r['false_per_frame']:.2f} | {r['ms']:.1f} |" for r in rows]
        return "\n".join(lines)
    by = {(r["condition"], r["detector"]): r for r in rows}
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    lines = ["| condition | " + " | ".join(f"{n} IoU / centre" for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    for c in conds:
        cells = []
        for n in names:
            r = by[(c, n)]
            cells.append(f"false {r['false_per_frame']:.2f}/frame" if r["recall_iou"] is None
                         else f"{r['recall_iou']:.2f} / {r['recall_centre']:.2f}")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    face_rows = [r for r in rows if r["recall_iou"] is not None]
    mean = lambda key, n: np.mean([r[key] for r in face_rows if r["detector"] == n])  # noqa: E731
    lines.append("| mean recall (face rows) | "
                 + " | ".join(f"{mean('recall_iou', n):.2f} / {mean('recall_centre', n):.2f}" for n in names) + " |")
    lines.append("| false/frame (face rows) | " + " | ".join(f"{mean('false_per_frame', n):.2f}" for n in names) + " |")
    lines.append("| ms/frame (median of rows) | "
                 + " | ".join(f"{np.median([r['ms'] for r in rows if r['detector'] == n]):.1f}" for n in names) + " |")
    return "\n".join(lines)


def built_detectors(specs: list[tuple[str, dict]]) -> dict:
    """Each (``detector``, ``detector_kwargs``) built, under its column name: the name, followed by
    its settings as JSON where it has any (``yunet{"downscale": 0.5}``).

    OpenCV keeps the thread count it had (building one keeps it to one thread): the README's
    figures were measured so.
    """
    threads = cv2.getNumThreads()
    built = {name + (json.dumps(kwargs) if kwargs else ""): make_detector(name, **kwargs) for name, kwargs in specs}
    cv2.setNumThreads(threads)
    return built
