"""Data in core: folder datasets, the Hub parquet round trip, kornia batch augmentation, loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segcore import DataError, Dataset
from segcore.data.augment import AugmentConfig, BatchAugment
from segcore.cli.main import main
from segcore.data.hubdata import HubDataset, HubDatasetConfig

def _folder_tree(root: Path, n: int = 3) -> None:
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for i in range(n):
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (10 + i, 14, 3), dtype=np.uint8)).save(root / "images" / split / f"{i}.png")
            Image.fromarray(rng.integers(0, 3, (10 + i, 14), dtype=np.uint8)).save(root / "masks" / split / f"{i}.png")


def test_folder_dataset(tmp_path, registry):
    _folder_tree(tmp_path)
    entry = registry.get(Dataset, "folder")
    cfg = entry.config(root=str(tmp_path), class_names=("a", "b", "c"), image_suffix=".png")
    ds = entry.build(cfg, split="val")
    assert len(ds) == 3 and ds.meta.palette[1] == (128, 0, 0)
    assert ds[2]["image"].shape == (3, 12, 14) and set(ds[2]["mask"].unique().tolist()) <= {0, 1, 2}
    (tmp_path / "masks" / "val" / "1.png").unlink()
    with pytest.raises(DataError, match=r"1.png: no label file"):
        entry.build(cfg, split="val")


def test_hub_dataset_from_a_prepopulated_cache_offline(tmp_path, monkeypatch, registry):
    """A Hub repo that was downloaded before: HF_HUB_OFFLINE=1 loads it from the cache, no network."""
    from segcore.builtin.datasets import ShapesConfig, ShapesDataset
    from segcore.hub.datasets import convert

    src = convert({"train": ShapesDataset(ShapesConfig(size=(24, 24), num_train=5), split="train")}, tmp_path / "src", title="shapes")
    cache = tmp_path / "hf-cache"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "datasets--segcore--shapes-mini"
    shutil.copytree(src, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as const

    monkeypatch.setattr(const, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(const, "HF_HUB_OFFLINE", True)
    ds = registry.get(Dataset, "hub").build(HubDatasetConfig(path="segcore/shapes-mini"), split="train")
    expected = ShapesDataset(ShapesConfig(size=(24, 24), num_train=5), split="train")
    assert len(ds) == 5 and ds.meta.class_names == expected.meta.class_names
    assert torch.equal(ds[3]["image"], expected[3]["image"]) and torch.equal(ds[3]["mask"], expected[3]["mask"])
    with pytest.raises(DataError, match="not in the Hugging Face cache"):
        HubDataset(HubDatasetConfig(path="segcore/not-downloaded"), split="train")


def test_push_uploads_the_folder(tmp_path, monkeypatch, capsys):
    """Everything up to the upload itself (the Hub cannot be reached from here)."""
    from segcore.builtin.datasets import ShapesConfig, ShapesDataset
    from segcore.hub.datasets import convert

    folder = convert({"val": ShapesDataset(ShapesConfig(size=(16, 16), num_val=2), split="val")}, tmp_path / "d", title="t")
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kw):
            calls.append(("create", repo_id, kw))

        def upload_folder(self, **kw):
            calls.append(("upload", kw["repo_id"], kw))
            return "https://huggingface.co/datasets/me/shapes/commit/abc"

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    assert main(["data", "push", str(folder), "--repo-id", "me/shapes"]) == 0
    assert [c[:2] for c in calls] == [("create", "me/shapes"), ("upload", "me/shapes")]
    assert calls[1][2]["repo_type"] == "dataset" and calls[1][2]["folder_path"] == str(folder)
    assert main(["data", "push", str(tmp_path), "--repo-id", "me/x"]) == 2
    assert "not a converted dataset" in capsys.readouterr().err


# -- augmentation ----------------------------------------------------------------------------------------------------


def _encoded_batch(b: int = 4, h: int = 48, w: int = 64, classes: int = 5):
    """Blocky labels and an image whose red channel encodes the label: (label + 1) * 40 / 255."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, classes, (b, h // 8, w // 8), generator=g)
    mask = coarse.repeat_interleave(8, 1).repeat_interleave(8, 2)
    image = torch.zeros(b, 3, h, w)
    image[:, 0] = (mask + 1).float() * 40 / 255
    image[:, 1] = torch.rand(b, h, w, generator=g)
    return image, mask


@pytest.mark.parametrize("seed", range(5))
def test_augment_keeps_labels_and_alignment(seed):
    torch.manual_seed(seed)
    image, mask = _encoded_batch()
    aug = BatchAugment(AugmentConfig(scale=(0.5, 2.0), crop_size=(40, 40), hflip=0.5), ignore_index=255)
    out_image, out_mask = aug(image, mask)
    assert out_image.shape == (4, 3, 40, 40) and out_mask.shape == (4, 40, 40) and out_mask.dtype == torch.int64
    assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist()) | {255}
    decoded = (out_image[:, 0] * 255 / 40).round().long() - 1
    # away from label edges and the crop border (where the image is interpolated, with the padding too) every
    # labelled pixel's image encodes its label
    pad = torch.nn.functional.pad(out_mask[:, None].float(), (1, 1, 1, 1), value=-1.0)
    flat = (torch.nn.functional.max_pool2d(pad, 3, 1) == -torch.nn.functional.max_pool2d(-pad, 3, 1))[:, 0]
    keep = flat & (out_mask != 255)
    assert keep.sum() > 1000
    assert torch.equal(decoded[keep], out_mask[keep])
    pad5 = torch.nn.functional.pad((out_mask == 255)[:, None].float(), (2, 2, 2, 2), mode="replicate")
    deep_padding = -torch.nn.functional.max_pool2d(-pad5, 5, 1)[:, 0] == 1
    assert (out_image[:, 0][deep_padding] == 0).all()  # where the crop left the image, the image is zero-padded


def test_zero_padding_never_becomes_class_zero():
    torch.manual_seed(0)
    image, mask = _encoded_batch()
    mask.zero_()  # every pixel is class 0: padding must still come out as ignore, not 0
    out_image, out_mask = BatchAugment(AugmentConfig(scale=(0.25, 0.3), crop_size=(48, 64), hflip=0.0), 255)(image, mask)
    assert (out_mask == 255).sum() > 0 and set(out_mask.unique().tolist()) == {0, 255}


def test_colour_jitter_touches_only_the_image():
    torch.manual_seed(0)
    image, mask = _encoded_batch()
    out_image, out_mask = BatchAugment(AugmentConfig(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, hflip=0.0), 255)(image, mask)
    assert torch.equal(out_mask, mask) and not torch.equal(out_image, image)


def test_augmentation_is_reproducible_per_seed():
    image, mask = _encoded_batch()
    aug = BatchAugment(AugmentConfig(scale=(0.5, 2.0), crop_size=(32, 32), brightness=0.3), 255)
    torch.manual_seed(7)
    a = aug(image, mask)
    torch.manual_seed(7)
    b = aug(image, mask)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# -- loading -----------------------------------------------------------------------------------------------------


def test_worker_errors_reach_the_user_without_a_traceback(tmp_path, capsys):
    _folder_tree(tmp_path / "data", n=4)
    (tmp_path / "data" / "images" / "train" / "2.png").write_bytes(b"broken")
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(f"""
[model.backbone]
name = "timm"
model_name = "test_efficientnet"
out_indices = [1, 2, 3, 4]
[model.decoder]
name = "fcn"
channels = 8
[data.dataset]
name = "folder"
root = "{tmp_path / 'data'}"
class_names = ["a", "b", "c"]
image_suffix = ".png"
[data]
batch_size = 2
num_workers = 1
[[loss]]
name = "ce"
[train]
epochs = 1
[run]
device = "cpu"
out_dir = "{tmp_path / 'run'}"
""")
    assert main(["run", str(pipeline), "-q"]) == 2
    err = capsys.readouterr().err
    assert "2.png: corrupt or unreadable image" in err and "Traceback" not in err


def test_convert_reports_a_missing_root_without_traceback(capsys):
    assert main(["data", "convert", "camvid", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "segcore data convert camvid (--root/--set): invalid pipeline config" in err
    assert "root: missing required key" in err and "Traceback" not in err
