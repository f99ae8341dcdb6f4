"""Convert an official VAN ImageNet checkpoint to a safetensors file the ``van`` backbone loads.

    python -m segcore_plugin_frm.convert_van van_small_811.pth.tar van_b1.safetensors

The official release (Visual-Attention-Network/VAN-Classification, ``model_urls`` in ``models/van.py``:
van_tiny_754 = B0, van_small_811 = B1, van_base_828 = B2, van_large_839 = B3) stores ``{"state_dict": ...}`` with
``torch.save``. It is read with ``torch.load(weights_only=True)`` (tensors and plain containers only, never
arbitrary pickled objects), its keys are renamed by `KEY_MAP`, the classifier (``head.*``) is dropped, and the
result is written atomically with segcore's integrity record. Any key the mapping does not know stops the
conversion with its name, so a checkpoint of another architecture is never half converted.

Official key (i = stage 1..4, j = block)                      -> segcore ``van`` key
  patch_embed{i}.proj.*                                         -> stages.{i-1}.embed.conv.*
  patch_embed{i}.norm.*                                         -> stages.{i-1}.embed.bn.*
  block{i}.{j}.norm1.* / norm2.*                                -> stages.{i-1}.blocks.{j}.norm1.* / norm2.*
  block{i}.{j}.attn.proj_1.* / proj_2.*                         -> stages.{i-1}.blocks.{j}.attn.proj1.* / proj2.*
  block{i}.{j}.attn.spatial_gating_unit.conv0.*                 -> stages.{i-1}.blocks.{j}.attn.lka.dw.*
  block{i}.{j}.attn.spatial_gating_unit.conv_spatial.*          -> stages.{i-1}.blocks.{j}.attn.lka.dw_dilated.*
  block{i}.{j}.attn.spatial_gating_unit.conv1.*                 -> stages.{i-1}.blocks.{j}.attn.lka.pw.*
  block{i}.{j}.mlp.fc1.* / fc2.*                                -> stages.{i-1}.blocks.{j}.mlp.fc1.* / fc2.*
  block{i}.{j}.mlp.dwconv.dwconv.*                              -> stages.{i-1}.blocks.{j}.mlp.dw.*
  block{i}.{j}.layer_scale_1 / layer_scale_2                    -> stages.{i-1}.blocks.{j}.ls1 / ls2
  norm{i}.*                                                     -> stages.{i-1}.norm.*
  head.*                                                        -> (dropped: the ImageNet classifier)
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from segcore import ConfigError, SegcoreError, save_weights

_BLOCK = {
    "norm1": "norm1",
    "norm2": "norm2",
    "attn.proj_1": "attn.proj1",
    "attn.proj_2": "attn.proj2",
    "attn.spatial_gating_unit.conv0": "attn.lka.dw",
    "attn.spatial_gating_unit.conv_spatial": "attn.lka.dw_dilated",
    "attn.spatial_gating_unit.conv1": "attn.lka.pw",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "mlp.dwconv.dwconv": "mlp.dw",
}
# (pattern on the official key, replacement); the first that matches wins
KEY_MAP: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^patch_embed(\d)\.proj\.(\w+)$"), "stages.{s}.embed.conv.{1}"),
    (re.compile(r"^patch_embed(\d)\.norm\.(\w+)$"), "stages.{s}.embed.bn.{1}"),
    (re.compile(r"^block(\d)\.(\d+)\.layer_scale_([12])$"), "stages.{s}.blocks.{1}.ls{2}"),
    *(
        (re.compile(rf"^block(\d)\.(\d+)\.{re.escape(old)}\.(\w+)$"), f"stages.{{s}}.blocks.{{1}}.{new}.{{2}}")
        for old, new in _BLOCK.items()
    ),
    (re.compile(r"^norm(\d)\.(\w+)$"), "stages.{s}.norm.{1}"),
)
DROPPED = re.compile(r"^head\.")


def convert_key(key: str) -> str | None:
    """The segcore ``van`` key of official key *key*; None for the dropped classifier. Unknown keys raise KeyError."""
    key = key.removeprefix("module.")  # checkpoints saved from DataParallel
    if DROPPED.match(key):
        return None
    for pattern, template in KEY_MAP:
        m = pattern.match(key)
        if m:
            stage, *rest = m.groups()
            return template.format(None, *rest, s=int(stage) - 1)
    raise KeyError(key)


def convert_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official VAN state dict -> segcore ``van`` state dict; every unknown key is named in one ConfigError."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        try:
            new = convert_key(key)
        except KeyError:
            unknown.append(key)
            continue
        if new is not None:
            out[new] = value
    if unknown:
        shown = ", ".join(unknown[:8]) + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else "")
        raise ConfigError(
            f"{len(unknown)} keys are not in the official VAN layout: {shown}. Is this a VAN-Classification "
            "checkpoint (van_tiny_754 / van_small_811 / van_base_828 / van_large_839)?"
        )
    return out


def _state_dict(obj: object, path: Path) -> Mapping[str, Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ConfigError(f"{path}: holds no state dict (expected tensors by name, or under 'state_dict' or 'model')")
    return obj


def convert(src: str | Path, dst: str | Path) -> Path:
    """Read official checkpoint *src*, write the converted safetensors file *dst* (atomically). Returns *dst*."""
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise ConfigError(f"{dst}: the output must end in .safetensors")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{src}: no such file") from None
    except Exception as exc:  # UnpicklingError for anything weights_only refuses, zip errors for damaged files
        raise ConfigError(f"{src}: cannot read it as a torch checkpoint of tensors: {exc}") from None
    state = convert_state_dict(_state_dict(obj, src))
    return save_weights(state, dst, metadata={"converted_from": src.name})


def main(argv: list[str] | None = None) -> int:
    summary = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m segcore_plugin_frm.convert_van", description=summary)
    parser.add_argument("src", help="official checkpoint, e.g. van_small_811.pth.tar")
    parser.add_argument("dst", help="output .safetensors file (the backbone's `weights`)")
    args = parser.parse_args(argv)
    try:
        out = convert(args.src, args.dst)
    except SegcoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
