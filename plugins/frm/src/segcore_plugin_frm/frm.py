"""FRM, the feature refinement module (Wang et al., "A Feature Refinement Module for Light-Weight Semantic
Segmentation Network", seed 003, sec. 2.2, Fig. 2).

No public code; written for segcore from the seed's text with the concrete choices of BLOCKS.md 003.2, which
reproduce the seed's Table 2 (params to 0.01 M, GFLOPs to 0.05 G before a constant offset outside the module):

    F_c = cat(avgpool(F1), avgpool(F2), avgpool(F3), F4)        C = sum of the widths (1024 for VAN-B1), at F4's size
    -> DNL (q, k at C/4, keys/values 2x2 max-pooled, eq. 3 literally: no scaling, no gamma)       (segcore.layers)
    -> x + FFN(x), FFN = conv1x1 (C -> h) -> DW3x3 -> ReLU -> conv1x1 (h -> C), h = 128
    -> cut: conv1x1 (C -> out) -> BN -> ReLU, out = 128: the new top level for the FPN decoder

[AMBIGUOUS] choices, as options: ``order = "cut_ffn"`` puts the cut before the FFN (DNL -> cut -> 128 -> 1024
-> 128, a true expansion; also fits the numbers); ``dnl = "official" | "mmseg"`` swaps the DNL setting.

The contract: 4 levels in, 4 out; the levels named in ``levels`` are pooled and concatenated, the context map
replaces the last of them, the others pass through (they still reach the decoder as laterals).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from attrs import field, frozen
from attrs.validators import gt
from torch import Tensor, nn

from segcore import AttentionSlots, Enhancer, FeatureInfo
from segcore.layers import ConvBNAct, DisentangledNonLocal, context_levels, pool_concat


@frozen
class FRMConfig:
    """Table [[model.enhancers]] when name = "frm"."""

    channels: int = field(default=128, validator=gt(0))  # width of the map that replaces the top level
    ffn_channels: int = field(default=128, validator=gt(0))  # h, calibrated on Table 2 (BLOCKS 003.2)
    key_reduction: int = field(default=4, validator=gt(0))  # q, k at C / 4 (seed sec. 3.2)
    dnl: Literal["frm", "official", "mmseg"] = "frm"
    order: Literal["ffn_cut", "cut_ffn"] = "ffn_cut"
    levels: tuple[int, ...] | None = None  # pooled + concatenated, finest first; None: all (the seed's eq. 1)


class FFN(nn.Module):
    """x + conv1x1 (C -> h) -> DW3x3 -> ReLU -> conv1x1 (h -> C) (x): the seed's FFN with a residual. Same shape."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fc2(self.act(self.dw(self.fc1(x))))


class FRM(Enhancer):
    """features (finest first) -> the same list with the last chosen level replaced by (B, channels, h, w), the
    size of that level. Slot ``context`` follows the cut (on the ``channels``-wide map)."""

    attention_slots = ("context",)

    def __init__(self, cfg: FRMConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        self.levels = context_levels(cfg.levels, len(in_features), "frm")
        width = sum(in_features[i].channels for i in self.levels)
        dnl = DisentangledNonLocal.variant(cfg.dnl, width, key_channels=max(1, width // cfg.key_reduction))
        cut = ConvBNAct(width, cfg.channels, 1)
        if cfg.order == "ffn_cut":
            self.refine = nn.Sequential(dnl, FFN(width, cfg.ffn_channels), cut)
        else:
            self.refine = nn.Sequential(dnl, cut, FFN(cfg.channels, cfg.ffn_channels))
        self.context = attention("context", cfg.channels)
        top = self.levels[-1]
        self.top = top
        self.feature_info = tuple(
            FeatureInfo(cfg.channels, f.stride) if i == top else f for i, f in enumerate(in_features)
        )

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        out = list(features)
        out[self.top] = self.context(self.refine(pool_concat(features, self.levels)))
        return out
