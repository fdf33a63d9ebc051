"""Synthetic CREMA-D twin: the release's layout and formats, with learnable emotion cues.

Real CREMA-D cannot be downloaded everywhere fer-mm runs, so tests, the default run and the
benchmarks use this stand-in. It is written exactly as the release is (``VideoFlash/*.flv``
with flv1 video at 480x360/30 fps and an audio track, ``AudioWAV/*.wav`` at 16 kHz mono
16-bit, ``VideoDemographics.csv``, the release's clip names), so real data takes the same
code path.

Content:
- Video (:mod:`fer_mm.data.twins.face`): a rendered frontal face per actor (shape, size, skin tone,
  position, background and lighting vary by actor, :mod:`fer_mm.data.twins.actors`) whose expression
  is built from the displayed emotion's facial action units (AUs) scaled by the intensity, with onset
  and apex over time, head motion, blinks and sensor noise; the mouth opens with the sentence's syllables.
- Audio (:mod:`fer_mm.data.twins.voice`): a glottal pulse train through three formant resonators,
  syllable rhythm per sentence, with pitch level and range, tempo, loudness, spectral tilt and jitter
  set by the displayed emotion and the intensity, plus background noise.

This module assembles the clips from the two and writes the release's files.

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
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from scipy import signal

from fer_mm.data.parallel import imap_progress
from fer_mm.data.sources.crema_d import (AUDIO_DIR, AUDIO_EXT, DEMOGRAPHICS_FILE, VIDEO_DIR, VIDEO_EXT, parse_name,
                                           write_demographics)
from fer_mm.data.twins.actors import Actor
from fer_mm.data.twins.displays import draw_displays, keyed_rng
from fer_mm.data.twins.face import EMOTION_AUS, FPS, FRAME_H, FRAME_W, background, render_face
from fer_mm.data.twins.spec import DISPLAYS_FILE, GENERATION_KEYS, SPEC_FILE, TWIN_VERSION, read_spec, twin_names, twin_spec
from fer_mm.data.twins.voice import Utterance, prosody_of, synth_audio
from fer_mm.files import write_atomic
from fer_mm.vocab import AUDIO, MODALITIES, SAMPLE_RATE, VIDEO

# Intensity of the expression / prosody change per level; XX (unspecified) draws one of these.
LEVEL_SCALE = {"LO": 0.45, "MD": 0.7, "HI": 1.0}


def clip_intensity(level: str, rng: np.random.Generator) -> float:
    """Strength of a clip's displays: set by the level; XX draws one of LO/MD/HI (see the module doc)."""
    if level not in LEVEL_SCALE:
        level = ("LO", "MD", "HI")[int(rng.integers(3))]
    return LEVEL_SCALE[level]


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
