"""UTKFace and IMDB-WIKI readers on small sets written here in the releases' own formats (jpgs with
cv2, landmark lists by hand, .mat files with scipy.io.savemat), independently of fer-mm's writers."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from fer_mm.data.sources import imdb_wiki, utkface

COLUMNS = ["name", "actor", "sentence", "emotion", "level", "label", "part", "aus", "gender", "age", "race", "box",
           "path"]
MALFORMED = ("39_1_20170116174525125.jpg.chip.jpg", "61_1_20170109142408075.jpg.chip.jpg",
             "61_1_20170109150557335.jpg.chip.jpg")


def jpg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 8, 3), 128, np.uint8))
    return path


# --- UTKFace -----------------------------------------------------------------------------------------

def test_parse_name_maps_gender_and_race():
    assert utkface.parse_name("26_0_2_20170116184028385.jpg.chip.jpg") == \
        dict(age=26, gender=1, race="Asian", taken="20170116184028385")  # UTK 0 male -> fer-mm 1 male
    assert utkface.parse_name("1_1_4_20161221193342207.jpg") == \
        dict(age=1, gender=0, race="Others", taken="20161221193342207")


@pytest.mark.parametrize("name", MALFORMED)
def test_parse_name_names_the_missing_race(name):
    with pytest.raises(ValueError, match=r"malformed name: expected \[age\]_\[gender\]_\[race\]_\[date&time\]\.jpg, "
                                         r"race field missing"):
        utkface.parse_name(name)


@pytest.mark.parametrize("name, field", [("117_0_0_20170116184028385.jpg", "age"),
                                         ("30_2_0_20170116184028385.jpg", "gender"),
                                         ("30_0_5_20170116184028385.jpg", "race"),
                                         ("30_0_0_2017x.jpg", "date&time"),
                                         ("30_0_0_1_20170116184028385.jpg", "5 fields")])
def test_parse_name_rejects_values_out_of_range(name, field):
    with pytest.raises(ValueError, match=field):
        utkface.parse_name(name)


def test_utkface_folder(tmp_path):
    good = ["26_0_2_20170116184028385.jpg.chip.jpg", "1_1_0_20161219140623097.jpg.chip.jpg",
            "90_0_1_20170120134639935.jpg.chip.jpg"]
    for name in good + [MALFORMED[0]]:
        jpg(tmp_path / "UTKFace" / name)
    (tmp_path / "UTKFace" / "notes.txt").write_text("x")
    found = utkface.scan(tmp_path, SimpleNamespace())
    index = found.index
    assert list(index.columns) == COLUMNS
    assert index["name"].tolist() == sorted(f"UTKFace/{n}" for n in good)
    row = index.set_index("name").loc["UTKFace/26_0_2_20170116184028385.jpg.chip.jpg"]
    assert (row["gender"], row["age"], row["race"], row["box"]) == (1, 26.0, "Asian", "")
    assert (row["actor"], row["label"], row["part"], row["aus"], row["emotion"]) == (-1, -1, "", "?", "")
    assert Path(row["path"]).is_absolute() and Path(row["path"]).is_file()
    assert "race field missing" in found.problems[f"UTKFace/{MALFORMED[0]}"]
    assert "not an image" in found.problems["UTKFace/notes.txt"]


def test_crop_part1_as_child_or_as_root(tmp_path):
    jpg(tmp_path / "crop_part1" / "45_1_3_20170109142408075.jpg.chip.jpg")
    assert utkface.find_layout(tmp_path, None) == ("crop_part1", [tmp_path / "crop_part1"])
    index = utkface.scan(tmp_path / "crop_part1", SimpleNamespace(layout=None)).index
    assert index["name"].tolist() == ["45_1_3_20170109142408075.jpg.chip.jpg"]
    assert (index["gender"][0], index["race"][0]) == (0, "Indian")


def landmark_line(name: str, xs, ys, sep=" ") -> str:
    points = [v for xy in zip(xs, ys) for v in xy]
    return sep.join([name, *map(str, points)]) + " \n"  # the release ends each line with a space


def test_wild_parts_take_their_landmark_box(tmp_path):
    a, b, c = "20_0_0_20170104165813596.jpg", "35_1_1_20170112213500903.jpg", "50_0_2_20170116174525125.jpg"
    jpg(tmp_path / "part1" / a), jpg(tmp_path / "part1" / b), jpg(tmp_path / "part2" / c)
    xs, ys = list(range(100, 168)), [50 + (i * 7) % 90 for i in range(68)]
    (tmp_path / "landmark_list_part1.txt").write_text(
        landmark_line(a, xs, ys) + "35_1_1_20170112213500903.jpg 1 2 3\n")  # b's line is cut short
    (tmp_path / "landmark_list_part2.txt").write_text(landmark_line(c + ".chip.jpg", [5] * 67 + [25], [9] * 67 + [30])
                                                      + landmark_line(a, [5] * 68, [9] * 68))  # a point, not a face
    jpg(tmp_path / "UTKFace" / "26_0_2_20170116184028385.jpg.chip.jpg")  # auto would take this one
    found = utkface.scan(tmp_path, SimpleNamespace(layout="wild"))
    boxes = dict(zip(found.index["name"], found.index["box"]))
    assert boxes == {f"part1/{a}": f"100,50,67,{max(ys) - 50}", f"part1/{b}": "", f"part2/{c}": "5,9,20,21"}
    assert "found 3 numbers" in found.problems["landmark_list_part1.txt line 2"]
    assert "not a face" in found.problems["landmark_list_part2.txt line 2"]
    assert "1 images not in landmark_list_part1.txt" in found.problems["part1/ (no landmarks)"]
    assert utkface.find_layout(tmp_path, None)[0] == "UTKFace"


def test_wild_part_without_a_landmark_list(tmp_path):
    jpg(tmp_path / "part3" / "20_0_0_20170104165813596.jpg")
    found = utkface.scan(tmp_path, SimpleNamespace())
    assert found.index["box"].tolist() == [""]
    assert "no landmark_list_part3.txt" in found.problems["part3/"]


def test_renamed_folder_of_utkface_images(tmp_path):
    jpg(tmp_path / "faces" / "26_0_2_20170116184028385.jpg.chip.jpg")
    assert utkface.find_layout(tmp_path / "faces", None) == ("UTKFace", [tmp_path / "faces"])


def test_a_root_that_is_not_utkface(tmp_path):
    jpg(tmp_path / "happy" / "001.jpg")
    with pytest.raises(FileNotFoundError, match=r"data.root=.* holds no UTKFace/, crop_part1/ or part1-3/ folders, "
                                                r"nor UTKFace-named images"):
        utkface.scan(tmp_path, SimpleNamespace())
    with pytest.raises(ValueError, match="data.preprocess.layout='aligned'"):
        utkface.find_layout(tmp_path, "aligned")


# --- IMDB-WIKI ---------------------------------------------------------------------------------------

def datenum(day: date) -> float:
    """MATLAB's serial date number of a day (day 1 = 0000-01-01)."""
    return float(day.toordinal() + 366)


def cell(items) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def entry(path, born=date(1981, 5, 5), taken=2009, gender=0.0, name="", loc=(11, 21, 60, 80), score=3.0,
          second=np.nan, celeb=1) -> dict:
    return dict(full_path=path, dob=datenum(born) if isinstance(born, date) else born, photo_taken=taken,
                gender=gender, name=name, face_location=np.array(loc, float), face_score=score,
                second_face_score=second, celeb_id=celeb)


def write_mat(path: Path, set_name: str, entries: list[dict], celeb_names=(), drop=(), images=True) -> Path:
    """A release-format .mat (one struct of 1xN fields, cells as object arrays) and the images it lists."""
    fields = ["dob", "photo_taken", "full_path", "gender", "name", "face_location", "face_score", "second_face_score"]
    if set_name == "imdb":
        fields.append("celeb_id")
    struct = {}
    for field in fields:
        values = [e[field] for e in entries]
        struct[field] = cell(values) if field in ("full_path", "name", "face_location") else np.array(values, float)
    if set_name == "imdb":
        struct["celeb_names"] = cell(list(celeb_names))
    for field in drop:
        struct.pop(field)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {set_name: struct})
    for e in entries if images else []:
        if not e.get("missing"):
            jpg(path.parent / e["full_path"])
    return path


def test_age_from_dob_on_the_first_of_july():
    assert imdb_wiki.age_at(2009, imdb_wiki.birth_date(datenum(date(1981, 5, 5)))) == 28
    assert imdb_wiki.age_at(2009, imdb_wiki.birth_date(datenum(date(1981, 9, 10)))) == 27
    assert imdb_wiki.age_at(2009, imdb_wiki.birth_date(datenum(date(1981, 7, 1)) + 0.75)) == 28
    assert imdb_wiki.birth_date(723671.0) == date(1981, 5, 5)  # 17/10000217_1981-05-05_2009.jpg's dob
    assert imdb_wiki.birth_date(5.0) is None and imdb_wiki.birth_date(np.nan) is None


def test_read_mat_one_entry(tmp_path):
    path = write_mat(tmp_path / "wiki_crop" / "wiki.mat", "wiki",
                     [entry("17/10000217_1981-05-05_2009.jpg", gender=np.nan)], images=False)
    table = imdb_wiki.read_mat(path)
    assert len(table) == 1 and imdb_wiki.read_set(path)[0] == "wiki"
    row = table.iloc[0]
    assert (row["full_path"], row["age"], row["gender"], row["name"], row["celeb_id"]) == \
        ("17/10000217_1981-05-05_2009.jpg", 28.0, -1, "", -1)
    assert row["face_location"] == (10.0, 20.0, 50.0, 60.0)


def test_read_mat_errors_name_file_and_field(tmp_path):
    path = write_mat(tmp_path / "imdb.mat", "imdb", [entry("01/a.jpg")], ["A"], drop=["face_score"], images=False)
    with pytest.raises(ValueError, match=r"imdb.mat has no field face_score \(a release .mat holds dob, photo_taken"):
        imdb_wiki.read_mat(path)
    (tmp_path / "wiki.mat").write_text("not a mat")
    with pytest.raises(ValueError, match="wiki.mat is not a MATLAB .mat file"):
        imdb_wiki.read_mat(tmp_path / "wiki.mat")
    savemat(tmp_path / "other.mat", {"faces": {"dob": np.array([1.0])}})
    with pytest.raises(ValueError, match=r"other.mat holds no struct named imdb or wiki \(it holds \['faces'\]\)"):
        imdb_wiki.read_mat(tmp_path / "other.mat")


@pytest.fixture
def release(tmp_path) -> Path:
    imdb = [
        entry("01/nm01_rm1_1981-05-05_2009.jpg", name="Alice Smith", celeb=1),
        entry("01/nm02_rm1_1981-09-10_2009.jpg", born=date(1981, 9, 10), gender=np.nan, name="Bob Jones", celeb=2),
        entry("02/no_face.jpg", score=-np.inf, loc=(1, 1, 1, 1)),
        entry("02/weak.jpg", score=0.5),
        entry("02/two_faces.jpg", second=1.5),
        entry("02/bogus_dob.jpg", born=5.0),
        entry("02/old.jpg", born=date(1850, 1, 1)),
        dict(entry("03/missing.jpg"), missing=True),
    ]
    write_mat(tmp_path / "imdb_crop" / "imdb.mat", "imdb", imdb, ["Alice Smith", "Bob Jones"])
    wiki = [entry("10/alice.jpg", name="Alice Smith", gender=0.0), entry("11/zed.jpg", name="Zed", gender=1.0),
            entry("12/carl.jpg", name="Carl", gender=1.0), entry("13/nobody.jpg", name=""),
            entry("14/nobody2.jpg", name="")]
    write_mat(tmp_path / "wiki_crop" / "wiki.mat", "wiki", wiki)
    return tmp_path


def test_scan_both_sets(release):
    found = imdb_wiki.scan(release, SimpleNamespace())
    index = found.index
    assert list(index.columns) == COLUMNS
    assert index["name"].tolist() == sorted(index["name"])
    rows = index.set_index("name")
    alice = rows.loc["imdb/01/nm01_rm1_1981-05-05_2009.jpg"]
    assert (alice["actor"], alice["gender"], alice["age"], alice["box"], alice["race"], alice["label"]) == \
        (1, 0, 28.0, "10,20,50,60", "", -1)
    bob = rows.loc["imdb/01/nm02_rm1_1981-09-10_2009.jpg"]
    assert (bob["actor"], bob["gender"], bob["age"]) == (2, -1, 27.0)
    assert rows.loc["wiki/10/alice.jpg", "actor"] == 1  # the same person as IMDB's celeb 1
    assert rows.loc["wiki/12/carl.jpg", "actor"] == 1_000_000 and rows.loc["wiki/11/zed.jpg", "actor"] == 1_000_001
    assert {rows.loc["wiki/13/nobody.jpg", "actor"], rows.loc["wiki/14/nobody2.jpg", "actor"]} == \
        {1_000_002, 1_000_003}
    assert Path(rows.loc["wiki/11/zed.jpg", "path"]) == release / "wiki_crop" / "11" / "zed.jpg"
    assert len(index) == 2 + 5
    problems = found.problems
    assert problems["(filtered) imdb: no face found (face_score -Inf)"] == "1 images"
    assert problems["(filtered) imdb: face_score below 1"] == "1 images"
    assert problems["(filtered) imdb: a second face in the image (second_face_score set)"] == "1 images"
    assert problems["(filtered) imdb: dob unusable (no date of birth, so no age)"] == "1 images"
    assert problems["(filtered) imdb: age outside [0, 100]"] == "1 images"
    assert problems["imdb/03/missing.jpg"].startswith("missing: no image file")
    assert not any(k.startswith("(filtered) wiki") for k in problems)


def test_scan_options_and_one_set(release):
    p = SimpleNamespace(sets=["imdb"], min_face_score=float("-inf"), drop_second_face=False, min_age=0, max_age=200)
    rows = imdb_wiki.scan(release, p).index.set_index("name")
    assert rows.loc["imdb/02/no_face.jpg", "box"] == ""  # kept where no face was found: no box
    assert "imdb/02/weak.jpg" in rows.index and "imdb/02/two_faces.jpg" in rows.index
    assert rows.loc["imdb/02/old.jpg", "age"] == 159.0
    wiki = imdb_wiki.scan(release / "wiki_crop", SimpleNamespace(sets=None)).index.set_index("name")
    assert wiki.loc["wiki/10/alice.jpg", "actor"] == 1_000_000  # no IMDB read: a Wikipedia id
    assert imdb_wiki.find_sets(release) == {"imdb": release / "imdb_crop" / "imdb.mat",
                                            "wiki": release / "wiki_crop" / "wiki.mat"}


def test_find_sets_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no imdb_crop/imdb.mat or wiki_crop/wiki.mat"):
        imdb_wiki.find_sets(tmp_path)
    with pytest.raises(ValueError, match="data.preprocess.sets"):
        imdb_wiki.find_sets(tmp_path, ["celeba"])
    write_mat(tmp_path / "wiki_crop" / "wiki.mat", "wiki", [entry("1/a.jpg")], images=False)
    with pytest.raises(FileNotFoundError, match="holds no imdb_crop/imdb.mat"):
        imdb_wiki.find_sets(tmp_path, ["imdb", "wiki"])


def test_unreadable_duplicate_and_many_missing_entries(tmp_path):
    entries = [entry(f"{i % 100:02d}/{i}.jpg") for i in range(imdb_wiki.MAX_LISTED + 3)]
    entries += [entry(""), entry("00/0.jpg"), entry("99/bad_id.jpg", celeb=0)]
    write_mat(tmp_path / "imdb.mat", "imdb", entries, ["A"], images=False)
    problems = imdb_wiki.scan(tmp_path, SimpleNamespace()).problems
    assert problems["imdb.mat entry 1004"] == "unreadable entry: full_path is empty or not a string"
    assert problems["imdb/99/bad_id.jpg"].startswith("unreadable entry: celeb_id 0 is not an index 1-1")
    assert problems["imdb/00/0.jpg (again)"] == "duplicate entry: the .mat lists this image twice"
    assert sum(v.startswith("missing:") for v in problems.values()) == imdb_wiki.MAX_LISTED
    assert problems["(missing) imdb"] == "3 more not listed"
