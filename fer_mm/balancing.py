"""Modality balancing for fused models (``model.balance``): the dominant branch is held back so that
the weaker one keeps learning.

Both methods read the same signal, each branch's confidence in the true class inside the fused
model (its own logits, :meth:`~fer_mm.models.fusion.FusionModel.branch_logits`), summed over a
batch: ``s_m = sum_i softmax(z_m,i)[y_i]``, and its discrepancy ratio ``rho_m = s_m / s_other``.

- ``ogm`` / ``ogm_ge``: on-the-fly gradient modulation (Peng et al., CVPR 2022). After the
  backward pass, the gradients of the dominant branch (``rho_m > 1``) are scaled by
  ``k_m = 1 - tanh(alpha * rho_m)``; the other branch's stay as they are (``k = 1``). With
  generalisation enhancement (``ogm_ge``), Gaussian noise with the standard deviation of each
  unscaled gradient tensor is added to the modulated gradients. (The authors' public code adds
  that noise to both branches; here only where the gradient was scaled down, so the weaker
  branch's update is exactly the plain one.)
- ``opm``: on-the-fly prediction modulation (Wei et al., TPAMI 2024) holds the dominant branch
  back in the forward pass instead: each sample's embedding of the dominant modality is zeroed
  with probability ``p_m = tanh(alpha * (rho_m - 1))`` (``rho_m > 1``), from the previous
  training step's ratio. This probability schedule is fer-mm's (0 when balanced, rising with the
  discrepancy); the paper's idea, not its exact formula. Chosen as the second method because it
  acts where OGM does not (the forward pass, not the optimiser), needs no extra parameters, and so
  works the same with any fusion (concatenation, late, cross-attention).

The ratios and coefficients stay tensors on the device: no step waits on the host.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import Tensor

BALANCE_METHODS = ("none", "ogm", "ogm_ge", "opm")
DEFAULT_ALPHA = {"ogm": 0.5, "ogm_ge": 0.5, "opm": 1.0}


def check_method(method: str) -> str:
    if method not in BALANCE_METHODS:
        raise ValueError(f"model.balance={method!r}: use one of {list(BALANCE_METHODS)}")
    return method


def branch_scores(branch_logits: Mapping[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
    """``s_m``: each branch's summed softmax probability of the true class (clips labelled -1 count 0)."""
    known = labels >= 0
    target = labels.clamp(min=0)[:, None]
    return {m: (z.detach().float().softmax(1).gather(1, target)[:, 0] * known).sum() for m, z in branch_logits.items()}


def discrepancy(scores: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``rho_m = s_m / s_other`` for two branches."""
    if len(scores) != 2:
        raise ValueError(f"modality balancing compares two branches, got {list(scores)}")
    (a, sa), (b, sb) = scores.items()
    eps = 1e-8
    return {a: sa / (sb + eps), b: sb / (sa + eps)}


def ogm_coefficients(scores: Mapping[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """OGM's ``k_m``: ``1 - tanh(alpha * rho_m)`` for the dominant branch (``rho_m > 1``), 1 for the other."""
    return {m: torch.where(r > 1, 1 - torch.tanh(alpha * r), torch.ones_like(r))
            for m, r in discrepancy(scores).items()}


def modulate_gradients(parameters: Mapping[str, Iterable[torch.nn.Parameter]], coefficients: Mapping[str, Tensor],
                       noise: bool = False) -> None:
    """Scale each branch's gradients in place by its coefficient; with ``noise`` (generalisation
    enhancement) add ``N(0, std(g))`` to each tensor whose coefficient is below 1."""
    for modality, params in parameters.items():
        k = coefficients[modality]
        for p in params:
            if p.grad is None:
                continue
            g = p.grad
            if noise:
                std = g.std() if g.numel() > 1 else torch.zeros((), device=g.device, dtype=g.dtype)
                extra = torch.randn_like(g) * (std + 1e-8) * (k < 1).to(g.dtype)
                g.mul_(k.to(g.dtype)).add_(extra)
            else:
                g.mul_(k.to(g.dtype))


def opm_drop_probabilities(ratios: Mapping[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """OPM's ``p_m = tanh(alpha * (rho_m - 1))`` where ``rho_m > 1``, else 0."""
    return {m: torch.tanh(alpha * (r - 1).clamp(min=0)) for m, r in ratios.items()}


def opm_keep(probabilities: Mapping[str, Tensor], batch: int, device: torch.device) -> dict[str, Tensor]:
    """Per-sample keep masks (1 keep, 0 drop) of each modality, drawn with its drop probability."""
    return {m: (torch.rand(batch, device=device) >= p.to(device)).float() for m, p in probabilities.items()}
