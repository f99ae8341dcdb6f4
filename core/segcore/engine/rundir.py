"""The run folder: which run it holds (``run.json``), the names segcore writes in it, and their cleanup.

A folder is a segcore run folder when it holds ``run.json``, whose ``identity`` is the pipeline without the keys
that do not change the run (``[run]``, ``[predict]``, logging and checkpoint cadence). Resuming needs the same
identity; a new run needs an empty folder or ``--overwrite`` (never with ``--resume``). segcore never deletes or
overwrites files it did not write, ``--overwrite`` or not, nor writes or deletes through a link: the run's names
(`RUN_FILES`) are recorded in the folder (`segcore.io.record`) and `RunFolder.remove_outputs` removes only those. A
process holds the folder's lock (`segcore.io.lock_folder`) from `RunFolder.prepare` on; a second one is refused.
"""

from __future__ import annotations

__all__ = ["OURS", "RUN_FILES", "RunFolder", "check_flags", "run_identity", "same_identity"]

import contextlib
import json
from pathlib import Path
from typing import Any

from segcore.config import PipelineConfig, dump_pipeline, structure_pipeline, unstructure
from segcore.contracts.registry import Registry
from segcore.engine.checkpoint import PREFIX, checkpoint_path, latest_checkpoint, list_checkpoints
from segcore.errors import ConfigError, DamagedFileError
from segcore.io import FolderLock, claim, lock_folder, record, remove_stale_temps, remove_written, write_text

# [train] keys that change what a run writes, not what it trains: never part of a run's identity (resume, a sweep's
# finished runs, a card's evidence), so their defaults may change
COSMETIC_TRAIN_KEYS = ("log_every", "tensorboard", "plots", "keep_last", "checkpoint_every", "checkpoint_every_iters")
# [train] keys that change how a run computes, not what: the same values to float rounding, so a recipe may switch
# one on after its runs started (a half-finished run resumes with it, finished ones and evidence stay). Not part of a
# run's identity either. (train.fast_resize, older than this rule, still is.)
SAME_VALUES_TRAIN_KEYS = ("fast_dilated",)
NOT_IDENTITY_TRAIN_KEYS = COSMETIC_TRAIN_KEYS + SAME_VALUES_TRAIN_KEYS

# what segcore writes in a run folder (for a folder: the names it writes inside)
OURS: dict[str, tuple[str, ...] | None] = {
    "log.jsonl": None, "metrics.json": None, "model.safetensors": None, "pipeline.toml": None,
    "best": ("model.safetensors", "train_state.safetensors", "state.json"),
    "plots": ("curves.png", "iou.png", "confusion.png", "overlays.png"),
    "tensorboard": ("events.out.tfevents.*",),
    "checkpoints": (),  # ckpt-<step> folders, see RUN_FILES
}  # fmt: skip


def _paths(name: str, inside: tuple[str, ...] | None) -> list[str]:
    if inside is None:
        return [name]
    if name == "checkpoints":
        return [f"{name}/{PREFIX}[0-9]*/{f}" for f in OURS["best"]]
    return [f"{name}/{f}" for f in inside]


# what a run writes (`OURS` as relative paths and glob patterns); the folder records these and run.json as segcore's
RUN_FILES: tuple[str, ...] = tuple(p for name, inside in OURS.items() for p in _paths(name, inside))
_LOCKED_HINT = "Wait for it to end (or stop it), or choose another run.out_dir (or --out-dir)."


def check_flags(*, resume: bool, overwrite: bool) -> None:
    """--resume and --overwrite contradict each other: refuse both (before anything is built or launched)."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite together: --resume continues the run in run.out_dir from its "
                          "newest checkpoint, --overwrite deletes its checkpoints, weights and logs and starts again. "
                          "Pass one of them.")  # fmt: skip


def run_identity(cfg: PipelineConfig) -> dict[str, Any]:
    """What makes two runs the same run (the [run] table and `NOT_IDENTITY_TRAIN_KEYS` do not)."""
    raw = unstructure(cfg)
    raw.pop("run", None)
    raw.pop("predict", None)
    for key in NOT_IDENTITY_TRAIN_KEYS:
        raw.get("train", {}).pop(key, None)
    return json.loads(json.dumps(raw))


def same_identity(recorded: Any, mine: dict[str, Any], *, registry: Registry | None = None) -> bool:
    """Whether a folder's recorded identity is this run's (*mine*, `run_identity`). With *registry*, *recorded* is
    structured by today's schema first: a key segcore gained since (``train.fast_resize``) counts at its default,
    while one it lost, renamed or now rejects makes it another run. This relies on segcore's rule for new keys:
    a key's default is what segcore did before the key existed."""
    if recorded == mine:
        return True
    if registry is None or not isinstance(recorded, dict):
        return False
    try:
        today = structure_pipeline(recorded, registry=registry)
    except ConfigError:
        return False
    return run_identity(today) == mine


def _tidy(folder: Path) -> None:
    """A subfolder segcore emptied: what a killed writer left, then the folder itself unless it holds anything else."""
    if folder.is_symlink() or not folder.is_dir():
        return
    remove_stale_temps(folder)
    with contextlib.suppress(OSError):
        folder.rmdir()


class RunFolder:
    """A run's output folder and the paths of what the trainer writes in it. Creating one touches nothing on disk;
    `prepare` does."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock: FolderLock | None = None  # held from `prepare` until this object goes (or `release`)

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
                "holds. To keep what it holds, choose another run.out_dir (or --out-dir); --overwrite would delete "
                "its checkpoints, weights, logs and plots (files segcore did not write stay) and start a new run here."
            ) from None

    def release(self) -> None:
        """Let go of the folder's lock (also when this object is garbage collected, or the process ends)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def remove_outputs(self) -> None:
        """Delete what segcore wrote in this folder (`RUN_FILES`), and nothing else: a user's files in it stay, and
        no link is followed."""
        remove_written(self.path, RUN_FILES, ours=RUN_FILES)
        if self.checkpoints.is_dir() and not self.checkpoints.is_symlink():
            for ckpt in list_checkpoints(self.checkpoints):
                _tidy(ckpt)
        for name, inside in OURS.items():
            if inside is not None:
                _tidy(self.path / name)

    def prepare(self, cfg: PipelineConfig, *, resume: bool, overwrite: bool,
                registry: Registry | None = None) -> RunFolder:  # fmt: skip
        """Refuse to mix two runs in one folder: resuming needs the same pipeline, a new run an empty folder (or
        ``--overwrite``, never with ``--resume``). Only a folder with segcore's ``run.json`` is a run folder: segcore
        never deletes or overwrites files it did not write, ``--overwrite`` or not, nor anything behind a link. Locks
        the folder (a second process is refused, naming this one), then writes ``run.json`` and ``pipeline.toml``.
        With *registry*, a recorded identity is validated again by today's schema before it is compared, so that a
        run started before segcore gained a key resumes with that key at its default (`same_identity`)."""
        check_flags(resume=resume, overwrite=overwrite)
        out = self.path
        if out.exists() and not out.is_dir():
            raise ConfigError(f"run.out_dir {str(out)!r} is a file; point it at a folder")
        if not self.marker.exists():  # before the lock: no lock file lands in a folder that is not segcore's
            found = [name for name in OURS if (out / name).exists() or (out / name).is_symlink()]
            if found:
                raise ConfigError(
                    f"{out} is not a segcore run folder (it has no run.json) but holds {', '.join(found)}: segcore "
                    "never overwrites or deletes files it did not write, even with --overwrite. Choose another "
                    "run.out_dir (or --out-dir), or move those files away."
                )
        self.lock = self.lock or lock_folder(out, what="segcore run", hint=_LOCKED_HINT)
        mine = run_identity(cfg)
        if self.marker.exists():
            # a run folder from before the record (segcore.io.WRITTEN) was kept: its names are segcore's
            claim(out, ("run.json", *RUN_FILES), what="segcore run", ours=("run.json", *RUN_FILES),
                  hint="choose another run.out_dir (or --out-dir).")  # fmt: skip
            if not overwrite:
                if not same_identity(self.read_marker(), mine, registry=registry):
                    raise ConfigError(
                        f"{out} holds a different run (its run.json differs from this pipeline). Choose another "
                        "run.out_dir (or --out-dir), or pass --overwrite to delete it and start this one."
                    )
                if not resume and latest_checkpoint(self.checkpoints) is not None:
                    raise ConfigError(f"{out} already holds this run's checkpoints: pass --resume to continue it, or "
                                      "--overwrite to delete them and start again")  # fmt: skip
            for folder, legacy in ((out, ("best.",)), (self.checkpoints, (PREFIX,)), (self.plots, ())):
                remove_stale_temps(folder, legacy=legacy)  # what a killed run left (no other process writes: locked)
            if overwrite:
                self.remove_outputs()
        record(out, ("run.json", *RUN_FILES))
        write_text(self.marker, json.dumps({"identity": mine}, indent=1))
        write_text(self.pipeline, dump_pipeline(cfg))
        return self
