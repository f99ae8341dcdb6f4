"""Datasets made of image/label file pairs, the generic folder dataset, and what every loader shares:
decoding, label mapping and the checks that turn a bad file into a clear error."""

from __future__ import annotations

__all__ = [
    "SKIPPED", "EmptySplitError", "FolderDataset", "FolderDatasetConfig", "PairDataset", "SplitSubset", "SplitUnion", "build_dataset", "build_split", "dataset_meta", "default_palette", "drop_bad_samples", "read_image", "split_names",
    "read_label",
]  # fmt: skip

import string
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from attrs import field, frozen
from attrs.validators import gt
from PIL import Image
from torch import Tensor

from segcore.config.schema import DataConfig, DatasetSpec
from segcore.data.images import decode_image, match_channels
from segcore.errors import ConfigError, DataError
from segcore.io import check_image_pixels
from segcore.contracts.registry import Registry
from segcore.contracts.stages import Dataset, DatasetMeta, RawSample

SKIPPED = "skipped"  # the key of an evaluation sample dropped as bad (skip_bad): its DataError message
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # what read_image takes from a folder


def read_image(path: Path, channels: int = 3) -> np.ndarray:
    """(H, W, channels) uint8 or uint16: RGB for 3 (every 8-bit mode converted, as always), else the channels as
    stored (multi-channel and 16-bit TIFF, 16-bit greyscale PNG; `segcore.data.images.decode_image`); a file that
    cannot be decoded, or has other channels, is a DataError naming it."""
    path = Path(path)
    try:
        check_image_pixels(path)
        return match_channels(decode_image(path, rgb=channels == 3), channels, path)
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing; restore it or regenerate the split list") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: corrupt or unreadable image ({exc}); re-extract it from the release archive") from None


def read_label(path: Path) -> np.ndarray:
    """(H, W) integer ids from a single-channel or palette PNG (the palette index is the id)."""
    try:
        check_image_pixels(path)
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise DataError(f"{path}: label image has mode {im.mode}; labels must be single-channel or palette PNGs of class ids")
            return np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"{path}: label file is missing; restore it or regenerate the split list") from None
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: corrupt or unreadable label file ({exc}); re-extract it from the release archive") from None


def read_raw_label(path: Path) -> tuple[np.ndarray, str, tuple[tuple[int, int, int], ...] | None]:
    """A label file's values in whatever mode it has, colour masks included: (array (H, W) or (H, W, C), PIL mode,
    the palette's colours for mode "P"); for `segcore data verify`, which explains what `read_label` refuses."""
    try:
        check_image_pixels(path)
        with Image.open(path) as im:
            im.load()
            colours = None
            if im.mode == "P":
                flat = im.getpalette() or []
                colours = tuple(tuple(flat[i : i + 3]) for i in range(0, len(flat) - 2, 3))
            return np.asarray(im), im.mode, colours
    except FileNotFoundError:
        raise DataError(f"{path}: label file is missing; restore it or regenerate the split list") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: corrupt or unreadable label file ({exc}); re-extract it from the release archive") from None


class EmptySplitError(DataError):
    """A split that exists (its folder or list) but holds no sample."""


def identity_lut(num_classes: int, ignore_index: int) -> np.ndarray:
    """A 256-entry map raw id -> id that keeps 0..num_classes-1 and ignore, and flags everything else (-1)."""
    lut = np.full(256, -1, np.int64)
    lut[:num_classes] = np.arange(num_classes)
    lut[ignore_index] = ignore_index
    return lut


class PairDataset(Dataset):
    """A dataset of (image file, label file) pairs with a lookup table from raw label values to class ids.

    Subclasses set ``meta`` and fill ``self.pairs`` (and ``self.lut``, 256 entries, -1 for values that are
    neither a class nor ignored; a raw value past 255 is always an error). A sample whose files are missing,
    corrupt, of different sizes or hold unknown label values raises a DataError naming the file, unless the
    config's ``skip_bad`` is set, in which case it warns and, for training, serves the next good sample; a set read
    for evaluation (`drop_bad_samples`, every validation set) gives ``{SKIPPED: message}`` instead, which
    `segcore.engine.inference.pad_collate` leaves out of the batch and evaluation counts.
    """

    meta: DatasetMeta
    channels: int = 3  # of every image (`read_image`)
    substitute_bad: bool = True  # with skip_bad: serve the next good sample (training) or drop it (evaluation: False)

    def __init__(self, pairs: Sequence[tuple[Path, Path]], *, lut: np.ndarray | None = None, skip_bad: bool = False) -> None:
        super().__init__()
        self.pairs = list(pairs)
        self.lut = identity_lut(self.meta.num_classes, self.meta.ignore_index) if lut is None else lut
        self.skip_bad = skip_bad
        if not self.pairs:
            raise EmptySplitError(f"{type(self).__name__}: the split has no samples; check the root folder and split name")

    def __len__(self) -> int:
        return len(self.pairs)

    def load_label(self, path: Path) -> np.ndarray:
        """Raw label values of *path* (overridden for .mat labels and the like)."""
        return read_label(path)

    def raw_sample(self, index: int) -> RawSample:
        """The pair's files as stored: the label file's values in any mode (colour masks too) before the lookup
        table maps them; a subclass with its own `load_label` (.mat files) is read through it."""
        image_path, label_path = self.pairs[index]
        if type(self).load_label is PairDataset.load_label:
            label, mode, palette = read_raw_label(label_path)
        else:
            label, mode, palette = self.load_label(label_path), None, None
        return RawSample(image=read_image(image_path, self.channels), label=label, image_path=image_path, label_path=label_path,
                         label_mode=mode, palette=palette, lut=self.lut)  # fmt: skip

    def load(self, index: int) -> dict[str, Tensor]:
        image_path, label_path = self.pairs[index]
        image = read_image(image_path, self.channels)
        raw = self.load_label(label_path)
        if raw.shape != image.shape[:2]:
            raise DataError(
                f"{label_path}: label is {raw.shape[1]}x{raw.shape[0]} but its image {image_path.name} is "
                f"{image.shape[1]}x{image.shape[0]}; the pair does not belong together"
            )
        if raw.max(initial=0) > 255 or raw.min(initial=0) < 0:
            raise DataError(f"{label_path}: label values range {raw.min()}..{raw.max()}, outside 0..255")
        mask = self.lut[raw.astype(np.int64)]
        if (mask < 0).any():
            bad = sorted(set(np.unique(raw[mask < 0]).tolist()))
            raise DataError(
                f"{label_path}: label values {bad[:10]} are neither classes of {type(self).__name__} nor its ignore "
                f"value; is this the right dataset (or label file, e.g. *_labelIds vs *_color)?"
            )
        return {"image": torch.from_numpy(image.copy()).permute(2, 0, 1), "mask": torch.from_numpy(mask)}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not self.skip_bad:
            return self.load(index)
        if not self.substitute_bad:  # evaluation: a neighbour in its place would be scored twice
            try:
                return self.load(index)
            except DataError as exc:
                warnings.warn(f"skipped: {exc}", stacklevel=2)
                return {SKIPPED: str(exc)}  # type: ignore[dict-item]
        for offset in range(len(self)):
            try:
                return self.load((index + offset) % len(self))
            except DataError as exc:
                warnings.warn(f"skipped: {exc}", stacklevel=2)
        raise DataError(f"{type(self).__name__}: every sample is bad")


def _list_split(root: Path, images: str, masks: str, image_suffix: str, mask_suffix: str) -> list[tuple[Path, Path]]:
    image_dir, mask_dir = root / images, root / masks
    for folder, what in ((image_dir, "images"), (mask_dir, "masks")):
        if not folder.is_dir():
            raise DataError(f"{folder}: {what} folder is missing; check root and the {what} pattern")
    pairs = []
    for image in sorted(image_dir.rglob(f"*{image_suffix}")):
        rel = image.relative_to(image_dir)
        mask = mask_dir / rel.with_name(rel.name[: -len(image_suffix)] + mask_suffix)
        if not mask.is_file():
            raise DataError(f"{image}: no label file {mask}; add it or remove the image")
        pairs.append((image, mask))
    return pairs


def _split_pattern(key: str, value: str) -> None:
    """A folder pattern whose only placeholder is ``{split}`` (``{{``/``}}`` for literal braces), checked when the
    pipeline is read (str.format would fail later with an IndexError or KeyError)."""
    braces = "write a literal brace as {{ or }}"
    try:
        bad = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None and name != "split"]
    except ValueError as exc:  # an unmatched brace
        raise ValueError(f"{key} = {value!r}: {exc}; the only placeholder is {{split}}, {braces}") from None
    if bad:
        raise ValueError(f"{key} = {value!r}: {{{bad[0]}}} is not a placeholder segcore fills; the only one is {{split}} "
                         f"(the split's name, as in \"images/{{split}}\"); {braces}")


@frozen
class FolderDatasetConfig:
    """Table [data.dataset] when name = "folder": ``{root}/{images}`` and ``{root}/{masks}`` with ``{split}``
    filled in; a mask has the image's relative path with ``mask_suffix`` for ``image_suffix``."""

    root: str
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] | None = None
    ignore_index: int = 255
    images: str = field(default="images/{split}", validator=lambda _, a, v: _split_pattern(a.name, v))
    masks: str = field(default="masks/{split}", validator=lambda _, a, v: _split_pattern(a.name, v))
    image_suffix: str = ".jpg"
    mask_suffix: str = ".png"
    splits: tuple[str, ...] = ("train", "val")
    skip_bad: bool = False
    # channels of every image, as [model] in_channels: 3 reads 8-bit images as RGB (greyscale, palette, RGBA
    # converted); another count reads them as stored (multi-channel TIFF, 16-bit greyscale PNG: 1)
    channels: int = field(default=3, validator=gt(0))


class FolderDataset(PairDataset):
    """Any dataset laid out as image and mask folders, classes given in the config."""

    @classmethod
    def splits_for(cls, cfg: FolderDatasetConfig) -> tuple[str, ...]:
        return tuple(cfg.splits)

    def __init__(self, cfg: FolderDatasetConfig, *, split: str) -> None:
        self.check_split(cfg, split)
        self.channels = cfg.channels
        palette = cfg.palette or tuple(default_palette(len(cfg.class_names)))
        self.meta = DatasetMeta(tuple(cfg.class_names), tuple(map(tuple, palette)), cfg.ignore_index)
        root = Path(cfg.root).expanduser()
        pairs = _list_split(root, cfg.images.format(split=split), cfg.masks.format(split=split), cfg.image_suffix, cfg.mask_suffix)
        super().__init__(pairs, skip_bad=cfg.skip_bad)


def default_palette(n: int) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map: distinct colours from the bits of the class id."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


def build_dataset(spec: DatasetSpec, registry: Registry, split: str) -> Dataset:
    """The ``[data.dataset]`` table's dataset for *split*; the split is checked here, once for every dataset."""
    entry = registry.get(Dataset, spec.name, spec.plugin)
    entry.cls.check_split(spec.config, split)
    return entry.build(spec.config, split=split)


def dataset_meta(spec: DatasetSpec, registry: Registry) -> DatasetMeta:
    """The dataset's meta without building it when the class declares it (no file access)."""
    entry = registry.get(Dataset, spec.name, spec.plugin)
    meta = getattr(entry.cls, "meta", None)
    if isinstance(meta, DatasetMeta):
        return meta
    return entry.build(spec.config, split=entry.cls.splits_for(spec.config)[0]).meta


class SplitSubset(Dataset):
    """Some samples of another dataset (a `RandomSplitConfig` draw), with its meta."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.meta = dataset.meta

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.dataset[self.indices[index]]

    def raw_sample(self, index: int) -> RawSample:
        return self.dataset.raw_sample(self.indices[index])


class SplitUnion(torch.utils.data.ConcatDataset):
    """Several splits of one dataset read as one set (``train_split = ["train", "val"]``), with their meta."""

    def __init__(self, parts: Sequence[Dataset], names: Sequence[str]) -> None:
        super().__init__(parts)
        self.meta, self.names = parts[0].meta, tuple(names)
        for part, name in zip(parts[1:], names[1:], strict=True):
            if part.meta != self.meta:
                raise DataError(f"splits {names[0]!r} and {name!r} of the dataset describe different classes "
                                f"({self.meta.num_classes} and {part.meta.num_classes}); they cannot be read as one set")  # fmt: skip


def drop_bad_samples(dataset: Dataset) -> Dataset:
    """*dataset* (and the datasets it is made of) read for evaluation: with ``skip_bad``, a bad sample is dropped and
    reported (``{SKIPPED: message}``), never replaced by its neighbour, which would be scored twice. Returns it."""
    parts = list(getattr(dataset, "datasets", ())) + [getattr(dataset, "dataset", None)]
    for part in filter(None, parts):
        drop_bad_samples(part)
    if isinstance(dataset, PairDataset):
        dataset.substitute_bad = False
    return dataset


def split_names(split: str | Sequence[str]) -> tuple[str, ...]:
    """A ``train_split``/``val_split`` value as the tuple of split names it reads."""
    return (split,) if isinstance(split, str) else tuple(split)


def build_split(data: DataConfig, registry: Registry, which: Literal["train", "val"]) -> Dataset:
    """The ``[data]`` table's training or validation set: ``train_split``/``val_split`` of the dataset (one split
    or the union of several), or the two parts of a seeded ``random_split`` of one split; with ``subset``, the
    first samples of that set. The validation set is read for evaluation (`drop_bad_samples`)."""
    full = _whole_split(data, registry, which)
    if which == "val":
        drop_bad_samples(full)
    if data.subset is None or data.subset >= len(full):
        return full
    return SplitSubset(full, range(data.subset))


def _whole_split(data: DataConfig, registry: Registry, which: Literal["train", "val"]) -> Dataset:
    split = data.random_split
    if split is None:
        names = split_names(data.train_split if which == "train" else data.val_split)
        parts = [build_dataset(data.dataset, registry, name) for name in names]
        return parts[0] if len(parts) == 1 else SplitUnion(parts, names)
    full = build_dataset(data.dataset, registry, split.source)
    if len(full) < 2:
        raise ConfigError(f"data.random_split: split {split.source!r} has {len(full)} sample(s); it needs 2 to make two sets")
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(split.seed)).tolist()
    n_val = min(max(1, round(len(full) * split.val_fraction)), len(full) - 1)
    return SplitSubset(full, sorted(order[n_val:] if which == "train" else order[:n_val]))
