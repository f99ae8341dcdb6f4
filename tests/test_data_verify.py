"""``segcore data verify``: CamVid's class pixels against its README, and generated trees (the folder dataset's real
layout, images/{split}/x.png + masks/{split}/x.png) with one problem planted each: found and named."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segcore.cli.main import main
from segcore.data.verify import class_weights

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"
CLASSES = ("road", "car", "sky")
H, W = 12, 16


COLOURS = np.array([[128, 64, 128], [0, 0, 142], [70, 130, 180]] + [[0, 0, 0]] * 253, np.int64)


def _tree(root: Path, splits: dict[str, int], *, seed: int = 0, shift: int = 0) -> dict[str, np.ndarray]:
    """Random masks of 4x4 blocks (ids 0..2, some 255 = ignore) and images painted from them with noise, in the
    folder layout; the masks returned by path. With *shift*, split file i holds mask (i - shift) % n (shuffled)."""
    rng = np.random.default_rng(seed)
    masks = {}
    for split, n in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        drawn = []
        for i in range(n):
            mask = rng.integers(0, 3, (H // 4, W // 4), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
            mask[0, : i + 1] = 255
            image = np.clip(COLOURS[mask] + rng.integers(-20, 21, (H, W, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / split / f"{split}{i}.png")
            drawn.append(mask)
        for i in range(n):
            mask = drawn[(i - shift) % n]
            Image.fromarray(mask).save(root / "masks" / split / f"{split}{i}.png")
            masks[f"{split}/{split}{i}.png"] = mask
    return masks


def _verify(root: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    argv = ["data", "verify", "folder", "--root", str(root), "--set", f"class_names={list(CLASSES)}",
            "--set", 'image_suffix=".png"', "--workers", "0", "-q", "--plot", str(tmp_path / "hist.png"), *extra]  # fmt: skip
    code = main(argv)
    return code, capsys.readouterr().out


def test_clean_tree_counts_every_pixel_and_suggests_weights(tmp_path, capsys):
    masks = _tree(tmp_path / "d", {"train": 3, "val": 2})
    code, out = _verify(tmp_path / "d", tmp_path, capsys, "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["problems"] == []
    train = [m for k, m in masks.items() if k.startswith("train")]
    expected = {name: int(sum((m == c).sum() for m in train)) for c, name in enumerate(CLASSES)}
    assert report["splits"]["train"]["class_pixels"] == expected
    assert report["splits"]["train"]["images"] == 3 and report["splits"]["val"]["images"] == 2
    assert report["splits"]["train"]["ignore_pixels"] == 1 + 2 + 3
    assert report["splits"]["train"]["ignore_share"] == pytest.approx(6 / (3 * H * W))
    assert report["splits"]["train"]["sizes"]["most_common"] == [[H, W]]
    counts = np.array(list(expected.values()), np.float64)
    assert report["class_weights"]["enet"] == pytest.approx(1 / np.log(1.02 + counts / counts.sum()), abs=1e-4)
    assert Path(report["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_class_weights_follow_median_frequency_and_enet():
    # class 0: 10 px in images of 100 px (freq 0.1); class 1: 30 of 100 (0.3); class 2: 50 of 200 (0.25); 3 absent
    w = class_weights(np.array([10, 30, 50, 0]), np.array([100, 100, 200, 0]))
    assert w["median_frequency"] == pytest.approx([2.5, 0.8333, 1.0, 0.0], abs=1e-4)
    assert w["enet"][:3] == pytest.approx([1 / np.log(1.02 + p) for p in (10 / 90, 30 / 90, 50 / 90)], abs=1e-4)
    assert w["enet"][3] == 0.0


def test_unknown_id_is_an_error_naming_the_value_and_file(tmp_path, capsys):
    masks = _tree(tmp_path / "d", {"train": 3, "val": 2})
    bad = masks["train/train1.png"].copy()
    bad[5, 5:8] = 7
    Image.fromarray(bad).save(tmp_path / "d" / "masks" / "train" / "train1.png")
    code, out = _verify(tmp_path / "d", tmp_path, capsys)
    assert code == 2
    line = next(x for x in out.splitlines() if x.startswith("error: [train]"))
    assert "neither a class id (0..2" in line and "ignore id 255" in line
    assert re.search(r"7 in 1 file\(s\) \([^)]*masks/train/train1\.png\)", line)
    assert "FAILED: 1 error(s)" in out


def test_rgb_masks_are_an_error_explained_by_the_palette(tmp_path, capsys):
    masks = _tree(tmp_path / "d", {"train": 2, "val": 2})
    palette = np.array([(0, 0, 0), (128, 0, 0), (0, 128, 0)], np.uint8)  # the folder dataset's default palette
    colour = palette[np.where(masks["val/val0.png"] == 255, 0, masks["val/val0.png"])]
    Image.fromarray(colour).save(tmp_path / "d" / "masks" / "val" / "val0.png")
    grey = np.repeat(masks["train/train0.png"][..., None], 3, axis=2)
    Image.fromarray(grey).save(tmp_path / "d" / "masks" / "train" / "train0.png")
    code, out = _verify(tmp_path / "d", tmp_path, capsys)
    assert code == 2
    val = next(x for x in out.splitlines() if x.startswith("error: [val]"))
    assert "1 label file(s) are colour images (RGB), not class ids" in val and "masks/val/val0.png" in val
    assert "100.0 % of their pixels have a colour of the class palette: colour-coded masks" in val
    train = next(x for x in out.splitlines() if x.startswith("error: [train]"))
    assert "three channels are equal" in train and "masks/train/train0.png" in train


def test_palette_png_drawing_a_class_in_another_class_colour_is_a_warning(tmp_path, capsys):
    masks = _tree(tmp_path / "d", {"train": 2, "val": 1})
    im = Image.fromarray(masks["train/train1.png"], mode="L").convert("P")
    im.putpalette([0, 0, 0, 0, 128, 0, 128, 0, 0] + [0] * (253 * 3))  # ids 1 and 2 in each other's colours
    im.save(tmp_path / "d" / "masks" / "train" / "train1.png")
    code, out = _verify(tmp_path / "d", tmp_path, capsys)
    assert code == 0
    assert "warning: [train] palette PNGs draw class id 1 (car) in the colour of class 2 (sky)" in out
    assert "labels L 1, P 1" in out


def test_an_image_in_train_and_val_is_a_leak_and_val_test_repeats_warn(tmp_path, capsys):
    _tree(tmp_path / "d", {"train": 3, "val": 2, "test": 2})
    d = tmp_path / "d"
    shutil.copy(d / "images" / "train" / "train2.png", d / "images" / "val" / "copied.png")
    shutil.copy(d / "masks" / "train" / "train2.png", d / "masks" / "val" / "copied.png")
    shutil.copy(d / "images" / "val" / "val0.png", d / "images" / "test" / "again.png")
    shutil.copy(d / "masks" / "val" / "val0.png", d / "masks" / "test" / "again.png")
    code, out = _verify(d, tmp_path, capsys, "--set", 'splits=["train", "val", "test"]')
    assert code == 2
    leak = next(x for x in out.splitlines() if x.startswith("error: [train+val]"))
    assert "1 image(s) of training split 'train' are also in 'val'" in leak and "(a leak)" in leak
    assert "images/train/train2.png = " in leak and "images/val/copied.png" in leak
    warn = next(x for x in out.splitlines() if x.startswith("warning: [val+test]"))
    assert "val0.png" in warn and "again.png" in warn
    assert "FAILED: 1 error(s), 1 warning(s)" in out


def test_labels_shuffled_against_their_images_are_a_warning_naming_them(tmp_path, capsys):
    """The file list rotated by one in train (label i stored with image i + 1): each image's edges line up with
    another file's label, named; val, in order, is not mentioned."""
    _tree(tmp_path / "d", {"train": 6}, shift=1)
    _tree(tmp_path / "d", {"val": 4}, seed=1)
    code, out = _verify(tmp_path / "d", tmp_path, capsys)
    assert code == 0
    warning = next(x for x in out.splitlines() if x.startswith("warning: [train] the labels do not seem to belong"))
    own = re.search(r"of the first 6 samples, (\d) of 6 image\(s\) line up best with their own label", warning)
    assert own and int(own.group(1)) <= 3  # a random layout may fit another image by chance
    assert "train0.png lines up best with the label filed for train1.png" in warning
    assert "[val]" not in out and "OK: 0 error(s), 1 warning(s)" in out


def test_an_empty_split_is_an_error(tmp_path, capsys):
    _tree(tmp_path / "d", {"train": 2, "val": 0})
    code, out = _verify(tmp_path / "d", tmp_path, capsys)
    assert code == 2
    assert "error: [val] split 'val' holds no sample" in out and "split train: 2 images" in out


def test_a_pipeline_is_checked_on_its_splits_with_workers(tmp_path, capsys, write_pipeline):
    masks = _tree(tmp_path / "d", {"train": 4, "val": 2, "extra": 1})
    pipeline = write_pipeline(f"""
        [model.backbone]
        name = "timm"
        model_name = "hrnet_w18_small"
        [model.decoder]
        name = "fcn"
        [data.dataset]
        name = "folder"
        root = "{tmp_path / 'd'}"
        class_names = {list(CLASSES)}
        image_suffix = ".png"
        splits = ["train", "val", "extra"]
        [data]
        num_workers = 2
        [[loss]]
        name = "ce"
    """)
    assert main(["data", "verify", str(pipeline), "--json", "-q", "--plot", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["splits"]) == ["train", "val"] and report["plot"] is None  # not "extra": the pipeline reads 2
    assert report["splits"]["train"]["class_pixels"]["car"] == sum(int((masks[f"train/train{i}.png"] == 1).sum()) for i in range(4))


def test_a_dataset_without_files_is_read_through_its_samples(tmp_path, capsys):
    code = main(["data", "verify", "shapes", "--set", "num_train=3", "--set", "num_val=2", "--set", "size=[32, 32]",
                 "--json", "-q", "--plot", "none", "--workers", "0"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["splits"]["train"]["images"] == 3
    assert sum(report["splits"]["train"]["class_pixels"].values()) == 3 * 32 * 32
    assert report["splits"]["train"]["label_modes"] == {"decoded": 3}


def _readme_train_counts() -> list[int]:
    text = " ".join((CAMVID / "README.md").read_text().split())
    found = re.search(r"Pixel counts over train \(ids 0-11\): ([\d, ]+)", text)
    assert found, "CamVid README: the pixel-count sentence moved"
    return [int(x) for x in found.group(1).replace(",", " ").split()]


@pytest.mark.skipif(not CAMVID.is_dir(), reason="needs ../shared/data/camvid")
@pytest.mark.slow  # ~7 s: reads every CamVid label on 2 idle AVX2 cores
def test_camvid_class_pixels_equal_its_readme(tmp_path, capsys):
    names = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car", "pedestrian", "bicyclist"]
    code = main(["data", "verify", "folder", "--root", str(CAMVID), "--set", f"class_names={names}",
                 "--set", "ignore_index=11", "--set", 'images="{split}"', "--set", 'masks="{split}annot"',
                 "--set", 'image_suffix=".png"', "--workers", "2", "-q", "--json", "--plot", str(tmp_path / "camvid.png")])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["problems"] == []
    train = report["splits"]["train"]
    assert train["images"] == 367 and report["splits"]["val"]["images"] == 101
    readme = _readme_train_counts()
    assert [train["class_pixels"][n] for n in names] + [train["ignore_pixels"]] == readme
    assert train["sizes"]["most_common"] == [[360, 480]] and train["sizes"]["distinct"] == 1
    assert train["class_frequency"]["road"] == pytest.approx(readme[3] / sum(readme[:11]))
    assert (tmp_path / "camvid.png").stat().st_size > 10_000


def test_the_plot_never_replaces_a_file_segcore_did_not_write(tmp_path, capsys):
    _tree(tmp_path / "d", {"train": 2, "val": 1})
    (tmp_path / "hist.png").write_text("mine")
    argv = ["data", "verify", "folder", "--root", str(tmp_path / "d"), "--set", f"class_names={list(CLASSES)}",
            "--set", 'image_suffix=".png"', "--workers", "0", "-q", "--plot", str(tmp_path / "hist.png")]  # fmt: skip
    assert main(argv) == 2
    assert "hist.png, which segcore did not write" in capsys.readouterr().err
    assert (tmp_path / "hist.png").read_text() == "mine"
    (tmp_path / "hist.png").unlink()
    assert _verify(tmp_path / "d", tmp_path, capsys)[0] == 0
    assert _verify(tmp_path / "d", tmp_path, capsys)[0] == 0  # its own plot is replaced
