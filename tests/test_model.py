"""Model assembly: logits at the input size for any size, aux heads, attention slots, meta-device checks."""

from __future__ import annotations

import contextlib

import pytest
import torch

from segcore import ContractError, build_model, load_pipeline
from segcore.model.check import check_pipeline
from segcore.config import structure_pipeline


def _pipeline(registry, text, write_pipeline):
    return load_pipeline(write_pipeline(text), registry=registry)


@pytest.fixture(scope="module")
def hrnet_small(registry):
    """hrnet_w18_small + the FCN head on its stride-4 level, with real (random) weights, eval mode."""
    raw = {
        "model": {"backbone": {"name": "timm", "model_name": "hrnet_w18_small"},
                  "decoder": {"name": "fcn", "channels": 32, "in_index": 0}},
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


def test_check_builds_on_meta_and_allocates_nothing(registry, write_pipeline, base_pipeline, monkeypatch):
    cfg = _pipeline(registry, base_pipeline.replace("hrnet_w18_small", "hrnet_w48"), write_pipeline)
    built = []
    original = build_model

    def spy(*args, **kwargs):
        model = original(*args, **kwargs)
        built.append(model)
        return model

    monkeypatch.setattr("segcore.model.check.build_model", spy)
    rows = check_pipeline(cfg, registry, input_size=(64, 64))
    [model] = built
    assert all(p.is_meta for p in model.parameters()) and all(b.is_meta for b in model.buffers())
    assert [r.path for r in rows] == ["model.backbone", "model.decoder", "model.classifier"]
    assert rows[0].channels == "48,96,192,384" and rows[0].stride == "4,8,16,32"
    assert rows[1].channels == "32" and rows[1].stride == "32" and rows[2].channels == "5"


def test_check_catches_a_component_that_lies_about_its_output(registry, write_pipeline, base_pipeline, monkeypatch):
    from segcore.builtin.decoders import FCNHead

    original = FCNHead.__init__

    def lying_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.out_channels += 1

    monkeypatch.setattr(FCNHead, "__init__", lying_init)
    cfg = _pipeline(registry, base_pipeline, write_pipeline)
    with pytest.raises(ContractError) as info:  # the classifier expects the declared width and fails: which stage lied?
        check_pipeline(cfg, registry)
    assert str(info.value).startswith(
        "[model.decoder] 'fcn' (plugin \"segcore.builtin.decoders\" from segcore 0.1.0): map 0 declares 33 "
        "channels at stride 32 (~2x2 for a 64x64 input) but is (32, 2, 2)"
    )


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
        ("model.decoder", "32", "32"),
    ]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "one channel", "1x1",
                                    "1x1 channels_last"])
@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_meta_shortcuts_give_the_shapes_and_strides_pytorch_gives(layout, mode):
    """segcore.model.meta answers upsampling on meta without PyTorch's slow decomposition: the output's shape,
    dtype and strides are what the real kernel gives the same input (checked on CPU tensors of the same layout)."""
    import torch.nn.functional as F

    from segcore.model.meta import meta_shortcuts

    shape = {"one channel": (2, 1, 5, 7), "1x1": (2, 6, 1, 1), "1x1 channels_last": (2, 6, 1, 1)}.get(layout,
                                                                                               (2, 8, 9, 12))

    def make(device: str) -> torch.Tensor:
        x = torch.zeros(shape, device=device)
        if layout.endswith("channels_last"):
            return x.to(memory_format=torch.channels_last)
        if layout == "strided":
            return torch.zeros(shape[0], shape[1] * 2, *shape[2:], device=device)[:, ::2]
        return x

    for kw in ({"size": (17, 23)}, {"scale_factor": 2.5}, {"scale_factor": (1.7, 1.9)}, {"scale_factor": 0.5},
               {"scale_factor": 2.0, "align_corners": True}):  # fmt: skip
        for dtype in (torch.float32, torch.bfloat16):
            try:
                real = F.interpolate(make("cpu").to(dtype), mode=mode, **kw)
            except RuntimeError:  # an empty side (1x1 at scale 0.5): left to PyTorch's own meta path, as it is
                outcomes = []
                for shortcuts in (contextlib.nullcontext(), meta_shortcuts()):
                    with shortcuts:
                        try:
                            outcomes.append(tuple(F.interpolate(make("meta").to(dtype), mode=mode, **kw).shape))
                        except RuntimeError as exc:
                            outcomes.append(str(exc))
                assert outcomes[0] == outcomes[1], kw
                continue
            with meta_shortcuts():
                meta = F.interpolate(make("meta").to(dtype), mode=mode, **kw)
            assert meta.is_meta and (meta.shape, meta.stride(), meta.dtype) == (real.shape, real.stride(), real.dtype), kw
    weight = torch.empty(4, 3, 3, 3, device="meta")
    with meta_shortcuts():
        assert torch.nn.init.normal_(weight, 0.0, 0.01) is weight
        real = torch.nn.init.normal_(torch.zeros(3), 0.0, 1.0)  # real tensors are left to PyTorch
    assert real.abs().sum() > 0

    from torch.utils._python_dispatch import TorchDispatchMode

    class Below(TorchDispatchMode):  # what the shortcuts pass on to PyTorch
        seen: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Below(), meta_shortcuts():
        F.interpolate(make("meta"), size=(17, 23), mode=mode)
        torch.nn.init.normal_(weight)
    reached = [op for op in Below.seen if "upsample" in op or "normal" in op]
    assert reached == ([] if layout != "strided" else [f"aten.upsample_{mode}2d.default"])  # strided: PyTorch's
