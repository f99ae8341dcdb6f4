"""BFEM, the backbone feature enhancement module of the improved HRNet (seed 000, section III.B; BLOCKS.md 000.6).

Rewrites the two coarsest levels (HRNet's 1/16 and 1/32 streams) with MSCAN units and passes the others through.
Written from the paper's Fig. 1 and the authors' code (HanLeiFeng/HRNet_Series ``55_HRNet_MSCN_M_ECA/nets/hrnet.py``,
``MSCN/MSCA.py``): their channel, depth and stride layout, with SegNeXt's official MSCAN unit (`blocks.MSCANBlock`).
What differs from the authors: plain BatchNorm2d (momentum 0.1) instead of a SyncBN with momentum 3e-4, whose
running statistics hardly move (BLOCKS.md 000.6); thop-style counting therefore sees 27,840 more parameters
(those norms and the layer scales) than the authors' Table III.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from attrs import field, frozen
from attrs.validators import ge, gt, lt
from torch import Tensor, nn

from segcore import AttentionSlots, ContractError, Enhancer, FeatureInfo

from .blocks import CCSF_BN_EPS, CCSF_BN_MOMENTUM, MSCANBlock, MSCANBlockConfig, ccsf, init_mscan


@frozen
class BFEMConfig:
    """Table [[model.enhancers]] when name = "bfem".

    ``depths``: MSCAN units on the 1/16 level, after its stride-2 conv (the 1/16 -> 1/32 branch), and on the
    1/32 level (the paper's 5, 3, 5). ``mlp_ratio``, ``layer_scale``, ``drop_path``: the units' settings (4, 1e-2,
    0 as the authors). ``ccsf_bn_eps`` / ``ccsf_bn_momentum``: the two merging CCSFs' BN (authors: 1e-3, 0.03).
    """

    depths: tuple[int, int, int] = (5, 3, 5)
    mlp_ratio: float = field(default=4.0, validator=gt(0.0))
    layer_scale: float = field(default=1e-2, validator=gt(0.0))
    drop_path: float = field(default=0.0, validator=[ge(0.0), lt(1.0)])
    ccsf_bn_eps: float = field(default=CCSF_BN_EPS, validator=gt(0.0))
    ccsf_bn_momentum: float = field(default=CCSF_BN_MOMENTUM, validator=[gt(0.0), lt(1.0)])


def _stem(channels: int) -> nn.Sequential:
    """conv3x3 (C -> C/2, bias) -> BN -> GELU -> conv3x3 (C/2 -> C, bias) -> BN, stride 1 (the authors' StemConv)."""
    half = max(1, channels // 2)
    return nn.Sequential(
        nn.Conv2d(channels, half, 3, padding=1), nn.BatchNorm2d(half), nn.GELU(),
        nn.Conv2d(half, channels, 3, padding=1), nn.BatchNorm2d(channels),
    )  # fmt: skip


class BFEM(Enhancer):
    """features (finest first, >= 2 levels) -> the same levels with the last two rewritten, same channels.

    A on S16 (C16): stem, depths[0] units, BN -> A0 (C16 @1/16); conv3x3 s2 (C16 -> C32, bias, no norm),
    depths[1] units, BN -> A1 (C32 @1/32). B on S32 (C32): stem, depths[2] units, BN -> B0.
    S16' = CCSF(cat[S16, A0]) (2 C16 -> C16); S32' = CCSF(cat[S32, B0, A1]) (3 C32 -> C32).
    The stride-2 conv gives ceil(H16 / 2) rows, which is S32's size for any input (asserted in forward).
    """

    def __init__(self, cfg: BFEMConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        if len(in_features) < 2 or in_features[-1].stride != 2 * in_features[-2].stride:
            raise ContractError(
                f"bfem needs at least 2 levels, the last two at strides s and 2s (HRNet's 1/16 and 1/32), got strides "
                f"{tuple(i.stride for i in in_features)}. Put it right after an HRNet backbone."
            )
        c16, c32 = in_features[-2].channels, in_features[-1].channels
        unit = MSCANBlockConfig(mlp_ratio=cfg.mlp_ratio, layer_scale=cfg.layer_scale, drop_path=cfg.drop_path)
        self.stem16 = _stem(c16)
        self.units16 = nn.Sequential(*(MSCANBlock(c16, unit) for _ in range(cfg.depths[0])))
        self.norm16 = nn.BatchNorm2d(c16)
        self.down = nn.Conv2d(c16, c32, 3, stride=2, padding=1)
        self.units16_32 = nn.Sequential(*(MSCANBlock(c32, unit) for _ in range(cfg.depths[1])))
        self.norm16_32 = nn.BatchNorm2d(c32)
        self.stem32 = _stem(c32)
        self.units32 = nn.Sequential(*(MSCANBlock(c32, unit) for _ in range(cfg.depths[2])))
        self.norm32 = nn.BatchNorm2d(c32)
        for part in (self.stem16, self.down, self.stem32):
            init_mscan(part)
        bn = {"bn_eps": cfg.ccsf_bn_eps, "bn_momentum": cfg.ccsf_bn_momentum}
        self.fuse16 = ccsf(2 * c16, c16, **bn)
        self.fuse32 = ccsf(3 * c32, c32, **bn)
        self.feature_info = tuple(in_features)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        s16, s32 = features[-2], features[-1]
        a0 = self.norm16(self.units16(self.stem16(s16)))
        a1 = self.norm16_32(self.units16_32(self.down(a0)))
        b0 = self.norm32(self.units32(self.stem32(s32)))
        if a1.shape[-2:] != s32.shape[-2:]:
            raise ContractError(f"bfem: the 1/16 level halved is {tuple(a1.shape[-2:])}, the 1/32 level {tuple(s32.shape[-2:])}")
        return [*features[:-2], self.fuse16(torch.cat([s16, a0], 1)), self.fuse32(torch.cat([s32, b0, a1], 1))]
