import pytest

from fer_mm.data.sources.crema_d import ACTORS
from fer_mm.data.protocols import PROTOCOLS, LeaveOneSubjectOut, SpeakerKFold, SpeakerPartition, SpeakerSplit

ALL = [LeaveOneSubjectOut(), SpeakerKFold(k=5), SpeakerKFold(k=10, seed=3, order="shuffled"), SpeakerSplit(),
       SpeakerPartition()]


@pytest.mark.parametrize("protocol", ALL, ids=lambda p: f"{p.name}")
def test_no_test_actor_in_train_or_val_on_any_fold(protocol):
    """The leakage proof: every fold of every protocol over the 91 CREMA-D actors."""
    tested = []
    for fold in range(protocol.n_folds(ACTORS)):
        split = protocol.split(ACTORS, fold)
        train, val, test = set(split.train), set(split.val), set(split.test)
        assert test and val and train
        assert not test & train and not test & val and not train & val
        assert train | val | test == set(ACTORS)
        assert split == protocol.split(list(reversed(ACTORS)), fold)  # deterministic, order-free
        tested += split.test
    if protocol.name not in ("split", "speaker_partition"):  # those draw each test part afresh
        assert sorted(tested) == sorted(ACTORS)  # each actor is tested exactly once


def test_protocol_sizes():
    loso = LeaveOneSubjectOut().split(ACTORS, 5)
    assert loso.test == (1006,) and len(loso.val) == 9
    split = SpeakerSplit().split(ACTORS, 0)
    assert (len(split.train), len(split.val), len(split.test)) == (64, 9, 18)
    assert set(PROTOCOLS) == {"loso", "speaker_kfold", "split", "speaker_partition", "released", "image_split"}


def test_speaker_kfold_by_id_gives_the_published_five_folds():
    """HiCMAE's and AVF-MAE++'s CREMA-D folds: consecutive ids, 18/18/18/18/19."""
    blocks = [SpeakerKFold(k=5).split(ACTORS, f).test for f in range(5)]
    assert [(b[0], b[-1], len(b)) for b in blocks] == [
        (1001, 1018, 18), (1019, 1036, 18), (1037, 1054, 18), (1055, 1072, 18), (1073, 1091, 19)]
    assert all(b == tuple(range(b[0], b[-1] + 1)) for b in blocks)
    shuffled = [SpeakerKFold(k=5, order="shuffled").split(ACTORS, f).test for f in range(5)]
    assert shuffled != blocks and sorted(sum(shuffled, ())) == list(ACTORS)
    with pytest.raises(ValueError, match=r"cv\.protocol\.order='random'"):
        SpeakerKFold(order="random")


def test_bad_fold_names_the_key():
    with pytest.raises(ValueError, match="cv.fold=91"):
        LeaveOneSubjectOut().split(ACTORS, 91)
    with pytest.raises(ValueError, match=r"cv\.protocol\.k"):
        SpeakerKFold(k=1)
    with pytest.raises(ValueError, match="cv.fold=5"):
        SpeakerPartition(repeats=5).split(ACTORS, 5)


def test_speaker_partition_is_vavl_63_14_14_redrawn_per_repeat():
    protocol = SpeakerPartition(train=63, val=14, test=14, repeats=5, seed=0)
    assert protocol.n_folds(ACTORS) == 5
    splits = [protocol.split(ACTORS, fold) for fold in range(5)]
    for split in splits:
        assert (len(split.train), len(split.val), len(split.test)) == (63, 14, 14)
        assert set(split.train) | set(split.val) | set(split.test) == set(ACTORS)
        split.check_disjoint()
    assert len({s.test for s in splits}) == 5 and len({s.val for s in splits}) == 5  # every repeat differs
    assert splits == [SpeakerPartition(seed=0).split(ACTORS, fold) for fold in range(5)]  # same seed, same parts
    assert SpeakerPartition(seed=1).split(ACTORS, 0) != splits[0]


def test_speaker_partition_counts_must_fit_the_data():
    with pytest.raises(ValueError, match=r"cv\.protocol\.train \+ cv\.protocol\.val \+ cv\.protocol\.test = 90, "
                                         r"but the data has 91 actors"):
        SpeakerPartition(train=63, val=14, test=13).split(ACTORS, 0)
    with pytest.raises(ValueError, match=r"cv\.protocol\.train/val/test"):
        SpeakerPartition(train=63, val=0, test=14)
    with pytest.raises(ValueError, match=r"cv\.protocol\.repeats"):
        SpeakerPartition(repeats=0)


@pytest.mark.parametrize("n, sizes", [(12, (8, 2, 2)), (4, (2, 1, 1)), (3, (1, 1, 1))])
def test_speaker_partition_scales_to_a_smaller_twin(n, sizes, caplog):
    """Fewer actors than the counts (the synthetic twin): the same shares, at least one actor per part."""
    split = SpeakerPartition().split(ACTORS[:n], 0)
    assert (len(split.train), len(split.val), len(split.test)) == sizes
    assert "63/14/14" in caplog.text
    with pytest.raises(ValueError, match="no training actor"):
        SpeakerPartition().split(ACTORS[:2], 0)


def test_speaker_kfold_learning_curve_keeps_test_and_validation_actors():
    from fer_mm.data.protocols import SpeakerKFold

    actors = list(range(1001, 1041))
    full = SpeakerKFold(k=5).split(actors, 2)
    for n in (12, 24):
        part = SpeakerKFold(k=5, train_actors=n).split(actors, 2)
        assert part.test == full.test and part.val == full.val
        assert len(part.train) == n and set(part.train) <= set(full.train)
    with pytest.raises(ValueError, match="cv.protocol.train_actors=40: fold 2 has"):
        SpeakerKFold(k=5, train_actors=40).split(actors, 2)
