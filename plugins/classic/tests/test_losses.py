"""Focal and Dice (BLOCKS.md 000.12; moved here from hrnet-fusion: generic losses live in classic) against values computed by hand on a 2x2 image with one ignored pixel."""

from __future__ import annotations

import math

import pytest
import torch

from segcore import ModelOutput
from segcore_plugin_classic.losses import DiceLoss, DiceLossConfig, FocalLoss, FocalLossConfig

# two classes; pixel probabilities (class 0): 0.5, 0.75, 0.25 and an ignored pixel at 0.5; every label is class 0
LOGITS = torch.tensor([[[[0.0, math.log(3)], [0.0, 0.0]], [[0.0, 0.0], [math.log(3), 0.0]]]])  # (1, 2, 2, 2)
TARGET = torch.tensor([[[0, 0], [0, 255]]])


def run(loss, logits=LOGITS) -> torch.Tensor:
    return loss(logits, TARGET, ModelOutput(logits=logits))


def test_focal_by_hand():
    # -alpha (1 - p)^2 log p with alpha 0.5, for p = 0.5, 0.75, 0.25
    terms = [-0.5 * (1 - p) ** 2 * math.log(p) for p in (0.5, 0.75, 0.25)]
    focal = FocalLoss(FocalLossConfig(), num_classes=2, ignore_index=255)
    assert run(focal).item() == pytest.approx(sum(terms) / 3, rel=1e-6)  # mean over the 3 labelled pixels
    authors = FocalLoss(FocalLossConfig(average="all"), num_classes=2, ignore_index=255)
    assert run(authors).item() == pytest.approx(sum(terms) / 4, rel=1e-6)  # the authors: over all 4 pixels
    plain = FocalLoss(FocalLossConfig(alpha=1.0, gamma=0.0), num_classes=2, ignore_index=255)
    assert run(plain).item() == pytest.approx(-(math.log(0.5) + math.log(0.75) + math.log(0.25)) / 3, rel=1e-6)  # = CE


def test_dice_by_hand():
    s = 1e-5
    # class 0: TP = 0.5 + 0.75 + 0.25 = 1.5, FP = 0, FN = 3 - 1.5 = 1.5; class 1: TP = 0, FP = 1.5, FN = 0
    score0, score1 = (2 * 1.5 + s) / (2 * 1.5 + 1.5 + 0 + s), s / (1.5 + s)
    dice = DiceLoss(DiceLossConfig(), num_classes=2, ignore_index=255)
    assert run(dice).item() == pytest.approx(1 - (score0 + score1) / 2, rel=1e-6)
    # the authors: the ignored pixel's probabilities (0.5, 0.5) add to both classes' FP
    score0, score1 = (2 * 1.5 + s) / (2 * 1.5 + 1.5 + 0.5 + s), s / (2.0 + s)
    authors = DiceLoss(DiceLossConfig(ignored_in_fp=True), num_classes=2, ignore_index=255)
    assert run(authors).item() == pytest.approx(1 - (score0 + score1) / 2, rel=1e-6)


@pytest.mark.parametrize("loss", [FocalLoss(FocalLossConfig(), num_classes=2, ignore_index=255),
                                  DiceLoss(DiceLossConfig(), num_classes=2, ignore_index=255)])  # fmt: skip
def test_ignored_pixel_gets_no_gradient(loss):
    logits = LOGITS.clone().requires_grad_(True)
    run(loss, logits).backward()
    assert logits.grad[0, :, 1, 1].abs().sum() == 0 and logits.grad[0, :, 0, 0].abs().sum() > 0


def test_all_ignored_gives_zero_focal_not_nan():
    focal = FocalLoss(FocalLossConfig(), num_classes=2, ignore_index=255)
    target = torch.full((1, 2, 2), 255)
    assert focal(LOGITS, target, ModelOutput(logits=LOGITS)).item() == 0.0
