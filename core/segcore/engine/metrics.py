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
        """pred, target: integer tensors of the same shape; pred holds class ids 0..K-1 (an argmax).

        One pass and one bincount over every pixel, ignored ones included: id t * K + p puts target t in row t, so
        ignored pixels fill the ignore id's row, which is dropped, and any other row past K-1 must stay empty (a
        label outside the classes is an error). No boolean masking, no copy of the labelled pixels: 6x
        torchmetrics' MulticlassJaccardIndex update on the CamVid val maps (bench/bench_metrics.py, one thread)."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        k, ignore = self.num_classes, self.ignore_index
        if ignore < 0:  # a negative ignore id cannot be a row: mask it out first
            keep = target != ignore
            pred, target = pred[keep], target[keep]
        rows = max(k, ignore + 1)
        wide = torch.int32 if rows * k < 2**31 else torch.int64
        index = target.reshape(-1).to(wide) * k + pred.reshape(-1).to(wide)
        try:
            counts = torch.bincount(index, minlength=rows * k)
        except RuntimeError:  # negative ids
            counts = None
        if counts is None or counts.numel() > rows * k or _outside(counts.view(-1, k), k, ignore):
            raise ValueError(f"target holds ids outside 0..{k - 1} that are not the ignore id {ignore}")
        matrix = counts[: k * k].view(k, k)
        if 0 <= ignore < k:  # an ignore id among the class ids: its row holds exactly the ignored pixels
            matrix[ignore] = 0
        self.matrix += matrix.cpu()

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


def _outside(rows: Tensor, num_classes: int, ignore_index: int) -> bool:
    """Whether any pixel was counted in a row past the classes other than the ignore id's."""
    extra = rows[num_classes:]
    if 0 <= ignore_index - num_classes < len(extra):
        extra = torch.cat([extra[: ignore_index - num_classes], extra[ignore_index - num_classes + 1 :]])
    return bool(extra.any())
