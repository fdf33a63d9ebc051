"""A synthetic twin of IMDB-WIKI's "faces only" crops, in the released format.

https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/: ``imdb_crop/imdb.mat`` and
``imdb_crop/NN/nm<id>_rm<id>_<y-m-d>_<year>.jpg`` (NN: the nm number's last two digits, the date of
birth without zero padding), and ``wiki_crop/wiki.mat`` with ``wiki_crop/NN/<id>_<yyyy-mm-dd>_<year>.jpg``
(NN: the id's last two digits; Wikipedia's dates are zero padded). Each .mat is MATLAB v5 with one
struct (``imdb`` / ``wiki``) of 1xN fields: ``dob`` (MATLAB serial date), ``photo_taken`` (year),
``full_path``, ``gender`` (1 male, 0 female, NaN unknown), ``name``, ``face_location`` (1x4
[x1 y1 x2 y2], 1-based, in the crop's pixels), ``face_score`` (-Inf: no face found, location
[1 1 1 1]), ``second_face_score`` (NaN: no second face); imdb's also ``celeb_names`` (1xM) and
``celeb_id`` (1-based into them).

Each celebrity (an :class:`~fer_mm.data.twins.actors.Actor`, 400000 + i) has several photos taken in
different years, each rendered with the age at the photo (completed years on 1 July of
``photo_taken``, as the release computes it; nobody is born on 1 July, where the two usual readings
of that rule differ). A few celebrities are in both parts, under the same name and face; the other
Wikipedia people have one photo each. A few % of genders are NaN (per person), a few % of photos
show no face, some a second, smaller face (a bystander, actors 500000+). Crops are the face box with
a 40% margin on each side, 150-300 px square colour JPEGs. Ages and genders are *displayed* with
noise, and ceilings stated, as for UTKFace (:mod:`fer_mm.data.twins.attributes`); they are computed
over the photos with a face (gender: with a known gender too), for each part and for both.
"""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import scipy.io

from fer_mm.data.parallel import imap_progress
from fer_mm.data.twins.actors import Actor
from fer_mm.data.twins.attributes import (ATTRIBUTE_TWIN_VERSION, DISPLAYS_FILE, backdrop, ceilings, check_noise,
                                          displays_text, draw_display, jpeg, person_traits, portrait)
from fer_mm.data.twins.displays import keyed_rng
from fer_mm.data.twins.face import FaceTraits, face_ellipse, render_face
from fer_mm.data.twins.spec import SPEC_FILE, check_twin_folder
from fer_mm.files import write_atomic

IMDB_WIKI_TWIN_KIND = "fer-mm synthetic IMDB-WIKI twin"
IMDB_DIR, WIKI_DIR = "imdb_crop", "wiki_crop"
PERSON_BASE, BYSTANDER_BASE, MAX_IMAGES = 400_000, 500_000, 100_000  # Actor ids (UTKFace 300000+)
LAST_YEAR = 2015  # the crawl's
SHARED = 5  # celebrities in both parts
NAN_GENDER, NO_FACE, SECOND_FACE, MALE_SHARE = 0.03, 0.04, 0.08, 0.58
MARGIN = 0.4  # the crop: the face box and 40% of its side on each side
HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: fer-mm synthetic IMDB-WIKI twin"
FIRST = ("James", "John", "Robert", "Michael", "William", "David", "Richard", "Thomas", "Charles", "Daniel", "Paul",
         "Mark", "George", "Kevin", "Brian", "Edward", "Ronald", "Anthony", "Jason", "Ryan", "Gary", "Eric", "Peter",
         "Henry"), ("Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah",
                    "Karen", "Nancy", "Lisa", "Margaret", "Sandra", "Ashley", "Emily", "Donna", "Michelle", "Carol",
                    "Amanda", "Melissa", "Laura", "Helen", "Anna")
LAST = ("Abbott", "Barker", "Castillo", "Dalton", "Ellison", "Fairbanks", "Garrison", "Holloway", "Ingram", "Jansen",
        "Kowalski", "Lindqvist", "Marlowe", "Novak", "Okafor", "Pereira", "Quinlan", "Rasmussen", "Sandoval",
        "Takahashi", "Underwood", "Vasquez", "Whitfield", "Yamamoto", "Zielinski", "Ashford", "Brennan", "Calloway",
        "Delacroix", "Esposito", "Fontaine", "Grimaldi", "Hartley", "Iversen", "Kessler", "Lombardi", "Mercer",
        "Navarro", "Oyelaran", "Prescott")
KEYS = ("kind", "version", "celebrities", "images_per_celebrity", "wiki_images", "seed", "age_noise", "gender_flip")


def age_at(dob: date, year: int) -> int:
    """Completed years on 1 July of ``year``: the release's age of a photo taken that year."""
    return year - dob.year - ((dob.month, dob.day) > (7, 1))


def _name(rng: np.random.Generator, male: bool, taken: set) -> str:
    for k in range(1000):
        name = f"{rng.choice(FIRST[0 if male else 1])} {rng.choice(LAST)}"
        if k > 20:  # the plain names run out: a middle initial
            name = name.replace(" ", f" {chr(65 + int(rng.integers(26)))}. ", 1)
        if name not in taken:
            taken.add(name)
            return name
    raise ValueError("too many people for the twin's names")


def _person(rng: np.random.Generator, actor: int, names: set, born: tuple[int, int], start: float) -> dict:
    """Someone's name, gender, date of birth (never 1 July) and the years they are photographed in."""
    male = bool(rng.random() < MALE_SHARE)
    year = int(rng.integers(*born))
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    day += (month, day) == (7, 1)
    first = int(min(year + np.clip(rng.normal(start, 9), 6, 70), LAST_YEAR - 1))
    return dict(actor=actor, name=_name(rng, male, names), male=male, labelled=True, dob=date(year, month, day),
                years=(first, int(min(first + rng.uniform(3, 50), LAST_YEAR))), variant=float(rng.random()))


def _photo(person: dict, part: str, rng: np.random.Generator, noise: tuple[float, float]) -> dict:
    """One photo of ``person``: when, what it displays, whether a face (and a second) was found."""
    taken = int(rng.integers(person["years"][0], person["years"][1] + 1))
    age = age_at(person["dob"], taken)
    shown_age, shown_male = draw_display(rng, age, person["male"], *noise)
    face = bool(rng.random() >= NO_FACE)
    second = face and bool(rng.random() < SECOND_FACE)
    return dict(person, part=part, taken=taken, age=age, shown_age=shown_age, shown_male=shown_male,
                face=int(face), face_score=float(rng.uniform(0.6, 6.5)) if face else -np.inf,
                second_face_score=float(rng.uniform(0.2, 3.0)) if second else np.nan,
                gender_label=("male" if person["male"] else "female") if person["labelled"] else "unknown")


def _imdb_photos(stars: list[dict], per_celebrity: int, rng: np.random.Generator, noise: tuple) -> list[dict]:
    """Each celebrity's photos (1 + Poisson(per_celebrity - 1) of them), by nm id: ``NN/nm.._rm.._y-m-d_year.jpg``."""
    rows, rm = [], set()
    for star in sorted(stars, key=lambda s: s["nm"]):
        for _ in range(1 + int(rng.poisson(per_celebrity - 1))):
            while (r := int(rng.integers(1_000_000, 4_000_000_000))) in rm:
                pass
            rm.add(r)
            row, d = _photo(star, "imdb", rng, noise), star["dob"]
            stem = f"nm{star['nm']:07d}_rm{r}_{d.year}-{d.month}-{d.day}_{row['taken']}"
            rows.append(dict(row, file=f"{IMDB_DIR}/{star['nm'] % 100:02d}/{stem}.jpg"))
    return rows


def _wiki_photos(people: list[dict], unknown: int, rng: np.random.Generator, noise: tuple) -> list[dict]:
    """One photo per person, ``NN/<id>_<yyyy-mm-dd>_<year>.jpg``; the gender of ``unknown`` more of them unknown."""
    ids = rng.choice(50_000_000, len(people), replace=False) + 10_000
    rows = []
    for person, wid in zip(people, ids):
        row = _photo(person, "wiki", rng, noise)
        rows.append(dict(row, file=f"{WIKI_DIR}/{wid % 100:02d}/{wid}_{person['dob']:%Y-%m-%d}_{row['taken']}.jpg"))
    for i in rng.choice(len(rows), min(unknown, len(rows)), replace=False):
        rows[i]["gender_label"] = "unknown"
    return sorted(rows, key=lambda r: r["file"])  # as a listing of the folders


def _plan(celebrities: int, per_celebrity: int, wiki_images: int, seed: int, noise: tuple[float, float]) -> list[dict]:
    """Every photo, imdb's (by nm id) then wiki's, with its person and draws."""
    rng = keyed_rng("imdb-wiki plan", seed)
    names: set = set()
    nm = rng.choice(9_999_999, celebrities, replace=False) + 1
    stars = [dict(_person(rng, PERSON_BASE + i, names, (1920, 1996), 27), nm=int(nm[i])) for i in range(celebrities)]
    for i in rng.choice(celebrities, max(1, round(NAN_GENDER * celebrities)), replace=False):
        stars[i]["labelled"] = False  # a profile without a gender: all their photos
    rows = _imdb_photos(stars, per_celebrity, rng, noise)
    shared = [stars[i] for i in rng.choice(celebrities, min(SHARED, celebrities, wiki_images), replace=False)]
    others = [_person(rng, PERSON_BASE + celebrities + k, names, (1910, 1991), 35)
              for k in range(wiki_images - len(shared))]
    rows += _wiki_photos(shared + others, max(1, round(NAN_GENDER * wiki_images)), rng, noise) if wiki_images else []
    return [dict(row, index=i) for i, row in enumerate(rows)]


def imdb_wiki_spec(celebrities: int = 150, images_per_celebrity: int = 8, wiki_images: int = 200, seed: int = 0,
                   age_noise: float = 4.0, gender_flip: float = 0.05) -> dict:
    """What the twin's ``SYNTHETIC.json`` records: parameters, counts, ceilings per part and for both."""
    if celebrities < 1 or images_per_celebrity < 1 or wiki_images < 0:
        raise ValueError(f"celebrities and images_per_celebrity must be at least 1, wiki_images at least 0; got "
                         f"{celebrities}, {images_per_celebrity}, {wiki_images}")
    if celebrities * (images_per_celebrity + 3) + wiki_images > MAX_IMAGES:
        raise ValueError(f"the twin is limited to about {MAX_IMAGES} images")
    noise = check_noise(age_noise, gender_flip)
    rows = _plan(celebrities, images_per_celebrity, wiki_images, seed, noise)
    parts = {"imdb": [r for r in rows if r["part"] == "imdb"], "wiki": [r for r in rows if r["part"] == "wiki"],
             "both": rows}
    return dict(kind=IMDB_WIKI_TWIN_KIND, version=ATTRIBUTE_TWIN_VERSION, celebrities=celebrities,
                images_per_celebrity=images_per_celebrity, wiki_images=wiki_images, seed=seed, age_noise=noise[0],
                gender_flip=noise[1], images={p: len(rs) for p, rs in parts.items()},
                shared_names=sorted({r["name"] for r in parts["wiki"]} & {r["name"] for r in parts["imdb"]}),
                no_face={p: sum(not r["face"] for r in rs) for p, rs in parts.items()},
                second_face={p: int(sum(np.isfinite(r["second_face_score"]) for r in rs)) for p, rs in parts.items()},
                unknown_gender={p: sum(r["gender_label"] == "unknown" for r in rs) for p, rs in parts.items()},
                ages={p: dict(mean=float(np.mean([r["age"] for r in rs])), min=min(r["age"] for r in rs),
                              max=max(r["age"] for r in rs)) for p, rs in parts.items() if rs},
                **_ceilings(rows), ceilings={p: _ceilings(rs) for p, rs in parts.items()}, displays=DISPLAYS_FILE,
                face_location="1-based [x1 y1 x2 y2] in the crop's pixels")


def _ceilings(rows: list[dict]) -> dict:
    faces = [r for r in rows if r["face"]]
    known = [r for r in faces if r["gender_label"] != "unknown"]
    return ceilings([r["age"] for r in faces], [r["shown_age"] for r in faces], [r["male"] for r in known],
                    [r["shown_male"] for r in known])


def _setup(row: dict, seed: int) -> dict:
    """How the photo is framed, drawn apart from the rendering so the .mat needs no image: canvas, face box."""
    rng = keyed_rng("imdb-wiki photo", seed, row["file"])
    actor = Actor.make(row["actor"], seed)
    traits = person_traits(row["shown_age"], row["shown_male"], row["variant"], rng)
    size = int(rng.integers(150, 301))
    scale = float(rng.uniform(0.9, 1.1))
    _, _, a, b = face_ellipse(actor, (0.0, 0.0, scale), traits)
    box = 1.7 * b * rng.uniform(0.95, 1.05)
    side = (1 + 2 * MARGIN) * box
    canvas = int(np.ceil(side + 0.4 * a)) + 4
    centre = (canvas / 2 + a * rng.uniform(-0.05, 0.05), canvas / 2 + a * rng.uniform(-0.05, 0.05))  # the face's
    k = size / side  # crop pixels per canvas pixel
    shift = rng.uniform(-0.02, 0.02, 4) * box  # the detector's box is not the crop's exactly
    location = [k * (MARGIN * box + shift[0]) + 1, k * (MARGIN * box + shift[1]) + 1,
                k * ((1 + MARGIN) * box + shift[2]) + 1, k * ((1 + MARGIN) * box + shift[3]) + 1]
    return dict(actor=actor, traits=traits, size=size, scale=scale, canvas=canvas, centre=centre, side=side,
                crop_centre=(canvas / 2, canvas / 2 + 0.08 * b), location=location if row["face"] else [1.0] * 4,
                rng=rng)


def _bystander(row: dict, seed: int, s: dict, bg: np.ndarray) -> np.ndarray:
    """A second, smaller face beside the photo's subject, drawn on the background first."""
    rng = keyed_rng("imdb-wiki bystander", seed, row["file"])
    actor = Actor.make(BYSTANDER_BASE + row["index"], seed)
    traits = FaceTraits(float(rng.uniform(18, 70)), float(rng.random() < 0.5), float(rng.random()))
    side = rng.choice([-1, 1])
    x = s["canvas"] / 2 + side * rng.uniform(0.33, 0.45) * s["side"]
    y = s["canvas"] / 2 + rng.uniform(-0.15, 0.1) * s["side"]
    motion = (x - actor.center[0], y - actor.center[1], float(rng.uniform(0.45, 0.65)) * s["scale"])
    return render_face(actor, bg, {12: float(rng.uniform(0, 0.8))}, 0.0, motion, 0.0, rng, traits=traits)


def photo(row: dict, seed: int) -> np.ndarray:
    """The crop of one photo (BGR, ``size`` square), or, where no face was found, the backdrop alone."""
    s = _setup(row, seed)
    rng = s["rng"]
    bg = backdrop(rng.uniform(30, 210, 3), rng.uniform(-0.3, 0.3, 2), s["canvas"])  # each photo its own place
    if not row["face"]:
        frame = cv2.GaussianBlur(bg, (3, 3), 0)
        return cv2.resize(frame, (s["size"], int(s["size"] * rng.uniform(0.75, 1.3))), interpolation=cv2.INTER_AREA)
    if np.isfinite(row["second_face_score"]):
        bg = _bystander(row, seed, s, bg)
    frame, _ = portrait(s["actor"], s["traits"], rng, bg, s["centre"], s["scale"], jitter=0.0)
    side = int(round(s["side"]))
    crop = cv2.getRectSubPix(frame, (side, side), s["crop_centre"])
    return cv2.resize(crop, (s["size"], s["size"]), interpolation=cv2.INTER_AREA)


def _images(job: tuple) -> int:
    """Write one chunk of photos: (root, seed, rows)."""
    root, seed, rows = job
    for row in rows:
        path = Path(root) / row["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, jpeg(photo(row, seed)))
    return len(rows)


def _cell(values: list) -> np.ndarray:
    """A MATLAB 1xN cell array."""
    cell = np.empty((1, len(values)), dtype=object)
    for i, v in enumerate(values):
        cell[0, i] = v
    return cell


def mat_bytes(rows: list[dict], seed: int, struct: str) -> bytes:
    """The part's .mat: one struct of 1xN fields in the release's order; imdb's with its celebrity index."""
    fields = dict(
        dob=np.array([[r["dob"].toordinal() + 366 for r in rows]], float),
        photo_taken=np.array([[r["taken"] for r in rows]], float),
        full_path=_cell([r["file"].split("/", 1)[1] for r in rows]),
        gender=np.array([[{"male": 1.0, "female": 0.0, "unknown": np.nan}[r["gender_label"]] for r in rows]]),
        name=_cell([r["name"] for r in rows]),
        face_location=_cell([np.array([_setup(r, seed)["location"]], float) for r in rows]),
        face_score=np.array([[r["face_score"] for r in rows]]),
        second_face_score=np.array([[r["second_face_score"] for r in rows]]))
    if struct == "imdb":
        names = sorted({r["name"] for r in rows})
        fields["celeb_names"] = _cell(names)
        fields["celeb_id"] = np.array([[names.index(r["name"]) + 1 for r in rows]], float)
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {struct: fields}, format="5", oned_as="row")
    data = bytearray(buffer.getvalue())
    data[:116] = HEADER.ljust(116)  # scipy writes the time of writing there: a fixed text keeps the twin byte-identical
    return bytes(data)


def generate_imdb_wiki(out_dir: Path, celebrities: int = 150, images_per_celebrity: int = 8, wiki_images: int = 200,
                       seed: int = 0, age_noise: float = 4.0, gender_flip: float = 0.05, workers: int = 0,
                       progress: bool = True) -> Path:
    """Write the IMDB-WIKI twin (``imdb_crop/``, ``wiki_crop/``, ``displays.csv``, ``SYNTHETIC.json``) under ``out_dir``.

    ``celebrities`` in imdb, each with 1 + Poisson(``images_per_celebrity`` - 1) photos (that many
    on average); ``wiki_images`` Wikipedia people of one photo each, a few of them celebrities too.

    ``SYNTHETIC.json`` first, ``imdb_crop/imdb.mat`` last (it marks the twin whole); photos already
    written are kept, so a crashed run resumes. A folder that holds another twin (or an
    ``imdb_crop/`` of no twin) is refused; one that holds this twin whole is returned at once.
    """
    out_dir = Path(out_dir)
    spec = imdb_wiki_spec(celebrities, images_per_celebrity, wiki_images, seed, age_noise, gender_flip)
    old = check_twin_folder(out_dir, spec, KEYS, out_dir / IMDB_DIR)
    rows = _plan(celebrities, images_per_celebrity, wiki_images, seed, (spec["age_noise"], spec["gender_flip"]))
    todo = [r for r in rows if not (out_dir / r["file"]).exists()]
    if old is not None and not todo and (out_dir / IMDB_DIR / "imdb.mat").exists():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / SPEC_FILE, json.dumps(spec, indent=2) + "\n")  # first: the folder says which twin it is
    jobs = [(str(out_dir), seed, todo[i : i + 20]) for i in range(0, len(todo), 20)]
    for _ in imap_progress(_images, jobs, workers, "rendering IMDB-WIKI photos", progress):
        pass
    write_atomic(out_dir / DISPLAYS_FILE, displays_text(rows, ("gender_label", "face")))
    for part, folder in (("wiki", WIKI_DIR), ("imdb", IMDB_DIR)):  # imdb.mat last
        part_rows = [r for r in rows if r["part"] == part]
        if part_rows:
            (out_dir / folder).mkdir(exist_ok=True)
            write_atomic(out_dir / folder / f"{part}.mat", mat_bytes(part_rows, seed, part))
    return out_dir
