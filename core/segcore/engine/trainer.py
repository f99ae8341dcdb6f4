"""The trainer: budgets, frozen phases, accumulation, clipping, EMA, bf16, DDP, exact resume, safe stops."""

from __future__ import annotations

__all__ = ["Interrupted", "Trainer", "TrainingError", "resolve_device"]

import contextlib
import copy
import functools
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from segcore.data.augment import BatchAugment
from segcore.config import DatasetSpec, PipelineConfig, dump_pipeline, unstructure
from segcore.errors import ConfigError, DamagedFileError, SegcoreError
from segcore.io import remove_stale_temps, write_text
from segcore.data.datasets import build_split
from segcore.hub.sources import resolve_source
from segcore.model.build import SegModel, build_model, init_from, without_training_heads
from segcore.contracts.registry import Registry
from segcore.contracts.stages import Dataset, DatasetMeta, Loss, ModelOutput
from segcore.engine import report
from segcore.engine.criterion import Criterion
from segcore.engine.checkpoint import (PREFIX, latest_checkpoint, list_checkpoints, load_checkpoint, newest_intact_checkpoint,
                         prune_checkpoints, save_checkpoint)  # fmt: skip
from segcore.engine.dist import DistInfo, EpochSampler, any_rank, broadcast_buffers, init_distributed
from segcore.engine.evaluate import EvalResult, evaluate
from segcore.engine.inference import pad_collate
from segcore.engine.optim import LRSchedule, build_optimizer, param_groups
from segcore.engine.workarounds import training_workarounds  # PyTorch kernel bugs
from segcore.model.weights import save_weights


class TrainingError(SegcoreError):
    """Training cannot go on (a non-finite loss, ...)."""


class Interrupted(SegcoreError):
    """Ctrl-C: a checkpoint was written and the run can be resumed."""


# -- pieces -------------------------------------------------------------------------------------------------------


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"run.device = {name!r} but this machine has no CUDA device; use \"cpu\" or \"auto\"")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def _step_seed(seed: int, step: int, rank: int) -> int:
    """All randomness of one optimizer step (dropout, augmentation) derives from this, so a resumed run draws
    exactly what an uninterrupted one would."""
    return (seed * 1_000_003 + step * 1_009 + rank) % (2**63 - 1)


# -- the run folder -----------------------------------------------------------------------------------------------

_COSMETIC_TRAIN_KEYS = ("log_every", "tensorboard", "plots", "keep_last", "checkpoint_every", "checkpoint_every_iters")


def _identity(cfg: PipelineConfig) -> dict[str, Any]:
    """What makes two runs the same run (the [run] table and cosmetic train keys do not)."""
    raw = unstructure(cfg)
    raw.pop("run", None)
    raw.pop("predict", None)
    for key in _COSMETIC_TRAIN_KEYS:
        raw.get("train", {}).pop(key, None)
    return json.loads(json.dumps(raw))


_OURS = {  # what segcore writes in a run folder (a folder: the names it writes inside)
    "log.jsonl": None, "metrics.json": None, "model.safetensors": None, "pipeline.toml": None,
    "best": ("model.safetensors", "train_state.safetensors", "state.json"),
    "plots": ("curves.png", "iou.png", "confusion.png", "overlays.png"),
    "tensorboard": ("events.out.tfevents.*",),
    "checkpoints": (),  # ckpt-<step> folders, see _remove_outputs
}  # fmt: skip


def _read_marker(marker: Path) -> Any:
    try:
        return json.loads(marker.read_text(encoding="utf-8"))["identity"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise DamagedFileError(
            f"{marker}: damaged ({type(exc).__name__}: {exc}), so segcore cannot tell which run this folder holds. "
            "Pass --overwrite to start a new run here (only segcore's own files are replaced), or choose another "
            "run.out_dir (or --out-dir)."
        ) from None


def _remove_ours(folder: Path, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        for path in folder.glob(pattern):
            if path.is_file():
                path.unlink()
    remove_stale_temps(folder)
    with contextlib.suppress(OSError):  # kept when it holds anything else
        folder.rmdir()


def _remove_outputs(out: Path) -> None:
    """Delete what segcore wrote in run folder *out*, and nothing else (a user's files in it stay)."""
    for name, inside in _OURS.items():
        target = out / name
        if name == "checkpoints" and target.is_dir():
            for ckpt in list_checkpoints(target):
                _remove_ours(ckpt, _OURS["best"])
            _remove_ours(target, ())
        elif inside is None and target.is_file():
            target.unlink()
        elif inside is not None and target.is_dir():
            _remove_ours(target, inside)


def prepare_run_dir(cfg: PipelineConfig, *, resume: bool, overwrite: bool) -> Path:
    """Refuse to mix two runs in one folder: resuming needs the same pipeline, a new run an empty folder (or
    ``--overwrite``). Only a folder with segcore's ``run.json`` is a run folder: segcore never deletes or
    overwrites files it did not write, ``--overwrite`` or not."""
    out = Path(cfg.run.out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"run.out_dir {str(out)!r} is a file; point it at a folder")
    marker = out / "run.json"
    mine = _identity(cfg)
    if marker.exists():
        if not overwrite:
            if _read_marker(marker) != mine:
                raise ConfigError(
                    f"{out} holds a different run (its run.json differs from this pipeline). Choose another "
                    "run.out_dir (or --out-dir), or pass --overwrite to replace it."
                )
            if not resume and latest_checkpoint(out / "checkpoints") is not None:
                raise ConfigError(f"{out} already holds this run's checkpoints: pass --resume to continue it, or --overwrite to start again")
        for folder, legacy in ((out, ("best.",)), (out / "checkpoints", (PREFIX,)), (out / "plots", ())):
            remove_stale_temps(folder, legacy=legacy)  # what a killed run left
        if overwrite:
            _remove_outputs(out)
    else:
        found = [name for name in _OURS if (out / name).exists()]
        if found:
            raise ConfigError(
                f"{out} is not a segcore run folder (it has no run.json) but holds {', '.join(found)}: segcore never "
                "overwrites or deletes files it did not write, even with --overwrite. Choose another run.out_dir (or "
                "--out-dir), or move those files away."
            )
    out.mkdir(parents=True, exist_ok=True)
    write_text(marker, json.dumps({"identity": mine}, indent=1))
    write_text(out / "pipeline.toml", dump_pipeline(cfg))  # the resolved pipeline: `segcore run` reads it back
    return out


# -- the trainer --------------------------------------------------------------------------------------------------


class Trainer:
    """Everything ``segcore run`` does for ``task = "train"``; ``fit()`` returns the final validation result."""

    def __init__(self, cfg: PipelineConfig, registry: Registry, *, progress: bool = True, resume: bool = False,
                 overwrite: bool = False) -> None:  # fmt: skip
        self.cfg, t = cfg, cfg.train
        device_type = "cuda" if cfg.run.device.startswith("cuda") or (cfg.run.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.dist: DistInfo = init_distributed(device_type)
        self.device = resolve_device(cfg.run.device, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if t.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        torch.manual_seed(t.seed)
        self.progress = progress and self.dist.main

        self.train_set = build_split(cfg.data, registry, "train")
        self.val_set = build_split(cfg.data, registry, "val")
        self.meta = self.train_set.meta
        num_classes = cfg.model.num_classes or self.meta.num_classes
        model = build_model(cfg.model, registry, num_classes=num_classes)
        if cfg.model.init_from is not None and not resume:  # a resumed run has its own weights
            fresh = init_from(model, resolve_source(cfg.model.init_from, what="[model] init_from", registry=registry).weights())
            if self.progress and fresh:
                tqdm.write(f"init_from {cfg.model.init_from}: {len(fresh)} tensors start fresh ({', '.join(fresh[:4])}"
                           f"{', ...' if len(fresh) > 4 else ''})")
        if t.sync_bn and self.dist.world > 1:
            if self.device.type == "cpu":
                raise ConfigError("train.sync_bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); set it to false on the CPU")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.memory_format = torch.channels_last if t.channels_last else torch.preserve_format
        self.model: SegModel = model.to(self.device, memory_format=self.memory_format)
        training_workarounds(self.model, device=self.device, bf16=t.amp == "bf16", channels_last=t.channels_last)
        self.criterion = Criterion(cfg.loss, cfg.model.aux, registry, num_classes=num_classes,
                                   ignore_index=self.meta.ignore_index).to(self.device)
        self.augment = BatchAugment(cfg.data.augment, self.meta.ignore_index)

        self.per_rank = -(-len(self.train_set) // self.dist.world)  # samples each rank sees per epoch
        if self.per_rank < cfg.data.batch_size * t.grad_accum_steps:
            accum = f" x train.grad_accum_steps = {t.grad_accum_steps}" if t.grad_accum_steps > 1 else ""
            raise ConfigError(
                f"data.batch_size = {cfg.data.batch_size}{accum} is more than the {self.per_rank} training samples each "
                f"of the {self.dist.world} process(es) sees per epoch, so not one optimizer step fits in an epoch; "
                "lower data.batch_size (or train.grad_accum_steps)"
            )
        self.iters_per_epoch = self.per_rank // cfg.data.batch_size // t.grad_accum_steps
        self.total = t.iters or t.epochs * self.iters_per_epoch
        self.freeze_iters = t.freeze_backbone * (self.iters_per_epoch if t.epochs else 1)

        self.ema = None
        if t.ema_decay is not None:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=t.ema_decay)
            if self.model.frozen_backbone:  # one copy of weights that never change: the EMA shares the model's
                self.ema.module.backbone = self.model.backbone
        groups = param_groups(self.model, t)
        self.head_groups = [g for g in groups if not g["name"].startswith("backbone")]
        self.backbone_groups = [g for g in groups if g["name"].startswith("backbone")]
        self.frozen = self.freeze_iters > 0 and not self.model.frozen_backbone  # a phase; frozen = true is the run
        self.optimizer = build_optimizer(self.head_groups + ([] if self.frozen else self.backbone_groups), t)
        self._set_frozen(self.frozen)
        self.schedule = LRSchedule(t, self.total)

        self.out = prepare_run_dir(cfg, resume=resume, overwrite=overwrite) if self.dist.main else Path(cfg.run.out_dir)
        self.log = report.RunLog(self.out, enabled=self.dist.main, tensorboard=t.tensorboard)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best = -1.0
        self.elapsed = 0.0  # wall-clock seconds of fit() so far, across resumes (logged as elapsed_s)
        self._fit_started: float | None = None
        if resume:
            self._resume()
        self.ddp = self._wrap()
        self._stop = False

    # -- setup helpers ---------------------------------------------------------------------------------------------

    def _set_frozen(self, frozen: bool) -> None:
        """Frozen: no grads, BN statistics frozen (eval mode in training), no optimizer state. A backbone frozen for
        the whole run (``[model.backbone] frozen = true``) stays so."""
        if not self.model.frozen_backbone:
            self.model.backbone.requires_grad_(not frozen)
        self.frozen = frozen

    def _ema_state(self) -> nn.Module | None:
        """The EMA module as checkpoints store it: without a frozen backbone (the model's copy is the only one)."""
        if self.ema is None:
            return None
        if not self.model.frozen_backbone:
            return self.ema.module
        view = copy.copy(self.ema.module)
        view._modules = {k: v for k, v in self.ema.module._modules.items() if k != "backbone"}
        return view

    def _unfreeze(self) -> None:
        """Backbone trainable again, its parameter groups added to the optimizer (state starts from here)."""
        self._set_frozen(False)
        for g in self.backbone_groups:
            self.optimizer.add_param_group(dict(g, lr=self.cfg.train.lr * g["lr_scale"]))

    def _wrap(self) -> nn.Module:
        if self.dist.world == 1:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=self.cfg.train.find_unused_parameters)

    def _say(self, message: str) -> None:
        if self.dist.main:
            tqdm.write(message, file=sys.stderr)

    def _resume(self) -> None:
        """Continue from the newest intact checkpoint (saying which newer ones were skipped and why); with none
        yet, start from scratch."""
        folder = self.out / "checkpoints"
        ckpt, skipped = newest_intact_checkpoint(folder)
        for path, why in skipped:
            self._say(f"--resume: skipped {path.name}: {why}")
        if ckpt is None:
            if skipped:
                raise DamagedFileError(
                    f"--resume: every checkpoint in {folder} is damaged (see above); pass --overwrite instead of "
                    "--resume to start again"
                )
            self._say(f"--resume: {folder} holds no checkpoint yet; starting from scratch")
            return
        if ckpt.step >= self.freeze_iters and self.frozen:  # the optimizer must have the groups it saved
            self._unfreeze()
        state = load_checkpoint(ckpt, model=self.model, optimizer=self.optimizer, ema=self._ema_state())
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best = state.get("best", -1.0)
        self.elapsed = float(state.get("elapsed_s", 0.0))
        self.log.keep_until(self.step)  # the steps after the checkpoint are logged again
        self._say(f"resumed from {ckpt.folder} (step {self.step}, epoch {self.epoch})")

    def _loader(self, epoch: int, skip_batches: int) -> torch.utils.data.DataLoader:
        bs = self.cfg.data.batch_size
        # whole batches only (the epoch's optimizer steps times accumulation), unless the data is smaller than one
        limit = (self.iters_per_epoch * self.cfg.train.grad_accum_steps - skip_batches) * bs if self.per_rank >= bs else None
        sampler = EpochSampler(len(self.train_set), seed=self.cfg.train.seed, epoch=epoch, rank=self.dist.rank,
                               world=self.dist.world, skip=skip_batches * bs, limit=limit)  # fmt: skip
        return torch.utils.data.DataLoader(
            self.train_set, batch_size=bs, sampler=sampler, num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda", collate_fn=functools.partial(pad_collate, ignore_index=self.meta.ignore_index),
        )  # fmt: skip

    def _val_loader(self) -> torch.utils.data.DataLoader:
        sampler = EpochSampler(len(self.val_set), seed=0, epoch=0, rank=self.dist.rank, world=self.dist.world,
                               shuffle=False, pad=False)  # fmt: skip
        return torch.utils.data.DataLoader(
            self.val_set, batch_size=self.cfg.eval.batch_size, sampler=sampler, num_workers=self.cfg.data.num_workers,
            collate_fn=functools.partial(pad_collate, ignore_index=self.meta.ignore_index),
        )  # fmt: skip

    # -- the loop --------------------------------------------------------------------------------------------------

    def _train_step(self, micro_batches: list[dict[str, Tensor]]) -> tuple[float, dict[str, float]]:
        t = self.cfg.train
        torch.manual_seed(_step_seed(t.seed, self.step, self.dist.rank))
        self.ddp.train()
        if self.frozen:
            self.model.backbone.eval()
        total = 0.0
        terms_sum: dict[str, float] = {}
        for i, batch in enumerate(micro_batches):
            image = batch["image"].to(self.device, non_blocking=True).float().div_(255)
            mask = batch["mask"].to(self.device, non_blocking=True).long()
            image, mask = self.augment(image, mask)
            image = image.contiguous(memory_format=self.memory_format)
            sync = i == len(micro_batches) - 1 or self.dist.world == 1
            ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()
            with ctx:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=t.amp == "bf16"):
                    output = self.ddp(image)
                loss, terms = self.criterion(output, mask)
                if not torch.isfinite(loss):
                    self._fail(loss, terms)
                (loss / len(micro_batches)).backward()
            total += float(loss.detach()) / len(micro_batches)
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + float(v) / len(micro_batches)
        if t.clip_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], t.clip_grad_norm)
            terms_sum["grad_norm"] = float(norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)
        return total, terms_sum

    def _fail(self, loss: Tensor, terms: dict[str, Tensor]) -> None:
        last = latest_checkpoint(self.out / "checkpoints")
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        detail = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
        raise TrainingError(
            f"loss is {float(loss.detach())} at step {self.step} (epoch {self.epoch}; {detail}); training stopped and "
            f"{kept}. Lower train.lr, add train.warmup_iters or train.clip_grad_norm, or check the data."
        )

    def _save(self, folder: Path) -> Path:
        state = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "best": self.best,
                 "elapsed_s": self._elapsed()}
        return save_checkpoint(folder, model=self.model, optimizer=self.optimizer,
                               ema=self._ema_state(), state=state)  # fmt: skip

    def _checkpoint(self) -> Path | None:
        """Every rank calls it; rank 0 writes (the ranks' buffers made equal first)."""
        broadcast_buffers(self.model, self.ema.module if self.ema is not None else None)
        if not self.dist.main:
            return None
        folder = self._save(self.out / "checkpoints" / f"ckpt-{self.step:08d}")
        prune_checkpoints(self.out / "checkpoints", self.cfg.train.keep_last)
        return folder

    def _evaluate(self, *, final: bool = False) -> EvalResult:
        """Every rank calls it and scores its share of the validation set, all with rank 0's model."""
        model = self.ema.module if self.ema is not None else self.model
        broadcast_buffers(model)
        result = evaluate(
            model, self._val_loader(), self.meta, self.device, self.cfg.eval, amp=self.cfg.train.amp == "bf16",
            channels_last=self.cfg.train.channels_last, keep_samples=self.cfg.eval.plots if final else 0,
            progress=self.progress,
        )  # fmt: skip
        m = result.metrics
        self.log.write("eval", self.step, epoch=self.epoch, **m)
        if self.dist.main and m["mIoU"] > self.best:
            self.best = m["mIoU"]
            self._save(self.out / "best")
        return result

    def _elapsed(self) -> float:
        """Wall-clock seconds this run has trained (its evaluations included), summed over resumed sessions."""
        started = self._fit_started
        return self.elapsed + (time.perf_counter() - started if started is not None else 0.0)

    def _due(self, every: int, at_epoch_end: bool) -> bool:
        """Is an every-N-units event (eval, checkpoint) due after this step? (units: epochs or iters)"""
        if every <= 0:
            return False
        if self.cfg.train.epochs:
            return at_epoch_end and self.epoch % every == 0
        return self.step % every == 0

    def fit(self) -> EvalResult:
        t = self.cfg.train
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)  # every rank: a Ctrl-C reaches the whole process group
        bar = tqdm(total=self.total, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        start, seen = time.perf_counter(), 0
        self._fit_started = start
        try:
            while self.step < self.total:
                skip = self.batch_in_epoch * t.grad_accum_steps
                micro: list[dict[str, Tensor]] = []
                for batch in self._loader(self.epoch, skip):
                    micro.append(batch)
                    if len(micro) < t.grad_accum_steps:
                        continue
                    self.schedule.apply(self.optimizer, self.step)
                    loss, terms = self._train_step(micro)
                    seen += sum(len(b["image"]) for b in micro) * self.dist.world
                    micro = []
                    self.step += 1
                    self.batch_in_epoch += 1
                    at_epoch_end = self.batch_in_epoch >= self.iters_per_epoch
                    rate = seen / (time.perf_counter() - start)
                    lr = self.optimizer.param_groups[0]["lr"]
                    if self.step % t.log_every == 0 or self.step == self.total:
                        self.log.write("train", self.step, epoch=self.epoch, loss=loss, lr=lr, img_s=rate,
                                       elapsed_s=round(self._elapsed(), 1), **terms)  # fmt: skip
                    shown = {k.removeprefix("loss."): f"{v:.3f}" for k, v in terms.items() if k.startswith("loss.")}
                    bar.set_postfix(loss=f"{loss:.3f}", **(shown if len(shown) > 1 else {}), lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
                    bar.update()
                    if self.frozen and self.step >= self.freeze_iters:
                        self._unfreeze()
                        self.ddp = self._wrap()  # DDP must see the parameters that now need gradients
                    if at_epoch_end:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                    ended = self.step >= self.total
                    if not ended and self._due(t.eval_every, at_epoch_end):
                        self._evaluate()
                    if not ended and (self._due(t.checkpoint_every, at_epoch_end) or
                                      (t.checkpoint_every_iters and self.step % t.checkpoint_every_iters == 0)):  # fmt: skip
                        self._checkpoint()
                    if any_rank(self._stop, self.device):  # every rank stops after the same step
                        folder = self._checkpoint()
                        raise Interrupted(
                            f"interrupted at step {self.step}; checkpoint {folder}. Continue with: "
                            f"segcore run <pipeline> --resume"
                        )
                    if ended or at_epoch_end:
                        break
        finally:
            bar.close()
            signal.signal(signal.SIGINT, previous)
        self._checkpoint()  # before the final evaluation: whatever happens there, the trained weights are kept
        result = self._evaluate(final=True)
        if self.dist.main:
            self._finish(result)
        self.log.close()
        return result

    def _on_sigint(self, signum: int, frame: Any) -> None:
        # torchrun forwards the terminal's Ctrl-C a moment after the terminal itself: one press, two signals
        if self._stop and (self.dist.world == 1 or time.monotonic() - self._stop > 2.0):  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        if not self._stop:
            self._stop = time.monotonic()
            if self.dist.main:
                tqdm.write("Ctrl-C: finishing this step and writing a checkpoint (Ctrl-C again to abort without one)",
                           file=sys.stderr)  # fmt: skip

    def _finish(self, result: EvalResult) -> None:
        """The inference weights (no auxiliary heads), metrics and plots."""
        model = self.ema.module if self.ema is not None else self.model
        save_weights(without_training_heads(model), self.out / "model.safetensors")
        write_text(self.out / "metrics.json", json.dumps({"step": self.step, "val": result.metrics}, indent=1))
        if self.cfg.train.plots:
            plots = self.out / "plots"
            report.plot_curves(self.log.read(), plots / "curves.png")
            report.plot_iou(self.meta.class_names, result.metrics["IoU"], result.metrics["mIoU"], plots / "iou.png")
            report.plot_confusion(self.meta.class_names, result.matrix, plots / "confusion.png")
            if result.samples:
                report.plot_overlays(result.samples, self.meta.palette, self.meta.ignore_index, plots / "overlays.png")
