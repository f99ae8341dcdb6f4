"""Each loader on a tree made here in the release's exact layout (CamVid on the real data in ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from segcore import DataError, Dataset

CAMVID = Path(__file__).resolve().parents[4] / "shared" / "data" / "camvid"
RNG = np.random.default_rng(0)


def build(registry, name: str, root: Path, split: str, **cfg) -> Dataset:
    entry = registry.get(Dataset, name)
    return entry.build(entry.config(root=str(root), **cfg), split=split)


def image(path: Path, h: int = 12, w: int = 16) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(pixels).save(path)
    return pixels


def label(path: Path, values: list[int], h: int = 12, w: int = 16, palette: bool = False) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.array(values, np.uint8)[np.arange(h * w) % len(values)].reshape(h, w)
    im = Image.fromarray(ids, mode="L" if not palette else "P")
    if palette:
        im.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    im.save(path)
    return ids


@pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid is not here")
def test_camvid_real_release(registry):
    train, val = build(registry, "camvid", CAMVID, "train"), build(registry, "camvid", CAMVID, "val")
    assert (len(train), len(val)) == (367, 101)
    assert train.meta.num_classes == 11 and train.meta.ignore_index == 11
    seen = set()
    for i in range(len(val)):
        sample = val[i]
        assert sample["image"].shape == (3, 360, 480) and sample["image"].dtype == torch.uint8
        seen |= set(sample["mask"].unique().tolist())
    assert seen == set(range(12))  # every class and the void id appear in val
    assert train.pairs[0][0].name == "0001TP_006690.png" and train.pairs[0][1].parent.name == "trainannot"


def test_cityscapes_label_ids_to_train_ids(registry, tmp_path):
    for city, frame in (("aachen", "000000_000019"), ("bochum", "000001_000019")):
        image(tmp_path / "leftImg8bit" / "train" / city / f"{city}_{frame}_leftImg8bit.png")
        label(tmp_path / "gtFine" / "train" / city / f"{city}_{frame}_gtFine_labelIds.png", [7, 8, 26, 33, 0, 1, 255])
        label(tmp_path / "gtFine" / "train" / city / f"{city}_{frame}_gtFine_color.png", [0])  # ignored sibling files
    ds = build(registry, "cityscapes", tmp_path, "train")
    assert len(ds) == 2 and ds.meta.num_classes == 19
    mask = ds[0]["mask"]
    assert sorted(mask.unique().tolist()) == [0, 1, 13, 18, 255]  # road, sidewalk, car, bicycle, ignore


def _voc_tree(root: Path) -> None:
    voc = root / "VOCdevkit" / "VOC2012"
    sbd = root / "benchmark_RELEASE" / "dataset"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    voc_train, voc_val, sbd_train, sbd_val = ["a", "b"], ["c", "d"], ["b", "e", "c"], ["f", "g"]
    for name, ids in (("train", voc_train), ("val", voc_val), ("trainval", voc_train + voc_val)):
        (voc / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    for i in voc_train + voc_val:
        image(voc / "JPEGImages" / f"{i}.jpg")
        label(voc / "SegmentationClass" / f"{i}.png", [0, 15, 255], palette=True)
    sbd.mkdir(parents=True)
    (sbd / "train.txt").write_text("\n".join(sbd_train) + "\n")
    (sbd / "val.txt").write_text("\n".join(sbd_val) + "\n")
    for i in sbd_train + sbd_val:
        image(sbd / "img" / f"{i}.jpg")
        seg = np.full((12, 16), 7, np.uint8)
        seg[:4] = 0
        (sbd / "cls").mkdir(exist_ok=True)
        scipy.io.savemat(sbd / "cls" / f"{i}.mat", {"GTcls": {"Segmentation": seg, "Boundaries": np.zeros(1), "CategoriesPresent": np.array([7])}})


def test_voc_aug_splits_and_sbd_mat_labels(registry, tmp_path):
    _voc_tree(tmp_path)
    aug = build(registry, "voc_aug", tmp_path, "train_aug")
    # (SBD train b, e, c + SBD val f, g + VOC train a, b) minus VOC val (c, d) = b, e, f, g, a
    assert sorted(p[0].stem for p in aug.pairs) == ["a", "b", "e", "f", "g"]
    by_id = {p[0].stem: p[1] for p in aug.pairs}
    assert by_id["b"].suffix == ".png" and by_id["e"].suffix == ".mat"  # VOC's own PNG wins where it exists
    e = aug[[p[0].stem for p in aug.pairs].index("e")]["mask"]
    assert sorted(e.unique().tolist()) == [0, 7] and e[:4].eq(0).all()
    b = aug[[p[0].stem for p in aug.pairs].index("b")]["mask"]
    assert sorted(b.unique().tolist()) == [0, 15, 255]  # palette PNG: the index is the class
    assert len(build(registry, "voc_aug", tmp_path, "val")) == 2 and len(build(registry, "voc_aug", tmp_path, "train")) == 2
    everything = build(registry, "voc_aug", tmp_path, "trainval_aug")  # train_aug + VOC val: what seed 000 splits 9:1 itself
    assert sorted(p[0].stem for p in everything.pairs) == ["a", "b", "c", "d", "e", "f", "g"]
    assert {p[0].stem: p[1].suffix for p in everything.pairs}["c"] == ".png"  # VOC val keeps its VOC label


def test_ade20k_zero_is_ignored_and_ids_shift(registry, tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    image(base / "images" / "training" / "ADE_train_00000001.jpg")
    label(base / "annotations" / "training" / "ADE_train_00000001.png", [0, 1, 150])
    image(base / "images" / "validation" / "ADE_val_00000001.jpg")
    label(base / "annotations" / "validation" / "ADE_val_00000001.png", [3])
    ds = build(registry, "ade20k", tmp_path, "train")
    assert ds.meta.num_classes == 150 and ds.meta.class_names[0] == "wall"
    assert sorted(ds[0]["mask"].unique().tolist()) == [0, 149, 255]
    assert build(registry, "ade20k", tmp_path, "val")[0]["mask"].unique().tolist() == [2]


@pytest.mark.parametrize("labels_dir", ["v1.2/labels", "labels"])
def test_mapillary_v12(registry, tmp_path, labels_dir):
    image(tmp_path / "training" / "images" / "x1.jpg")
    label(tmp_path / "training" / Path(labels_dir) / "x1.png", [0, 13, 64, 65], palette=True)
    ds = build(registry, "mapillary", tmp_path, "train")
    assert ds.meta.num_classes == 65 and ds.meta.class_names[13] == "Road"
    assert sorted(ds[0]["mask"].unique().tolist()) == [0, 13, 64, 255]


def test_coco_stuff_164k_drops_the_unused_ids(registry, tmp_path):
    image(tmp_path / "images" / "train2017" / "000000000009.jpg")
    # raw 0 person, 12 (id 13, stop sign: after unused id 12 -> class 11), 91 (id 92, banner -> class 80), 181, 255
    label(tmp_path / "annotations" / "train2017" / "000000000009.png", [0, 12, 91, 181, 255])
    ds = build(registry, "coco_stuff", tmp_path, "train")
    assert ds.meta.num_classes == 171
    assert sorted(ds[0]["mask"].unique().tolist()) == [0, 11, 80, 170, 255]
    assert ds.meta.class_names[11] == "stop sign" and ds.meta.class_names[80] == "banner" and ds.meta.class_names[170] == "wood"
    label(tmp_path / "annotations" / "train2017" / "000000000009.png", [11])  # an unused id (COCO id 12)
    with pytest.raises(DataError, match=r"label values \[11\] are neither classes"):
        ds[0]


def test_bdd100k(registry, tmp_path):
    image(tmp_path / "bdd100k" / "images" / "10k" / "val" / "7d06fefd-f7be05a6.jpg")
    label(tmp_path / "bdd100k" / "labels" / "sem_seg" / "masks" / "val" / "7d06fefd-f7be05a6.png", [0, 18, 255])
    ds = build(registry, "bdd100k", tmp_path, "val")
    assert ds.meta.num_classes == 19 and sorted(ds[0]["mask"].unique().tolist()) == [0, 18, 255]


# -- bad input ------------------------------------------------------------------------------------------------------


def _ade(tmp_path: Path) -> Path:
    base = tmp_path / "ADEChallengeData2016"
    for i in range(3):
        image(base / "images" / "training" / f"ADE_train_{i:08d}.jpg")
        label(base / "annotations" / "training" / f"ADE_train_{i:08d}.png", [0, 5])
    return base


def test_corrupt_image_names_the_file(registry, tmp_path):
    base = _ade(tmp_path)
    bad = base / "images" / "training" / "ADE_train_00000001.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    ds = build(registry, "ade20k", tmp_path, "train")
    with pytest.raises(DataError, match=r"ADE_train_00000001.jpg: corrupt or unreadable image"):
        ds[1]
    with pytest.warns(UserWarning, match="skipped: .*ADE_train_00000001.jpg"):
        sample = build(registry, "ade20k", tmp_path, "train", skip_bad=True)[1]  # asked to skip: the next good one
    assert sample["image"].shape == (3, 12, 16)


def test_size_mismatch_and_missing_label(registry, tmp_path):
    base = _ade(tmp_path)
    label(base / "annotations" / "training" / "ADE_train_00000002.png", [1], h=10, w=16)
    (base / "annotations" / "training" / "ADE_train_00000000.png").unlink()
    ds = build(registry, "ade20k", tmp_path, "train")
    with pytest.raises(DataError, match=r"ADE_train_00000002.png: label is 16x10 but its image ADE_train_00000002.jpg is 16x12"):
        ds[2]
    with pytest.raises(DataError, match=r"ADE_train_00000000.png: label file is missing"):
        ds[0]


def test_missing_split_list_and_folder(registry, tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"val.txt: split list is missing"):
        build(registry, "camvid", tmp_path, "val")
    with pytest.raises(DataError, match=r"leftImg8bit/train: leftImg8bit/train folder is missing"):
        build(registry, "cityscapes", tmp_path, "train")
    with pytest.raises(DataError, match="no split 'training'"):
        build(registry, "cityscapes", tmp_path, "training")
    with pytest.raises(DataError, match="is not a folder"):
        build(registry, "ade20k", tmp_path / "nope", "train")
