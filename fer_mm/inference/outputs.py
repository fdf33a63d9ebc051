"""What predict writes: the rows of ``predictions.csv``, ``predictions.json`` and ``windows.csv``
(the readings' columns, :func:`reading_names`), each file's timeline plot, and its annotated copy."""

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
from fer_mm.inference.readings import MALE
from fer_mm.inference.sources import Source
from fer_mm.vocab import EMOTION_NAMES, GENDER_NAMES

SMOOTHED = "_smoothed"  # the smoothed readings' columns: <name>_smoothed


def reading_names(rec: TrainedModel, smoothed: bool = False) -> list[str]:
    """The columns of a model's readings, fixed by its tasks: ``p_<class>``, ``top``, ``top_p``
    (emotion), ``p_male``, ``gender`` (a gender head), ``age`` and ``age_group`` (an age head, the
    group with age groups). ``smoothed``: the smoothed readings' columns, ``<name>_smoothed``
    (without the per-class probabilities)."""
    s = SMOOTHED if smoothed else ""
    names = []
    if "emotion" in rec.reads:
        names += ([] if smoothed else [f"p_{c}" for c in rec.class_names]) + [f"top{s}", f"top_p{s}"]
    if "p_male" in rec.reads:
        names += [f"p_male{s}", f"gender{s}"]
    if "age" in rec.reads:
        names.append(f"age{s}")
    if "age_group_probs" in rec.reads:
        names.append(f"age_group{s}")
    return names


def reading_columns(rec: TrainedModel, reading: dict | None, smoothed: bool = False) -> dict:
    """One face's reading (:func:`~fer_mm.inference.readings.reading_of`) as the columns of
    :func:`reading_names`: the top emotion with its probability, the gender P(male) says, the age
    in years (2 decimals) and the most probable age group (NaNs: no reading)."""
    if reading is None:
        return dict.fromkeys(reading_names(rec, smoothed), np.nan)
    s, out = SMOOTHED if smoothed else "", {}
    if "emotion" in reading:
        probs = reading["emotion"]
        if not smoothed:
            out.update({f"p_{c}": round(float(v), 6) for c, v in zip(rec.class_names, probs)})
        top = int(np.argmax(probs))
        out.update({f"top{s}": rec.class_names[top], f"top_p{s}": round(float(probs[top]), 6)})
    if "p_male" in reading:
        p = float(reading["p_male"])
        out.update({f"p_male{s}": round(p, 6), f"gender{s}": GENDER_NAMES[MALE if p >= 0.5 else 1 - MALE]})
    if "age" in reading:
        out[f"age{s}"] = round(float(reading["age"]), 2)
    if "age_group_probs" in reading:
        out[f"age_group{s}"] = rec.age_groups.names[int(np.argmax(reading["age_group_probs"]))]
    return out


def face_label(row: dict, smoothed: bool = False) -> str | None:
    """A face's label from its row: ``happy 0.82 | male 0.91 | 34 y`` (the readings it has; the
    gender with its own probability); ``smoothed``: from the smoothed columns. None: no reading."""
    s, parts = SMOOTHED if smoothed else "", []
    if pd.notna(row.get(f"top{s}")):
        parts.append(f"{row[f'top{s}']} {row[f'top_p{s}']:.2f}")
    p = row.get(f"p_male{s}")
    if pd.notna(p):
        parts.append(f"{row[f'gender{s}']} {max(p, 1 - p):.2f}")
    if pd.notna(row.get(f"age{s}")):
        parts.append(f"{row[f'age{s}']:.0f} y")
    return " | ".join(parts) or None


def acted_label(name: str) -> dict:
    """The acted emotion of a file named as CREMA-D names its clips; nothing for other names."""
    try:
        clip = parse_name(name)
    except ValueError:
        return {}
    return dict(label_name=EMOTION_NAMES[clip.label])


def failed_row(rec: TrainedModel, source: Source, reason: str, seconds: float) -> dict:
    return dict(file=source.video, status="failed", reason=reason, **acted_label(source.name),
                **reading_columns(rec, None), seconds=round(seconds, 3))


def window_row(rec: TrainedModel, index: int, window: dict) -> dict:
    """A window's (or a frame's) row: its reading and its smoothed reading
    (:func:`~fer_mm.inference.readings.smooth_windows`), or the reason it has none."""
    return dict(window=index, start=window["start"], end=window["end"], **reading_columns(rec, window.get("reading")),
                **reading_columns(rec, window.get("smoothed"), smoothed=True),
                frames_with_face=window.get("frames_with_face"), frames=window.get("frames"),
                reason=window.get("error", ""))


def file_columns(rec: TrainedModel) -> list[str]:
    """``predictions.csv``'s columns, fixed so that rows can be written as files finish."""
    return ["file", "status", "reason", "face", "box", "label_name", *reading_names(rec), "frames_with_face",
            "frames", "duration_s", "modalities", "basis", "notes", "seconds"]


def window_columns(rec: TrainedModel) -> list[str]:
    """``windows.csv``'s columns."""
    return ["file", "window", "start", "end", *reading_names(rec), *reading_names(rec, smoothed=True),
            "frames_with_face", "frames", "reason"]


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
    """Each emotion's probability over the windows' centres; below it, for a model with those heads,
    the age in years and P(male) (each window's reading as points, the smoothed reading as a line).
    Windows without a reading are shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centre = (windows["start"] + windows["end"]) / 2
    panels = (["emotion"] if class_names else []) + [c for c in ("age", "p_male") if c in windows.columns]
    heights = [3.0 if p == "emotion" else 2.0 for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 0.9 + sum(heights)), sharex=True, squeeze=False,
                             gridspec_kw=dict(height_ratios=heights))
    failed = windows[windows[f"p_{class_names[0]}" if class_names else panels[0]].isna()]
    for panel, ax in zip(panels, axes[:, 0]):
        if panel == "emotion":
            for name in class_names:
                ax.plot(centre, windows[f"p_{name}"], marker=".", label=name)
            ax.set(ylabel="probability", ylim=(0, 1))
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        else:
            _reading_panel(ax, centre, windows, panel)
        for _, w in failed.iterrows():
            ax.axvspan(w["start"], w["end"], color="0.9", zorder=0)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("time (s), window centre")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _reading_panel(ax, centre: pd.Series, windows: pd.DataFrame, name: str) -> None:
    """One reading over time: each window's as points, the smoothed one as a line."""
    ax.plot(centre, windows[name], ".", color="0.45", label="reading")
    if f"{name}{SMOOTHED}" in windows.columns:
        ax.plot(centre, windows[f"{name}{SMOOTHED}"], "-", color="C3", label="smoothed")
    if name == "p_male":
        ax.axhline(0.5, color="0.5", linestyle="--", linewidth=1)
        ax.set(ylabel="P(male)", ylim=(0, 1))
    else:
        ax.set(ylabel="age (years)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def _draw_face(img: np.ndarray, box, label: str | None) -> None:
    """A face's box, with its label above it."""
    x, y, w, h = box
    cv2.rectangle(img, (x, y), (x + w, y + h), (0, 220, 0), 2)
    if label is not None:  # above the box, inside the picture (smaller where it would not fit)
        font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.6
        width = cv2.getTextSize(label, font, scale, 2)[0][0]
        if width > img.shape[1] - 4:
            scale, width = scale * (img.shape[1] - 4) / width, img.shape[1] - 4
        left = int(max(2, min(x, img.shape[1] - width - 2)))
        cv2.putText(img, label, (left, max(15, y - 8)), font, scale, (0, 220, 0), 1 if scale < 0.45 else 2)


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
                label = face_label(win, smoothed=True) or win["reason"] or "?"
            _draw_face(img, boxes[i].round().astype(int), label)
            for packet in ostream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in ostream.encode():
            out.mux(packet)
    return path


def write_annotated_image(annotation: dict, faces: list[dict], path: Path) -> Path:
    """The image with each face's box and its label (:func:`face_label`)."""
    img = cv2.cvtColor(annotation["image"], cv2.COLOR_GRAY2BGR)
    for box, face in zip(annotation["boxes"].round().astype(int), faces):
        _draw_face(img, box, face_label(face))
    cv2.imwrite(str(path), img)
    return path
