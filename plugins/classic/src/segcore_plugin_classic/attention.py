"""Attention blocks, each (B, C, H, W) -> the same shape: SE (Hu et al., CVPR 2018, arXiv:1709.01507), ECA (Wang
et al., CVPR 2020, arXiv:1910.03151), CBAM (Woo et al., ECCV 2018, arXiv:1807.06521) and Strip Pooling (Hou et al.,
CVPR 2020, arXiv:2003.13328): the attention study of seed 000 (BLOCKS.md 000.7, 000.9).

CBAM written from Jongchan/attention-module ``MODELS/cbam.py`` (MIT) and the seed-000 authors' ``cbam_block``
(HanLeiFeng/HRNet_Series ``nets/attention.py``); Strip Pooling from Andrew-Qibin/SPNet ``models/customize.py``
(``StripPooling``, MIT). Pools are ``nn.Adaptive*Pool2d`` modules so thop-style counters see them as the papers'
tools did.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from attrs import field, frozen
from attrs.validators import gt, optional
from torch import Tensor, nn

from segcore import Attention


@frozen
class SEConfig:
    """Table of an attention slot when name = "se". The original uses reduction 16 with biased layers."""

    reduction: int = field(default=16, validator=gt(0))
    bias: bool = True


class SE(Attention):
    """GAP -> FC(C -> C/r) -> ReLU -> FC(C/r -> C) -> sigmoid -> scale the channels."""

    def __init__(self, cfg: SEConfig, *, channels: int) -> None:
        super().__init__()
        mid = max(1, channels // cfg.reduction)
        self.fc = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, mid, 1, bias=cfg.bias),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, 1, bias=cfg.bias),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc(x)


@frozen
class ECAConfig:
    """Table of an attention slot when name = "eca". ``kernel_size`` None: k = |(log2 C + b) / gamma|, made odd."""

    kernel_size: int | None = field(default=None, validator=optional(gt(0)))
    gamma: int = 2
    b: int = 1


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """The adaptive kernel of ECA: t = int(|(log2 C + b) / gamma|), k = t if odd else t + 1 (720 -> 5, 48 -> 3)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECA(Attention):
    """GAP -> 1-D conv of size k across channels (no bias) -> sigmoid -> scale the channels."""

    def __init__(self, cfg: ECAConfig, *, channels: int) -> None:
        super().__init__()
        k = cfg.kernel_size or eca_kernel_size(channels, cfg.gamma, cfg.b)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.pool(x)[:, None, :, 0, 0]  # (B, 1, C)
        return x * torch.sigmoid(self.conv(y))[:, 0, :, None, None]


def _odd(instance: object, attribute: object, value: int) -> None:
    if value < 1 or value % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {value}")


@frozen
class CBAMConfig:
    """Table of an attention slot when name = "cbam".

    Defaults are the seed-000 authors' variant (their Fig. 6 numbers depend on it): reduction 8, no biases in the
    shared MLP, no BN after the 7x7 conv. The original CBAM: ``reduction = 16, bias = true, spatial_bn = true``
    (it also stacks the channel pools as [max, mean], which only permutes the 7x7 conv's input channels).
    """

    reduction: int = field(default=8, validator=gt(0))
    bias: bool = False
    kernel_size: int = field(default=7, validator=_odd)
    spatial_bn: bool = False


class CBAM(Attention):
    """Channel gate then spatial gate.

    channel: sigmoid(MLP(GAP(x)) + MLP(GMP(x))), MLP = conv1x1 C -> C/r -> ReLU -> conv1x1 C/r -> C (shared);
    spatial: sigmoid(conv kxk([mean_c, max_c](x)) (2 -> 1, [+ BN])); x * channel, then * spatial.
    """

    def __init__(self, cfg: CBAMConfig, *, channels: int) -> None:
        super().__init__()
        mid = max(1, channels // cfg.reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, mid, 1, bias=cfg.bias), nn.ReLU(inplace=True), nn.Conv2d(mid, channels, 1, bias=cfg.bias)
        )
        k = cfg.kernel_size
        spatial: list[nn.Module] = [nn.Conv2d(2, 1, k, padding=k // 2, bias=False)]
        self.spatial = nn.Sequential(*spatial, nn.BatchNorm2d(1)) if cfg.spatial_bn else nn.Sequential(*spatial)

    def forward(self, x: Tensor) -> Tensor:
        x = x * torch.sigmoid(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


@frozen
class StripPoolingConfig:
    """Table of an attention slot when name = "strip_pooling" (SPNet's StripPooling module; defaults as upstream:
    square pools 20x20 and 12x12, reduction 4, bilinear upsampling with align_corners True). The seed-000 authors'
    "SP" variant of Fig. 6 used SPHead-like blocks that halve the channels; as a shape-keeping attention this is
    SPNet's module itself."""

    pool_sizes: tuple[int, int] = (20, 12)
    reduction: int = field(default=4, validator=gt(0))
    align_corners: bool = True


def _cb(cin: int, cout: int, kernel: tuple[int, int], act: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, padding=(kernel[0] // 2, kernel[1] // 2), bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class StripPooling(Attention):
    """Two reductions to C/r; a square-pool branch (3x3 on the map + 3x3 on 20x20 and 12x12 average pools) and a
    strip branch (1x3 on the 1xW pool + 3x1 on the Hx1 pool), each upsampled to the exact map size, summed, ReLU,
    CBR3x3; concat -> conv1x1 -> BN back to C; out = ReLU(x + that)."""

    def __init__(self, cfg: StripPoolingConfig, *, channels: int) -> None:
        super().__init__()
        mid = max(1, channels // cfg.reduction)
        self.align_corners = cfg.align_corners
        self.pools = nn.ModuleList(
            [nn.AdaptiveAvgPool2d(cfg.pool_sizes[0]), nn.AdaptiveAvgPool2d(cfg.pool_sizes[1]),
             nn.AdaptiveAvgPool2d((1, None)), nn.AdaptiveAvgPool2d((None, 1))]
        )  # fmt: skip
        self.reduce1 = _cb(channels, mid, (1, 1), act=True)
        self.reduce2 = _cb(channels, mid, (1, 1), act=True)
        self.square = nn.ModuleList(_cb(mid, mid, (3, 3)) for _ in range(3))  # on the map, the 20x20 and 12x12 pools
        self.strip_w = _cb(mid, mid, (1, 3))  # on the 1 x W pool
        self.strip_h = _cb(mid, mid, (3, 1))  # on the H x 1 pool
        self.fuse1 = _cb(mid, mid, (3, 3), act=True)
        self.fuse2 = _cb(mid, mid, (3, 3), act=True)
        self.project = _cb(2 * mid, channels, (1, 1))

    def _up(self, x: Tensor, size: torch.Size) -> Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        x1, x2 = self.reduce1(x), self.reduce2(x)
        square = self.square[0](x1) + sum(self._up(conv(pool(x1)), size) for conv, pool in zip(self.square[1:], self.pools[:2]))
        strip = self._up(self.strip_w(self.pools[2](x2)), size) + self._up(self.strip_h(self.pools[3](x2)), size)
        y = torch.cat([self.fuse1(F.relu(square)), self.fuse2(F.relu(strip))], dim=1)
        return F.relu(x + self.project(y))
