"""Checkpoints without pickle: tensors in safetensors files, everything else in JSON, written atomically.

A checkpoint is a folder ``ckpt-<step>`` holding ``model.safetensors``, ``train_state.safetensors`` (optimizer
state tensors, EMA weights, RNG states) and ``state.json`` (step, epoch, optimizer hyper-parameters, ...). The
two tensor files carry segcore's integrity record (`segcore.weights`), ``state.json`` the sha256 of its own
content, so a damaged checkpoint is found before anything is loaded from it. It is written to a temp folder and
renamed into place (`segcore.io.atomic_dir`), so a crash never leaves half a checkpoint; pruning renames a
folder to a temp name before deleting it, so a crash there never leaves a half-deleted one under its name.
"""

from __future__ import annotations

__all__ = [
    "Checkpoint", "checkpoint_path", "latest_checkpoint", "list_checkpoints", "load_checkpoint",
    "newest_intact_checkpoint", "prune_checkpoints", "read_checkpoint", "save_checkpoint",
]  # fmt: skip

import hashlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
from attrs import frozen
from torch import Tensor, nn

from segcore.errors import ConfigError, DamagedFileError
from segcore.io import TEMP_MARK, atomic_dir
from segcore.model.weights import apply_weights, read_weights, save_weights

PREFIX = "ckpt-"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")
_STATE_KEYS = {"step": int, "epoch": int, "batch_in_epoch": int, "optimizer": dict}


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _digest(state: dict[str, Any]) -> str:
    body = {k: v for k, v in state.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


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
    with atomic_dir(folder) as tmp:
        save_weights(model, tmp / "model.safetensors")
        tensors, optim_meta = _optimizer_to_flat(optimizer)
        if ema is not None:
            tensors |= {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            tensors |= {f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
        save_weights(tensors, tmp / "train_state.safetensors")
        body = {**state, "optimizer": optim_meta}
        (tmp / "state.json").write_text(json.dumps({**body, "sha256": _digest(body)}, indent=1))
    return folder


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedFileError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DamagedFileError(f"{path}: not valid JSON ({exc}); the file is damaged") from None
    if not isinstance(state, dict):
        raise DamagedFileError(f"{path}: holds {type(state).__name__}, not a table of training state; the file is damaged")
    bad = [k for k, t in _STATE_KEYS.items() if not isinstance(state.get(k), t) or isinstance(state.get(k), bool)]
    if bad:
        raise DamagedFileError(f"{path}: {', '.join(bad)} missing or of the wrong type; the file is damaged")
    if state.get("sha256") != _digest(state):
        raise DamagedFileError(f"{path}: its content differs from its integrity record (sha256); the file was altered")
    return state


@frozen
class Checkpoint:
    """A checkpoint read from disk and verified whole, not yet applied to anything."""

    folder: Path
    state: dict[str, Any]
    model: dict[str, Tensor]
    train: dict[str, Tensor]

    @property
    def step(self) -> int:
        return self.state["step"]


def read_checkpoint(folder: Path) -> Checkpoint:
    """Read and verify every file of checkpoint *folder*; a damaged or missing one raises DamagedFileError naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DamagedFileError(f"{folder}: not a checkpoint folder")
    state = _read_state(folder / "state.json")
    model = read_weights(folder / "model.safetensors", what="checkpoint")
    train = read_weights(folder / "train_state.safetensors", what="checkpoint")
    if "rng.torch" not in train:
        raise DamagedFileError(f"{folder / 'train_state.safetensors'}: no rng.torch tensor; not a segcore checkpoint")
    return Checkpoint(folder, state, model, train)


def load_checkpoint(
    source: Path | Checkpoint, *, model: nn.Module, optimizer: torch.optim.Optimizer | None, ema: nn.Module | None
) -> dict[str, Any]:
    """Restore what `save_checkpoint` wrote (a folder, or a verified `Checkpoint`); return its state dict (step,
    epoch, ...). Everything is verified before anything is changed. Never unpickles."""
    ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source)
    apply_weights(model, ckpt.model, source=ckpt.folder / "model.safetensors")
    if optimizer is not None:
        try:
            optimizer.load_state_dict(_optimizer_from_flat(ckpt.train, ckpt.state["optimizer"]))
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"{ckpt.folder}: its optimizer state does not fit this pipeline's optimizer ({exc})") from None
    if ema is not None:
        apply_weights(ema, {k.removeprefix("ema."): v for k, v in ckpt.train.items() if k.startswith("ema.")},
                      source=ckpt.folder / "train_state.safetensors")  # fmt: skip
    torch.set_rng_state(ckpt.train["rng.torch"])
    if torch.cuda.is_available():
        cuda = [ckpt.train[k] for k in sorted(ckpt.train) if k.startswith("rng.cuda.")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    return ckpt.state


def checkpoint_path(folder: Path, step: int) -> Path:
    """Where the checkpoint of *step* goes in *folder*: ``ckpt-<step, 8 digits>`` (so names sort by step)."""
    return Path(folder) / f"{PREFIX}{step:08d}"


def list_checkpoints(folder: Path) -> list[Path]:
    """The ``ckpt-<step>`` folders in *folder*, oldest first (files and other names are not checkpoints)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m[1]), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest ``ckpt-<step>`` folder in *folder*, or None (not verified: see `newest_intact_checkpoint`)."""
    found = list_checkpoints(folder)
    return found[-1] if found else None


def newest_intact_checkpoint(folder: Path) -> tuple[Checkpoint | None, list[tuple[Path, str]]]:
    """The newest checkpoint in *folder* whose files are all whole, and the newer ones skipped with the reason."""
    skipped: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(folder)):
        try:
            return read_checkpoint(path), skipped
        except DamagedFileError as exc:
            skipped.append((path, str(exc)))
    return None, skipped


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the newest *keep* ``ckpt-<step>`` folders (each renamed to a temp name first)."""
    for old in list_checkpoints(folder)[:-keep]:
        doomed = old.with_name(f".{old.name}.del{TEMP_MARK}.{secrets.token_hex(4)}")
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
