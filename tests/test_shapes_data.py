"""The embedded procedurally generated dataset."""

from __future__ import annotations

import torch

from segcore.builtin.datasets import CLASSES, ShapesConfig, ShapesDataset


def test_same_seed_same_samples_other_seed_other_samples():
    a = ShapesDataset(ShapesConfig(size=(48, 64), seed=3), split="train")
    b = ShapesDataset(ShapesConfig(size=(48, 64), seed=3), split="train")
    c = ShapesDataset(ShapesConfig(size=(48, 64), seed=4), split="train")
    assert torch.equal(a[5]["image"], b[5]["image"]) and torch.equal(a[5]["mask"], b[5]["mask"])
    assert not torch.equal(a[5]["image"], c[5]["image"])
    assert a[5]["image"].shape == (3, 48, 64)


def test_splits_differ_and_have_their_lengths():
    cfg = ShapesConfig(size=(32, 32), num_train=10, num_val=3)
    train, val = ShapesDataset(cfg, split="train"), ShapesDataset(cfg, split="val")
    assert (len(train), len(val)) == (10, 3)
    assert not torch.equal(train[0]["image"], val[0]["image"])


def test_every_class_appears_and_shapes_cover_a_fair_share():
    ds = ShapesDataset(ShapesConfig(size=(64, 64), num_train=64), split="train")
    counts = torch.zeros(len(CLASSES))
    for i in range(len(ds)):
        counts += torch.bincount(ds[i]["mask"].flatten(), minlength=len(CLASSES))
    share = counts / counts.sum()
    assert (share > 0.01).all(), share
    assert 0.5 < share[0] < 0.95  # background dominates but does not swamp
