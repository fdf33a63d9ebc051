"""Synthetic twins of two age and gender sets, UTKFace here and IMDB-WIKI in
:mod:`fer_mm.data.twins.imdb_wiki`, in their released formats; what they share.

Their faces are the other twins' renderer with :class:`~fer_mm.data.twins.face.FaceTraits`: each
image *displays* an age and a gender as visible cues (grey hair, wrinkles, a child's proportions;
long hair, stubble, heavy brows), with noise, so that the ceilings are below perfect and known:

- displayed age = true age + N(0, ``age_noise``) years, clipped at 0 (kept to 0.1 year);
- displayed gender = the true one, but with probability ``gender_flip`` the other's.

``displays.csv`` (in the twin's root) records per image the true and displayed age and gender, and
``SYNTHETIC.json`` the ceilings computed from those draws: ``gender_ceiling`` (the accuracy of
reading the displayed gender exactly), ``age_mae_floor`` (the MAE of reading the displayed age
exactly; a Bayes estimator that shrinks towards the ages' prior could do marginally better), beside
the input-blind baselines (majority gender; the mean and the median age).

UTKFace (https://susanqq.github.io/UTKFace/): ``UTKFace/[age]_[gender]_[race]_[date&time].jpg.chip.jpg``,
200x200 colour JPEG faces, aligned and cropped; gender 0 male, 1 female; race 0..4 (White, Black,
Asian, Indian, Others); date&time ``yyyymmddHHMMSSFFF``. Three names lack the race field, as three
of the release's do. Ages are spread as the release's (many babies, most 20-35, a tail to 116);
every image is a fresh person (the release has repeats but no subject ids, so nothing can tell
them apart); race carries no cue (the skin tone is the actor's, drawn apart from it).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from fer_mm.data.parallel import imap_progress
from fer_mm.data.twins.actors import Actor
from fer_mm.data.twins.displays import keyed_rng
from fer_mm.data.twins.face import FaceTraits, face_ellipse, render_face
from fer_mm.data.twins.spec import SPEC_FILE, check_twin_folder
from fer_mm.files import write_atomic

UTKFACE_TWIN_KIND = "fer-mm synthetic UTKFace twin"
ATTRIBUTE_TWIN_VERSION = 1
DISPLAYS_FILE = "displays.csv"  # per image: true and displayed age and gender
UTKFACE_DIR = "UTKFace"
UTKFACE_SIZE = 200
UTKFACE_CANVAS = 264  # the square the face is drawn on, a little larger than the widest crop
UTKFACE_SUFFIX = ".jpg.chip.jpg"
UTKFACE_SUBJECT_BASE = 300_000  # Actor ids: image i is actor 300000 + i (FER2013 100000+, CK+ 200000+, IMDB-WIKI 400000+)
UTKFACE_MAX_IMAGES = 100_000
UTKFACE_MALFORMED = 3  # names without the race field, as in the release
JPEG_QUALITY = 90
# UTKFace's 23,705 images: ages in bins [lo, hi] with their counts (about the release's histogram),
# races in the release's shares, 52% male
UTKFACE_AGE_BINS = (((1, 2), 1600), ((3, 5), 800), ((6, 9), 550), ((10, 14), 600), ((15, 19), 900), ((20, 24), 2800),
                    ((25, 29), 4600), ((30, 34), 2800), ((35, 39), 2000), ((40, 44), 1300), ((45, 49), 1200),
                    ((50, 54), 1400), ((55, 59), 1100), ((60, 64), 900), ((65, 69), 500), ((70, 79), 800),
                    ((80, 89), 500), ((90, 99), 150), ((100, 116), 30))
UTKFACE_RACES = ("White", "Black", "Asian", "Indian", "Others")
UTKFACE_RACE_COUNTS = (10078, 4526, 3434, 3975, 1692)
UTKFACE_MALE_SHARE = 0.52
UTKFACE_FIRST, UTKFACE_LAST = datetime(2016, 12, 1), datetime(2017, 1, 31, 23, 59, 59)  # the release's dates
GENDERS = ("female", "male")  # displays.csv spells genders out; index = male


# ---------------------------------------------------------------------------------- shared


def check_noise(age_noise: float, gender_flip: float) -> tuple[float, float]:
    if isinstance(age_noise, bool) or not 0.0 <= float(age_noise) <= 50.0:
        raise ValueError(f"age_noise must be in [0, 50] years (the displayed age's standard deviation), got {age_noise}")
    if isinstance(gender_flip, bool) or not 0.0 <= float(gender_flip) <= 0.5:
        raise ValueError(f"gender_flip must be in [0, 0.5] (the share displaying the other gender), got {gender_flip}")
    return float(age_noise), float(gender_flip)


def draw_display(rng: np.random.Generator, age: float, male: bool, age_noise: float, gender_flip: float
                 ) -> tuple[float, bool]:
    """The age (0.1 year) and gender (True: male) one image displays of a person of ``age`` and ``male``."""
    shown = round(max(0.0, age + rng.normal(0.0, age_noise)), 1)
    return shown, bool(male) != bool(rng.random() < gender_flip)


def ceilings(ages, shown_ages, males, shown_males) -> dict:
    """What reading the displays exactly scores, and what an input-blind guess scores, on these images."""
    ages, shown_ages = np.asarray(ages, float), np.asarray(shown_ages, float)
    males, shown_males = np.asarray(males, bool), np.asarray(shown_males, bool)
    if not len(ages) or not len(males):
        return dict(gender_images=len(males), age_images=len(ages))
    share = float(males.mean())
    return dict(gender_images=len(males), age_images=len(ages),
                gender_ceiling=float(np.mean(males == shown_males)), majority_gender_accuracy=max(share, 1 - share),
                age_mae_floor=float(np.mean(np.abs(shown_ages - ages))),
                mean_age_mae=float(np.mean(np.abs(ages - ages.mean()))),
                median_age_mae=float(np.mean(np.abs(ages - np.median(ages)))))


def person_traits(age: float, male: bool, variant: float, rng: np.random.Generator) -> FaceTraits:
    """Cues of a displayed ``age`` and gender, the masculinity a little varied image to image."""
    return FaceTraits(age=float(age), male=float(rng.uniform(0.8, 1.0) if male else rng.uniform(0.0, 0.2)),
                      variant=float(variant))


def backdrop(colour, light: tuple[float, float], size: int) -> np.ndarray:
    """A ``size`` x ``size`` BGR backdrop of ``colour`` lit with a gradient, as the renderer's ``background``."""
    ramp = (np.arange(size, dtype=np.float32) / size - 0.5) * 2
    grad = 1 + np.float32(light[0]) * ramp[None, :] + np.float32(light[1]) * ramp[:, None]
    return cv2.merge([cv2.convertScaleAbs(grad, alpha=float(c)) for c in colour])  # saturated at 255


def portrait(actor: Actor, traits: FaceTraits, rng: np.random.Generator, bg: np.ndarray, centre: tuple[float, float],
             scale: float = 1.0, jitter: float = 1.0):
    """A posed photo on ``bg``, the face centred near ``centre``; neutral or smiling.

    Returns the BGR frame and the face's ellipse (cx, cy, a, b). Drawn on a canvas about the photo's
    size rather than the renderer's 480x360 frame: the sensor noise, most of the time, is per pixel.
    """
    aus = {}
    if rng.random() < 0.45:  # a smile, often with the cheeks raised
        s = rng.uniform(0.3, 1.0)
        aus = {12: s * actor.au_gain[12], 6: 0.8 * s * actor.au_gain[6]}
    mouth = rng.uniform(0.0, 0.35) if rng.random() < 0.25 else 0.0
    motion = (centre[0] - actor.center[0] + jitter * rng.uniform(-8, 8),
              centre[1] - actor.center[1] + jitter * rng.uniform(-6, 6), scale * (1 + jitter * rng.uniform(-0.06, 0.06)))
    frame = render_face(actor, bg, aus, mouth, motion, 0.0, rng, traits=traits)
    return frame, face_ellipse(actor, motion, traits)


def jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()


def displays_text(rows: list[dict], extra: tuple[str, ...] = ()) -> str:
    """``displays.csv``: file (from the twin's root), age, displayed_age, gender, displayed_gender, then ``extra``.

    The displays are left empty where the image shows no face (a row whose ``face`` is 0).
    """
    columns = ("file", "age", "displayed_age", "gender", "displayed_gender") + extra
    lines = [",".join(columns)]
    for r in rows:
        shown = [f"{r['shown_age']:.1f}", GENDERS[r["shown_male"]]] if r.get("face", 1) else ["", ""]
        lines.append(",".join([r["file"], str(r["age"]), shown[0], GENDERS[r["male"]], shown[1]]
                              + [str(r[c]) for c in extra]))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------- UTKFace

UTKFACE_KEYS = ("kind", "version", "images", "seed", "age_noise", "gender_flip")  # what makes the twin


def _utkface_ages(n: int, rng: np.random.Generator) -> np.ndarray:
    counts = np.array([c for _, c in UTKFACE_AGE_BINS], float)
    bins = rng.choice(len(counts), n, p=counts / counts.sum())
    return np.array([rng.integers(UTKFACE_AGE_BINS[k][0][0], UTKFACE_AGE_BINS[k][0][1] + 1) for k in bins])


def _utkface_plan(images: int, seed: int, age_noise: float, gender_flip: float) -> list[dict]:
    """The images in order: file, age, gender, race ("": the name lacks it), displays."""
    rng = keyed_rng("utkface plan", seed)
    ages = _utkface_ages(images, rng)
    males = rng.random(images) < UTKFACE_MALE_SHARE
    race_p = np.array(UTKFACE_RACE_COUNTS, float)
    races = rng.choice(len(UTKFACE_RACES), images, p=race_p / race_p.sum())
    span_ms = int((UTKFACE_LAST - UTKFACE_FIRST).total_seconds() * 1000)
    stamps = rng.integers(0, span_ms, images)
    malformed = set(rng.choice(images, min(UTKFACE_MALFORMED, images // 10), replace=False).tolist())
    rows, names = [], set()
    for i in range(images):
        shown_age, shown_male = draw_display(keyed_rng("utkface display", seed, i), ages[i], males[i], age_noise,
                                             gender_flip)
        race = None if i in malformed else int(races[i])
        while True:  # names are unique: a clash moves the time on by a millisecond
            t = UTKFACE_FIRST + timedelta(milliseconds=int(stamps[i]))
            fields = [str(ages[i]), str(int(not males[i]))] + ([] if race is None else [str(race)])
            name = "_".join(fields + [f"{t:%Y%m%d%H%M%S}{t.microsecond // 1000:03d}"]) + UTKFACE_SUFFIX
            if name not in names:
                break
            stamps[i] += 1
        names.add(name)
        rows.append(dict(file=f"{UTKFACE_DIR}/{name}", age=int(ages[i]), male=bool(males[i]),
                         race="" if race is None else race, shown_age=shown_age, shown_male=shown_male, index=i))
    return rows


def utkface_spec(images: int = 2000, seed: int = 0, age_noise: float = 4.0, gender_flip: float = 0.05) -> dict:
    """What the UTKFace twin's ``SYNTHETIC.json`` records: parameters, counts, ceilings."""
    if not 1 <= images <= UTKFACE_MAX_IMAGES:
        raise ValueError(f"images must be in 1..{UTKFACE_MAX_IMAGES}, got {images}")
    age_noise, gender_flip = check_noise(age_noise, gender_flip)
    rows = _utkface_plan(images, seed, age_noise, gender_flip)
    ages = np.array([r["age"] for r in rows])
    males = [r["male"] for r in rows]
    return dict(kind=UTKFACE_TWIN_KIND, version=ATTRIBUTE_TWIN_VERSION, images=images, seed=seed,
                age_noise=age_noise, gender_flip=gender_flip, size=UTKFACE_SIZE, folder=UTKFACE_DIR,
                subjects="each image a fresh person", race_cue="none: race is in the names only",
                malformed_names=[r["file"].split("/")[1] for r in rows if r["race"] == ""],
                ages=dict(mean=float(ages.mean()), median=float(np.median(ages)), min=int(ages.min()),
                          max=int(ages.max()), share_0_5=float(np.mean(ages <= 5)),
                          share_20_35=float(np.mean((ages >= 20) & (ages <= 35)))),
                genders=dict(male=int(sum(males)), female=len(males) - int(sum(males))),
                races={name: sum(r["race"] == k for r in rows) for k, name in enumerate(UTKFACE_RACES)},
                **ceilings(ages, [r["shown_age"] for r in rows], males, [r["shown_male"] for r in rows]),
                displays=DISPLAYS_FILE)


def utkface_chip(actor: Actor, traits: FaceTraits, rng: np.random.Generator) -> np.ndarray:
    """One 200x200 colour face, aligned and cropped as the release's: the face and a little hair and neck."""
    bg = backdrop(actor.background, actor.light, UTKFACE_CANVAS)
    frame, (cx, cy, a, b) = portrait(actor, traits, rng, bg, (UTKFACE_CANVAS / 2, UTKFACE_CANVAS / 2 + 8), jitter=0.6)
    side = 2.3 * a * actor.aspect * rng.uniform(0.97, 1.03)
    centre = (cx + a * rng.uniform(-0.03, 0.03), cy - 0.06 * b + a * rng.uniform(-0.03, 0.03))
    patch = cv2.getRectSubPix(frame, (int(round(side)), int(round(side))), centre)
    return cv2.resize(patch, (UTKFACE_SIZE, UTKFACE_SIZE), interpolation=cv2.INTER_AREA)


def _utkface_images(job: tuple) -> int:
    """Write one chunk of UTKFace images: (root, seed, rows)."""
    root, seed, rows = job
    for r in rows:
        actor = Actor.make(UTKFACE_SUBJECT_BASE + r["index"], seed)
        rng = keyed_rng("utkface image", seed, r["index"])
        traits = person_traits(r["shown_age"], r["shown_male"], rng.random(), rng)
        write_atomic(Path(root) / r["file"], jpeg(utkface_chip(actor, traits, rng)))
    return len(rows)


def generate_utkface(out_dir: Path, images: int = 2000, seed: int = 0, age_noise: float = 4.0,
                     gender_flip: float = 0.05, workers: int = 0, progress: bool = True) -> Path:
    """Write the UTKFace twin (``UTKFace/``, ``displays.csv``, ``SYNTHETIC.json``) under ``out_dir``.

    ``SYNTHETIC.json`` first, ``displays.csv`` last (it marks the twin whole); images already
    written are kept, so a crashed run resumes. A folder that holds another twin (or a
    ``UTKFace/`` of no twin) is refused; one that holds this twin whole is returned at once.
    """
    out_dir = Path(out_dir)
    spec = utkface_spec(images, seed, age_noise, gender_flip)
    old = check_twin_folder(out_dir, spec, UTKFACE_KEYS, out_dir / UTKFACE_DIR)
    rows = _utkface_plan(images, seed, spec["age_noise"], spec["gender_flip"])
    todo = [r for r in rows if not (out_dir / r["file"]).exists()]
    if old is not None and not todo and (out_dir / DISPLAYS_FILE).exists():
        return out_dir
    (out_dir / UTKFACE_DIR).mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / SPEC_FILE, json.dumps(spec, indent=2) + "\n")  # first: the folder says which twin it is
    jobs = [(str(out_dir), seed, todo[i : i + 25]) for i in range(0, len(todo), 25)]
    for _ in imap_progress(_utkface_images, jobs, workers, "rendering UTKFace images", progress):
        pass
    write_atomic(out_dir / DISPLAYS_FILE, displays_text(rows, ("race",)))
    return out_dir
