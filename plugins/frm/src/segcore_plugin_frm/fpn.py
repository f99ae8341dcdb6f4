"""FPN decoder as SFNet uses it (Li et al., "Semantic Flow for Fast and Accurate Scene Parsing", ECCV 2020,
arXiv:2002.10120: its "FPN" baseline, ``UperNetHead`` without the context module), the seed-003 decoder.

Written for segcore from the structure of lxtGH/SFSegNets ``network/sfnet_resnet.py`` (MIT; BLOCKS.md 003.4).
What differs from upstream: the context module (PPM there, FRM here) is an Enhancer before this decoder and
arrives as the top level; the final 1x1 classifier is the model's (SFNet's ``conv_last`` ends with it, without
dropout: set ``[model] dropout = 0.0`` to match); every resize is an upsampling place (slot ``upsample``).

    top = the context map (channels wide)                     f = top
    for levels L-1 .. 1:  f = lateral_i(F_i) + up(f)          lateral = conv1x1 (bias) -> BN -> ReLU
                          P_i = conv3x3-BN-ReLU(f)            (f goes on un-convolved, as upstream)
    cat(P_1, up(P_2), ..., up(top)) at F_1's size -> conv3x3-BN-ReLU -> (B, channels, H/4, W/4)

All resizes are bilinear with align_corners=True (SFNet's ``Upsample``), to the exact size of the target map;
the logits reach the input size the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from attrs import field, frozen
from attrs.validators import gt
from torch import Tensor, nn

from segcore import AttentionSlots, ContractError, Decoder, FeatureInfo, Resize
from segcore.layers import ConvBNAct

ALIGNED = Resize("bilinear", align_corners=True)


@frozen
class FPNDecoderConfig:
    """Table [model.decoder] when name = "sfnet_fpn" ("fpn" before 0.1, still accepted with a warning)."""

    channels: int = field(default=128, validator=gt(0))  # fpn_dim: SFNet's value for ResNet-18, the seed's


class FPNDecoder(Decoder):
    """features (finest first, the top one ``channels`` wide) -> (B, channels, H/s0, W/s0).

    Slot ``upsample``: one place per top-down step and per resize to the finest level (2 (L - 1) places).
    """

    attention_slots = ("upsample",)
    final_resize = ALIGNED

    def __init__(self, cfg: FPNDecoderConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        if len(in_features) < 2:
            raise ContractError(f"sfnet_fpn needs at least 2 levels, finest first; got {len(in_features)}")
        top = in_features[-1]
        if top.channels != cfg.channels:
            raise ContractError(
                f"the top level is the context map and must be {cfg.channels} channels wide (sfnet_fpn channels), got "
                f"{top.channels}. Put a context enhancer before it ([[model.enhancers]] name = \"frm\", \"ppm\" or "
                f"\"dappm\" with channels = {cfg.channels}), or set [model.decoder] channels = {top.channels}."
            )
        c = cfg.channels
        self.laterals = nn.ModuleList(ConvBNAct(f.channels, c, 1, bias=True) for f in in_features[:-1])
        self.outs = nn.ModuleList(ConvBNAct(c, c, 3) for _ in in_features[:-1])
        self.up_topdown = nn.ModuleList(attention.upsample("upsample", c, resize=ALIGNED) for _ in in_features[:-1])
        self.up_fuse = nn.ModuleList(attention.upsample("upsample", c, resize=ALIGNED) for _ in in_features[1:])
        self.fuse = ConvBNAct(len(in_features) * c, c, 3)
        self.out_channels = c
        self.stride = in_features[0].stride

    def forward(self, features: list[Tensor]) -> Tensor:
        f = features[-1]
        pyramid = [f]
        for i in reversed(range(len(features) - 1)):
            lateral = self.laterals[i](features[i])
            f = lateral + self.up_topdown[i](f, lateral.shape[-2:])
            pyramid.insert(0, self.outs[i](f))
        size = pyramid[0].shape[-2:]
        maps = [pyramid[0]] + [up(p, size) for up, p in zip(self.up_fuse, pyramid[1:])]
        return self.fuse(torch.cat(maps, dim=1))
