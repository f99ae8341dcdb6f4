"""Inference: whole-image or sliding-window, multi-scale + flip test-time augmentation, batches of mixed sizes."""

from __future__ import annotations

__all__ = ["fast_model_for", "infer", "pad_collate", "slide_logits"]

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segcore.config.schema import EvalConfig
from segcore.contracts.stages import Resize
from segcore.data.datasets import SKIPPED
from segcore.inference.fast import FastModel, cached_fast_model

Model = Callable[[Tensor], object]


def _logits(model: Model, image: Tensor) -> Tensor:
    out = model(image)
    return out.logits if hasattr(out, "logits") else out


def final_resize(model: Model) -> Resize:
    """How *model*'s logits reach another size: its decoder's declared ``final_resize`` (bilinear by default)."""
    model = getattr(model, "module", model)  # DDP / EMA wrappers
    return getattr(getattr(model, "decoder", None), "final_resize", Resize())


def slide_logits(model: Model, image: Tensor, window: Sequence[int], stride: Sequence[int]) -> Tensor:
    """Logits (B, K, H, W) averaged over windows of size *window* placed every *stride* (the last one flush with
    the border); an image smaller than the window is padded (bottom/right) and cropped back."""
    h, w = image.shape[-2:]
    wh, ww = min(window[0], h), min(window[1], w)
    sh, sw = stride
    rows = max(h - wh + sh - 1, 0) // sh + 1
    cols = max(w - ww + sw - 1, 0) // sw + 1
    total = count = None
    for r in range(rows):
        for c in range(cols):
            y0, x0 = min(r * sh, h - wh), min(c * sw, w - ww)
            logits = _logits(model, image[..., y0 : y0 + wh, x0 : x0 + ww]).float()  # at the window's size
            if total is None:
                total = logits.new_zeros(*logits.shape[:2], h, w)
                count = logits.new_zeros(1, 1, h, w)
            total[..., y0 : y0 + wh, x0 : x0 + ww] += logits
            count[..., y0 : y0 + wh, x0 : x0 + ww] += 1
    return total / count


@torch.no_grad()
def infer(model: Model, image: Tensor, cfg: EvalConfig) -> Tensor:
    """Class scores (B, K, H, W) at the input size: softmax probabilities averaged over ``cfg.scales`` and, with
    ``cfg.flip``, horizontal flips; with a single scale and no flip, the raw logits."""
    h, w = image.shape[-2:]
    resize = final_resize(model)
    if cfg.resize is not None:  # a fixed evaluation size; the scores come back to (h, w) below
        image = F.interpolate(image, size=tuple(cfg.resize), mode="bilinear", align_corners=False)
    views = [(s, f) for s in cfg.scales for f in ((False, True) if cfg.flip else (False,))]
    total = None
    for scale, flip in views:
        x = image
        if scale != 1.0:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False)
        if flip:
            x = x.flip(-1)
        logits = slide_logits(model, x, cfg.window, cfg.stride) if cfg.mode == "slide" else _logits(model, x).float()
        if flip:
            logits = logits.flip(-1)
        if logits.shape[-2:] != (h, w):
            logits = resize(logits, (h, w))
        if len(views) == 1:
            return logits
        probs = logits.softmax(1)
        total = probs if total is None else total + probs
    return total / len(views)


def pad_collate(samples: Sequence[dict[str, Tensor]], ignore_index: int = 255) -> dict[str, Tensor]:
    """Batch samples of different sizes: images zero-padded and masks ignore-padded (bottom/right) to the
    largest; ``sizes`` and ``mask_sizes`` (B, 2) keep each sample's own (H, W) so predictions can be cropped
    back and compared with the label at its own resolution. Samples dropped as bad (``SKIPPED``, evaluation with
    ``skip_bad``) are left out; their messages are the batch's ``skipped`` list (a batch of them alone has no image)."""
    skipped = [s[SKIPPED] for s in samples if SKIPPED in s]
    if skipped:
        samples = [s for s in samples if SKIPPED not in s]
        if not samples:
            return {SKIPPED: skipped}
    sizes = torch.tensor([s["image"].shape[-2:] for s in samples])
    mask_sizes = torch.tensor([s["mask"].shape[-2:] for s in samples])
    h, w = (int(v) for v in sizes.max(0).values)
    mh, mw = (int(v) for v in mask_sizes.max(0).values)
    images = torch.zeros(len(samples), samples[0]["image"].shape[0], h, w, dtype=samples[0]["image"].dtype)
    masks = torch.full((len(samples), mh, mw), ignore_index, dtype=samples[0]["mask"].dtype)
    for i, s in enumerate(samples):
        sh, sw = s["image"].shape[-2:]
        images[i, :, :sh, :sw] = s["image"]
        masks[i, : s["mask"].shape[-2], : s["mask"].shape[-1]] = s["mask"]
    return {"image": images, "mask": masks, "sizes": sizes, "mask_sizes": mask_sizes} | ({SKIPPED: skipped} if skipped else {})


def fast_model_for(model: nn.Module, cfg: EvalConfig, *, device: torch.device | str | None = None,
                   calibration: Sequence[Tensor] = ()) -> nn.Module:  # fmt: skip
    """The model inference runs for ``[eval]`` *cfg*: *model* itself with ``fast = false``, else its fast path
    (`segcore.inference.cached_fast_model`) with the table's precision, compile and int8 settings."""
    if not cfg.fast or isinstance(model, FastModel):
        return model
    options: dict[str, Any] = {"precision": cfg.precision, "compile": cfg.compile, "int8": cfg.int8}
    if cfg.int8:
        options["calibration"] = tuple(calibration)
    return cached_fast_model(model, device=device, **options)
