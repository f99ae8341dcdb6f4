"""The blocks of the improved HRNet (Feng and Zhong, "Backbone Feature Enhancement and Decoder Improvement in HRNet
for Semantic Segmentation", seed 000): CCSF (eq. 1), AAM (eqs. 4-5) and SegNeXt's MSCA / MSCAN block (eq. 2;
Guo et al., NeurIPS 2022, arXiv:2209.08575).

Written from the paper and BLOCKS.md 000.3, 000.5, 000.8, reading the authors' code (HanLeiFeng/HRNet_Series,
``nets/attention.py`` ``CA_Block``, ``nets/hrnet.py`` ``ConvModule``) and the official SegNeXt
(Visual-Attention-Network/SegNeXt ``mmseg/models/backbones/mscan.py``, Apache-2.0); no code copied.
What differs: MSCA/MSCAN follow the official SegNeXt semantics (the strip branches read the 5x5 depth-wise output,
the spatial-attention unit has its inner shortcut), not the authors' third-party copy; norms are plain
``nn.BatchNorm2d`` (momentum 0.1) where the authors used a SyncBN with momentum 3e-4 (BLOCKS.md 000.6). AAM's
reduced width is ``max(1, C // r)`` (the authors' ``C // r`` for C >= r).
"""

from __future__ import annotations

import math

import torch
from attrs import field, frozen
from attrs.validators import ge, gt, lt
from torch import Tensor, nn

from segcore import Attention
from segcore.layers import ConvBNAct

# the authors' CCSF (their ConvModule): BN eps 1e-3, momentum 0.03 (PyTorch convention), BLOCKS.md 000.3
CCSF_BN_EPS, CCSF_BN_MOMENTUM = 1e-3, 0.03


def ccsf(in_channels: int, out_channels: int, *, bn_eps: float = CCSF_BN_EPS, bn_momentum: float = CCSF_BN_MOMENTUM) -> ConvBNAct:
    """CCSF (eq. 1): ReLU(BN(conv1x1(F))), conv without bias. (B, in, H, W) -> (B, out, H, W)."""
    return ConvBNAct(in_channels, out_channels, 1, bn_eps=bn_eps, bn_momentum=bn_momentum)


@frozen
class CCSFConfig:
    """Table of an attention slot when name = "ccsf": a C -> C CCSF (conv1x1 -> BN -> ReLU) as a slot filler."""

    bn_eps: float = field(default=CCSF_BN_EPS, validator=gt(0.0))
    bn_momentum: float = field(default=CCSF_BN_MOMENTUM, validator=[gt(0.0), lt(1.0)])


class CCSF(Attention):
    """Cross-channel semantic fusion on one map: (B, C, H, W) -> same shape. Parameters C^2 + 2C."""

    def __init__(self, cfg: CCSFConfig, *, channels: int) -> None:
        super().__init__()
        self.block = ccsf(channels, channels, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


@frozen
class AAMConfig:
    """Table of an attention slot when name = "aam" (axial attention; r = 8 in the paper)."""

    reduction: int = field(default=8, validator=gt(0))


class AAM(Attention):
    """Axial attention (eqs. 4-5): (B, C, H, W) -> same shape.

    p_h = mean over W (C x H), p_w = mean over H (C x W), laid along one axis and concatenated (C x (H + W));
    conv1x1 C -> C/r (no bias) -> BN -> ReLU; split; a_h = sigmoid(conv1x1 C/r -> C on the H part), a_w likewise
    with its own conv; out = x * a_h * a_w. Parameters 3C^2/8 + C/4 for r = 8 (BLOCKS.md 000.8). The pools are
    means (the authors' ``torch.mean``), so thop-style counters see only the convs and the BN, as in Table III.
    """

    def __init__(self, cfg: AAMConfig, *, channels: int) -> None:
        super().__init__()
        mid = max(1, channels // cfg.reduction)
        self.reduce = nn.Conv2d(channels, mid, 1, bias=False)
        self.bn = nn.BatchNorm2d(mid)
        self.act = nn.ReLU()
        self.attend_h = nn.Conv2d(mid, channels, 1, bias=False)
        self.attend_w = nn.Conv2d(mid, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pooled = torch.cat([x.mean(dim=3, keepdim=True), x.mean(dim=2, keepdim=True).transpose(2, 3)], dim=2)
        y_h, y_w = self.act(self.bn(self.reduce(pooled))).split([h, w], dim=2)  # (B, C/r, H, 1), (B, C/r, W, 1)
        a_h = torch.sigmoid(self.attend_h(y_h))  # (B, C, H, 1)
        a_w = torch.sigmoid(self.attend_w(y_w)).transpose(2, 3)  # (B, C, 1, W)
        return x * a_h * a_w


# -- SegNeXt's MSCA and MSCAN block ----------------------------------------------------------------------------------


def _dw(channels: int, kernel: tuple[int, int]) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel, padding=(kernel[0] // 2, kernel[1] // 2), groups=channels)


class MSCA(nn.Module):
    """Multi-scale convolutional attention (eq. 2): (B, d, H, W) -> same shape.

    a = DW5x5(x); s_k = DW(k x 1)(DW(1 x k)(a)) for k = 7, 11, 21; out = conv1x1(a + s_7 + s_11 + s_21) * x.
    All convs biased; parameters d^2 + 111 d (BLOCKS.md 000.5).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.local = _dw(dim, (5, 5))
        self.strips = nn.ModuleList(nn.Sequential(_dw(dim, (1, k)), _dw(dim, (k, 1))) for k in (7, 11, 21))
        self.mix = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.local(x)
        return self.mix(a + sum(strip(a) for strip in self.strips)) * x


class SpatialAttention(nn.Module):
    """conv1x1 -> GELU -> MSCA -> conv1x1, plus the input (SegNeXt's inner shortcut). (B, d, H, W) -> same."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.msca = MSCA(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj_2(self.msca(self.act(self.proj_1(x)))) + x


class Mlp(nn.Module):
    """conv1x1 d -> r d -> DW3x3 -> GELU -> dropout -> conv1x1 r d -> d -> dropout."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = _dw(hidden, (3, 3))
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x))))))


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth per sample: drop the residual branch with probability p, scale the kept ones by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(1 - p)
    return x * keep / (1 - p)


@frozen
class MSCANBlockConfig:
    """The MSCAN unit's settings (SegNeXt defaults; the seed uses MLP ratio 4, layer scale 1e-2, no drop path)."""

    mlp_ratio: float = field(default=4.0, validator=gt(0.0))
    layer_scale: float = field(default=1e-2, validator=gt(0.0))
    drop_path: float = field(default=0.0, validator=[ge(0.0), lt(1.0)])
    drop: float = field(default=0.0, validator=[ge(0.0), lt(1.0)])


class MSCANBlock(nn.Module):
    """Pre-norm MSCAN block: x + ls1 * SpatialAttention(BN(x)), then + ls2 * Mlp(BN(x)). (B, d, H, W) -> same.

    Parameters (3 + 2r) d^2 + (...) d; 11 d^2 + 164 d for r = 4 (BLOCKS.md 000.5). The layer scales are plain
    parameters of this module, which thop-style counters do not see (as the authors' LayerScale).
    """

    def __init__(self, dim: int, cfg: MSCANBlockConfig = MSCANBlockConfig()) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.drop)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), cfg.layer_scale))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), cfg.layer_scale))
        self.drop_path = cfg.drop_path
        init_mscan(self)

    def forward(self, x: Tensor) -> Tensor:
        x = x + drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)), self.drop_path, self.training)


def init_mscan(module: nn.Module) -> None:
    """SegNeXt/VAN initialisation (BLOCKS.md 0.4): conv N(0, sqrt(2 / fan_out)), fan_out = k_h k_w out / groups,
    bias 0; BN 1 and 0. Layer scales keep their value."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
