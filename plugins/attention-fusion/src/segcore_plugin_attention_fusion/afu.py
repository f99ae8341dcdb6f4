"""Attention-based fusion up-sampling, AFU (S. Shao, "Development of an Attention Mechanism Based Multi-Layer
Feature Fusion Module in Semantic Segmentation", thesis, section III.D, eqs. (1)-(5); no arXiv id, no public code).

Written for segcore from the thesis text and BLOCKS.md 002.1; nothing ported. Eqs. (1)-(2), the 1x1 expansion and
the bilinear up-sampling, are the host's own: a decoder's existing 1x1 projection followed by an upsampling place
(``attention.upsample("upsample", ...)``, or ``[model.attention.final_upsample]`` for the classifier -> logits
resize). This Attention is eqs. (3)-(5) on the up-sampled map and has no parameters, which is how the thesis'
tables show identical parameter counts with and without the module.

Readings where the thesis is loose (BLOCKS 002.1 [AMBIGUOUS]):
- "pooling" is global (to 1x1) and its result is broadcast back to the map's size;
- "similarity" of two same-shape maps is their element-wise product;
- ``avg+max`` adds the two similarity maps before the softmax (CBAM's way of combining the two pools);
- the softmax runs over the channels of each pixel (``softmax = "spatial"``: over the positions of each channel);
- the weights sum to 1 over the softmax axis, so the output is much smaller than the input; the thesis does not
  rescale and neither do we by default (``rescale = true`` multiplies the weights by the axis length; on CamVid it
  scored lower than the literal module on every seed, plugins/attention-fusion/README.md "Sweeps").
"""

from __future__ import annotations

from typing import Literal

from attrs import frozen
from torch import Tensor, nn

from segcore import Attention


@frozen
class AFUConfig:
    """Table of an attention slot (an upsampling place) when name = "afu"."""

    pool: Literal["avg", "max", "avg+max"] = "avg"  # the thesis keeps "avg" (its Table I)
    softmax: Literal["channel", "spatial"] = "channel"
    rescale: bool = False


class AFU(Attention):
    """x (B, C, H, W), an up-sampled map -> softmax(sum over pools of x * pool(x)) * x, same shape; no parameters.

    The pools are ``nn.AdaptiveAvgPool2d(1)`` / ``nn.AdaptiveMaxPool2d(1)`` modules, so thop- and mmcv-style
    counters see them (one op per input element, the thesis' "+0.06-0.08 GFLOPs"); the products and the softmax
    are functional and invisible to those counters, as in the thesis' mmcv counts.
    """

    def __init__(self, cfg: AFUConfig, *, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.softmax_over = cfg.softmax
        self.rescale = cfg.rescale
        pools: list[nn.Module] = []
        if cfg.pool in ("avg", "avg+max"):
            pools.append(nn.AdaptiveAvgPool2d(1))
        if cfg.pool in ("max", "avg+max"):
            pools.append(nn.AdaptiveMaxPool2d(1))
        self.pools = nn.ModuleList(pools)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> (B, C, H, W)."""
        similarity = sum(x * pool(x) for pool in self.pools)  # (B, C, 1, 1) pooled maps broadcast back over H, W
        if self.softmax_over == "channel":
            weights = similarity.softmax(dim=1)
            n = x.shape[1]
        else:
            weights = similarity.flatten(2).softmax(dim=-1).view_as(x)
            n = x.shape[2] * x.shape[3]
        if self.rescale:
            weights = weights * n
        return weights * x
