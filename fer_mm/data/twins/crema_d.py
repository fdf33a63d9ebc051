"""Synthetic CREMA-D twin: the release's layout and formats, with learnable emotion cues.

Real CREMA-D cannot be downloaded everywhere fer-mm runs, so tests, the default run and the
benchmarks use this stand-in. It is written exactly as the release is (``VideoFlash/*.flv``
with flv1 video at 480x360/30 fps and an audio track, ``AudioWAV/*.wav`` at 16 kHz mono
16-bit, ``VideoDemographics.csv``, the release's clip names), so real data takes the same
code path.

Content:
- Video: a rendered frontal face per actor (shape, size, skin tone, position, background and
  lighting vary by actor) whose expression is built from the displayed emotion's facial action
  units (AUs) scaled by the intensity, with onset and apex over time, head motion, blinks and
  sensor noise; the mouth opens with the sentence's syllables.
- Audio: a glottal pulse train through three formant resonators, syllable rhythm per sentence,
  with pitch level and range, tempo, loudness, spectral tilt and jitter set by the displayed
  emotion and the intensity, plus background noise.

Difficulty: each clip's voice and face display an emotion drawn from CREMA-D's raters' confusion
matrices mixed with the identity (:mod:`fer_mm.data.twins.displays`); the label stays the acted emotion.
Everything a modality renders depends on the acted emotion only through that modality's display:
- the intensity is set by the level, and an unspecified level (XX) draws one of LO/MD/HI, so the
  strength of an expression says nothing about the acted emotion (in IEO only neutral is at XX);
- the clip's length does not depend on any emotion (the speech sits in a window long enough for
  the slowest voice);
- the voice is timed by the voice's display and the mouth by the face's display: both speak the
  same syllables, each at its own displayed tempo and strength (so they drift apart a little,
  by up to about 3 frames by the end of a slow sentence, even when the displays agree);
- each modality draws from its own random stream.
So the Bayes ceilings that :mod:`fer_mm.data.twins.displays` computes are the best accuracy a model can
expect (given the displays and the clip's actor and sentence).

The rendered cues also confuse different emotions per modality, as human raters do: the face
separates happy from anger and neutral from disgust, but anger/disgust and a weak sad/neutral look
alike; the voice separates sad from neutral and anger from disgust, but happy/anger and fear/happy
sound alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile as sf
from scipy import signal

from fer_mm.data.sources.crema_d import (AUDIO_DIR, AUDIO_EXT, DEMOGRAPHICS_FILE, VIDEO_DIR, VIDEO_EXT, parse_name,
                                           write_demographics)
from fer_mm.data.twins.displays import draw_displays, keyed_rng
from fer_mm.data.twins.spec import DISPLAYS_FILE, GENERATION_KEYS, SPEC_FILE, TWIN_VERSION, read_spec, twin_names, twin_spec
from fer_mm.files import write_atomic
from fer_mm.vocab import AUDIO, MODALITIES, SAMPLE_RATE, VIDEO

FPS = 30
FRAME_W, FRAME_H = 480, 360

# Intensity of the expression / prosody change per level; XX (unspecified) draws one of these.
LEVEL_SCALE = {"LO": 0.45, "MD": 0.7, "HI": 1.0}

# Facial action units per emotion (weights at full intensity).
EMOTION_AUS = {
    "ANG": {4: 1.0, 5: 0.6, 7: 0.8, 23: 0.8},
    "DIS": {9: 1.0, 10: 0.9, 4: 0.3},
    "FEA": {1: 1.0, 2: 0.9, 4: 0.5, 5: 1.0, 20: 0.9, 26: 0.7},
    "HAP": {6: 0.9, 12: 1.0},
    "NEU": {},
    "SAD": {1: 0.8, 4: 0.6, 15: 0.9},
}
AU_IDS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 15, 20, 23, 26)

# Voice per emotion: pitch offset and range (semitones), tempo factor, loudness (dB), spectral
# tilt (+ brighter), jitter (relative per-period F0 perturbation), breathiness (aspiration noise
# relative to the pulses), tremor (semitones of a 5.5 Hz vibrato), pause (silent share of each
# syllable's slot), stress (gain of stressed syllables) and formant (vowel formant factor: a
# smile shortens the vocal tract). The cues are chosen to survive the method's spectrogram
# (linear frequency, whole clip resized to a fixed width), which hides F0 and tempo. The voice tells anger from
# disgust and sad from neutral (which the face confuses) but not anger from happy or happy from
# fear (which the face tells apart).
EMOTION_PROSODY = {
    "ANG": dict(pitch=2.0, range=6.0, tempo=1.15, loud=6.0, tilt=1.4, jitter=0.004, breath=0.02, tremor=0.0,
                pause=0.05, stress=2.2, formant=1.00),
    "DIS": dict(pitch=-2.5, range=2.0, tempo=0.80, loud=0.0, tilt=-1.0, jitter=0.030, breath=0.10, tremor=0.0,
                pause=0.25, stress=1.3, formant=0.96),
    "FEA": dict(pitch=5.0, range=3.0, tempo=1.20, loud=2.0, tilt=0.6, jitter=0.015, breath=0.35, tremor=0.8,
                pause=0.20, stress=1.2, formant=1.05),
    "HAP": dict(pitch=4.0, range=7.0, tempo=1.12, loud=5.0, tilt=1.1, jitter=0.006, breath=0.05, tremor=0.0,
                pause=0.05, stress=1.8, formant=1.08),
    "NEU": dict(pitch=0.0, range=3.0, tempo=1.00, loud=0.0, tilt=0.0, jitter=0.006, breath=0.05, tremor=0.0,
                pause=0.10, stress=1.3, formant=1.00),
    "SAD": dict(pitch=-2.0, range=0.8, tempo=0.75, loud=-5.0, tilt=-1.2, jitter=0.010, breath=0.45, tremor=0.2,
                pause=0.35, stress=1.0, formant=0.95),
}
SYLLABLES_PER_SENTENCE = {
    "DFA": 5, "IEO": 5, "IOM": 8, "ITH": 9, "ITS": 6, "IWL": 8,
    "IWW": 7, "MTI": 8, "TAI": 8, "TIE": 8, "TSI": 5, "WSI": 8,
}
VOWEL_FORMANTS = np.array(  # F1, F2, F3 (Hz) of an adult male voice
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]], dtype=float
)
# Speaking rate relative to the actor's: the slowest a voice gets (sad, at the strongest
# intensity and expressiveness); the speech window is sized for it.
SLOWEST_RATE = 0.6
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


# ---------------------------------------------------------------------------------- audio


def _resonator(freq: float, bandwidth: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.exp(-np.pi * bandwidth / sr)
    theta = 2 * np.pi * freq / sr
    a = np.array([1.0, -2 * r * np.cos(theta), r * r])
    return np.array([a.sum()]), a  # unit gain at DC


def clip_intensity(level: str, rng: np.random.Generator) -> float:
    """Strength of a clip's displays: set by the level; XX draws one of LO/MD/HI (see the module doc)."""
    if level not in LEVEL_SCALE:
        level = ("LO", "MD", "HI")[int(rng.integers(3))]
    return LEVEL_SCALE[level]


@dataclass(frozen=True)
class Utterance:
    """One clip's sentence in time, before any emotion: shared by the voice and the mouth."""

    rel_durations: np.ndarray  # per syllable, mean 1
    vowels: np.ndarray  # index into VOWEL_FORMANTS per syllable
    stress: np.ndarray  # stressed syllables
    rate: float  # syllables per second of this actor and clip, at neutral
    lead: float  # seconds before the first syllable
    total: float  # clip length in seconds: the same whatever the emotions

    @classmethod
    def make(cls, actor: Actor, sentence: str, rng: np.random.Generator) -> "Utterance":
        sent_rng = keyed_rng("sentence", sentence)  # same rhythm and vowels for every actor
        n_syl = SYLLABLES_PER_SENTENCE[sentence]
        rel = sent_rng.uniform(0.6, 1.4, n_syl)
        vowels = sent_rng.integers(0, len(VOWEL_FORMANTS), n_syl)
        stress = sent_rng.random(n_syl) < 0.35
        rate = actor.tempo * rng.uniform(0.93, 1.07)
        lead, tail = rng.uniform(0.2, 0.4), rng.uniform(0.25, 0.45)
        return cls(rel / rel.mean(), vowels, stress, rate, lead, lead + n_syl / (rate * SLOWEST_RATE) + tail)

    def syllables(self, prosody) -> list[tuple[int, int, int, float]]:
        """(start, consonant samples, syllable samples, gain) per syllable, timed by ``prosody`` (a mix function)."""
        rate = self.rate * max(prosody("tempo"), SLOWEST_RATE)
        out, t0 = [], self.lead
        for rel, stressed in zip(self.rel_durations, self.stress):
            duration = rel / rate
            seg_n = int(duration * (1 - prosody("pause")) * SAMPLE_RATE)
            c_n = int(min(0.06, 0.3 * duration) * SAMPLE_RATE)
            out.append((int(t0 * SAMPLE_RATE), c_n, seg_n, prosody("stress") if stressed else 1.0))
            t0 += duration
        return out

    def envelope(self, prosody) -> np.ndarray:
        """Loudness of the vowels per video frame (0..1), timed by ``prosody``: what opens the mouth."""
        n = int(round(self.total * SAMPLE_RATE))
        env = np.zeros(n)
        for start, c_n, seg_n, gain in self.syllables(prosody):
            env[start + c_n : start + seg_n] = _vowel_envelope(seg_n - c_n) * gain
        hop = SAMPLE_RATE / FPS
        frames = np.array([env[int(i * hop) : int((i + 1) * hop)].mean() if int(i * hop) < n else 0.0
                           for i in range(int(round(self.total * FPS)))])
        return np.clip(frames / (frames.max() + 1e-9), 0, 1)


def _vowel_envelope(n: int) -> np.ndarray:
    tt = np.linspace(0, 1, n)
    return np.minimum(1.0, np.minimum(tt / 0.15, (1 - tt) / 0.25).clip(0)) ** 0.7


def prosody_of(emotion: str, strength: float):
    """``mix(key)``: the neutral voice moved toward ``emotion``'s by ``strength``."""
    p, neutral = EMOTION_PROSODY[emotion], EMOTION_PROSODY["NEU"]
    return lambda key: neutral[key] + strength * (p[key] - neutral[key])


def synth_audio(actor: Actor, utterance: Utterance, emotion: str, intensity: float,
                rng: np.random.Generator) -> np.ndarray:
    """A speech-like utterance displaying ``emotion``: float waveform in [-1, 1]."""
    mix = prosody_of(emotion, intensity * actor.expressiveness * rng.uniform(0.85, 1.15))
    n = int(round(utterance.total * SAMPLE_RATE))
    voiced = np.zeros(n)
    frication = np.zeros(n)
    f0_base = actor.f0 * 2 ** (mix("pitch") / 12)
    pitch_range = mix("range")
    syllables = utterance.syllables(mix)
    speech_end = syllables[-1][0] + syllables[-1][2]
    for i, (start, c_n, seg_n, gain) in enumerate(syllables):
        # consonant onset: a short band-limited noise burst
        burst = rng.standard_normal(c_n) * np.hanning(c_n) * 0.15
        frication[start : start + c_n] += signal.lfilter([1, -0.95], [1], burst)
        # vowel: F0 contour (declination + accent + jitter) driving a glottal pulse train
        v_n = seg_n - c_n
        tt = np.linspace(0, 1, v_n)
        declination = -0.25 * pitch_range * (start - syllables[0][0]) / max(speech_end - syllables[0][0], 1)
        accent = (pitch_range if utterance.stress[i] else 0.3 * pitch_range) * np.sin(np.pi * tt)
        jitter = np.repeat(rng.standard_normal(v_n // 80 + 1), 80)[:v_n] * mix("jitter")
        tremor = mix("tremor") * np.sin(2 * np.pi * 5.5 * np.arange(v_n) / SAMPLE_RATE)
        f0 = f0_base * 2 ** ((declination + accent + tremor) / 12) * (1 + jitter)
        phase = np.cumsum(f0 / SAMPLE_RATE) % 1.0
        source = np.where(phase < 0.6, np.sin(np.pi * phase / 0.6) ** 2, 0.0)  # Rosenberg-like pulse
        source = np.diff(source, prepend=source[:1])
        source += max(mix("breath"), 0.0) * 2 * source.std() * rng.standard_normal(v_n)  # aspiration
        tilt = np.clip(0.5 - 0.3 * mix("tilt"), 0.05, 0.95)  # one-pole low-pass: less = brighter
        source = signal.lfilter([1 - tilt], [1, -tilt], source)
        vowel = source
        formants = VOWEL_FORMANTS[utterance.vowels[i]] * actor.formant_scale * mix("formant")
        for formant, bw in zip(formants, (80, 110, 160)):
            b, a = _resonator(formant, bw, SAMPLE_RATE)
            vowel = signal.lfilter(b, a, vowel)
        voiced[start + c_n : start + seg_n] += vowel / (np.abs(vowel).max() + 1e-9) * _vowel_envelope(v_n) * gain

    speech = voiced + frication
    speech *= 10 ** ((mix("loud") - 12 + rng.uniform(-1.5, 1.5)) / 20) / (np.abs(speech).max() + 1e-9)
    noise = rng.standard_normal(n) * 10 ** (actor.noise_db / 20)
    return np.clip(speech + signal.lfilter([1], [1, -0.7], noise) * 0.3, -1, 1).astype(np.float32)


# ---------------------------------------------------------------------------------- video


def _curve(p0, p1, p2, n=12) -> np.ndarray:
    """Quadratic Bezier from p0 to p2 with control p1, as int points."""
    t = np.linspace(0, 1, n)[:, None]
    pts = (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)
    return pts.round().astype(np.int32)


def background(actor: Actor) -> np.ndarray:
    yy, xx = np.mgrid[0:FRAME_H, 0:FRAME_W].astype(np.float32)
    grad = 1 + actor.light[0] * (xx / FRAME_W - 0.5) * 2 + actor.light[1] * (yy / FRAME_H - 0.5) * 2
    img = np.asarray(actor.background, np.float32)[None, None, :] * grad[..., None]
    return img.clip(0, 255).astype(np.uint8)


def render_face(actor: Actor, bg: np.ndarray, aus: dict, mouth_open: float, motion: tuple, blink: float,
                rng: np.random.Generator, asym: float = 0.0) -> np.ndarray:
    """One BGR frame: the actor's face with action unit intensities ``aus`` (0..1).

    ``asym`` (0..1) raises, pulls back and dimples the mouth's right corner only: a one-sided
    AU12/AU14, as contempt shows it.
    """
    img = bg.copy()
    dx, dy, scale = motion
    a = actor.half_width * scale
    b = a * actor.aspect
    cx, cy = actor.center[0] + dx, actor.center[1] + dy
    au = lambda k: float(aus.get(k, 0.0))  # noqa: E731
    dark = tuple(int(c * 0.35) for c in actor.skin)
    shade = tuple(int(c * 0.75) for c in actor.skin)

    cv2.ellipse(img, (int(cx), int(cy - 0.35 * b)), (int(a * 1.08), int(b * 0.8)), 0, 180, 360, actor.hair, -1)
    cv2.rectangle(img, (int(cx - 0.45 * a), int(cy + 0.8 * b)), (int(cx + 0.45 * a), FRAME_H), shade, -1)  # neck
    cv2.ellipse(img, (int(cx), int(cy)), (int(a), int(b)), 0, 0, 360, actor.skin, -1, cv2.LINE_AA)

    eye_y = cy - 0.18 * b
    ex = actor.eye_spacing * a
    # eyes: AU5 raises the upper lid, AU7 tightens, AU6 pushes the cheeks up; blinks close them
    eye_h = 0.11 * a * (1 + 0.9 * au(5) - 0.5 * au(7) - 0.35 * au(6)) * (1 - blink)
    for side in (-1, 1):
        c = (int(cx + side * ex), int(eye_y))
        cv2.ellipse(img, c, (int(0.26 * a), int(0.17 * a)), 0, 0, 360, shade, -1, cv2.LINE_AA)  # socket
        cv2.ellipse(img, c, (int(0.17 * a), max(1, int(eye_h))), 0, 0, 360, (235, 235, 235), -1, cv2.LINE_AA)
        if eye_h > 1.5:
            cv2.circle(img, c, max(1, int(min(0.075 * a, eye_h))), (30, 25, 20), -1, cv2.LINE_AA)
        if au(6) > 0.05:  # raised cheeks
            cv2.ellipse(img, (c[0], int(eye_y + 0.3 * a - 0.1 * a * au(6))), (int(0.22 * a), int(0.08 * a)),
                        0, 180, 360, shade, max(1, int(2 * au(6))), cv2.LINE_AA)
        # brows: AU1 lifts the inner end, AU2 the outer end, AU4 lowers and draws them together
        inner_x = cx + side * (0.18 - 0.08 * au(4)) * a
        outer_x = cx + side * (ex + 0.25 * a)
        base = eye_y - 0.32 * a
        inner_y = base - 0.2 * a * au(1) + 0.16 * a * au(4)
        outer_y = base - 0.2 * a * au(2) + 0.06 * a * au(4)
        mid = ((inner_x + outer_x) / 2, min(inner_y, outer_y) - 0.06 * a)
        cv2.polylines(img, [_curve((inner_x, inner_y), mid, (outer_x, outer_y))], False, dark,
                      max(2, int(0.08 * a)), cv2.LINE_AA)
        if au(4) > 0.2:  # furrow between the brows
            cv2.line(img, (int(cx + side * 0.05 * a), int(base)), (int(cx + side * 0.07 * a), int(base + 0.15 * a)),
                     shade, max(1, int(2 * au(4))), cv2.LINE_AA)

    # nose: AU9 wrinkles the bridge and lifts the nostrils
    nose_y = cy + 0.22 * b - 0.05 * a * au(9)
    cv2.line(img, (int(cx), int(eye_y)), (int(cx + 0.04 * a), int(nose_y)), shade, 2, cv2.LINE_AA)
    for side in (-1, 1):
        cv2.ellipse(img, (int(cx + side * 0.11 * a), int(nose_y)), (int(0.06 * a * (1 + 0.5 * au(9))), int(0.035 * a)),
                    0, 0, 360, dark, -1, cv2.LINE_AA)
    for k in range(int(round(3 * au(9)))):
        y = int(eye_y + (0.12 + 0.07 * k) * a)
        cv2.line(img, (int(cx - 0.1 * a), y), (int(cx + 0.1 * a), y), shade, 2, cv2.LINE_AA)

    # mouth: corners move with AU12 (up/out), AU15 (down), AU20 (stretch), AU23 (tighten);
    # AU10 lifts the upper lip, AU26 and speech open the jaw
    mouth_y = cy + 0.52 * b
    half = actor.mouth_width * a * (1 + 0.25 * au(12) + 0.35 * au(20) - 0.25 * au(23))
    corner_y = mouth_y - 0.18 * a * au(12) + 0.2 * a * au(15)
    opening = 0.03 * a + 0.22 * a * mouth_open * (1 - 0.5 * au(23)) + 0.2 * a * au(26)
    upper = mouth_y - 0.1 * a * au(10) - 0.3 * opening
    lower = mouth_y + 0.7 * opening + 0.08 * a * au(12)
    left, right = (cx - half, corner_y), (cx + half, corner_y)
    if asym:  # skipped at 0, so frames without it stay byte for byte as before
        right = (cx + half + 0.08 * a * asym, corner_y - 0.2 * a * asym)
    top = _curve(left, (cx, upper - 0.05 * a), right)
    bottom = _curve(right, (cx, lower + 0.05 * a), left)
    lips = (int(actor.skin[0] * 0.55), int(actor.skin[1] * 0.5), int(actor.skin[2] * 0.8))
    cv2.fillPoly(img, [np.concatenate([top, bottom])], (25, 20, 35), cv2.LINE_AA)
    thickness = max(1, int(0.06 * a * (1 - 0.6 * au(23))))
    cv2.polylines(img, [top, bottom], False, lips, thickness, cv2.LINE_AA)
    if au(10) > 0.3:  # visible upper teeth
        cv2.polylines(img, [_curve((cx - 0.6 * half, upper + 0.04 * a), (cx, upper + 0.06 * a),
                                   (cx + 0.6 * half, upper + 0.04 * a))], False, (220, 220, 220), 2, cv2.LINE_AA)
    if asym > 0.05:  # the dimple beside the raised corner
        cv2.ellipse(img, (int(right[0] + 0.04 * a), int(right[1] + 0.02 * a)), (int(0.04 * a), int(0.09 * a)),
                    0, -70, 70, shade, max(1, int(3 * asym)), cv2.LINE_AA)

    img = cv2.GaussianBlur(img, (3, 3), 0)
    noise = rng.normal(0, 4.0, img.shape[:2])[..., None]
    return (img + noise).clip(0, 255).astype(np.uint8)


def synth_clip(name: str, actor: Actor, bg: np.ndarray, seed: int, displays: dict[str, str]):
    """Frames (list of BGR images) and the waveform of one clip whose modalities show ``displays``."""
    clip = parse_name(name)
    rng = keyed_rng("clip", seed, name)
    intensity = clip_intensity(clip.level, rng)
    utterance = Utterance.make(actor, clip.sentence, rng)
    # one random stream per modality: what one modality draws never shifts the other's
    wave = synth_audio(actor, utterance, displays[AUDIO], intensity, keyed_rng("clip", seed, name, AUDIO))
    face, rng = displays[VIDEO], keyed_rng("clip", seed, name, VIDEO)
    k = intensity * rng.uniform(0.8, 1.1)
    mouth = utterance.envelope(prosody_of(face, k * actor.expressiveness))
    n_frames = len(mouth)
    target = {au: w * k * actor.au_gain[au] for au, w in EMOTION_AUS[face].items()}
    onset = rng.uniform(0.15, 0.6) * FPS
    rise = rng.uniform(0.2, 0.5) * FPS
    t = np.arange(n_frames)
    temporal = np.clip((t - onset) / rise, 0, 1) * (1 - 0.15 * np.clip((t - onset - rise) / max(n_frames, 1), 0, 1))
    phase = rng.uniform(0, 2 * np.pi, 3)
    freq = rng.uniform(0.2, 0.6, 3)
    blinks = set(rng.choice(n_frames, size=max(1, n_frames // 70), replace=False).tolist())
    frames = []
    for i in range(n_frames):
        s = i / FPS
        motion = (6 * np.sin(2 * np.pi * freq[0] * s + phase[0]), 4 * np.sin(2 * np.pi * freq[1] * s + phase[1]),
                  1 + 0.03 * np.sin(2 * np.pi * freq[2] * s + phase[2]))
        aus = {au: v * temporal[i] for au, v in target.items()}
        blink = 0.9 if (i in blinks or i - 1 in blinks) else 0.0
        frames.append(render_face(actor, bg, aus, mouth[i], motion, blink, rng))
    return frames, wave


def write_flv(path: Path, frames: list[np.ndarray], wave: np.ndarray) -> None:
    """FLV container, flv1 (Sorenson H.263) video at 30 fps with an AAC audio track."""
    with av.open(str(path), mode="w", format="flv") as out:
        vs = out.add_stream("flv", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = FRAME_W, FRAME_H, "yuv420p"
        vs.bit_rate = 900_000
        audio_rate = 22_050
        aus = out.add_stream("aac", rate=audio_rate)
        aus.layout = "mono"
        for img in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        wave22 = signal.resample_poly(wave, audio_rate, SAMPLE_RATE).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(wave22[None, :], format="flt", layout="mono")
        frame.sample_rate = audio_rate
        frame.time_base = Fraction(1, audio_rate)
        frame.pts = 0
        for packet in aus.encode(frame):
            out.mux(packet)
        for packet in aus.encode():
            out.mux(packet)


def _write_one(args: tuple) -> str:
    name, root, seed, displays = args
    clip = parse_name(name)
    actor = Actor.make(clip.actor, seed)
    frames, wave = synth_clip(name, actor, background(actor), seed, displays)
    root = Path(root)
    for folder, ext, write in (
        (AUDIO_DIR, AUDIO_EXT, lambda p: sf.write(p, wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")),
        (VIDEO_DIR, VIDEO_EXT, lambda p: write_flv(p, frames, wave)),
    ):
        write_atomic(root / folder / f"{name}{ext}", write)  # an interrupted run never leaves half a clip
    return name


def generate(out_dir: Path, n_actors: int = 12, n_sentences: int = 4, seed: int = 0, workers: int = 0,
             progress: bool = True, difficulty="published") -> Path:
    """Write the twin under ``out_dir``; clips already there are kept, so a crashed run resumes.

    ``difficulty`` is a preset of :data:`~fer_mm.data.twins.displays.DIFFICULTY_PRESETS` or
    ``{audio: w, video: w}``. A folder that holds another twin is refused.
    """
    from fer_mm.data.parallel import imap_progress

    out_dir = Path(out_dir)
    spec = twin_spec(n_actors, n_sentences, seed, difficulty)
    old = read_spec(out_dir)
    if old is not None and old.get("version") != TWIN_VERSION:
        raise ValueError(f"{out_dir} holds a twin made by another generator (version {old.get('version')}, this one "
                         f"makes {TWIN_VERSION}); generate into another folder or delete it")
    changed = [k for k in GENERATION_KEYS if old is not None and old.get(k) != spec[k]]
    if changed:
        raise ValueError(f"{out_dir} holds another twin ({', '.join(f'{k}: {old.get(k)} there, {spec[k]} asked' for k in changed)}); "
                         f"generate into another folder or delete it")
    names = twin_names(n_actors, n_sentences)
    todo = [n for n in names
            if not ((out_dir / VIDEO_DIR / f"{n}{VIDEO_EXT}").exists() and (out_dir / AUDIO_DIR / f"{n}{AUDIO_EXT}").exists())]
    if old is not None and not todo:  # finished (its spec is written last of the tables): training calls this every run
        return out_dir
    (out_dir / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    actors = sorted({parse_name(n).actor for n in names})
    write_demographics(out_dir / DEMOGRAPHICS_FILE, [vars(Actor.make(a, seed)) for a in actors])
    displays = {n: draw_displays(n, seed, spec["difficulty"]) for n in names}
    write_atomic(out_dir / DISPLAYS_FILE, "name,acted," + ",".join(MODALITIES) + "\n" + "".join(
        f"{n},{parse_name(n).emotion}," + ",".join(displays[n][m] for m in MODALITIES) + "\n" for n in names))
    # the spec first: an interrupted run leaves a folder that says which twin it is
    write_atomic(out_dir / SPEC_FILE, json.dumps(spec, indent=2) + "\n")
    jobs = [(n, str(out_dir), seed, displays[n]) for n in todo]
    for _ in imap_progress(_write_one, jobs, workers, "synthesising clips", progress):
        pass
    return out_dir
