"""The twin's actors: who each one is, and what of their face and voice stays the same across their clips.

Drawn from the twin's seed and the actor's number alone, so any clip can be made without the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from fer_mm.data.twins.displays import keyed_rng

AU_IDS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 20, 23, 26)  # what the face renders; each actor has a gain per AU
RACES = ("Caucasian", "African American", "Asian", "Unknown")
ETHNICITIES = ("Not Hispanic", "Hispanic")


@dataclass(frozen=True)
class Actor:
    """Everything about one synthetic actor that stays the same across their clips."""

    actor: int
    sex: str
    age: int
    race: str
    ethnicity: str
    # face
    center: tuple[float, float]
    half_width: float
    aspect: float
    skin: tuple[int, int, int]
    background: tuple[int, int, int]
    light: tuple[float, float]  # gradient direction (x, y) * strength
    hair: tuple[int, int, int]
    eye_spacing: float
    mouth_width: float
    au_gain: dict
    # voice
    f0: float
    formant_scale: float
    tempo: float
    expressiveness: float
    noise_db: float

    @classmethod
    def make(cls, actor: int, seed: int) -> "Actor":
        r = keyed_rng("actor", seed, actor)
        sex = "Female" if r.random() < 0.48 else "Male"
        skin_v = r.uniform(90, 225)
        tint = r.uniform(0.75, 0.95)
        return cls(
            actor=actor,
            sex=sex,
            age=int(r.integers(20, 75)),
            race=str(r.choice(RACES, p=[0.6, 0.25, 0.1, 0.05])),
            ethnicity=str(r.choice(ETHNICITIES, p=[0.87, 0.13])),
            center=(r.uniform(200, 280), r.uniform(160, 195)),
            half_width=r.uniform(52, 70),
            aspect=r.uniform(1.25, 1.42),
            skin=(int(skin_v * tint * 0.9), int(skin_v * tint), int(skin_v)),  # BGR
            background=tuple(int(v) for v in r.uniform(30, 200, 3)),
            light=tuple(r.uniform(-0.25, 0.25, 2)),
            hair=tuple(int(v) for v in r.uniform(10, 70, 3)),
            eye_spacing=r.uniform(0.36, 0.44),
            mouth_width=r.uniform(0.34, 0.44),
            au_gain={au: float(r.uniform(0.55, 1.3)) for au in AU_IDS},
            f0=float(r.uniform(185, 235) if sex == "Female" else r.uniform(95, 140)),
            formant_scale=float(r.uniform(1.1, 1.2) if sex == "Female" else r.uniform(0.95, 1.05)),
            tempo=float(r.uniform(3.9, 4.5)),
            expressiveness=float(r.uniform(0.8, 1.2)),
            noise_db=float(r.uniform(-42, -30)),
        )
