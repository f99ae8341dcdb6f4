"""PSPNet head (Zhao et al., "Pyramid Scene Parsing Network", CVPR 2017, arXiv:1612.01105), in the form of mmseg's
``PSPHead`` (``mmseg/models/decode_heads/psp_head.py``, Apache-2.0; written from its structure, no code copied).

The pyramid pooling module (PPM) pools the map to 1x1, 2x2, 3x3 and 6x6, projects each with conv1x1-BN-ReLU,
resizes each back to the map's exact size and concatenates them with the map; a conv3x3-BN-ReLU bottleneck
fuses the lot. UperNet (``uper_head.py``) uses the same block on its top level. BN after the 1x1 pooling sees
one value per channel and image: train with batches of 2 or more (BLOCKS 0.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from attrs import field, frozen
from attrs.validators import deep_iterable, gt, min_len
from torch import Tensor, nn

from segcore import AttentionSlots, Decoder, FeatureInfo, Resize
from segcore.layers import ConvBNAct

_SCALES = deep_iterable(member_validator=gt(0), iterable_validator=min_len(1))


@frozen
class PSPHeadConfig:
    """Table [model.decoder] when name = "psp"."""

    channels: int = field(default=512, validator=gt(0))
    pool_scales: tuple[int, ...] = field(default=(1, 2, 3, 6), validator=_SCALES)
    in_index: int = -1  # which level, of those the head is given
    align_corners: bool = False


class PyramidPooling(nn.Module):
    """x (B, C, h, w) -> (B, channels, h, w): the PPM branches concatenated with x, then conv3x3-BN-ReLU."""

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int], *, align_corners: bool) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNAct(in_channels, channels, 1)) for s in pool_scales
        )
        self.resize = Resize("bilinear", align_corners=align_corners)
        self.bottleneck = ConvBNAct(in_channels + len(pool_scales) * channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        return self.bottleneck(torch.cat([x, *(self.resize(stage(x), size) for stage in self.stages)], dim=1))


class PSPHead(Decoder):
    """features -> (B, channels, H/s, W/s) of the chosen level (stride 8 on a dilated ResNet)."""

    def __init__(self, cfg: PSPHeadConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        level = in_features[cfg.in_index]
        self.in_index = cfg.in_index
        self.psp = PyramidPooling(level.channels, cfg.channels, cfg.pool_scales, align_corners=cfg.align_corners)
        self.out_channels, self.stride = cfg.channels, level.stride
        self.final_resize = Resize("bilinear", align_corners=cfg.align_corners)

    def forward(self, features: list[Tensor]) -> Tensor:
        """(B, C_i, H/s_i, W/s_i) per level -> (B, channels, H/s, W/s) of level ``in_index``."""
        return self.psp(features[self.in_index])
