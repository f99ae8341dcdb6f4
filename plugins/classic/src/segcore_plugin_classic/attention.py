"""Channel attention: SE (Hu et al., CVPR 2018, arXiv:1709.01507) and ECA (Wang et al., CVPR 2020,
arXiv:1910.03151). Both map (B, C, H, W) to the same shape."""

from __future__ import annotations

import math

import torch
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
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = x.mean(dim=(2, 3))[:, None, :]  # (B, 1, C)
        return x * torch.sigmoid(self.conv(y))[:, 0, :, None, None]
