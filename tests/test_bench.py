"""The benchmark runs end to end on the CPU at a small size and prints every figure it promises."""

import re

import numpy as np

from fer_mm.bench.__main__ import main as bench_main
from fer_mm.bench.pipeline import memory_cache


def test_memory_cache_has_the_release_shape():
    cache = memory_cache(n_clips=300, n_actors=10)
    seconds = cache.clips["n_samples"] / 16_000
    assert len(cache.clips) == 300 and cache.clips["actor"].nunique() == 10
    assert 1.27 <= seconds.min() and seconds.max() <= 5.0 and 2.2 < seconds.mean() < 2.8
    assert len(cache.frames) == cache.clips["n_frames"].sum() and cache.frames.dtype == np.uint8
    assert np.array_equal(cache.clips["n_frames"], np.round(seconds * 30))


def test_pipeline_prints_each_figure(capsys):
    bench_main(["pipeline", "--clips", "48", "--actors", "6", "--batch", "4", "--steps", "2", "--precision", "32"])
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if line.startswith("| `ar5` | 32 |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    rates = [float(c.replace(",", "")) for c in cells[2:7]]  # model, data path, end to end, ratio, eval
    assert all(r > 0 for r in rates)
    assert re.fullmatch(r"[\d.]+ (s|min|h)", cells[7]) and re.fullmatch(r"[\d.]+ (s|min|h)", cells[8])
    assert "6 folds, one after another" in out and "fold 0:" in out


def test_latency_prints_each_stage(capsys):
    bench_main(["latency", "--clips", "2", "--seconds", "1.0"])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    for stage in ("decode (frames + audio track)", "face tracking (detector on every frame)",
                  "features: normalisation, spectrogram", "model (PyTorch)", "model (ONNX Runtime)",
                  "whole pipeline (PyTorch)"):
        p50 = float(rows[stage].split("|")[2])
        assert p50 > 0, stage
    assert float(rows["whole pipeline (PyTorch)"].split("|")[4]) > 0  # x real time
