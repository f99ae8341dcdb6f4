"""VAN trains with core's bf16 + channels_last work-around for dilated depthwise convs (segcore.engine.workarounds;
core's own test uses a two-conv model, this is the architecture it was written for)."""

from __future__ import annotations

import pytest
import safetensors.torch

from segcore.pipeline import Trainer, structure_pipeline


@pytest.mark.parametrize("amp, channels_last, switched", [("bf16", True, 13), ("bf16", False, 0), ("none", True, 0)])
def test_the_trainer_switches_them_for_bf16_channels_last_on_the_cpu(registry, tmp_path, amp, channels_last, switched):
    """VAN-B0 (frm plugin) has 13 LKA blocks, each with one 7x7 dilation-3 depthwise conv."""
    raw = {
        "model": {"backbone": {"name": "van", "variant": "b0"}, "decoder": {"name": "fcn", "in_index": -1}},
        "data": {"dataset": {"name": "shapes", "size": [64, 64], "num_train": 4, "num_val": 2}, "batch_size": 2},
        "loss": [{"name": "ce"}],
        "train": {"iters": 1, "amp": amp, "channels_last": channels_last, "plots": False},
        "run": {"out_dir": str(tmp_path / "run"), "device": "cpu"},
    }  # fmt: skip
    trainer = Trainer.from_config(structure_pipeline(raw, registry=registry), registry, progress=False)
    assert sum(type(m).__name__ == "Float32Conv2d" for m in trainer.model.modules()) == switched  # the trainer's float32 conv
    if switched:  # a step runs, and what is saved has the model's own keys
        trainer.fit()
        saved = safetensors.torch.load_file(str(tmp_path / "run" / "model.safetensors"))
        assert sum(k.endswith("dw_dilated.weight") for k in saved) == 13
