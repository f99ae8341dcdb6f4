"""The reverse-HRNet decoder (BLOCKS.md 001.2-001.4): parameters against a hand formula and BLOCKS' figures, shapes
of both variants at 97x131, 360x480 and 720x960 through whole pipelines, the stream sizes of a real forward, the
presets and the configuration errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from segcore import AttentionSlots, ConfigError, ContractError, FeatureInfo, build_model
from segcore.pipeline import resolve_bases, structure_pipeline
from segcore_plugin_early_fusion.presets import presets
from segcore_plugin_early_fusion.reverse_hrnet import ReverseHRNetConfig, ReverseHRNetDecoder

# timm resnet50 features_only, out_indices 0-4 (BLOCKS.md 001.1): 64 @1/2, 256 @1/4, 512 @1/8, 1024 @1/16, 2048 @1/32
RESNET50 = (FeatureInfo(64, 2), FeatureInfo(256, 4), FeatureInfo(512, 8), FeatureInfo(1024, 16), FeatureInfo(2048, 32))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- a hand formula for the parameter count ----------------------------------------------------------------------


def _basic_block(c: int) -> int:
    return 2 * (9 * c * c + 2 * c)  # two conv3x3 (no bias) + BN each


def _module(widths: list[int], outputs: int, blocks: int) -> int:
    """One HRNet module (BLOCKS.md 000.1 item 5) reading len(widths) streams and fusing into the first *outputs*."""
    total = sum(blocks * _basic_block(c) for c in widths)
    if len(widths) == 1:
        return total
    for i in range(outputs):
        for j, cj in enumerate(widths):
            if j > i:  # conv1x1 + BN, then resized
                total += cj * widths[i] + 2 * widths[i]
            elif j < i:  # i - j stride-2 conv3x3 + BN, the intermediate ones keeping cj channels
                total += (i - j - 1) * (9 * cj * cj + 2 * cj) + 9 * cj * widths[i] + 2 * widths[i]
    return total


def decoder_params(width: int, in_channels: list[int], *, half: bool = False, modules: tuple[int, ...] | None = None,
                   blocks: int = 4, every_module_outputs_all: bool = False) -> int:  # fmt: skip
    """Adapters (conv1x1 + BN per used tap) + the stages + the conv1x1-BN head, computed by hand."""
    widths = ([width // 2] if half else []) + [width * 2**i for i in range(4)]
    modules = modules or ((1, 2, 2, 1) if half else (3, 4, 1))
    n = len(widths)
    total = sum(ci * c + 2 * c for ci, c in zip(in_channels[-n:], widths))
    for k, count in enumerate(modules):
        streams = widths[: n - k]
        for m in range(count):
            last = m == count - 1 and not every_module_outputs_all
            total += _module(streams, len(streams) - 1 if last else len(streams), blocks)
    return total + widths[0] * widths[0] + 2 * widths[0]


def test_adapters_w48_are_blocks_1_05_m():
    """BLOCKS.md 001.2: 256->48, 512->96, 1024->192, 2048->384, conv1x1 + BN: 1.05 M."""
    with torch.device("meta"):
        decoder = ReverseHRNetDecoder(ReverseHRNetConfig(width=48), in_features=RESNET50, attention=AttentionSlots())
    assert n_params(decoder.adapters) == 256 * 48 + 512 * 96 + 1024 * 192 + 2048 * 384 + 2 * (48 + 96 + 192 + 384) == 1_045_920
    assert len(decoder.adapters) == 4  # the stride-2 tap is not read by the 4-stream decoder


@pytest.mark.parametrize("width, blocks_total", [(18, 9.4), (32, 29.1), (48, 64.9)])
def test_parameters_match_the_hand_formula_and_blocks(width, blocks_total):
    """Our decoder equals the hand formula exactly. BLOCKS.md 001.3 measured 9.4 / 29.1 / 64.9 M (adapters + modules,
    19 classes) with timm's HRNet modules, whose every module outputs all its streams: adding the fusion outputs a
    stage's last module never uses (its coarsest stream is dropped) to our count gives those figures."""
    with torch.device("meta"):
        decoder = ReverseHRNetDecoder(ReverseHRNetConfig(width=width), in_features=RESNET50, attention=AttentionSlots())
    taps = [i.channels for i in RESNET50]
    assert n_params(decoder) == decoder_params(width, taps)
    classifier = 19 * width + 19
    with_unused_outputs = decoder_params(width, taps, every_module_outputs_all=True) + classifier
    assert round(with_unused_outputs / 1e6, 1) == blocks_total
    if width == 48:  # 63.8 M of modules in BLOCKS = ours + 1,600,416 parameters of never-used fusion outputs
        stages = n_params(decoder.stages)
        assert stages == 62_236_992 and round((with_unused_outputs - classifier - 1_045_920 - 2_400) / 1e6, 1) == 63.8


def test_half_stream_variant_parameters():
    """BLOCKS.md 001.4: streams 24/48/96/192/384 (W48), 1, 2, 2, 1 modules on 5, 4, 3, 2 streams, tap 0 adapted 64->24."""
    with torch.device("meta"):
        decoder = ReverseHRNetDecoder(ReverseHRNetConfig(width=48, half_stream=True), in_features=RESNET50,
                                      attention=AttentionSlots())  # fmt: skip
    assert [a.conv.out_channels for a in decoder.adapters] == [24, 48, 96, 192, 384]
    assert [len(s) for s in decoder.stages] == [1, 2, 2, 1]
    assert n_params(decoder) == decoder_params(48, [i.channels for i in RESNET50], half=True) == 25_467_792
    assert (decoder.out_channels, decoder.stride) == (24, 2)


def test_streams_shrink_one_per_stage():
    """The last module of each stage outputs one stream fewer; the others keep every stream (BLOCKS.md 001.3)."""
    with torch.device("meta"):
        decoder = ReverseHRNetDecoder(ReverseHRNetConfig(width=48), in_features=RESNET50, attention=AttentionSlots())
    outs = [[len(m.out_channels) for m in stage] for stage in decoder.stages]
    assert outs == [[4, 4, 3], [3, 3, 3, 2], [1]]
    assert decoder.stages[0][0].out_channels == (48, 96, 192, 384)


# -- shapes ---------------------------------------------------------------------------------------------------------


def pipeline(registry, preset: str, **model):
    raw = {"base": preset, "model": {"backbone": {"pretrained": False}, **model}, "data": {"dataset": {"name": "shapes"}}}
    return structure_pipeline(resolve_bases(raw, registry=registry), registry=registry)


@pytest.mark.parametrize("preset, stride", [("early_fusion_w48", 4), ("early_fusion_half_w48", 2)])
@pytest.mark.slow  # ~6 s each: W48 forward on 2 idle AVX2 cores
def test_shapes_of_both_variants(registry, preset, stride):
    """Whole W48 models on the meta device at 97x131, 360x480 and 720x960: encoder maps at ceil(H / 2^k), the decoder
    map at ceil(H / stride), logits at the input size (CamVid's 720x960 gives encoder maps of 360, 180, 90, 45, 23
    rows: 23 * 2 != 45, so every resize must target a size)."""
    cfg = pipeline(registry, preset)
    with torch.device("meta"):
        model = build_model(cfg.model, registry, num_classes=11).eval()
    seen = {}
    model.decoder.register_forward_hook(lambda m, inputs, out: seen.update(features=inputs[0], fused=out))
    for size in [(97, 131), (360, 480), (720, 960)]:
        out = model(torch.empty(2, 3, *size, device="meta"))  # meta tensors: shapes only, no compute
        features, fused = seen["features"], seen["fused"]
        assert [tuple(f.shape[-2:]) for f in features] == [(math.ceil(size[0] / s), math.ceil(size[1] / s)) for s in (2, 4, 8, 16, 32)]
        assert tuple(fused.shape) == (2, 48 // (4 // stride), math.ceil(size[0] / stride), math.ceil(size[1] / stride))
        assert tuple(out.logits.shape) == (2, 11, *size)


def test_real_forward_resizes_every_stream_to_its_target(registry):
    """A real (not meta) forward of the half variant at 97x131 on timm's tiny ResNet: each stage's outputs have the
    exact sizes of the encoder's taps (49x66, 25x33, 13x17, 7x9; 4x5 dropped first), the logits the input size."""
    cfg = pipeline(registry, "early_fusion_half_w18", backbone={"model_name": "test_resnet", "pretrained": False},
                   decoder={"width": 4, "num_blocks": 1})  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg.model, registry, num_classes=3).eval()
    seen = []
    for stage in model.decoder.stages:
        stage.register_forward_hook(lambda m, i, out: seen.append([tuple(t.shape[1:]) for t in out]))
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 97, 131)).logits
    assert seen == [
        [(2, 49, 66), (4, 25, 33), (8, 13, 17), (16, 7, 9)],
        [(2, 49, 66), (4, 25, 33), (8, 13, 17)],
        [(2, 49, 66), (4, 25, 33)],
        [(2, 49, 66)],
    ]
    assert logits.shape == (1, 3, 97, 131) and torch.isfinite(logits).all()


# -- presets and configuration ------------------------------------------------------------------------------------


def test_presets(registry):
    """Six widths/variants plus the bare W48 names; encoder: frozen swsl ResNet-50 with taps 0-4, pretrained."""
    table = presets()
    assert sorted(table) == sorted(["early_fusion", "early_fusion_half"] + [f"early_fusion{v}_w{w}" for v in ("", "_half") for w in (18, 32, 48)])
    assert table["early_fusion"] == table["early_fusion_w48"]
    backbone = table["early_fusion_half_w32"]["model"]["backbone"]
    assert backbone == {"name": "timm", "model_name": "resnet50.fb_swsl_ig1b_ft_in1k", "out_indices": [0, 1, 2, 3, 4],
                        "pretrained": True, "frozen": True}  # fmt: skip
    cfg = pipeline(registry, "early_fusion_half_w32")
    assert cfg.model.backbone.frozen and cfg.model.decoder.config == ReverseHRNetConfig(width=32, half_stream=True)
    ssl = pipeline(registry, "early_fusion_w18", backbone={"model_name": "resnet50.fb_ssl_yfcc100m_ft_in1k", "pretrained": False})
    assert ssl.model.backbone.config.model_name == "resnet50.fb_ssl_yfcc100m_ft_in1k"


@pytest.mark.parametrize("decoder, fragment", [
    ({"num_modules": [3, 4]}, "num_modules: one count >= 1 per stage, 3 stages for 4 streams"),
    ({"half_stream": True, "num_modules": [1, 2, 2]}, "4 stages for 5 streams"),
    ({"num_modules": [3, 0, 1]}, "one count >= 1 per stage"),
    ({"half_width": 16}, "set half_stream = true too"),
    ({"widht": 18}, "unknown key 'widht' (did you mean 'width'?)"),
])  # fmt: skip
def test_config_errors(registry, decoder, fragment):
    with pytest.raises(ConfigError, match="model.decoder") as info:
        pipeline(registry, "early_fusion_w18", decoder=decoder)
    assert fragment in str(info.value)


def test_half_stream_without_the_stem_tap_names_the_fix(registry):
    cfg = pipeline(registry, "early_fusion_half_w18", backbone={"out_indices": [1, 2, 3, 4], "pretrained": False})
    with torch.device("meta"), pytest.raises(ContractError) as info:
        build_model(cfg.model, registry, num_classes=3)
    msg = str(info.value)
    assert "[model.decoder]" in msg and "got 4 maps at strides (4, 8, 16, 32)" in msg
    assert "set [model.backbone] out_indices = [0, 1, 2, 3, 4]" in msg
