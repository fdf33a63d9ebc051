"""The models beyond AR5 (frames as time, log-mel CNN, late fusion, cross-modal attention), the
recipe around them (SpecAugment, crop jitter, label smoothing, mixup, auxiliary heads) and modality
balancing (OGM-GE, OPM)."""

import math

import pytest
import torch
import torch.nn.functional as F

from fer_mm.balancing import (branch_scores, discrepancy, modulate_gradients, ogm_coefficients,
                              opm_drop_probabilities, opm_keep)
from fer_mm.evaluation import branch_accuracies, predictions_table, run_record
from fer_mm.models import get_model
from fer_mm.models.fusion import FusionModel
from fer_mm.models.frontends import LogMelSpectrogram, ScipySpectrogram, SpecAugment
from fer_mm.models.inputs import ModelInputs, jitter_crops
from fer_mm.system import EmotionSystem

FUSED = ["late_fusion", "cross_attention", "ar5"]
# small branches, where a test is about the fusion rather than the branches' size
TINY = {"late_fusion": dict(video_args=dict(widths=[8, 16], blocks=[1, 1]), audio_args=dict(channels=[8, 16])),
        "cross_attention": dict(video_args=dict(widths=[8, 16], blocks=[1, 1]), audio_args=dict(channels=[8, 16]),
                                dim=32),
        "ar5": dict(video_embed=16, audio_embed=8, fc=[16])}


def _fused(name, **kwargs):
    return get_model(name, frames=8, num_classes=6, **TINY[name], **kwargs)


def _inputs(batch=2, frames=8):
    torch.manual_seed(0)
    return dict(video=torch.randn(batch, frames, 98, 80), audio=torch.rand(batch, 1, 128, 128))


def _batch(n=4, frames=4, seconds=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    samples = int(16000 * seconds)
    return dict(video=torch.randint(0, 256, (n, frames, 98, 80), dtype=torch.uint8, generator=g),
                audio=torch.rand(n, samples, generator=g) * 0.2 - 0.1, audio_length=torch.full((n,), samples),
                label=torch.arange(n) % 6, index=torch.arange(n))


@pytest.mark.parametrize("frames", [8, 3])
def test_frame_network_takes_any_frame_count_and_gives_one_token_per_frame(frames):
    model = get_model("frame_resnet", num_classes=6).eval()
    x = _inputs(frames=frames)
    assert model.forward_tokens(**x).shape == (2, frames, model.num_features)
    assert model(**x).shape == (2, 6)


def test_frame_network_encodes_each_frame_alone():
    """The per-frame CNN sees one frame at a time: changing one frame changes only that frame's CNN
    embedding (the temporal model mixes them afterwards)."""
    model = get_model("frame_resnet", num_classes=6, temporal="mean").eval()
    x = _inputs(frames=4)["video"]
    changed = x.clone()
    changed[:, 2] = torch.randn_like(changed[:, 2])
    a, b = model.forward_tokens(video=x), model.forward_tokens(video=changed)
    differs = (a - b).abs().amax((0, 2)) > 1e-6
    assert differs.tolist() == [False, False, True, False]


@pytest.mark.parametrize("temporal", ["conv", "transformer", "mean"])
def test_every_temporal_model_trains(temporal):
    model = get_model("frame_resnet", num_classes=6, temporal=temporal).train()
    model(**_inputs(frames=5)).logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="model.net.temporal='lstm'"):
        get_model("frame_resnet", temporal="lstm")


def test_logmel_cnn_keeps_time_as_tokens():
    model = get_model("logmel_cnn", num_classes=6).eval()
    tokens = model.forward_tokens(audio=_inputs()["audio"])
    assert tokens.shape == (2, 128 // 16, model.num_features)  # four 2x2 pools over 128 columns


@pytest.mark.parametrize("name", ["late_fusion", "cross_attention"])
@pytest.mark.parametrize("branches", [("frame_resnet", "logmel_cnn"), ("ar5_video_branch", "ar5_audio_branch"),
                                      ("resnet18", "logmel_cnn")])
def test_fusion_takes_any_registered_branch(name, branches):
    model = get_model(name, frames=8, num_classes=6, video_branch=branches[0], audio_branch=branches[1]).eval()
    assert isinstance(model, FusionModel) and set(model.branches) == {"video", "audio"}
    assert model(**_inputs()).shape == (2, 6)


@pytest.mark.parametrize("name", ["late_fusion", "cross_attention"])
def test_fusion_needs_both_modalities_and_both_inputs(name):
    with pytest.raises(ValueError, match=rf"{name} fuses video and audio: model.net.modalities must be"):
        get_model(name, modalities=["video"])
    with pytest.raises(ValueError, match="needs audio in the batch"):
        get_model(name)(video=torch.randn(2, 8, 98, 80))


def test_late_fusion_starts_as_the_mean_of_its_branches_and_learns_its_weights():
    model = _fused("late_fusion").eval()
    x = _inputs()
    emb = model.embeddings(**x)
    branch = model.branch_logits(emb)
    assert torch.allclose(model(**x), (branch["video"] + branch["audio"]) / 2, atol=1e-6)
    model.train()(**x).logsumexp(1).mean().backward()
    assert model.weights.grad is not None and model.weights.grad.abs().sum() > 0


@pytest.mark.parametrize("name", FUSED)
def test_branch_logits_read_each_branch_alone(name):
    """Without auxiliary heads a branch's own reading is the fused head with the other branch
    zeroed: it does not move when the other modality's input does."""
    model = _fused(name).eval()
    x = _inputs()
    other = dict(x, audio=torch.linspace(0, 1, 128).expand_as(x["audio"]).contiguous())
    a = model.branch_logits(model.embeddings(**x))
    b = model.branch_logits(model.embeddings(**other))
    assert torch.allclose(a["video"], b["video"], atol=1e-5)
    assert not torch.allclose(a["audio"], b["audio"], atol=1e-5)


@pytest.mark.parametrize("name", FUSED)
def test_auxiliary_heads_classify_each_branch_embedding(name):
    model = _fused(name).eval()
    model.add_aux_heads(6)
    emb = model.embeddings(**_inputs())
    logits = model.branch_logits(emb)
    assert {m: z.shape for m, z in logits.items()} == {"video": (2, 6), "audio": (2, 6)}
    if name != "late_fusion":  # late fusion's branch classifiers are its heads already
        expected = model.aux_heads["video"](model.pooled("video", emb["video"]))
        assert torch.equal(logits["video"], expected)


def test_ar5_fused_output_is_unchanged_by_the_fusion_interface():
    """AR5 written as a FusionModel computes what it computed before: the branches' projected
    embeddings, concatenated, through the fusion layers and the head."""
    torch.manual_seed(0)
    model = get_model("ar5", num_classes=6).eval()
    x = _inputs(frames=20)
    by_hand = [model.project[m](model.branches[m].forward_features(**{m: x[m]})) for m in ("video", "audio")]
    assert torch.equal(model(**x), model.head(model.fusion(torch.cat(by_hand, 1))))


def test_the_systems_fused_forward_is_ar5s_own_in_training_too():
    """The system reads a fused model through embeddings -> fuse -> head; for AR5 with its modality
    dropout in training that is the network's own forward, random draws included."""
    torch.manual_seed(0)
    system = EmotionSystem(net={"name": "ar5", "num_classes": 6, "modality_dropout": 0.5},
                           inputs={"frames": 4, "max_audio_seconds": 1.0}).train()
    batch = _batch(n=8)
    torch.manual_seed(1)
    via_system = system.outputs(batch)["emotion"]
    after_system = torch.rand(3)
    torch.manual_seed(1)
    via_net = system.net(**system.inputs(batch, augment=True))
    assert torch.equal(via_system, via_net) and torch.equal(after_system, torch.rand(3))


# --- the recipe -------------------------------------------------------------------------------------

def test_spec_augment_masks_bands_and_spans_and_draws_per_clip():
    torch.manual_seed(0)
    images = torch.ones(64, 128, 128)
    out = SpecAugment(freq_masks=1, freq_width=20, time_masks=1, time_width=10)(images)
    zero_rows = (out == 0).all(2).sum(1)  # masked rows span every column
    zero_cols = (out == 0).all(1).sum(1)
    assert zero_rows.max() <= 20 and zero_cols.max() <= 10
    assert len(set(zero_rows.tolist())) > 3  # widths drawn per clip
    assert ((out == 0) | (out == 1)).all()
    assert torch.equal(SpecAugment(0, 0, 0, 0)(images), images)


@pytest.mark.parametrize("frontend", [ScipySpectrogram, LogMelSpectrogram])
def test_spec_augment_applies_in_training_only(frontend):
    waves, lengths = torch.randn(3, 16000) * 0.1, torch.tensor([16000, 12000, 9000])
    plain = frontend(noise_std=0.0)
    masked = frontend(noise_std=0.0, spec_augment=dict(freq_masks=2, freq_width=30, time_masks=2, time_width=30))
    assert torch.equal(masked(waves, lengths), plain(waves, lengths))
    torch.manual_seed(1)
    trained = masked(waves, lengths, augment=True)
    assert (trained == 0).sum() > (plain(waves, lengths) == 0).sum()
    with pytest.raises(TypeError, match="model.inputs.audio.spec_augment: .*keys: freq_masks"):
        frontend(spec_augment=dict(masks=2))


def test_crop_jitter_shifts_whole_clips_within_the_bound():
    torch.manual_seed(0)
    video = torch.arange(98 * 80, dtype=torch.float32).reshape(1, 1, 98, 80).repeat(16, 3, 1, 1)
    out = jitter_crops(video, 3)
    # each clip is a shifted copy: the offset read from a pixel inside is the same in every frame
    dy = (out[:, :, 50, 40] // 80 - 50)
    dx = (out[:, :, 50, 40] % 80 - 40)
    assert (dy == dy[:, :1]).all() and (dx == dx[:, :1]).all()
    assert dy.abs().max() <= 3 and dx.abs().max() <= 3 and len(set(dy[:, 0].tolist())) > 1
    inputs = ModelInputs(["video"], frames=3, crop_jitter=3)
    faces = dict(video=torch.randint(0, 256, (4, 3, 98, 80), dtype=torch.uint8))
    assert torch.equal(inputs(faces)["video"], ModelInputs(["video"], frames=3)(faces)["video"])  # not in eval
    with pytest.raises(ValueError, match="model.inputs.crop_jitter"):
        ModelInputs(["video"], crop_jitter=-1)


def _system(net="late_fusion", **kwargs):
    torch.manual_seed(0)
    audio = kwargs.pop("inputs_audio", None)
    inputs = {"frames": 4, "max_audio_seconds": 1.0, **({"audio": {"noise_std": 0.0}} if audio is not None else {})}
    net_args = kwargs.pop("net_args", TINY.get(net, {}))
    return EmotionSystem(net={"name": net, "num_classes": 6, **net_args}, inputs=inputs, **kwargs)


def test_label_smoothing_changes_the_training_loss_only():
    system = _system(label_smoothing=0.2).eval()
    batch = _batch()
    logits = system.outputs(batch)["emotion"]
    plain = F.cross_entropy(logits, batch["label"])
    smooth = F.cross_entropy(logits, batch["label"], label_smoothing=0.2)
    assert torch.allclose(system._emotion_loss(logits, batch["label"], "val"), plain)
    assert torch.allclose(system._emotion_loss(logits, batch["label"], "train"), smooth)


def test_mixup_mixes_every_input_and_both_targets():
    torch.manual_seed(0)
    system = EmotionSystem(net={"name": "late_fusion", "num_classes": 6, **TINY["late_fusion"]}, mixup=0.4,
                           inputs={"frames": 4, "max_audio_seconds": 1.0, "audio": {"noise_std": 0.0}}).train()
    batch = _batch()
    mixed, (lam, order) = system._mixed_inputs(batch)
    plain = system.inputs(batch, augment=True)  # no noise, flip or jitter here: the same images again
    assert 0 <= lam <= 1 and sorted(order.tolist()) == [0, 1, 2, 3]
    for m in ("video", "audio"):
        assert torch.allclose(mixed[m], lam * plain[m] + (1 - lam) * plain[m][order], atol=1e-6)
    logits = torch.randn(4, 6)
    loss = system._emotion_loss(logits, batch["label"], "train", (lam, order))
    expected = lam * F.cross_entropy(logits, batch["label"]) + (1 - lam) * F.cross_entropy(logits, batch["label"][order])
    assert torch.allclose(loss, expected)
    assert system.eval()._mixed_inputs(batch)[1] is None  # never outside training
    with pytest.raises(ValueError, match="model.mixup mixes emotion targets only"):
        _system(mixup=0.4, tasks={"gender": {"weight": 1}})


def test_recipe_keys_are_checked_by_name():
    with pytest.raises(ValueError, match="model.balance='gradblend'"):
        _system(balance="gradblend")
    with pytest.raises(ValueError, match="model.label_smoothing"):
        _system(label_smoothing=1.5)
    with pytest.raises(ValueError, match="act on a fused model's two branches"):
        _system("frame_resnet", aux_weight=0.5)
    with pytest.raises(ValueError, match="act on a fused model's two branches"):
        _system("ar5", balance="ogm_ge", net_args={"modalities": ["audio"]})


@pytest.mark.parametrize("name", FUSED)
def test_auxiliary_loss_trains_each_branch_on_its_own(name):
    system = _system(name, aux_weight=0.5).train()
    assert system.fusion.aux_heads is not None or name == "late_fusion"
    loss, outputs = system._step(_batch(), "train")
    assert set(outputs["branches"]) == {"video", "audio"}
    loss.backward()
    heads = system.fusion.aux_heads if name != "late_fusion" else system.fusion.classifiers
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads.parameters())


# --- balancing --------------------------------------------------------------------------------------

def _dominant_audio_logits():
    """Four clips: the audio branch puts 0.9 on the true class, video 0.3."""
    labels = torch.tensor([0, 1, 2, 3])

    def logits(p_true):
        other = (1 - p_true) / 5
        z = torch.full((4, 6), math.log(other))
        z[torch.arange(4), labels] = math.log(p_true)
        return z
    return {"video": logits(0.3), "audio": logits(0.9)}, labels


def test_branch_scores_and_discrepancy_follow_the_paper():
    logits, labels = _dominant_audio_logits()
    scores = branch_scores(logits, labels)
    assert torch.allclose(scores["audio"], torch.tensor(3.6)) and torch.allclose(scores["video"], torch.tensor(1.2))
    ratios = discrepancy(scores)
    assert torch.allclose(ratios["audio"], torch.tensor(3.0)) and torch.allclose(ratios["video"], torch.tensor(1 / 3))
    # an unlabelled clip (-1) counts in neither score
    masked = branch_scores(logits, torch.tensor([0, 1, 2, -1]))
    assert torch.allclose(masked["audio"], torch.tensor(2.7))


def test_ogm_scales_the_dominant_branch_by_the_papers_coefficient_and_leaves_the_other():
    """Peng et al. 2022, eq. 10: k = 1 - tanh(alpha * rho) for the branch whose ratio rho exceeds 1."""
    logits, labels = _dominant_audio_logits()
    alpha = 0.5
    coeffs = ogm_coefficients(branch_scores(logits, labels), alpha)
    expected = 1 - math.tanh(alpha * 3.0)
    assert math.isclose(float(coeffs["audio"]), expected, rel_tol=1e-6) and float(coeffs["video"]) == 1.0
    audio, video = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    (audio(torch.ones(1, 3)).sum() * 2 + video(torch.ones(1, 3)).sum() * 3).backward()
    before = {n: p.grad.clone() for n, p in (("a", audio.weight), ("v", video.weight))}
    modulate_gradients({"audio": audio.parameters(), "video": video.parameters()}, coeffs)
    assert torch.allclose(audio.weight.grad, before["a"] * expected)
    assert torch.equal(video.weight.grad, before["v"])


def test_ogm_ge_adds_noise_of_the_gradients_spread_to_the_modulated_branch_only():
    torch.manual_seed(0)
    coeffs = {"audio": torch.tensor(0.4), "video": torch.tensor(1.0)}
    audio, video = torch.nn.Parameter(torch.zeros(2000)), torch.nn.Parameter(torch.zeros(2000))
    audio.grad, video.grad = torch.randn(2000) * 3, torch.randn(2000)
    g_audio, g_video = audio.grad.clone(), video.grad.clone()
    modulate_gradients({"audio": [audio], "video": [video]}, coeffs, noise=True)
    noise = audio.grad - 0.4 * g_audio
    assert abs(float(noise.std()) - float(g_audio.std())) < 0.1 * float(g_audio.std())
    assert abs(float(noise.mean())) < 0.3
    assert torch.equal(video.grad, g_video)


def test_the_system_modulates_the_dominant_branch_in_a_training_step():
    system = _system("late_fusion", balance="ogm", balance_alpha=0.5).train()
    batch = _batch()
    loss, outputs = system._step(batch, "train")
    loss.backward()
    grads = {m: [p.grad.clone() for p in system.fusion.branch_parameters(m)] for m in ("video", "audio")}
    coeffs = ogm_coefficients(branch_scores(outputs["branches"], batch["label"]), 0.5)
    assert min(float(k) for k in coeffs.values()) < 1  # one branch was modulated
    assert torch.equal(system._ogm["video"], coeffs["video"]) and torch.equal(system._ogm["audio"], coeffs["audio"])
    system.on_before_optimizer_step(None)
    for m in ("video", "audio"):
        for before, p in zip(grads[m], system.fusion.branch_parameters(m)):
            assert torch.allclose(p.grad, before * coeffs[m])


def test_opm_drops_the_dominant_branch_with_its_probability():
    ratios = {"audio": torch.tensor(3.0), "video": torch.tensor(1 / 3)}
    p = opm_drop_probabilities(ratios, alpha=0.5)
    assert math.isclose(float(p["audio"]), math.tanh(0.5 * 2.0), rel_tol=1e-6) and float(p["video"]) == 0
    torch.manual_seed(0)
    keep = opm_keep(p, 20000, torch.device("cpu"))
    assert abs(1 - float(keep["audio"].mean()) - math.tanh(1.0)) < 0.02 and bool((keep["video"] == 1).all())


def test_opm_in_a_training_step_zeroes_dominant_embeddings():
    system = _system("ar5", balance="opm", balance_alpha=10.0,
                     net_args=dict(video_embed=8, audio_embed=4, fc=[8])).train()
    seen = []
    system.fusion.fusion.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    system._step(_batch(n=16), "train")  # the first step has no ratio yet: nothing dropped
    assert not (seen[0][:, :8] == 0).all(1).any() and not (seen[0][:, 8:] == 0).all(1).any()
    system._ratios = {"video": torch.tensor(3.0), "audio": torch.tensor(1 / 3)}
    seen.clear()
    system._step(_batch(n=16), "train")
    fused = seen[0]  # the fused pass comes first, then each branch's own
    assert (fused[:, :8] == 0).all(1).sum() >= 14 and not (fused[:, 8:] == 0).all(1).any()


# --- what a fused run records -----------------------------------------------------------------------

def test_branch_predictions_reach_the_table_and_the_record():
    import pandas as pd

    clips = pd.DataFrame(dict(name=[f"c{i}" for i in range(4)], actor=[1001] * 4, sentence=["IEO"] * 4,
                              level=["XX"] * 4))
    labels = torch.tensor([0, 1, 2, 3]).numpy()
    probs = torch.eye(6)[[0, 1, 2, 0]].numpy()
    table = predictions_table(clips, labels, probs, [str(i) for i in range(6)],
                              branches={"video": [0, 1, 5, 5], "audio": [0, 0, 0, 0]})
    assert table["pred_video"].tolist() == [0, 1, 5, 5]
    scores = branch_accuracies(table, 6)
    assert scores["video"]["acc"] == 0.5 and scores["audio"]["acc"] == 0.25
    record = run_record(predictions=table, class_names=[str(i) for i in range(6)], logged={})
    assert record["branches"] == scores


def test_a_fused_systems_test_step_keeps_each_branchs_prediction():
    system = _system("cross_attention").eval()
    system.on_test_epoch_start()
    with torch.no_grad():
        system.test_step(_batch(), 0)
    kept = system.test_outputs[0]
    assert set(kept) >= {"pred_video", "pred_audio", "probs"} and kept["pred_video"].shape == (4,)


def test_precise_bn_sets_running_statistics_to_the_batches_exact_average():
    system = _system("logmel_cnn", precise_bn=2, inputs_audio={})
    system.train()
    batches = [_batch(seed=s) for s in (1, 2)]
    first = system.net.stages[0][1]  # the first batch norm, after the first convolution
    seen = []
    hook = first.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    torch.manual_seed(0)
    system.recompute_batch_norms(batches)
    hook.remove()
    x = torch.cat(seen).transpose(0, 1).reshape(first.num_features, -1)
    assert torch.allclose(first.running_mean, x.mean(1), atol=1e-5)
    # the cumulative average of the batches' unbiased variances (each batch's own, as batch norm keeps)
    per_batch = [s.transpose(0, 1).reshape(first.num_features, -1).var(1) for s in seen]
    assert torch.allclose(first.running_var, torch.stack(per_batch).mean(0), rtol=1e-4)
    assert first.momentum == 0.1 and system.training
    with pytest.raises(ValueError, match="model.precise_bn"):
        _system(precise_bn=-1)


@pytest.mark.parametrize("overrides", [
    ["experiment=cross_attention_fusion", "model.net.video_branch=ar5_video_branch",
     "model.net.audio_branch=ar5_audio_branch", "model.inputs.audio.frontend=scipy"],
    ["experiment=late_fusion", "+model.net.video_args.temporal=transformer"],
    ["experiment=late_fusion", "model.balance=ogm_ge"],
    ["experiment=ar5_fusion", "+model.aux_weight=0.5", "+model.balance=opm"],
])
def test_the_documented_variants_compose_and_build(overrides, make_cfg, tmp_path):
    import hydra

    cfg = make_cfg(tmp_path, overrides)
    system = hydra.utils.instantiate(cfg.model)
    assert system.fused and set(system.fusion.branches) == {"video", "audio"}


def test_precise_bn_keeps_frozen_norms():
    system = _system("late_fusion", precise_bn=1,
                     net_args=dict(video_branch="resnet18", video_args=dict(freeze=1), audio_args=dict(channels=[8])))
    frozen = system.fusion.branches["video"].body.bn1
    frozen.running_mean.fill_(0.5)
    system.recompute_batch_norms([_batch()])
    assert torch.all(frozen.running_mean == 0.5)
    assert not torch.all(system.fusion.branches["audio"].stages[0][1].running_mean == 0)


def test_a_checkpoint_with_unimodal_heads_loads_for_inference(tmp_path):
    from fer_mm.inference.recognizer import Recognizer

    system = _system("cross_attention", aux_weight=0.5)
    path = tmp_path / "m.ckpt"
    torch.save({"hyper_parameters": dict(system.hparams), "state_dict": system.state_dict()}, path)
    rec = Recognizer(path)
    assert rec.net.aux_heads is not None and set(rec.modalities) == {"video", "audio"}
