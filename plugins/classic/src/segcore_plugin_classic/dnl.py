"""The disentangled non-local block as an Attention (Yin et al., "Disentangled Non-Local Neural Networks", ECCV
2020, arXiv:2006.06668): `segcore.layers.DisentangledNonLocal` in any attention slot, (B, C, H, W) -> same shape.

``variant`` picks the official (yinmh17/DNL-Semantic-Segmentation), mmseg (``dnl_head.py``) or seed-003 FRM
setting (the table in ``segcore/layers/dnl.py``; BLOCKS.md 003.3); the other keys override it.
"""

from __future__ import annotations

from typing import Literal

from attrs import field, frozen
from attrs.validators import gt, optional
from torch import Tensor

from segcore import Attention
from segcore.layers import DisentangledNonLocal


@frozen
class DNLConfig:
    """Table of an attention slot when name = "dnl"."""

    variant: Literal["official", "mmseg", "frm"] = "mmseg"
    key_reduction: int | None = field(default=None, validator=optional(gt(0)))  # q, k at C / this; None: variant's
    downsample: bool | None = None  # 2x2 max-pooled keys and values; None: the variant's
    temperature: float | None = field(default=None, validator=optional(gt(0.0)))  # None: the variant's


class DNL(Attention):
    """x + disentangled non-local context of x; the same shape for any H, W >= 1."""

    def __init__(self, cfg: DNLConfig, *, channels: int) -> None:
        super().__init__()
        overrides: dict[str, object] = {}
        if cfg.key_reduction is not None:
            overrides["key_channels"] = max(1, channels // cfg.key_reduction)
        if cfg.downsample is not None:
            overrides["downsample"] = cfg.downsample
        if cfg.temperature is not None:
            overrides["temperature"] = cfg.temperature
        self.block = DisentangledNonLocal.variant(cfg.variant, channels, **overrides)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)
