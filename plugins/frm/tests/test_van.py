"""The VAN backbone (BLOCKS.md 003.1): published parameter counts, any input size, and the official checkpoint
layout through the converter (a reference model with the official key names, written here, gives the same maps)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from segcore import ConfigError
from segcore_plugin_frm.convert_van import convert, convert_key, main
from segcore_plugin_frm.van import VAN, VANConfig

TINY = dict(dims=(8, 16, 24, 32), depths=(2, 1, 1, 2))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "variant, params", [("b0", 3_848_800), ("b1", 13_348_800), ("b2", 26_065_472), ("b3", 44_252_608)]
)
def test_van_parameters_match_blocks(variant, params):
    """BLOCKS.md 003.1 "params w/o head": 3.849 / 13.349 / 26.065 / 44.253 M (the classifier's 4.1 / 13.9 / 26.6 /
    44.8 M minus the 1000-class head). Exact counts as built here; every tensor is a parameter of the official model."""
    with torch.device("meta"):
        van = VAN(VANConfig(variant=variant))
    assert n_params(van) == params
    assert round(params / 1e3) == {"b0": 3849, "b1": 13349, "b2": 26065, "b3": 44253}[variant]


@pytest.mark.parametrize("size, maps", [
    ((97, 131), [(25, 33), (13, 17), (7, 9), (4, 5)]),
    ((360, 480), [(90, 120), (45, 60), (23, 30), (12, 15)]),
])  # fmt: skip
def test_van_b0_maps_at_odd_and_camvid_sizes(size, maps):
    van = VAN(VANConfig(variant="b0")).eval()
    with torch.inference_mode():
        out = van(torch.randn(1, 3, *size))
    assert [tuple(m.shape) for m in out] == [(1, c, *hw) for c, hw in zip((32, 64, 160, 256), maps)]
    assert [(i.channels, i.stride) for i in van.feature_info] == [(32, 4), (64, 8), (160, 16), (256, 32)]


# -- a reference VAN with the official module names (VAN-Classification models/van.py), written for this test -----


class _LKA(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(d, d, 5, padding=2, groups=d)
        self.conv_spatial = nn.Conv2d(d, d, 7, padding=9, groups=d, dilation=3)
        self.conv1 = nn.Conv2d(d, d, 1)

    def forward(self, x):
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class _Attention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj_1, self.activation = nn.Conv2d(d, d, 1), nn.GELU()
        self.spatial_gating_unit, self.proj_2 = _LKA(d), nn.Conv2d(d, d, 1)

    def forward(self, x):
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class _DW(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(d, d, 3, 1, 1, groups=d)

    def forward(self, x):
        return self.dwconv(x)


class _Mlp(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.fc1, self.dwconv, self.act, self.fc2 = nn.Conv2d(d, h, 1), _DW(h), nn.GELU(), nn.Conv2d(h, d, 1)

    def forward(self, x):
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class _Block(nn.Module):
    def __init__(self, d: int, r: int) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = nn.BatchNorm2d(d), _Attention(d), nn.BatchNorm2d(d), _Mlp(d, d * r)
        self.layer_scale_1 = nn.Parameter(torch.rand(d))
        self.layer_scale_2 = nn.Parameter(torch.rand(d))

    def forward(self, x):
        x = x + self.layer_scale_1[:, None, None] * self.attn(self.norm1(x))
        return x + self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x))


class _Embed(nn.Module):
    def __init__(self, cin: int, d: int, k: int, s: int) -> None:
        super().__init__()
        self.proj, self.norm = nn.Conv2d(cin, d, k, s, k // 2), nn.BatchNorm2d(d)

    def forward(self, x):
        return self.norm(self.proj(x))


class _OfficialVAN(nn.Module):
    """patch_embed{i}, block{i}, norm{i} (a token LayerNorm) and the ImageNet head, as the release names them."""

    def __init__(self, dims, depths, ratios=(8, 8, 4, 4)) -> None:
        super().__init__()
        for i in range(4):
            setattr(self, f"patch_embed{i + 1}", _Embed(3 if i == 0 else dims[i - 1], dims[i], 7 if i == 0 else 3, 4 if i == 0 else 2))
            setattr(self, f"block{i + 1}", nn.ModuleList(_Block(dims[i], ratios[i]) for _ in range(depths[i])))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i], eps=1e-6))
        self.head = nn.Linear(dims[3], 1000)

    def stages(self, x):
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x)
            b, c, h, w = x.shape
            x = getattr(self, f"norm{i}")(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)
            outs.append(x)
        return outs


def _official_checkpoint(path, **arch) -> _OfficialVAN:
    torch.manual_seed(0)
    ref = _OfficialVAN(arch["dims"], arch["depths"]).eval()
    with torch.no_grad():  # every tensor random, so one mis-mapped key changes the maps
        for name, t in ref.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in name else torch.randn_like(t) * 0.3)
    torch.save({"state_dict": ref.state_dict(), "epoch": 300}, path)  # the release's .pth.tar layout
    return ref


def test_official_checkpoint_converts_and_gives_the_official_maps(tmp_path):
    src, dst = tmp_path / "van_tiny.pth.tar", tmp_path / "van.safetensors"
    ref = _official_checkpoint(src, **TINY)
    assert main([str(src), str(dst)]) == 0
    ours = VAN(VANConfig(**TINY, weights=str(dst))).eval()
    image = torch.randn(2, 3, 45, 71)
    with torch.no_grad():
        for mine, theirs in zip(ours(image), ref.stages(image)):
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


def test_key_mapping_examples():
    assert convert_key("block3.11.attn.spatial_gating_unit.conv_spatial.weight") == "stages.2.blocks.11.attn.lka.dw_dilated.weight"
    assert convert_key("module.patch_embed1.norm.running_var") == "stages.0.embed.bn.running_var"
    assert convert_key("block2.0.layer_scale_2") == "stages.1.blocks.0.ls2"
    assert convert_key("block4.1.mlp.dwconv.dwconv.bias") == "stages.3.blocks.1.mlp.dw.bias"
    assert convert_key("norm4.weight") == "stages.3.norm.weight"
    assert convert_key("head.weight") is None


def test_converter_names_keys_of_another_architecture(tmp_path):
    src = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1), "layer1.0.bn1.weight": torch.zeros(1), "norm1.weight": torch.ones(1)}, src)
    with pytest.raises(ConfigError, match=r"2 keys are not in the official VAN layout: conv1.weight, layer1.0.bn1.weight"):
        convert(src, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_weights_of_another_variant_are_refused_by_name(tmp_path):
    src, dst = tmp_path / "v.pth.tar", tmp_path / "v.safetensors"
    _official_checkpoint(src, **TINY)
    convert(src, dst)
    with pytest.raises(ConfigError, match=r"do not fit the model: 188 of another shape \(stages\..* is \(\d+.* in the file, .* in the model;.*van_small_811 = b1"):
        VAN(VANConfig(variant="b0", weights=str(dst)))


def test_missing_weights_say_how_to_convert(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist .* python -m segcore_plugin_frm.convert_van IN.pth.tar"):
        VAN(VANConfig(**TINY, weights=str(tmp_path / "none.safetensors")))
    with pytest.raises(ValueError, match="not a .safetensors file; convert the official checkpoint first"):
        VANConfig(weights="van_small_811.pth.tar")


def test_converter_command_line(tmp_path, capsys):
    src = tmp_path / "v.pth.tar"
    _official_checkpoint(src, **TINY)
    assert main([str(src), str(tmp_path / "out.bin")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'out.bin'}: the output must end in .safetensors"
    run = subprocess.run([sys.executable, "-m", "segcore_plugin_frm.convert_van", str(src), str(tmp_path / "van.safetensors")],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == f"wrote {tmp_path / 'van.safetensors'}"


def test_rgb_weights_adapt_to_four_channels(tmp_path):
    """[model] in_channels = 4: the first patch embedding takes 4 channels; RGB weights are adapted (timm's
    adapt_input_conv), every other tensor loads as it is."""
    from timm.models import adapt_input_conv

    from segcore import save_weights

    rgb = VAN(VANConfig(**TINY))
    save_weights(rgb, tmp_path / "rgb.safetensors")
    four = VAN(VANConfig(**TINY, weights=str(tmp_path / "rgb.safetensors")), in_channels=4)
    key = "stages.0.embed.conv.weight"
    torch.testing.assert_close(four.state_dict()[key], adapt_input_conv(4, rgb.state_dict()[key]))
    torch.testing.assert_close(four.stages[1].embed.conv.weight, rgb.stages[1].embed.conv.weight)
    assert [m.shape[1] for m in four(torch.randn(1, 4, 64, 64))] == [8, 16, 24, 32]
