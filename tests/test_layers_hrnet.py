"""segcore.layers' HRNet blocks against timm's HRNet (BLOCKS.md 000.1) and on sizes that are not multiples of 32."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.hrnet import HighResolutionModule
from timm.models.resnet import BasicBlock as TimmBasic

from segcore.layers import BasicBlock, Bottleneck, HRModule, Transition

W48 = (48, 96, 192, 384)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def stream_sizes(h: int, w: int, n: int = 4) -> list[tuple[int, int]]:
    """Stride-4 stream and each halving by a stride-2 conv3x3 (ceil): 360x480 -> 90x120, 45x60, 23x30, 12x15."""
    sizes = [(math.ceil(h / 4), math.ceil(w / 4))]
    for _ in range(n - 1):
        sizes.append(tuple(math.ceil(s / 2) for s in sizes[-1]))
    return sizes


def test_blocks_parameters_and_strided_shapes():
    basic = BasicBlock(32, 32)
    assert n_params(basic) == 2 * 32 * 32 * 9 + 2 * 2 * 32 and basic.downsample is None
    # Stage 1 of HRNetV2: 64 -> Bottleneck(64) -> 256 with a projection shortcut
    bottle = Bottleneck(64, 64)
    assert n_params(bottle) == 64 * 64 + 64 * 64 * 9 + 64 * 256 + 2 * (64 + 64 + 256) + 64 * 256 + 2 * 256
    y = Bottleneck(16, 8, stride=2)(torch.randn(2, 16, 23, 31))
    assert y.shape == (2, 32, 12, 16)  # ceil(23 / 2), ceil(31 / 2)
    assert BasicBlock(8, 16, stride=2)(torch.randn(1, 8, 45, 61)).shape == (1, 16, 23, 31)


def test_w48_stage4_module_matches_timm_key_for_key_and_numerically():
    """Our module loads timm's HighResolutionModule state dict as is; with nearest resizing at a /32 size (where
    timm's scale-factor upsampling is exact) both give the same four maps."""
    torch.manual_seed(0)
    ref = HighResolutionModule(4, TimmBasic, (4, 4, 4, 4), list(W48), W48, "SUM").eval()
    ours = HRModule(W48, (4, 4, 4, 4), mode="nearest").eval()
    loaded = ours.load_state_dict(ref.state_dict(), strict=True)  # same keys, same shapes
    assert (loaded.missing_keys, loaded.unexpected_keys) == ([], [])
    maps = [torch.randn(1, c, h, w) for c, (h, w) in zip(W48, stream_sizes(128, 64))]
    with torch.no_grad():
        expected = ref([m.clone() for m in maps])
        got = ours(maps)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("size", [(360, 480), (97, 131)])
def test_fusion_resizes_to_the_exact_stream_size_and_trains(size):
    module = HRModule((8, 16, 32, 64), (1, 1, 1, 1))
    sizes = stream_sizes(*size)
    maps = [torch.randn(2, c, h, w) for c, (h, w) in zip((8, 16, 32, 64), sizes)]
    out = module(maps)
    assert [tuple(o.shape) for o in out] == [(2, c, h, w) for c, (h, w) in zip((8, 16, 32, 64), sizes)]
    sum(o.mean() for o in out).backward()
    assert [n for n, p in module.named_parameters() if p.grad is None] == []


def test_fewer_outputs_keep_the_finest_streams_and_still_read_the_dropped_one():
    """BLOCKS.md 001.3: the last module of a reverse-HRNet stage outputs the n - 1 finest streams only."""
    module = HRModule((8, 16, 32, 64), (1, 1, 1, 1), num_outputs=3)
    assert module.out_channels == (8, 16, 32) and len(module.fuse_layers) == 3
    maps = [torch.randn(2, c, h, w) for c, (h, w) in zip((8, 16, 32, 64), stream_sizes(97, 131))]
    out = module(maps)
    assert [tuple(o.shape[1:]) for o in out] == [(8, 25, 33), (16, 13, 17), (32, 7, 9)]
    sum(o.mean() for o in out).backward()
    assert module.branches[3][0].conv1.weight.grad.abs().sum() > 0  # the dropped stream is fused upward
    # no fuse layer makes the 4th output: params = 4 branches + fusion into 3 outputs only
    branches = sum(n_params(b) for b in module.branches)
    ups = 16 * 8 + 32 * 8 + 64 * 8 + 32 * 16 + 64 * 16 + 64 * 32 + 2 * (3 * 8 + 2 * 16 + 32)  # conv1x1 + BN
    downs = (8 * 16 * 9 + 2 * 16) + (8 * 8 * 9 + 2 * 8) + (8 * 32 * 9 + 2 * 32) + (16 * 32 * 9 + 2 * 32)
    assert n_params(module) == branches + ups + downs


def test_fusion_mode_and_align_corners_are_used():
    """Output 0 of a 2-stream module is ReLU(y0 + resize(BN(conv1x1(y1)))) with the configured resize."""
    torch.manual_seed(0)
    module = HRModule((4, 8), (1, 1), mode="bicubic", align_corners=True).eval()
    maps = [torch.randn(1, 4, 13, 17), torch.randn(1, 8, 7, 9)]
    with torch.no_grad():
        y0, y1 = module.branches[0](maps[0]), module.branches[1](maps[1])
        expected = F.relu(y0 + F.interpolate(module.fuse_layers[0][1](y1), size=(13, 17), mode="bicubic", align_corners=True))
        bilinear = F.relu(y0 + F.interpolate(module.fuse_layers[0][1](y1), size=(13, 17), mode="bilinear"))
        got = module(maps)[0]
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, bilinear)


def test_one_stream_module_has_no_fusion():
    module = HRModule((32,), (2,), (8,), block="bottleneck")
    assert len(module.fuse_layers) == 0 and module.out_channels == (32,)
    x = torch.randn(1, 32, 9, 11)
    torch.testing.assert_close(module([x])[0], module.branches[0](x))


def test_transition_adds_a_coarser_stream_from_the_coarsest_one():
    # HRNetV2-W18 transition 1: 256 -> (18 at stride 1, 36 at stride 2)
    t1 = Transition((256,), (18, 36))
    assert n_params(t1) == 256 * 18 * 9 + 2 * 18 + 256 * 36 * 9 + 2 * 36
    out = t1([torch.randn(1, 256, 25, 33)])
    assert [tuple(o.shape[1:]) for o in out] == [(18, 25, 33), (36, 13, 17)]
    # transition 2: existing streams pass through unchanged, a new one from the 1/8 stream
    t2 = Transition((18, 36), (18, 36, 72))
    assert isinstance(t2[0], torch.nn.Identity) and isinstance(t2[1], torch.nn.Identity)
    maps = [torch.randn(1, 18, 25, 33), torch.randn(1, 36, 13, 17)]
    out = t2(maps)
    assert out[0] is maps[0] and out[1] is maps[1] and tuple(out[2].shape[1:]) == (72, 7, 9)


def test_initialisation_and_bn_momentum():
    """BLOCKS.md 0.4 / 000.1: conv N(0, 0.001), BN weight 1 and bias 0, momentum 0.1."""
    torch.manual_seed(0)
    module = HRModule((48, 96), (4, 4))
    conv = module.branches[0][0].conv1.weight  # 48 * 48 * 9 = 20,736 samples: std error ~5e-6
    assert abs(conv.std().item() - 0.001) < 5e-5 and abs(conv.mean().item()) < 5e-5
    bns = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(bn.momentum == 0.1 and bool((bn.weight == 1).all()) and bool((bn.bias == 0).all()) for bn in bns)


def test_mismatched_stream_counts_are_refused():
    with pytest.raises(ValueError, match="one entry per stream"):
        HRModule((8, 16), (1, 1, 1))
    with pytest.raises(ValueError, match="num_outputs"):
        HRModule((8, 16), (1, 1), num_outputs=3)
