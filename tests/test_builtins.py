"""Core's built-in head and loss (`fcn`, `ce`): a pipeline trains and tests with core alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from segcore import AttentionSlots, Decoder, FeatureInfo, Loss, ModelOutput
from segcore.builtin.decoders import FCNHead, FCNHeadConfig
from segcore.builtin.losses import CrossEntropyLoss, CrossEntropyLossConfig

W48 = tuple(FeatureInfo(c, s) for c, s in ((48, 4), (96, 8), (192, 16), (384, 32)))


def test_fcn_and_ce_are_builtins_registered_through_the_hook(registry):
    for stage, name in ((Decoder, "fcn"), (Loss, "ce")):
        entry = registry.get(stage, name)
        assert entry.plugin.name.startswith("segcore.builtin.") and entry.plugin.dist == "segcore"
        assert entry.formerly == ("segcore-plugin-classic",)  # folders saved when classic provided them still load


def test_fcn_head_picks_its_level():
    head = FCNHead(FCNHeadConfig(channels=32, in_index=2), in_features=W48, attention=AttentionSlots())
    maps = [torch.randn(2, f.channels, 64 // f.stride, 64 // f.stride) for f in W48]
    assert head(maps).shape == (2, 32, 4, 4) and head.stride == 16


def test_fcn_head_weight_names_are_those_of_segcore_0_1():
    head = FCNHead(FCNHeadConfig(channels=8, num_convs=2, concat_input=True), in_features=W48, attention=AttentionSlots())
    assert sorted(k for k in head.state_dict() if k.endswith("weight")) == [
        "concat.0.weight", "concat.1.weight", "convs.0.0.weight", "convs.0.1.weight", "convs.1.0.weight",
        "convs.1.1.weight"]  # fmt: skip


def test_ce_matches_torch_with_ignore_and_weights():
    logits, target = torch.randn(2, 3, 5, 5), torch.randint(0, 3, (2, 5, 5))
    target[0, 0] = 255
    loss = CrossEntropyLoss(CrossEntropyLossConfig(class_weights=(1.0, 2.0, 0.5)), num_classes=3, ignore_index=255)
    expected = F.cross_entropy(logits, target, weight=torch.tensor([1.0, 2.0, 0.5]), ignore_index=255)
    torch.testing.assert_close(loss(logits, target, ModelOutput(logits=logits)), expected)
