"""Cross-entropy with online hard example mining over pixels (Shrivastava et al., "Training Region-based Object
Detectors with Online Hard Example Mining", CVPR 2016, arXiv:1604.03540; the pixel form of HRNet/
HRNet-Semantic-Segmentation ``lib/core/criterion.py`` (MIT) and mmseg's ``OHEMPixelSampler``
(``mmseg/structures/sampler/ohem_pixel_sampler.py``, Apache-2.0); written from their rule, no code copied).

For the labelled pixels, p = softmax probability of the true class. With p sorted ascending, the threshold is
tau = max(p at rank min(min_kept, n - 1), thresh); the pixels with p < tau are kept, so at least ``min_kept``
(when there are that many) and every pixel under ``thresh``. BLOCKS 002.3. ``min_kept`` counts per image and is
multiplied by the batch size, as mmseg (HRNet's counts per batch: ``min_kept_per = "batch"``). The loss is the mean
CE over the kept pixels (HRNet); mmseg's sampler instead weights kept pixels 1 and the rest 0 and averages over
all pixels (``normalize = "all"``) or over the labelled ones (``"valid"``, its ``avg_non_ignore``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from attrs import field, frozen
from attrs.validators import ge, gt, le
from torch import Tensor

from segcore import ConfigError, Loss, ModelOutput


@frozen
class OhemCrossEntropyConfig:
    """Table [[loss]] when name = "ohem_ce". Defaults: mmseg's usual config (thresh 0.7, 100000 pixels per image)."""

    thresh: float = field(default=0.7, validator=[gt(0.0), le(1.0)])
    min_kept: int = field(default=100_000, validator=ge(0))
    min_kept_per: Literal["image", "batch"] = "image"
    normalize: Literal["kept", "valid", "all"] = "kept"
    class_weights: tuple[float, ...] | None = None  # one per class, weighting each pixel's CE


class OhemCrossEntropyLoss(Loss):
    """logits (B, K, H, W), target (B, H, W) -> the CE of the hard pixels, a scalar."""

    def __init__(self, cfg: OhemCrossEntropyConfig, *, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        if cfg.class_weights is not None and len(cfg.class_weights) != num_classes:
            raise ConfigError(
                f"class_weights has {len(cfg.class_weights)} values for {num_classes} classes; give one per class"
            )
        weight = None if cfg.class_weights is None else torch.tensor(cfg.class_weights, dtype=torch.float32)
        self.register_buffer("weight", weight, persistent=False)
        self.cfg = cfg
        self.ignore_index = ignore_index

    def kept(self, logits: Tensor, target: Tensor) -> Tensor:
        """(B, H, W) bool: the labelled pixels OHEM keeps."""
        valid = target != self.ignore_index
        with torch.no_grad():
            prob = logits.float().softmax(dim=1).gather(1, torch.where(valid, target, 0)[:, None])[:, 0]
            p = prob[valid]
            if p.numel() == 0:
                return valid
            k = self.cfg.min_kept * (target.shape[0] if self.cfg.min_kept_per == "image" else 1)
            ranked = p.sort().values[min(k, p.numel() - 1)]
            return valid & (prob < torch.clamp(ranked, min=self.cfg.thresh))

    def forward(self, logits: Tensor, target: Tensor, output: ModelOutput) -> Tensor:
        pixel = F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=self.ignore_index, reduction="none")
        kept = self.kept(logits, target)
        total = (pixel * kept).sum()
        if self.cfg.normalize == "kept":
            count = kept.sum()
        elif self.cfg.normalize == "valid":
            count = (target != self.ignore_index).sum()
        else:
            count = torch.tensor(target.numel(), device=target.device)
        return total / count.clamp(min=1)
