"""Focal and Dice losses as seed 000 trains Cityscapes with them (summed; BLOCKS.md 000.12); generic, so in classic
(until segcore 0.1 in segcore-plugin-hrnet-fusion; same names and keys).

Written from the definitions in BLOCKS.md 000.12 and the authors' ``nets/hrnet_training.py`` (HanLeiFeng/HRNet_Series).
Both are softmax losses over K classes (mmseg's FocalLoss is a sigmoid one-vs-all loss: a different loss).
What differs from the authors by default (each selectable): the focal mean is over labelled pixels (theirs: over
all pixels, ignored ones adding 0), and Dice leaves ignored pixels out of its false positives too (theirs: an
ignored pixel's probabilities still count as false positives).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from attrs import field, frozen
from attrs.validators import ge, gt
from torch import Tensor

from segcore import Loss, ModelOutput


@frozen
class FocalLossConfig:
    """Table [[loss]] when name = "focal": FL = -alpha (1 - p_t)^gamma log p_t per labelled pixel.

    ``average``: "valid" (mean over labelled pixels) or "all" (the authors: over every pixel, ignored ones 0).
    """

    alpha: float = field(default=0.5, validator=gt(0.0))
    gamma: float = field(default=2.0, validator=ge(0.0))
    average: Literal["valid", "all"] = "valid"


class FocalLoss(Loss):
    """logits (B, K, H, W), target (B, H, W) -> scalar."""

    def __init__(self, cfg: FocalLossConfig, *, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        self.cfg, self.ignore_index = cfg, ignore_index

    def forward(self, logits: Tensor, target: Tensor, output: ModelOutput) -> Tensor:
        valid = target != self.ignore_index
        logpt = F.log_softmax(logits.float(), dim=1).gather(1, torch.where(valid, target, 0)[:, None])[:, 0]
        loss = -self.cfg.alpha * (1 - logpt.exp()).pow(self.cfg.gamma) * logpt
        loss = torch.where(valid, loss, 0.0)
        count = valid.sum().clamp(min=1) if self.cfg.average == "valid" else valid.numel()
        return loss.sum() / count


@frozen
class DiceLossConfig:
    """Table [[loss]] when name = "dice": 1 - mean over all K classes of F_beta-style soft Dice scores.

    Per class c, summed over the batch and pixels: TP = sum p g, FP = sum p - TP, FN = sum g - TP;
    score = ((1 + b^2) TP + s) / ((1 + b^2) TP + b^2 FN + FP + s). ``ignored_in_fp``: true counts ignored pixels'
    probabilities as false positives (the authors); false (default) leaves ignored pixels out entirely.
    """

    beta: float = field(default=1.0, validator=gt(0.0))
    smooth: float = field(default=1e-5, validator=ge(0.0))
    ignored_in_fp: bool = False


class DiceLoss(Loss):
    """logits (B, K, H, W), target (B, H, W) -> scalar."""

    def __init__(self, cfg: DiceLossConfig, *, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        self.cfg, self.num_classes, self.ignore_index = cfg, num_classes, ignore_index

    def forward(self, logits: Tensor, target: Tensor, output: ModelOutput) -> Tensor:
        valid = (target != self.ignore_index)[:, None].float()  # (B, 1, H, W)
        p = F.softmax(logits.float(), dim=1)
        g = F.one_hot(torch.where(valid[:, 0].bool(), target, 0), self.num_classes).permute(0, 3, 1, 2).float() * valid
        dims = (0, 2, 3)
        tp = (p * g).sum(dims)
        fp = (p if self.cfg.ignored_in_fp else p * valid).sum(dims) - tp
        fn = g.sum(dims) - tp
        b2, s = self.cfg.beta**2, self.cfg.smooth
        score = ((1 + b2) * tp + s) / ((1 + b2) * tp + b2 * fn + fp + s)
        return 1 - score.mean()
