"""The losses the system trains with: emotion cross-entropy (label smoothing, unlabelled clips,
mixup's two targets), each other task's loss over the clips whose target is known, and mixup."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def emotion_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None,
                 smoothing: float = 0.0, mix: tuple | None = None) -> torch.Tensor:
    """Cross-entropy over the clips with a label (-1: none; where every sample of a batch lacks one
    the mean is 0 / 0, made 0, its gradient being 0 already); with mixup's ``(lam, order)``, the
    two targets weighed by ``lam`` and ``1 - lam``."""

    def ce(target: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(F.cross_entropy(logits, target, weight=weight, ignore_index=-1,
                                                label_smoothing=smoothing), nan=0.0)

    if mix is None:
        return ce(labels)
    lam, order = mix
    return lam * ce(labels) + (1 - lam) * ce(labels[order])


def mixup(inputs: dict[str, torch.Tensor], alpha: float, batch: int,
          device: torch.device) -> tuple[dict[str, torch.Tensor], tuple[float, torch.Tensor]]:
    """Mixup (Zhang et al. 2018): every input mixed with a shuffled copy of the batch by ``lam`` drawn
    from Beta(alpha, alpha) (on the host: no sync); returns the mixed inputs and ``(lam, order)``."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    order = torch.randperm(batch, device=device)
    return {m: lam * x + (1 - lam) * x[order] for m, x in inputs.items()}, (lam, order)


def task_loss(task: str, output: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None = None,
               groups=None, age_loss: str = "l1") -> torch.Tensor:
    """A task's mean loss over the clips whose target is known (-1 gender, NaN age or action unit:
    unknown); masked rather than indexed, so the device never waits on the host. Age: L1 or squared
    error in years, or with ``groups`` (:class:`~fer_mm.models.multitask.AgeGroups`) a cross-entropy
    over the age's group."""
    if task == "gender":
        known = target >= 0
        each = F.cross_entropy(output.float(), target.clamp(min=0), reduction="none")
    elif task == "age" and groups is not None:
        known = ~torch.isnan(target)
        each = F.cross_entropy(output.float(), groups.index(target), reduction="none")
    else:
        known = ~torch.isnan(target)
        safe = torch.where(known, target, torch.zeros_like(target))
        if task == "age":
            each = F.l1_loss(output.float(), safe, reduction="none") if age_loss == "l1" else \
                F.mse_loss(output.float(), safe, reduction="none")
        else:
            each = F.binary_cross_entropy_with_logits(output.float(), safe, reduction="none", pos_weight=pos_weight)
    return (each * known).sum() / known.sum().clamp(min=1)
