"""Multi-level context inputs: pool several feature levels to one level's exact size and concatenate them.

FRM (Wang et al., "A Feature Refinement Module for Light-Weight Semantic Segmentation Network", seed 003, eq. 1)
feeds its context block with ``cat(pool(F1), pool(F2), pool(F3), F4)``; the seed's Table 2 feeds PPM and DAPPM
the same concatenation, so all three context enhancers share this helper.
"""

from __future__ import annotations

__all__ = ["adaptive_avg_pool", "context_levels", "pool_concat"]

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from segcore.errors import ContractError


def pool_concat(features: Sequence[Tensor], levels: Sequence[int] | None = None) -> Tensor:
    """Maps (B, C_i, h_i, w_i) -> (B, sum C_i, h, w) with (h, w) the size of the last chosen level.

    Every other chosen level is adaptive-average-pooled to exactly (h, w): with strides 4/8/16/32 and sizes that
    divide, that is average pooling with kernel = stride = 8/4/2; odd sizes (a 97x131 input gives a 4x5 top level
    and 25x33, 13x17, 7x9 below it) get adaptive bins instead of a size mismatch. ``levels`` None: all of them.
    """
    picked = list(features) if levels is None else [features[i] for i in levels]
    size = picked[-1].shape[-2:]
    # no `if f.shape == size` branch: a level already at that size pools to itself (bins of one pixel), and torch.export
    # cannot prove which sizes are equal for every input size
    return torch.cat([*(adaptive_avg_pool(f, size) for f in picked[:-1]), picked[-1]], dim=1)


def _bins(n_in: Tensor | int, n_out: Tensor | int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(n_out, n_in): row o averages input samples floor(o n_in / n_out) .. ceil((o + 1) n_in / n_out) - 1, the
    bins of `F.adaptive_avg_pool2d` along one axis, built from the sizes with tensor ops (symbolic when exporting)."""
    i = torch.arange(n_in, device=device)
    o = torch.arange(n_out, device=device)
    start = torch.div(o * n_in, n_out, rounding_mode="floor")
    end = torch.div((o + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
    inside = (i[None] >= start[:, None]) & (i[None] < end[:, None])
    return inside.to(dtype) / (end - start)[:, None].to(dtype)


def adaptive_avg_pool(x: Tensor, size: Sequence[int]) -> Tensor:
    """`F.adaptive_avg_pool2d` (B, C, H, W) -> (B, C, *size), exportable for every input size: torch.export
    decomposes adaptive pooling with the bins of the example's sizes baked in (the ONNX graph then fails, or is wrong,
    at any other size), so while exporting it is two products with the bin matrices (`_bins`): the same bins, the
    sums in another order (float rounding). Eager and compiled runs keep PyTorch's kernel, bit for bit."""
    if not torch.compiler.is_exporting():
        return F.adaptive_avg_pool2d(x, size)
    (h, w), (out_h, out_w) = x.shape[-2:], size
    rows = _bins(h, out_h, x.device, x.dtype)
    cols = _bins(w, out_w, x.device, x.dtype)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


def context_levels(levels: Sequence[int] | None, n: int, who: str) -> tuple[int, ...]:
    """Validate the ``levels`` key of a context enhancer for an input of *n* maps: indices (negative ones count
    from the end) of distinct levels, finest first. None: all *n*. The context map replaces the last of them."""
    if levels is None:
        return tuple(range(n))
    picked = tuple(i + n if -n <= i < 0 else i for i in levels)
    if not picked or any(not 0 <= i < n for i in picked) or list(picked) != sorted(set(picked)):
        raise ContractError(
            f"{who}: levels {list(levels)} must name distinct existing maps, finest first (the context map replaces "
            f"the last one); the input has {n} maps (0..{n - 1}). Example: levels = {list(range(n))}."
        )
    return picked
