"""Name -> builder registry (as timm's ``@register_model``), and local-weight loading."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn

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


def load_local_weights(model: nn.Module, path: str | Path, first_conv: str | None = None) -> nn.Module:
    """Load a user-supplied state dict (never downloaded) into ``model``.

    A first convolution saved for another number of input channels (e.g. RGB weights for
    T stacked gray frames) is adapted by averaging over channels and repeating, as timm does;
    tensors whose shape still differs (a classifier for other classes) are left at their
    initial values and listed in the log.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path} (fer-mm never downloads weights)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    own = model.state_dict()
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
    log.info("loaded %s: %d tensors; shape mismatch (kept initial): %s; missing: %s; unexpected: %s",
             path, len(state) - len(unexpected), skipped, list(missing), list(unexpected))
    return model
