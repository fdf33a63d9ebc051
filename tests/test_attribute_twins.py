"""The UTKFace and IMDB-WIKI twins: the releases' formats, their ceilings, and cues a model can learn."""

import csv
import hashlib
import json
import re
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from fer_mm.data.twins.actors import Actor
from fer_mm.data.twins.attributes import UTKFACE_TWIN_KIND, generate_utkface
from fer_mm.data.twins.face import FaceTraits, background, render_face
from fer_mm.data.twins.imdb_wiki import IMDB_WIKI_TWIN_KIND, generate_imdb_wiki
from fer_mm.data.twins.images import generate_fer2013

UTK_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d{17})\.jpg\.chip\.jpg$")
UTK_MALFORMED = re.compile(r"^(\d{1,3})_([01])_(\d{17})\.jpg\.chip\.jpg$")  # the release's three without race
IMDB_PATH = re.compile(r"^(\d\d)/nm(\d{7})_rm(\d+)_(\d{4})-([1-9]\d?)-([1-9]\d?)_(\d{4})\.jpg$")
WIKI_PATH = re.compile(r"^(\d\d)/(\d+)_(\d{4})-(\d\d)-(\d\d)_(\d{4})\.jpg$")
FIELDS = ("dob", "photo_taken", "full_path", "gender", "name", "face_location", "face_score", "second_face_score")
UTK_ARGS = dict(images=300, seed=0, workers=1, progress=False)
IMDB_ARGS = dict(celebrities=30, images_per_celebrity=8, wiki_images=40, seed=0, workers=1, progress=False)


@pytest.fixture(scope="module")
def utk(tmp_path_factory) -> Path:
    return generate_utkface(tmp_path_factory.mktemp("utk") / "twin", **UTK_ARGS)


@pytest.fixture(scope="module")
def imdb(tmp_path_factory) -> Path:
    return generate_imdb_wiki(tmp_path_factory.mktemp("imdb") / "twin", **IMDB_ARGS)


def displays(root: Path) -> list[dict]:
    with open(root / "displays.csv", newline="") as f:
        return list(csv.DictReader(f))


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def struct(root: Path, part: str):
    m = scipy.io.loadmat(root / f"{part}_crop" / f"{part}.mat")  # plain loadmat, as users read the release
    return m[part][0, 0]


def recomputed_ceilings(rows: list[dict]) -> dict:
    faces = [r for r in rows if r.get("face", "1") == "1"]
    known = [r for r in faces if r.get("gender_label", r["gender"]) != "unknown"]
    ages = np.array([float(r["age"]) for r in faces])
    males = np.array([r["gender"] == "male" for r in known])
    return dict(gender_ceiling=np.mean([r["gender"] == r["displayed_gender"] for r in known]),
                majority_gender_accuracy=max(males.mean(), 1 - males.mean()),
                age_mae_floor=np.mean([abs(float(r["displayed_age"]) - float(r["age"])) for r in faces]),
                mean_age_mae=np.mean(np.abs(ages - ages.mean())), median_age_mae=np.mean(np.abs(ages - np.median(ages))))


def test_utkface_twin_has_the_release_format(utk):
    names = sorted(p.name for p in (utk / "UTKFace").iterdir())
    assert len(names) == 300 and len(set(names)) == 300
    malformed = [n for n in names if UTK_MALFORMED.match(n)]
    assert len(malformed) == 3 and all(UTK_NAME.match(n) for n in names if n not in malformed)
    spec = json.loads((utk / "SYNTHETIC.json").read_text())
    assert spec["kind"] == UTKFACE_TWIN_KIND and sorted(spec["malformed_names"]) == malformed
    rows = {r["file"].removeprefix("UTKFace/"): r for r in displays(utk)}
    assert set(rows) == set(names) and all(r["file"].startswith("UTKFace/") for r in rows.values())
    for name in names:
        m = UTK_NAME.match(name) or UTK_MALFORMED.match(name)
        age, gender, stamp = int(m.group(1)), m.group(2), m.group(m.lastindex)
        assert 0 <= age <= 116 and rows[name]["age"] == str(age)
        assert rows[name]["gender"] == ("male" if gender == "0" else "female")  # 0 male, 1 female
        assert rows[name]["race"] == (m.group(3) if m.re is UTK_NAME else "")
        assert stamp[:6] in ("201612", "201701") and int(stamp[6:8]) <= 31 and int(stamp[8:10]) < 24
    ages = np.array([int(r["age"]) for r in rows.values()])
    assert (ages <= 5).mean() > 0.05 and ((ages >= 20) & (ages <= 35)).mean() > 0.3 and ages.max() > 70
    for name in names[::50]:
        img = cv2.imread(str(utk / "UTKFace" / name), cv2.IMREAD_UNCHANGED)
        assert img.shape == (200, 200, 3) and np.abs(img[..., 0].astype(int) - img[..., 2]).mean() > 3  # colour


def test_utkface_ceilings_follow_from_the_displays(utk):
    spec = json.loads((utk / "SYNTHETIC.json").read_text())
    rows = displays(utk)
    for key, value in recomputed_ceilings(rows).items():
        assert spec[key] == pytest.approx(value, abs=1e-9), key
    assert 0.9 <= spec["gender_ceiling"] < 1 and spec["majority_gender_accuracy"] < 0.65
    assert 2.5 < spec["age_mae_floor"] < 4 < spec["median_age_mae"] <= spec["mean_age_mae"]


def test_imdb_wiki_mat_has_the_release_structure(imdb):
    s = struct(imdb, "imdb")
    assert s.dtype.names == FIELDS + ("celeb_names", "celeb_id")
    n = len(s["dob"][0])
    assert s["dob"][0].dtype == np.float64 and all(len(s[f][0]) == n for f in FIELDS + ("celeb_id",))
    names = [c[0] for c in s["celeb_names"][0]]
    assert len(names) == 30 and names == sorted(names)
    rows = {r["file"]: r for r in displays(imdb)}
    years: dict[str, set] = {}
    for i in range(n):
        path, name = s["full_path"][0][i][0], s["name"][0][i][0]
        assert isinstance(path, str) and names[int(s["celeb_id"][0][i]) - 1] == name
        m = IMDB_PATH.match(path)
        assert m and int(m.group(1)) == int(m.group(2)) % 100 and (imdb / "imdb_crop" / path).is_file()
        dob = date.fromordinal(int(s["dob"][0][i]) - 366)
        assert (dob.year, dob.month, dob.day) == tuple(int(v) for v in m.group(4, 5, 6))
        assert int(m.group(7)) == s["photo_taken"][0][i]
        row = rows[f"imdb_crop/{path}"]
        # the release's age: completed years on 1 July of the year taken
        assert int(row["age"]) == s["photo_taken"][0][i] - dob.year - ((dob.month, dob.day) > (7, 1))
        gender = s["gender"][0][i]
        assert row["gender_label"] == ("unknown" if np.isnan(gender) else "male" if gender == 1 else "female")
        years.setdefault(name, set()).add(int(s["photo_taken"][0][i]))
    assert max(len(y) for y in years.values()) >= 3  # a celebrity photographed in several years
    assert len(rows) == n + len(struct(imdb, "wiki")["dob"][0])


def test_imdb_wiki_has_its_defects_and_faces(imdb):
    s = struct(imdb, "imdb")
    gender, score, second = s["gender"][0], s["face_score"][0], s["second_face_score"][0]
    assert 0 < np.isnan(gender).mean() < 0.1 and set(gender[~np.isnan(gender)]) == {0.0, 1.0}
    assert 0 < np.isneginf(score).sum() and 0 < np.isfinite(second).sum() < len(second) / 4
    for i in range(len(score)):
        location = s["face_location"][0][i][0]
        assert location.shape == (4,)
        img = cv2.imread(str(imdb / "imdb_crop" / s["full_path"][0][i][0]))
        if np.isneginf(score[i]):
            assert list(location) == [1, 1, 1, 1] and np.isnan(second[i])
            continue
        assert img.shape[0] == img.shape[1] and 150 <= img.shape[0] <= 300 and img.shape[2] == 3
        x1, y1, x2, y2 = location
        assert 1 <= x1 < x2 <= img.shape[1] + 1 and 1 <= y1 < y2 <= img.shape[0] + 1
        assert 0.45 < (x2 - x1) / img.shape[1] < 0.65  # the face box: the crop less 40% margins
    w = struct(imdb, "wiki")
    assert w.dtype.names == FIELDS
    wiki_names = {c[0] for c in w["name"][0]}
    shared = wiki_names & {c[0] for c in s["celeb_names"][0]}
    assert 1 <= len(shared) <= 5 and sorted(shared) == json.loads((imdb / "SYNTHETIC.json").read_text())["shared_names"]
    for i in range(len(w["dob"][0])):
        m = WIKI_PATH.match(w["full_path"][0][i][0])
        assert m and int(m.group(1)) == int(m.group(2)) % 100 and int(m.group(6)) == w["photo_taken"][0][i]


def test_imdb_wiki_ceilings_follow_from_the_displays(imdb):
    spec = json.loads((imdb / "SYNTHETIC.json").read_text())
    assert spec["kind"] == IMDB_WIKI_TWIN_KIND
    rows = displays(imdb)
    assert all((r["face"] == "0") == (r["displayed_age"] == "") for r in rows)
    parts = {"imdb": [r for r in rows if r["file"].startswith("imdb_crop/")],
             "wiki": [r for r in rows if r["file"].startswith("wiki_crop/")], "both": rows}
    for part, part_rows in parts.items():
        for key, value in recomputed_ceilings(part_rows).items():
            assert spec["ceilings"][part][key] == pytest.approx(value, abs=1e-9), (part, key)
    assert spec["gender_ceiling"] == spec["ceilings"]["both"]["gender_ceiling"] > spec["majority_gender_accuracy"]


def test_twins_are_deterministic_resumable_and_refuse_others(utk, imdb, tmp_path):
    small = dict(celebrities=4, images_per_celebrity=3, wiki_images=6, seed=0, workers=1, progress=False)
    one = generate_imdb_wiki(tmp_path / "one", **small)
    made = files(one)
    assert files(generate_imdb_wiki(tmp_path / "again", **small)) == made
    photo = sorted((one / "imdb_crop").rglob("*.jpg"))[2]
    photo.unlink()
    (one / "imdb_crop" / "imdb.mat").unlink()
    generate_imdb_wiki(one, **small)
    assert files(one) == made
    u = generate_utkface(tmp_path / "u", images=40, workers=1, progress=False)
    made = files(u)
    assert files(generate_utkface(tmp_path / "u2", images=40, workers=1, progress=False)) == made
    sorted((u / "UTKFace").iterdir())[5].unlink()
    generate_utkface(u, images=40, workers=1, progress=False)
    assert files(u) == made
    with pytest.raises(ValueError, match="images: 40 there, 41 asked"):
        generate_utkface(u, images=41, progress=False)
    with pytest.raises(ValueError, match="kind"):
        generate_imdb_wiki(u, **small)
    with pytest.raises(ValueError, match="kind"):
        generate_fer2013(one, 3, 2, progress=False)
    foreign = tmp_path / "real"
    (foreign / "UTKFace").mkdir(parents=True)
    with pytest.raises(ValueError, match="no SYNTHETIC.json"):
        generate_utkface(foreign, images=40, progress=False)
    (foreign / "imdb_crop").mkdir()
    with pytest.raises(ValueError, match="no SYNTHETIC.json"):
        generate_imdb_wiki(foreign, **small)


def _ridge(x: np.ndarray, y: np.ndarray, lam: float = 30.0):
    mu, centre = x.mean(axis=0), y.mean()
    w = np.linalg.solve((x - mu).T @ (x - mu) + lam * np.eye(x.shape[1]), (x - mu).T @ (y - centre))
    return lambda z: (z - mu) @ w + centre


def test_cues_are_learnable_from_48x48_gray_crops(utk):
    rows = displays(utk)
    x = np.stack([cv2.resize(cv2.imread(str(utk / r["file"]), cv2.IMREAD_GRAYSCALE), (48, 48),
                             interpolation=cv2.INTER_AREA).ravel() for r in rows]).astype(float)
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    male = np.array([r["displayed_gender"] == "male" for r in rows], float)
    age = np.array([float(r["displayed_age"]) for r in rows])
    train, test = slice(0, 200), slice(200, None)
    accuracy = np.mean((_ridge(x[train], male[train])(x[test]) > 0.5) == (male[test] > 0.5))
    predicted = _ridge(x[train], age[train])(x[test])
    assert accuracy > 0.85  # chance: about 0.5
    assert np.corrcoef(predicted, age[test])[0, 1] > 0.75
    assert np.mean(np.abs(predicted - age[test])) < 0.75 * np.mean(np.abs(age[test] - np.median(age[train])))


# sha256 of three frames rendered by face.py before FaceTraits existed (commit d485963): traits=None keeps them
FRAMES_BEFORE_TRAITS = "05f2fc3577dfd0c1bef013ca17ccde5705b8ace3712d0cee057b1d9a43e87926"


def _three_frames(**kwargs) -> list[np.ndarray]:
    frames = []
    for aid, aus, asym in ((1001, {6: 0.7, 12: 0.9}, 0.0), (100007, {1: 0.8, 4: 0.6, 15: 0.9}, 0.0),
                           (200123, {12: 0.5}, 0.6)):
        actor = Actor.make(aid, 0)
        frames.append(render_face(actor, background(actor), aus, 0.2, (3.0, -2.0, 1.02), 0.3,
                                  np.random.default_rng(aid), asym=asym, **kwargs))
    return frames


def test_render_face_without_traits_is_unchanged_and_traits_draw():
    plain = _three_frames()
    assert hashlib.sha256(np.stack(plain).tobytes()).hexdigest() == FRAMES_BEFORE_TRAITS
    assert all(np.array_equal(a, b) for a, b in zip(plain, _three_frames(traits=None)))
    young, old = _three_frames(traits=FaceTraits(25, 0.9)), _three_frames(traits=FaceTraits(75, 0.9))
    assert not any(np.array_equal(a, b) for a, b in zip(plain, young))
    assert all(o.mean() > y.mean() for o, y in zip(old, young))  # grey hair, at least
