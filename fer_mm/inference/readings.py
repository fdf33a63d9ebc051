"""What a trained model reads of a face: its network's outputs as readings, one item's or a mean of
several, and the same readings smoothed over time.

A model's readings (:func:`read_outputs`), each where the model has the task:

- ``emotion``: the emotion probabilities ``[N, C]`` (softmax of the emotion logits, as
  ``predictions.csv`` of training);
- ``p_male``: the probability that the face is male ``[N]`` (softmax of the gender logits, index 1 of
  :data:`~fer_mm.vocab.GENDER_NAMES`);
- ``age``: the age in years ``[N]``: the regression's value, or for a model trained on age groups
  the probability-weighted mean of the groups' centres (the expected age, which moves smoothly
  with the probabilities, unlike the centre of the most probable group that training's MAE uses);
- ``age_group_probs``: for age groups, each group's probability ``[N, G]``.

:class:`Smoother` averages a face's readings over time (an exponential moving average with a time
constant in seconds): a file's timeline and a live source both go through it.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from torch import Tensor, nn

from fer_mm.models.multitask import AgeGroups, MultiTaskModel
from fer_mm.vocab import AUDIO, GENDER_NAMES, VIDEO

READ_TASKS = ("gender", "age")  # the tasks beside emotion that inference reads
ONNX_OUTPUTS = {"emotion": "logits", "gender": "gender", "age": "age"}  # task -> the exported model's output
MALE = GENDER_NAMES.index("male")
DEFAULT_SMOOTHING = 2.0  # seconds: the time constant of the readings' moving average (0: none)


def read_tasks(tasks: Mapping | None) -> dict[str, dict]:
    """The tasks of a checkpoint's ``tasks`` hyper-parameter that inference reads (gender, age), with
    their settings (the age groups)."""
    return {task: dict(spec or {}) for task, spec in (tasks or {}).items() if task in READ_TASKS}


def network_outputs(net: nn.Module, video: Tensor | None = None, audio: Tensor | None = None) -> dict[str, Tensor]:
    """The network's outputs by task: ``emotion`` logits, and ``gender`` / ``age`` (and any other
    task head) for a :class:`~fer_mm.models.multitask.MultiTaskModel`."""
    inputs = {k: v for k, v in ((VIDEO, video), (AUDIO, audio)) if v is not None}
    if isinstance(net, MultiTaskModel):
        return net.forward_tasks(**inputs)
    return {"emotion": net(**inputs)}


def _softmax(logits: Tensor) -> np.ndarray:
    return logits.float().softmax(1).cpu().numpy()  # as EmotionSystem.test_step makes predictions.csv


def read_outputs(outputs: Mapping[str, Tensor], class_names: list[str],
                 age_groups: AgeGroups | None) -> dict[str, np.ndarray]:
    """A batch's network outputs -> its readings (see the module's docstring)."""
    out = {}
    if "emotion" in outputs and class_names:
        out["emotion"] = _softmax(outputs["emotion"])
    if "gender" in outputs:
        out["p_male"] = _softmax(outputs["gender"])[:, MALE]
    if "age" in outputs:
        if age_groups is None:
            out["age"] = outputs["age"].float().reshape(-1).cpu().numpy()
        else:
            probs = _softmax(outputs["age"])
            out["age_group_probs"] = probs
            out["age"] = probs @ np.asarray(age_groups.centres, dtype=np.float32)
    return out


def reading_of(readings: Mapping[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """Item ``i``'s readings (an emotion probability vector, a P(male), an age, ...)."""
    return {name: np.asarray(values[i]) for name, values in readings.items()}


def mean_reading(readings: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The mean of several items' readings (a file's windows or frames)."""
    return {name: np.mean([r[name] for r in readings], axis=0) for name in readings[0]}


class Smoother:
    """An exponential moving average of one face's readings over time.

    Each reading at ``t`` seconds moves the state towards it by ``alpha = 1 - exp(-dt / tau)``, with
    ``dt`` the seconds since the previous reading: readings at irregular times weigh by the time
    they cover, and after a gap the next reading counts for more. The first reading is the state;
    ``tau=0`` turns smoothing off (the state is the latest reading). A time without a reading
    (``None``: no face in that window) leaves the state as it is. On white noise at a steady
    ``dt``, the state's standard deviation is ``sqrt(alpha / (2 - alpha))`` times the readings'
    (:func:`noise_factor`).

    Args:
        tau: the time constant in seconds (``smoothing=``), 0 or more.
    """

    def __init__(self, tau: float = DEFAULT_SMOOTHING):
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau >= 0:
            raise ValueError(f"smoothing={tau!r}: seconds (the time constant of the moving average), 0 for none")
        self.tau = float(tau)
        self.state: dict[str, np.ndarray] | None = None
        self.t: float | None = None

    def alpha(self, dt: float) -> float:
        """How far a reading ``dt`` seconds after the previous one moves the state."""
        if self.tau == 0:
            return 1.0
        return 1.0 - math.exp(-max(dt, 0.0) / self.tau)

    def __call__(self, t: float, reading: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
        """The smoothed readings after the reading at ``t`` seconds (None: before any reading)."""
        if reading is not None:
            if self.state is None:
                self.state = {k: np.array(v, dtype=np.float64) for k, v in reading.items()}
            else:
                a = self.alpha(t - self.t)
                self.state = {k: s + a * (np.asarray(reading[k], dtype=np.float64) - s) for k, s in self.state.items()}
            self.t = t
        return None if self.state is None else {k: v.copy() for k, v in self.state.items()}


def noise_factor(tau: float, dt: float) -> float:
    """The ratio of the smoothed to the raw readings' standard deviation on white noise read every
    ``dt`` seconds: ``sqrt(alpha / (2 - alpha))``."""
    a = Smoother(tau).alpha(dt)
    return math.sqrt(a / (2 - a))


def window_time(window: Mapping) -> float:
    """A window's time on the timeline: its centre (a frame's: its time)."""
    return (window["start"] + window["end"]) / 2


def smooth_windows(windows: list[dict], smoother: Smoother) -> list[dict]:
    """Each window's (or frame's) ``smoothed`` readings, in time order; a window without a reading
    gets none and leaves the state as it is."""
    for w in windows:
        smoothed = smoother(window_time(w), w.get("reading"))
        if "reading" in w:
            w["smoothed"] = smoothed
    return windows
