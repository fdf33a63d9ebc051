"""The twin's video: a rendered frontal face per actor whose expression is built from facial action units.

Shape, size, skin tone, position, background and lighting vary by actor; the displayed emotion's
action units (AUs), scaled by the intensity, set the brows, eyes, nose and mouth; speech opens the
jaw; head motion, blinks and sensor noise vary frame by frame. The frames are drawn as the
release's video is stored (480x360 at 30 fps).

Optional :class:`FaceTraits` draw an age and a gender on the face (the attribute twins'); without
them a frame is exactly what it was before traits existed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
GREY_HAIR = np.array((188.0, 190.0, 196.0))  # BGR


@dataclass(frozen=True)
class FaceTraits:
    """The age and gender a face displays, drawn as cues that survive a 48x48 gray crop.

    ``age`` in years; ``male`` 0 (a female display) .. 1 (a male display); ``variant`` (0..1) is
    the person's own take on them: how long her hair, how dense his beard, how early the grey.

    - age: hair greys from about 30-45 on (all grey some 30 years later); forehead lines,
      nasolabial folds and, later, bags under the eyes deepen from 25 on; a child (under 16) has a
      smaller, rounder face, with larger eyes set lower, and a baby thin hair;
    - gender: a female display has long hair framing the face (down to the jaw or shoulders,
      growing in childhood); a male display short hair, from 16 on stubble or a beard over the
      lower face and upper lip, and heavier brows.
    """

    age: float
    male: float
    variant: float = 0.5

    @property
    def child(self) -> float:
        """1 at birth, 0 from 16 on."""
        return float(np.clip((16 - self.age) / 16, 0, 1))

    @property
    def grey(self) -> float:
        return float(np.clip((self.age - 30 - 15 * self.variant) / 30, 0, 1))

    @property
    def lines(self) -> float:
        """Depth of the wrinkles, 0 up to 25."""
        return float(np.clip((self.age - 25) / 45, 0, 1))

    @property
    def beard(self) -> float:
        male = float(np.clip(2 * self.male - 1, 0, 1))
        return male * float(np.clip((self.age - 15) / 8, 0, 1)) * (0.5 + 0.5 * self.variant)

    @property
    def long_hair(self) -> float:
        """0 (short) .. 1 (to the shoulders)."""
        female = float(np.clip(1 - 2 * self.male, 0, 1))
        return female * float(np.clip((self.age + 2) / 10, 0.2, 1)) * (0.55 + 0.45 * self.variant)


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
    eye_scale: float = 1.0  # traits: a child's larger eyes,
    eye_drop: float = 0.0  # set lower (in units of b),
    brow_weight: float = 1.0  # and a male display's heavier brows

    @property
    def dark(self) -> tuple[int, ...]:
        return tuple(int(c * 0.35) for c in self.actor.skin)

    @property
    def shade(self) -> tuple[int, ...]:
        return tuple(int(c * 0.75) for c in self.actor.skin)

    @property
    def eye_y(self) -> float:
        return self.cy - 0.18 * self.b + self.eye_drop * self.b

    @property
    def eye_x(self) -> float:
        """Each eye's distance from the centre line."""
        return self.actor.eye_spacing * self.a


def _pose(actor: Actor, aus: dict, motion: tuple, traits: FaceTraits | None) -> _Pose:
    dx, dy, scale = motion
    a = actor.half_width * scale
    pose = _Pose(actor, actor.center[0] + dx, actor.center[1] + dy, a, a * actor.aspect,
                 lambda k: float(aus.get(k, 0.0)))
    return pose if traits is None else _with_traits(pose, traits)


def face_ellipse(actor: Actor, motion: tuple, traits: FaceTraits | None = None) -> tuple[float, float, float, float]:
    """Where ``render_face`` draws the face's skin: centre x, y, half width, half height (for crops)."""
    p = _pose(actor, {}, motion, traits)
    return p.cx, p.cy, p.a, p.b


def render_face(actor: Actor, bg: np.ndarray, aus: dict, mouth_open: float, motion: tuple, blink: float,
                rng: np.random.Generator, asym: float = 0.0, traits: FaceTraits | None = None) -> np.ndarray:
    """One BGR frame: the actor's face with action unit intensities ``aus`` (0..1).

    ``asym`` (0..1) raises, pulls back and dimples the mouth's right corner only: a one-sided
    AU12/AU14, as contempt shows it. ``traits`` draw an age and a gender on the face (see
    :class:`FaceTraits`); without them (None) the frame is as it always was.
    """
    img = bg.copy()
    pose = _pose(actor, aus, motion, traits)
    if traits is not None:  # skipped without traits, so every other frame stays byte for byte as before
        _draw_long_hair(img, pose, traits.long_hair)
    _draw_head(img, pose)
    if traits is not None:
        _draw_beard(img, pose, traits.beard)
        _draw_lines(img, pose, traits.lines)
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
    e = a * p.eye_scale  # the eye's own size: a but for a child's
    eye_h = 0.11 * e * (1 + 0.9 * au(5) - 0.5 * au(7) - 0.35 * au(6)) * (1 - blink)
    c = (int(p.cx + side * p.eye_x), int(p.eye_y))
    cv2.ellipse(img, c, (int(0.26 * e), int(0.17 * e)), 0, 0, 360, p.shade, -1, cv2.LINE_AA)  # socket
    cv2.ellipse(img, c, (int(0.17 * e), max(1, int(eye_h))), 0, 0, 360, WHITE_OF_EYE, -1, cv2.LINE_AA)
    if eye_h > 1.5:
        cv2.circle(img, c, max(1, int(min(0.075 * e, eye_h))), PUPIL, -1, cv2.LINE_AA)
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
                  max(2, int(0.08 * a * p.brow_weight)), cv2.LINE_AA)
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


def _with_traits(p: _Pose, t: FaceTraits) -> _Pose:
    """The pose of a face of this age and gender: hair colour, a child's proportions, the brows' weight."""
    hair = np.asarray(p.actor.hair, float) * (1 - t.grey) + GREY_HAIR * t.grey
    thin = float(np.clip((2 - t.age) / 2, 0, 1))  # a baby's thin hair shows the scalp
    hair = hair * (1 - 0.6 * thin) + np.asarray(p.actor.skin, float) * 0.6 * thin
    c = t.child
    a = p.a * (1 - 0.12 * c)
    return replace(p, actor=replace(p.actor, hair=tuple(int(v) for v in hair)), a=a,
                   b=a * p.actor.aspect * (1 - 0.2 * c), eye_scale=1 + 0.55 * c, eye_drop=0.14 * c,
                   brow_weight=(0.8 + 0.7 * t.male) * (1 - 0.3 * c))


def _draw_long_hair(img: np.ndarray, p: _Pose, length: float) -> None:
    """Hair behind the head that frames the face, from the jaw (``length`` near 0) to the shoulders (1)."""
    if length <= 0:
        return
    a, b, cx, cy = p.a, p.b, p.cx, p.cy
    half, top, bottom = 1.3 * a, cy - 0.35 * b, cy + (0.35 + 1.0 * length) * b
    cv2.ellipse(img, (int(cx), int(top)), (int(half), int(b * 0.86)), 0, 180, 360, p.actor.hair, -1)
    cv2.rectangle(img, (int(cx - half), int(top)), (int(cx + half), int(bottom - 0.25 * b)), p.actor.hair, -1)
    cv2.ellipse(img, (int(cx), int(bottom - 0.25 * b)), (int(half), int(0.25 * b)), 0, 0, 180, p.actor.hair, -1)


def _draw_beard(img: np.ndarray, p: _Pose, density: float) -> None:
    """Stubble (``density`` low) to a full beard (1) over the lower face, and a moustache."""
    if density <= 0:
        return
    a, b, cx, cy = p.a, p.b, p.cx, p.cy
    jaw = cv2.ellipse2Poly((int(cx), int(cy)), (int(a), int(b)), 0, 8, 172, 6)  # right cheek, chin, left cheek
    cheeks = [(-0.8, 0.2), (-0.45, 0.33), (-0.2, 0.3), (0.2, 0.3), (0.45, 0.33), (0.8, 0.2)]  # over the upper lip
    outline = np.concatenate([jaw, np.array([(cx + u * a, cy + v * b) for u, v in cheeks]).round().astype(np.int32)])
    overlay = img.copy()
    cv2.fillPoly(overlay, [outline], p.actor.hair, cv2.LINE_AA)
    alpha = 0.3 + 0.45 * density
    cv2.addWeighted(overlay, alpha, img, 1 - alpha, 0, dst=img)


def _draw_lines(img: np.ndarray, p: _Pose, depth: float) -> None:
    """Forehead lines, nasolabial folds and, deeper on, bags under the eyes (``depth`` 0..1)."""
    if depth <= 0:
        return
    a, b, cx, cy = p.a, p.b, p.cx, p.cy
    colour = tuple(int(c * (0.85 - 0.3 * depth)) for c in p.actor.skin)
    width = max(1, int(round(0.02 * a + 0.035 * a * depth)))
    brow = p.eye_y - 0.32 * a
    for k in range(1 + int(2.99 * depth)):
        y = brow - (0.2 + 0.12 * k) * a
        cv2.polylines(img, [_curve((cx - 0.38 * a, y + 0.02 * a), (cx, y - 0.05 * a), (cx + 0.38 * a, y + 0.02 * a))],
                      False, colour, width, cv2.LINE_AA)
    nose_y, mouth_y = cy + 0.22 * b, cy + 0.52 * b
    half = p.actor.mouth_width * a
    for side in (-1, 1):
        fold = _curve((cx + side * 0.17 * a, nose_y - 0.03 * a), (cx + side * (half + 0.14 * a), nose_y + 0.12 * b),
                      (cx + side * (half + 0.1 * a), mouth_y + 0.1 * b))
        cv2.polylines(img, [fold], False, colour, width + int(depth > 0.5), cv2.LINE_AA)
        if depth > 0.4:
            eye = (int(cx + side * p.eye_x), int(p.eye_y + 0.15 * a))
            cv2.ellipse(img, eye, (int(0.2 * a), int(0.08 * a)), 0, 20, 160, colour, width, cv2.LINE_AA)


def _through_the_sensor(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A camera's softness and noise."""
    img = cv2.GaussianBlur(img, (3, 3), 0)
    noise = rng.normal(0, 4.0, img.shape[:2])[..., None]
    return (img + noise).clip(0, 255).astype(np.uint8)
