"""The paper's model as presets: ``early_fusion_w{18,32,48}`` (4 streams) and ``early_fusion_half_w{18,32,48}`` (the
variant with a 1/2-resolution stream); the bare ``early_fusion`` and ``early_fusion_half`` are W48, the width of the
HRNet the seed copies. Usable as ``base = "early_fusion_w48"`` in a pipeline file, which adds [data], [[loss]] and
[train] and overrides any key.

Encoder: core's ``timm`` backbone with Yalniz et al.'s semi-weakly supervised ResNet-50
(``resnet50.fb_swsl_ig1b_ft_in1k``; their semi-supervised one is ``model_name = "resnet50.fb_ssl_yfcc100m_ft_in1k"``),
taps 0-4 (64 ch at 1/2, then 256/512/1024/2048 at 1/4-1/32), pretrained and frozen for the whole run. A frozen
encoder is only meaningful with its weights, so the presets ask for them; without the Hugging Face cache set
``[model.backbone] pretrained = false`` (a fine-tuning recipe with ``init_from`` needs no cache: the weights it
starts from include the encoder's).
No dropout before the classifier (HRNet's head has none).
"""

from __future__ import annotations

from typing import Any

WIDTHS = (18, 32, 48)
ENCODER = "resnet50.fb_swsl_ig1b_ft_in1k"


def encoder(model_name: str = ENCODER, *, pretrained: bool = True) -> dict[str, Any]:
    """The [model.backbone] table: a frozen timm ResNet with all five taps."""
    return {"name": "timm", "model_name": model_name, "out_indices": [0, 1, 2, 3, 4], "pretrained": pretrained,
            "frozen": True}  # fmt: skip


def presets() -> dict[str, dict[str, Any]]:
    """Every preset name -> its pipeline table."""
    out: dict[str, dict[str, Any]] = {}
    for w in WIDTHS:
        for variant, half in (("early_fusion", False), ("early_fusion_half", True)):
            decoder: dict[str, Any] = {"name": "reverse_hrnet", "width": w}
            if half:
                decoder["half_stream"] = True
            out[f"{variant}_w{w}"] = {"model": {"backbone": encoder(), "decoder": decoder, "dropout": 0.0}}
    out["early_fusion"] = out["early_fusion_w48"]
    out["early_fusion_half"] = out["early_fusion_half_w48"]
    return out
