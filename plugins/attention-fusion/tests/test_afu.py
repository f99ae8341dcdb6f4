"""The AFU attention alone: hand-computed outputs of eqs. (3)-(5) for each pool and softmax axis, zero parameters,
the module types counters see, and the config's errors."""

from __future__ import annotations

import math

import pytest
import torch

from segcore import Attention, ConfigError, get_plugin_manager, load_registry
from segcore.pipeline import structure_pipeline
from segcore_plugin_attention_fusion.afu import AFU, AFUConfig

E = math.exp
# one image, two channels, one row of two pixels: channel 0 = [1, 3], channel 1 = [2, 0]
X = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])


def _expected(pool: str, softmax: str) -> list[list[float]]:
    """[channel][pixel] of softmax(x * pool(x)) * x, worked out by hand for X."""
    # avg: (2, 1) -> similarity c0 [2, 6], c1 [2, 0]; max: (3, 2) -> c0 [3, 9], c1 [4, 0]; sum: c0 [5, 15], c1 [6, 0]
    sim = {"avg": ([2, 6], [2, 0]), "max": ([3, 9], [4, 0]), "avg+max": ([5, 15], [6, 0])}[pool]
    x = ([1, 3], [2, 0])
    if softmax == "channel":  # over the two channels of each pixel
        w = [[E(sim[c][p]) / (E(sim[0][p]) + E(sim[1][p])) for p in range(2)] for c in range(2)]
    else:  # over the two pixels of each channel
        w = [[E(sim[c][p]) / (E(sim[c][0]) + E(sim[c][1])) for p in range(2)] for c in range(2)]
    return [[w[c][p] * x[c][p] for p in range(2)] for c in range(2)]


@pytest.mark.parametrize("softmax", ["channel", "spatial"])
@pytest.mark.parametrize("pool", ["avg", "max", "avg+max"])
def test_afu_matches_the_hand_computed_equations(pool, softmax):
    y = AFU(AFUConfig(pool=pool, softmax=softmax), channels=2)(X)
    torch.testing.assert_close(y, torch.tensor([_expected(pool, softmax)]).unsqueeze(2))


def test_avg_on_the_channel_axis_by_hand():
    """The kept variant, spelled out: pixel 0 has equal similarities (weights 1/2), pixel 1 favours channel 0."""
    y = AFU(AFUConfig(), channels=2)(X)
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(y[0, :, 0, 1], torch.tensor([3 * E(6) / (E(6) + 1), 0.0]))


@pytest.mark.parametrize("softmax, n", [("channel", 3), ("spatial", 10)])
def test_rescale_multiplies_by_the_softmax_axis_length(softmax, n):
    x = torch.randn(2, 3, 2, 5)
    plain = AFU(AFUConfig(softmax=softmax), channels=3)(x)
    scaled = AFU(AFUConfig(softmax=softmax, rescale=True), channels=3)(x)
    torch.testing.assert_close(scaled, plain * n)


@pytest.mark.parametrize("softmax, dims", [("channel", (1,)), ("spatial", (2, 3))])
def test_weights_sum_to_one_over_the_softmax_axis(softmax, dims):
    x = torch.rand(2, 4, 3, 5) + 0.5  # positive, so the weights are y / x
    y = AFU(AFUConfig(pool="avg+max", softmax=softmax), channels=4)(x)
    torch.testing.assert_close((y / x).sum(dim=dims), torch.ones_like(x.sum(dim=dims)))


@pytest.mark.parametrize("pool, types", [("avg", ["AdaptiveAvgPool2d"]), ("max", ["AdaptiveMaxPool2d"]),
                                         ("avg+max", ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d"])])  # fmt: skip
def test_no_parameters_and_counter_visible_pools(pool, types):
    """The thesis' Table IV: identical parameter counts with and without the module (BLOCKS 002.1)."""
    afu = AFU(AFUConfig(pool=pool), channels=512)
    assert sum(p.numel() for p in afu.parameters()) == 0
    assert [type(m).__name__ for m in afu.pools] == types
    assert all(m.output_size == 1 for m in afu.pools)


def test_afu_keeps_odd_shapes_and_passes_gradients():
    x = torch.randn(2, 7, 97, 131, requires_grad=True)
    y = AFU(AFUConfig(pool="avg+max"), channels=7)(x)
    assert y.shape == (2, 7, 97, 131)
    y.square().mean().backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("key, value, fragment", [
    ("pool", "mean", "model.decoder.attention.upsample.pool: must be one of 'avg', 'max', 'avg+max'"),
    ("softmax", "pixel", "model.decoder.attention.upsample.softmax: must be one of 'channel', 'spatial'"),
    ("rescal", True, "unknown key 'rescal' (did you mean 'rescale'?)"),
])  # fmt: skip
def test_config_errors_name_the_path_and_the_choices(key, value, fragment):
    registry = load_registry(get_plugin_manager())
    raw = {"model": {"backbone": {"name": "timm", "model_name": "hrnet_w18_small"},
                     "decoder": {"name": "hrnetv2_head", "attention": {"upsample": {"name": "afu", key: value}}}},
           "data": {"dataset": {"name": "shapes"}}}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        structure_pipeline(raw, registry=registry)
    assert fragment in str(info.value)


def test_registered_as_an_attention():
    entry = load_registry(get_plugin_manager()).get(Attention, "afu")
    assert entry.cls is AFU and entry.config is AFUConfig and entry.plugin.dist == "segcore-plugin-attention-fusion"
