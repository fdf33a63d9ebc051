"""Heads for the tasks beside emotion (gender, age, action units) on a model's embedding.

:class:`MultiTaskModel` wraps any registered model: its embedding (``forward_head(...,
pre_logits=True)``) feeds the emotion classifier as before and one small head per task. Its
``forward`` keeps the contract every model keeps (emotion logits), so inference and export read
it as any other model; :meth:`MultiTaskModel.forward_tasks` gives every task's output.
"""

from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from fer_mm.models.base import EmotionModel
from fer_mm.vocab import TASKS


def task_outputs(task: str, spec: Mapping | None) -> int:
    """How many numbers a task's head gives: 2 gender logits, 1 age in years, one logit per action unit."""
    if task == "gender":
        return 2
    if task == "age":
        return 1
    if task == "au":
        ids = (spec or {}).get("ids")
        if not ids:
            raise ValueError("model.tasks.au.ids: list the action units to predict, e.g. [1, 2, 4, 6, 12]")
        return len(ids)
    raise ValueError(f"model.tasks.{task}: unknown task; use {list(TASKS)} (and emotion for its loss weight)")


class MultiTaskModel(EmotionModel):
    """``base`` with a head per task on its embedding.

    Args:
        base: any :class:`EmotionModel` (its classifier stays the emotion head).
        tasks: task -> settings (``{"gender": {...}, "age": {...}, "au": {"ids": [1, 2, ...]}}``).
        hidden: width of each head's hidden layer (0: a linear head).
        age_offset: the age head's starting output in years (its bias), so training starts near
            an adult's age rather than at 0.
    """

    def __init__(self, base: EmotionModel, tasks: Mapping[str, Mapping | None], hidden: int = 64,
                 age_offset: float = 35.0):
        super().__init__()
        self.base, self.modalities, self.num_features = base, base.modalities, base.num_features
        self.heads = nn.ModuleDict()
        for task, spec in tasks.items():
            out = task_outputs(task, spec)
            layers = [nn.Linear(self.num_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out)] if hidden \
                else [nn.Linear(self.num_features, out)]
            head = nn.Sequential(*layers)
            if task == "age":
                nn.init.constant_(head[-1].bias, age_offset)
            self.heads[task] = head

    def forward_features(self, video: Tensor | None = None, audio: Tensor | None = None) -> Tensor:
        return self.base.forward_features(video=video, audio=audio)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return self.base.forward_head(x, pre_logits)

    def forward_tasks(self, video: Tensor | None = None, audio: Tensor | None = None) -> dict[str, Tensor]:
        """``emotion`` logits ``[B, C]``, ``gender`` logits ``[B, 2]``, ``age`` in years ``[B]``,
        ``au`` logits ``[B, K]`` (the tasks it has)."""
        x = self.forward_features(video=video, audio=audio)
        embedding = self.base.forward_head(x, pre_logits=True)
        out = {"emotion": self.base.forward_head(x)}
        for task, head in self.heads.items():
            y = head(embedding)
            out[task] = y[:, 0] if task == "age" else y
        return out
