"""Model assembly with classic's HRNetV2 head: published parameter and MAC counts, its channel checks, attention slots
filled by name (classic's ECA and SE)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from segcore import ContractError, build_model, load_pipeline
from segcore.model.check import check_pipeline

pytest.importorskip("segcore_plugin_classic", reason="an integration test: it needs segcore-plugin-classic "
                    "(pip install -e plugins/classic)")  # fmt: skip


def _pipeline(registry, text, write_pipeline):
    return load_pipeline(write_pipeline(text), registry=registry)


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


def _fvcore_extras(paths: list[Path], size: tuple[int, int]) -> list[int]:
    """`_fvcore_extras_here` of each pipeline file, in one fresh interpreter: once inductor has been imported (other
    tests compile), the meta device decomposes upsample_bilinear2d into primitive ops that no longer carry its name."""
    import subprocess
    import sys

    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_model_plugins as t; "
            f"from segcore import load_registry, load_pipeline; r = load_registry(); "
            f"import json; print(json.dumps([t._fvcore_extras_here(load_pipeline(p, registry=r), r, {tuple(size)!r}) "
            f"for p in {list(map(str, paths))!r}]))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_hrnetv2_w18_and_w48_match_published_params_and_macs(registry, write_pipeline, base_pipeline):
    """BLOCKS.md: FCN-HRNetV2 (19 classes) W18 9.64 M params, W48 65.86 M; 512x1024 MACs (fvcore) W18 37.2 G,
    W48 187.6 G of which 186.9 G conv-only. We count convolutions and matmuls; fvcore also counts batch norms and
    resizes, which `_fvcore_extras` adds back (W18: 36.850 + 0.397 G; W48: 186.878 + 0.760 G)."""
    published = {"w18": (9.64e6, 37.2), "w48": (65.86e6, 187.6)}
    texts = {w: base_pipeline.replace("hrnet_w18_small", f"hrnet_{w}") + "\n[model]\nnum_classes = 19\n"
             for w in published}  # fmt: skip
    files = [write_pipeline(texts[w], name=f"{w}.toml") for w in published]
    extras = dict(zip(published, _fvcore_extras(files, (512, 1024))))
    for width, (params, fvcore_gmacs) in published.items():
        cfg = _pipeline(registry, texts[width], write_pipeline)
        rows = check_pipeline(cfg, registry, input_size=(512, 1024))
        total_params = sum(r.params for r in rows)
        total_macs = sum(r.macs for r in rows)
        assert round(total_params / 1e4) == round(params / 1e4), total_params
        assert round((total_macs + extras[width]) / 1e9, 1) == fvcore_gmacs, total_macs
    assert round(total_macs / 1e9, 1) == 186.9  # W48 conv-only


def test_check_catches_channel_mismatch_on_meta(registry, write_pipeline, base_pipeline):
    text = base_pipeline.replace('name = "hrnetv2_head"', 'name = "hrnetv2_head"\nin_channels = [48, 96, 192, 384]')
    cfg = _pipeline(registry, text, write_pipeline)
    with pytest.raises(ContractError, match=r"\[model.decoder\] \('hrnetv2_head'\) expects in_channels .* \[model.backbone\]"):
        check_pipeline(cfg, registry)


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
