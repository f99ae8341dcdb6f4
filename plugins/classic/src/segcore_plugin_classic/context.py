"""Context enhancers that replace the top level: PPM as SFNet uses it (Zhao et al., "Pyramid Scene Parsing
Network", CVPR 2017, arXiv:1612.01105) and DAPPM (Pan et al., "Deep Dual-Resolution Networks for Real-Time and
Accurate Semantic Segmentation of Traffic Scenes", T-ITS 2022, arXiv:2101.06085).

Written for segcore from the structure of lxtGH/SFSegNets ``network/nn/operators.py`` (``PSPModule``, MIT) and
ydhongHIT/DDRNet ``segmentation/DDRNet_23.py`` (``DAPPM``, MIT); no code copied (BLOCKS.md 003.5). They are the
seed-003 Table 2 alternatives to FRM and keep FRM's contract: the levels in ``levels`` (default all) are pooled to
the last one's size and concatenated (`segcore.layers.pool_concat`; 1024 channels on VAN-B1), the context map
replaces that last level, the others pass through. ``levels = [3]`` is the usual single-level PPM / DAPPM.

What differs from upstream: the input (a concatenation of levels) and the contract; the blocks are upstream's.
Small maps work: DAPPM's 5/2, 9/4, 17/8 average pools (padding counted, as upstream) give 1x1 branches on a 4x5 top
level (97x131 input) and every branch is resized back to the exact map size; PPM's 6x6 prior on a smaller map
is an adaptive pool that repeats pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from attrs import field, frozen
from attrs.validators import deep_iterable, ge, gt, lt, min_len
from torch import Tensor, nn

from segcore import AttentionSlots, Enhancer, FeatureInfo, Resize
from segcore.layers import ConvBNAct, context_levels, pool_concat


def _replace_top(in_features: Sequence[FeatureInfo], top: int, channels: int) -> tuple[FeatureInfo, ...]:
    return tuple(FeatureInfo(channels, f.stride) if i == top else f for i, f in enumerate(in_features))


@frozen
class PPMConfig:
    """Table [[model.enhancers]] when name = "ppm" (SFNet's PSPModule)."""

    channels: int = field(default=128, validator=gt(0))  # each prior and the output (SFNet: fpn_dim)
    pool_sizes: tuple[int, ...] = field(default=(1, 2, 3, 6), validator=deep_iterable(gt(0), min_len(1)))
    dropout: float = field(default=0.1, validator=[ge(0.0), lt(1.0)])
    levels: tuple[int, ...] | None = None  # pooled + concatenated, finest first; None: all (seed 003 Table 2)


class PPMEnhancer(Enhancer):
    """features -> the same list with the last chosen level replaced by (B, channels, h, w).

    Priors: AdaptiveAvgPool(s) -> conv1x1 (no bias) -> BN (no ReLU) -> bilinear back (align_corners=True);
    cat(priors, x) -> conv1x1 (no bias) -> BN -> ReLU -> Dropout2d.
    """

    def __init__(self, cfg: PPMConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        self.levels = context_levels(cfg.levels, len(in_features), "ppm")
        width = sum(in_features[i].channels for i in self.levels)
        self.priors = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvBNAct(width, cfg.channels, 1, act=False)) for s in cfg.pool_sizes
        )
        self.resize = Resize("bilinear", align_corners=True)
        self.bottleneck = nn.Sequential(
            ConvBNAct(width + len(cfg.pool_sizes) * cfg.channels, cfg.channels, 1), nn.Dropout2d(cfg.dropout)
        )
        self.top = self.levels[-1]
        self.feature_info = _replace_top(in_features, self.top, cfg.channels)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        x = pool_concat(features, self.levels)
        size = x.shape[-2:]
        out = list(features)
        out[self.top] = self.bottleneck(torch.cat([*(self.resize(p(x), size) for p in self.priors), x], dim=1))
        return out


@frozen
class DAPPMConfig:
    """Table [[model.enhancers]] when name = "dappm" (DDRNet's module; DDRNet-23 uses 128 / 256)."""

    branch_channels: int = field(default=128, validator=gt(0))
    channels: int = field(default=128, validator=gt(0))  # seed-003 Table 2 calibration (BLOCKS 003.5)
    levels: tuple[int, ...] | None = None  # pooled + concatenated, finest first; None: all (seed 003 Table 2)


def _unit(cin: int, cout: int, k: int = 1, pool: nn.Module | None = None) -> nn.Sequential:
    """[pool] -> BN -> ReLU -> conv k x k (no bias): DDRNet's pre-activation unit."""
    layers = [] if pool is None else [pool]
    layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)]
    return nn.Sequential(*layers)


class DAPPMEnhancer(Enhancer):
    """features -> the same list with the last chosen level replaced by (B, channels, h, w).

    y0 = unit(x); y_k = unit3x3(resize(unit(pool_k(x))) + y_(k-1)) for pools avg 5/2, 9/4, 17/8 and global;
    out = unit1x1(cat(y0..y4)) + unit1x1(x).
    """

    def __init__(self, cfg: DAPPMConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        self.levels = context_levels(cfg.levels, len(in_features), "dappm")
        c, b = sum(in_features[i].channels for i in self.levels), cfg.branch_channels
        pools = [nn.AvgPool2d(5, 2, 2), nn.AvgPool2d(9, 4, 4), nn.AvgPool2d(17, 8, 8), nn.AdaptiveAvgPool2d(1)]
        self.scale0 = _unit(c, b)
        self.scales = nn.ModuleList(_unit(c, b, pool=p) for p in pools)
        self.process = nn.ModuleList(_unit(b, b, 3) for _ in pools)
        self.compression = _unit(5 * b, cfg.channels)
        self.shortcut = _unit(c, cfg.channels)
        self.resize = Resize("bilinear", align_corners=False)
        self.top = self.levels[-1]
        self.feature_info = _replace_top(in_features, self.top, cfg.channels)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        x = pool_concat(features, self.levels)
        size = x.shape[-2:]
        ys = [self.scale0(x)]
        for scale, process in zip(self.scales, self.process):
            ys.append(process(self.resize(scale(x), size) + ys[-1]))
        out = list(features)
        out[self.top] = self.compression(torch.cat(ys, dim=1)) + self.shortcut(x)
        return out
