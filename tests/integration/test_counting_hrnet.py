"""Counting conventions calibrated against seed 000's Table III and BLOCKS 0.3 on FCN-HRNetV2-W48 (timm's hrnet_w48 with
classic's HRNetV2 head)."""

from __future__ import annotations

import attrs
import pytest
from torch import nn

from segcore.config import structure_pipeline
from segcore.model.check import check_pipeline, totals
from segcore.model.counting import CONVENTIONS, THOP_RULES

pytest.importorskip("segcore_plugin_classic", reason="an integration test: it needs segcore-plugin-classic "
                    "(pip install -e plugins/classic)")  # fmt: skip


def _hrnet_w48(registry, classes: int):
    raw = {
        "model": {"backbone": {"name": "timm", "model_name": "hrnet_w48"}, "decoder": {"name": "hrnetv2_head"},
                  "num_classes": classes},
        "data": {"dataset": {"name": "shapes"}},
    }  # fmt: skip
    return structure_pipeline(raw, registry=registry)


def test_hrnet_w48_thop2x_is_seed_000_table_iii_once_timm_upsample_modules_are_left_out(registry):
    """BLOCKS 000.11: seed 000's HRNet row (HRNetV2-W48 + head, 20 classes, 512x1024, thop x 2) is 65.860 M and
    376.184 G. timm's HRNet upsamples in its fuse layers with nn.Upsample modules, which thop counts (1 per output
    element); the authors' HRNet uses F.interpolate, which thop never sees. Without the nn.Upsample rule our count is
    the published one to the last digit; with it, 2 x the upsampled elements (37,355,520) more."""
    cfg = _hrnet_w48(registry, 20)
    full = totals(check_pipeline(cfg, registry, input_size=(512, 1024), convention="thop2x")).inference
    rules = {k: v for k, v in THOP_RULES.items() if k is not nn.Upsample}
    authors = attrs.evolve(CONVENTIONS["thop2x"], rules=rules)
    no_upsample = totals(check_pipeline(cfg, registry, input_size=(512, 1024), convention=authors)).inference
    assert (round(no_upsample.params / 1e6, 3), round(no_upsample.macs / 1e9, 3)) == (65.860, 376.184)
    assert full.params == no_upsample.params == 65_860_100
    assert full.macs - no_upsample.macs == 2 * 37_355_520


@pytest.mark.slow  # ~7 s: W48 under every convention on 2 idle AVX2 cores
def test_every_convention_counts_the_same_hrnet_w48_parameters(registry):
    """BLOCKS 0.3 / 000.1: FCN-HRNetV2-W48 with 19 classes has 65.86 M parameters, every module being a thop- and
    mmcv-registered type (Conv2d, BatchNorm2d) that runs. Its true MACs are tests/test_model.py's."""
    cfg = _hrnet_w48(registry, 19)
    got = {c: totals(check_pipeline(cfg, registry, input_size=(512, 1024), convention=c)).total for c in CONVENTIONS}
    assert {c: v.params for c, v in got.items()} == dict.fromkeys(CONVENTIONS, 65_859_379)
    assert round(got["true"].macs / 1e9, 1) == 186.9  # conv-only, BLOCKS "Numbers to check against"
