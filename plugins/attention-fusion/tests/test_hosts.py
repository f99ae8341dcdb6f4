"""AFU in the seed's hosts (plugins/classic, by registered name): where the places are (BLOCKS 002.1), that the
module keeps every shape at 97x131 and 360x480, adds no parameters, and what `segcore check` counts for it beside
the thesis' Table IV (+0.06 GFLOPs ResNet / +0.08 Swin at 512x512, mmcv rule)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from segcore import build_model
from segcore.pipeline import check_pipeline
from segcore.pipeline import structure_pipeline
from segcore_plugin_attention_fusion.afu import AFU

D8 = {"out_indices": [1, 2, 3, 4], "kwargs": {"output_stride": 8}}
SWIN_T = {"name": "timm", "model_name": "swin_tiny_patch4_window7_224", "kwargs": {"strict_img_size": False}}
HRNET = {"name": "timm", "model_name": "hrnet_w18_small"}  # 16/32/64/128 channels at strides 4-32

# host -> (model table, classes); the thesis' hosts at their real widths (built on the meta device)
HOSTS = {
    "upernet_swin_t": ({"backbone": SWIN_T, "decoder": {"name": "uper"}}, 150),
    "hrnetv2_w18_small": ({"backbone": HRNET, "decoder": {"name": "hrnetv2_head"}}, 19),
    "deeplabv3_r50_d8": ({"backbone": {"name": "timm", "model_name": "resnet50c", **D8}, "decoder": {"name": "aspp"}}, 150),
    "ocnet_r101_d8": ({"backbone": {"name": "timm", "model_name": "resnet101c", **D8}, "decoder": {"name": "ocnet"}}, 19),
}


def with_afu(model: dict, pool: str = "avg", inside: bool = True) -> dict:
    """*model* with AFU on the final logits upsampling and, for multi-level hosts, every fusion upsampling."""
    model = copy.deepcopy(model)
    model["attention"] = {"final_upsample": {"name": "afu", "pool": pool}}
    if inside and model["decoder"]["name"] in ("uper", "hrnetv2_head"):
        model["decoder"]["attention"] = {"upsample": {"name": "afu", "pool": pool}}
    return model


def pipeline(registry, model: dict, num_classes: int):
    raw = {"model": {**model, "num_classes": num_classes}, "data": {"dataset": {"name": "shapes"}}}
    return structure_pipeline(raw, registry=registry)


def build(registry, model: dict, num_classes: int, device: str = "meta"):
    with torch.device(device):
        return build_model(pipeline(registry, model, num_classes).model, registry, num_classes=num_classes)


def afu_inputs(model: torch.nn.Module, size: tuple[int, int]) -> list[tuple[int, ...]]:
    """The shape every AFU module sees, in call order, for one (1, 3, *size) image on the meta device."""
    seen: list[tuple[int, ...]] = []
    for m in model.modules():
        if isinstance(m, AFU):
            m.register_forward_hook(lambda mod, i, o: seen.append(tuple(o.shape)) if o.shape == i[0].shape else None)
    model.eval()(torch.zeros(1, 3, *size, device="meta"))
    return seen


def _s(size: tuple[int, int], stride: int) -> tuple[int, int]:
    return math.ceil(size[0] / stride), math.ceil(size[1] / stride)


@pytest.mark.parametrize("size", [(97, 131), (360, 480)])
def test_places_in_upernet(registry, size):
    """3 top-down resizes (to 1/16, 1/8, 1/4, before each add), 3 resizes of the FPN outputs to 1/4 (before the
    concat), all 512 channels; then the 150-class logits at the input size. 360x480: 90x120, 45x60, 23x30, 12x15."""
    model, k = HOSTS["upernet_swin_t"]
    q, e, s = _s(size, 4), _s(size, 8), _s(size, 16)
    expected = [(1, 512, *s), (1, 512, *e), (1, 512, *q), (1, 512, *q), (1, 512, *q), (1, 512, *q), (1, k, *size)]
    assert afu_inputs(build(registry, with_afu(model), k), size) == expected


@pytest.mark.parametrize("size", [(97, 131), (360, 480)])
def test_places_in_the_hrnetv2_head(registry, size):
    """Streams 2-4 (32, 64, 128 channels) resized to stream 1's size before the concat; then the logits."""
    model, k = HOSTS["hrnetv2_w18_small"]
    q = _s(size, 4)
    assert afu_inputs(build(registry, with_afu(model), k), size) == [(1, 32, *q), (1, 64, *q), (1, 128, *q), (1, k, *size)]


@pytest.mark.parametrize("size", [(97, 131), (360, 480)])
@pytest.mark.parametrize("host", ["deeplabv3_r50_d8", "ocnet_r101_d8"])
def test_single_level_hosts_have_only_the_final_place(registry, host, size):
    model, k = HOSTS[host]
    assert afu_inputs(build(registry, with_afu(model), k), size) == [(1, k, *size)]


def test_deeplabv3_image_pool_place_is_the_alternative_reading(registry):
    """BLOCKS 002.1's degenerate alternative: AFU on the ASPP image-pooling broadcast (512 channels at 1/8)."""
    model, k = HOSTS["deeplabv3_r50_d8"]
    model = copy.deepcopy(model)
    model["decoder"]["attention"] = {"upsample": {"name": "afu"}}
    assert afu_inputs(build(registry, model, k), (97, 131)) == [(1, 512, 13, 17)]


@pytest.mark.parametrize("pool", ["avg", "max", "avg+max"])
@pytest.mark.parametrize("host", list(HOSTS))
def test_zero_added_parameters_and_the_same_weights(registry, host, pool):
    """The thesis' Table IV: params identical with and without the module; here even the state dicts coincide."""
    model, k = HOSTS[host]
    base, fused = build(registry, model, k), build(registry, with_afu(model, pool), k)
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in base.parameters())
    assert {n: t.shape for n, t in fused.state_dict().items()} == {n: t.shape for n, t in base.state_dict().items()}


# Small real hosts: the same places, real numbers. ResNet-18-D8 for the single-level heads, plain ResNet-18
# (strides 4-32) for UperNet, hrnet_w18_small for the HRNetV2 head; heads 16 channels wide.
R18_D8 = {"name": "timm", "model_name": "resnet18d", **D8}
R18 = {"name": "timm", "model_name": "resnet18", "out_indices": [1, 2, 3, 4]}
SMALL = {
    "uper": {"backbone": R18, "decoder": {"name": "uper", "channels": 16}},
    "hrnetv2_head": {"backbone": HRNET, "decoder": {"name": "hrnetv2_head", "channels": 16}},
    "aspp": {"backbone": R18_D8, "decoder": {"name": "aspp", "channels": 16}},
    "ocnet": {"backbone": R18_D8, "decoder": {"name": "ocnet", "channels": 16, "key_channels": 8, "value_channels": 8}},
}


@pytest.mark.parametrize("host", list(SMALL))
def test_real_forward_keeps_shapes_and_changes_the_logits(registry, host, size=(97, 131)):
    """Real numbers at the odd size (the meta-device tests above cover 360x480 at the thesis' widths)."""
    torch.manual_seed(0)
    base = build(registry, SMALL[host], 5, device="cpu").eval()
    fused = build(registry, with_afu(SMALL[host]), 5, device="cpu").eval()
    fused.load_state_dict(base.state_dict(), strict=True)  # no weights of its own: the base's load as they are
    image = torch.rand(1, 3, *size)
    with torch.no_grad():
        plain, out = base(image).logits, fused(image).logits
    assert out.shape == plain.shape == (1, 5, *size)
    assert torch.isfinite(out).all() and not torch.allclose(out, plain)


def _counts(registry, model: dict, k: int, convention: str) -> tuple[int, int]:
    rows = check_pipeline(pipeline(registry, model, k), registry, input_size=(512, 512), convention=convention)
    return sum(r.params for r in rows), sum(r.macs for r in rows)


@pytest.mark.parametrize("host, places", [
    # final logits 150 x 512 x 512 = 39,321,600 elements pooled once: 0.039 G; the thesis: +0.06
    ("deeplabv3_r50_d8", 150 * 512 * 512),
    # + 512 channels at 32x32, 64x64, 128x128 (top-down) and 3 x 128x128 (to 1/4): 0.075 G; the thesis: +0.08
    ("upernet_swin_t", 150 * 512 * 512 + 512 * (32 * 32 + 64 * 64 + 4 * 128 * 128)),
])  # fmt: skip
def test_added_flops_as_segcore_check_counts_them(registry, host, places):
    """mmcv's rule counts a global pool as one op per input element and nothing for the products and the softmax,
    so AFU adds exactly the elements at its places: 0.039 G (DeepLabV3) and 0.075 G (UperNet) beside the thesis'
    0.06 / 0.08. Torch's count of convolutions and matrix products ("true") sees nothing added."""
    model, k = HOSTS[host]
    base_p, base_mmcv = _counts(registry, model, k, "mmcv")
    afu_p, afu_mmcv = _counts(registry, with_afu(model), k, "mmcv")
    assert afu_p == base_p and afu_mmcv - base_mmcv == places
    assert _counts(registry, with_afu(model), k, "true")[1] == _counts(registry, model, k, "true")[1]
