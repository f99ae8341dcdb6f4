"""The hosts of seed 002 (DeepLabV3, UperNet, OCNet, PSPNet) with their backbones through the core timm adapter,
against BLOCKS.md 002.2 and the "Numbers to check against" table: parameters on the meta device, hand-counted head
sizes, mmseg's ResNetV1c-D8 layout, and shapes at sizes that are not multiples of 32."""

from __future__ import annotations

import math

import pytest
import torch

from segcore import AttentionSlots, FeatureInfo, Resize, build_model
from segcore.pipeline import check_pipeline
from segcore.pipeline import structure_pipeline
from segcore_plugin_classic.aspp_head import ASPPHead, ASPPHeadConfig
from segcore_plugin_classic.ocnet_head import OCNetDSNConfig, OCNetDSNHead, OCNetHead, OCNetHeadConfig
from segcore_plugin_classic.uper_head import UperHead, UperHeadConfig

SWIN = {"t": "swin_tiny_patch4_window7_224", "s": "swin_small_patch4_window7_224", "b": "swin_base_patch4_window7_224"}


def resnet_d8(model_name: str) -> dict:
    """mmseg's ResNetV1c-D8 through the core timm backbone: stages 1-4, output stride 8."""
    return {"name": "timm", "model_name": model_name, "out_indices": [1, 2, 3, 4], "kwargs": {"output_stride": 8}}


def swin(size: str) -> dict:
    return {"name": "timm", "model_name": SWIN[size], "kwargs": {"strict_img_size": False}}


def host(backbone: dict, decoder: dict, num_classes: int, aux_channels: int | None = 256) -> dict:
    """A model table with mmseg's auxiliary FCN head on stage 3 (weight 0.4, the core's default)."""
    model = {"backbone": backbone, "decoder": decoder, "num_classes": num_classes}
    if aux_channels:
        model["aux"] = {"fcn": {"decoder": {"name": "fcn", "channels": aux_channels}, "in_index": [2]}}
    return model


def build(registry, model: dict, device: str = "meta"):
    cfg = structure_pipeline({"model": model, "data": {"dataset": {"name": "shapes"}}}, registry=registry)
    with torch.device(device):
        return build_model(cfg.model, registry, num_classes=cfg.model.num_classes)


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# BLOCKS "Numbers to check against": params [M] measured from the mmseg configs, quoted to 2 decimals; the seed's
# Table IV gives the same 68.21 / 87.21 / 59.94 / 81.26 / 121.28 (150 classes, auxiliary head counted).
HOSTS = {
    "deeplabv3_r50_d8_ade": (host(resnet_d8("resnet50c"), {"name": "aspp"}, 150), 68.21),
    "deeplabv3_r101_d8_ade": (host(resnet_d8("resnet101c"), {"name": "aspp"}, 150), 87.21),
    "upernet_swin_t_ade": (host(swin("t"), {"name": "uper"}, 150), 59.94),
    "upernet_swin_s_ade": (host(swin("s"), {"name": "uper"}, 150), 81.26),
    "upernet_swin_b_ade": (host(swin("b"), {"name": "uper"}, 150), 121.28),
    "pspnet_r50_d8_cityscapes": (host(resnet_d8("resnet50c"), {"name": "psp"}, 19), 48.98),
    "deeplabv3_r18_d8_cityscapes": (host(resnet_d8("resnet18d"), {"name": "aspp", "channels": 128}, 19, 64), 13.99),
    "deeplabv3_r50_d8_cityscapes": (host(resnet_d8("resnet50c"), {"name": "aspp"}, 19), 68.11),
}


@pytest.mark.parametrize("name", HOSTS)
def test_host_parameters_match_blocks(registry, name):
    model, millions = HOSTS[name]
    count = params(build(registry, model))
    assert round(count / 1e6, 2) == millions  # far inside the 2% the issue allows; Swin lacks mmseg's 4 out-norms


# BLOCKS "Numbers to check against", GMAC under mmcv's rule (mmseg get_flops: no matmuls, auxiliary head not run):
# the seed's Table IV for ADE20K at 512x512 (tolerance 0.01%: timm's Swin lacks mmseg's four output LayerNorms,
# 0.006 G); BLOCKS' "mm-style" estimates for Cityscapes at 512x1024 (tolerance 2%, the issue's).
FLOPS = {
    "deeplabv3_r50_d8_ade": (270.25, 1e-4), "deeplabv3_r101_d8_ade": (348.15, 1e-4),
    "upernet_swin_t_ade": (236.15, 1e-4), "upernet_swin_s_ade": (259.33, 1e-4), "upernet_swin_b_ade": (297.28, 1e-4),
    "pspnet_r50_d8_cityscapes": (357.0, 0.02), "deeplabv3_r18_d8_cityscapes": (120.0, 0.02),
    "deeplabv3_r50_d8_cityscapes": (539.8, 0.02),
}


@pytest.mark.parametrize("name", FLOPS)
def test_host_macs_under_the_mmcv_convention_match_blocks(registry, name):
    model, millions = HOSTS[name]
    cfg = structure_pipeline({"model": model, "data": {"dataset": {"name": "shapes"}}}, registry=registry)
    size = (512, 1024) if name.endswith("cityscapes") else (512, 512)
    rows = check_pipeline(cfg, registry, input_size=size, convention="mmcv")
    reference, tolerance = FLOPS[name]
    assert abs(sum(r.macs for r in rows) / 1e9 - reference) <= tolerance * reference
    assert [r.macs for r in rows if r.path.startswith("model.aux.")] == [0]  # counted in params only, as mmcv
    assert round(sum(r.params for r in rows) / 1e6, 2) == millions


def test_aspp_head_by_hand():
    """Image pool and 1x1 branch: conv1x1 2048->512 + BN; three 3x3 branches; bottleneck 3x3 over 5 x 512."""
    with torch.device("meta"):
        head = ASPPHead(ASPPHeadConfig(), in_features=(FeatureInfo(2048, 8),), attention=AttentionSlots())
    cbr = lambda cin, k: cin * 512 * k * k + 2 * 512  # noqa: E731
    assert params(head) == 2 * cbr(2048, 1) + 3 * cbr(2048, 3) + cbr(5 * 512, 3) == 42_211_328
    assert [b.conv.dilation for b in head.branches] == [(1, 1), (12, 12), (24, 24), (36, 36)]
    assert [b.conv.padding for b in head.branches] == [(0, 0), (12, 12), (24, 24), (36, 36)]


def test_uper_head_by_hand_on_swin_t_widths():
    """PPM 4 x CBR1x1(768->512), bottleneck CBR3x3(768 + 2048 -> 512), laterals CBR1x1 from 96/192/384, three
    CBR3x3(512) FPN convs, fuse CBR3x3(2048 -> 512)."""
    levels = tuple(FeatureInfo(c, s) for c, s in ((96, 4), (192, 8), (384, 16), (768, 32)))
    with torch.device("meta"):
        head = UperHead(UperHeadConfig(), in_features=levels, attention=AttentionSlots())
    cbr = lambda cin, k: cin * 512 * k * k + 2 * 512  # noqa: E731
    expected = 4 * cbr(768, 1) + cbr(768 + 4 * 512, 3) + sum(cbr(c, 1) for c in (96, 192, 384)) + 3 * cbr(512, 3)
    assert params(head) == expected + cbr(4 * 512, 3) == 31_420_416


def test_ocnet_head_by_hand():
    """conv3x3 2048->512 with bias + BN; key and query each 2 x (conv1x1 with bias + BN) to 256; value 512->256 and
    output 256->512 convs with bias; fuse conv1x1 1024->512 with bias + BN (openseg BaseOCNet)."""
    with torch.device("meta"):
        head = OCNetHead(OCNetHeadConfig(), in_features=(FeatureInfo(2048, 8),), attention=AttentionSlots())
    key = (512 * 256 + 256 + 512) + (256 * 256 + 256 + 512)
    expected = (2048 * 9 * 512 + 512 + 1024) + 2 * key + (512 * 256 + 256) + (256 * 512 + 512) + (1024 * 512 + 512 + 1024)
    assert params(head) == expected == 10_623_744


def test_ocnet_dsn_head_by_hand():
    """openseg BaseOCNet.dsn: conv3x3 1024->512 with bias + BN + ReLU on stage 3 (the classifier, with bias, is the
    training head's); its logits resized with align_corners=True, as upstream."""
    with torch.device("meta"):
        head = OCNetDSNHead(OCNetDSNConfig(), in_features=(FeatureInfo(1024, 8),), attention=AttentionSlots())
    assert params(head) == 1024 * 9 * 512 + 512 + 1024 and head.conv.conv.bias is not None
    assert (head.out_channels, head.stride) == (512, 8)
    assert head.final_resize == Resize("bilinear", align_corners=True)


def test_ocnet_with_openseg_deep_supervision(registry):
    """OCNet as openseg builds it (attention-fusion's hosts/ocnet_r101.toml): ocnet_dsn on stage 3 (bias,
    align_corners True, no dropout), its classifier with bias; the main logits resized with align_corners True."""
    spec = host(resnet_d8("resnet101c"), {"name": "ocnet"}, 19, aux_channels=None)
    spec["aux"] = {"dsn": {"decoder": {"name": "ocnet_dsn"}, "in_index": [2], "weight": 0.4, "dropout": 0.0}}
    model = build(registry, spec)
    dsn = model.aux["dsn"]
    assert dsn.decoder.conv.conv.in_channels == 1024 and dsn.decoder.conv.conv.bias is not None
    assert dsn.classifier.bias is not None and dsn.dropout.p == 0.0
    assert dsn.decoder.final_resize.align_corners and model.decoder.final_resize.align_corners


def test_ocnet_context_starts_as_no_context():
    head = OCNetHead(OCNetHeadConfig(channels=16, key_channels=8, value_channels=8), in_features=(FeatureInfo(32, 8),),
                     attention=AttentionSlots())  # fmt: skip
    x = torch.randn(2, 16, 5, 7)
    assert torch.equal(head.context(x), torch.zeros_like(x))  # the output conv is initialised to zero, as upstream


@pytest.mark.parametrize("model_name, stem, first_dilations, dilations", [
    ("resnet50c", [32, 32, 64], (1, 2), (2, 4)),
    ("resnet101c", [32, 32, 64], (1, 2), (2, 4)),
    ("resnet18d", [32, 32, 64], (1, 2), (2, 4)),
])  # fmt: skip
def test_resnet_d8_is_mmseg_resnetv1c_d8(registry, model_name, stem, first_dilations, dilations):
    """Deep stem 3->32->32->64; strides 4, 8, 8, 8; stages 3 and 4 dilated 2 and 4 with the first block of each at
    half that ("contract dilation", BLOCKS 002.2)."""
    model = build(registry, host(resnet_d8(model_name), {"name": "aspp", "channels": 8}, 19, aux_channels=None))
    backbone = model.backbone
    assert [i.stride for i in backbone.feature_info] == [4, 8, 8, 8]
    assert [m.out_channels for m in backbone.model.conv1 if isinstance(m, torch.nn.Conv2d)] == stem
    for stage, first, rest in zip(("layer3", "layer4"), first_dilations, dilations):
        convs = [m for n, m in getattr(backbone.model, stage).named_modules() if n.endswith("conv2") or
                 (model_name == "resnet18d" and n.endswith("conv1"))]  # fmt: skip
        # Bottleneck: its 3x3 conv2; BasicBlock: conv1 takes the block's first dilation, conv2 the stage's
        got = [c.dilation[0] for c in convs]
        if model_name == "resnet18d":
            assert got == [first, rest, rest, rest]
        else:
            assert got[0] == first and set(got[1:]) == {rest}


def _out_sizes(registry, model: dict, size: tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    m = build(registry, model).train()
    got = []
    m.decoder.register_forward_hook(lambda mod, i, o: got.append(tuple(o.shape)))  # append returns None: output kept
    out = m(torch.zeros(2, 3, *size, device="meta"))
    return got[0], tuple(out.logits.shape), tuple(out.aux["fcn"].shape)


@pytest.mark.parametrize("size", [(97, 131), (360, 480)])
@pytest.mark.parametrize("decoder", ["aspp", "psp", "ocnet"])
def test_single_level_hosts_keep_any_input_size(registry, decoder, size):
    dec, logits, aux = _out_sizes(registry, host(resnet_d8("resnet50c"), {"name": decoder}, 19), size)
    assert dec == (2, 512, math.ceil(size[0] / 8), math.ceil(size[1] / 8))
    assert logits == aux == (2, 19, *size)


@pytest.mark.parametrize("size", [(97, 131), (360, 480)])
@pytest.mark.parametrize("kwargs", [{"strict_img_size": False}, {"img_size": 512, "strict_img_size": False}, {}])
def test_upernet_swin_keeps_any_input_size(registry, size, kwargs):
    """timm's Swin returns NHWC maps and checks the input size unless strict_img_size is off (the adapter's default)."""
    backbone = {**swin("t"), "kwargs": kwargs}
    dec, logits, aux = _out_sizes(registry, host(backbone, {"name": "uper"}, 150), size)
    assert dec == (2, 512, math.ceil(size[0] / 4), math.ceil(size[1] / 4))
    assert logits == aux == (2, 150, *size)


def test_single_level_hosts_read_the_last_level_and_the_aux_head_stage_3(registry):
    model = build(registry, host(resnet_d8("resnet50c"), {"name": "ocnet"}, 19))
    assert model.decoder.pre.conv.in_channels == 2048  # stage 4
    assert model.aux["fcn"].decoder.convs[0][0].in_channels == 1024 and model.aux["fcn"].weight == 0.4  # stage 3
