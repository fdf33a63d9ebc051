"""What predict writes: the rows of ``predictions.csv``, ``predictions.json`` and ``windows.csv``,
each file's timeline plot, and its annotated copy."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd

from fer_mm.data.sources.crema_d import parse_name
from fer_mm.inference.model import TrainedModel
from fer_mm.inference.sources import Source
from fer_mm.vocab import EMOTION_NAMES


def probability_columns(rec: TrainedModel, probs: np.ndarray | None) -> dict:
    """``p_<class>`` of each class, and the top class with its probability (NaNs: no prediction)."""
    if probs is None:
        return {f"p_{c}": np.nan for c in rec.class_names}
    out = {f"p_{c}": round(float(v), 6) for c, v in zip(rec.class_names, probs)}
    top = int(np.argmax(probs))
    return dict(out, top=rec.class_names[top], top_p=round(float(probs[top]), 6))


def acted_label(name: str) -> dict:
    """The acted emotion of a file named as CREMA-D names its clips; nothing for other names."""
    try:
        clip = parse_name(name)
    except ValueError:
        return {}
    return dict(label_name=EMOTION_NAMES[clip.label])


def failed_row(rec: TrainedModel, source: Source, reason: str, seconds: float) -> dict:
    return dict(file=source.video, status="failed", reason=reason, **acted_label(source.name),
                **probability_columns(rec, None), seconds=round(seconds, 3))


def window_row(rec: TrainedModel, index: int, window: dict) -> dict:
    """A window's row (:meth:`~fer_mm.inference.windows.Windows.ready`, then its probabilities), or
    the reason it has none."""
    return dict(window=index, start=window["start"], end=window["end"], **probability_columns(rec, window.get("probs")),
                frames_with_face=window.get("frames_with_face"), frames=window.get("frames"),
                reason=window.get("error", ""))


def _probability_names(rec: TrainedModel) -> list[str]:
    return [*[f"p_{c}" for c in rec.class_names], "top", "top_p"]


def file_columns(rec: TrainedModel) -> list[str]:
    """``predictions.csv``'s columns, fixed so that rows can be written as files finish."""
    return ["file", "status", "reason", "face", "box", "label_name", *_probability_names(rec), "frames_with_face",
            "frames", "duration_s", "modalities", "basis", "notes", "seconds"]


def window_columns(rec: TrainedModel) -> list[str]:
    """``windows.csv``'s columns."""
    return ["file", "window", "start", "end", *_probability_names(rec), "frames_with_face", "frames", "reason"]


class AppendCsv:
    """Rows appended as they come, so that a stopped run keeps every finished file's row."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        path.unlink(missing_ok=True)

    def add(self, rows: list[dict]) -> None:
        if rows:
            pd.DataFrame(rows).reindex(columns=self.columns).to_csv(
                self.path, mode="a", header=not self.path.exists(), index=False)

    def table(self) -> pd.DataFrame:
        """Every row written, as the file holds it."""
        if not self.path.exists():
            return pd.DataFrame(columns=self.columns)
        return pd.read_csv(self.path, keep_default_na=True)


def write_summary(path: Path, rec: TrainedModel, table: pd.DataFrame, files: int, **settings) -> None:
    """``predictions.json``: the model, the run's ``settings``, how many of the ``files`` succeeded, every row."""
    summary = dict(model=rec.describe(), **settings, files=files,
                   succeeded=int(table.loc[table["status"] == "ok", "file"].nunique()),
                   rows=json.loads(table.to_json(orient="records")))
    path.write_text(json.dumps(summary, indent=2) + "\n")


def output_stems(sources: list[Source]) -> list[str]:
    """A distinct name per source for its images and videos (two folders may hold ``a.mp4``)."""
    seen: dict[str, int] = {}
    stems = []
    for source in sources:
        stem = source.name
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


def plot_timeline(windows: pd.DataFrame, class_names: list[str], title: str, path: Path) -> Path:
    """Each emotion's probability over the windows' centres."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = (windows["start"] + windows["end"]) / 2
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for name in class_names:
        ax.plot(centre, windows[f"p_{name}"], marker=".", label=name)
    failed = windows[windows[f"p_{class_names[0]}"].isna()]
    for _, w in failed.iterrows():
        ax.axvspan(w["start"], w["end"], color="0.9", zorder=0)
    ax.set(xlabel="time (s), window centre", ylabel="probability", ylim=(0, 1), title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_face(img: np.ndarray, box, label: str | None) -> None:
    """A face's box, with its label above it."""
    x, y, w, h = box
    cv2.rectangle(img, (x, y), (x + w, y + h), (0, 220, 0), 2)
    if label is not None:
        cv2.putText(img, label, (x, max(15, y - 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 220, 0), 2)


def write_annotated(source: Source, annotation: dict, rec: TrainedModel, path: Path) -> Path:
    """A copy of the video with the tracked face box and the label of the window around each frame."""
    boxes, _ = rec.smoothed_boxes(annotation["detected"])
    windows = annotation["windows"]
    centres = np.array([(w["start"] + w["end"]) / 2 for w in windows]) if windows else None
    with av.open(source.video) as src, av.open(str(path), mode="w") as out:
        stream = src.streams.video[0]
        fps = annotation["fps"]
        ostream = out.add_stream("mpeg4", rate=Fraction(fps).limit_denominator(1001))
        ostream.width, ostream.height, ostream.pix_fmt = stream.codec_context.width, stream.codec_context.height, "yuv420p"
        for i, frame in enumerate(src.decode(stream)):
            if i >= len(boxes):
                break
            img = frame.to_ndarray(format="bgr24")
            label = None
            if centres is not None:
                win = windows[int(np.argmin(np.abs(centres - annotation["times"][i])))]
                label = f"{win['top']} {win['top_p']:.2f}" if win.get("top") else win["reason"] or "?"
            _draw_face(img, boxes[i].round().astype(int), label)
            for packet in ostream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in ostream.encode():
            out.mux(packet)
    return path


def write_annotated_image(annotation: dict, faces: list[dict], path: Path) -> Path:
    """The image with each face's box and its top emotion."""
    img = cv2.cvtColor(annotation["image"], cv2.COLOR_GRAY2BGR)
    for box, face in zip(annotation["boxes"].round().astype(int), faces):
        _draw_face(img, box, f"{face['top']} {face['top_p']:.2f}")
    cv2.imwrite(str(path), img)
    return path
