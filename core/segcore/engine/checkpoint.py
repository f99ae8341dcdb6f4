"""Checkpoints without pickle: tensors in safetensors files, everything else in JSON, written atomically.

A checkpoint is a folder ``ckpt-<step>`` holding ``model.safetensors``, ``train_state.safetensors`` (optimizer
state tensors, EMA weights, RNG states) and ``state.json`` (step, epoch, optimizer hyper-parameters, ...). It
is written to a temp folder and renamed into place, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

__all__ = ["latest_checkpoint", "load_checkpoint", "prune_checkpoints", "save_checkpoint"]

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from ..errors import ConfigError

PREFIX = "ckpt-"


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    folder: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: nn.Module | None,
    state: dict[str, Any],
) -> Path:
    """Write checkpoint folder *folder* atomically (a temp folder beside it, then one rename)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
        tensors, optim_meta = _optimizer_to_flat(optimizer)
        if ema is not None:
            tensors |= {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors |= {f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
        safetensors.torch.save_file(tensors, str(tmp / "train_state.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "optimizer": optim_meta}, indent=1))
        if folder.exists():  # replace: move the old one aside first, so one of the two is always whole
            trash = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(folder, trash)
            os.replace(tmp, folder)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_checkpoint(
    folder: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer | None, ema: nn.Module | None
) -> dict[str, Any]:
    """Restore what `save_checkpoint` wrote; return its state dict (step, epoch, ...). Never unpickles."""
    folder = Path(folder)
    for name in ("model.safetensors", "train_state.safetensors", "state.json"):
        if not (folder / name).is_file():
            raise ConfigError(f"{folder}: not a segcore checkpoint ({name} is missing)")
    missing, unexpected = safetensors.torch.load_model(model, str(folder / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise ConfigError(f"{folder}: checkpoint does not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    state = json.loads((folder / "state.json").read_text())
    tensors = safetensors.torch.load_file(str(folder / "train_state.safetensors"))
    if optimizer is not None:
        optimizer.load_state_dict(_optimizer_from_flat(tensors, state["optimizer"]))
    if ema is not None:
        ema.load_state_dict({k.removeprefix("ema."): v for k, v in tensors.items() if k.startswith("ema.")})
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    return state


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest ``ckpt-<step>`` folder in *folder*, or None."""
    found = sorted(Path(folder).glob(f"{PREFIX}*"), key=lambda p: int(p.name.removeprefix(PREFIX)))
    return found[-1] if found else None


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the newest *keep* ``ckpt-<step>`` folders."""
    found = sorted(Path(folder).glob(f"{PREFIX}*"), key=lambda p: int(p.name.removeprefix(PREFIX)))
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
