"""The HRNet backbone against timm's HRNet (BLOCKS.md 000.1): weights key for key, same outputs at /32 sizes,
exact shapes at any size, the published parameter counts, and a fast, clear error without the weights."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from safetensors.torch import save_file

from segcore import AttentionSlots, ConfigError
from segcore_plugin_classic.hrnet import HRNet, HRNetConfig, timm_to_segcore
from segcore_plugin_classic.hrnetv2_head import HRNetV2Head, HRNetV2HeadConfig


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def timm_features(name: str) -> torch.nn.Module:
    return timm.create_model(name, features_only=True, feature_location="", out_indices=(1, 2, 3, 4))


@pytest.mark.parametrize("name, cfg", [("hrnet_w18_small", HRNetConfig(width=16, small=True)), ("hrnet_w18", HRNetConfig(width=18))])
def test_timm_weights_load_and_give_timms_branch_outputs(name, cfg, tmp_path):
    """A randomly initialised timm model's whole state dict (classification head included) through the key
    mapping; with nearest resizing at a /32 size, where timm's scale-factor upsampling is exact, the four branch
    outputs are equal."""
    torch.manual_seed(0)
    ref = timm.create_model(name).eval()  # the full classifier: its head keys must be dropped by the mapping
    for m in ref.modules():  # non-trivial BN statistics, so a mis-mapped BN would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
    save_file(ref.state_dict(), tmp_path / "w.safetensors")
    ours = HRNet(HRNetConfig(width=cfg.width, small=cfg.small, resize_mode="nearest", weights=str(tmp_path / "w.safetensors"))).eval()
    feats = timm_features(name).eval()
    feats.load_state_dict(ref.state_dict(), strict=False)
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected, got = feats(image), ours(image)
    assert [tuple(g.shape[1:]) for g in got] == [(cfg.width * 2**i, 16 // 2**i, 24 // 2**i) for i in range(4)]
    for e, g in zip(expected, got):  # float32 sums in another order: relative 1e-4 of the map's scale
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * e.abs().max().item())
        assert e.abs().max() > 0.1  # not a trivially small map


@pytest.mark.parametrize("width", [32, 48])
def test_w32_w48_match_timms_keys_and_shapes(width):
    with torch.device("meta"):
        ref = timm.create_model(f"hrnet_w{width}")
        ours = HRNet(HRNetConfig(width=width))
    mapped = {k: tuple(v.shape) for k, v in timm_to_segcore(ref.state_dict()).items()}
    assert mapped == {k: tuple(v.shape) for k, v in ours.state_dict().items()}


def test_key_mapping_renames_the_stem_and_drops_the_head():
    sd = {k: torch.zeros(1) for k in ("conv1.weight", "bn2.running_var", "layer1.0.conv1.weight",
                                       "incre_modules.0.0.conv1.weight", "final_layer.0.bias", "classifier.weight",
                                       "downsamp_modules.0.0.weight", "stage4.2.fuse_layers.3.0.0.0.weight")}  # fmt: skip
    assert sorted(timm_to_segcore(sd)) == ["layer1.0.conv1.weight", "stage4.2.fuse_layers.3.0.0.0.weight",
                                           "stem.0.conv.weight", "stem.1.bn.running_var"]  # fmt: skip


@pytest.mark.parametrize("size", [(360, 480), (97, 131), (720, 960)])
def test_any_input_size_without_padding(size):
    """timm's HRNet fails at 360x480 (23 x 4 != 90, BLOCKS.md 000.1); ours gives ceil(H / stride) at every level."""
    torch.manual_seed(0)
    cfg = HRNetConfig(width=16, small=True) if size != (720, 960) else HRNetConfig(width=4, small=True, num_blocks=1)
    net = HRNet(cfg)
    maps = net(torch.randn(1, 3, *size))
    assert [tuple(m.shape) for m in maps] == [
        (1, i.channels, math.ceil(size[0] / i.stride), math.ceil(size[1] / i.stride)) for i in net.feature_info
    ]
    sum(m.mean() for m in maps).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []


def test_full_layout_at_tiny_width_trains_at_97x131():
    net = HRNet(HRNetConfig(width=4, num_blocks=1))  # W18/W32/W48 layout: 4 stage-1 bottlenecks, (1, 4, 3) modules
    assert (len(net.layer1), len(net.stage2), len(net.stage3), len(net.stage4)) == (4, 1, 4, 3)
    maps = net(torch.randn(2, 3, 97, 131))
    assert [tuple(m.shape[1:]) for m in maps] == [(4, 25, 33), (8, 13, 17), (16, 7, 9), (32, 4, 5)]
    sum(m.mean() for m in maps).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("width, params_m", [(18, 9.64), (32, 29.55), (48, 65.86)])
def test_hrnetv2_with_head_parameter_counts(width, params_m):
    """BLOCKS.md 000.1 / "Numbers to check against": HRNetV2-W18/W32/W48 + HRNetV2 head, 19 classes."""
    with torch.device("meta"):
        net = HRNet(HRNetConfig(width=width))
        head = HRNetV2Head(HRNetV2HeadConfig(), in_features=net.feature_info, attention=AttentionSlots())
        ref = timm_features(f"hrnet_w{width}")
    classifier = head.out_channels * 19 + 19
    total = n_params(net) + n_params(head) + classifier
    assert n_params(net) == n_params(ref)  # the same backbone as timm's, parameter for parameter
    assert round(total / 1e6, 2) == params_m
    if width == 48:
        assert total == 65_859_379
        assert round((total + 721) / 1e6, 3) == 65.860  # 20 classes: Table III's baseline (BLOCKS.md 000.11)


def test_w18_small_matches_timm_and_the_quickstart_size():
    """timm's hrnet_w18_small (streams 16/32/64/128) + the HRNetV2 head, 5 classes: the README's 1.54 M."""
    with torch.device("meta"):
        net = HRNet(HRNetConfig(width=16, small=True))
        ref = timm_features("hrnet_w18_small")
        head = HRNetV2Head(HRNetV2HeadConfig(), in_features=net.feature_info, attention=AttentionSlots())
    assert n_params(net) == n_params(ref)
    assert round((n_params(net) + n_params(head) + 240 * 5 + 5) / 1e6, 2) == 1.54


def test_pretrained_offline_is_a_fast_clear_config_error(monkeypatch, tmp_path, segcore_network):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=r"'timm/hrnet_w18_small.gluon_in1k' are not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        HRNet(HRNetConfig(width=16, small=True, pretrained=True))
    assert segcore_network.attempts == [] and segcore_network.sleeps == []  # offline: not even a probe, no retries


def test_pretrained_needs_a_width_timm_has_and_weights_must_exist(tmp_path):
    with pytest.raises(ValueError, match="timm has ImageNet HRNet weights only for width = 18, width = 32, width = 48, width = 16, small = true"):
        HRNetConfig(width=20, pretrained=True)
    with pytest.raises(ConfigError, match="weights: no such file"):
        HRNet(HRNetConfig(width=16, small=True, weights=str(tmp_path / "missing.safetensors")))
    save_file({"conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.safetensors")
    with pytest.raises(ConfigError, match="do not fit this HRNet"):
        HRNet(HRNetConfig(width=16, small=True, weights=str(tmp_path / "partial.safetensors")))


def test_meta_device_builds_skip_the_weights():
    """`segcore check` builds on the meta device: a pretrained config counts without touching the Hub."""
    with torch.device("meta"):
        net, plain = HRNet(HRNetConfig(width=48, pretrained=True)), HRNet(HRNetConfig(width=48))
    assert n_params(net) == n_params(plain) == 65_859_379 - (720 * 720 + 720 + 2 * 720) - (720 * 19 + 19)


def test_timm_rgb_weights_adapt_to_four_channels(tmp_path):
    """[model] in_channels = 4: the stem takes 4 channels and timm's RGB weights load through timm's adapt_input_conv."""
    from safetensors.torch import save_file
    from timm.models import adapt_input_conv

    torch.manual_seed(0)
    ref = timm.create_model("hrnet_w18_small", pretrained=False)
    save_file(ref.state_dict(), tmp_path / "w.safetensors")
    net = HRNet(HRNetConfig(width=16, small=True, weights=str(tmp_path / "w.safetensors")), in_channels=4)
    torch.testing.assert_close(net.stem[0].conv.weight, adapt_input_conv(4, ref.conv1.weight))
    torch.testing.assert_close(net.stem[1].conv.weight, ref.conv2.weight)
    assert [m.shape[1] for m in net(torch.randn(1, 4, 64, 64))] == [16, 32, 64, 128]
