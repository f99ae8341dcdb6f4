"""Dilated depthwise convolutions computed as undilated ones on the map's interleaved sub-grids: the same values to
float rounding, several times faster on CPUs.

oneDNN (PyTorch's CPU convolutions) has fast kernels for depthwise convolutions only without dilation; a dilated one
(VAN's large-kernel attention: 7x7, dilation 3) falls back to im2col + GEMM in forward, input and weight gradient.
On 2 AVX2 cores, float32, batch 8, 32 channels at 88x120, channels_last: 127 ms forward and 594 ms backward
natively, 21 and 77 ms as below (`python bench/bench_dilated.py`, docs/speed.md).

With dilation d, stride 1 and a padding p that d divides, output pixel (y, x) reads only input pixels (y', x') with
y' = y and x' = x modulo d: the d x d sub-grids ``x[..., i::d, j::d]`` never mix. So the map is cut into its sub-grids
(zero-padded to a multiple of d, `F.pixel_unshuffle`: channel c's sub-grid (i, j) becomes channel c d^2 + i d + j),
each is convolved with c's kernel undilated (padding p / d; the kernel repeated d^2 times, groups = C d^2), and the
results are interleaved back (`F.pixel_shuffle`) and cut to the output's size. Autograd runs through the same ops,
so the backward is the undilated kernels' backward too.
"""

from __future__ import annotations

__all__ = ["SubgridDilatedConv2d", "fast_dilated_convs", "subgrid_conv2d"]

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _fits(conv: nn.Conv2d) -> bool:
    """Whether *conv* is a depthwise convolution that `subgrid_conv2d` computes: one kernel per channel (groups =
    in = out channels), the same dilation d > 1 along both axes, stride 1, zero padding by a multiple of d."""
    dh, dw = conv.dilation
    padding = conv.padding
    return (
        conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1 and dh == dw and dh > 1
        and tuple(conv.stride) == (1, 1) and conv.padding_mode == "zeros" and not isinstance(padding, str)
        and padding[0] % dh == 0 and padding[1] % dh == 0
    )  # fmt: skip


def subgrid_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, *, dilation: int,
                   padding: tuple[int, int]) -> Tensor:  # fmt: skip
    """``F.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=C)`` for a depthwise *weight* (C, 1,
    kh, kw) and x (B, C, H, W), computed on x's dilation x dilation sub-grids without dilation (module docstring);
    *padding* must be multiples of *dilation*. The output's memory format is F.conv2d's (channels_last when x or
    *weight* is)."""
    d = dilation
    _, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    out_h, out_w = h + 2 * padding[0] - d * (kh - 1), w + 2 * padding[1] - d * (kw - 1)
    pad_h, pad_w = -h % d, -w % d
    grids = F.pixel_unshuffle(F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x, d)
    y = F.conv2d(grids, weight.repeat_interleave(d * d, dim=0), None if bias is None else bias.repeat_interleave(d * d),
                 padding=(padding[0] // d, padding[1] // d), groups=c * d * d)  # fmt: skip
    y = F.pixel_shuffle(y, d)[:, :, :out_h, :out_w]
    channels_last = _strided_channels_last(x) or _strided_channels_last(weight)
    return y.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _strided_channels_last(t: Tensor) -> bool:
    """Whether F.conv2d takes 4-d *t* for channels_last, which makes its output channels_last: by the strides, as
    ATen's suggest_memory_format does. ``is_contiguous`` cannot tell for a depthwise weight (C, 1, kh, kw), whose
    size-1 dimension makes it contiguous in both formats; its channels_last strides (``model.to(memory_format=
    torch.channels_last)``) are the ones with stride 1 there."""
    if not t.is_contiguous(memory_format=torch.channels_last):
        return False
    return not t.is_contiguous() or (t.shape[1] == 1 and t.stride(1) == 1 and t.stride(0) > 1)


class SubgridDilatedConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (a dilated depthwise one, see `fast_dilated_convs`) computed by `subgrid_conv2d` on CPU
    tensors; elsewhere (CUDA, whose kernels take dilation in their stride), for unbatched input and while exported
    (torch.export, ONNX: the graph keeps one convolution, and sizes that stay free) as nn.Conv2d. Same parameters and
    state-dict keys."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if (input.device.type != "cpu" or input.dim() != 4 or not _fits(self) or torch.compiler.is_exporting()
                or torch.jit.is_tracing()):  # fmt: skip
            return super()._conv_forward(input, weight, bias)
        return subgrid_conv2d(input, weight, bias, dilation=self.dilation[0], padding=tuple(self.padding))


def fast_dilated_convs(model: nn.Module) -> int:
    """Make every plain ``nn.Conv2d`` of *model* that is depthwise and dilated (groups = in = out channels, the same
    dilation > 1 along both axes, stride 1, zero padding by a multiple of the dilation) a `SubgridDilatedConv2d`
    (its class is switched in place: parameters, hooks and state-dict keys stay). Returns how many were switched."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Conv2d and _fits(module):
            module.__class__ = SubgridDilatedConv2d
            count += 1
    return count
