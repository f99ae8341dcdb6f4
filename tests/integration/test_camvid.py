"""The CamVid release (../shared/data/camvid) through the datasets plugin: the Parquet round trip and a training run
with workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from segcore import DataError, Dataset
from segcore.cli.main import main
from segcore.data.hubdata import HubDataset, HubDatasetConfig

pytest.importorskip("segcore_plugin_datasets", reason="an integration test: it needs segcore-plugin-datasets "
                    "(pip install -e plugins/datasets)")  # fmt: skip

CAMVID = Path(__file__).resolve().parents[3] / "shared" / "data" / "camvid"
needs_camvid = pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid is not here")


@needs_camvid
@pytest.mark.slow  # ~6 s: all of CamVid to parquet on 2 idle AVX2 cores
def test_parquet_round_trip_is_bit_identical_and_datasets_loads_it(tmp_path, registry, capsys):
    out = tmp_path / "camvid-hub"
    assert main(["data", "convert", "camvid", "--root", str(CAMVID), "--out", str(out), "--splits", "val",
                 "--rows-per-shard", "40"]) == 0  # fmt: skip
    assert sorted(p.name for p in (out / "data").iterdir()) == [f"val-0000{k}-of-00003.parquet" for k in range(3)]
    original = registry.get(Dataset, "camvid").build(registry.get(Dataset, "camvid").config(root=str(CAMVID)), split="val")
    hub = HubDataset(HubDatasetConfig(path=str(out)), split="val")
    assert len(hub) == 101 and hub.meta == original.meta
    for i in range(len(hub)):
        a, b = original[i], hub[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])

    import datasets

    loaded = datasets.load_dataset("parquet", data_files={"val": str(out / "data" / "val-*.parquet")}, split="val")
    assert len(loaded) == 101
    assert np.array_equal(np.asarray(loaded[5]["mask"]), original[5]["mask"].numpy())
    by_card = datasets.load_dataset(str(out), split="val")  # the card's configs say where the split is
    assert np.array_equal(np.asarray(by_card[7]["image"]), original[7]["image"].permute(1, 2, 0).numpy())


@needs_camvid
def test_training_on_camvid_with_workers_keeps_uint8_until_the_device(tmp_path, registry):
    from segcore.config import structure_pipeline
    from segcore.engine.trainer import Trainer

    raw = {
        "model": {"backbone": {"name": "timm", "model_name": "test_efficientnet", "out_indices": [1, 2, 3, 4]},
                  "decoder": {"name": "fcn", "channels": 16, "in_index": 0}},
        "data": {"dataset": {"name": "camvid", "root": str(CAMVID)}, "batch_size": 2, "num_workers": 2,
                 "augment": {"scale": [0.5, 1.0], "crop_size": [96, 96]}},
        "loss": [{"name": "ce"}],
        "train": {"iters": 2, "plots": False},
        "eval": {"scales": [0.25]},
        "run": {"device": "cpu", "out_dir": str(tmp_path / "run")},
    }  # fmt: skip
    trainer = Trainer.from_config(structure_pipeline(raw, registry=registry), registry, progress=False)
    batch = next(iter(trainer._loader(0, 0)))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (2, 3, 360, 480)
    first = [trainer._loader(0, 0).sampler.indices[:6] for _ in range(2)]
    assert first[0] == first[1]  # the same order for the same seed and epoch
    assert trainer._loader(1, 0).sampler.indices[:6] != first[0]
    trainer.val_set.pairs = trainer.val_set.pairs[:4]  # a quick evaluation
    result = trainer.fit()
    labelled = sum(int((trainer.val_set[i]["mask"] != trainer.meta.ignore_index).sum()) for i in range(4))
    assert result.matrix.shape == (11, 11) and result.matrix.sum() == labelled  # every labelled val pixel, once
    iou = np.diag(result.matrix) / (result.matrix.sum(0) + result.matrix.sum(1) - np.diag(result.matrix))
    assert result.metrics["mIoU"] == pytest.approx(np.nanmean(iou))


def test_a_camvid_list_line_leaving_the_root_is_refused(tmp_path, registry):
    root = tmp_path / "camvid"
    (root / "train").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"x")
    (root / "train.txt").write_text("/SegNet/CamVid/../secret.png /SegNet/CamVid/trainannot/a.png\n")
    entry = registry.get(Dataset, "camvid")
    with pytest.raises(DataError, match=r"train.txt:1: names .*secret.png, outside the dataset root"):
        entry.build(entry.config(root=str(root)), split="train")
