"""FRM, the FPN decoder and the seed's Table 2 (BLOCKS.md 003.2, 003.4, 003.5): parameters and GFLOPs at
2048x1024 against the paper, the enhancer contract, and shapes at odd sizes through whole pipelines."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch
from torch import nn

from segcore import AttentionSlots, Attention, ContractError, FeatureInfo, build_model
from segcore.pipeline import check_pipeline, totals
from segcore.pipeline import read_toml, structure_pipeline
from segcore_plugin_frm.fpn import FPNDecoder, FPNDecoderConfig
from segcore_plugin_frm.frm import FRM, FRMConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VAN_B1 = (FeatureInfo(64, 4), FeatureInfo(128, 8), FeatureInfo(320, 16), FeatureInfo(512, 32))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pipeline(registry, name: str, *, aux: bool = True):
    """A pipeline file of configs/, without the ImageNet weights file (random weights) and optionally without
    its training-only heads."""
    raw = read_toml(CONFIGS / name, registry=registry)
    raw["model"]["backbone"].pop("weights", None)
    if not aux:  # the inference model; without its embedding head the contrastive loss has nothing to read
        raw["model"].pop("aux", None)
        raw["loss"] = [{"name": "ce"}]
    return structure_pipeline(raw, registry=registry, source=name)


def test_frm_parameters_as_blocks_reconstructs_them():
    """BLOCKS 003.2: FRM = 1.970 M on VAN-B1's 64+128+320+512 = 1024 channels."""
    with torch.device("meta"):
        frm = FRM(FRMConfig(), in_features=VAN_B1, attention=AttentionSlots())
        alt_b = FRM(FRMConfig(order="cut_ffn", ffn_channels=1024), in_features=VAN_B1, attention=AttentionSlots())
    dnl = 2 * (1024 * 256 + 256) + 1024 * 1024 + (1024 + 1)  # q, k at C/4 with bias; v without; unary mask
    ffn = (1024 * 128 + 128) + (128 * 9 + 128) + (128 * 1024 + 1024)  # conv1x1, DW3x3, conv1x1, all with bias
    cut = 1024 * 128 + 2 * 128  # conv1x1 without bias + BN
    assert n_params(frm) == dnl + ffn + cut == 1_970_305
    ffn_b = (128 * 1024 + 1024) + (1024 * 9 + 1024) + (1024 * 128 + 128)  # alternative B: 128 -> 1024 -> 128 after the cut
    assert n_params(alt_b) == dnl + cut + ffn_b == 1_979_265


def test_frm_replaces_the_top_level_and_passes_the_others_through():
    frm = FRM(FRMConfig(channels=16, ffn_channels=8), in_features=VAN_B1[:2] + (FeatureInfo(32, 16), FeatureInfo(48, 32)),
              attention=AttentionSlots())  # fmt: skip
    feats = [torch.randn(2, c, h, w) for c, (h, w) in zip((64, 128, 32, 48), ((25, 33), (13, 17), (7, 9), (4, 5)))]
    out = frm(feats)
    assert [o is f for o, f in zip(out, feats)] == [True, True, True, False]
    assert out[3].shape == (2, 16, 4, 5)
    assert [(i.channels, i.stride) for i in frm.feature_info] == [(64, 4), (128, 8), (32, 16), (16, 32)]


def test_frm_levels_choose_the_concatenation():
    frm = FRM(FRMConfig(levels=(2, 3)), in_features=VAN_B1, attention=AttentionSlots())
    assert frm.refine[0].query.in_channels == 320 + 512
    with pytest.raises(ContractError, match=r"frm: levels \[3, 2\] must name distinct existing maps, finest first"):
        FRM(FRMConfig(levels=(3, 2)), in_features=VAN_B1, attention=AttentionSlots())


def test_fpn_parameters_and_its_six_upsampling_places():
    """BLOCKS 003.4: FPN(128) with VAN-B1 laterals = 1.10 M; SFNet resizes with align_corners=True."""
    calls = []

    class Spy(Attention):
        def forward(self, x):
            calls.append(tuple(x.shape[-2:]))
            return x

    slots = AttentionSlots({"upsample": lambda c: Spy()})
    with torch.device("meta"):
        fpn = FPNDecoder(FPNDecoderConfig(), in_features=VAN_B1[:3] + (FeatureInfo(128, 32),), attention=AttentionSlots())
    laterals = (64 + 128 + 320) * 128 + 3 * (128 + 2 * 128)  # conv1x1 with bias + BN
    assert n_params(fpn) == laterals + 3 * (128 * 128 * 9 + 256) + (512 * 128 * 9 + 256) == 1_099_904
    fpn = FPNDecoder(FPNDecoderConfig(channels=8), in_features=(FeatureInfo(4, 4), FeatureInfo(4, 8), FeatureInfo(4, 16),
                                                              FeatureInfo(8, 32)), attention=slots)  # fmt: skip
    assert fpn.final_resize.align_corners and fpn.up_topdown[0].resize.align_corners
    sizes = ((25, 33), (13, 17), (7, 9), (4, 5))
    out = fpn([torch.randn(1, c, *hw) for c, hw in zip((4, 4, 4, 8), sizes)])
    assert out.shape == (1, 8, 25, 33)
    assert calls == [(7, 9), (13, 17), (25, 33), (25, 33), (25, 33), (25, 33)]  # top-down, then each to 1/4


def test_fpn_says_how_to_feed_its_top_level():
    with pytest.raises(ContractError, match=r'top level is the context map and must be 128 channels wide .* name = "frm"'):
        FPNDecoder(FPNDecoderConfig(), in_features=VAN_B1, attention=AttentionSlots())


# Seed 003 Table 2 at 2048x1024, 19 classes. Counting convention: "thop2x" / 2 = thop's MACs (the seed's GFLOPs
# are MACs without the attention matmuls, BLOCKS 0.3 / 003.2), thop's parameters; the embedding head is training
# only and absent from the inference model, so it is not in these figures.
TABLE2 = {  # paper params (M), paper GFLOPs; BLOCKS' reconstruction (thop): params (M), GMACs
    "frm": (16.48, 214.82, 16.416, 211.90),
    "ppm": (15.23, 213.21, 15.168, 210.31),
    "dappm": (15.98, 214.81, 15.919, 211.92),
}


@pytest.mark.parametrize("context", TABLE2)
def test_table2_params_and_gflops_within_3_percent(registry, context):
    """Our counts equal BLOCKS' reconstruction (to 0.001 M / 0.01 G) and sit 0.4% (params) and 1.4% (GFLOPs) under
    the paper's: a constant +0.06 M / +2.9 G in all three rows lies outside the context module (BLOCKS 003.2: e.g.
    a 3x3 classifier and the embedding head counted in the params); we do not add it, the 3% band holds without.
    Open choices and which reaches the numbers (BLOCKS 003.2): FFN after the DNL with h = 128 (the text's order;
    "cut_ffn" with h = 1024 fits too: 16.425 M / 211.92 G); keys and values 2x2 max-pooled (without: +2.0 G, 3.5%
    over); q, k at C/4 = 256 (the seed); SFNet's PPM (1x1 bottleneck) and DAPPM(1024, 128, 128)."""
    paper_m, paper_g, blocks_m, blocks_g = TABLE2[context]
    rows = check_pipeline(pipeline(registry, f"table2_{context}.toml", aux=False), registry, input_size=(1024, 2048),
                          convention="thop2x")  # fmt: skip
    inference = totals(rows).inference
    params_m, gmacs = inference.params / 1e6, inference.macs / 2 / 1e9
    assert params_m == pytest.approx(blocks_m, abs=0.001)
    assert gmacs == pytest.approx(blocks_g, abs=0.01)
    assert params_m == pytest.approx(paper_m, rel=0.03)
    assert gmacs == pytest.approx(paper_g, rel=0.03)


@pytest.mark.parametrize("context", ["frm", "ppm"])
def test_table2_inference_figures_leave_the_embedding_head_out(registry, context):
    """The recipe's check (training mode, so the embedding head runs; PPM's 1x1 prior BN sees batch 1) reports
    the head on its own row; the inference totals equal the figures of the same pipeline without it."""
    name = f"table2_{context}.toml"
    with_head = totals(check_pipeline(pipeline(registry, name), registry, input_size=(256, 512), convention="thop2x"))
    without = totals(check_pipeline(pipeline(registry, name, aux=False), registry, input_size=(256, 512), convention="thop2x"))
    assert with_head.inference == without.total
    assert with_head.total.params - with_head.inference.params == 128 * 256 + 256  # conv1x1 128 -> 256 with bias


@pytest.mark.parametrize("context", TABLE2)
def test_whole_model_keeps_shapes_at_odd_sizes(registry, context):
    """A 97x131 input gives a 4x5 top level (the 2x2-pooled DNL keys 2x3, PPM's 6x6 prior larger than the map,
    DAPPM's 17/8 pool 1x1), 360x480 a 12x15 one; logits come back at the input size."""
    cfg = pipeline(registry, f"table2_{context}.toml", aux=False)
    model = build_model(cfg.model, registry, num_classes=19).eval()
    tops = []
    model.enhancers[0].register_forward_hook(lambda m, i, o: tops.append(tuple(o[-1].shape)))
    for size in ((97, 131), (360, 480)):
        with torch.inference_mode():
            out = model(torch.rand(1, 3, *size))
        assert out.logits.shape == (1, 19, *size)
        assert torch.isfinite(out.logits).all()
    assert tops == [(1, 128, 4, 5), (1, 128, 12, 15)]


def test_pipeline_without_context_module_is_a_clear_error(registry):
    cfg = pipeline(registry, "table2_frm.toml", aux=False)
    cfg = attrs.evolve(cfg, model=attrs.evolve(cfg.model, enhancers=()))
    with pytest.raises(ContractError, match=r"\[model.decoder\] decoder .sfnet_fpn. .*must be 128 channels wide \(sfnet_fpn channels\), got 512. Put a context enhancer"):
        build_model(cfg.model, registry, num_classes=19)


def test_bdd100k_gflops_at_1280x720_within_3_percent(registry):
    """Seed 003 Table 3: 94.55 GFLOPs at 1280x720 (thop MACs, as Table 2). We count 93.30: the same constant
    outside the context module, scaled by the pixel count (2.9 G x 0.44 = 1.27 G), leaves us 1.3% under."""
    rows = check_pipeline(pipeline(registry, "bdd100k_frm.toml", aux=False), registry, input_size=(720, 1280), convention="thop2x")
    gmacs = totals(rows).inference.macs / 2 / 1e9
    assert gmacs == pytest.approx(93.30, abs=0.01)
    assert gmacs == pytest.approx(94.55, rel=0.03)
