"""Folds in one process: one resident cache serves them all, and folds trained together
(folds_together=K, fer_mm/stacked.py) give each fold what training it alone gives."""

import gc
import json
import weakref

import numpy as np
import pandas as pd
import pytest
import torch

from fer_mm.data.clips import SHARED_CLIPS, ClipSpec, ResidentClips
from fer_mm.stacked import StackedAdam, StackedNets
from fer_mm.train import train

NO_DRAWS = ["model.net.dropout=0.0", "model.inputs.audio.noise_std=0.0"]  # runs whose only draws are the loaders'


def test_one_resident_cache_serves_a_two_fold_sweep(tmp_path, data_overrides, make_cfg, monkeypatch):
    made, alive_at_start = [], []
    init = ResidentClips.__init__

    def counted(self, *args, **kwargs):
        made.append(weakref.ref(self))
        init(self, *args, **kwargs)

    monkeypatch.setattr(ResidentClips, "__init__", counted)
    SHARED_CLIPS.release()
    for fold in (0, 1):
        cfg = make_cfg(tmp_path / f"fold_{fold}", ["experiment=ar2_video", "debug=limit", "logger=none",
                                                   f"cv.fold={fold}", *data_overrides])
        m = train(cfg)
        alive_at_start.append(sum(isinstance(o, ResidentClips) for o in gc.get_objects()))
        assert set(m["timings"]) == {"upload_s", "fit_s", "test_s", "checkpoint_s", "total_s"}
        if fold == 1:
            assert m["timings"]["upload_s"] == 0  # the first fold's copy served
        assert m["timings"]["checkpoint_s"] > 0 and m["timings"]["fit_s"] >= m["timings"]["checkpoint_s"]
    assert len(made) == 1 and alive_at_start == [1, 1]


def test_another_cache_frees_the_one_held(twin_cache):
    spec = ClipSpec(("video",), 4, 16000, 16000)
    first = SHARED_CLIPS.get(twin_cache, spec, "cpu")
    assert SHARED_CLIPS.get(twin_cache, spec, "cpu") is first and SHARED_CLIPS.upload_seconds == 0
    held = weakref.ref(first)
    del first
    SHARED_CLIPS.get(twin_cache, ClipSpec(("video", "audio"), 4, 16000, 16000), "cpu")
    assert held() is None  # gone before the other was loaded: never two in memory
    SHARED_CLIPS.release()


def test_stacked_adamw_is_torch_adamw_per_fold():
    torch.manual_seed(0)
    nets = [torch.nn.Linear(5, 3) for _ in range(3)]
    alone = [torch.nn.Linear(5, 3) for _ in range(3)]
    for a, b in zip(alone, nets):
        a.load_state_dict(b.state_dict())
    stacked = StackedNets(nets, torch.device("cpu"))
    factory = lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1)  # noqa: E731
    factory.func, factory.keywords = torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)
    optimizer = StackedAdam(stacked, factory)
    optimizers = [torch.optim.AdamW(a.parameters(), lr=0.01, weight_decay=0.1) for a in alone]
    for step in range(4):
        x = torch.randn(3, 8, 5)
        active = torch.tensor([True, step % 2 == 0, True])  # fold 1 sits out every other step
        optimizer.zero_grad()
        stacked([0, 1, 2], {"input": x.flatten(0, 1)}, train=True).square().sum().backward()
        optimizer.step(active, 0.01)
        for k, (net, opt) in enumerate(zip(alone, optimizers)):
            if active[k]:
                opt.zero_grad()
                net(x[k]).square().sum().backward()
                opt.step()
    for k, net in enumerate(alone):
        for name, value in net.state_dict().items():
            torch.testing.assert_close(stacked.state(k)[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # in the slow job: the default suite stays under 10 minutes on 2 cores
def test_folds_trained_together_match_each_fold_alone(tmp_path, data_overrides, make_cfg):
    overrides = ["experiment=ar5_fusion", "debug=limit", "logger=csv", *NO_DRAWS, *data_overrides]
    together = train(make_cfg(tmp_path / "together" / "fold_1", [*overrides, "cv.fold=1", "folds_together=2"]))
    assert together["folds_together"] == [1, 2] and together["fold"] == 1
    for fold in (1, 2):
        alone = train(make_cfg(tmp_path / "alone" / f"fold_{fold}", [*overrides, f"cv.fold={fold}"]))
        record = json.loads((tmp_path / "together" / f"fold_{fold}" / "metrics.json").read_text())
        assert record["fold"] == fold and record["actors"] == alone["actors"]
        assert record["epochs"] == alone["epochs"] and record["best_val"] == pytest.approx(alone["best_val"], abs=1e-6)
        for key in ("test/acc", "test/uar", "test/f1"):
            assert record[key] == pytest.approx(alone[key], abs=1e-6), (fold, key)
        assert record["test/loss"] == pytest.approx(alone["test/loss"], rel=1e-3)
        a, b = (pd.read_csv(tmp_path / run / f"fold_{fold}" / "predictions.csv") for run in ("alone", "together"))
        np.testing.assert_allclose(b.filter(like="p_").to_numpy(), a.filter(like="p_").to_numpy(), atol=2e-3)
        assert (b["pred"] == a["pred"]).all()
        from fer_mm.system import EmotionSystem
        EmotionSystem.load_from_checkpoint(record["best_checkpoint"], map_location="cpu")  # a usable checkpoint
