"""Video files unlike the twin's: other containers, codecs, sizes, frame and sample rates, channel
counts; a long clip, a clip without a face, a silent one and a truncated one. The faces are drawn
by the twin's renderer (so that a Haar-trained model finds them); everything else differs."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from scipy import signal

from fer_mm.vocab import SAMPLE_RATE
from fer_mm.data.twins.actors import Actor
from fer_mm.data.twins.crema_d import synth_clip
from fer_mm.data.twins.face import FPS, background


def face_clip(actor: int, emotion: str, sentence: str = "IEO", seed: int = 7) -> tuple[list[np.ndarray], np.ndarray]:
    """A rendered clip (BGR frames at the twin's 30 fps, 16 kHz waveform) acting ``emotion`` in both modalities."""
    person = Actor.make(actor, seed)
    level = "HI" if sentence == "IEO" else "XX"
    return synth_clip(f"{actor}_{sentence}_{emotion}_{level}", person, background(person), seed,
                      {"audio": emotion, "video": emotion})


def retime(frames: list[np.ndarray], fps: float, size: tuple[int, int]) -> list[np.ndarray]:
    """The 30 fps frames shown at ``fps`` (nearest frame) and resized to ``size`` (width, height)."""
    n = int(round(len(frames) / FPS * fps))
    pick = np.minimum((np.arange(n) * FPS / fps).round().astype(int), len(frames) - 1)
    return [cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA) for i in pick]


def write_video(path: Path, frames: list[np.ndarray], fps: float, codec: str, audio: np.ndarray | None = None,
                audio_rate: int = SAMPLE_RATE, audio_codec: str = "aac", channels: int = 1,
                pix_fmt: str = "yuv420p", frame_times: list[float] | None = None, audio_start: float = 0.0) -> Path:
    """Encode BGR frames (and a 16 kHz mono waveform, resampled and spread over ``channels``).

    ``frame_times``: each frame's time in seconds (a variable frame rate); ``audio_start``: when
    the audio starts, in seconds after the video."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as out:
        vs = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        if frame_times is not None:
            vs.codec_context.time_base = vs.time_base = Fraction(1, 1000)
        streams = [vs]
        if audio is not None:
            as_ = out.add_stream(audio_codec, rate=audio_rate)
            as_.layout = "stereo" if channels == 2 else "mono"
            streams.append(as_)
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            if frame_times is not None:
                frame.pts, frame.time_base = int(round(frame_times[i] * 1000)), Fraction(1, 1000)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if audio is not None:
            wave = signal.resample_poly(audio, audio_rate, SAMPLE_RATE).astype(np.float32)
            planes = np.stack([wave * (1.0 - 0.2 * c) for c in range(channels)])  # channels that differ
            frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=as_.layout.name)
            frame.sample_rate, frame.time_base = audio_rate, Fraction(1, audio_rate)
            frame.pts = int(round(audio_start * audio_rate))
            # to the encoder's sample format and frame size
            resampler = av.AudioResampler(format=as_.codec_context.codec.audio_formats[0].name,
                                          layout=as_.layout.name, rate=audio_rate,
                                          frame_size=as_.codec_context.frame_size or None)
            for part in resampler.resample(frame) + resampler.resample(None):
                for packet in as_.encode(part):
                    out.mux(packet)
            for packet in as_.encode():
                out.mux(packet)
    return path


def independent_folder(folder: Path) -> dict[str, Path]:
    """The issue's folder: each kind of file the predict command must handle, by what it tests."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    frames, wave = face_clip(1011, "HAP")
    files["mp4_aac_44k_stereo"] = write_video(folder / "happy_aac_stereo.mp4", retime(frames, 25, (640, 480)), 25,
                                              "libx264", wave, 44_100, "aac", channels=2)
    frames, wave = face_clip(1012, "ANG")
    files["mkv_opus_48k"] = write_video(folder / "angry_opus.mkv", retime(frames, 24, (320, 240)), 24, "libvpx-vp9",
                                        wave, 48_000, "libopus", channels=1)
    frames, _ = face_clip(1013, "SAD")
    files["avi_mjpeg_silent"] = write_video(folder / "sad_silent.avi", retime(frames, 15, (480, 360)), 15, "mjpeg",
                                            pix_fmt="yuvj420p")
    parts = [face_clip(1014, e, sentence="ITS") for e in ("NEU", "HAP", "ANG", "SAD")]
    frames = [f for p in parts for f in p[0]]
    wave = np.concatenate([p[1] for p in parts])
    long_frames = retime(frames, 30, (640, 360))
    files["long_12s"] = write_video(folder / "long_12s.mp4", long_frames[: 12 * 30], 30, "libx264",
                                    wave[: 12 * SAMPLE_RATE], 44_100, "aac", channels=2)
    person = Actor.make(1015, 7)
    empty = [background(person)] * 75  # the room without anyone in it
    files["no_face"] = write_video(folder / "empty_room.mp4", empty, 30, "libx264", wave[: 40_000], 44_100, "aac")
    whole = write_video(folder / ".whole.mp4", retime(face_clip(1016, "FEA")[0], 30, (480, 360)), 30, "libx264",
                        face_clip(1016, "FEA")[1], 44_100, "aac")
    data = whole.read_bytes()
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])  # cut mid-file, as an interrupted download leaves it
    whole.unlink()
    files["truncated"] = truncated
    whole = write_video(folder / ".whole.mkv", retime(face_clip(1017, "DIS")[0], 30, (480, 360)), 30, "libvpx-vp9",
                        face_clip(1017, "DIS")[1], 48_000, "libopus")
    data = whole.read_bytes()
    truncated = folder / "truncated.mkv"  # its header states the whole length; half of it follows
    truncated.write_bytes(data[: len(data) // 2])
    whole.unlink()
    files["truncated_mkv"] = truncated
    return files
