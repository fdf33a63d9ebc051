"""No host-device sync in the resident path's training and validation steps (counted on the CPU,
standing in for CUDA: fer_mm.bench.syncs), the counter's positive control, and the resident
loader's epoch draws: the same values as the per-batch draws they replace, and epoch e's draws
whether the run reached it uninterrupted or resumed there."""

import functools

import numpy as np
import pytest
import torch
from lightning_fabric.utilities.data import _set_sampler_epoch
from pytorch_lightning.utilities.data import _is_dataloader_shuffled

from fer_mm.bench.pipeline import memory_cache
from fer_mm.bench.syncs import SyncCounter, audit
from fer_mm.data.clips import ClipSpec, ResidentClips, ResidentLoader
from fer_mm.evaluation import ConfusionMetric, TaskMetric
from fer_mm.system import EmotionSystem

SPEC = ClipSpec(("video", "audio"), frames=8, sample_rate=16_000, max_audio_samples=24_000)


def test_the_resident_steps_make_no_sync():
    # with gender and age heads: their losses and metrics are in the steps too
    result = audit("cpu", batch=4, steps=3, val_steps=2, epochs=2, tasks=True)
    for stage in ("train", "val"):
        r = result[stage]
        assert r["syncs"] == 0, r["sites"]
        # watched: the window saw the steps, the CPU-only trim of ModelInputs among them
        assert r["calls"] > 100 and any("inputs.py" in site for site in r["host_only"]), r


def test_the_counter_catches_item_bincount_and_a_boolean_mask():
    counter = SyncCounter("cpu")
    with counter:
        labels = torch.arange(12, device="cpu") % 6  # a device tensor (made with its device)
        host = torch.tensor([1.0, 2.0])  # made on the host: reading it is no sync
        counter.stage = "train"
        labels.sum().item()
        torch.bincount(labels, minlength=6)
        labels[labels > 2].sum()
        float(host[0])
        torch.tensor([False, True], device=labels.device)  # an upload of Python data
        counter.stage = None
        labels.sum().item()  # outside the window
    kinds = [(s.kind, s.call) for s in counter.syncs]
    assert kinds == [("read by the host", "item"), ("size set by values", "bincount"),
                     ("boolean mask", "__getitem__"), ("upload", "tensor")]
    assert all("test_syncs.py" in s.site for s in counter.syncs)


def test_the_metrics_count_without_syncing_as_before():
    rng = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(32, 6, generator=rng), torch.randint(0, 6, (32,), generator=rng)
    gender = torch.randint(-1, 2, (32,), generator=rng)
    age = torch.where(torch.rand(32, generator=rng) < 0.2, torch.nan, torch.rand(32, generator=rng) * 50 + 20)
    outputs = dict(gender=torch.randn(32, 2, generator=rng), age=torch.rand(32, generator=rng) * 60)
    confusion, tasks, counter = ConfusionMetric(6), TaskMetric(), SyncCounter("cpu")
    with counter:
        # copied to "the device" (the CPU standing in for it) while counted: no longer the host's
        on_device = [t.to("cpu", copy=True) for t in (logits, labels, gender, age, outputs["gender"], outputs["age"])]
        counter.stage = "train"
        confusion.update(*on_device[:2])
        tasks.update(dict(gender=on_device[4], age=on_device[5]), dict(gender=on_device[2], age=on_device[3]))
        torch.bincount(on_device[1])  # what update did before: seen
    assert [s.call for s in counter.syncs] == ["bincount"]
    expected = torch.bincount(labels * 6 + logits.argmax(1), minlength=36).reshape(6, 6)
    assert torch.equal(confusion.confusion, expected)
    known = gender >= 0
    assert tasks.gender_hits == (outputs["gender"].argmax(1) == gender)[known].sum() and tasks.gender_n == known.sum()
    known = ~torch.isnan(age)
    assert tasks.age_error == pytest.approx(float((outputs["age"] - age)[known].abs().sum()), rel=1e-6)
    assert tasks.age_n == known.sum()


# ------------------------------------------------------------------ the resident loader's epoch draws


@pytest.fixture(scope="module")
def clips():
    return ResidentClips(memory_cache(40, 4), SPEC)


def _per_batch_epochs(clips, rows, batch_size, seed, epochs, shard=(0, 1)):
    """The batches as the loader drew them before: the order, then each batch's jitter as it was made."""
    generator, out = torch.Generator().manual_seed(seed), []
    rank, processes = shard
    for _ in range(epochs):
        order = torch.as_tensor(rows)[torch.randperm(len(rows), generator=generator)]
        padded = -(-len(order) // processes) * processes
        order = torch.cat([order, order[: padded - len(order)]])[rank::processes]
        out.append([clips.batch(order[i : i + batch_size], True, generator) for i in range(0, len(order), batch_size)])
    return out


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


@pytest.mark.parametrize("shard", [(0, 1), (1, 2)])
def test_epoch_draws_equal_the_per_batch_draws(clips, monkeypatch, shard):
    rows = np.arange(3, 40)  # 37 rows: a short last batch, and one padding row under 2 processes
    loader = ResidentLoader(clips, rows, batch_size=8, train=True, seed=123)
    monkeypatch.setattr(loader, "_shard", lambda: shard)
    expected = _per_batch_epochs(clips, rows, 8, 123, epochs=3, shard=shard)
    assert all(_same(list(loader), epoch) for epoch in expected)


def test_the_default_seed_is_drawn_from_torch_as_before(clips):
    torch.manual_seed(7)
    seed = int(torch.randint(2**62, (1,)))  # what the loader drew for its generator
    torch.manual_seed(7)
    loader = ResidentLoader(clips, np.arange(40), batch_size=16, train=True)
    assert loader.seed == seed and _same(list(loader), _per_batch_epochs(clips, np.arange(40), 16, seed, 1)[0])
    torch.manual_seed(7)
    assert ResidentLoader(clips, np.arange(40), batch_size=16, train=False).seed is None
    assert int(torch.randint(2**62, (1,))) == seed  # evaluation draws nothing from torch's generator


def test_set_epoch_reproduces_an_uninterrupted_run(clips):
    rows = np.arange(40)
    uninterrupted = ResidentLoader(clips, rows, batch_size=16, train=True, seed=5)
    epochs = []
    for e in range(4):
        _set_sampler_epoch(uninterrupted, e)  # as Lightning's fit loop calls it
        epochs.append(list(uninterrupted))
    assert not _same(epochs[0], epochs[1])
    resumed = ResidentLoader(clips, rows, batch_size=16, train=True, seed=5)  # a new process, after a resume
    resumed.set_epoch(2)
    assert _same(list(resumed), epochs[2]) and _same(list(resumed), epochs[3])  # then on, without set_epoch
    resumed.set_epoch(1)
    assert _same(list(resumed), epochs[1])  # back, too
    evaluation = ResidentLoader(clips, rows, batch_size=16, train=False)
    assert not _is_dataloader_shuffled(evaluation)
    evaluation.set_epoch(3)
    assert torch.equal(torch.cat([b["index"] for b in evaluation]), torch.as_tensor(rows))


def test_adamw_is_fused_on_cuda_only_where_the_config_leaves_it(monkeypatch):
    def optimizer(**keywords):
        system = EmotionSystem(net={"name": "ar1"}, optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, **keywords))
        return system.configure_optimizers()

    assert optimizer().defaults["fused"] is None  # on the CPU: as configured
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda t: True))  # parameters as if on a GPU
    assert optimizer().defaults["fused"] is True
    assert optimizer(fused=False).defaults["fused"] is False and optimizer(foreach=True).defaults["fused"] is None
