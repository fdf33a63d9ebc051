"""The benchmark runs end to end on the CPU at a small size and prints every figure it promises."""

import json
import re

import numpy as np
import pytest
import torch

import fer_mm.bench.pipeline as bench_pipeline
from fer_mm.bench.__main__ import main as bench_main
from fer_mm.bench.random_cache import memory_cache, write_cache
from fer_mm.data.cache import ClipCache, PreprocessParams, cache_path
from fer_mm.data.sources.crema_d import parse_name
from fer_mm.data.targets import read_subjects
from fer_mm.system import EmotionSystem
from fer_mm.train import train
from fer_mm.vocab import EMOTIONS

SMALL = ["--clips", "48", "--actors", "6", "--steps", "2"]


def test_memory_cache_has_the_release_shape():
    cache = memory_cache(n_clips=300, n_actors=10)
    seconds = cache.clips["n_samples"] / 16_000
    assert len(cache.clips) == 300 and cache.clips["actor"].nunique() == 10
    assert cache.clips.groupby("actor").size().agg(["min", "max"]).tolist() == [30, 30]  # spread evenly
    assert 1.27 <= seconds.min() and seconds.max() <= 5.0 and 2.2 < seconds.mean() < 2.8
    assert len(cache.frames) == cache.clips["n_frames"].sum() and cache.frames.dtype == np.uint8
    assert np.array_equal(cache.clips["n_frames"], np.round(seconds * 30))
    names = [parse_name(n) for n in cache.clips["name"]]  # the release's format, label from the emotion
    assert cache.clips["name"].is_unique and [n.actor for n in names] == cache.clips["actor"].tolist()
    assert [EMOTIONS.index(n.emotion) for n in names] == cache.clips["label"].tolist()


def _rates(row: str) -> tuple[list[str], list[float]]:
    cells = [c.strip() for c in row.strip("|").split("|")]
    return cells, [float(c.replace(",", "")) for c in cells[4:9]]  # model, data path, end to end, ratio, eval


def _record_moves(monkeypatch) -> list:
    """The system's moves and evaluation steps, in order: ``teardown`` (what Lightning's strategy calls
    at the end of fit: ``.cpu()``), ``("to", device)``, ``("eval", parameters' device, batch's device)``."""
    events = []
    cpu, to, forward = EmotionSystem.cpu, EmotionSystem.to, EmotionSystem.forward
    monkeypatch.setattr(EmotionSystem, "cpu", lambda self: (events.append("teardown"), cpu(self))[1])

    def moved(self, *args, **kwargs):
        events.append(("to", torch.device(args[0] if args else kwargs["device"])))
        return to(self, *args, **kwargs)

    def step(self, batch):
        if not self.training:
            events.append(("eval", next(self.parameters()).device, batch["video"].device))
        return forward(self, batch)

    monkeypatch.setattr(EmotionSystem, "to", moved)
    monkeypatch.setattr(EmotionSystem, "forward", step)
    return events


def test_pipeline_prints_each_figure_and_evaluates_on_the_module_device(capsys, monkeypatch):
    """Every figure of a row per batch size. And: Lightning's teardown moves the module to the CPU at
    the end of fit; on a GPU the evaluation then fed device batches to a host model. The CPU is both
    here, so the moves are recorded: after each fit's teardown the module is moved to the benchmark's
    device before any evaluation step, and every evaluation step finds its parameters where its batch is."""
    events = _record_moves(monkeypatch)
    bench_main(["pipeline", *SMALL, "--batch", "4", "8", "--precision", "32"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| `ar5` | 32 |")]
    assert [_rates(r)[0][2:4] for r in rows] == [["4", "eager"], ["8", "eager"]]  # a row per batch size
    for row in rows:
        cells, rates = _rates(row)
        assert all(r > 0 for r in rates)
        assert re.fullmatch(r"[\d.]+ (s|min|h)", cells[9]) and re.fullmatch(r"[\d.]+ (s|min|h)", cells[10])
    assert "6 folds, one after another" in out and "fold 0:" in out
    teardowns = [i for i, e in enumerate(events) if e == "teardown"]
    assert len(teardowns) == 2  # one fit per row
    for teardown in teardowns:
        first_eval = next(i for i, e in enumerate(events) if i > teardown and e[0] == "eval")
        assert ("to", torch.device("cpu")) in events[teardown:first_eval]  # moved back explicitly
    evals = [e for e in events if e[0] == "eval"]
    assert len(evals) >= 8 and all(params == batch for _, params, batch in evals)


def test_pipeline_channels_last_applies_end_to_end(capsys, monkeypatch):
    """--channels-last shapes the network in the Lightning fit too, not only the model-only one."""
    seen = []
    forward = EmotionSystem.forward

    def watch(self, batch):
        conv = next(m for m in self.net.modules() if isinstance(m, torch.nn.Conv2d))
        seen.append(self.training and conv.weight.is_contiguous(memory_format=torch.channels_last))
        return forward(self, batch)

    monkeypatch.setattr(EmotionSystem, "forward", watch)
    monkeypatch.setattr(EmotionSystem, "outputs", lambda self, batch, *args, **kwargs: {"emotion": self(batch)})
    bench_main(["pipeline", *SMALL, "--model", "ar2", "--batch", "4", "--precision", "32", "--channels-last"])
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `ar2` |")]
    assert _rates(row)[0][3] == "channels_last" and all(r > 0 for r in _rates(row)[1])
    assert seen.count(True) >= 4  # every training step of the fit (2 warm-up, 2 timed)


def test_pipeline_prints_each_row_as_it_finishes(capsys, monkeypatch):
    """A run stopped during its second row has printed the header and its first row."""
    done = []

    def row(data, args, device, precision, batch):
        if done:
            raise KeyboardInterrupt
        done.append(batch)
        return dict(model="ar5", precision=precision, batch=batch, network="eager", model_only=10.0, data_only=20.0,
                    end_to_end=9.0, eval=30.0, ratio=0.9, fold_s=60.0, all_folds_s=360.0, folds=6)

    monkeypatch.setattr(bench_pipeline, "pipeline_row", row)
    with pytest.raises(KeyboardInterrupt):
        bench_main(["pipeline", *SMALL, "--batch", "4", "8", "--precision", "32"])
    out = capsys.readouterr().out
    assert "| model | precision | batch |" in out and "| `ar5` | 32 | 4 | eager | 10 | 20 | 9 | 0.90 |" in out


def test_cache_command_writes_a_finished_crema_d_cache(tmp_path, capsys):
    root, cache_dir = tmp_path / "crema_d", tmp_path / "cache"
    bench_main(["cache", "--root", str(root), "--cache-dir", str(cache_dir), "--clips", "40", "--actors", "5"])
    assert "40 clips of 5 actors" in capsys.readouterr().out
    cache = ClipCache(cache_path(root, cache_dir, PreprocessParams()))  # where data=crema_d looks
    assert cache.clips.columns.tolist()[:6] == ["name", "actor", "sentence", "emotion", "level", "label"]
    assert [parse_name(n).actor for n in cache.clips["name"]] == cache.clips["actor"].tolist()
    assert cache.frames.shape == (cache.clips["n_frames"].sum(), 98, 80) and cache.frames.std() > 50
    assert len(cache.samples) == cache.clips["n_samples"].sum() and cache.samples.std() > 1000
    same = memory_cache(40, 5)  # the same content as the pipeline's in-memory cache
    assert np.array_equal(same.frames[:1000], cache.frames[:1000]) and np.array_equal(same.samples, cache.samples)
    assert read_subjects(root / "VideoDemographics.csv").index.tolist() == sorted(cache.clips["actor"].unique())
    assert json.loads((cache.path / "preprocess_report.json").read_text())["cached_clips"] == 40


def test_a_fold_trains_on_the_written_cache_without_preprocessing(tmp_path, make_cfg, monkeypatch):
    root, cache_dir = tmp_path / "crema_d", tmp_path / "cache"
    write_cache(root, cache_dir, n_clips=40, n_actors=5)

    def no_preprocessing(*args, **kwargs):
        raise AssertionError("the written cache was not found: preprocessing started")

    monkeypatch.setattr("fer_mm.data.preprocessing.crema_d_source", no_preprocessing)
    cfg = make_cfg(tmp_path / "run", ["experiment=ar5_fusion", "data=crema_d", f"data.root={root}",
                                      f"data.cache_dir={cache_dir}", "logger=csv", "debug=limit", "trainer.max_epochs=1",
                                      "data.batch_size=8", "data.progress=false", "trainer.enable_progress_bar=false"])
    metrics = train(cfg)
    assert metrics["actors"]["test"] == [1001] and metrics["n_clips"]["test"] == 8
    assert 0 <= metrics["test/acc"] <= 1 and (tmp_path / "run" / "metrics.json").is_file()
