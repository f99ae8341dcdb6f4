"""Model assembly: logits at the input size for any size, aux heads, attention slots, meta-device checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from segcore import ContractError, build_model, load_pipeline
from segcore.model.check import check_pipeline
from segcore.config import structure_pipeline


def _pipeline(registry, text, write_pipeline):
    return load_pipeline(write_pipeline(text), registry=registry)


@pytest.fixture(scope="module")
def hrnet_small(registry):
    """hrnet_w18_small + HRNetV2 head with real (random) weights, eval mode."""
    raw = {
        "model": {"backbone": {"name": "timm", "model_name": "hrnet_w18_small"}, "decoder": {"name": "hrnetv2_head"}},
        "data": {"dataset": {"name": "shapes"}},
    }
    cfg = structure_pipeline(raw, registry=registry)
    return build_model(cfg.model, registry, num_classes=11).eval()


@pytest.mark.parametrize("size", [(360, 480), (97, 131), (512, 1024)])
def test_logits_at_input_size(hrnet_small, size):
    with torch.inference_mode():
        out = hrnet_small(torch.rand(1, 3, *size))
    assert out.logits.shape == (1, 11, *size)
    assert torch.isfinite(out.logits).all()
    assert out.aux == {}


def test_timm_hrnet_alone_fails_at_360x480_which_is_why_the_adapter_pads(registry):
    import timm

    raw = timm.create_model("hrnet_w18_small", features_only=True, feature_location="", out_indices=(1, 2, 3, 4))
    with pytest.raises(RuntimeError, match="must match the size"):
        raw(torch.rand(1, 3, 360, 480))


def test_adapter_equals_timm_where_timm_works_and_gives_ceil_sizes_elsewhere(registry):
    from segcore.builtin.backbones import TimmBackbone, TimmBackboneConfig

    bb = TimmBackbone(TimmBackboneConfig(model_name="hrnet_w18_small")).eval()
    image = torch.rand(1, 3, 384, 480)
    with torch.inference_mode():
        for ours, theirs in zip(bb(image), bb.model(image)):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
        maps = bb(torch.rand(1, 3, 97, 131))
    assert [tuple(m.shape[-2:]) for m in maps] == [(25, 33), (13, 17), (7, 9), (4, 5)]


class _FvcoreExtras(TorchDispatchMode):
    """What fvcore 0.1.5 counts beyond convolutions and matmuls (fvcore/nn/flop_count.py default handles): batch norm
    in eval mode 2 per input element with affine (1 without), upsample_nearest2d 1 and upsample_bilinear2d 4 per
    output element. Counted at the aten level, so F.interpolate is seen as well as nn.Upsample."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if "batch_norm" in name and "backward" not in name:
            self.macs += args[0].numel() * (2 if args[1] is not None else 1)
        elif name in ("upsample_nearest2d", "upsample_bilinear2d"):
            self.macs += out.numel() * (4 if "bilinear" in name else 1)
        return out


def _fvcore_extras_here(cfg, registry, size: tuple[int, int]) -> int:
    with torch.device("meta"):
        model = build_model(cfg.model, registry, num_classes=cfg.model.num_classes).eval()
        with _FvcoreExtras() as extras, torch.no_grad():
            model(torch.zeros(1, 3, *size))
    return extras.macs


def _fvcore_extras(path, size: tuple[int, int]) -> int:
    """`_fvcore_extras_here` in a fresh interpreter: once inductor has been imported (other tests compile), the meta
    device decomposes upsample_bilinear2d into primitive ops that no longer carry its name."""
    import subprocess
    import sys

    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_model as t; "
            f"from segcore import load_registry, load_pipeline; r = load_registry(); "
            f"print(t._fvcore_extras_here(load_pipeline({str(path)!r}, registry=r), r, {tuple(size)!r}))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_hrnetv2_w18_and_w48_match_published_params_and_macs(registry, write_pipeline, base_pipeline):
    """BLOCKS.md: FCN-HRNetV2 (19 classes) W18 9.64 M params, W48 65.86 M; 512x1024 MACs (fvcore) W18 37.2 G,
    W48 187.6 G of which 186.9 G conv-only. We count convolutions and matmuls; fvcore also counts batch norms and
    resizes, which `_fvcore_extras` adds back (W18: 36.850 + 0.397 G; W48: 186.878 + 0.760 G)."""
    for width, params, fvcore_gmacs in (("w18", 9.64e6, 37.2), ("w48", 65.86e6, 187.6)):
        text = base_pipeline.replace("hrnet_w18_small", f"hrnet_{width}") + "\n[model]\nnum_classes = 19\n"
        cfg = _pipeline(registry, text, write_pipeline)
        rows = check_pipeline(cfg, registry, input_size=(512, 1024))
        total_params = sum(r.params for r in rows)
        total_macs = sum(r.macs for r in rows)
        assert round(total_params / 1e4) == round(params / 1e4), total_params
        path = write_pipeline(text, name=f"{width}.toml")
        assert round((total_macs + _fvcore_extras(path, (512, 1024))) / 1e9, 1) == fvcore_gmacs, total_macs
    assert round(total_macs / 1e9, 1) == 186.9  # W48 conv-only


def test_check_builds_on_meta_and_allocates_nothing(registry, write_pipeline, base_pipeline, monkeypatch):
    cfg = _pipeline(registry, base_pipeline.replace("hrnet_w18_small", "hrnet_w48"), write_pipeline)
    built = []
    original = build_model

    def spy(*args, **kwargs):
        model = original(*args, **kwargs)
        built.append(model)
        return model

    monkeypatch.setattr("segcore.check.build_model", spy)
    rows = check_pipeline(cfg, registry, input_size=(64, 64))
    [model] = built
    assert all(p.is_meta for p in model.parameters()) and all(b.is_meta for b in model.buffers())
    assert [r.path for r in rows] == ["model.backbone", "model.decoder", "model.classifier"]
    assert rows[0].channels == "48,96,192,384" and rows[0].stride == "4,8,16,32"
    assert rows[1].channels == "720" and rows[2].channels == "5"


def test_check_catches_channel_mismatch_on_meta(registry, write_pipeline, base_pipeline):
    text = base_pipeline.replace('name = "hrnetv2_head"', 'name = "hrnetv2_head"\nin_channels = [48, 96, 192, 384]')
    cfg = _pipeline(registry, text, write_pipeline)
    with pytest.raises(ContractError, match=r"\[model.decoder\] \('hrnetv2_head'\) expects in_channels .* \[model.backbone\]"):
        check_pipeline(cfg, registry)


def test_check_catches_a_component_that_lies_about_its_output(registry, write_pipeline, base_pipeline, monkeypatch):
    from segcore_plugin_classic.hrnetv2_head import HRNetV2Head

    original = HRNetV2Head.__init__

    def lying_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.out_channels += 1

    monkeypatch.setattr(HRNetV2Head, "__init__", lying_init)
    cfg = _pipeline(registry, base_pipeline, write_pipeline)
    with pytest.raises(ContractError) as info:  # the classifier expects the declared width and fails: which stage lied?
        check_pipeline(cfg, registry)
    assert str(info.value).startswith(
        "[model.decoder] 'hrnetv2_head' (plugin \"classic\" from segcore-plugin-classic 0.1.0): map 0 declares 241 "
        "channels at stride 4 (~16x16 for a 64x64 input) but is (240, 16, 16)"
    )


def test_attention_slots_are_filled_by_name(registry, write_pipeline, base_pipeline):
    from segcore_plugin_classic.attention import ECA, SE

    text = base_pipeline + (
        '\n[model.decoder.attention.after_fusion]\nname = "eca"\n'
        '\n[model.decoder.attention.per_level]\nname = "se"\nreduction = 4\n'
    )
    cfg = _pipeline(registry, text, write_pipeline)
    model = build_model(cfg.model, registry, num_classes=5)
    assert isinstance(model.decoder.after_fusion, ECA)
    assert model.decoder.after_fusion.conv.kernel_size == (5,)  # 240 channels: t = int((log2 240 + 1) / 2) = 4 -> 5
    assert [type(m) for m in model.decoder.per_level] == [SE] * 4
    assert model.decoder.per_level[3].fc[1].out_channels == 128 // 4
    out = model(torch.rand(2, 3, 64, 64))
    assert out.logits.shape == (2, 5, 64, 64)


def test_aux_head_runs_only_in_training(registry, write_pipeline, base_pipeline):
    text = base_pipeline + '\n[model.aux.fcn]\nin_index = [2]\nweight = 0.4\n[model.aux.fcn.decoder]\nname = "fcn"\nchannels = 32\n'
    cfg = _pipeline(registry, text, write_pipeline)
    model = build_model(cfg.model, registry, num_classes=5)
    out = model.train()(torch.rand(2, 3, 64, 64))
    assert set(out.aux) == {"fcn"} and out.aux["fcn"].shape == (2, 5, 64, 64)
    assert model.aux["fcn"].decoder.stride == 16
    assert model.eval()(torch.rand(1, 3, 64, 64)).aux == {}
    rows = check_pipeline(cfg, registry)
    assert rows[-1].path == "model.aux.fcn" and rows[-1].component == "fcn (training only)"


def test_aux_head_index_out_of_range(registry, write_pipeline, base_pipeline):
    text = base_pipeline + '\n[model.aux.fcn]\nin_index = [7]\n[model.aux.fcn.decoder]\nname = "fcn"\n'
    with pytest.raises(ContractError, match=r"\[model.aux.fcn\] in_index \[7\]: the backbone gives 4 maps"):
        build_model(_pipeline(registry, text, write_pipeline).model, registry, num_classes=5)


def test_enhancers_rewrite_or_collapse_levels_and_the_decoder_follows(registry, write_pipeline, base_pipeline):
    text = base_pipeline + (
        '\n[[model.enhancers]]\nname = "project"\nchannels = 24\nlevels = [2, 3]\n'
        '\n[[model.enhancers]]\nname = "select"\nlevels = [0, 2, 3]\n'
    )
    cfg = _pipeline(registry, text, write_pipeline)
    rows = check_pipeline(cfg, registry)
    assert [(r.path, r.channels, r.stride) for r in rows[:4]] == [
        ("model.backbone", "16,32,64,128", "4,8,16,32"),
        ("model.enhancers[0]", "16,32,24,24", "4,8,16,32"),
        ("model.enhancers[1]", "16,24,24", "4,16,32"),
        ("model.decoder", "64", "4"),
    ]
