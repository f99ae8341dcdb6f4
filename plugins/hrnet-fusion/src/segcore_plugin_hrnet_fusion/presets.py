"""The paper's models as presets (BLOCKS.md 000.10): ``hrnet``, ``hrnet_s``, ``hrnet_m``, ``hrnet_l`` at W18, W32 and
W48 (``hrnet_l_w18``, ...; the bare names are W48, the paper's width). Usable as ``base = "hrnet_l_w18"`` in a
pipeline file, which then adds [data] and [[loss]] and overrides any key.

All of them: classic's ``hrnet`` backbone fusing with align_corners True (the authors' backbone), no dropout before
the classifier (the authors' head has none). The baseline is classic's ``hrnetv2_head`` with align_corners True.
"""

from __future__ import annotations

from typing import Any

WIDTHS = (18, 32, 48)


def _model(width: int, decoder: dict[str, Any], enhancers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    model: dict[str, Any] = {"backbone": {"name": "hrnet", "width": width, "align_corners": True}, "decoder": decoder,
                             "dropout": 0.0}  # fmt: skip
    if enhancers:
        model["enhancers"] = enhancers
    return {"model": model}


def _aam_everywhere(ccsf: bool) -> dict[str, Any]:
    return {"name": "fusm", "ccsf": ccsf, "attention": {"per_level": {"name": "aam"}, "after_fusion": {"name": "aam"}}}


def presets() -> dict[str, dict[str, Any]]:
    """Every preset name -> its pipeline table."""
    out = {}
    for w in WIDTHS:
        out[f"hrnet_w{w}"] = _model(w, {"name": "hrnetv2_head", "align_corners": True})
        # HRNet_S: BFEM -> FUSM -> CCSF(15W) -> ECA(15W) -> head
        out[f"hrnet_s_w{w}"] = _model(
            w, {"name": "fusm", "ccsf": True, "attention": {"after_fusion": {"name": "eca"}}}, [{"name": "bfem"}]
        )
        out[f"hrnet_m_w{w}"] = _model(w, _aam_everywhere(ccsf=True))  # HRNet_L + CCSF(15W) after FUSM
        out[f"hrnet_l_w{w}"] = _model(w, _aam_everywhere(ccsf=False))  # AAM on 4 streams -> FUSM -> AAM(15W) -> head
    for family in ("hrnet", "hrnet_s", "hrnet_m", "hrnet_l"):
        out[family] = out[f"{family}_w48"]
    return out
