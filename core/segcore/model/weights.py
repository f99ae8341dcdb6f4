"""Weights files: safetensors with an integrity record, written and read through one pair of helpers.

Every safetensors file segcore writes (a run's ``model.safetensors``, each checkpoint's two files, ``best/``, hub
folders) carries in its header metadata ``segcore.sha256``: the sha256 of its tensors (each name, dtype, shape and
bytes, in name order). `read_weights` recomputes it, so a file that was truncated, zeroed, overwritten with other
bytes or had a single byte flipped is refused with its name instead of loading other numbers. The record lives in
the file itself, so it survives copies and uploads and a crash can never separate the two.

`load_weights` puts a file into a module by tensor name and reports every missing, unexpected and wrong-shape
tensor by name (never torch's size-mismatch RuntimeError). Nothing here unpickles: a ``torch.save`` file is
recognised and refused with the command that converts it.
"""

from __future__ import annotations

__all__ = [
    "RECORD_KEY", "LoadReport", "adapt_input_channels", "apply_weights", "load_weights", "read_weights", "save_weights", "sniff", "tensors_sha256",
]  # fmt: skip

import hashlib
import json
import struct
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import safetensors.torch
import torch
from attrs import frozen
from torch import Tensor, nn

from segcore.errors import ConfigError, DamagedFileError
from segcore.io import atomic_write

RECORD_KEY = "segcore.sha256"
DEFAULT_HINT = "Were they written for this pipeline's [model]?"
_MAX_HEADER = 100_000_000  # safetensors' own limit

# what a file that is not safetensors usually is, by its first bytes
_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"PK\x03\x04", "a zip archive (torch.save writes these)"),
    (b"\x80\x02", "a pickle (torch.save)"),
    (b"\x80\x03", "a pickle (torch.save)"),
    (b"\x80\x04", "a pickle (torch.save)"),
    (b"\x80\x05", "a pickle (torch.save)"),
)
_CONVERT = (
    "segcore never unpickles; convert it once where you trust it: python -c \"import torch, safetensors.torch as st; "
    "st.save_file(torch.load('FILE', weights_only=True), 'model.safetensors')\""
)


def sniff(path: str | Path) -> str | None:
    """What a file that is not safetensors is, by its first bytes (``"a PNG image"``, ``"a pickle (torch.save)"``),
    or None when they say nothing."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def tensors_sha256(tensors: Mapping[str, Tensor]) -> str:
    """sha256 of *tensors*: each name, dtype, shape and raw bytes, in name order (the integrity record)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{t.dtype}\0{list(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _plain(source: nn.Module | Mapping[str, Tensor], skip: Sequence[str]) -> dict[str, Tensor]:
    """CPU, contiguous tensors; tensors sharing memory (tied weights) are copied apart (safetensors refuses them)."""
    state = source.state_dict() if isinstance(source, nn.Module) else source
    out: dict[str, Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, value in state.items():
        if any(name.startswith(p) for p in skip):
            continue
        t = value.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if t.numel() and key in seen:
            t = t.clone()
        seen.add(key)
        out[name] = t
    return out


def save_weights(source: nn.Module | Mapping[str, Tensor], path: str | Path, *, skip: Sequence[str] = (),
                 metadata: Mapping[str, str] | None = None) -> Path:  # fmt: skip
    """Write *source* (a module's state dict, or a name -> tensor mapping) to safetensors file *path* with its
    integrity record, atomically (temp file, then rename). Tensors whose names start with one of *skip* are left
    out (``skip=("aux.",)`` for inference weights). Returns *path*."""
    tensors = _plain(source, skip)
    meta = {"format": "pt", **(metadata or {}), RECORD_KEY: tensors_sha256(tensors)}
    path = Path(path)
    with atomic_write(path) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata=meta)
    return path


def _header(data: bytes, path: Path) -> dict:
    """The JSON header of safetensors bytes *data*; anything else is a DamagedFileError naming *path*."""
    if not data:
        raise DamagedFileError(f"{path}: the file is empty (0 bytes)")
    (n,) = struct.unpack("<Q", data[:8]) if len(data) >= 8 else (0,)
    problem = None
    if len(data) < 8:
        problem = f"truncated ({len(data)} bytes); not a safetensors file"
    elif n == 0 or n > _MAX_HEADER or 8 + n > len(data):
        problem = (f"not a readable safetensors file (its header claims {n} bytes, the file has {len(data)}): "
                   "truncated, zeroed or overwritten")  # fmt: skip
    else:
        try:
            header = json.loads(data[8 : 8 + n])
        except (UnicodeDecodeError, ValueError) as exc:
            problem = f"the safetensors header is not valid JSON ({exc}); the file is damaged"
        else:
            if not isinstance(header, dict):
                problem = "the safetensors header is not a table; the file is damaged"
            else:
                ends = [e.get("data_offsets", [0, 0])[-1] for k, e in header.items() if k != "__metadata__" and isinstance(e, dict)]
                need, have = max(ends, default=0), len(data) - 8 - n
                if isinstance(need, int) and need > have:
                    problem = f"truncated: its header describes {need} bytes of tensors, the file holds {max(have, 0)}"
                else:
                    return header
    for magic, kind in _MAGIC:  # only now: a real header length can start with these bytes too
        if data.startswith(magic):
            hint = _CONVERT.replace("FILE", str(path)) if "torch.save" in kind else "point at a .safetensors file"
            problem = f"this is {kind}, not a safetensors weights file; {hint}"
    raise DamagedFileError(f"{path}: {problem}")


def read_weights(path: str | Path, *, require_record: bool = True, what: str = "weights") -> dict[str, Tensor]:
    """The tensors of safetensors file *path*, after checking its integrity record.

    A missing, empty, truncated, altered or foreign file raises DamagedFileError naming it. A file without a
    record (written by another tool) raises too with *require_record*, else loads with a warning.
    """
    path = Path(path)
    if path.is_dir():
        raise DamagedFileError(f"{path}: is a folder, not a {what} file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DamagedFileError(f"{path}: {what} file is missing") from None
    except OSError as exc:
        raise DamagedFileError(f"{path}: cannot read the {what} file: {exc}") from None
    meta = _header(data, path).get("__metadata__") or {}
    try:
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # SafetensorError and friends: the message lacks the file's name
        raise DamagedFileError(f"{path}: damaged safetensors file: {exc}") from None
    record = meta.get(RECORD_KEY) if isinstance(meta, dict) else None
    if record is None:
        msg = f"{path}: has no integrity record ({RECORD_KEY}), so damage cannot be detected"
        if require_record:
            raise DamagedFileError(f"{msg}; segcore writes one into every {what} file, so this one was altered or replaced")
        warnings.warn(f"{msg}; loaded unverified (not written by segcore?)", stacklevel=2)
    elif record != tensors_sha256(tensors):
        raise DamagedFileError(
            f"{path}: the tensors differ from the file's integrity record (sha256); its bytes were altered or damaged. "
            "Restore the file from a copy, or retrain."
        )
    return tensors


@frozen
class LoadReport:
    """What a non-strict `load_weights` left out, by tensor name."""

    missing: tuple[str, ...] = ()  # in the module, not in the file
    unexpected: tuple[str, ...] = ()  # in the file, not in the module
    mismatched: tuple[str, ...] = ()  # in both, shapes differ (left as the module had them)


def _names(names: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" (+{len(names) - most} more)" if len(names) > most else "")


def load_weights(module: nn.Module, path: str | Path, *, strict: bool = True, ignore_missing: Sequence[str] = (),
                 require_record: bool = True, hint: str = "", in_channels: int | None = None) -> LoadReport:  # fmt: skip
    """Load safetensors file *path* into *module* by tensor name, checking the file's integrity first.

    With *strict*, any missing (outside the *ignore_missing* prefixes), unexpected or wrong-shape tensor raises a
    ConfigError naming the file and the tensors (and *hint*, how to fix it) before anything is copied; without,
    the tensors that fit are loaded and the rest is returned in a `LoadReport`. *in_channels*: the module's input
    channels; RGB input convolutions in the file are adapted to them first (`adapt_input_channels`).
    """
    tensors = read_weights(path, require_record=require_record)
    return apply_weights(module, tensors, source=path, strict=strict, ignore_missing=ignore_missing, hint=hint,
                         in_channels=in_channels)  # fmt: skip


def adapt_input_channels(tensors: Mapping[str, Tensor], own: Mapping[str, Tensor], in_channels: int,
                         base: int = 3) -> dict[str, Tensor]:  # fmt: skip
    """*tensors* with every input convolution made for *base* (RGB) channels adapted to *in_channels*: a 4-d weight
    whose shape differs from *own*'s (the model's state dict) only in having *base* input channels where the model
    has *in_channels*. timm's ``adapt_input_conv`` (what ``timm.create_model(..., in_chans=N, pretrained=True)``
    does): the RGB kernels repeated over the channels and scaled by 3 / N (summed for N = 1)."""
    from timm.models import adapt_input_conv

    out = dict(tensors)
    if in_channels == base:
        return out
    for key, value in tensors.items():
        want = own.get(key)
        if (want is not None and value.ndim == 4 and want.ndim == 4 and value.shape[1] == base
                and want.shape[1] == in_channels and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]):  # fmt: skip
            out[key] = adapt_input_conv(in_channels, value, base_chans=base)
    return out


def apply_weights(module: nn.Module, tensors: Mapping[str, Tensor], *, source: str | Path, strict: bool = True,
                  ignore_missing: Sequence[str] = (), hint: str = "", in_channels: int | None = None) -> LoadReport:  # fmt: skip
    """`load_weights` for tensors already read (and verified) from *source*, which the messages name."""
    own = module.state_dict()
    if in_channels is not None:
        tensors = adapt_input_channels(tensors, own, in_channels)
    missing = [k for k in own if k not in tensors and not any(k.startswith(p) for p in ignore_missing)]
    unexpected = [k for k in tensors if k not in own]
    mismatched = [k for k in tensors if k in own and tensors[k].shape != own[k].shape]
    if strict and (missing or unexpected or mismatched):
        parts = []  # names sorted: a file's tensor order is not stable, the message users see must be
        if mismatched:
            shapes = "; ".join(f"{k} is {tuple(tensors[k].shape)} in the file, {tuple(own[k].shape)} in the model"
                               for k in sorted(mismatched)[:5])  # fmt: skip
            parts.append(f"{len(mismatched)} of another shape ({shapes}{'; ...' if len(mismatched) > 5 else ''})")
        if missing:
            parts.append(f"{len(missing)} missing from the file ({_names(sorted(missing))})")
        if unexpected:
            parts.append(f"{len(unexpected)} the model does not have ({_names(sorted(unexpected))})")
        classes = _class_count_hint(tensors, own)
        raise ConfigError(
            f"{source}: these weights do not fit the model: {'; '.join(parts)}.{classes} {hint or DEFAULT_HINT}"
        )
    module.load_state_dict({k: v for k, v in tensors.items() if k in own and k not in mismatched}, strict=False)
    return LoadReport(tuple(missing), tuple(unexpected), tuple(mismatched))


def _class_count_hint(tensors: Mapping[str, Tensor], own: Mapping[str, Tensor]) -> str:
    key = "classifier.weight"
    if key in tensors and key in own and tensors[key].shape[0] != own[key].shape[0]:
        return (f" The file's classifier has {tensors[key].shape[0]} classes, the model's {own[key].shape[0]}: set "
                f"[model] num_classes, or use the dataset it was trained on.")  # fmt: skip
    return ""
