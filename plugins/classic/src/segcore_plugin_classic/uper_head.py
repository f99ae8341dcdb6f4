"""UperNet head (Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018, arXiv:1807.10221), in
the form of mmseg's ``UPerHead`` (``mmseg/models/decode_heads/uper_head.py``, Apache-2.0, and
``configs/_base_/models/upernet_swin.py``; written from their structure, no code copied).

PPM + bottleneck on the top level (`PyramidPooling`); conv1x1-BN-ReLU laterals on the other levels; a top-down path
adds each level, resized to the exact size of the next finer one; conv3x3-BN-ReLU on every level but the top; all
levels resized to the finest and concatenated; conv3x3-BN-ReLU. Dropout and the conv1x1 to the classes are the
model's classifier. BLOCKS 002.2.

Upsampling places (slot ``upsample``, BLOCKS 002.1): the top-down resizes (before the add) and the resizes of
the FPN outputs to the finest level (before the concat), 2 x (levels - 1) places; the PPM's own resizes are not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from attrs import field, frozen
from attrs.validators import gt
from torch import Tensor, nn

from segcore import AttentionSlots, ContractError, Decoder, FeatureInfo, Resize
from segcore.layers import ConvBNAct

from .psp_head import _SCALES, PyramidPooling


@frozen
class UperHeadConfig:
    """Table [model.decoder] when name = "uper"."""

    channels: int = field(default=512, validator=gt(0))
    pool_scales: tuple[int, ...] = field(default=(1, 2, 3, 6), validator=_SCALES)
    align_corners: bool = False


class UperHead(Decoder):
    """features (finest first, 2 or more levels) -> (B, channels, H/s0, W/s0)."""

    attention_slots = ("upsample",)

    def __init__(self, cfg: UperHeadConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        strides = [i.stride for i in in_features]
        if len(in_features) < 2 or strides != sorted(strides):
            raise ContractError(
                f"uper needs 2 or more levels, finest first; got strides {strides}. Give it the backbone's stage "
                "outputs (out_indices) in order."
            )
        ch, resize = cfg.channels, Resize("bilinear", align_corners=cfg.align_corners)
        self.psp = PyramidPooling(in_features[-1].channels, ch, cfg.pool_scales, align_corners=cfg.align_corners)
        self.laterals = nn.ModuleList(ConvBNAct(i.channels, ch, 1) for i in in_features[:-1])
        self.fpn_convs = nn.ModuleList(ConvBNAct(ch, ch, 3) for _ in in_features[:-1])
        # top_down[i] brings level i + 1 to level i; to_finest[i] brings level i + 1 to level 0
        self.top_down = nn.ModuleList(attention.upsample("upsample", ch, resize=resize) for _ in in_features[1:])
        self.to_finest = nn.ModuleList(attention.upsample("upsample", ch, resize=resize) for _ in in_features[1:])
        self.fuse = ConvBNAct(len(in_features) * ch, ch, 3)
        self.out_channels, self.stride = ch, in_features[0].stride
        self.final_resize = resize

    def forward(self, features: list[Tensor]) -> Tensor:
        """(B, C_i, H/s_i, W/s_i) per level -> (B, channels, H/s_0, W/s_0)."""
        maps = [lateral(f) for lateral, f in zip(self.laterals, features)] + [self.psp(features[-1])]
        for i in range(len(maps) - 2, -1, -1):
            maps[i] = maps[i] + self.top_down[i](maps[i + 1], maps[i].shape[-2:])
        maps = [conv(m) for conv, m in zip(self.fpn_convs, maps)] + [maps[-1]]
        size = maps[0].shape[-2:]
        return self.fuse(torch.cat([maps[0], *(up(m, size) for up, m in zip(self.to_finest, maps[1:]))], dim=1))
