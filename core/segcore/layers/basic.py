"""Conv-BN-activation and exact-size resizing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_ALIGNABLE = ("linear", "bilinear", "bicubic", "trilinear")


def building_on_meta() -> bool:
    """True inside ``with torch.device("meta"):`` (``segcore check``): components skip loading pretrained weights,
    since meta tensors hold no data and nothing should be downloaded to count a model."""
    return torch.empty(0).device.type == "meta"


def resize_to(x: Tensor, size: Sequence[int], *, mode: str = "bilinear", align_corners: bool = False) -> Tensor:
    """(B, C, h, w) -> (B, C, *size), exactly (never a scale factor: strided convs give ceil sizes, BLOCKS 0.2).

    ``align_corners`` applies to the linear and cubic modes only (torch refuses it for the others).
    """
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=align_corners if mode in _ALIGNABLE else None)


class ConvBNAct(nn.Sequential):
    """Conv2d (padding ``dilation * (k // 2)``) -> BatchNorm2d -> ReLU (``act=False``: no ReLU).

    Children are named ``conv``, ``bn``, ``act`` so state-dict keys read like mmseg's ConvModule.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        act: bool = True,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=dilation * (kernel_size // 2),
                              dilation=dilation, groups=groups, bias=bias)  # fmt: skip
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        if act:
            self.act = nn.ReLU(inplace=True)
