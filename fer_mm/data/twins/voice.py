"""The twin's audio: speech-like utterances whose prosody displays an emotion.

A glottal pulse train through three formant resonators, with the sentence's syllable rhythm; pitch
level and range, tempo, loudness, spectral tilt, jitter, breathiness and tremor are set by the
displayed emotion and the intensity, plus background noise. The sentence's timing
(:class:`Utterance`) is shared with the face, whose mouth opens with the syllables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from fer_mm.data.twins.actors import Actor
from fer_mm.data.twins.displays import keyed_rng
from fer_mm.data.twins.face import FPS
from fer_mm.vocab import SAMPLE_RATE

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


def _resonator(freq: float, bandwidth: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.exp(-np.pi * bandwidth / sr)
    theta = 2 * np.pi * freq / sr
    a = np.array([1.0, -2 * r * np.cos(theta), r * r])
    return np.array([a.sum()]), a  # unit gain at DC

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
