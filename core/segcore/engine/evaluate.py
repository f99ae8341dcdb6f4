"""Streaming evaluation over a loader: exact per-size batching, metrics at the label's resolution."""

from __future__ import annotations

__all__ = ["EvalResult", "evaluate", "format_metrics"]

from collections.abc import Iterable
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from segcore.config.schema import EvalConfig
from segcore.data.images import display_rgb, model_input, to_unit
from segcore.engine.metrics import ConfusionMatrix
from segcore.contracts.stages import DatasetMeta
from segcore.data.datasets import SKIPPED
from segcore.engine.dist import all_reduce_sum
from segcore.engine.inference import final_resize, infer
from segcore.model.memory import check_inference_fits

EVAL_HINT = ("Lower [eval] batch_size or [eval] resize, evaluate in windows ([eval] mode = \"slide\"), or run on a "
             "device with more memory.")


@attrs.define
class EvalResult:
    metrics: dict[str, Any]
    matrix: np.ndarray
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (image, label, prediction) for the overlay plot
    skipped: int = 0  # bad samples left out (skip_bad), counted on every rank


def _groups(sizes: Tensor) -> dict[tuple[int, int], list[int]]:
    out: dict[tuple[int, int], list[int]] = {}
    for i, (h, w) in enumerate(sizes.tolist()):
        out.setdefault((h, w), []).append(i)
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, Tensor]],
    meta: DatasetMeta,
    device: torch.device,
    cfg: EvalConfig = EvalConfig(),
    *,
    amp: bool = False,
    channels_last: bool = False,
    keep_samples: int = 0,
    progress: bool = True,
) -> EvalResult:
    """Infer every batch (images of one size together, so padding never changes a prediction), compare with
    the labels at their own resolution, reduce the confusion matrix over all ranks. Samples a validation set drops
    as bad (``skip_bad``) are left out and counted: ``skipped`` (and ``metrics["skipped"]`` when any)."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(meta.num_classes, meta.ignore_index)
    resize = final_resize(model)
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    skipped = 0
    max_value = model_input(model)[1]
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        skipped += len(batch.get(SKIPPED, ()))
        if "image" not in batch:  # every sample of the batch was bad
            continue
        sizes = batch.get("sizes", torch.tensor([batch["image"].shape[-2:]] * len(batch["image"])))
        mask_sizes = batch.get("mask_sizes", sizes)
        for (h, w), idx in _groups(sizes).items():
            check_inference_fits(model, (len(idx), batch["image"].shape[1], h, w), cfg, device, what="evaluation",
                                 dtype=torch.bfloat16 if amp else None, hint=EVAL_HINT)  # fmt: skip
            image = to_unit(batch["image"][idx, :, :h, :w].to(device), max_value)
            if channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                scores = infer(model, image, cfg)
            for j, i in enumerate(idx):
                mh, mw = (int(v) for v in mask_sizes[i])
                s = scores[j : j + 1]
                if (mh, mw) != (h, w):
                    s = resize(s, (mh, mw))
                pred = s.argmax(1)[0].cpu()
                label = batch["mask"][i, :mh, :mw]
                cm.update(pred, label)
                if len(samples) < keep_samples:
                    img = display_rgb(batch["image"][i, :, :h, :w].permute(1, 2, 0).numpy(), max_value)
                    samples.append((img, label.numpy(), pred.numpy()))
    all_reduce_sum(cm.matrix)
    skipped_all = torch.tensor([skipped], dtype=torch.int64, device=cm.matrix.device)
    all_reduce_sum(skipped_all)
    model.train(was_training)
    metrics = cm.compute() | ({"skipped": int(skipped_all)} if int(skipped_all) else {})
    return EvalResult(metrics, cm.matrix.numpy(), samples, skipped=int(skipped_all))


def format_metrics(metrics: dict[str, Any], meta: DatasetMeta) -> str:
    """The per-class IoU/accuracy table and the summary line."""
    width = max(len(n) for n in meta.class_names + ("class",))
    rows = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}"]
    for name, iou, acc in zip(meta.class_names, metrics["IoU"], metrics["Acc"]):
        rows.append(f"{name:<{width}}  {100 * iou:6.2f}  {100 * acc:6.2f}")
    rows.append(
        f"mIoU {100 * metrics['mIoU']:.2f}  mAcc {100 * metrics['mAcc']:.2f}  "
        f"aAcc {100 * metrics['aAcc']:.2f}  fwIoU {100 * metrics['fwIoU']:.2f}"
    )
    if metrics.get("skipped"):
        rows.append(f"{metrics['skipped']} bad sample(s) skipped (skip_bad): the scores leave them out")
    return "\n".join(rows)
