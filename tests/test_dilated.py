"""Dilated depthwise convolutions on sub-grids (segcore.inference.dilated): train.fast_dilated and the fast path."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segcore.engine.workarounds import Float32Conv2d, Float32SubgridDilatedConv2d, float32_dilated_grouped_convs
from segcore.inference.dilated import SubgridDilatedConv2d, fast_dilated_convs, subgrid_conv2d
from segcore.inference.fast import optimize_for_inference

CL = torch.channels_last


def _count_unshuffles(monkeypatch) -> list[int]:
    """The calls of F.pixel_unshuffle from here on (the sub-grid path makes one per convolution)."""
    calls: list[int] = []
    real = F.pixel_unshuffle
    monkeypatch.setattr(F, "pixel_unshuffle", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


# sub-grids of unequal sizes, and a map smaller than the dilated kernel
@pytest.mark.parametrize("size", [(19, 23), (9, 11)])
@pytest.mark.parametrize("kernel, dilation, padding", [(7, 3, (9, 9)), (3, 2, (2, 2)), (5, 2, (0, 4)), (4, 2, (4, 2)),
                                                       (3, 3, (6, 3))])  # fmt: skip
@pytest.mark.parametrize("channels_last", [False, True])
def test_subgrid_conv2d_is_the_dilated_convolution_forward_and_backward(size, kernel, dilation, padding, channels_last):
    """Values and all three gradients against F.conv2d (float64: the sums are the same up to rounding), for 'same'
    padding, none, more than 'same', even kernels and maps not divisible by the dilation; the output keeps the
    input's memory format."""
    torch.manual_seed(0)
    fmt = CL if channels_last else torch.contiguous_format
    x = torch.randn(2, 6, *size, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(6, 1, kernel, kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    expected = F.conv2d(x, w, b, padding=padding, dilation=dilation, groups=6)
    g = torch.randn_like(expected)
    ref = torch.autograd.grad(expected, (x, w, b), g)
    got = subgrid_conv2d(x, w, b, dilation=dilation, padding=padding)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-12)
    for a, e in zip(torch.autograd.grad(got, (x, w, b), g), ref, strict=True):
        assert torch.allclose(a, e, atol=1e-12)
    assert got.is_contiguous(memory_format=fmt)
    no_bias = subgrid_conv2d(x, w, None, dilation=dilation, padding=padding)
    assert torch.allclose(no_bias, expected - b[:, None, None], atol=1e-12)


def test_only_dilated_depthwise_convolutions_are_switched():
    fits = nn.Conv2d(8, 8, 7, padding=9, dilation=3, groups=8)
    others = [
        nn.Conv2d(8, 8, 5, padding=2, groups=8),                             # not dilated
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),                           # dense
        nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=8),                # two kernels a channel
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4),                 # grouped, not depthwise
        nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=8),       # strided
        nn.Conv2d(8, 8, 3, padding=1, dilation=2, groups=8),                 # padding not a multiple of the dilation
        nn.Conv2d(8, 8, 3, padding=(2, 3), dilation=(2, 3), groups=8),       # two dilations
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, padding_mode="reflect"),
        nn.Conv2d(8, 8, 3, padding="same", dilation=2, groups=8),
    ]  # fmt: skip
    model = nn.Sequential(fits, *others)
    keys = list(model.state_dict())
    assert fast_dilated_convs(model) == 1
    assert type(model[0]) is SubgridDilatedConv2d and all(type(m) is nn.Conv2d for m in model[1:])
    assert list(model.state_dict()) == keys and type(copy.deepcopy(model)[0]) is SubgridDilatedConv2d
    assert fast_dilated_convs(model) == 0  # once


def test_the_switched_module_computes_what_nn_conv2d_computes_and_uses_the_sub_grids(monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 7, padding=9, dilation=3, groups=8)
    fast = copy.deepcopy(conv)
    fast_dilated_convs(nn.Sequential(fast))
    calls = _count_unshuffles(monkeypatch)
    x = torch.randn(2, 8, 20, 22)
    assert torch.allclose(fast(x), conv(x), atol=1e-5) and calls == [1]
    assert torch.allclose(fast(x[0]), conv(x[0]), atol=1e-5) and calls == [1]  # unbatched: nn.Conv2d's own


@pytest.mark.parametrize("weights_cl, input_cl", [(False, False), (False, True), (True, False), (True, True)])
def test_the_output_has_nn_conv2ds_memory_format(weights_cl, input_cl):
    """channels_last when the input or the weights are (``model.to(memory_format=channels_last)``: a depthwise
    weight is contiguous in both formats, its strides tell), as nn.Conv2d's output."""
    conv = nn.Conv2d(8, 8, 7, padding=9, dilation=3, groups=8)
    if weights_cl:
        conv = conv.to(memory_format=CL)
    fast = copy.deepcopy(conv)
    fast_dilated_convs(nn.Sequential(fast))
    x = torch.randn(2, 8, 20, 22)
    x = x.contiguous(memory_format=CL) if input_cl else x
    expected, got = conv(x), fast(x)
    assert expected.is_contiguous(memory_format=CL) is (weights_cl or input_cl)
    assert got.stride() == expected.stride() and torch.allclose(got, expected, atol=1e-5)


def test_under_bf16_channels_last_the_sub_grid_convolution_runs_in_float32_as_the_dilated_one_did(monkeypatch):
    """The trainer's order: train.fast_dilated, then the bf16 + channels_last work-around, which keeps such
    convolutions in float32 (the key changes the speed, never the precision), still on sub-grids."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 7, padding=9, dilation=3, groups=8),
                          nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4))  # fmt: skip
    fast_dilated_convs(model)
    assert float32_dilated_grouped_convs(model) == 2
    assert type(model[0]) is Float32SubgridDilatedConv2d and type(model[1]) is Float32Conv2d
    model = model.to(memory_format=CL)
    x = torch.randn(2, 8, 16, 16).contiguous(memory_format=CL)
    calls = _count_unshuffles(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model[0](x)
    assert y.dtype == torch.float32 and y.is_contiguous(memory_format=CL) and calls == [1]
    expected = F.conv2d(x, model[0].weight, model[0].bias, padding=9, dilation=3, groups=8)
    assert torch.allclose(y, expected, atol=1e-5)


def test_off_the_cpu_and_while_exported_it_is_nn_conv2d(monkeypatch):
    """Another device (here meta, as CUDA would be) and torch.export run nn.Conv2d's own convolution: an exported
    graph keeps one convolution, with height and width left free."""
    conv = nn.Conv2d(4, 4, 7, padding=9, dilation=3, groups=4)
    fast_dilated_convs(nn.Sequential(conv))
    calls = _count_unshuffles(monkeypatch)
    assert conv.to("meta")(torch.empty(1, 4, 20, 22, device="meta")).shape == (1, 4, 20, 22) and calls == []
    conv = conv.to_empty(device="cpu")
    torch.nn.init.normal_(conv.weight)
    h, w = torch.export.Dim("h", min=8, max=512), torch.export.Dim("w", min=8, max=512)
    program = torch.export.export(conv, (torch.rand(1, 4, 20, 22),), dynamic_shapes={"input": {2: h, 3: w}})
    ops = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert ops == ["aten.conv2d.default"] and calls == []
    x = torch.rand(1, 4, 33, 17)
    assert torch.allclose(program.module()(x), conv(x), atol=1e-5) and calls == [1]


def test_the_fast_path_computes_them_on_sub_grids_with_the_same_logits():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 7, padding=9, dilation=3, groups=8), nn.Conv2d(8, 4, 1)).eval()  # fmt: skip
    fast = optimize_for_inference(model, precision="fp32")
    assert sum(type(m) is SubgridDilatedConv2d for m in fast.modules()) == 1
    assert all(type(m) is nn.Conv2d for m in model.modules() if isinstance(m, nn.Conv2d))  # the model is unchanged
    x = torch.rand(2, 3, 33, 40)
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-4)
