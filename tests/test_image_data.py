"""Image sets in their released formats -> the cache -> protocols and targets.

The FER2013 csv and the CK+ folder here are written by tests/image_sets.py, independently of the
project's twins."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from fer_mm.data import targets

from fer_mm.data.sources import ckplus

from fer_mm.data.sources import fer2013
from fer_mm.data.cache import ClipCache
from fer_mm.data.images import ImagePreprocessParams, build_image_cache, read_gray
from fer_mm.data.sources.folders import scan_image_folder
from fer_mm.data.protocols import LeaveOneSubjectOut, ReleasedSplit, SpeakerKFold
from image_sets import face, write_ckplus_folder, write_fer2013_csv


@pytest.fixture(scope="module")
def fer_csv(tmp_path_factory):
    root = tmp_path_factory.mktemp("fer_independent")
    rows = write_fer2013_csv(root / "fer2013.csv", n=30)
    return root, rows


@pytest.fixture(scope="module")
def ck_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ck_independent") / "CK+"
    return root, write_ckplus_folder(root)


def test_fer2013_csv_as_released_is_cached_face_for_face(fer_csv, tmp_path):
    root, rows = fer_csv
    cache = build_image_cache(root, tmp_path, ImagePreprocessParams(format="fer2013"))
    assert len(cache) == len(rows) and cache.frames.shape == (len(rows), 48, 48)
    for i, (label, pixels, usage) in enumerate(rows):  # in file order, every pixel as written
        assert cache.clips["label"][i] == label and cache.clips["part"][i] == fer2013.USAGE_PARTS[usage]
        assert np.array_equal(cache.video(i)[0], pixels)
    assert (cache.clips["n_samples"] == 0).all() and (cache.clips["actor"] == -1).all()
    assert cache.report["cached_clips"] == len(rows) and not cache.report["skipped"]


def test_fer2013_bad_rows_are_named_by_line_and_skipped(fer_csv, tmp_path):
    root, rows = fer_csv
    text = (root / "fer2013.csv").read_text()
    good = text.splitlines()[1]
    bad = ["9," + good.split(",", 1)[1], good.rsplit(",", 1)[0] + ",Holdout", '3,"1 2 3",Training']
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fer2013.csv").write_text(text.rstrip("\r\n") + "\r\n" + "\r\n".join(bad) + "\r\n")
    _, faces, problems = fer2013.read_csv(tmp_path / "data")
    n = len(rows)
    assert len(faces) == n
    assert set(problems) == {f"line {n + 2}", f"line {n + 3}", f"line {n + 4}"}
    assert "emotion '9'" in problems[f"line {n + 2}"] and "Holdout" in problems[f"line {n + 3}"]
    assert "3 values" in problems[f"line {n + 4}"]
    with pytest.raises(ValueError, match=r"no column\(s\) \['pixels'\]"):
        (tmp_path / "other.csv").write_text("emotion,Usage\n1,Training\n")
        fer2013.read_csv(tmp_path / "other.csv")
    with pytest.raises(FileNotFoundError, match="holds no fer2013.csv"):
        fer2013.read_csv(tmp_path / "nowhere")


def test_ckplus_scan_takes_labelled_sequences_peaks_and_first_frames(ck_folder):
    root, sequences = ck_folder
    index = ckplus.scan(root, ImagePreprocessParams(format="ckplus")).index
    labelled = [s for s in sequences if s["label"] is not None]
    assert len(labelled) < len(sequences)  # the folder has unlabelled sequences
    assert len(index) == 4 * len(labelled)  # 3 peak frames and 1 neutral first frame each
    for seq in labelled:
        rows = index[(index["sentence"] == seq["sequence"]) & (index["actor"] == int(seq["subject"][1:]))]
        assert list(rows["name"]) == [seq["frames"][0].stem] + [f.stem for f in seq["frames"][-3:]]
        assert list(rows["label"]) == [0] + [seq["label"]] * 3
        assert rows["aus"].iloc[0] == "" and rows["aus"].iloc[1] != ""  # none at the neutral frame
    problems = ckplus.scan(root, ImagePreprocessParams(format="ckplus")).problems
    unlabelled = [s for s in sequences if s["label"] is None]
    assert sum(r.startswith("unlabelled") for r in problems.values()) == len(unlabelled)


def test_ckplus_facs_files_of_either_spelling_parse(ck_folder):
    root, sequences = ck_folder
    for path in (root / "FACS").rglob("*_facs.txt"):
        rows = ckplus.read_numbers(path)
        assert rows and all(len(r) == 2 for r in rows)
    index = ckplus.scan(root, ImagePreprocessParams(format="ckplus", peak_frames=1, neutral_first=False)).index
    assert (index["level"] == "peak").all() and index["aus"].str.len().gt(0).all()


def test_ckplus_cache_finds_every_face_in_both_image_sizes(ck_folder, tmp_path):
    root, sequences = ck_folder
    cache = build_image_cache(root, tmp_path, ImagePreprocessParams(format="ckplus"), workers=1, progress=False)
    labelled = [s for s in sequences if s["label"] is not None]
    assert len(cache) == 4 * len(labelled) and cache.frames.shape[1:] == (48, 48)
    assert {s["size"] for s in labelled} == {(640, 480), (640, 490)}  # grey and colour frames both cached
    assert cache.frames[:].std() > 10  # faces, not blank crops


def test_ckplus_wrong_root_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a CK\\+ root: no cohn-kanade-images"):
        ckplus.scan(tmp_path, ImagePreprocessParams(format="ckplus"))
    (tmp_path / "extended" / "cohn-kanade-images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no Emotion/"):
        ckplus.scan(tmp_path, ImagePreprocessParams(format="ckplus"))


def _image_folder(root, split_folders=False):
    """Two classes of faces, three subjects (p1-p3) in the file names; a stray text file; a broken image."""
    for part in ("train", "test") if split_folders else ("",):
        for cls, expression in (("happy", "happy"), ("sad", "sad")):
            folder = root / part / cls
            folder.mkdir(parents=True, exist_ok=True)
            for subject in (1, 2, 3):
                ext = ".jpg" if subject == 2 else ".png"
                cv2.imwrite(str(folder / f"p{subject}_{expression}{ext}"), face(500 + subject, expression))
    (root / ("train" if split_folders else "") / "happy" / "notes.txt").write_text("not an image")
    (root / ("train" if split_folders else "") / "sad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 2000)


def test_image_folder_classes_subjects_and_bad_files(tmp_path):
    _image_folder(tmp_path / "faces")
    p = ImagePreprocessParams(format="image_folder", subject_pattern=r"^(p\d+)_")
    scan, classes = scan_image_folder(tmp_path / "faces", p)
    assert classes == ("happy", "sad")
    assert "happy/notes.txt" in scan.problems and "no subject id" in scan.problems["sad/broken.png"]
    assert sorted(scan.index["actor"].unique()) == [1, 2, 3]
    cache = build_image_cache(tmp_path / "faces", tmp_path / "cache", p, workers=1, progress=False)
    assert len(cache) == 6 and sorted(cache.clips["label"]) == [0, 0, 0, 1, 1, 1]
    # without a subject pattern every image is its own subject, and the broken image is reported
    p = ImagePreprocessParams(format="image_folder")
    cache = build_image_cache(tmp_path / "faces", tmp_path / "cache", p, workers=1, progress=False)
    assert cache.clips["actor"].nunique() == len(cache) == 6
    assert "unreadable image" in cache.report["skipped"]["sad/broken.png"]


def test_image_folder_split_folders_give_the_released_split(tmp_path):
    _image_folder(tmp_path / "faces", split_folders=True)
    p = ImagePreprocessParams(format="image_folder", subject_pattern=r"^(p\d+)_")
    cache = build_image_cache(tmp_path / "faces", tmp_path / "cache", p, workers=1, progress=False)
    assert set(cache.clips["part"]) == {"train", "test"}
    split, rows = ReleasedSplit(val_fraction=0.3).assign(cache.clips, 0)
    assert len(rows["val"]) and not set(rows["val"]) & set(rows["train"])
    # validation takes whole subjects out of training where the data has subject ids
    assert not set(cache.clips["actor"][rows["val"]]) & set(cache.clips["actor"][rows["train"]])
    (tmp_path / "mixed").mkdir()
    _image_folder(tmp_path / "mixed" / "train")
    (tmp_path / "mixed" / "angry").mkdir()
    with pytest.raises(ValueError, match="mixes split folders"):
        scan_image_folder(tmp_path / "mixed", p)


def test_read_gray_converts_colour_alpha_and_16_bit(tmp_path):
    rgba = np.dstack([np.full((8, 8, 3), 200, np.uint8), np.full((8, 8), 255, np.uint8)])
    deep = np.full((8, 8), 40000, np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    assert read_gray(str(tmp_path / "a.png")).shape == (8, 8)
    assert read_gray(str(tmp_path / "d.png")).dtype == np.uint8 and read_gray(str(tmp_path / "d.png"))[0, 0] == 156
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not an image"):
        read_gray(str(tmp_path / "x.png"))


def test_fer2013_has_only_its_released_split(fer_csv, tmp_path):
    root, _ = fer_csv
    clips = build_image_cache(root, tmp_path, ImagePreprocessParams(format="fer2013")).clips
    _, rows = ReleasedSplit().assign(clips, 0)
    assert {p: set(clips["part"][r]) for p, r in rows.items()} == {"train": {"train"}, "val": {"val"},
                                                                   "test": {"test"}}
    with pytest.raises(ValueError, match="no subject ids .* cv=released"):
        LeaveOneSubjectOut().assign(clips, 0)
    with pytest.raises(ValueError, match="one fold"):
        ReleasedSplit().assign(clips, 1)


def test_ckplus_folds_never_share_a_subject(ckplus_twin, tmp_path):
    """Subject independence: over all folds, no subject's images are in two parts, and every
    subject is tested exactly once."""
    cache = build_image_cache(ckplus_twin, tmp_path, ImagePreprocessParams(format="ckplus"), workers=2,
                              progress=False)
    clips, protocol = cache.clips, SpeakerKFold(k=3)
    tested = []
    for fold in range(3):
        split, rows = protocol.assign(clips, fold)
        subjects = {p: set(clips["actor"].to_numpy()[r]) for p, r in rows.items()}
        assert not (subjects["train"] & subjects["val"] or subjects["train"] & subjects["test"]
                    or subjects["val"] & subjects["test"])
        assert sum(len(r) for r in rows.values()) == len(clips)  # every image in one part
        # the images of a sequence (its first and peak frames) stay together
        seq = clips["actor"].astype(str) + "/" + clips["sentence"]
        assert not set(seq[rows["train"]]) & set(seq[rows["test"]])
        tested += sorted(subjects["test"])
    assert sorted(tested) == sorted(clips["actor"].unique())


def test_targets_from_demographics_and_facs(twin_root, crema_meta):
    subjects = targets.read_subjects(twin_root / "VideoDemographics.csv")
    assert set(subjects["gender"]) <= {0, 1} and subjects["age"].between(18, 90).all()
    real = targets.read_subjects(crema_meta("VideoDemographics.csv"))
    assert len(real) == 91 and set(real["gender"]) == {0, 1} and real["age"].notna().all()
    clips = pd.DataFrame(dict(actor=[1001, 1002, 9999], aus=["1+12", "", "?"]))
    out = targets.target_arrays(clips, {"gender": None, "age": None, "au": [1, 2, 12]}, subjects, "x")
    assert out["gender"][2] == -1 and np.isnan(out["age"][2])
    assert out["au"][0].tolist() == [1, 0, 1] and out["au"][1].tolist() == [0, 0, 0] and np.isnan(out["au"][2]).all()
    with pytest.raises(ValueError, match="model.tasks.gender: fer2013 has no gender labels"):
        targets.target_arrays(clips, {"gender": None}, None, "fer2013")
    with pytest.raises(ValueError, match="model.tasks.au: crema_d has no action-unit labels"):
        targets.target_arrays(pd.DataFrame(dict(actor=[1001])), {"au": [1]}, subjects, "crema_d")


def test_cache_reads_text_columns_as_text(ck_folder, tmp_path):
    root, _ = ck_folder
    cache = build_image_cache(root, tmp_path, ImagePreprocessParams(format="ckplus"), workers=1, progress=False)
    again = ClipCache(cache.path)
    assert again.clips["sentence"].str.fullmatch(r"\d{3}").all()  # "001", not 1


def test_folder_subjects_without_ids_are_not_ordered_by_class(tmp_path):
    """Each image its own subject: ids in an order unrelated to the class folders, so that folds cut
    from runs of ids (speaker_kfold by_id) hold every class."""
    for cls in ("angry", "happy", "sad"):
        (tmp_path / "faces" / cls).mkdir(parents=True)
        for i in range(8):
            cv2.imwrite(str(tmp_path / "faces" / cls / f"{i:02d}.png"), np.full((48, 48), 30 * i, np.uint8))
    p = ImagePreprocessParams(format="image_folder", detect=False)
    cache = build_image_cache(tmp_path / "faces", tmp_path / "cache", p, workers=1, progress=False)
    assert cache.clips["actor"].nunique() == 24
    for fold in range(4):
        _, rows = SpeakerKFold(k=4).assign(cache.clips, fold)
        assert cache.clips["label"][rows["train"]].nunique() == 3


def test_fer2013_csv_is_found_under_its_other_names(fer_csv, tmp_path):
    root, _ = fer_csv
    text = (root / "fer2013.csv").read_text()
    (tmp_path / "kaggle").mkdir()
    (tmp_path / "kaggle" / "icml_face_data.csv").write_text(text)
    (tmp_path / "tar" / "fer2013").mkdir(parents=True)
    (tmp_path / "tar" / "fer2013" / "fer2013.csv").write_text(text)
    for root in (tmp_path / "kaggle", tmp_path / "tar", tmp_path / "tar" / "fer2013" / "fer2013.csv"):
        assert len(fer2013.read_csv(root)[0]) == len(text.splitlines()) - 1
