"""The twin's video: a rendered frontal face per actor whose expression is built from facial action units.

Shape, size, skin tone, position, background and lighting vary by actor; the displayed emotion's
action units (AUs), scaled by the intensity, set the brows, eyes, nose and mouth; speech opens the
jaw; head motion, blinks and sensor noise vary frame by frame. The frames are drawn as the
release's video is stored (480x360 at 30 fps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from fer_mm.data.twins.actors import Actor

FPS = 30
FRAME_W, FRAME_H = 480, 360

# Facial action units per emotion (weights at full intensity).
EMOTION_AUS = {
    "ANG": {4: 1.0, 5: 0.6, 7: 0.8, 23: 0.8},
    "DIS": {9: 1.0, 10: 0.9, 4: 0.3},
    "FEA": {1: 1.0, 2: 0.9, 4: 0.5, 5: 1.0, 20: 0.9, 26: 0.7},
    "HAP": {6: 0.9, 12: 1.0},
    "NEU": {},
    "SAD": {1: 0.8, 4: 0.6, 15: 0.9},
}
WHITE_OF_EYE, PUPIL, MOUTH_INSIDE, TEETH = (235, 235, 235), (30, 25, 20), (25, 20, 35), (220, 220, 220)  # BGR


def _curve(p0, p1, p2, n=12) -> np.ndarray:
    """Quadratic Bezier from p0 to p2 with control p1, as int points."""
    t = np.linspace(0, 1, n)[:, None]
    pts = (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)
    return pts.round().astype(np.int32)


def background(actor: Actor) -> np.ndarray:
    yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W].astype(np.float32)
    grad = 1 + actor.light[0] * (xx / FRAME_W - 0.5) * 2 + actor.light[1] * (yy / FRAME_H - 0.5) * 2
    img = np.asarray(actor.background, np.float32)[None, None, :] * grad[..., None]
    return img.clip(0, 255).astype(np.uint8)


@dataclass(frozen=True)
class _Pose:
    """One frame's face: where its centre is, its half width ``a`` and half height ``b``, and ``au(k)``,
    the intensity (0..1) of action unit k. Every feature is placed and sized from these."""

    actor: Actor
    cx: float
    cy: float
    a: float
    b: float
    au: Callable[[int], float]

    @property
    def dark(self) -> tuple[int, ...]:
        return tuple(int(c * 0.35) for c in self.actor.skin)

    @property
    def shade(self) -> tuple[int, ...]:
        return tuple(int(c * 0.75) for c in self.actor.skin)

    @property
    def eye_y(self) -> float:
        return self.cy - 0.18 * self.b

    @property
    def eye_x(self) -> float:
        """Each eye's distance from the centre line."""
        return self.actor.eye_spacing * self.a


def render_face(actor: Actor, bg: np.ndarray, aus: dict, mouth_open: float, motion: tuple, blink: float,
                rng: np.random.Generator, asym: float = 0.0) -> np.ndarray:
    """One BGR frame: the actor's face with action unit intensities ``aus`` (0..1).

    ``asym`` (0..1) raises, pulls back and dimples the mouth's right corner only: a one-sided
    AU12/AU14, as contempt shows it.
    """
    img = bg.copy()
    dx, dy, scale = motion
    a = actor.half_width * scale
    pose = _Pose(actor, actor.center[0] + dx, actor.center[1] + dy, a, a * actor.aspect,
                 lambda k: float(aus.get(k, 0.0)))
    _draw_head(img, pose)
    for side in (-1, 1):  # one eye and its brow, then the other's: the order sets the pixels where features overlap
        _draw_eye(img, pose, side, blink)
        _draw_brow(img, pose, side)
    _draw_nose(img, pose)
    _draw_mouth(img, pose, mouth_open, asym)
    return _through_the_sensor(img, rng)


def _draw_head(img: np.ndarray, p: _Pose) -> None:
    """Hair, neck and the face's skin."""
    a, b, cx, cy = p.a, p.b, p.cx, p.cy
    cv2.ellipse(img, (int(cx), int(cy - 0.35 * b)), (int(a * 1.08), int(b * 0.8)), 0, 180, 360, p.actor.hair, -1)
    cv2.rectangle(img, (int(cx - 0.45 * a), int(cy + 0.8 * b)), (int(cx + 0.45 * a), FRAME_H), p.shade, -1)  # neck
    cv2.ellipse(img, (int(cx), int(cy)), (int(a), int(b)), 0, 0, 360, p.actor.skin, -1, cv2.LINE_AA)


def _draw_eye(img: np.ndarray, p: _Pose, side: int, blink: float) -> None:
    """AU5 raises the upper lid, AU7 tightens, AU6 pushes the cheeks up; blinks close the eye."""
    a, au = p.a, p.au
    eye_h = 0.11 * a * (1 + 0.9 * au(5) - 0.5 * au(7) - 0.35 * au(6)) * (1 - blink)
    c = (int(p.cx + side * p.eye_x), int(p.eye_y))
    cv2.ellipse(img, c, (int(0.26 * a), int(0.17 * a)), 0, 0, 360, p.shade, -1, cv2.LINE_AA)  # socket
    cv2.ellipse(img, c, (int(0.17 * a), max(1, int(eye_h))), 0, 0, 360, WHITE_OF_EYE, -1, cv2.LINE_AA)
    if eye_h > 1.5:
        cv2.circle(img, c, max(1, int(min(0.075 * a, eye_h))), PUPIL, -1, cv2.LINE_AA)
    if au(6) > 0.05:  # raised cheeks
        cv2.ellipse(img, (c[0], int(p.eye_y + 0.3 * a - 0.1 * a * au(6))), (int(0.22 * a), int(0.08 * a)),
                    0, 180, 360, p.shade, max(1, int(2 * au(6))), cv2.LINE_AA)


def _draw_brow(img: np.ndarray, p: _Pose, side: int) -> None:
    """AU1 lifts the inner end, AU2 the outer end, AU4 lowers and draws the brows together."""
    a, au, cx = p.a, p.au, p.cx
    inner_x = cx + side * (0.18 - 0.08 * au(4)) * a
    outer_x = cx + side * (p.eye_x + 0.25 * a)
    base = p.eye_y - 0.32 * a
    inner_y = base - 0.2 * a * au(1) + 0.16 * a * au(4)
    outer_y = base - 0.2 * a * au(2) + 0.06 * a * au(4)
    mid = ((inner_x + outer_x) / 2, min(inner_y, outer_y) - 0.06 * a)
    cv2.polylines(img, [_curve((inner_x, inner_y), mid, (outer_x, outer_y))], False, p.dark,
                  max(2, int(0.08 * a)), cv2.LINE_AA)
    if au(4) > 0.2:  # furrow between the brows
        cv2.line(img, (int(cx + side * 0.05 * a), int(base)), (int(cx + side * 0.07 * a), int(base + 0.15 * a)),
                 p.shade, max(1, int(2 * au(4))), cv2.LINE_AA)


def _draw_nose(img: np.ndarray, p: _Pose) -> None:
    """AU9 wrinkles the bridge and lifts the nostrils."""
    a, au, cx = p.a, p.au, p.cx
    nose_y = p.cy + 0.22 * p.b - 0.05 * a * au(9)
    cv2.line(img, (int(cx), int(p.eye_y)), (int(cx + 0.04 * a), int(nose_y)), p.shade, 2, cv2.LINE_AA)
    for side in (-1, 1):
        cv2.ellipse(img, (int(cx + side * 0.11 * a), int(nose_y)), (int(0.06 * a * (1 + 0.5 * au(9))), int(0.035 * a)),
                    0, 0, 360, p.dark, -1, cv2.LINE_AA)
    for k in range(int(round(3 * au(9)))):
        y = int(p.eye_y + (0.12 + 0.07 * k) * a)
        cv2.line(img, (int(cx - 0.1 * a), y), (int(cx + 0.1 * a), y), p.shade, 2, cv2.LINE_AA)


def _draw_mouth(img: np.ndarray, p: _Pose, mouth_open: float, asym: float) -> None:
    """The corners move with AU12 (up/out), AU15 (down), AU20 (stretch), AU23 (tighten); AU10 lifts the
    upper lip, AU26 and speech open the jaw."""
    a, au, cx, skin = p.a, p.au, p.cx, p.actor.skin
    mouth_y = p.cy + 0.52 * p.b
    half = p.actor.mouth_width * a * (1 + 0.25 * au(12) + 0.35 * au(20) - 0.25 * au(23))
    corner_y = mouth_y - 0.18 * a * au(12) + 0.2 * a * au(15)
    opening = 0.03 * a + 0.22 * a * mouth_open * (1 - 0.5 * au(23)) + 0.2 * a * au(26)
    upper = mouth_y - 0.1 * a * au(10) - 0.3 * opening
    lower = mouth_y + 0.7 * opening + 0.08 * a * au(12)
    left, right = (cx - half, corner_y), (cx + half, corner_y)
    if asym:  # skipped at 0, so frames without it stay byte for byte as before
        right = (cx + half + 0.08 * a * asym, corner_y - 0.2 * a * asym)
    top = _curve(left, (cx, upper - 0.05 * a), right)
    bottom = _curve(right, (cx, lower + 0.05 * a), left)
    lips = (int(skin[0] * 0.55), int(skin[1] * 0.5), int(skin[2] * 0.8))
    cv2.fillPoly(img, [np.concatenate([top, bottom])], MOUTH_INSIDE, cv2.LINE_AA)
    thickness = max(1, int(0.06 * a * (1 - 0.6 * au(23))))
    cv2.polylines(img, [top, bottom], False, lips, thickness, cv2.LINE_AA)
    if au(10) > 0.3:  # visible upper teeth
        cv2.polylines(img, [_curve((cx - 0.6 * half, upper + 0.04 * a), (cx, upper + 0.06 * a),
                                   (cx + 0.6 * half, upper + 0.04 * a))], False, TEETH, 2, cv2.LINE_AA)
    if asym > 0.05:  # the dimple beside the raised corner
        cv2.ellipse(img, (int(right[0] + 0.04 * a), int(right[1] + 0.02 * a)), (int(0.04 * a), int(0.09 * a)),
                    0, -70, 70, p.shade, max(1, int(3 * asym)), cv2.LINE_AA)


def _through_the_sensor(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A camera's softness and noise."""
    img = cv2.GaussianBlur(img, (3, 3), 0)
    noise = rng.normal(0, 4.0, img.shape[:2])[..., None]
    return (img + noise).clip(0, 255).astype(np.uint8)
