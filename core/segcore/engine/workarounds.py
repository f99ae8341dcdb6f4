"""Work-arounds for PyTorch kernel bugs that training would otherwise run into, applied by the trainer to any model.

- CPU, bf16 autocast, channels_last: the weight gradient of a *dilated grouped* convolution (VAN's LKA, timm's
  dilated MobileNets/EfficientNets, ...) comes out wrong, often as garbage of 1e30 and more (torch 2.14 and
  earlier; the input gradient, the forward and NCHW are right). Such convolutions run in float32 in training: on
  these CPUs the float32 channels_last depthwise kernel is as fast as the bf16 one (and 4x faster than bf16 NCHW).
  Those that ``train.fast_dilated`` computes on sub-grids (`segcore.inference.dilated`) run in float32 too, so that
  the key changes the speed, never the precision.
"""

from __future__ import annotations

__all__ = ["Float32Conv2d", "Float32SubgridDilatedConv2d", "float32_dilated_grouped_convs", "training_workarounds"]

import torch
from torch import Tensor, nn

from segcore.inference.dilated import SubgridDilatedConv2d


class Float32Conv2d(nn.Conv2d):
    """An ``nn.Conv2d`` computed in float32 when CPU autocast is on (same parameters and state-dict keys)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


class Float32SubgridDilatedConv2d(Float32Conv2d, SubgridDilatedConv2d):
    """A `SubgridDilatedConv2d` computed in float32 when CPU autocast is on."""


_FLOAT32 = {nn.Conv2d: Float32Conv2d, SubgridDilatedConv2d: Float32SubgridDilatedConv2d}


def float32_dilated_grouped_convs(model: nn.Module) -> int:
    """Make every plain ``nn.Conv2d`` of *model* with groups > 1 and a dilation > 1 a :class:`Float32Conv2d`, and
    every such `SubgridDilatedConv2d` a :class:`Float32SubgridDilatedConv2d` (the class is switched in place:
    parameters, hooks and state-dict keys stay). Returns how many were switched."""
    count = 0
    for module in model.modules():
        if type(module) in _FLOAT32 and module.groups > 1 and max(module.dilation) > 1:
            module.__class__ = _FLOAT32[type(module)]
            count += 1
    return count


def training_workarounds(model: nn.Module, *, device: torch.device | str, bf16: bool, channels_last: bool) -> int:
    """Every work-around above that training *model* on *device* with these settings needs, applied in place (by
    the trainer, and by `segcore bench`'s training step so that it times what the trainer runs). Returns how many
    modules were changed."""
    if torch.device(device).type == "cpu" and bf16 and channels_last:
        return float32_dilated_grouped_convs(model)
    return 0
