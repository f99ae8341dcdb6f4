"""DeepLabV3 head, atrous spatial pyramid pooling (Chen et al., "Rethinking Atrous Convolution for Semantic Image
Segmentation", arXiv:1706.05587), in the form of mmseg's ``ASPPHead`` (``mmseg/models/decode_heads/aspp_head.py``,
``configs/_base_/models/deeplabv3_r50-d8.py``, Apache-2.0; written from their structure, no code copied).

Image pooling (global average -> conv1x1-BN-ReLU -> broadcast back to the map), a conv1x1-BN-ReLU branch and
conv3x3-BN-ReLU branches at dilations 12, 24, 36, concatenated and fused by conv3x3-BN-ReLU (mmseg's bottleneck
is 3x3, the paper's 1x1). Dropout and the conv1x1 to the classes are the model's classifier. BLOCKS 002.2.

Upsampling place (slot ``upsample``): the image-pooling broadcast, the head's only conv1x1 -> resize pair. BLOCKS
002.1 calls AFU there degenerate (the map is constant) and puts it on the final logits resize instead
(``[model.attention.final_upsample]``); the slot is here for that alternative reading.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from attrs import field, frozen
from attrs.validators import deep_iterable, gt, min_len
from torch import Tensor, nn

from segcore import AttentionSlots, Decoder, FeatureInfo, Resize
from segcore.layers import ConvBNAct


@frozen
class ASPPHeadConfig:
    """Table [model.decoder] when name = "aspp". A dilation of 1 is a 1x1 branch, the others 3x3."""

    channels: int = field(default=512, validator=gt(0))  # mmseg: 512, 128 for ResNet-18
    dilations: tuple[int, ...] = field(
        default=(1, 12, 24, 36), validator=deep_iterable(member_validator=gt(0), iterable_validator=min_len(1))
    )
    in_index: int = -1  # which level, of those the head is given
    align_corners: bool = False


class ASPPHead(Decoder):
    """features -> (B, channels, H/s, W/s) of the chosen level (stride 8 on a dilated ResNet)."""

    attention_slots = ("upsample",)

    def __init__(self, cfg: ASPPHeadConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        level = in_features[cfg.in_index]
        self.in_index = cfg.in_index
        ch, resize = cfg.channels, Resize("bilinear", align_corners=cfg.align_corners)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvBNAct(level.channels, ch, 1))
        self.pool_up = attention.upsample("upsample", ch, resize=resize)
        self.branches = nn.ModuleList(
            ConvBNAct(level.channels, ch, 1 if d == 1 else 3, dilation=d) for d in cfg.dilations
        )
        self.bottleneck = ConvBNAct((len(cfg.dilations) + 1) * ch, ch, 3)
        self.out_channels, self.stride = ch, level.stride
        self.final_resize = resize

    def forward(self, features: list[Tensor]) -> Tensor:
        """(B, C_i, H/s_i, W/s_i) per level -> (B, channels, H/s, W/s) of level ``in_index``."""
        x = features[self.in_index]
        pooled = self.pool_up(self.image_pool(x), x.shape[-2:])
        return self.bottleneck(torch.cat([pooled, *(branch(x) for branch in self.branches)], dim=1))
