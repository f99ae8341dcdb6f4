"""plugins/classic against the published structure (BLOCKS.md 000.2, 000.7, 000.9)."""

from __future__ import annotations

import pytest
import torch

from segcore import AttentionSlots, FeatureInfo, Resize
from segcore_plugin_classic.attention import ECA, SE, ECAConfig, SEConfig, eca_kernel_size
from segcore_plugin_classic.hrnetv2_head import HRNetV2Head, HRNetV2HeadConfig

W48 = tuple(FeatureInfo(c, s) for c, s in ((48, 4), (96, 8), (192, 16), (384, 32)))


@pytest.mark.parametrize(
    "channels, k", [(48, 3), (96, 3), (192, 5), (384, 5), (720, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)]
)
def test_eca_kernel_size_formula(channels, k):  # BLOCKS.md 000.7 examples
    assert eca_kernel_size(channels) == k
    assert sum(p.numel() for p in ECA(ECAConfig(), channels=channels).parameters()) == k  # params = k


def test_se_parameters():
    se = SE(SEConfig(reduction=16), channels=720)
    assert sum(p.numel() for p in se.parameters()) == 720 * 45 + 45 + 45 * 720 + 720
    assert sum(p.numel() for p in SE(SEConfig(reduction=8, bias=False), channels=720).parameters()) == 2 * 720 * 90


def test_hrnetv2_head_on_w48_branches():
    """720-channel concat, conv1x1 720->720 with bias, BN: 519,840 + 1,440 parameters; stride 4."""
    with torch.device("meta"):
        head = HRNetV2Head(HRNetV2HeadConfig(), in_features=W48, attention=AttentionSlots())
    assert (head.out_channels, head.stride) == (720, 4)
    assert sum(p.numel() for p in head.parameters()) == 720 * 720 + 720 + 2 * 720


def test_hrnetv2_head_resizes_to_the_exact_finest_size():
    head = HRNetV2Head(HRNetV2HeadConfig(channels=16), in_features=W48, attention=AttentionSlots())
    # 360x480 input: 90x120, 45x60, 23x30, 12x15 (stride-2 convs round up; 12*2 != 23)
    maps = [torch.randn(1, f.channels, h, w) for f, (h, w) in zip(W48, ((90, 120), (45, 60), (23, 30), (12, 15)))]
    assert head(maps).shape == (1, 16, 90, 120)


@pytest.mark.parametrize("align_corners", [False, True])
def test_hrnetv2_head_declares_its_final_resize_from_align_corners(align_corners):
    """The logits reach the input size as the levels reach the finest (upstream and seed 000's authors use one
    setting for both); the model's final upsampling reads it (Decoder contract: ``final_resize``)."""
    head = HRNetV2Head(HRNetV2HeadConfig(channels=16, align_corners=align_corners), in_features=W48,
                       attention=AttentionSlots())  # fmt: skip
    assert head.final_resize == Resize("bilinear", align_corners=align_corners)
