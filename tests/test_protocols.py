import pytest

from fer_mm.data.crema_d import ACTORS
from fer_mm.data.protocols import PROTOCOLS, LeaveOneSubjectOut, SpeakerKFold, SpeakerSplit

ALL = [LeaveOneSubjectOut(), SpeakerKFold(k=5), SpeakerKFold(k=10, seed=3), SpeakerSplit()]


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
    if protocol.name != "split":
        assert sorted(tested) == sorted(ACTORS)  # each actor is tested exactly once


def test_protocol_sizes():
    loso = LeaveOneSubjectOut().split(ACTORS, 5)
    assert loso.test == (1006,) and len(loso.val) == 9
    split = SpeakerSplit().split(ACTORS, 0)
    assert (len(split.train), len(split.val), len(split.test)) == (64, 9, 18)
    assert set(PROTOCOLS) == {"loso", "speaker_kfold", "split"}


def test_bad_fold_names_the_key():
    with pytest.raises(ValueError, match="cv.fold=91"):
        LeaveOneSubjectOut().split(ACTORS, 91)
    with pytest.raises(ValueError, match="cv.k"):
        SpeakerKFold(k=1)
