"""The two ways of assembling batches (per clip in a DataLoader, resident with tensor ops) agree."""

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from fer_mm.data.clips import ClipSpec, ResidentClips, ResidentLoader
from fer_mm.data.datamodule import ClipDataset

SPEC = ClipSpec(("video", "audio"), frames=20, sample_rate=16_000, max_audio_samples=42_000)  # some clips longer, some shorter


def _per_item(cache, rows, spec, train):
    return default_collate([ClipDataset(cache, rows, spec, train)[i] for i in range(len(rows))])


def test_resident_batches_equal_per_item_batches_in_evaluation(twin_cache):
    rows = np.arange(0, len(twin_cache), 3)
    expected = _per_item(twin_cache, rows, SPEC, train=False)
    got = ResidentClips(twin_cache, SPEC).batch(torch.as_tensor(rows))
    assert set(got) == set(expected) == {"video", "audio", "audio_length", "label", "index"}
    for key in expected:
        assert got[key].dtype == expected[key].dtype and got[key].shape == expected[key].shape, key
        assert torch.equal(got[key], expected[key]), key
    assert got["video"].dtype == torch.uint8 and got["video"].shape[1:] == (20, 98, 80)
    long = twin_cache.clips["n_samples"].to_numpy()[rows] > SPEC.max_audio_samples
    assert long.any() and (~long).any() and (got["audio_length"].numpy()[long] == SPEC.max_audio_samples).all()  # centre-cropped


def test_resident_training_batches_match_per_item_in_kind(twin_cache):
    rows = np.arange(len(twin_cache))
    expected = _per_item(twin_cache, rows, SPEC, train=True)
    generator = torch.Generator().manual_seed(0)
    got = ResidentClips(twin_cache, SPEC).batch(torch.as_tensor(rows), jitter=True, generator=generator)
    for key in expected:
        assert got[key].dtype == expected[key].dtype and got[key].shape == expected[key].shape, key
    assert torch.equal(got["audio"], expected["audio"])  # the waveform has no randomness on the data side
    assert -1 <= got["audio"].min() and got["audio"].max() <= 1
    # each jittered frame is one of the clip's frames from its own segment: compare with the cache
    n = twin_cache.clips["n_frames"].to_numpy()
    for i in (0, len(rows) // 2, len(rows) - 1):
        frames = twin_cache.video(i)
        for k in range(SPEC.frames):
            lo, hi = int(np.floor(k * n[i] / 20)), int(np.ceil((k + 1) * n[i] / 20))
            assert any(np.array_equal(got["video"][i, k].numpy(), frames[j]) for j in range(lo, min(hi, n[i])))
    assert not torch.equal(got["video"], ResidentClips(twin_cache, SPEC).batch(torch.as_tensor(rows))["video"])


@pytest.mark.parametrize("modalities", [("video",), ("audio",)])
def test_resident_loads_only_the_modalities_asked(twin_cache, modalities):
    spec = ClipSpec(modalities, 20, 16_000, 80_000)
    clips = ResidentClips(twin_cache, spec)
    assert set(clips.arrays) == set(modalities)
    assert set(clips.batch(torch.arange(4))) == {*modalities, "label", "index"} | (
        {"audio_length"} if "audio" in modalities else set())


def test_resident_loader_shuffles_repeatably_and_covers_every_row(twin_cache):
    clips = ResidentClips(twin_cache, SPEC)
    rows = np.arange(10, 50)

    def epochs(seed):
        torch.manual_seed(seed)
        loader = ResidentLoader(clips, rows, batch_size=16, train=True)
        return [[b["index"].tolist() for b in loader] for _ in range(2)], loader

    (first, second), loader = epochs(0)
    assert len(loader) == 3 and [len(b) for b in first] == [16, 16, 8]
    assert sorted(sum(first, [])) == rows.tolist() and first != second  # a new order each epoch
    assert epochs(0)[0] == [first, second] and epochs(1)[0][0] != first  # seeded
    evaluation = ResidentLoader(clips, rows, batch_size=16, train=False)
    assert sum((b["index"].tolist() for b in evaluation), []) == rows.tolist()


def test_resident_loader_gives_every_ddp_process_the_same_number_of_steps(twin_cache, monkeypatch):
    clips = ResidentClips(twin_cache, SPEC)
    rows = np.arange(33)  # not a multiple of the 2 processes: one row is repeated, as DistributedSampler does
    seen = []
    for rank in (0, 1):
        torch.manual_seed(0)  # Lightning seeds every process alike
        loader = ResidentLoader(clips, rows, batch_size=4, train=True)
        monkeypatch.setattr(loader, "_shard", lambda rank=rank: (rank, 2))
        batches = [b["index"].tolist() for b in loader]
        assert len(batches) == len(loader) == 5 and sum(map(len, batches)) == 17
        seen.append(sum(batches, []))
    assert len(set(seen[0]) & set(seen[1])) <= 1  # the shares are disjoint but for the padding row
    assert set(seen[0]) | set(seen[1]) == set(rows.tolist())  # every row trained on in the epoch
