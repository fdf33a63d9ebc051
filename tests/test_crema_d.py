import pytest

from fer_mm.data.sources.crema_d import (
    ACTORS, KNOWN_DEFECTS, index_from_names, parse_name, read_demographics, release_names, scan_root,
)
from fer_mm.data.twins.spec import twin_names
from fer_mm.vocab import EMOTIONS


def test_parse_name_fields_and_errors():
    clip = parse_name("1064_IEO_DIS_MD")
    assert (clip.actor, clip.sentence, clip.emotion, clip.level, clip.label) == (1064, "IEO", "DIS", "MD", 1)
    for bad, part in [("1001_DFA_ANG", "AAAA_SSS_EEE_LL"), ("1200_DFA_ANG_XX", "actor 1200"),
                      ("1001_ABC_ANG_XX", "sentence"), ("1001_DFA_JOY_XX", "emotion"), ("1001_DFA_ANG_ZZ", "level")]:
        with pytest.raises(ValueError, match=part):
            parse_name(bad)


def test_real_clip_names_index_counts(crema_meta):
    names = crema_meta("clip_names.txt").read_text().split()
    index, excluded = index_from_names(names, exclude_known_defects=False)
    assert len(index) == 7442 and not excluded
    assert index["actor"].nunique() == 91
    counts = index["emotion"].value_counts().to_dict()
    assert counts == {"ANG": 1271, "DIS": 1271, "FEA": 1271, "HAP": 1271, "SAD": 1271, "NEU": 1087}
    index, excluded = index_from_names(names)
    assert len(index) == 7442 - 4 and set(excluded) == set(KNOWN_DEFECTS)
    assert all(reason.startswith("known defect") for reason in excluded.values())


def test_release_scheme_and_full_twin_match_the_real_names(crema_meta):
    real = set(crema_meta("clip_names.txt").read_text().split())
    assert set(release_names()) == real
    assert set(twin_names(91, 12)) == real - set(KNOWN_DEFECTS) and len(twin_names(91, 12)) == 7438


def test_twin_subsets_are_release_subsets():
    names = twin_names(3, 2)
    assert {parse_name(n).sentence for n in names} == {"IEO", "DFA"}
    assert {parse_name(n).actor for n in names} == {1001, 1002, 1003}
    assert len(names) == 3 * (16 + 6)
    with pytest.raises(ValueError, match="--actors"):
        twin_names(0, 1)


def test_real_demographics(crema_meta):
    demo = read_demographics(crema_meta("VideoDemographics.csv"))
    assert list(demo.index) == list(ACTORS)
    assert set(demo.columns) == {"age", "sex", "race", "ethnicity"}
    assert set(demo["sex"]) == {"Male", "Female"}


def test_scan_root_pairs_files_and_reads_demographics(twin_root):
    scan = scan_root(twin_root)
    assert len(scan.index) == 4 * 16 and not scan.problems
    assert set(scan.index["emotion"]) == set(EMOTIONS)
    assert list(scan.demographics.index) == [1001, 1002, 1003, 1004]


def test_scan_root_rejects_a_folder_without_clips(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        scan_root(tmp_path)
