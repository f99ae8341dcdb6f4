"""FUSM, the progressive bicubic fusion decoder of the improved HRNet (seed 000, section III.C, eq. 3; BLOCKS.md
000.4), with the HRNetV2 head after it (BLOCKS.md 000.2) and Table III's optional extra CCSF.

Written from the paper and the authors' code (HanLeiFeng/HRNet_Series ``34_HRNet_M_C``, ``55_…``, ``57_…``
``nets/hrnet.py``). What differs: every upsampling targets the exact size of the next finer level (the paper's
eq. 3 says "2x"; the authors' code does the same as here); each upsampling is a segcore upsampling place
(slot ``upsample``), and the maps after ``per_level`` attention are the ones fused (the paper's text for HRNet_L;
the authors' folder 57 fuses the un-attended maps, BLOCKS.md 000.8).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from attrs import field, frozen
from attrs.validators import gt, lt, optional
from torch import Tensor, nn

from segcore import AttentionSlots, ContractError, Decoder, FeatureInfo, Resize

from .blocks import CCSF_BN_EPS, CCSF_BN_MOMENTUM, ccsf


@frozen
class FUSMConfig:
    """Table [model.decoder] when name = "fusm".

    ``ccsf``: one more CCSF (15W -> 15W) on the fused 1/4 map (Table III's "CCSF" column; HRNet_S and HRNet_M).
    ``channels``: the head conv's width (default: the fused width, as the HRNetV2 head). ``mode`` /
    ``align_corners``: the fusion's upsampling (authors: bicubic, True). The logits reach the input size bicubic
    with align_corners True in every FUSM variant (the decoder's ``final_resize``).
    """

    ccsf: bool = False
    channels: int | None = field(default=None, validator=optional(gt(0)))
    mode: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    align_corners: bool = True
    ccsf_bn_eps: float = field(default=CCSF_BN_EPS, validator=gt(0.0))
    ccsf_bn_momentum: float = field(default=CCSF_BN_MOMENTUM, validator=[gt(0.0), lt(1.0)])


class FUSM(Decoder):
    """features (finest first, n >= 2 levels) -> (B, channels, H/s0, W/s0).

    z = S_{n-1}; for k = n-2 .. 0: z = cat[S_k, up(z -> size of S_k)], then CCSF (same width) unless k = 0.
    W48: 384 -> cat 576 -> CCSF(576) -> cat 672 -> CCSF(672) -> cat 720. Then [CCSF(720)], the ``after_fusion``
    attention, conv1x1 (bias) -> BN -> ReLU; the model's classifier follows.
    Slots: ``per_level`` (each input level, before fusing), ``upsample`` (each upsampling), ``after_fusion``.
    """

    attention_slots = ("per_level", "upsample", "after_fusion")
    final_resize = Resize("bicubic", align_corners=True)

    def __init__(self, cfg: FUSMConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        strides = [i.stride for i in in_features]
        if len(in_features) < 2 or strides != sorted(strides):
            raise ContractError(f"fusm needs at least 2 levels, finest first, got strides {tuple(strides)}")
        widths = [i.channels for i in in_features]
        resize = Resize(cfg.mode, align_corners=cfg.align_corners)
        bn = {"bn_eps": cfg.ccsf_bn_eps, "bn_momentum": cfg.ccsf_bn_momentum}
        self.per_level = nn.ModuleList(attention("per_level", c) for c in widths)
        ups, fuse = [], []
        z = widths[-1]
        for k in range(len(widths) - 2, -1, -1):  # coarse to fine
            ups.append(attention.upsample("upsample", z, resize=resize))
            z += widths[k]
            fuse.append(ccsf(z, z, **bn) if k > 0 else nn.Identity())
        self.ups, self.fuse = nn.ModuleList(ups), nn.ModuleList(fuse)
        self.ccsf = ccsf(z, z, **bn) if cfg.ccsf else nn.Identity()
        self.after_fusion = attention("after_fusion", z)
        self.out_channels = cfg.channels or z
        self.head = nn.Sequential(nn.Conv2d(z, self.out_channels, 1), nn.BatchNorm2d(self.out_channels), nn.ReLU(inplace=True))
        self.stride = in_features[0].stride

    def forward(self, features: list[Tensor]) -> Tensor:
        maps = [attn(f) for attn, f in zip(self.per_level, features)]
        z = maps[-1]
        for step, (up, fuse) in enumerate(zip(self.ups, self.fuse)):
            finer = maps[len(maps) - 2 - step]
            z = fuse(torch.cat([finer, up(z, finer.shape[-2:])], dim=1))
        return self.head(self.after_fusion(self.ccsf(z)))
