"""Contract tests: run on every installed component of each stage, third-party plugins included."""

from __future__ import annotations

import math

import attrs
import pytest
import torch

from segcore import (
    Attention,
    AttentionSlots,
    Backbone,
    Dataset,
    Decoder,
    Enhancer,
    FeatureInfo,
    Loss,
    ModelOutput,
)

IN_FEATURES = (FeatureInfo(4, 4), FeatureInfo(8, 8), FeatureInfo(16, 16), FeatureInfo(32, 32))


def _entries(stage, where=None):
    """Every installed component of *stage* (core's built-ins alone when no plugin is installed): the root conftest
    parametrizes ``entry`` from its session registry."""
    return pytest.mark.entries(stage, where=where)


SIZES = [(64, 64), (97, 131)]  # odd sizes: strided convolutions round up, every resize must target exact sizes


def _features(batch: int = 2, size: tuple[int, int] = (64, 64)) -> list[torch.Tensor]:
    return [torch.randn(batch, i.channels, math.ceil(size[0] / i.stride), math.ceil(size[1] / i.stride)) for i in IN_FEATURES]


def _ceil(size: tuple[int, int], stride: int) -> tuple[int, int]:
    return math.ceil(size[0] / stride), math.ceil(size[1] / stride)


class _Marker(torch.nn.Module):
    """Stands in an attention slot: identity that records the shapes it saw."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels, self.seen = channels, []

    def forward(self, x):
        assert x.shape[1] == self.channels, f"slot built for {self.channels} channels got {x.shape[1]}"
        self.seen.append(tuple(x.shape))
        return x


def _marked_slots(slots) -> tuple[AttentionSlots, list]:
    made = []

    def factory(channels):
        made.append(_Marker(channels))
        return made[-1]

    return AttentionSlots({s: factory for s in slots}), made


def _no_grad_params(module: torch.nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]


@_entries(Backbone)
@pytest.mark.parametrize("size", [(64, 64), (45, 71), (97, 131)])
def test_backbone_declares_its_maps(entry, size):
    backbone = entry.build(entry.tiny)
    maps = backbone(torch.randn(2, 3, *size))
    assert len(maps) == len(backbone.feature_info)
    for m, info in zip(maps, backbone.feature_info):
        assert m.shape == (2, info.channels, math.ceil(size[0] / info.stride), math.ceil(size[1] / info.stride))
    sum(m.mean() for m in maps).backward()
    assert _no_grad_params(backbone) == []


@_entries(Enhancer)
@pytest.mark.parametrize("size", SIZES)
def test_enhancer_returns_what_it_declares(entry, size):
    slots, made = _marked_slots(entry.cls.attention_slots)
    enhancer = entry.build(entry.tiny, in_features=IN_FEATURES, attention=slots)
    out = enhancer(_features(size=size))
    assert [m.shape[1] for m in out] == [i.channels for i in enhancer.feature_info]
    assert [tuple(m.shape[-2:]) for m in out] == [_ceil(size, i.stride) for i in enhancer.feature_info]


@_entries(Decoder)
@pytest.mark.parametrize("size", SIZES)
def test_decoder_keeps_its_declared_channels_and_stride_and_trains(entry, size):
    slots, made = _marked_slots(entry.cls.attention_slots)  # every slot filled: upsampling places included
    decoder = entry.build(entry.tiny, in_features=IN_FEATURES, attention=slots)
    out = decoder(_features(size=size))
    assert out.shape == (2, decoder.out_channels, *_ceil(size, decoder.stride))
    out.mean().backward()
    assert _no_grad_params(decoder) == []
    if "upsample" in entry.cls.attention_slots:  # an upsampling place sees maps at one of the input levels' sizes
        sizes = {_ceil(size, i.stride) for i in IN_FEATURES}
        ups = [shape for m in made for shape in m.seen]
        assert ups and all(tuple(s[-2:]) in sizes for s in ups), ups


@_entries(Decoder)
def test_decoder_fills_every_slot_it_declares(entry):
    calls = []

    def factory(slot):
        def build(channels):
            calls.append(slot)
            return torch.nn.Identity()

        return build

    entry.build(entry.tiny, in_features=IN_FEATURES, attention=AttentionSlots({s: factory(s) for s in entry.cls.attention_slots}))
    assert set(calls) == set(entry.cls.attention_slots)


@_entries(Attention)
@pytest.mark.parametrize("channels", [8, 720])
def test_attention_keeps_the_shape_and_trains(entry, channels):
    attn = entry.build(entry.tiny, channels=channels)
    x = torch.randn(2, channels, 9, 13, requires_grad=True)
    y = attn(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and _no_grad_params(attn) == []


@_entries(Loss)
def test_loss_is_a_finite_scalar_that_ignores_the_ignore_index(entry):
    loss = entry.build(entry.tiny, num_classes=3, ignore_index=255)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :4] = 255
    # the extra tensors it declares, as a training-only head on a stride-1 decoder map would make them
    extras = {name: torch.nn.functional.normalize(torch.randn(2, 8, 8, 8), dim=1).requires_grad_() for name in entry.cls.extras}
    value = loss(logits, target, ModelOutput(logits, {}, extras))
    total = sum(value.values()) if isinstance(value, dict) else value
    assert total.ndim == 0 and torch.isfinite(total)
    total.backward()
    assert logits.grad[..., :4, :].abs().sum() == 0  # ignored pixels get no gradient
    assert logits.grad[..., 4:, :].abs().sum() > 0
    for name, tensor in extras.items():  # a declared extra is really used
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0, name


def test_a_channels_last_timm_model_gives_nchw_maps_at_odd_sizes():
    from segcore import TimmBackbone, TimmBackboneConfig

    backbone = TimmBackbone(TimmBackboneConfig(model_name="test_mambaout"))  # timm returns NHWC for it
    assert backbone.channels_last_maps
    maps = backbone(torch.randn(2, 3, 97, 131))
    for m, info in zip(maps, backbone.feature_info):
        assert m.shape[:2] == (2, info.channels) and abs(m.shape[2] - 97 / info.stride) < 1, (m.shape, info)


def _buildable(entry) -> bool:
    """Datasets that need files on disk (a root folder: a required field) have no tiny config; their own tests make
    the files."""
    return entry.tiny is not None or all(f.default is not attrs.NOTHING for f in attrs.fields(entry.config))


@_entries(Dataset, where=_buildable)
def test_dataset_samples_keep_the_contract(entry):
    for split in entry.cls.splits:
        ds = entry.build(entry.tiny, split=split)
        assert len(ds) > 0
        sample = ds[0]
        assert sample["image"].dtype == torch.uint8 and sample["image"].ndim == 3 and sample["image"].shape[0] == 3
        assert sample["mask"].shape == sample["image"].shape[1:] and not sample["mask"].is_floating_point()
        labels = set(sample["mask"].unique().tolist())
        assert labels <= set(range(ds.meta.num_classes)) | {ds.meta.ignore_index}
        assert len(ds.meta.palette) == ds.meta.num_classes
