"""What a run shows: a JSONL log of every logged step and evaluation, optional TensorBoard, PNG plots."""

from __future__ import annotations

__all__ = ["RunLog", "plot_class_histogram", "plot_compare", "plot_confusion", "plot_curves", "plot_iou", "plot_overlays"]

import bisect
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segcore.errors import ConfigError, DamagedFileError
from segcore.io import atomic_write, write_text


_NUMBERS = ("loss", "mIoU", "mAcc", "aAcc", "fwIoU", "elapsed_s", "lr")  # a log record's numeric fields

class RunLog:
    """Appends one JSON object per line to ``log.jsonl`` (flushed at once); mirrors scalars to TensorBoard."""

    def __init__(self, folder: Path, *, enabled: bool = True, tensorboard: bool = False) -> None:
        self.path = Path(folder) / "log.jsonl"
        self.enabled = enabled
        self._logged: set[tuple[str, int]] | None = None  # (kind, step) of the records in the file, read on first write
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._drop_partial_line()
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ConfigError(f"train.tensorboard = true needs the tensorboard package: pip install tensorboard ({exc})") from None
            self._tb = SummaryWriter(str(Path(folder) / "tensorboard"))

    def write(self, kind: str, step: int, *, scalars: bool = True, **values: Any) -> None:
        """Append a record; one of the same kind and step already there (a resumed run logging a step again: the
        final evaluation of a run killed before its weights were written) is replaced, never repeated. Its numbers
        go to TensorBoard too unless *scalars* is False (a record that is not a metric)."""
        if not self.enabled:
            return
        if self._logged is None:
            self._logged = {(r["kind"], r["step"]) for r in self.read()}
        if (kind, step) in self._logged:
            kept = [r for r in self.read() if (r["kind"], r["step"]) != (kind, step)]
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._logged.add((kind, step))
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        if self._tb is not None and scalars:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def _drop_partial_line(self) -> None:
        """A process killed while appending leaves a last line without its newline: cut it, so the next record
        starts on a line of its own."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def read(self) -> list[dict[str, Any]]:
        """Every record; a damaged line is a DamagedFileError naming the file and the line."""
        if not self.path.is_file():
            return []
        records = []
        lines = self.path.read_text(encoding="utf-8", errors="replace").split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                if number == len(lines):  # the last line, cut by a kill while it was written
                    continue
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("kind"), str) or not isinstance(record.get("step"), int):
                raise DamagedFileError(f"{self.path}:{number}: not a log record ({line[:60]!r}); the log is damaged. "
                                       "Delete the line (or the file: only the plots use it) and run again.")  # fmt: skip
            for key in _NUMBERS:  # what the plots and reports compute with
                value = record.get(key, 0)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise DamagedFileError(f"{self.path}:{number}: {key} is {value!r}, not a number; the log was edited "
                                           "or damaged. Fix or delete the line (only the plots use it).")  # fmt: skip
            records.append(record)
        return records

    def keep_until(self, step: int) -> None:
        """Drop the records after *step* (a run resumed from a checkpoint logs those steps again)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [r for r in self.read() if r["step"] <= step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._logged = {(r["kind"], r["step"]) for r in kept}

    def close(self) -> None:
        """Flush and close the TensorBoard writer (if any); again is a no-op."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def plot_curves(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Training loss (every logged term) and val mIoU against the step."""
    plt = _pyplot()
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(11, 4))
    train = [r for r in records if r["kind"] == "train"]
    terms = sorted({k for r in train for k in r if k.startswith("loss")})
    for term in terms:
        pts = [(r["step"], r[term]) for r in train if term in r]
        ax_loss.plot(*zip(*pts), label=term)
    ax_loss.set(xlabel="step", ylabel="loss", title="training loss", yscale="log")
    if terms:
        ax_loss.legend()
    evals = [(r["step"], 100 * r["mIoU"]) for r in records if r["kind"] == "eval"]
    if evals:
        ax_iou.plot(*zip(*evals), marker="o")
    ax_iou.set(xlabel="step", ylabel="mIoU (%)", title="validation mIoU")
    ax_iou.grid(alpha=0.3)
    _save(fig, path)


_POSITION = ("step", "epoch")  # where a record is, not a value it logs: plot_compare draws against the step


def plot_compare(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: Path, *, x: str = "step",
                 y: str = "loss", smooth: int = 1) -> dict[str, tuple[list[float], list[float]]]:
    """Several runs on one figure: a logged training value of each (*y*: the total ``"loss"``, a term such as
    ``"loss.ce"``, ``"grad_norm"``, ``"lr"``) and their val mIoU (``segcore plot``); -> label: the (x, y) drawn.

    *x* is ``"step"``, or ``"hours"`` (the logged wall-clock ``elapsed_s``; an evaluation is placed at the time of
    the last training record before it), to compare runs by what they reach per hour. *smooth* > 1 draws the mean of
    every *smooth* consecutive records (placed at the last of them) instead of each record.
    """
    if x not in ("step", "hours"):
        raise ValueError(f"x must be 'step' or 'hours', not {x!r}")
    if smooth < 1:
        raise ValueError(f"smooth must be 1 or more, not {smooth}")
    plt = _pyplot()
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(11, 4))
    drawn: dict[str, tuple[list[float], list[float]]] = {}
    for label, records in runs:
        train = [] if y in _POSITION else [r for r in records
                                           if r["kind"] == "train" and isinstance(r.get(y), (int, float))]
        if not train:
            logged = sorted({k for r in records if r["kind"] == "train" for k, v in r.items()
                             if isinstance(v, (int, float)) and k not in _POSITION})  # fmt: skip
            raise ConfigError(f"{label}: its log has no training records with a number {y!r}; it logs "
                              f"{', '.join(logged) or 'none'}")  # fmt: skip
        if len(train) < smooth:
            raise ConfigError(f"{label}: its log has {len(train)} training records with {y!r}, fewer than the "
                              f"{smooth} that one mean of --smooth {smooth} takes; smooth over {len(train)} or fewer")
        clock = sorted((r["step"], r["elapsed_s"] / 3600) for r in train if "elapsed_s" in r)
        if x == "hours" and not clock:
            raise ConfigError(f"{label}: its log has no elapsed_s (the wall-clock time, logged by newer trainers); "
                              "plot it against the step instead (--x step)")  # fmt: skip

        def at(step: int, clock: list = clock) -> float:  # hours: the clock of the last training record at or before it
            if x == "step":
                return step
            i = bisect.bisect_right(clock, (step, math.inf))
            return clock[i - 1][1] if i else 0.0

        values = [float(r[y]) for r in train]
        means = np.convolve(values, np.full(smooth, 1.0 / smooth), mode="valid").tolist()  # smooth 1: the values
        xs = [at(r["step"]) for r in train[smooth - 1:]]
        drawn[label] = (xs, means)
        (line,) = ax_loss.plot(xs, means, label=label, alpha=0.8)
        evals = [(at(r["step"]), 100 * r["mIoU"]) for r in records if r["kind"] == "eval" and "mIoU" in r]
        if evals:
            ax_iou.plot(*zip(*evals), marker="o", color=line.get_color(), label=f"{label} ({evals[-1][1]:.1f})")
    xlabel = "wall-clock hours" if x == "hours" else "step"
    positive = all(v > 0 for _, ys in drawn.values() for v in ys)
    title = f"training {y}" + (f" (mean of {smooth} records)" if smooth > 1 else "")
    ax_loss.set(xlabel=xlabel, ylabel=y, title=title, yscale="log" if positive else "linear")
    ax_iou.set(xlabel=xlabel, ylabel="mIoU (%)", title="validation mIoU (last in brackets)")
    for ax in (ax_loss, ax_iou):
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)
    return drawn


def plot_iou(class_names: Sequence[str], iou: Sequence[float], miou: float, path: Path) -> None:
    """Per-class IoU bars; the title carries the run's mIoU (classes absent from the labels are not in it)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(class_names)), 4))
    values = [100 * (v if v == v else 0.0) for v in iou]
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(values)), class_names, rotation=60, ha="right")
    ax.set(ylabel="IoU (%)", ylim=(0, 100), title=f"per-class IoU (mIoU {100 * miou:.2f})")
    _save(fig, path)


def plot_confusion(class_names: Sequence[str], matrix: np.ndarray, path: Path) -> None:
    """Rows normalised: each ground-truth class's pixels split over the predicted classes."""
    plt = _pyplot()
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * n + 2), max(4, 0.45 * n + 1)))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted", ylabel="ground truth", title="confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax)
    _save(fig, path)


def plot_class_histogram(class_names: Sequence[str], splits: dict[str, tuple[np.ndarray, float]],
                         weights: dict[str, Sequence[float]], path: Path, *, title: str = "") -> None:  # fmt: skip
    """``segcore data verify``'s figure: each split's share of labelled pixels per class (log scale; *splits* maps
    a split to its (pixels per class, ignore share)), and below the suggested class weights."""
    plt = _pyplot()
    n = len(class_names)
    fig, (ax_freq, ax_w) = plt.subplots(2, 1, figsize=(max(7, 0.6 * n + 2), 7.5), sharex=True)
    width = 0.8 / max(len(splits), 1)
    for i, (split, (pixels, ignore)) in enumerate(splits.items()):
        share = 100 * np.asarray(pixels, np.float64) / max(float(np.sum(pixels)), 1.0)
        ax_freq.bar(np.arange(n) + (i - (len(splits) - 1) / 2) * width, np.where(share > 0, share, np.nan), width,
                    label=f"{split} (ignore {100 * ignore:.1f} % of pixels)")  # fmt: skip
    ax_freq.set(yscale="log", ylabel="% of labelled pixels", title=title or "pixels per class")
    ax_freq.grid(axis="y", alpha=0.3)
    ax_freq.legend()
    width = 0.8 / max(len(weights), 1)
    for i, (kind, values) in enumerate(weights.items()):
        ax_w.bar(np.arange(n) + (i - (len(weights) - 1) / 2) * width, values, width, label=kind.replace("_", " "))
    ax_w.set(ylabel="suggested class weight", yscale="log", title="class weights (from the training split)")
    ax_w.set_xticks(range(n), class_names, rotation=60, ha="right")
    ax_w.grid(axis="y", alpha=0.3)
    if weights:
        ax_w.legend()
    _save(fig, path)


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) uint8 colours; the ignore id is black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    lut[ignore_index % 256] = 0
    return lut[labels.astype(np.int64) % 256]


def plot_overlays(rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], palette, ignore_index: int, path: Path) -> None:
    """A grid: image | label over image | prediction over image, one row per sample."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.2 * len(rows)), squeeze=False)
    for ax_row, (image, label, pred) in zip(axes, rows):
        for ax, (title, overlay) in zip(ax_row, (("image", None), ("label", label), ("prediction", pred))):
            shown = image if overlay is None else (0.5 * image + 0.5 * colorize(overlay, palette, ignore_index)).astype(np.uint8)
            ax.imshow(shown)
            ax.set_title(title)
            ax.axis("off")
    _save(fig, path)
