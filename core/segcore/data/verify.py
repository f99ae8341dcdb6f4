"""``segcore data verify``: read every split of a dataset as stored and say what would go wrong in training.

Per split: the image count and sizes, the label values against the class list (unknown ids with the files that
hold them; colour masks, RGB or palette-coloured, explained), the ignore share, the pixels per class, images that
appear twice (a hash of the decoded pixels), and whether the first images carry their own labels
(`segcore.data.pairing`). From the training split(s): suggested class weights, median
frequency balancing (Eigen & Fergus 2015, as SegNet uses it) and ENet's ``1 / ln(1.02 + p)`` (Paszke et al. 2016).

Samples are read through `Dataset.raw_sample` (the label files before any mapping clips or rejects a value) in
DataLoader workers; each worker returns a few numbers per sample, never the pixels.
"""

from __future__ import annotations

__all__ = ["Problem", "SplitReport", "VerifyReport", "class_weights", "format_report", "inspect_sample", "verify_dataset"]

import hashlib
from collections import Counter
from collections.abc import Collection, Sequence
from typing import Any, Literal

import numpy as np
import torch
from attrs import define, field
from tqdm import tqdm

from segcore.config.schema import DatasetSpec
from segcore.contracts.registry import Registry
from segcore.contracts.stages import Dataset, DatasetMeta, RawSample
from segcore.data.datasets import EmptySplitError, build_dataset, identity_lut
from segcore.data.pairing import dataset_pairing
from segcore.errors import DataError

MAX_NAMED = 5  # files named per problem; the rest are counted
PAIRING_SAMPLES = 16  # samples per split whose images are checked against every one of their labels


@define
class Problem:
    """One finding: an ``error`` fails the check (exit 2), a ``warning`` does not."""

    severity: Literal["error", "warning"]
    kind: str  # unknown_ids, colour_mask, empty_split, missing_split, unreadable, size_mismatch, leak, duplicate, pairing, ...
    split: str | None
    message: str
    files: list[str] = field(factory=list)


@define
class SplitReport:
    """What one split holds. ``class_pixels[c]`` counts class *c*; ``present_pixels[c]`` counts every labelled
    pixel of the images in which *c* occurs (median frequency balancing's denominator)."""

    name: str
    images: int = 0
    sizes: Counter = field(factory=Counter)  # (H, W) -> images
    class_pixels: np.ndarray | None = None
    present_pixels: np.ndarray | None = None
    ignore_pixels: int = 0
    unknown_pixels: int = 0
    label_modes: Counter = field(factory=Counter)  # PIL mode -> label files
    unknown: dict[int, list[str]] = field(factory=dict)  # raw value -> files holding it
    hashes: dict[str, list[str]] = field(factory=dict)  # image content hash -> files

    @property
    def labelled_pixels(self) -> int:
        return int(self.class_pixels.sum()) if self.class_pixels is not None else 0

    @property
    def ignore_share(self) -> float:
        total = self.labelled_pixels + self.ignore_pixels + self.unknown_pixels
        return self.ignore_pixels / total if total else 0.0

    def to_dict(self, meta: DatasetMeta) -> dict[str, Any]:
        heights = [h for (h, _w), n in self.sizes.items() for _ in range(n)]
        widths = [w for (_h, w), n in self.sizes.items() for _ in range(n)]
        pixels = self.class_pixels if self.class_pixels is not None else np.zeros(meta.num_classes, np.int64)
        total = max(int(pixels.sum()), 1)
        return {
            "images": self.images,
            "sizes": {
                "distinct": len(self.sizes),
                "most_common": [list(s) for s, _ in self.sizes.most_common(1)],
                "height": {"min": min(heights, default=0), "max": max(heights, default=0),
                           "mean": float(np.mean(heights)) if heights else 0.0},
                "width": {"min": min(widths, default=0), "max": max(widths, default=0),
                          "mean": float(np.mean(widths)) if widths else 0.0},
            },  # fmt: skip
            "label_modes": dict(self.label_modes),
            "class_pixels": {name: int(n) for name, n in zip(meta.class_names, pixels)},
            "class_frequency": {name: int(n) / total for name, n in zip(meta.class_names, pixels)},
            "ignore_pixels": self.ignore_pixels,
            "ignore_share": self.ignore_share,
            "unknown_ids": {str(v): files for v, files in sorted(self.unknown.items())},
        }


@define
class VerifyReport:
    """Every split's report, the problems found, and the suggested class weights (from `train_splits`)."""

    dataset: str
    meta: DatasetMeta
    splits: dict[str, SplitReport] = field(factory=dict)
    problems: list[Problem] = field(factory=list)
    train_splits: tuple[str, ...] = ()

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def weights(self) -> dict[str, list[float]]:
        """Suggested ``class_weights`` from the training split(s) (every split when none is a training split)."""
        names = [s for s in self.train_splits if s in self.splits] or list(self.splits)
        parts = [self.splits[s] for s in names if self.splits[s].class_pixels is not None]
        if not parts:
            return {}
        return class_weights(sum(p.class_pixels for p in parts), sum(p.present_pixels for p in parts))

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "classes": list(self.meta.class_names),
            "ignore_index": self.meta.ignore_index,
            "splits": {name: s.to_dict(self.meta) for name, s in self.splits.items()},
            "class_weights": {"from_splits": [s for s in self.train_splits if s in self.splits] or list(self.splits),
                              **self.weights()},  # fmt: skip
            "problems": [{"severity": p.severity, "kind": p.kind, "split": p.split, "message": p.message,
                          "files": p.files} for p in self.problems],  # fmt: skip
            "ok": not self.errors,
        }


def class_weights(class_pixels: np.ndarray, present_pixels: np.ndarray) -> dict[str, list[float]]:
    """Two suggestions for a loss's ``class_weights`` from per-class pixel counts; a class never seen gets 0.

    ``median_frequency``: ``median(f) / f_c`` with ``f_c`` = pixels of class *c* / pixels of the images holding
    it (Eigen & Fergus 2015; SegNet). ``enet``: ``1 / ln(1.02 + p_c)`` with ``p_c`` = the class's share of all
    labelled pixels (Paszke et al., ENet, 2016)."""
    counts = np.asarray(class_pixels, np.float64)
    present = np.asarray(present_pixels, np.float64)
    seen = counts > 0
    freq = np.divide(counts, present, out=np.zeros_like(counts), where=present > 0)
    median = float(np.median(freq[seen])) if seen.any() else 0.0
    mfb = np.divide(median, freq, out=np.zeros_like(freq), where=seen)
    share = counts / max(counts.sum(), 1.0)
    enet = np.where(seen, 1.0 / np.log(1.02 + share), 0.0)
    return {"median_frequency": [round(float(x), 4) for x in mfb], "enet": [round(float(x), 4) for x in enet]}


# -- one sample (runs in a DataLoader worker) ----------------------------------------------------------------------


def _name(raw: RawSample, index: int, which: Literal["image", "label"]) -> str:
    path = raw.image_path if which == "image" else raw.label_path
    return str(path) if path is not None else f"sample {index}"


def _pack_rgb(colours: np.ndarray) -> np.ndarray:
    colours = colours.astype(np.int64)
    return (colours[..., 0] << 16) | (colours[..., 1] << 8) | colours[..., 2]


def inspect_sample(raw: RawSample, meta: DatasetMeta, index: int) -> dict[str, Any]:
    """The numbers `verify_dataset` keeps of one sample: size, image hash, pixels per class and ignore, unknown
    raw values, and what a colour mask looks like."""
    image, label = raw.image, raw.label
    out: dict[str, Any] = {
        "index": index, "image": _name(raw, index, "image"), "label": _name(raw, index, "label"),
        "size": tuple(int(x) for x in image.shape[:2]), "mode": raw.label_mode,
        "hash": hashlib.blake2b(np.ascontiguousarray(image).tobytes() + str(image.shape).encode(), digest_size=12).hexdigest(),
    }  # fmt: skip
    if label.shape[:2] != image.shape[:2]:
        out["size_mismatch"] = (tuple(label.shape[:2]), tuple(image.shape[:2]))
        return out
    if label.ndim == 3:  # a colour mask: RGB, RGBA, LA
        colours = label[..., :3] if label.shape[2] >= 3 else label[..., :1].repeat(3, axis=2)
        grey = bool((colours == colours[..., :1]).all())
        packed = _pack_rgb(colours.reshape(-1, 3))
        in_palette = np.isin(packed, _pack_rgb(np.asarray(meta.palette, np.int64)))
        out["colour"] = {"grey": grey, "colours": int(np.unique(packed).size), "palette_share": float(in_palette.mean())}
        if not grey:
            return out
        label = colours[..., 0]  # ids saved as RGB: still count them, so the report shows what they hold
    lut = raw.lut if raw.lut is not None else identity_lut(meta.num_classes, meta.ignore_index)
    k = meta.num_classes
    if label.size and label.min() >= 0 and label.max() < len(lut):
        counts = np.bincount(label.reshape(-1).astype(np.int64), minlength=len(lut))
        values = np.flatnonzero(counts)
        counts = counts[values]
    else:
        values, counts = np.unique(label.astype(np.int64), return_counts=True)
    inside = (values >= 0) & (values < len(lut))
    mapped = np.full(values.shape, -1, np.int64)
    mapped[inside] = lut[values[inside]]
    known = (mapped >= 0) & (mapped < k)
    ignore = mapped == meta.ignore_index
    class_pixels = np.bincount(mapped[known], weights=counts[known], minlength=k).astype(np.int64)
    out["class_pixels"] = class_pixels
    out["ignore"] = int(counts[ignore].sum())
    bad = ~known & ~ignore
    out["unknown"] = {int(v): int(c) for v, c in zip(values[bad], counts[bad])}
    if raw.palette is not None:  # a palette PNG: is each class drawn in another class's colour?
        own = {i: tuple(raw.palette[v]) for v, i in zip(values[known], mapped[known]) if v < len(raw.palette)}
        colours = {tuple(c): j for j, c in enumerate(meta.palette)}
        shifted = {int(i): colours[c] for i, c in own.items() if c in colours and colours[c] != i}
        if shifted:
            out["palette_shift"] = shifted
    return out


class _Inspect(torch.utils.data.Dataset):
    """Each item: `inspect_sample` of the dataset's raw sample, or the DataError that reading it raised."""

    def __init__(self, dataset: Dataset, meta: DatasetMeta) -> None:
        self.dataset, self.meta = dataset, meta

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            raw = self.dataset.raw_sample(index)
        except DataError as exc:
            return {"index": index, "error": str(exc)}
        return inspect_sample(raw, self.meta, index)


def _as_is(sample: dict[str, Any]) -> dict[str, Any]:
    return sample


# -- a split, then the dataset -------------------------------------------------------------------------------------


def _files(files: Sequence[str]) -> str:
    shown = ", ".join(files[:MAX_NAMED])
    return shown + (f" and {len(files) - MAX_NAMED} more" if len(files) > MAX_NAMED else "")


def _scan(dataset: Dataset, name: str, meta: DatasetMeta, problems: list[Problem], *, num_workers: int,
          progress: bool) -> SplitReport:  # fmt: skip
    report = SplitReport(name, class_pixels=np.zeros(meta.num_classes, np.int64),
                         present_pixels=np.zeros(meta.num_classes, np.int64))  # fmt: skip
    unreadable, mismatched, grey, coloured = [], [], [], []
    palette_share: list[float] = []
    shifted: dict[tuple[int, int], list[str]] = {}
    loader = torch.utils.data.DataLoader(_Inspect(dataset, meta), batch_size=None, num_workers=num_workers,
                                         collate_fn=_as_is)  # fmt: skip
    for s in tqdm(loader, total=len(dataset), desc=f"verify {name}", disable=not progress, dynamic_ncols=True):
        report.images += 1
        if "error" in s:
            unreadable.append(s["error"])
            continue
        report.sizes[s["size"]] += 1
        report.hashes.setdefault(s["hash"], []).append(s["image"])
        report.label_modes[s["mode"] or "decoded"] += 1
        if "size_mismatch" in s:
            (lh, lw), (ih, iw) = s["size_mismatch"]
            mismatched.append(f"{s['label']} ({lw}x{lh}, image {iw}x{ih})")
            continue
        if "colour" in s:
            if not s["colour"]["grey"]:
                coloured.append(s["label"])
                palette_share.append(s["colour"]["palette_share"])
                continue
            grey.append(s["label"])
        pixels = s["class_pixels"]
        report.class_pixels += pixels
        report.present_pixels += np.where(pixels > 0, int(pixels.sum()), 0)
        report.ignore_pixels += s["ignore"]
        for value, count in s["unknown"].items():
            report.unknown.setdefault(value, []).append(s["label"])
            report.unknown_pixels += count
        for i, j in s.get("palette_shift", {}).items():
            shifted.setdefault((i, j), []).append(s["label"])

    def add(severity: str, kind: str, message: str, files: Sequence[str] = ()) -> None:
        problems.append(Problem(severity, kind, name, message, list(files)))  # type: ignore[arg-type]

    if unreadable:
        add("error", "unreadable", f"{len(unreadable)} sample(s) cannot be read: " + "; ".join(unreadable[:MAX_NAMED]), unreadable)
    if mismatched:
        add("error", "size_mismatch", f"{len(mismatched)} label(s) differ in size from their image: {_files(mismatched)}; "
            "each pair must belong together (same stem, same resolution)", mismatched)  # fmt: skip
    if coloured:
        share = float(np.mean(palette_share))
        why = (f"{100 * share:.1f} % of their pixels have a colour of the class palette: colour-coded masks (e.g. "
               "CamVid's LabeledApproved_full, Cityscapes' *_color.png). " if share > 0.5 else
               "their colours are not the dataset's class palette (a visualisation, or a palette meant for another "
               "class list?). ")  # fmt: skip
        add("error", "colour_mask", f"{len(coloured)} label file(s) are colour images (RGB), not class ids: "
            f"{_files(coloured)}. {why}Training reads one class id per pixel: convert each colour to its class id "
            "(its index in the palette) and save as single-channel (mode L) or palette (mode P) PNGs, or point the "
            "dataset at the id masks (e.g. *_labelIds.png).", coloured)  # fmt: skip
    if grey:
        add("error", "colour_mask", f"{len(grey)} label file(s) are RGB images whose three channels are equal: class "
            f"ids saved as colour ({_files(grey)}). Training refuses RGB labels: save them single-channel, e.g. "
            "PIL's Image.open(p).convert('L').save(p).", grey)  # fmt: skip
    if report.unknown:
        files = sorted({f for fs in report.unknown.values() for f in fs})
        detail = "; ".join(f"{v} in {len(fs)} file(s) ({_files(fs)})" for v, fs in sorted(report.unknown.items()))
        add("error", "unknown_ids", f"label values that are neither a class id (0..{meta.num_classes - 1}: "
            f"{', '.join(meta.class_names[:3])}{', ...' if meta.num_classes > 3 else ''}) nor the ignore id "
            f"{meta.ignore_index}: {detail}. Fix those files, add the missing classes to the class list, or map the "
            "values to the ignore id; a loader that clips them trains them as a wrong class.", files)  # fmt: skip
    for (i, j), files in sorted(shifted.items()):
        add("warning", "palette_shift", f"palette PNGs draw class id {i} ({meta.class_names[i]}) in the colour of "
            f"class {j} ({meta.class_names[j]}): {_files(files)}. The palette index is what trains; if the colours "
            "are right, the ids are not: re-index the masks, or check the class order.", files)  # fmt: skip
    for h, files in report.hashes.items():
        if len(files) > 1:
            add("warning", "duplicate", f"{len(files)} images with the same pixels: {_files(files)}", files)
    return report


def verify_dataset(spec: DatasetSpec, registry: Registry, *, splits: Sequence[str] | None = None,
                   train_splits: Collection[str] = ("train",), num_workers: int = 0,
                   progress: bool = True) -> VerifyReport:  # fmt: skip
    """Read every sample of *splits* (default: each split the dataset offers; one that is absent on disk is a
    warning, asked-for ones must exist) and report what `VerifyReport` holds. An image in a split of
    *train_splits* and in another split is an error (evaluation leak); other repeats are warnings."""
    entry = registry.get(Dataset, spec.name)
    wanted = list(splits) if splits is not None else list(entry.cls.splits_for(spec.config))
    problems: list[Problem] = []
    built: dict[str, Dataset] = {}
    for split in wanted:
        try:
            built[split] = build_dataset(spec, registry, split)
        except EmptySplitError as exc:
            problems.append(Problem("error", "empty_split", split, f"split {split!r} holds no sample ({exc}); add its "
                                    "images and labels, or drop the split from the pipeline"))  # fmt: skip
        except DataError as exc:
            if splits is not None:
                raise
            problems.append(Problem("warning", "missing_split", split, f"split {split!r} is not there: {exc}"))
    if not built:  # nothing to scan, not even the class list: the problems are the report
        raise DataError(f"{spec.name}: no split could be read: " + "; ".join(p.message for p in problems))
    meta = next(iter(built.values())).meta
    report = VerifyReport(spec.name, meta, train_splits=tuple(s for s in wanted if s in train_splits))
    for split, dataset in built.items():
        if len(dataset) == 0:
            problems.append(Problem("error", "empty_split", split, f"split {split!r} holds no sample; add its images "
                                    "and labels, or drop the split"))  # fmt: skip
            continue
        report.splits[split] = _scan(dataset, split, meta, problems, num_workers=num_workers, progress=progress)
        problems += _pairing(dataset, split)
    for split in report.train_splits:
        part = report.splits.get(split)
        if part is not None and part.class_pixels is not None:
            absent = [n for n, c in zip(meta.class_names, part.class_pixels) if c == 0]
            if absent:
                problems.append(Problem("warning", "absent_class", split, f"class(es) {', '.join(absent)} never occur "
                                        "in this training split: the model cannot learn them"))  # fmt: skip
    problems += _cross_split_duplicates(report)
    report.problems = problems
    return report


def _pairing(dataset: Dataset, split: str) -> list[Problem]:
    """A warning when the first `PAIRING_SAMPLES` images do not line up with their own labels (`segcore.data.pairing`):
    a shuffled or mis-sorted file list, which nothing else finds and training fits anyway."""
    check = dataset_pairing(dataset, range(min(PAIRING_SAMPLES, len(dataset))))
    if not check.suspicious:
        return []
    wrong = [check.names[i] for i in check.compared if not check.fits(i)]
    return [Problem("warning", "pairing", split, f"the labels do not seem to belong to their images: of the first "
                    f"{len(check.names)} samples, {check.explain()}. Are the image and label lists sorted the same "
                    "way, with matching stems?", wrong)]  # fmt: skip


def _cross_split_duplicates(report: VerifyReport) -> list[Problem]:
    """An image in a training split and in an evaluation split is a leak (error); in two evaluation splits, or in
    two training splits, a warning."""
    out = []
    names = list(report.splits)
    for a_i, a in enumerate(names):
        for b in names[a_i + 1 :]:
            shared = report.splits[a].hashes.keys() & report.splits[b].hashes.keys()
            if not shared:
                continue
            files = [f"{report.splits[a].hashes[h][0]} = {report.splits[b].hashes[h][0]}" for h in sorted(shared)]
            leak = (a in report.train_splits) != (b in report.train_splits)
            if leak:
                trained, held_out = (a, b) if a in report.train_splits else (b, a)
                message = (f"{len(shared)} image(s) of training split {trained!r} are also in {held_out!r}: scores on "
                           f"{held_out!r} would include trained images (a leak): {_files(files)}. Remove them from one "
                           "of the splits.")  # fmt: skip
            else:
                message = f"{len(shared)} image(s) are in both {a!r} and {b!r}: {_files(files)}"
            out.append(Problem("error" if leak else "warning", "leak" if leak else "duplicate_across", f"{a}+{b}", message, files))
    return out


def format_report(report: VerifyReport) -> str:
    """The report as text: a line per split, a table of classes, the problems, a verdict."""
    meta = report.meta
    lines = [f"dataset {report.dataset}: {meta.num_classes} classes, ignore id {meta.ignore_index}"]
    for name, s in report.splits.items():
        (h, w), _n = s.sizes.most_common(1)[0] if s.sizes else ((0, 0), 0)
        hs = [k[0] for k in s.sizes]
        ws = [k[1] for k in s.sizes]
        size = (f"{w}x{h} (all)" if len(s.sizes) == 1 else
                f"{len(s.sizes)} sizes, W {min(ws, default=0)}..{max(ws, default=0)}, H {min(hs, default=0)}..{max(hs, default=0)}, "
                f"most {w}x{h}")  # fmt: skip
        modes = ", ".join(f"{m} {n}" for m, n in s.label_modes.most_common())
        lines.append(f"split {name}: {s.images} images, {size}; labels {modes}; ignore {100 * s.ignore_share:.2f} % "
                     f"of pixels")  # fmt: skip
    weights = report.weights()
    width = max(len(n) for n in meta.class_names)
    head = f"  {'class':<{width}}" + "".join(f" {s + ' px':>13} {'%':>6}" for s in report.splits)
    if weights:
        head += f"  {'w median-freq':>13} {'w enet':>7}"
    lines += ["", "pixels per class" + (f" (weights from {', '.join(report.to_dict()['class_weights']['from_splits'])})"
                                        if weights else ""), head]  # fmt: skip
    for c, cname in enumerate(meta.class_names):
        row = f"  {cname:<{width}}"
        for s in report.splits.values():
            total = max(s.labelled_pixels, 1)
            row += f" {int(s.class_pixels[c]):>13} {100 * s.class_pixels[c] / total:>6.2f}"
        if weights:
            row += f"  {weights['median_frequency'][c]:>13.4f} {weights['enet'][c]:>7.4f}"
        lines.append(row)
    lines.append(f"  {'(ignore)':<{width}}" + "".join(f" {s.ignore_pixels:>13} {'':>6}" for s in report.splits.values()))
    if weights:
        lines.append(f'  as a loss: [[loss]] name = "ce", class_weights = {weights["median_frequency"]}')
    lines.append("")
    for p in report.problems:
        where = f"[{p.split}] " if p.split else ""
        lines.append(f"{p.severity}: {where}{p.message}")
    n_err, n_warn = len(report.errors), len(report.warnings)
    lines.append(f"{'FAILED' if n_err else 'OK'}: {n_err} error(s), {n_warn} warning(s)")
    return "\n".join(lines)
