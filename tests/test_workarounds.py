"""PyTorch kernel work-arounds the trainer applies (segcore.engine.workarounds)."""

from __future__ import annotations

import copy

import attrs
import pytest
import safetensors.torch
import torch
from torch import Tensor, nn

from segcore import Backbone, FeatureInfo, Registry, get_plugin_manager, hookimpl, load_registry
from segcore.config import structure_pipeline
from segcore.engine.trainer import Trainer
from segcore.engine.workarounds import Float32Conv2d, Float32SubgridDilatedConv2d, float32_dilated_grouped_convs
from segcore.inference.dilated import SubgridDilatedConv2d


def _grads(conv: nn.Conv2d, x: Tensor, g: Tensor, *, bf16: bool) -> Tensor:
    conv.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = conv(x)
    y.backward(g.to(y.dtype))
    return conv.weight.grad.clone()


def test_dilated_depthwise_weight_gradient_is_right_in_bf16_channels_last():
    """VAN's LKA conv (7x7, dilation 3, depthwise) at a VAN-B0 stage-1 size, bf16 autocast + channels_last: with the
    switch the weight gradient is the float32 one (without it, torch 2.14's is garbage: errors of 1e30 and more)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 32, 5, padding=2, groups=32),
                          nn.Conv2d(32, 32, 7, padding=9, dilation=3, groups=32),
                          nn.Conv2d(32, 32, 3, padding=2, dilation=2),  # dense: its kernel is right, left alone
                          nn.Conv2d(32, 32, 1))  # fmt: skip
    keys = list(model.state_dict())
    assert float32_dilated_grouped_convs(model) == 1
    assert [type(m) for m in model] == [nn.Conv2d, Float32Conv2d, nn.Conv2d, nn.Conv2d]
    assert list(model.state_dict()) == keys and isinstance(copy.deepcopy(model)[1], Float32Conv2d)
    conv = model[1]
    reference = nn.Conv2d(32, 32, 7, padding=9, dilation=3, groups=32)
    reference.load_state_dict(conv.state_dict())
    x = torch.randn(8, 32, 64, 80)
    g = torch.randn(8, 32, 64, 80)
    expected = _grads(reference, x, g, bf16=False)
    conv = conv.to(memory_format=torch.channels_last)
    xc, gc = x.contiguous(memory_format=torch.channels_last), g.contiguous(memory_format=torch.channels_last)
    for _ in range(5):  # the bug reads uninitialised memory: it shows on some calls only
        got = _grads(conv, xc, gc, bf16=True)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-3 * expected.abs().max()), (got - expected).abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert conv(xc).dtype == torch.float32 and model[0](x).dtype == torch.bfloat16
    assert conv(x).dtype == torch.float32  # no autocast: a plain convolution


@attrs.frozen
class TwoConvConfig:
    pass


class TwoConv(Backbone):
    """A stride-4 stem and one LKA-style 7x7 dilation-3 depthwise conv (the kind the work-around switches)."""

    def __init__(self, cfg: TwoConvConfig) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.dw_dilated = nn.Conv2d(8, 8, 7, padding=9, dilation=3, groups=8)
        self.feature_info = (FeatureInfo(8, 4),)

    def forward(self, image: Tensor) -> list[Tensor]:
        return [self.dw_dilated(self.stem(image))]


class TwoConvPlugin:
    @hookimpl
    def segcore_register(self, registry: Registry) -> None:
        registry.add(TwoConv, name="two_conv", config=TwoConvConfig)


@pytest.mark.parametrize("amp, channels_last, fast_dilated, switched, cls", [
    ("bf16", True, False, 1, Float32Conv2d), ("bf16", False, False, 0, nn.Conv2d), ("none", True, False, 0, nn.Conv2d),
    ("bf16", True, True, 1, Float32SubgridDilatedConv2d), ("none", True, True, 0, SubgridDilatedConv2d),
])  # fmt: skip
def test_the_trainer_switches_them_for_bf16_channels_last_on_the_cpu(tmp_path, amp, channels_last, fast_dilated,
                                                                     switched, cls):  # fmt: skip
    """With train.fast_dilated too: the sub-grid convolution, kept in float32 under bf16 + channels_last."""
    pm = get_plugin_manager(autoload=False)
    pm.register(TwoConvPlugin(), name="two_conv")
    registry = load_registry(pm)
    raw = {
        "model": {"backbone": {"name": "two_conv"}, "decoder": {"name": "fcn", "channels": 8}},
        "data": {"dataset": {"name": "shapes", "size": [64, 64], "num_train": 4, "num_val": 2}, "batch_size": 2},
        "loss": [{"name": "ce"}],
        "train": {"iters": 1, "amp": amp, "channels_last": channels_last, "plots": False, "fast_dilated": fast_dilated},
        "run": {"out_dir": str(tmp_path / "run"), "device": "cpu"},
    }  # fmt: skip
    trainer = Trainer.from_config(structure_pipeline(raw, registry=registry), registry, progress=False)
    assert sum(isinstance(m, Float32Conv2d) for m in trainer.model.modules()) == switched
    assert type(trainer.model.backbone.dw_dilated) is cls
    assert type(trainer.model.backbone.stem) is nn.Conv2d  # not grouped, not dilated: left alone
    if switched or fast_dilated:  # a step runs, and what is saved has the model's own keys
        trainer.fit()
        saved = safetensors.torch.load_file(str(tmp_path / "run" / "model.safetensors"))
        assert {k for k in saved if k.startswith("backbone.")} == {f"backbone.{m}.{w}" for m in ("stem", "dw_dilated")
                                                                   for w in ("weight", "bias")}  # fmt: skip
