import re
from pathlib import Path

import pytest
import torch
import torchvision

from fer_mm.models import get_model, list_models
from fer_mm.models.summary import markdown_table, model_rows

MODELS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def _inputs(batch=2, frames=20):
    torch.manual_seed(0)
    return dict(video=torch.randn(batch, frames, 98, 80), audio=torch.rand(batch, 1, 128, 128))


@pytest.mark.parametrize("frames", [20, 12])
@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward(name, frames):
    model = get_model(name, frames=frames, num_classes=6).train()
    logits = model(**_inputs(frames=frames))
    assert logits.shape == (2, 6) and torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"{name}: no gradient reaches {no_grad[:5]}"


def test_other_class_count_and_embedding():
    model = get_model("ar1", num_classes=4)
    x = _inputs()
    assert model(**x).shape == (2, 4)
    assert model.forward_head(model.forward_features(**x), pre_logits=True).shape == (2, model.num_features)
    assert get_model("resnet18", num_classes=0)(**x).shape == (2, 512)


@pytest.mark.parametrize("modalities", [["video"], ["audio"], ["video", "audio"]])
def test_ar5_modes(modalities):
    model = get_model("ar5", modalities=modalities, video_embed=64, audio_embed=32).eval()
    assert set(model.branches) == set(modalities)
    x = _inputs()
    out = model(**x)
    assert out.shape == (2, 6)
    # inputs the mode does not use are ignored (and may be absent)
    unused = {m: None for m in ("video", "audio") if m not in modalities}
    assert torch.allclose(model(**{**x, **unused}), out)
    widths = {"video": 64, "audio": 32}
    assert model.fusion[1].in_features == sum(widths[m] for m in modalities)
    # the embedding lengths weigh the modalities: the concatenation follows them
    emb = model.embeddings(**x)
    assert {m: e.shape[1] for m, e in emb.items()} == {m: widths[m] for m in modalities}


def test_ar5_rejects_bad_modalities_and_missing_input():
    with pytest.raises(ValueError, match="model.net.modalities"):
        get_model("ar5", modalities=["video", "text"])
    with pytest.raises(ValueError, match="needs audio"):
        get_model("ar5")(video=torch.randn(2, 20, 98, 80))


@pytest.mark.parametrize("branch", ["resnet18", "ar1", "inception_v4"])
def test_literature_backbones_as_ar5_video_branch(branch):
    model = get_model("ar5", video_branch=branch)
    assert model(**_inputs()).shape == (2, 6)


def test_ar2_is_small():
    assert sum(p.numel() for p in get_model("ar2").parameters()) < 100_000


def test_ar4_two_stage_training_freezes_the_extractor():
    torch.manual_seed(0)
    model = get_model("ar4", stage="extractor")
    x, y = _inputs(batch=4), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # stage one: extractor (and its linear head) learn
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(**x), y).backward()
        opt.step()
    model.set_stage("classifier")
    model.train()
    assert not model.extractor.training  # frozen batch-norm statistics and dropout
    before = {k: v.clone() for k, v in model.extractor.state_dict().items()}
    clf_before = [p.clone() for p in model.classifier.parameters()]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    assert all(not p.requires_grad for p in model.extractor.parameters())
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(**x), y).backward()
        opt.step()
    after = model.extractor.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and buffers unchanged
    assert any(not torch.equal(a, b) for a, b in zip(clf_before, model.classifier.parameters()))


def test_local_pretrained_weights_adapt_rgb_first_conv(tmp_path):
    torch.manual_seed(1)
    rgb = torchvision.models.resnet18(weights=None)  # an ImageNet-shaped state dict, made here
    torch.save(rgb.state_dict(), tmp_path / "resnet18.pth")
    model = get_model("resnet18", frames=20, pretrained=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.body.layer3[0].conv1.weight, rgb.layer3[0].conv1.weight)
    w = model.body.conv1.weight
    assert w.shape == (64, 20, 7, 7)
    expected = rgb.conv1.weight.mean(1, keepdim=True) * 3 / 20
    assert torch.allclose(w[:, :1], expected) and torch.allclose(w[:, 19:], expected)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        get_model("resnet18", pretrained=str(tmp_path / "missing.pth"))


def test_unknown_model_names_the_key():
    with pytest.raises(ValueError, match="model.net.name='vgg'"):
        get_model("vgg")


def test_models_page_table_matches_the_registry():
    text = MODELS_PAGE.read_text()
    start = text.index("| model | inputs | parameters | MACs per sample |")
    lines = text[start:].splitlines()
    block = "\n".join(lines[: next(i for i, line in enumerate(lines) if not line.startswith("|"))])
    assert block.strip() == markdown_table(model_rows()).strip()
    assert re.findall(r"`(\w+)`", block) == list_models()


def test_ar5_modality_dropout_zeroes_one_branch_in_training_only():
    torch.manual_seed(0)
    model = get_model("ar5", modality_dropout=1.0, video_embed=16, audio_embed=8)
    seen = []
    model.fusion.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    x = _inputs(batch=8)
    model.train()(**x)
    fused = seen[-1]
    video_zero = (fused[:, :16] == 0).all(1)
    audio_zero = (fused[:, 16:] == 0).all(1)
    assert (video_zero ^ audio_zero).all()  # exactly one branch dropped per sample
    model.eval()(**x)
    assert not (seen[-1][:, :16] == 0).all(1).any() and not (seen[-1][:, 16:] == 0).all(1).any()


def test_model_inputs_normalise_frames_and_keep_the_spectrogram_in_float32():
    from fer_mm.models.inputs import ModelInputs

    inputs = ModelInputs(["video", "audio"], frames=4, max_audio_seconds=2.0)
    assert inputs.clip_spec.max_audio_samples == 32_000 and inputs.clip_spec.modalities == ("video", "audio")
    video = torch.tensor([0, 127, 255], dtype=torch.uint8).repeat(2, 4, 1, 1)
    waves, lengths = torch.randn(2, 32_000) * 0.1, torch.tensor([32_000, 20_000])
    batch = {"video": video, "audio": waves, "audio_length": lengths}
    out = inputs(batch)
    assert out["video"].dtype == torch.float32 and out["video"][0, 0, 0].tolist() == [-127 / 128, 0.0, 1.0]
    assert batch["video"].dtype == torch.uint8 and batch["video"][0, 0, 0].tolist() == [0, 127, 255]  # untouched
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = inputs(batch)["audio"]
    assert mixed.dtype == torch.float32 and torch.equal(mixed, out["audio"])  # the same image at any precision
    with pytest.raises(ValueError, match="model.net.modalities"):
        ModelInputs(["text"])
