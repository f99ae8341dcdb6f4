"""VAN trains with core's bf16 + channels_last work-around for dilated depthwise convs (segcore.engine.workarounds;
core's own test uses a two-conv model, this is the architecture it was written for), and with train.fast_dilated."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch.nn.functional as F

from segcore.pipeline import Trainer, structure_pipeline


def _trainer(registry, tmp_path, **train) -> Trainer:
    raw = {
        "model": {"backbone": {"name": "van", "variant": "b0"}, "decoder": {"name": "fcn", "in_index": -1}},
        "data": {"dataset": {"name": "shapes", "size": [64, 64], "num_train": 4, "num_val": 2}, "batch_size": 2},
        "loss": [{"name": "ce"}],
        "train": {"iters": 1, "plots": False, **train},
        "run": {"out_dir": str(tmp_path / "run"), "device": "cpu"},
    }  # fmt: skip
    return Trainer.from_config(structure_pipeline(raw, registry=registry), registry, progress=False)


def _fit_saves_the_model_s_own_keys(trainer: Trainer, tmp_path) -> None:
    trainer.fit()
    saved = safetensors.torch.load_file(str(tmp_path / "run" / "model.safetensors"))
    assert sum(k.endswith("dw_dilated.weight") for k in saved) == 13


@pytest.mark.parametrize("amp, channels_last, switched", [("bf16", True, 13), ("bf16", False, 0), ("none", True, 0)])
def test_the_trainer_switches_them_for_bf16_channels_last_on_the_cpu(registry, tmp_path, amp, channels_last, switched):
    """VAN-B0 (frm plugin) has 13 LKA blocks, each with one 7x7 dilation-3 depthwise conv."""
    trainer = _trainer(registry, tmp_path, amp=amp, channels_last=channels_last)
    assert sum(type(m).__name__ == "Float32Conv2d" for m in trainer.model.modules()) == switched  # the trainer's float32 conv
    if switched:  # a step runs, and what is saved has the model's own keys
        _fit_saves_the_model_s_own_keys(trainer, tmp_path)


def test_with_fast_dilated_its_lka_convolutions_train_on_sub_grids(registry, tmp_path, monkeypatch):
    """train.fast_dilated: the 13 LKA convolutions become core's sub-grid convolution, a step runs through them and
    what is saved has the model's own keys."""
    trainer = _trainer(registry, tmp_path, channels_last=True, fast_dilated=True)
    assert sum(type(m).__name__ == "SubgridDilatedConv2d" for m in trainer.model.modules()) == 13  # core's
    calls = []
    real = F.pixel_unshuffle
    monkeypatch.setattr(F, "pixel_unshuffle", lambda *a, **k: calls.append(1) or real(*a, **k))
    _fit_saves_the_model_s_own_keys(trainer, tmp_path)
    assert len(calls) >= 13  # the training step's forward (and the final evaluation's)
