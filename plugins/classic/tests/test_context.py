"""PPM (SFNet's), DAPPM (DDRNet's) and the DNL attention (BLOCKS.md 003.3, 003.5): parameters on seed 003's
1024-channel concatenation, the context-enhancer contract, and small odd top levels."""

from __future__ import annotations

import pytest
import torch

from segcore import AttentionSlots, FeatureInfo
from segcore_plugin_classic.context import DAPPMConfig, DAPPMEnhancer, PPMConfig, PPMEnhancer
from segcore_plugin_classic.dnl import DNL, DNLConfig

VAN_B1 = (FeatureInfo(64, 4), FeatureInfo(128, 8), FeatureInfo(320, 16), FeatureInfo(512, 32))
ODD = ((25, 33), (13, 17), (7, 9), (4, 5))  # the four levels of a 97x131 input


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_ppm_parameters_on_the_concatenation():
    """BLOCKS 003.5: SFNet PPM on 1024 channels = 0.722 M: 4 priors conv1x1 1024->128 (no bias) + BN, bottleneck
    conv1x1 (1024 + 4 x 128 -> 128, no bias) + BN."""
    with torch.device("meta"):
        ppm = PPMEnhancer(PPMConfig(), in_features=VAN_B1, attention=AttentionSlots())
    assert n_params(ppm) == 4 * (1024 * 128 + 256) + (1536 * 128 + 256) == 722_176


def test_dappm_parameters_on_the_concatenation():
    """BLOCKS 003.5: DAPPM(1024, 128, 128) = 1.473 M; pre-activation units BN -> ReLU -> conv (no bias)."""
    with torch.device("meta"):
        dappm = DAPPMEnhancer(DAPPMConfig(), in_features=VAN_B1, attention=AttentionSlots())
    scales = 5 * (2 * 1024 + 1024 * 128)  # scale0..4: BN(1024) + conv1x1 1024 -> 128
    process = 4 * (2 * 128 + 128 * 128 * 9)  # BN(128) + conv3x3
    compression, shortcut = 2 * 640 + 640 * 128, 2 * 1024 + 1024 * 128
    assert n_params(dappm) == scales + process + compression + shortcut == 1_472_768


@pytest.mark.parametrize("cls, cfg", [(PPMEnhancer, PPMConfig(channels=16)), (DAPPMEnhancer, DAPPMConfig(8, 16))])
def test_context_enhancers_replace_the_top_at_odd_sizes(cls, cfg):
    info = tuple(FeatureInfo(c, s) for c, s in ((4, 4), (8, 8), (12, 16), (16, 32)))
    enhancer = cls(cfg, in_features=info, attention=AttentionSlots()).eval()
    feats = [torch.randn(2, i.channels, *hw) for i, hw in zip(info, ODD)]
    out = enhancer(feats)
    assert [o is f for o, f in zip(out, feats)] == [True, True, True, False]
    assert out[3].shape == (2, 16, 4, 5)
    assert [(i.channels, i.stride) for i in enhancer.feature_info] == [(4, 4), (8, 8), (12, 16), (16, 32)]


@pytest.mark.parametrize("cls, cfg, width", [
    (PPMEnhancer, PPMConfig(levels=(3,)), 512), (DAPPMEnhancer, DAPPMConfig(levels=(2, 3)), 320 + 512)])  # fmt: skip
def test_levels_pick_the_concatenated_input(cls, cfg, width):
    with torch.device("meta"):
        enhancer = cls(cfg, in_features=VAN_B1, attention=AttentionSlots())
    first_conv = next(m for m in enhancer.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == width


def test_dnl_attention_keeps_the_shape_and_starts_as_identity_in_mmseg_form():
    x = torch.randn(2, 32, 4, 5)
    torch.testing.assert_close(DNL(DNLConfig(), channels=32)(x), x)  # mmseg: output BN zero-initialised
    frm = DNL(DNLConfig(variant="frm"), channels=32)
    assert frm.block.query.out_channels == 8 and frm.block.pool is not None
    tuned = DNL(DNLConfig(variant="official", key_reduction=8, downsample=True, temperature=0.5), channels=32)
    assert (tuned.block.query.out_channels, tuned.block.divisor, tuned.block.gamma.item()) == (4, 0.5, 0.0)
    assert tuned(x).shape == x.shape
