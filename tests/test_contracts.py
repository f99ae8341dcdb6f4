"""Contract tests on core's built-in components, through segcore.testing (the kit plugin authors use: each plugin's
tests/test_contracts.py runs it on its own distribution)."""

from __future__ import annotations

import torch

from segcore.testing import contract_tests

test_builtins_keep_their_contracts = contract_tests(distribution="segcore")


def test_a_channels_last_timm_model_gives_nchw_maps_at_odd_sizes():
    from segcore import TimmBackbone, TimmBackboneConfig

    backbone = TimmBackbone(TimmBackboneConfig(model_name="test_mambaout"))  # timm returns NHWC for it
    assert backbone.channels_last_maps
    maps = backbone(torch.randn(2, 3, 97, 131))
    for m, info in zip(maps, backbone.feature_info):
        assert m.shape[:2] == (2, info.channels) and abs(m.shape[2] - 97 / info.stride) < 1, (m.shape, info)
