"""Loaders for the raw releases, one class each: the release's folder layout, split lists and label encoding."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from attrs import frozen

from segcore import DataError, DatasetMeta
from segcore import PairDataset, default_palette

from . import classes as C


def _root(root: str) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data.dataset.root: {path} is not a folder; point it at the unpacked release")
    return path


def _dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{path}: {what} folder is missing; is root the top of the unpacked release?")
    return path


def _inside(root: Path, path: Path, where: str) -> Path:
    """*path* if it stays inside *root* once ``..`` is resolved (by name: a symlinked data folder is fine)."""
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.abspath(path))
    if os.path.commonpath([base, full]) != base:
        raise DataError(f"{where}: names {path}, outside the dataset root {root}; a split list may only name files under it")
    return path


def _lut(mapping: dict[int, int], invalid: int = -1) -> np.ndarray:
    """raw value -> class id; values not in *mapping* are *invalid* (an error) unless that is the ignore id."""
    lut = np.full(256, invalid, np.int64)
    for raw, cls in mapping.items():
        lut[raw] = cls
    return lut


@frozen
class RootConfig:
    """Table [data.dataset] for a benchmark loader: where the release is unpacked."""

    root: str
    skip_bad: bool = False  # skip (with a warning) samples whose files are corrupt, instead of stopping


class CamVid(PairDataset):
    """CamVid, SegNet's 11-class 360x480 release; list files carry the absolute prefix /SegNet/CamVid/."""

    meta = DatasetMeta(tuple(n for n, _ in C.CAMVID), tuple(c for _, c in C.CAMVID), ignore_index=11)
    splits = ("train", "val", "test")

    def __init__(self, cfg: RootConfig, *, split: str) -> None:
        self.check_split(cfg, split)
        root = _root(cfg.root)
        listing = root / f"{split}.txt"
        if not listing.is_file():
            raise DataError(f"{listing}: split list is missing; the SegNet release has train.txt, val.txt and test.txt")
        pairs = []
        for n, line in enumerate(listing.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise DataError(f"{listing}:{n}: expected 'IMAGE LABEL', got {line!r}")
            # "/SegNet/CamVid/train/x.png": the last two components, relative to root
            pairs.append(tuple(_inside(root, root / Path(p).parent.name / Path(p).name, f"{listing}:{n}") for p in parts))
        super().__init__(pairs, skip_bad=cfg.skip_bad)


class Cityscapes(PairDataset):
    """Cityscapes fine annotations; labelIds mapped to the 19 train ids, everything else 255."""

    meta = DatasetMeta(tuple(n for n, _ in C.CITYSCAPES), tuple(c for _, c in C.CITYSCAPES), ignore_index=255)
    splits = ("train", "val", "test")

    def __init__(self, cfg: RootConfig, *, split: str) -> None:
        self.check_split(cfg, split)
        root = _root(cfg.root)
        images = _dir(root / "leftImg8bit" / split, "leftImg8bit/" + split)
        labels = _dir(root / "gtFine" / split, "gtFine/" + split)
        pairs = []
        for image in sorted(images.glob("*/*_leftImg8bit.png")):
            stem = image.name.removesuffix("_leftImg8bit.png")
            pairs.append((image, labels / image.parent.name / f"{stem}_gtFine_labelIds.png"))
        # labelIds 0..33 and -1 (license plate, stored as 255 in 8-bit PNGs) are all valid raw values
        mapping = {raw: 255 for raw in range(34)} | {raw: i for i, raw in enumerate(C.CITYSCAPES_LABEL_IDS)} | {255: 255}
        super().__init__(pairs, lut=_lut(mapping), skip_bad=cfg.skip_bad)


class VOCAug(PairDataset):
    """PASCAL VOC 2012 with the SBD augmentation (Hariharan et al.): train_aug = SBD train + SBD val + VOC
    train minus VOC val (10,582 images in the full releases); trainval_aug = train_aug + VOC val (12,031: what seed
    000 splits 9:1 itself, with ``[data.random_split]``)."""

    meta = DatasetMeta(C.VOC, tuple(default_palette(21)), ignore_index=255)
    splits = ("train_aug", "trainval_aug", "train", "val")

    def __init__(self, cfg: RootConfig, *, split: str) -> None:
        self.check_split(cfg, split)
        root = _root(cfg.root)
        voc = _dir(root / "VOCdevkit" / "VOC2012", "VOCdevkit/VOC2012")
        sets = voc / "ImageSets" / "Segmentation"

        def ids(path: Path) -> list[str]:
            if not path.is_file():
                raise DataError(f"{path}: split list is missing; restore it from the release archive")
            found = [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
            for n, i in found:  # an id is a file name: never a path out of the release
                if "/" in i or "\\" in i:
                    raise DataError(f"{path}:{n}: {i!r} is not an image id (ids are file names without folders)")
            return [i for _, i in found]

        if split in ("train", "val"):
            pairs = [(voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png") for i in ids(sets / f"{split}.txt")]
        else:
            sbd = _dir(root / "benchmark_RELEASE" / "dataset", "benchmark_RELEASE/dataset (SBD)")
            val = set(ids(sets / "val.txt"))
            chosen = dict.fromkeys(ids(sbd / "train.txt") + ids(sbd / "val.txt") + ids(sets / "train.txt"))
            if split == "trainval_aug":
                chosen |= dict.fromkeys(sorted(val))
                val = set()
            pairs = []
            for i in (i for i in chosen if i not in val):
                voc_png = voc / "SegmentationClass" / f"{i}.png"
                if voc_png.is_file():
                    pairs.append((voc / "JPEGImages" / f"{i}.jpg", voc_png))
                else:
                    pairs.append((sbd / "img" / f"{i}.jpg", sbd / "cls" / f"{i}.mat"))
        super().__init__(pairs, skip_bad=cfg.skip_bad)

    def load_label(self, path: Path) -> np.ndarray:
        if path.suffix != ".mat":
            return super().load_label(path)
        import scipy.io

        try:
            return scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)["GTcls"].Segmentation
        except FileNotFoundError:
            raise DataError(f"{path}: SBD label file is missing; restore it from benchmark_RELEASE") from None
        except (ValueError, KeyError, AttributeError, OSError, TypeError) as exc:
            raise DataError(f"{path}: not an SBD class label file (GTcls.Segmentation): {exc}") from None


class ADE20K(PairDataset):
    """ADE20K SceneParsing (ADEChallengeData2016): 150 classes; 0 (other) is ignored, 1..150 become 0..149."""

    meta = DatasetMeta(C.ADE20K, C.ADE20K_PALETTE, ignore_index=255)
    splits = ("train", "val")

    def __init__(self, cfg: RootConfig, *, split: str) -> None:
        self.check_split(cfg, split)
        base = _root(cfg.root) / "ADEChallengeData2016"
        folder = {"train": "training", "val": "validation"}[split]
        images = _dir(base / "images" / folder, f"ADEChallengeData2016/images/{folder}")
        labels = _dir(base / "annotations" / folder, f"ADEChallengeData2016/annotations/{folder}")
        pairs = [(p, labels / f"{p.stem}.png") for p in sorted(images.glob("*.jpg"))]
        super().__init__(pairs, lut=_lut({0: 255} | {raw: raw - 1 for raw in range(1, 151)}), skip_bad=cfg.skip_bad)


class Mapillary(PairDataset):
    """Mapillary Vistas v1.2: 65 classes, id 65 (Unlabeled) ignored; labels in ``v1.2/labels`` (the v2.0
    archive) or ``labels`` (the v1.2 archive)."""

    meta = DatasetMeta(tuple(n for n, _ in C.MAPILLARY), tuple(c for _, c in C.MAPILLARY), ignore_index=255)
    splits = ("train", "val")

    def __init__(self, cfg: RootConfig, *, split: str) -> None:
        self.check_split(cfg, split)
        base = _root(cfg.root) / {"train": "training", "val": "validation"}[split]
        images = _dir(base / "images", f"{base.name}/images")
        labels = base / "v1.2" / "labels"
        labels = labels if labels.is_dir() else _dir(base / "labels", f"{base.name}/v1.2/labels or {base.name}/labels")
        pairs = [(p, labels / f"{p.stem}.png") for p in sorted(images.glob("*.jpg"))]
        super().__init__(pairs, lut=_lut({raw: raw for raw in range(65)} | {65: 255}), skip_bad=cfg.skip_bad)


class COCOStuff(PairDataset):
    """COCO-Stuff 164k (stuffthingmaps): 182 COCO ids minus the 11 unused -> 171 classes; 255 unlabeled."""

    meta = DatasetMeta(C.COCO_STUFF, tuple(default_palette(171)), ignore_index=255)
    splits = ("train", "val")

    def __init__(self, cfg: RootConfig, *, split: str) -> None:
        self.check_split(cfg, split)
        root = _root(cfg.root)
        folder = {"train": "train2017", "val": "val2017"}[split]
        images = _dir(root / "images" / folder, f"images/{folder}")
        labels = _dir(root / "annotations" / folder, f"annotations/{folder}")
        used = [v for v in range(182) if v + 1 not in C.COCO_UNUSED_IDS]
        pairs = [(p, labels / f"{p.stem}.png") for p in sorted(images.glob("*.jpg"))]
        super().__init__(pairs, lut=_lut({raw: i for i, raw in enumerate(used)} | {255: 255}), skip_bad=cfg.skip_bad)


class BDD100K(PairDataset):
    """BDD100K semantic segmentation (10k images): 19 Cityscapes classes as train ids, 255 ignore."""

    meta = DatasetMeta(tuple(n for n, _ in C.CITYSCAPES), tuple(c for _, c in C.CITYSCAPES), ignore_index=255)
    splits = ("train", "val")

    def __init__(self, cfg: RootConfig, *, split: str) -> None:
        self.check_split(cfg, split)
        base = _root(cfg.root) / "bdd100k"
        images = _dir(base / "images" / "10k" / split, f"bdd100k/images/10k/{split}")
        labels = _dir(base / "labels" / "sem_seg" / "masks" / split, f"bdd100k/labels/sem_seg/masks/{split}")
        pairs = [(p, labels / f"{p.stem}.png") for p in sorted(images.glob("*.jpg"))]
        super().__init__(pairs, skip_bad=cfg.skip_bad)
