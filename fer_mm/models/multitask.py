"""Heads for the tasks beside emotion (gender, age, action units) on a model's embedding.

:class:`MultiTaskModel` wraps any registered model: its embedding (``forward_head(...,
pre_logits=True)``) feeds the emotion classifier as before and one small head per task. Its
``forward`` keeps the contract every model keeps (emotion logits), so inference and export read
it as any other model; :meth:`MultiTaskModel.forward_tasks` gives every task's output.

Age is learnt one of two ways (``model.tasks.age``):

- regression (the default): one output, in years, with an L1 (``loss: l1``) or squared
  (``loss: mse``) loss;
- age groups (``groups: [0, 5, 10, ...]``, the groups' lower bounds in years, the last one open):
  one logit per group and a cross-entropy loss. A group's age in years, where one is needed (the
  MAE, a live reading), is its centre (:class:`AgeGroups`).

A model without an emotion classifier (``num_classes: 0``: data with no emotion labels, such as
UTKFace or IMDB-WIKI alone) learns only its tasks; its ``forward_tasks`` has no ``emotion``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from fer_mm.models.base import EmotionModel
from fer_mm.vocab import TASKS

AGE_LOSSES = ("l1", "mse")


class AgeGroups:
    """Age groups from their lower bounds in years (``[0, 5, 10, ...]``: 0-4, 5-9, ..., the last open).

    A group's centre is the middle of its years; the last, open one's is its bound plus half the
    width of the group before it."""

    def __init__(self, bounds: Sequence[float]):
        bounds = [float(b) for b in bounds]
        if len(bounds) < 2 or any(b >= c for b, c in zip(bounds, bounds[1:])) or bounds[0] < 0:
            raise ValueError(f"model.tasks.age.groups={bounds}: give at least two increasing lower bounds in years, "
                             f"from 0 or more (e.g. [0, 5, 10, 15])")
        self.bounds = bounds
        widths = [c - b for b, c in zip(bounds, bounds[1:])]
        self.centres = [b + w / 2 for b, w in zip(bounds, widths)] + [bounds[-1] + widths[-1] / 2]

    def __len__(self) -> int:
        return len(self.bounds)

    @property
    def names(self) -> list[str]:
        """``0-4``, ``5-9``, ..., ``90+`` (whole years where the bounds are whole)."""
        def years(v: float) -> str:
            return f"{v:g}"
        inner = [f"{years(b)}-{years(c - 1) if float(c).is_integer() and float(b).is_integer() else years(c)}"
                 for b, c in zip(self.bounds, self.bounds[1:])]
        return inner + [f"{years(self.bounds[-1])}+"]

    def index(self, age: Tensor) -> Tensor:
        """Each age's group (int64; unknown ages, NaN, give group 0: mask them)."""
        bounds = torch.tensor(self.bounds[1:], dtype=age.dtype, device=age.device)
        return torch.bucketize(torch.nan_to_num(age, nan=0.0), bounds, right=True)

    def years(self, group: Tensor) -> Tensor:
        """The centre of each group index, in years (float32)."""
        return torch.tensor(self.centres, dtype=torch.float32, device=group.device)[group]


def age_groups(spec: Mapping | None) -> AgeGroups | None:
    """The age task's groups, or None where age is a regression."""
    groups = (spec or {}).get("groups")
    return AgeGroups(groups) if groups else None


def age_loss(spec: Mapping | None) -> str:
    """The age regression's loss: ``l1`` (default) or ``mse``."""
    loss = (spec or {}).get("loss", "l1")
    if loss not in AGE_LOSSES:
        raise ValueError(f"model.tasks.age.loss={loss!r}: use one of {list(AGE_LOSSES)}")
    return loss


def task_outputs(task: str, spec: Mapping | None) -> int:
    """How many numbers a task's head gives: 2 gender logits, 1 age in years (or one logit per age
    group), one logit per action unit."""
    if task == "gender":
        return 2
    if task == "age":
        age_loss(spec)
        groups = age_groups(spec)
        return len(groups) if groups else 1
    if task == "au":
        ids = (spec or {}).get("ids")
        if not ids:
            raise ValueError("model.tasks.au.ids: list the action units to predict, e.g. [1, 2, 4, 6, 12]")
        return len(ids)
    raise ValueError(f"model.tasks.{task}: unknown task; use {list(TASKS)} (and emotion for its loss weight)")


def age_years(output: Tensor, groups: AgeGroups | None) -> Tensor:
    """The age head's output in years ``[B]``: the regression's value, or the centre of the most
    probable group."""
    return output if groups is None else groups.years(output.argmax(1))


class MultiTaskModel(EmotionModel):
    """``base`` with a head per task on its embedding.

    Args:
        base: any :class:`EmotionModel` (its classifier stays the emotion head; ``num_classes=0``
            built it without one, and then there is no emotion output).
        tasks: task -> settings (``{"gender": {...}, "age": {"groups": [...]}, "au": {"ids": [1, 2, ...]}}``).
        hidden: width of each head's hidden layer (0: a linear head).
        age_offset: the age regression's starting output in years (its bias), so training starts
            near an adult's age rather than at 0.
        emotion: whether ``base`` has an emotion classifier.
    """

    def __init__(self, base: EmotionModel, tasks: Mapping[str, Mapping | None], hidden: int = 64,
                 age_offset: float = 35.0, emotion: bool = True):
        super().__init__()
        self.base, self.modalities, self.num_features = base, base.modalities, base.num_features
        self.emotion = emotion
        self.heads = nn.ModuleDict()
        self.age_groups = age_groups(tasks.get("age")) if "age" in tasks else None
        for task, spec in tasks.items():
            out = task_outputs(task, spec)
            layers = [nn.Linear(self.num_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out)] if hidden \
                else [nn.Linear(self.num_features, out)]
            head = nn.Sequential(*layers)
            if task == "age" and self.age_groups is None:
                nn.init.constant_(head[-1].bias, age_offset)
            self.heads[task] = head

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        return self.base.forward_features(video=video, audio=audio)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.base.forward_head(x, pre_logits)

    def forward_tasks(self, video: Tensor | None = None, audio: Tensor | None = None) -> dict[str, Tensor]:
        """``emotion`` logits ``[B, C]`` (where the model has an emotion classifier), ``gender`` logits
        ``[B, 2]``, ``age`` in years ``[B]`` (with age groups: a logit per group, ``[B, G]``), ``au``
        logits ``[B, K]`` (the tasks it has)."""
        return self.task_outputs(self.forward_features(video=video, audio=audio))

    def task_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """:meth:`forward_tasks` from the base model's features ``x`` (``forward_features``' output)."""
        embedding = self.base.forward_head(x, pre_logits=True)
        out = {"emotion": self.base.forward_head(x)} if self.emotion else {}
        for task, head in self.heads.items():
            y = head(embedding)
            out[task] = y[:, 0] if task == "age" and self.age_groups is None else y
        return out
