"""Disentangled non-local block (Yin et al., "Disentangled Non-Local Neural Networks", ECCV 2020, arXiv:2006.06668).

Written for segcore from the structure of the official yinmh17/DNL-Semantic-Segmentation
``model/seg/ops/nonlocal_block_nowd.py`` (Apache-2.0) and of mmsegmentation's ``decode_heads/dnl_head.py``
(Apache-2.0); no code copied. BLOCKS.md 003.3 lists the differences between the two, 003.2 the FRM default.

    y_i = sum_j [softmax_j((q_i - mu_q)^T (k_j - mu_k) / s) + softmax_j(m_j)] v_j,      out = x + y

The pairwise (whitened) term and the unary term have separate softmaxes and share the value embedding v.
``DisentangledNonLocal.variant(name, channels)`` builds the three published settings:

| variant      | q, k           | v               | keys, values | whitening   | pairwise logits      | out            |
|--------------|----------------|-----------------|--------------|-------------|----------------------|----------------|
| ``frm``      | C -> C/4, bias | C -> C, no bias | 2x2 max-pool | per channel | as is (eq. 3)        | x + y          |
| ``official`` | C -> C/2, bias | C -> C, no bias | full         | global      | as is, x gamma (0)   | x + y          |
| ``mmseg``    | C -> C/2, bias | C -> C/2, bias  | full         | per channel | / (sqrt(C/2) * 0.05) | x + BN(conv y) |

What differs from upstream: the 2x2 max pooling rounds up (``ceil_mode``), so a 1-pixel-high map still has a key
(upstream floors, which is the same on even sizes); mmseg's ``conv_out`` is one conv on pairwise + unary, as
there. The attention matmuls are functional ops, so thop/mmcv-style counts leave them out (BLOCKS 0.3).
"""

from __future__ import annotations

__all__ = ["DNL_VARIANTS", "DisentangledNonLocal"]

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DNL_VARIANTS = ("frm", "official", "mmseg")


class DisentangledNonLocal(nn.Module):
    """x (B, C, H, W) -> x + y, same shape. Any H, W >= 1.

    Args:
        key_channels: width of q and k (the seed's "C/4").
        value_channels: None: v maps C -> C and y is added as is; else v maps C -> value_channels and a conv1x1
            (no bias) + BatchNorm with zero-initialised weight brings y back to C (mmseg's ``conv_out``).
        downsample: keys, values and the unary mask are computed on a 2x2 max-pooled copy of x.
        whiten: subtract the spatial mean of q and k per channel (``"channel"``) or over channels and positions
            (``"global"``, the official Cityscapes setting ``ln_nostd``).
        scale: divide the pairwise logits by sqrt(key_channels); ``temperature`` divides them too.
        gamma: multiply the pairwise term by a learnable scalar initialised to 0 (official).
    """

    def __init__(
        self,
        channels: int,
        *,
        key_channels: int,
        value_channels: int | None = None,
        value_bias: bool = False,
        downsample: bool = False,
        whiten: Literal["channel", "global"] = "channel",
        scale: bool = False,
        temperature: float = 1.0,
        gamma: bool = False,
    ) -> None:
        super().__init__()
        if whiten not in ("channel", "global"):
            raise ValueError(f"whiten must be 'channel' or 'global', got {whiten!r}")
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key = nn.Conv2d(channels, key_channels, 1)
        self.value = nn.Conv2d(channels, value_channels or channels, 1, bias=value_bias)
        self.mask = nn.Conv2d(channels, 1, 1)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True) if downsample else None
        self.out = None
        if value_channels is not None:
            self.out = nn.Sequential(nn.Conv2d(value_channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
        self.gamma = nn.Parameter(torch.zeros(1)) if gamma else None
        self.whiten = whiten
        self.divisor = (math.sqrt(key_channels) if scale else 1.0) * temperature
        for m in self.modules():  # official and mmcv NonLocal init: N(0, 0.01), zero bias
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.out is not None:
            nn.init.zeros_(self.out[1].weight)  # mmseg zero-inits the output norm: the block starts as identity

    @classmethod
    def variant(cls, name: str, channels: int, **overrides: object) -> DisentangledNonLocal:
        """The ``frm``, ``official`` or ``mmseg`` setting (table in the module docstring); keywords override it."""
        quarter, half = max(1, channels // 4), max(1, channels // 2)
        presets: dict[str, dict[str, object]] = {
            "frm": dict(key_channels=quarter, downsample=True),
            "official": dict(key_channels=half, whiten="global", gamma=True),
            "mmseg": dict(key_channels=half, value_channels=half, value_bias=True, scale=True, temperature=0.05),
        }
        if name not in presets:
            raise ValueError(f"unknown DNL variant {name!r}; choose one of {', '.join(DNL_VARIANTS)}")
        return cls(channels, **(presets[name] | overrides))  # type: ignore[arg-type]

    def _whiten(self, t: Tensor) -> Tensor:
        """(B, C', N) minus its mean over positions (per channel) or over everything (global)."""
        return t - (t.mean(dim=2, keepdim=True) if self.whiten == "channel" else t.mean(dim=(1, 2), keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        src = x if self.pool is None else self.pool(x)
        q = self._whiten(self.query(x).flatten(2))  # (B, C', N)
        k = self._whiten(self.key(src).flatten(2))  # (B, C', M)
        v = self.value(src).flatten(2)  # (B, Cv, M)
        pairwise = F.softmax(torch.bmm(q.transpose(1, 2), k) / self.divisor, dim=-1)  # (B, N, M)
        y = torch.bmm(v, pairwise.transpose(1, 2))  # (B, Cv, N)
        if self.gamma is not None:
            y = self.gamma * y
        unary = F.softmax(self.mask(src).flatten(2), dim=-1)  # (B, 1, M)
        y = y + torch.bmm(v, unary.transpose(1, 2))  # + (B, Cv, 1): the same context vector at every position
        y = y.view(b, y.shape[1], h, w)  # no -1: torch.export cannot prove the size divides for every h, w
        return x + (y if self.out is None else self.out(y))
