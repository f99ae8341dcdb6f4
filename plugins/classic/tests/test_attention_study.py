"""CBAM, Strip Pooling and ECA (seed 000's attention study, BLOCKS.md 000.7 and 000.9): parameter counts and
forward passes recomputed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segcore_plugin_classic.attention import CBAM, ECA, CBAMConfig, ECAConfig, StripPooling, StripPoolingConfig


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("channels", [48, 96, 192, 384, 720])
def test_cbam_parameters_authors_and_original(channels):
    """Authors: shared MLP C -> C/8 -> C without bias + 7x7 conv 2 -> 1 (98). Original: r 16, biases, BN after the 7x7."""
    mid8, mid16 = channels // 8, channels // 16
    assert n_params(CBAM(CBAMConfig(), channels=channels)) == 2 * channels * mid8 + 2 * 49
    original = CBAM(CBAMConfig(reduction=16, bias=True, spatial_bn=True), channels=channels)
    assert n_params(original) == (channels * mid16 + mid16) + (mid16 * channels + channels) + 2 * 49 + 2


def test_cbam_forward_by_hand():
    torch.manual_seed(0)
    cbam = CBAM(CBAMConfig(), channels=16).eval()
    x = torch.randn(2, 16, 9, 13)
    w1, w2 = cbam.mlp[0].weight[:, :, 0, 0], cbam.mlp[2].weight[:, :, 0, 0]  # (2, 16), (16, 2)

    def mlp(v: torch.Tensor) -> torch.Tensor:  # (B, C) -> (B, C)
        return F.relu(v @ w1.T) @ w2.T

    gate = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
    y = x * gate[:, :, None, None]
    spatial = torch.sigmoid(F.conv2d(torch.stack([y.mean(1), y.amax(1)], dim=1), cbam.spatial[0].weight, padding=3))
    with torch.no_grad():
        torch.testing.assert_close(cbam(x), y * spatial)


@pytest.mark.parametrize("channels", [16, 64, 720])
def test_strip_pooling_parameters(channels):
    """SPNet's StripPooling with mid = C/4: two CBR1x1 reductions, three conv3x3-BN on the square branch, 1x3 and
    3x1 conv-BN on the strips, two CBR3x3 fusions, conv1x1 2*mid -> C + BN. No conv has a bias."""
    mid = channels // 4
    expected = (
        2 * (channels * mid + 2 * mid)  # reduce1, reduce2
        + 3 * (9 * mid * mid + 2 * mid)  # square branch
        + 2 * (3 * mid * mid + 2 * mid)  # strips
        + 2 * (9 * mid * mid + 2 * mid)  # fuse1, fuse2
        + (2 * mid * channels + 2 * channels)  # project
    )
    assert n_params(StripPooling(StripPoolingConfig(), channels=channels)) == expected


@pytest.mark.parametrize("size", [(97, 131), (9, 13), (90, 120)])
def test_strip_pooling_any_size_and_trains(size):
    torch.manual_seed(0)
    sp = StripPooling(StripPoolingConfig(), channels=16)
    x = torch.randn(2, 16, *size, requires_grad=True)
    y = sp(x)
    assert y.shape == x.shape and bool((y >= 0).all())  # ReLU(x + ...)
    y.mean().backward()
    assert [n for n, p in sp.named_parameters() if p.grad is None] == []


def test_strip_pooling_strip_branch_by_hand():
    """The strip branch: the 1 x W pool is each column's mean, the H x 1 pool each row's; upsampled they broadcast."""
    torch.manual_seed(0)
    sp = StripPooling(StripPoolingConfig(), channels=8).eval()
    x2 = torch.randn(1, 2, 5, 7)
    with torch.no_grad():
        got = sp._up(sp.strip_w(sp.pools[2](x2)), x2.shape[-2:]) + sp._up(sp.strip_h(sp.pools[3](x2)), x2.shape[-2:])
        cols = sp.strip_w(x2.mean(dim=2, keepdim=True))  # (1, 2, 1, 7)
        rows = sp.strip_h(x2.mean(dim=3, keepdim=True))  # (1, 2, 5, 1)
    torch.testing.assert_close(got, cols + rows)


def test_eca_forward_by_hand():
    """ECA (BLOCKS.md 000.7): k = 5 for 720 channels; x * sigmoid(conv1d_k(GAP(x)) across channels)."""
    torch.manual_seed(0)
    eca = ECA(ECAConfig(), channels=720)
    x = torch.randn(2, 720, 5, 6)
    w = eca.conv.weight[0, 0]  # (5,)
    pooled = F.pad(x.mean(dim=(2, 3)), (2, 2))  # (2, 724)
    gate = torch.sigmoid(torch.stack([pooled[:, i : i + 720] * w[i] for i in range(5)]).sum(0))
    with torch.no_grad():
        torch.testing.assert_close(eca(x), x * gate[:, :, None, None])
