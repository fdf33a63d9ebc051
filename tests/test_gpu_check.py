"""`.ci/gpu-check --cpu-smoke`: the device check's steps at a tiny size on the CPU, each reported
with real numbers in its output file."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# a minute and a half on 2 cores: in the slow job (.ci/slow)
pytestmark = pytest.mark.slow
STEPS = ("wheels", "card", "syncs", "bench", "bench_channels_last", "cache", "folds", "together", "bench_compile")
TIMING_KEYS = ("upload_s", "fit_s", "test_s", "checkpoint_s", "total_s")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """(the output file's sections by step, $OUT) of one `bash .ci/gpu-check --cpu-smoke`."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, OUT=str(tmp / "out"), WORK=str(tmp / "work"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # python3: this environment's
    done = subprocess.run(["bash", str(ROOT / ".ci" / "gpu-check"), "--cpu-smoke"], env=env, capture_output=True,
                          text=True, timeout=600)
    text = (tmp / "out" / "gpu-check.txt").read_text()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert text in done.stdout  # what the file holds went to stdout too
    sections = dict(re.findall(r"^== (\w+) \(limit -?\d+ s\): .*?\n(.*?)^== \1: ", text, flags=re.M | re.S))
    statuses = dict(re.findall(r"^== (\w+): (ok|failed|timed out|skipped \(out of time\)) \(rc", text, flags=re.M))
    return sections, statuses, tmp / "out"


def _table_rows(section: str, model: str = "ar5") -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith(f"| `{model}` |")]


def test_every_step_is_reported(smoke):
    sections, statuses, out = smoke
    assert list(sections) == list(STEPS) and set(statuses) == set(STEPS)
    for step in ("wheels", "card", "bench", "bench_channels_last", "bench_compile", "cache", "folds"):
        assert statuses[step] == "ok", (step, sections[step][-2000:])
    text = (out / "gpu-check.txt").read_text()
    assert all(re.search(rf"^{step}: \w+.* in \d+ s$", text, flags=re.M) for step in STEPS)  # the summary


def test_card_and_throughput_have_real_numbers(smoke):
    sections, _, _ = smoke
    assert re.search(r"torch 2\.\d+.*device cpu, bf16 False, \d+ CPU threads", sections["card"])
    for step, network in (("bench", "eager"), ("bench_channels_last", "channels_last")):
        [row] = _table_rows(sections[step])
        assert row[1:4] == ["32", "2", network]
        model_only, data_path, end_to_end, ratio, evaluation = (float(c.replace(",", "")) for c in row[4:9])
        assert min(model_only, data_path, end_to_end, evaluation) > 0 and ratio > 0
        assert re.fullmatch(r"[\d.]+ (s|min|h)", row[9])
    assert "skipped (--cpu-smoke: no compile)" in sections["bench_compile"]


def test_cache_and_folds_have_real_numbers(smoke):
    sections, _, out = smoke
    assert re.search(r"cache: \S+ \(48 clips of 6 actors, [\d,]+ frames", sections["cache"])
    folds = re.findall(r"^fold (\d): (\d+) training samples x (\d+) epochs; ([\d.]+) s; test/acc ([\d.]+); "
                       r"timings \(s\): (.*)$", sections["folds"], flags=re.M)
    assert [f[0] for f in folds] == ["0", "1"] and all(int(f[1]) > 0 and float(f[3]) > 0 for f in folds)
    summary = json.loads((out / "folds_one_at_a_time.json").read_text())
    assert len(summary["folds"]) == 2 and summary["samples_per_s"] > 0 and summary["wall_s"] > 0
    assert re.search(r"one_at_a_time: 2 folds in \d+ s .*, [\d.]+ training samples/s", sections["folds"])
    for *_, timings in folds:
        assert all(re.search(rf"\b{key} [\d.]+", timings) for key in TIMING_KEYS), timings
    assert re.search(r"^projection: fixed cost per fold [\d.]+ s \(\+[\d.]+ s once\); 91 folds x 15 epochs, one at a "
                     r"time: [\d.]+ min$", sections["folds"], flags=re.M)


def test_sync_audit_runs(smoke):
    sections, statuses, _ = smoke
    assert statuses["syncs"] == "ok", sections["syncs"][-2000:]
    steady = dict(re.findall(r"^\| (train|val) \| [\d,]+ \| (\d+) \|", sections["syncs"], flags=re.M))
    assert steady == {"train": "0", "val": "0"}, sections["syncs"][-2000:]  # no sync in a step once running


def test_folds_together_against_one_at_a_time(smoke):
    sections, statuses, out = smoke
    assert statuses["together"] == "ok", sections["together"][-2000:]
    assert json.loads((out / "folds_together.json").read_text())["samples_per_s"] > 0
    assert re.search(r"^2 together: [\d.,]+ samples/s, [\d.]+ s per fold; one at a time: [\d.,]+ samples/s, "
                     r"[\d.]+ s per fold; x[\d.]+$", sections["together"], flags=re.M)
    assert re.search(r"^projection: fixed cost per job of 2 folds [\d.]+ s; 91 folds x 15 epochs, 2 together: "
                     r"[\d.]+ min$", sections["together"], flags=re.M)
