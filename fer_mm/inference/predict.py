"""``python -m fer_mm.predict checkpoint=PATH input=PATH [output=DIR]``: a trained model on new videos.

``checkpoint`` is a ``.ckpt`` file, a fold's run folder (its selected checkpoint is used) or, with
``runtime=onnx``, a model exported by :mod:`fer_mm.inference.export`. ``input`` is a video file (mp4,
mkv, mov, avi, webm, flv: any frame rate, size, audio codec, rate and channel count), an image (png,
jpg, ...), a folder of them, a CREMA-D root (each clip's video paired with its WAV, as training pairs
them), or a live source (``webcam:0``, a stream URL; see :mod:`fer_mm.inference.stream`).

An image model (trained on FER2013, CK+ or a folder set) reads every face of an image (a row per
face) and every frame of a video (the file's row is the mean over its frames, the frames its
timeline); the face detector and crop are the ones it was trained with.

Every step is the training path's own: decode (:func:`~fer_mm.data.media.video.decode_gray`, the audio
through :func:`~fer_mm.data.media.audio.to_mono_rate`), face tracking and cropping with the detector
settings the checkpoint was trained with, int16 quantisation, the evaluation frame sampling of
:func:`~fer_mm.data.clips.clip_item`, then the checkpoint's own :class:`ModelInputs` and network.

Outputs in ``output``: ``predictions.csv`` and ``predictions.json`` (a row per file: ``p_<emotion>``,
the top emotion, and for a model with gender and age heads ``p_male``, ``gender``, ``age`` and
``age_group``; frames with a face, the modalities used, the seconds taken, or the reason a file
failed), and for windowed files ``windows.csv`` (the readings, and beside them the readings
smoothed over time, ``smoothing=`` seconds: ``<name>_smoothed``) and ``<file>_timeline.png``. The
command exits non-zero only when no file succeeded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import pandas as pd
from tqdm import tqdm

from fer_mm.environment import PROJECT_ROOT
from fer_mm.inference.media import check_missing_audio
from fer_mm.inference.model import ClipError
from fer_mm.inference.outputs import (AppendCsv, face_label, failed_row, file_columns, output_stems, plot_timeline,
                                      window_columns, write_annotated, write_annotated_image, write_summary)
from fer_mm.inference.readings import DEFAULT_SMOOTHING, Smoother
from fer_mm.inference.recognizer import Recognizer, predict_image, predict_source
from fer_mm.inference.sources import Source, find_inputs, is_image
from fer_mm.inference.stream import is_stream_address, open_source, run_stream
from fer_mm.inference.windows import LONG_CLIP_WINDOW
from fer_mm.runs import register_resolvers
from fer_mm.vocab import AUDIO, VIDEO

log = logging.getLogger("fer_mm.predict")


@dataclass
class _Predicted:
    """One input's outcome: its row (an image: a row per face), its window rows, what its pictures need."""

    row: dict
    windows: list[dict] = field(default_factory=list)
    faces: list[dict] = field(default_factory=list)
    annotation: dict | None = None


def predict_files(rec: Recognizer, sources: list[Source], output: Path, window: float | None = None,
                  hop: float = 0.5, missing_audio: str = "skip", annotate: bool = False, batch_size: int = 16,
                  progress: bool = True, smoothing: float = DEFAULT_SMOOTHING) -> pd.DataFrame:
    """Predict every source; write ``predictions.csv`` / ``.json``, ``windows.csv`` and the timelines.

    Rows are written as each file finishes; one file's failure (reading it, or drawing its
    timeline or annotated copy) is recorded on its row and the others go on. A timeline's readings
    are also smoothed over time, ``smoothing`` seconds (:class:`~fer_mm.inference.readings.Smoother`).
    """
    check_missing_audio(missing_audio)
    rec.check_window(window, hop)
    Smoother(smoothing)  # a wrong value named before any file
    output.mkdir(parents=True, exist_ok=True)
    files = AppendCsv(output / "predictions.csv", file_columns(rec))
    window_csv = AppendCsv(output / "windows.csv", window_columns(rec))
    for source, stem in tqdm(list(zip(sources, output_stems(sources))), desc="predicting", unit="file",
                             disable=not progress):
        done = _predict_file(rec, source, window, hop, missing_audio, batch_size, smoothing)
        _draw(rec, source, done, output, stem, annotate)
        files.add(done.faces or [done.row])
        window_csv.add(done.windows)
    table = files.table()
    write_summary(output / "predictions.json", rec, table, len(sources), window=window, hop=hop,
                  missing_audio=missing_audio, smoothing=smoothing)
    return table


def _predict_file(rec: Recognizer, source: Source, window: float | None, hop: float, missing_audio: str,
                  batch_size: int, smoothing: float) -> _Predicted:
    """One input's outcome; a file that cannot be read gets a failed row, with the reason."""
    t0 = time.perf_counter()
    try:
        if is_image(source.video):
            faces, annotation = predict_image(rec, source)
            return _Predicted(faces[0], faces=faces, annotation=annotation)
        row, windows, annotation = predict_source(rec, source, window, hop, missing_audio, batch_size, smoothing)
        return _Predicted(row, windows, annotation=annotation)
    except ClipError as err:
        log.warning("%s: %s", source.video, err)
        return _Predicted(failed_row(rec, source, str(err), time.perf_counter() - t0))
    except Exception as err:  # noqa: BLE001 - an unforeseen defect of one file must not cost the others
        log.warning("%s: failed: %s: %s", source.video, type(err).__name__, err)
        return _Predicted(failed_row(rec, source, f"failed: {type(err).__name__}: {err}", time.perf_counter() - t0))


def _draw(rec: Recognizer, source: Source, done: _Predicted, output: Path, stem: str, annotate: bool) -> None:
    """The file's timeline and (``annotate``) annotated copy in ``output``, named after ``stem``; one
    that fails is noted on the file's row."""
    row, drawings = done.row, []
    if done.windows:
        drawings.append(("timeline", lambda: plot_timeline(
            pd.DataFrame(done.windows), rec.class_names, f"{Path(source.video).name} ({row['modalities']})",
            output / f"{stem}_timeline.png")))
    if annotate and done.faces:
        drawings.append(("annotated copy", lambda: write_annotated_image(done.annotation, done.faces,
                                                                         output / f"{stem}_annotated.png")))
    elif annotate and row["status"] == "ok" and VIDEO in rec.modalities:
        drawings.append(("annotated copy", lambda: write_annotated(source, done.annotation, rec,
                                                                   output / f"{stem}_annotated.mp4")))
    for what, draw in drawings:
        try:
            draw()
        except Exception as err:  # noqa: BLE001 - the predictions stand without the picture
            log.warning("%s: no %s: %s: %s", source.video, what, type(err).__name__, err)
            row["notes"] = "; ".join(filter(None, [row.get("notes"), f"no {what}: {err}"]))


def run(cfg) -> int:
    """The command: 0 when at least one file (or the stream) gave a prediction, 1 otherwise."""
    output = Path(cfg.output)
    rec = Recognizer(cfg.checkpoint, runtime=cfg.runtime, device=cfg.device, detector=cfg.detector,
                     detector_kwargs=cfg.detector_kwargs)
    rec.check_window(cfg.window, cfg.hop)
    check_missing_audio(cfg.missing_audio)
    smoothing = cfg.smoothing
    Smoother(smoothing)  # a wrong value named before the source opens
    if is_stream_address(str(cfg.input)) or cfg.realtime:
        source = open_source(str(cfg.input), realtime=cfg.realtime, mic=cfg.mic, need_audio=AUDIO in rec.modalities,
                             missing_audio=cfg.missing_audio)
        windows = run_stream(rec, source, cfg.window or LONG_CLIP_WINDOW, cfg.hop, output, show=cfg.show,
                             max_windows=cfg.max_windows, smoothing=smoothing)
        return 0 if any(not w["reason"] for w in windows) else 1
    table = predict_files(rec, find_inputs(cfg.input), output, cfg.window, cfg.hop, cfg.missing_audio,
                          cfg.annotate, cfg.batch_size, cfg.progress, smoothing)
    ok = table[table["status"] == "ok"]
    print(f"\n{ok['file'].nunique()} of {table['file'].nunique()} files predicted ({'+'.join(rec.modalities)}, {rec.runtime}); "
          f"results: {output / 'predictions.csv'}")
    for _, r in table.iterrows():
        face = f" face {int(r['face'])}" if pd.notna(r.get("face")) else ""
        print(f"  {Path(r['file']).name}{face}: " + (f"{face_label(r)}  ({r['basis']})"
                                                 if r["status"] == "ok" else f"FAILED: {r['reason']}"))
    return 0 if len(ok) else 1


# an absolute path: run as python -m fer_mm.predict, this function's module is not __main__, and Hydra
# would look for a relative config_path among importable packages, not beside this file
@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="predict")
def _main(cfg) -> None:
    code = run(cfg)
    if code:
        raise SystemExit(code)


def main() -> None:
    register_resolvers()
    _main()
