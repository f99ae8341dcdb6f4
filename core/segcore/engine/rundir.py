"""The run folder: which run it holds (``run.json``), the names segcore writes in it, and their cleanup.

A folder is a segcore run folder when it holds ``run.json``, whose ``identity`` is the pipeline without the keys
that do not change the run (``[run]``, ``[predict]``, logging and checkpoint cadence). Resuming needs the same
identity; a new run needs an empty folder or ``--overwrite``. segcore never deletes or overwrites files it did
not write, ``--overwrite`` or not: `RunFolder.remove_outputs` removes only the names in `OURS`.
"""

from __future__ import annotations

__all__ = ["OURS", "RunFolder", "run_identity"]

import contextlib
import json
from pathlib import Path
from typing import Any

from segcore.config import PipelineConfig, dump_pipeline, unstructure
from segcore.engine.checkpoint import PREFIX, checkpoint_path, latest_checkpoint, list_checkpoints
from segcore.errors import ConfigError, DamagedFileError
from segcore.io import remove_stale_temps, write_text

_COSMETIC_TRAIN_KEYS = ("log_every", "tensorboard", "plots", "keep_last", "checkpoint_every", "checkpoint_every_iters")

# what segcore writes in a run folder (for a folder: the names it writes inside)
OURS: dict[str, tuple[str, ...] | None] = {
    "log.jsonl": None, "metrics.json": None, "model.safetensors": None, "pipeline.toml": None,
    "best": ("model.safetensors", "train_state.safetensors", "state.json"),
    "plots": ("curves.png", "iou.png", "confusion.png", "overlays.png"),
    "tensorboard": ("events.out.tfevents.*",),
    "checkpoints": (),  # ckpt-<step> folders, see RunFolder.remove_outputs
}  # fmt: skip


def run_identity(cfg: PipelineConfig) -> dict[str, Any]:
    """What makes two runs the same run (the [run] table and cosmetic train keys do not)."""
    raw = unstructure(cfg)
    raw.pop("run", None)
    raw.pop("predict", None)
    for key in _COSMETIC_TRAIN_KEYS:
        raw.get("train", {}).pop(key, None)
    return json.loads(json.dumps(raw))


def _remove_ours(folder: Path, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        for path in folder.glob(pattern):
            if path.is_file():
                path.unlink()
    remove_stale_temps(folder)
    with contextlib.suppress(OSError):  # kept when it holds anything else
        folder.rmdir()


class RunFolder:
    """A run's output folder and the paths of what the trainer writes in it. Creating one touches nothing on disk;
    `prepare` does."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # -- the names ---------------------------------------------------------------------------------------------

    @property
    def marker(self) -> Path:
        """``run.json``: the identity of the run the folder holds."""
        return self.path / "run.json"

    @property
    def pipeline(self) -> Path:
        """The resolved pipeline (``segcore run`` reads it back)."""
        return self.path / "pipeline.toml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return checkpoint_path(self.checkpoints, step)

    @property
    def best(self) -> Path:
        return self.path / "best"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def log(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def weights(self) -> Path:
        """The final inference weights."""
        return self.path / "model.safetensors"

    # -- bookkeeping -------------------------------------------------------------------------------------------

    def read_marker(self) -> Any:
        """The identity ``run.json`` records; `DamagedFileError` when it cannot be read."""
        try:
            return json.loads(self.marker.read_text(encoding="utf-8"))["identity"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise DamagedFileError(
                f"{self.marker}: damaged ({type(exc).__name__}: {exc}), so segcore cannot tell which run this folder "
                "holds. Pass --overwrite to start a new run here (only segcore's own files are replaced), or choose "
                "another run.out_dir (or --out-dir)."
            ) from None

    def remove_outputs(self) -> None:
        """Delete what segcore wrote in this folder, and nothing else (a user's files in it stay)."""
        for name, inside in OURS.items():
            target = self.path / name
            if name == "checkpoints" and target.is_dir():
                for ckpt in list_checkpoints(target):
                    _remove_ours(ckpt, OURS["best"])
                _remove_ours(target, ())
            elif inside is None and target.is_file():
                target.unlink()
            elif inside is not None and target.is_dir():
                _remove_ours(target, inside)

    def prepare(self, cfg: PipelineConfig, *, resume: bool, overwrite: bool) -> RunFolder:
        """Refuse to mix two runs in one folder: resuming needs the same pipeline, a new run an empty folder (or
        ``--overwrite``). Only a folder with segcore's ``run.json`` is a run folder: segcore never deletes or
        overwrites files it did not write, ``--overwrite`` or not. Writes ``run.json`` and ``pipeline.toml``."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise ConfigError(f"run.out_dir {str(out)!r} is a file; point it at a folder")
        mine = run_identity(cfg)
        if self.marker.exists():
            if not overwrite:
                if self.read_marker() != mine:
                    raise ConfigError(
                        f"{out} holds a different run (its run.json differs from this pipeline). Choose another "
                        "run.out_dir (or --out-dir), or pass --overwrite to replace it."
                    )
                if not resume and latest_checkpoint(self.checkpoints) is not None:
                    raise ConfigError(f"{out} already holds this run's checkpoints: pass --resume to continue it, or --overwrite to start again")
            for folder, legacy in ((out, ("best.",)), (self.checkpoints, (PREFIX,)), (self.plots, ())):
                remove_stale_temps(folder, legacy=legacy)  # what a killed run left
            if overwrite:
                self.remove_outputs()
        else:
            found = [name for name in OURS if (out / name).exists()]
            if found:
                raise ConfigError(
                    f"{out} is not a segcore run folder (it has no run.json) but holds {', '.join(found)}: segcore "
                    "never overwrites or deletes files it did not write, even with --overwrite. Choose another "
                    "run.out_dir (or --out-dir), or move those files away."
                )
        out.mkdir(parents=True, exist_ok=True)
        write_text(self.marker, json.dumps({"identity": mine}, indent=1))
        write_text(self.pipeline, dump_pipeline(cfg))
        return self
