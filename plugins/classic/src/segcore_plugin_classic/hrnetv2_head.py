"""HRNetV2 segmentation head (Sun et al., "High-Resolution Representations for Labeling Pixels and Regions",
arXiv:1904.04514).

Written from the structure of HRNet/HRNet-Semantic-Segmentation ``lib/models/seg_hrnet.py`` (``last_layer``,
MIT) and mmseg ``configs/_base_/models/fcn_hr18.py``: every level resized to the finest (bilinear, to the exact
size), concatenated (15W channels for HRNetV2-WW), conv1x1 -> BN -> ReLU. The final conv1x1 to the classes is
the model's classifier. Both convs keep their bias, as upstream. The resizes of levels 2.. are upsampling places
(slot ``upsample``, BLOCKS 002.1). The logits' resize to the input size (``final_resize``) follows ``align_corners``
too, as upstream resizes both with the same setting.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from attrs import field, frozen
from attrs.validators import gt, optional
from torch import Tensor, nn

from segcore import AttentionSlots, ContractError, Decoder, FeatureInfo, Resize


@frozen
class HRNetV2HeadConfig:
    """Table [model.decoder] when name = "hrnetv2_head"."""

    channels: int | None = field(default=None, validator=optional(gt(0)))  # None: the concat width, as upstream
    align_corners: bool = False  # upstream and mmseg: False; seed 000's authors: True


class HRNetV2Head(Decoder):
    """features (finest first) -> (B, channels, H/s0, W/s0).

    Attention slots: ``per_level`` on every input level before the resize, ``upsample`` after the resize of each
    level but the finest (an upsampling place), ``after_fusion`` on the concatenation.
    """

    attention_slots = ("per_level", "upsample", "after_fusion")

    def __init__(self, cfg: HRNetV2HeadConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        if len(in_features) < 1:
            raise ContractError("hrnetv2_head needs at least one feature map")
        strides = [i.stride for i in in_features]
        if strides != sorted(strides):
            raise ContractError(f"hrnetv2_head needs levels finest first, got strides {strides}")
        total = sum(i.channels for i in in_features)
        self.per_level = nn.ModuleList(attention("per_level", i.channels) for i in in_features)
        resize = Resize("bilinear", align_corners=cfg.align_corners)
        self.upsample = nn.ModuleList(attention.upsample("upsample", i.channels, resize=resize) for i in in_features[1:])
        self.after_fusion = attention("after_fusion", total)
        self.out_channels = cfg.channels or total
        self.stride = in_features[0].stride
        self.final_resize = resize  # the logits reach the input size as the levels reach the finest one
        self.fuse = nn.Sequential(
            nn.Conv2d(total, self.out_channels, 1), nn.BatchNorm2d(self.out_channels), nn.ReLU(inplace=True)
        )

    def forward(self, features: list[Tensor]) -> Tensor:
        size = features[0].shape[-2:]
        maps = [attn(f) for attn, f in zip(self.per_level, features)]
        maps = [maps[0]] + [up(m, size) for up, m in zip(self.upsample, maps[1:])]
        return self.fuse(self.after_fusion(torch.cat(maps, dim=1)))
