"""Streaming segmentation metrics from a confusion matrix."""

from __future__ import annotations

__all__ = ["ConfusionMatrix"]

import torch
from torch import Tensor


class ConfusionMatrix:
    """Accumulates a (K, K) matrix, rows = ground truth, columns = prediction; ignored pixels never count."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """pred, target: integer tensors of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        keep = target != self.ignore_index
        t, p = target[keep].long().cpu(), pred[keep].long().cpu()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_classes):
            raise ValueError(f"target holds ids outside 0..{self.num_classes - 1} that are not the ignore id {self.ignore_index}")
        k = self.num_classes
        self.matrix += torch.bincount(t * k + p, minlength=k * k).view(k, k)

    def compute(self) -> dict[str, float | list[float]]:
        """mIoU, mAcc, aAcc (pixel accuracy), fwIoU and per-class IoU/accuracy (NaN for classes never seen)."""
        m = self.matrix.double()
        tp = m.diag()
        gt, pred = m.sum(1), m.sum(0)
        iou = tp / (gt + pred - tp)
        acc = tp / gt
        present = gt > 0
        freq = gt / gt.sum().clamp(min=1)
        return {
            "mIoU": float(iou[present].mean()) if present.any() else float("nan"),
            "mAcc": float(acc[present].mean()) if present.any() else float("nan"),
            "aAcc": float(tp.sum() / gt.sum()) if gt.sum() else float("nan"),
            "fwIoU": float((freq[present] * iou[present]).sum()) if present.any() else float("nan"),
            "IoU": iou.tolist(),
            "Acc": acc.tolist(),
        }
