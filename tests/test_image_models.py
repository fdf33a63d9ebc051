"""The face-image CNNs (fer_cnn, mini_xception), ResNet-50 transfer, and local-weight loading."""

from __future__ import annotations

import pytest
import torch
import torchvision

from fer_mm.models import get_model
from fer_mm.models.registry import load_local_weights, strip_wrapper_prefix

NEW = ["fer_cnn", "mini_xception", "resnet50"]
WIDTH = {"fer_cnn": 1024, "mini_xception": 128, "resnet50": 2048}


@pytest.fixture(scope="module")
def rgb_resnet50_file(tmp_path_factory):
    """An ImageNet-shaped ResNet-50 state dict (random weights, made here: nothing downloaded)."""
    torch.manual_seed(3)
    rgb = torchvision.models.resnet50(weights=None)
    path = tmp_path_factory.mktemp("weights") / "resnet50-11ad3fa6.pth"
    torch.save(rgb.state_dict(), path)
    return path, rgb.state_dict()


@pytest.mark.parametrize("shape", [(2, 1, 48, 48), (2, 20, 98, 80)])
@pytest.mark.parametrize("name", NEW)
def test_shapes_embedding_and_split_forward(name, shape):
    torch.manual_seed(0)
    video = torch.randn(*shape)
    model = get_model(name, frames=shape[1], num_classes=7).eval()
    with torch.no_grad():
        assert model(video=video).shape == (2, 7)
        features = model.forward_features(video=video)
        assert features.shape == (2, WIDTH[name]) == (2, model.num_features)
        assert torch.equal(model.forward_head(features, pre_logits=True), features)
        bare = get_model(name, frames=shape[1], num_classes=0).eval()
        assert bare(video=video).shape == (2, WIDTH[name])


def test_mini_xception_is_about_the_papers_size():
    count = sum(p.numel() for p in get_model("mini_xception", frames=1, num_classes=7).parameters())
    assert count == 49_783  # the paper's Keras model: 58,423 with its 3x3 head and the BN statistics
    assert 45_000 < sum(p.numel() for p in get_model("mini_xception", frames=20).parameters()) < 65_000


def test_resnet50_loads_local_torchvision_weights(rgb_resnet50_file):
    path, rgb = rgb_resnet50_file
    torch.manual_seed(0)
    model = get_model("resnet50", frames=20, num_classes=7, pretrained=str(path))
    body = model.body.state_dict()
    expected_conv1 = rgb["conv1.weight"].mean(1, keepdim=True).repeat(1, 20, 1, 1) * 3 / 20
    assert body["conv1.weight"].shape == (64, 20, 7, 7)
    assert torch.allclose(body["conv1.weight"], expected_conv1)
    others = [k for k in rgb if k != "conv1.weight" and not k.startswith("fc.")]
    assert all(torch.equal(body[k], rgb[k]) for k in others)  # weights and BN statistics
    # the 1000-class fc is not loaded: the 7-class head keeps the initialisation it would have without weights
    assert not any(k.startswith("fc.") for k in body)
    torch.manual_seed(0)
    fresh = get_model("resnet50", frames=20, num_classes=7)
    assert model.head[1].weight.shape == (7, 2048)
    assert torch.equal(model.head[1].weight, fresh.head[1].weight)
    assert torch.equal(model.head[1].bias, fresh.head[1].bias)


def test_missing_weights_say_where_they_go(tmp_path):
    missing = tmp_path / "resnet50-11ad3fa6.pth"
    with pytest.raises(FileNotFoundError) as err:
        get_model("resnet50", pretrained=str(missing))
    message = str(err.value)
    assert str(missing) in message and "never downloads" in message and "model.net.pretrained=" in message
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in message
    with pytest.raises(FileNotFoundError, match="model.net.pretrained="):  # generic for every model
        load_local_weights(torch.nn.Linear(2, 2), tmp_path / "x.pth")


def test_the_weight_sources_are_torchvisions():
    from fer_mm.models.resnet import WEIGHT_SOURCES
    from torchvision.models import ResNet18_Weights, ResNet50_Weights

    assert ResNet50_Weights.IMAGENET1K_V2.url in WEIGHT_SOURCES["resnet50"]
    assert ResNet50_Weights.IMAGENET1K_V1.url in WEIGHT_SOURCES["resnet50"]
    assert ResNet18_Weights.IMAGENET1K_V1.url in WEIGHT_SOURCES["resnet18"]


def test_freeze_two_stages(rgb_resnet50_file):
    path, _ = rgb_resnet50_file
    model = get_model("resnet50", frames=1, num_classes=7, pretrained=str(path), freeze=2)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    expected = {n for n, _ in model.named_parameters()
                if n.split(".")[1] in ("conv1", "bn1", "layer1", "layer2") and n.startswith("body.")}
    assert frozen == expected and expected
    model.train()
    for name, module in model.body.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.training == (name.split(".")[0] in ("layer3", "layer4")), name
    assert model.training and model.head.training
    # a training step leaves the frozen stages, running statistics included, unchanged
    before = {k: v.clone() for k, v in model.body.layer2.state_dict().items()}
    bn1_mean = model.body.bn1.running_mean.clone()
    model(video=torch.randn(2, 1, 48, 48)).sum().backward()
    assert all(torch.equal(before[k], v) for k, v in model.body.layer2.state_dict().items())
    assert torch.equal(bn1_mean, model.body.bn1.running_mean)
    assert model.body.layer3[0].conv1.weight.grad is not None and model.body.layer2[0].conv1.weight.grad is None
    with pytest.raises(ValueError, match="model.net.freeze"):
        get_model("resnet50", freeze=5)


@pytest.mark.parametrize("prefix", ["module.", "model.", "net.body.", "module.body."])
def test_wrapped_state_dicts_load(prefix, tmp_path):
    torch.manual_seed(2)
    rgb = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "wrapped.pth"
    wrapped = {prefix + k: v for k, v in rgb.items()}
    torch.save({"state_dict": wrapped} if prefix.startswith("net.") else wrapped, path)  # Lightning / plain
    model = get_model("resnet18", frames=1, pretrained=str(path))
    assert torch.equal(model.body.layer4[1].conv2.weight, rgb["layer4.1.conv2.weight"])
    assert torch.allclose(model.body.conv1.weight, rgb["conv1.weight"].mean(1, keepdim=True) * 3)


def test_a_fer_mm_checkpoint_loads_into_a_new_model(tmp_path):
    """``net.body.`` of a training checkpoint: the other tensors (head, system) are left out."""
    torch.manual_seed(4)
    trained = get_model("resnet18", frames=20, num_classes=6)
    state = {f"net.{k}": v for k, v in trained.state_dict().items()}
    state["inputs.frontend.window"] = torch.ones(4)  # a system buffer that is no part of the network
    torch.save({"state_dict": state, "hyper_parameters": {}}, tmp_path / "best.ckpt")
    model = get_model("resnet18", frames=20, num_classes=3, pretrained=str(tmp_path / "best.ckpt"))
    assert all(torch.equal(v, trained.body.state_dict()[k]) for k, v in model.body.state_dict().items())


def test_strip_wrapper_prefix_keeps_matching_keys_and_ignores_inner_names():
    own = {"conv1.weight", "layer1.0.conv1.weight"}
    state = {"conv1.weight": 1, "layer1.0.conv1.weight": 2}
    assert strip_wrapper_prefix(state, own) == (state, "")
    # only wrapper names are removed: "layer1.0." is part of the architecture, not a wrapper
    assert strip_wrapper_prefix({"layer1.0.conv1.weight": 2}, {"conv1.weight"})[1] == ""
    stripped, prefix = strip_wrapper_prefix({"module.conv1.weight": 1, "module.layer1.0.conv1.weight": 2}, own)
    assert prefix == "module." and stripped == state


def test_resnet18_keeps_its_state_dict_keys():
    keys = list(get_model("resnet18", frames=20).state_dict())
    tv = [f"body.{k}" for k in torchvision.models.resnet18(weights=None).state_dict() if not k.startswith("fc.")]
    assert keys == tv + ["head.1.weight", "head.1.bias"]
    assert keys[:2] == ["body.conv1.weight", "body.bn1.weight"] and "body.layer1.0.conv1.weight" in keys
    assert sum(p.numel() for p in get_model("resnet18").parameters()) == 11_232_902  # as in the table of docs/models.md
