"""The improved HRNet's blocks (BLOCKS.md 000.3-000.8): parameter formulas, semantics checked by hand, shapes and
gradients at 97x131 and 360x480, and every preset built and trained one step at tiny widths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segcore import Attention, AttentionSlots, FeatureInfo, Resize, build_model
from segcore.pipeline import structure_table
from segcore.pipeline import ModelConfig
from segcore_plugin_hrnet_fusion.bfem import BFEM, BFEMConfig
from segcore_plugin_hrnet_fusion.blocks import AAM, CCSF, MSCA, AAMConfig, CCSFConfig, MSCANBlock, SpatialAttention
from segcore_plugin_hrnet_fusion.fusm import FUSM, FUSMConfig
from segcore_plugin_hrnet_fusion.presets import presets

W48 = tuple(FeatureInfo(c, s) for c, s in ((48, 4), (96, 8), (192, 16), (384, 32)))
TINY = tuple(FeatureInfo(c, s) for c, s in ((4, 4), (8, 8), (16, 16), (32, 32)))
SIZES = [(97, 131), (360, 480)]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def levels(size: tuple[int, int], info=TINY, batch: int = 2) -> list[torch.Tensor]:
    """HRNet's streams for an input size: ceil at every stride-2 conv (360 -> 90, 45, 23, 12)."""
    hw = [math.ceil(s / 4) for s in size]
    out = []
    for i in info:
        out.append(torch.randn(batch, i.channels, *hw))
        hw = [math.ceil(s / 2) for s in hw]
    return out


@pytest.mark.parametrize("channels, params", [(48, 876), (96, 3_480), (192, 13_872), (384, 55_392), (720, 194_580)])
def test_aam_parameters(channels, params):
    """BLOCKS.md 000.8: 3C^2/8 + C/4 (conv C -> C/8, BN, two convs C/8 -> C, no biases)."""
    assert n_params(AAM(AAMConfig(), channels=channels)) == params == 3 * channels**2 // 8 + channels // 4


def test_five_aams_of_hrnet_l_sum_to_0_268_m():
    assert round(sum(n_params(AAM(AAMConfig(), channels=c)) for c in (48, 96, 192, 384, 720)) / 1e6, 3) == 0.268


@pytest.mark.parametrize("channels", [48, 576, 672, 720])
def test_ccsf_parameters(channels):
    """BLOCKS.md 000.3: conv1x1 without bias + BN (eps 1e-3, momentum 0.03) + ReLU: C^2 + 2C."""
    block = CCSF(CCSFConfig(), channels=channels)
    assert n_params(block) == channels**2 + 2 * channels
    assert (block.block.bn.eps, block.block.bn.momentum, block.block.conv.bias) == (1e-3, 0.03, None)


@pytest.mark.parametrize("channels, k", [(48, 3), (96, 3), (192, 5), (384, 5), (720, 5)])
def test_eca_parameters_from_the_registry(registry, channels, k):
    """BLOCKS.md 000.7: ECA has k parameters, k from the channel count (720 -> 5)."""
    entry = registry.get(Attention, "eca")
    assert n_params(entry.build(channels=channels)) == k


def test_aam_matches_the_authors_layout_by_hand():
    """The authors lay p_h and p_w along the width ((C, 1, H + W)); ours along the height: the same numbers."""
    torch.manual_seed(0)
    aam = AAM(AAMConfig(), channels=16).eval()
    aam.bn.running_mean.uniform_(-0.2, 0.2), aam.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 16, 7, 11)
    with torch.no_grad():
        cat = torch.cat([x.mean(3, keepdim=True).permute(0, 1, 3, 2), x.mean(2, keepdim=True)], dim=3)  # (B, C, 1, H+W)
        y = F.relu(aam.bn(F.conv2d(cat, aam.reduce.weight)))
        y_h, y_w = y.split([7, 11], dim=3)
        s_h = torch.sigmoid(F.conv2d(y_h.permute(0, 1, 3, 2), aam.attend_h.weight))  # (B, C, H, 1)
        s_w = torch.sigmoid(F.conv2d(y_w, aam.attend_w.weight))  # (B, C, 1, W)
        torch.testing.assert_close(aam(x), x * s_h * s_w)


def test_msca_and_mscan_parameter_formulas():
    """BLOCKS.md 000.5: MSCA d^2 + 111 d; MSCAN block with MLP ratio 4: 11 d^2 + 164 d (norms, layer scales incl.)."""
    for d in (8, 192, 384):
        assert n_params(MSCA(d)) == d * d + 111 * d
        assert n_params(MSCANBlock(d)) == 11 * d * d + 164 * d


def test_msca_semantics_official_segnext():
    """The attention multiplies the input; the strip branches read the 5x5 output (official SegNeXt, eq. 2)."""
    torch.manual_seed(0)
    msca = MSCA(4)
    x = torch.randn(1, 4, 9, 10)
    with torch.no_grad():
        a = msca.local(x)
        expected = msca.mix(a + sum(s[1](s[0](a)) for s in msca.strips)) * x
        torch.testing.assert_close(msca(x), expected)
        unit = SpatialAttention(4)
        unit.proj_2.weight.zero_(), unit.proj_2.bias.zero_()
        torch.testing.assert_close(unit(x), x)  # the inner shortcut


def test_bfem_w48_parameters_true_count():
    """BLOCKS.md 000.6: 18.509 M true count (18.482 M by the authors' thop rule)."""
    with torch.device("meta"):
        bfem = BFEM(BFEMConfig(), in_features=W48, attention=AttentionSlots())
    assert n_params(bfem) == 18_509_472


@pytest.mark.parametrize("size", SIZES)
def test_bfem_rewrites_the_two_coarsest_levels_and_trains(size):
    torch.manual_seed(0)
    bfem = BFEM(BFEMConfig(depths=(1, 1, 1)), in_features=TINY, attention=AttentionSlots())
    feats = levels(size)
    out = bfem(feats)
    assert out[0] is feats[0] and out[1] is feats[1]
    assert [o.shape for o in out] == [f.shape for f in feats]
    sum(o.mean() for o in out[2:]).backward()
    assert [n for n, p in bfem.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("size", SIZES)
def test_fusm_shapes_gradients_and_its_places(size):
    made = []

    def slot(name):
        def factory(channels):
            made.append((name, channels))
            return torch.nn.Identity()

        return factory

    slots = AttentionSlots({s: slot(s) for s in FUSM.attention_slots})
    fusm = FUSM(FUSMConfig(ccsf=True), in_features=TINY, attention=slots)
    # per_level 4/8/16/32; ups of 32, then 16+32, then 8+48 channels; after_fusion on the 4+56 = 60-channel concat
    assert made == [("per_level", 4), ("per_level", 8), ("per_level", 16), ("per_level", 32),
                    ("upsample", 32), ("upsample", 48), ("upsample", 56), ("after_fusion", 60)]  # fmt: skip
    assert [f.conv.in_channels for f in fusm.fuse[:2]] == [48, 56] and (fusm.out_channels, fusm.stride) == (60, 4)
    feats = levels(size)
    y = fusm(feats)
    assert y.shape == (2, 60, *feats[0].shape[-2:])
    y.mean().backward()
    assert [n for n, p in fusm.named_parameters() if p.grad is None] == []


def test_fusm_w48_widths_and_resizes():
    """BLOCKS.md 000.4: CCSFs of 576 and 672 (0.786 M), concat 720; bicubic, align_corners True, final too."""
    with torch.device("meta"):
        fusm = FUSM(FUSMConfig(), in_features=W48, attention=AttentionSlots())
    assert [f.conv.in_channels for f in fusm.fuse[:2]] == [576, 672] and fusm.out_channels == 720
    assert sum(n_params(f) for f in fusm.fuse) == 785_856
    assert all(up.resize == Resize("bicubic", align_corners=True) for up in fusm.ups)
    assert fusm.final_resize == Resize("bicubic", align_corners=True)


def test_fusm_concatenates_the_native_map_first():
    """cat[S_k, up(z)]: with CCSF weights picking channel blocks, the native level comes first (BLOCKS.md 000.4)."""
    fusm = FUSM(FUSMConfig(), in_features=(FeatureInfo(1, 4), FeatureInfo(1, 8)), attention=AttentionSlots()).eval()
    fine, coarse = torch.full((1, 1, 4, 4), 3.0), torch.full((1, 1, 2, 2), -5.0)
    captured = []
    fusm.head.register_forward_hook(lambda m, i, o: captured.append(i[0]))
    fusm([fine, coarse])
    torch.testing.assert_close(captured[0][0, 0], fine[0, 0])
    torch.testing.assert_close(captured[0][0, 1], torch.full((4, 4), -5.0))  # bicubic of a constant is the constant


@pytest.mark.parametrize("family", ["hrnet", "hrnet_s", "hrnet_m", "hrnet_l"])
@pytest.mark.parametrize("size", SIZES)
def test_every_preset_family_builds_and_trains_at_tiny_width(registry, family, size):
    """The preset's components at tiny sizes: width 4, the small backbone layout with one block per stream, one
    MSCAN unit per BFEM branch (the W18/W32/W48 presets differ only in width; counts at W48: test_counts.py)."""
    table = presets()[family]["model"]
    tiny = {**table, "backbone": {**table["backbone"], "width": 4, "small": True, "num_blocks": 1}}
    if "enhancers" in tiny:
        tiny["enhancers"] = [{**e, "depths": [1, 1, 1]} for e in tiny["enhancers"]]
    cfg = structure_table(tiny, ModelConfig, registry=registry, source=f"preset {family}")
    torch.manual_seed(0)
    model = build_model(cfg, registry, num_classes=5)
    image = torch.rand(1, 3, *size)
    out = model(image)
    assert out.logits.shape == (1, 5, *size)
    out.logits.mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_presets_at_every_width():
    table = presets()
    assert sorted(table) == sorted(
        [f"{f}_w{w}" for f in ("hrnet", "hrnet_s", "hrnet_m", "hrnet_l") for w in (18, 32, 48)]
        + ["hrnet", "hrnet_s", "hrnet_m", "hrnet_l"]
    )
    assert table["hrnet_l_w18"]["model"]["backbone"]["width"] == 18 and table["hrnet_l"] == table["hrnet_l_w48"]
    assert table["hrnet_s_w32"]["model"]["enhancers"] == [{"name": "bfem"}]
