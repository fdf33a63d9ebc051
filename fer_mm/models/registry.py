"""Name -> builder registry (as timm's ``@register_model``), and local-weight loading."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from fer_mm.vocab import ordered_modalities

log = logging.getLogger(__name__)
_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; unknown names and arguments are named in the error."""
    if name not in _MODELS:
        raise ValueError(f"model.net.name={name!r} is not registered; choose one of {list_models()}")
    try:
        return _MODELS[name](**kwargs)
    except TypeError as err:
        raise TypeError(f"model {name!r}: {err}") from err


def modality_argument(name: str) -> str:
    """The builder's argument that picks what it reads: ``modalities`` (AR5) or ``modality`` (the others)."""
    if name not in _MODELS:
        raise ValueError(f"model.net.name={name!r} is not registered; choose one of {list_models()}")
    return "modalities" if "modalities" in inspect.signature(_MODELS[name]).parameters else "modality"


def model_modalities(name: str, **kwargs) -> tuple[str, ...]:
    """What a registered model built with ``kwargs`` reads, from its builder's arguments and their
    defaults, without building it: a config is checked against its data before any weights exist."""
    key = modality_argument(name)
    given = kwargs.get(key, inspect.signature(_MODELS[name]).parameters[key].default)
    return ordered_modalities([given] if key == "modality" else given, f"model.net.{key}")


# wrappers whose names lead the keys of saved state dicts: DataParallel/DDP (module.), Lightning and
# other trainers (model., net.), torch.compile (_orig_mod.), fer-mm's backbones (body.)
_WRAPPERS = ("module", "model", "net", "_orig_mod", "body")


def strip_wrapper_prefix(state: dict, own_keys) -> tuple[dict, str]:
    """The tensors of ``state`` under the wrapper prefix (``module.``, ``net.body.``, ...) that names the
    most of ``own_keys``, with that prefix removed; ``state`` itself when no prefix names more than the
    keys as they are. Returns the state and the prefix it removed ("" for none)."""
    own = set(own_keys)
    hits: dict[str, int] = {"": len(own & state.keys())}
    for key in state:
        parts = key.split(".")
        for i in range(1, len(parts)):
            if parts[i - 1] not in _WRAPPERS:
                break
            if ".".join(parts[i:]) in own:
                prefix = ".".join(parts[:i]) + "."
                hits[prefix] = hits.get(prefix, 0) + 1
    prefix = max(hits, key=lambda p: (hits[p], p == ""))
    if not prefix:
        return state, ""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, prefix


def load_local_weights(model: nn.Module, path: str | Path, first_conv: str | None = None,
                       source: str | None = None) -> nn.Module:
    """Load a user-supplied state dict (never downloaded) into ``model``.

    The file may hold a plain state dict or a checkpoint with one under ``state_dict`` (Lightning);
    keys saved under a wrapper (``module.`` from DataParallel, ``model.``/``net.`` from a trainer,
    ``net.body.`` from a fer-mm checkpoint) are matched with the prefix removed.
    A first convolution saved for another number of input channels (e.g. RGB weights for
    T stacked gray frames) is adapted by averaging over channels and repeating, as timm does;
    tensors whose shape still differs (a classifier for other classes) are left at their
    initial values and listed in the log.

    Args:
        model: the module whose ``state_dict`` names the file's tensors.
        path: the file (``torch.save`` of a state dict).
        first_conv: name of the first convolution, adapted to the model's input channels.
        source: where to get such weights, for the error when the file is missing
            (e.g. "torchvision's ResNet-50 ImageNet weights (https://...)").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights not found: {path}. fer-mm never downloads weights: fetch "
            f"{source or 'the weights (a state dict saved with torch.save)'} on a machine with network access and "
            f"pass its path as model.net.pretrained=PATH")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    own = model.state_dict()
    state, prefix = strip_wrapper_prefix(state, own)
    if first_conv and f"{first_conv}.weight" in state and f"{first_conv}.weight" in own:
        w, target = state[f"{first_conv}.weight"], own[f"{first_conv}.weight"]
        if w.shape[1] != target.shape[1] and w.shape[0] == target.shape[0]:
            state[f"{first_conv}.weight"] = w.mean(1, keepdim=True).repeat(1, target.shape[1], *[1] * (w.dim() - 2)) \
                * w.shape[1] / target.shape[1]
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if not set(state) & set(own):
        raise ValueError(f"{path}: none of its tensors match the model; is it the right architecture?")
    log.info("loaded %s%s: %d tensors; shape mismatch (kept initial): %s; missing: %s; unexpected: %s",
             path, f" (keys under {prefix!r})" if prefix else "", len(state) - len(unexpected), skipped,
             list(missing), list(unexpected))
    return model
