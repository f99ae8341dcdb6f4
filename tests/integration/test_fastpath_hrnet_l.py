"""The fast path on seed 000's HRNet_L (hrnet-fusion's preset over classic's hrnet backbone: AAM, FUSM with bicubic
upsampling places), narrowed to width 8 with one block and one module per stage."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from segcore.config import resolve_bases, structure_pipeline
from segcore.inference.fast import fold_batchnorm
from segcore.model.build import build_model

pytest.importorskip("segcore_plugin_hrnet_fusion", reason="an integration test: it needs segcore-plugin-hrnet-fusion "
                    "(pip install -e plugins/classic plugins/hrnet-fusion)")  # fmt: skip

TINY_L = {"base": "hrnet_l_w18", "model": {"backbone": {"width": 8, "num_blocks": 1, "num_modules": [1, 1, 1]}},
          "data": {"dataset": {"name": "shapes", "size": [64, 64], "num_train": 64, "num_val": 4}},
          "loss": [{"name": "ce"}]}  # fmt: skip


def tiny_l(registry, num_classes: int = 5):
    cfg = structure_pipeline(resolve_bases(copy.deepcopy(TINY_L), registry=registry), registry=registry)
    torch.manual_seed(0)
    return build_model(cfg.model, registry, num_classes=num_classes)


def randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_folded_hrnet_l_equals_the_unfolded_one(registry):
    model = tiny_l(registry).eval()
    randomize_bn(model)
    total = count_bn(model)
    folded = copy.deepcopy(model)
    # every BN of HRNet_L follows a conv whose output nothing else reads (blocks, fusions, transitions, CCSF, AAM, head)
    assert fold_batchnorm(folded, torch.rand(1, 3, 64, 64)) == total > 0
    assert count_bn(folded) == 0
    for size in ((97, 131), (64, 64)):
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            ref, out = model(x).logits, folded(x).logits
        assert out.shape == (2, 5, *size)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())
