import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fer_mm.vocab import EMOTIONS
from fer_mm.data.twins.displays import display_matrix
from fer_mm.data.twins.spec import TWIN_VERSION
from fer_mm.evaluation import SCHEMA_VERSION
from fer_mm.report.build import main as report_main
from fer_mm.report.comparisons import environment_differences, holm, human_baseline
from fer_mm.train import train

SWEEPS = {"ar2_video": [0, 1, 2], "ar5_audio_only": [0, 1, 3]}


@pytest.fixture(scope="module")
def sweeps(data_overrides, make_cfg, tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    for experiment, folds in SWEEPS.items():
        for fold in folds:
            out = root / experiment / "loso" / f"fold_{fold}"
            cfg = make_cfg(out, [f"experiment={experiment}", "debug=limit", "logger=none", f"cv.fold={fold}",
                                 "trainer.max_epochs=1", *data_overrides])
            train(cfg)
    return root


def _fold_predictions(root, experiment, folds):
    return {f: pd.read_csv(root / experiment / "loso" / f"fold_{f}" / "predictions.csv") for f in folds}


def test_report_tables_match_independent_numbers(sweeps, tmp_path, capsys):
    out = tmp_path / "report"
    report_main([str(sweeps), "--out", str(out), "--no-wandb"])
    results = json.loads((out / "results.json").read_text())
    by_name = {s["experiment"]: s for s in results["experiments"]}
    assert set(by_name) == set(SWEEPS)
    for experiment, folds in SWEEPS.items():
        preds = _fold_predictions(sweeps, experiment, folds)
        pooled = pd.concat(preds.values())
        correct = pooled["pred"] == pooled["label"]
        s = by_name[experiment]
        assert s["pooled"]["acc"] == pytest.approx(correct.mean())
        assert s["pooled"]["uar"] == pytest.approx(correct.groupby(pooled["label"]).mean().mean())
        per_fold = [(p["pred"] == p["label"]).mean() for p in preds.values()]
        assert s["fold_acc_mean"] == pytest.approx(np.mean(per_fold))
        assert s["fold_acc_std"] == pytest.approx(np.std(per_fold, ddof=1))
        assert s["folds_found"] == 3 and s["folds_expected"] == 4
        assert s["missing_folds"] == [3] if experiment == "ar2_video" else [2]
        recall = [((pooled["pred"] == k) & (pooled["label"] == k)).sum() / (pooled["label"] == k).sum() for k in range(6)]
        assert np.allclose(s["pooled"]["per_class_recall"], recall)
    # the comparison uses the common folds only (0 and 1)
    [c] = results["comparisons"]
    a = _fold_predictions(sweeps, "ar2_video", [0, 1])
    b = _fold_predictions(sweeps, "ar5_audio_only", [0, 1])
    acc = lambda d: (pd.concat(d.values())["pred"] == pd.concat(d.values())["label"]).mean()  # noqa: E731
    assert c["folds"] == 2 and c["pooled_acc_diff"] == pytest.approx(acc(b) - acc(a))
    diffs = [(b[f]["pred"] == b[f]["label"]).mean() - (a[f]["pred"] == a[f]["label"]).mean() for f in (0, 1)]
    assert c["fold_diff_mean"] == pytest.approx(np.mean(diffs))
    if any(diffs):
        assert c["wilcoxon_p"] == pytest.approx(stats.wilcoxon(diffs).pvalue)
    text = (out / "results.md").read_text()
    assert f"{100 * by_name['ar2_video']['pooled']['acc']:.2f}" in text and "Missing folds of ar2_video" in text
    assert "synthetic CREMA-D twin" in text
    assert (out / "per_fold_accuracy.png").stat().st_size > 1000
    assert (out / "confusion_ar5_audio_only_loso.png").stat().st_size > 1000


def test_human_baseline_on_the_real_votes(crema_meta):
    votes = crema_meta("tabulatedVotes.csv")
    h = human_baseline(votes)
    # the paper's 40.9 / 58.2 / 63.6 %, recomputed from the released file
    assert h["voice"]["share"] == pytest.approx(0.409, abs=0.012)
    assert h["face"]["share"] == pytest.approx(0.582, abs=0.012)
    assert h["audio-visual"]["share"] == pytest.approx(0.636, abs=0.012)
    assert all(v["clips"] == 7442 for v in h.values())
    one = human_baseline(votes, {"1001_DFA_ANG_XX", "1001_IEO_HAP_HI"})
    assert one["voice"]["clips"] == 2 and 0 <= one["face"]["share"] <= 1


def test_report_with_votes_adds_the_human_rows(sweeps, tmp_path, crema_meta):
    votes = crema_meta("tabulatedVotes.csv")
    out = tmp_path / "r"
    report_main([str(sweeps / "ar2_video"), "--out", str(out), "--votes", str(votes), "--no-wandb"])
    text = (out / "results.md").read_text()
    assert "CREMA-D human raters" in text and "the test clips above" in text


def _fake_fold(root, experiment, fold, correct_mask, lr=1e-3, modalities=("video",), twin=None, environment=None):
    """A fold folder as train.py writes it, with a chosen pattern of correct predictions."""
    config_hash = f"lr{lr:g}"
    out = root / experiment / "loso" / config_hash / f"fold_{fold}"
    out.mkdir(parents=True)
    labels = np.arange(len(correct_mask)) % 6
    preds = np.where(correct_mask, labels, (labels + 1) % 6)
    pd.DataFrame(dict(name=[f"{1001 + fold}_DFA_{EMOTIONS[k]}_XX" for k in labels], actor=1001 + fold, label=labels,
                      pred=preds)).to_csv(out / "predictions.csv", index=False)
    actors = list(range(1001, 1009))
    (out / "metrics.json").write_text(json.dumps(dict(
        schema_version=SCHEMA_VERSION, experiment=experiment, fold=fold, folds_total=8, protocol="loso",
        config_hash=config_hash, config={"model": {"optimizer": {"lr": lr}}, "seed": 0}, modalities=list(modalities),
        label="acted", dataset="crema_d_twin", class_names=list("abcdef"), selected_by="val/uar on validation actors",
        actors=dict(train=actors[:fold] + actors[fold + 1:], val=[], test=[actors[fold]]), twin=twin,
        **({"environment": environment} if environment else {}))))


def test_paired_comparison_on_known_differences(tmp_path):
    rng = np.random.default_rng(0)
    hits_a = [12, 15, 10, 20, 14, 16, 11, 13]
    gains = [3, 5, -1, 4, 2, 6, 0, 7]  # B gets these many more clips right per fold (of 30)
    for fold, (ha, g) in enumerate(zip(hits_a, gains)):
        _fake_fold(tmp_path, "video_only", fold, rng.permutation(np.arange(30) < ha))
        _fake_fold(tmp_path, "fusion", fold, rng.permutation(np.arange(30) < ha + g))
    report_main([str(tmp_path), "--out", str(tmp_path / "out"), "--no-wandb", "--compare", "video_only:fusion"])
    [c] = json.loads((tmp_path / "out" / "results.json").read_text())["comparisons"]
    diffs = np.array(gains) / 30
    assert c["folds"] == 8 and c["pooled_acc_diff"] == pytest.approx(sum(gains) / 240)
    assert c["fold_diff_mean"] == pytest.approx(diffs.mean())
    assert (c["actors_b_better"], c["actors_a_better"], c["actors_tied"]) == (6, 1, 1)  # one actor per fold
    assert c["wilcoxon_p"] == pytest.approx(stats.wilcoxon(diffs[diffs != 0]).pvalue)
    assert c["wilcoxon_p"] < 0.05


def test_report_logs_a_wandb_summary_run_offline(tmp_path, wandb_offline):
    twin = {"version": TWIN_VERSION, "seed": 0, "difficulty": {"audio": 0.5, "video": 0.55}}
    for fold in range(3):
        _fake_fold(tmp_path / "runs", "video_only", fold, np.arange(12) < 4 + fold, twin=twin)
        _fake_fold(tmp_path / "runs", "fusion", fold, np.arange(12) < 6 + fold, modalities=("video", "audio"), twin=twin)
    out = tmp_path / "out"
    report_main([str(tmp_path / "runs"), "--out", str(out), "--wandb"])
    [run] = list((out / "wandb").glob("offline-run-*"))
    assert any(run.rglob("*.wandb"))
    media = run / "files" / "media"
    tables = {p.name.rsplit("_", 2)[0]: json.loads(p.read_text()) for p in (media / "table").glob("*.table.json")}
    assert set(tables) == {"results", "comparisons", "pooled accuracy_table"}  # the last: the bar chart's data
    results = tables["results"]
    assert {"ceiling", "gap_to_ceiling"} <= set(results["columns"]) and len(results["data"]) == 2
    assert all(row[results["columns"].index("ceiling")] > 0.5 for row in results["data"])
    assert len(tables["pooled accuracy_table"]["data"]) == 2
    assert any("ceilings" in p.name for p in (media / "images").glob("*.png"))


def _independent_ceiling(names, weights, modalities):
    """Per (actor, sentence) cell, the sum over the displays seen of the most likely acted emotion's joint
    probability, by explicit loops; cells weighted by their clips."""
    audio, video = display_matrix("audio", weights["audio"]), display_matrix("video", weights["video"])
    cells = pd.Series(list(names)).groupby(lambda i: tuple(names[i].split("_")[:2]))
    total = 0.0
    for _, members in cells:
        prior = np.bincount([EMOTIONS.index(n.split("_")[2]) for n in members], minlength=6) / len(members)
        if set(modalities) == {"audio"}:
            best = sum(max(prior[a] * audio[a, d] for a in range(6)) for d in range(6))
        elif set(modalities) == {"video"}:
            best = sum(max(prior[a] * video[a, d] for a in range(6)) for d in range(6))
        else:
            best = sum(max(prior[a] * video[a, dv] * audio[a, da] for a in range(6)) for dv in range(6) for da in range(6))
        total += best * len(members)
    return total / len(names)


def _copy_records(src, dst, edit):
    """The sweeps' fold records (metrics.json + predictions.csv) copied to ``dst``, each edited by ``edit``."""
    for path in src.rglob("metrics.json"):
        target = dst / path.parent.relative_to(src)
        target.mkdir(parents=True)
        shutil.copy(path.with_name("predictions.csv"), target)
        record = json.loads(path.read_text())
        edit(record)
        (target / "metrics.json").write_text(json.dumps(record))


def test_report_sets_each_experiment_against_its_twin_ceiling(sweeps, tmp_path):
    weights = {"audio": 0.4, "video": 0.7}
    twin = {"version": TWIN_VERSION, "seed": 0, "difficulty": weights}
    _copy_records(sweeps, tmp_path / "runs", lambda r: r.update(twin=twin))
    out = tmp_path / "out"
    report_main([str(tmp_path / "runs"), "--out", str(out), "--no-wandb"])
    results = json.loads((out / "results.json").read_text())
    for s in results["experiments"]:
        names = pd.concat(_fold_predictions(sweeps, s["name"], SWEEPS[s["name"]]).values())["name"].tolist()
        assert s["ceiling"] == pytest.approx(_independent_ceiling(names, weights, s["modalities"]))
        assert s["ceiling_se"] == pytest.approx(np.sqrt(s["ceiling"] * (1 - s["ceiling"]) / len(names)))
        assert s["gap_to_ceiling"] == pytest.approx(s["ceiling"] - s["pooled"]["acc"])
        assert 0 < s["ceiling_on_these_clips"] < 1 and s["twin"] == {"seed": 0, "difficulty": weights}
    text = (out / "results.md").read_text()
    assert "| ceiling % (± se) | gap (pp) |" in text and "Bayes-optimal" in text
    assert f"{100 * results['experiments'][0]['ceiling']:.2f}" in text
    assert "ceilings.png" in text and (out / "ceilings.png").stat().st_size > 1000

    # displays that always show the acted emotion: the Bayes rule is always right
    _copy_records(sweeps, tmp_path / "easy", lambda r: r.update(twin={**twin, "difficulty": "none"}))
    report_main([str(tmp_path / "easy"), "--out", str(tmp_path / "easy_out"), "--no-wandb"])
    easy = json.loads((tmp_path / "easy_out" / "results.json").read_text())["experiments"]
    assert all(s["ceiling"] == 1 and s["ceiling_on_these_clips"] == 1 for s in easy)

    # real data (``twin`` null) and twins of another generator: no ceiling, no ceiling figure
    for case, edit in (("real", lambda r: r.update(twin=None)), ("v1", lambda r: r.update(twin={"seed": 0}))):
        _copy_records(sweeps, tmp_path / case, edit)
        report_main([str(tmp_path / case), "--out", str(tmp_path / f"{case}_out"), "--no-wandb"])
        none = json.loads((tmp_path / f"{case}_out" / "results.json").read_text())
        assert all(s["ceiling"] is None and s["gap_to_ceiling"] is None for s in none["experiments"])
        assert not (tmp_path / f"{case}_out" / "ceilings.png").exists()
        assert "| - | - | - |" in (tmp_path / f"{case}_out" / "results.md").read_text()


def test_the_paired_test_runs_over_test_actors(tmp_path):
    """With several actors per fold the unit is the actor: 3 folds x 4 actors = 12 pairs."""
    rng = np.random.default_rng(3)
    for experiment, boost in (("video_only", 0), ("fusion", 4)):
        for fold in range(3):
            out = tmp_path / experiment / "speaker_kfold" / "h" / f"fold_{fold}"
            out.mkdir(parents=True)
            actors = np.repeat(1001 + 4 * fold + np.arange(4), 12)
            labels = np.tile(np.arange(12) % 6, 4)
            hits = np.concatenate([rng.permutation(np.arange(12) < 5 + boost + (k % 3)) for k in range(4)])
            pd.DataFrame(dict(name=[f"{a}_DFA_{EMOTIONS[k]}_XX" for a, k in zip(actors, labels)], actor=actors,
                              label=labels, pred=np.where(hits, labels, (labels + 1) % 6))).to_csv(
                out / "predictions.csv", index=False)
            (out / "metrics.json").write_text(json.dumps(dict(
                schema_version=SCHEMA_VERSION, experiment=experiment, fold=fold, folds_total=3,
                protocol="speaker_kfold", config_hash="h", config={}, modalities=["video"], label="acted",
                dataset="crema_d_twin", class_names=list("abcdef"), selected_by="val/uar on validation actors",
                actors={}, twin=None)))
    report_main([str(tmp_path), "--out", str(tmp_path / "out"), "--no-wandb"])
    [c] = json.loads((tmp_path / "out" / "results.json").read_text())["comparisons"]
    assert (c["a"], c["b"]) == ("fusion (speaker_kfold)", "video_only (speaker_kfold)")  # same inputs: name order
    diffs = []
    for fold in range(3):
        a, b = (pd.read_csv(tmp_path / e / "speaker_kfold" / "h" / f"fold_{fold}" / "predictions.csv")
                for e in ("fusion", "video_only"))
        diffs += ((b["pred"] == b["label"]).groupby(b["actor"]).mean()
                  - (a["pred"] == a["label"]).groupby(a["actor"]).mean()).tolist()
    diffs = np.array(diffs)
    assert c["folds"] == 3 and c["actors"] == 12 and c["actors_a_better"] == int((diffs < 0).sum())
    assert c["wilcoxon_p"] == pytest.approx(stats.wilcoxon(diffs[diffs != 0]).pvalue) and c["wilcoxon_p"] < 0.05


def test_holm_correction_on_a_hand_example():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02, None, 0.04]) == [pytest.approx(0.04), None, pytest.approx(0.04)]  # no test: not in the family
    assert holm([]) == []


def test_comparisons_read_richer_minus_poorer_with_holm_p(tmp_path):
    rng = np.random.default_rng(1)
    hits = {"ar5_audio_only": [8, 9, 7, 10, 8, 9, 6, 8], "ar5_video_only": [12, 8, 11, 9, 15, 12, 7, 14],
            "ar5_fusion": [16, 18, 15, 17, 19, 16, 18, 20]}
    inputs = {"ar5_audio_only": ("audio",), "ar5_video_only": ("video",), "ar5_fusion": ("video", "audio")}
    for experiment, per_fold in hits.items():
        for fold, h in enumerate(per_fold):
            _fake_fold(tmp_path / "runs", experiment, fold, rng.permutation(np.arange(30) < h),
                       modalities=inputs[experiment])
    report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--no-wandb"])
    comparisons = json.loads((tmp_path / "out" / "results.json").read_text())["comparisons"]
    pairs = {(c["a"], c["b"]) for c in comparisons}
    # fused is B against either single modality; audio and video keep the default (name) order
    assert pairs == {("ar5_audio_only", "ar5_fusion"), ("ar5_video_only", "ar5_fusion"),
                     ("ar5_audio_only", "ar5_video_only")}
    assert all(c["pooled_acc_diff"] > 0 for c in comparisons)
    p = np.array([c["wilcoxon_p"] for c in comparisons])
    assert len(set(p)) == 2  # audio vs video is less clear than fused vs either
    order = np.argsort(p)
    expected = np.empty(3)
    expected[order] = np.minimum(1, np.maximum.accumulate(p[order] * [3, 2, 1]))
    assert [c["wilcoxon_p_holm"] for c in comparisons] == pytest.approx(expected)
    text = (tmp_path / "out" / "results.md").read_text()
    assert "richer minus poorer" in text and "| Holm p |" in text

    # an explicit pair keeps the user's order; alone, it is its own family
    report_main([str(tmp_path / "runs"), "--out", str(tmp_path / "out2"), "--no-wandb",
                 "--compare", "ar5_fusion:ar5_video_only"])
    [c] = json.loads((tmp_path / "out2" / "results.json").read_text())["comparisons"]
    assert (c["a"], c["b"]) == ("ar5_fusion", "ar5_video_only") and c["pooled_acc_diff"] < 0
    assert c["wilcoxon_p_holm"] == pytest.approx(c["wilcoxon_p"])


def test_report_groups_runs_by_config_and_names_what_differs(tmp_path):
    for lr, hits in ((1e-3, [10, 12, 14]), (5e-2, [5, 6, 7])):
        for fold, h in enumerate(hits):
            _fake_fold(tmp_path, "fusion", fold, np.arange(20) < h, lr=lr)
    report_main([str(tmp_path), "--out", str(tmp_path / "out"), "--no-wandb"])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    by_name = {s["experiment"]: s for s in results["experiments"]}
    assert set(by_name) == {"fusion [model.optimizer.lr=0.001]", "fusion [model.optimizer.lr=0.05]"}
    assert by_name["fusion [model.optimizer.lr=0.001]"]["pooled"]["acc"] == pytest.approx(36 / 60)
    assert by_name["fusion [model.optimizer.lr=0.05]"]["pooled"]["acc"] == pytest.approx(18 / 60)
    assert all(s["folds_found"] == 3 and s["folds_expected"] == 8 for s in by_name.values())
    [c] = results["comparisons"]  # the two configs are compared with each other
    assert c["pooled_acc_diff"] == pytest.approx(36 / 60 - 18 / 60) or c["pooled_acc_diff"] == pytest.approx(18 / 60 - 36 / 60)
    text = (tmp_path / "out" / "results.md").read_text()
    assert "`lr0.001`" in text and "fusion [model.optimizer.lr=0.05]" in text


def test_experiments_on_other_data_are_not_paired_and_independence_is_stated(tmp_path):
    rng = np.random.default_rng(1)
    for fold in range(3):
        _fake_fold(tmp_path, "on_twin", fold, rng.random(30) < 0.5)
        _fake_fold(tmp_path, "on_faces", fold, rng.random(30) < 0.5)
    for path in (tmp_path / "on_faces").rglob("metrics.json"):  # another data set, its subjects unknown
        record = json.loads(path.read_text())
        path.write_text(json.dumps(dict(record, dataset="image_folder", speaker_independent=False)))
    for path in (tmp_path / "on_twin").rglob("metrics.json"):
        path.write_text(json.dumps(dict(json.loads(path.read_text()), speaker_independent=True)))
    report_main([str(tmp_path), "--out", str(tmp_path / "out"), "--no-wandb"])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["comparisons"] == []  # same protocol, other data: nothing to pair
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "speaker/subject-independent: on_twin" in markdown
    assert "NOT subject-independent (each image its own subject): on_faces" in markdown


def test_report_warns_when_runs_were_made_under_different_environments(tmp_path, caplog):
    env = dict(python="3.11.7", platform="Linux-x86_64", lock="a252136e15b1", commit="67cbadf",
               packages=dict(torch="2.11.0", av="17.1.0", opencv="4.14.0.94"))
    newer_av = dict(env, commit="89abcde", packages=dict(env["packages"], av="18.1.0"))
    rng = np.random.default_rng(2)
    for fold in range(3):
        _fake_fold(tmp_path / "same", "video_only", fold, rng.random(30) < 0.5, environment=env)
        _fake_fold(tmp_path / "same", "fusion", fold, rng.random(30) < 0.6, environment=dict(env, commit="89abcde"),
                   modalities=("video", "audio"))
        _fake_fold(tmp_path / "mixed", "video_only", fold, rng.random(30) < 0.5, environment=env)
        _fake_fold(tmp_path / "mixed", "fusion", fold, rng.random(30) < 0.6, modalities=("video", "audio"),
                   environment=newer_av)
    # only the commit differs: the same software, no warning
    report_main([str(tmp_path / "same"), "--out", str(tmp_path / "out_same"), "--no-wandb"])
    results = json.loads((tmp_path / "out_same" / "results.json").read_text())
    assert results["environment"]["differing"] == [] and results["comparisons"][0]["environment_differs"] == []
    text = (tmp_path / "out_same" / "results.md").read_text()
    assert "## Environment" in text and "Warning" not in text and "a252136e15b1" in text
    # another PyAV: named in results.json, the log, the comparison and at the top of results.md
    caplog.clear()
    with caplog.at_level("WARNING", logger="fer_mm.report"):
        report_main([str(tmp_path / "mixed"), "--out", str(tmp_path / "out_mixed"), "--no-wandb"])
    results = json.loads((tmp_path / "out_mixed" / "results.json").read_text())
    assert results["environment"]["differing"] == ["packages.av"]
    assert [len(e["folds"]) for e in results["environment"]["environments"]] == [3, 3]
    [c] = results["comparisons"]
    assert c["environment_differs"] == ["packages.av"]
    assert any("different environments" in r.message and "packages.av" in r.message for r in caplog.records)
    text = (tmp_path / "out_mixed" / "results.md").read_text()
    assert text.splitlines()[2].startswith("**Warning: these runs were made under different environments**")
    assert "17.1.0" in text and "18.1.0" in text
    # folds from before environments were recorded are counted, not compared
    for fold in range(2):
        _fake_fold(tmp_path / "old", "video_only", fold, rng.random(30) < 0.5, environment=env if fold else None)
    report_main([str(tmp_path / "old"), "--out", str(tmp_path / "out_old"), "--no-wandb"])
    environment = json.loads((tmp_path / "out_old" / "results.json").read_text())["environment"]
    assert environment["differing"] == [] and environment["unrecorded"] == ["video_only fold 0"]


def test_environment_differences():
    a = dict(python="3.11.7", platform="Linux-x86_64", lock="abc", commit="1", torch_cuda="13.0",
             packages=dict(torch="2.11.0", av="17.1.0"))
    assert environment_differences([a, dict(a, commit="2")]) == []  # another commit is not another environment
    assert environment_differences([a, dict(a, packages=dict(torch="2.11.0", av="18.1.0"))]) == ["packages.av"]
    assert environment_differences([a, dict(a, lock="def", torch_cuda=None), None]) == ["lock", "torch_cuda"]
    assert environment_differences([a, None]) == []  # an older record without one is not a difference


def test_report_shows_each_branch_inside_a_fused_model(tmp_path):
    """The branch table is recomputed from the predictions' pred_video / pred_audio columns, pooled over
    the folds that recorded them (a fold from before they existed is left out and counted)."""
    rng = np.random.default_rng(5)
    hits = {}
    for fold in range(3):
        out = tmp_path / "fused" / "speaker_kfold" / "h" / f"fold_{fold}"
        out.mkdir(parents=True)
        actors = np.repeat(1001 + 2 * fold + np.arange(2), 12)
        labels = np.tile(np.arange(12) % 6, 2)
        table = pd.DataFrame(dict(name=[f"{a}_DFA_{EMOTIONS[k]}_XX_{i}" for i, (a, k) in enumerate(zip(actors, labels))],
                                  actor=actors, label=labels, pred=labels))
        if fold:  # fold 0 was run before the branch columns existed
            table["pred_video"] = np.where(rng.random(24) < 0.5, labels, (labels + 1) % 6)
            table["pred_audio"] = np.where(rng.random(24) < 0.8, labels, (labels + 2) % 6)
            for m in ("video", "audio"):
                hits.setdefault(m, []).extend((table[f"pred_{m}"] == table["label"]).tolist())
        table.to_csv(out / "predictions.csv", index=False)
        (out / "metrics.json").write_text(json.dumps(dict(
            schema_version=SCHEMA_VERSION, experiment="fused", fold=fold, folds_total=3, protocol="speaker_kfold",
            config_hash="h", config={}, modalities=["video", "audio"], label="acted", dataset="crema_d_twin",
            class_names=list("abcdef"), selected_by="val/uar on validation actors", actors={}, twin=None)))
    report_main([str(tmp_path), "--out", str(tmp_path / "out"), "--no-wandb"])
    [summary] = json.loads((tmp_path / "out" / "results.json").read_text())["experiments"]
    for m in ("video", "audio"):
        b = summary["branches"][m]
        assert b["folds"] == 2 and b["acc"] == pytest.approx(np.mean(hits[m])) and b["fused_acc"] == 1.0
    text = (tmp_path / "out" / "results.md").read_text()
    assert "## Each branch inside the fused model" in text
    assert f"| fused (speaker_kfold) | video | 2 | {100 * np.mean(hits['video']):.2f} |" in text
