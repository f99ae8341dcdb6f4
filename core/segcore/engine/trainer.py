"""The trainer: budgets, frozen phases, accumulation, clipping, EMA, bf16, DDP, exact resume, safe stops."""

from __future__ import annotations

__all__ = ["Interrupted", "Trainer", "TrainingError", "deterministic_algorithms", "resolve_device"]

import contextlib
import copy
import functools
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from segcore.config import PipelineConfig
from segcore.contracts.registry import Registry
from segcore.contracts.stages import Dataset, DatasetMeta
from segcore.data.augment import BatchAugment
from segcore.data.datasets import build_split, split_names
from segcore.data.images import to_unit
from segcore.engine import report
from segcore.engine.clock import StepClock
from segcore.engine.checkpoint import (latest_checkpoint, load_checkpoint, newest_intact_checkpoint, prune_checkpoints,
                                       save_checkpoint)  # fmt: skip
from segcore.engine.criterion import Criterion
from segcore.engine.dist import DistInfo, EpochSampler, any_rank, broadcast_buffers, init_distributed
from segcore.engine.evaluate import EVAL_HINT, EvalResult, evaluate
from segcore.engine.inference import pad_collate
from segcore.engine.optim import LRSchedule, build_optimizer, param_groups
from segcore.engine.rundir import RunFolder
from segcore.engine.workarounds import training_workarounds  # PyTorch kernel bugs
from segcore.inference.cpu import bf16_supported
from segcore.inference.dilated import fast_dilated_convs
from segcore.inference.resize import fast_resizes
from segcore.errors import ConfigError, DamagedFileError, SegcoreError
from segcore.io import cpuinfo, usable_cores, write_text
from segcore.hub.sources import resolve_source
from segcore.model.build import SegModel, build_model, init_from, without_training_heads
from segcore.model.memory import check_forward_fits, check_inference_fits
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


# -- the trainer --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` and no cuDNN autotuning inside the block; the previous settings
    after it (nothing changes when *enabled* is false)."""
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read once by CUDA: stays, harmless without it
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = benchmark


def _check_channels(dataset: Dataset, cfg: PipelineConfig) -> None:
    """The data's images have the model's channel count (one sample read), else a ConfigError naming both keys."""
    if not len(dataset):
        return
    have = dataset[0]["image"].shape[0]
    if have != cfg.model.in_channels:
        raise ConfigError(f"[data.dataset] ({cfg.data.dataset.name!r}) gives {have}-channel images but [model] "
                          f"in_channels = {cfg.model.in_channels}: set [model] in_channels = {have} (with {have} values "
                          "in [model] mean and std), or make the dataset read that many (folder: channels)")  # fmt: skip


def trains_in_bf16(cfg: PipelineConfig, device: torch.device | str) -> bool:
    """Whether the run autocasts to bf16 on *device*: ``train.amp = "bf16"`` always, ``"auto"`` where the device
    computes bf16 natively (`bf16_supported`: CUDA with bf16, a CPU with AVX512-BF16 or AMX), ``"none"`` never."""
    return cfg.train.amp == "bf16" or (cfg.train.amp == "auto" and bf16_supported(device))


def _check_sizes_fit(cfg: PipelineConfig, model: nn.Module, train_set: Dataset, device: torch.device) -> None:
    """Refuse, before the first step allocates them, a training batch (``data.batch_size`` at ``[data.augment]
    crop_size``, else at the first image's size) or a validation batch at ``[eval] resize`` whose tensors cannot fit
    in the memory *device* has (`segcore.model.memory`)."""
    channels = int(getattr(model, "in_channels", 3))
    size = cfg.data.augment.crop_size or (tuple(train_set[0]["image"].shape[-2:]) if len(train_set) else None)
    if size is not None:
        check_forward_fits(model, (cfg.data.batch_size, channels, *size), device, train=True,
                           dtype=torch.bfloat16 if trains_in_bf16(cfg, device) else None,
                           what="a training step" + (" at [data.augment] crop_size" if cfg.data.augment.crop_size else ""),
                           hint="Lower data.batch_size (train.grad_accum_steps keeps the effective batch) or "
                                "[data.augment] crop_size, set train.amp = \"bf16\", or train on a device with more memory.")  # fmt: skip
    if cfg.eval.resize is not None:
        check_inference_fits(model, (cfg.eval.batch_size, channels, *cfg.eval.resize), cfg.eval, device,
                             what="validation at [eval] resize", hint=EVAL_HINT,
                             dtype=torch.bfloat16 if trains_in_bf16(cfg, device) else None)  # fmt: skip


def _iters_per_epoch(cfg: PipelineConfig, num_train: int, world: int) -> tuple[int, int]:
    """(samples each rank sees per epoch, optimizer steps per epoch); a ConfigError when not one step fits."""
    t = cfg.train
    per_rank = -(-num_train // world)
    if per_rank < cfg.data.batch_size * t.grad_accum_steps:
        accum = f" x train.grad_accum_steps = {t.grad_accum_steps}" if t.grad_accum_steps > 1 else ""
        raise ConfigError(
            f"data.batch_size = {cfg.data.batch_size}{accum} is more than the {per_rank} training samples each "
            f"of the {world} process(es) sees per epoch, so not one optimizer step fits in an epoch; "
            "lower data.batch_size (or train.grad_accum_steps)"
        )
    return per_rank, per_rank // cfg.data.batch_size // t.grad_accum_steps


class Trainer:
    """Everything ``segcore run`` does for ``task = "train"``; ``fit()`` returns the final validation result.

    `Trainer.from_config` builds a run from a pipeline (process group, device, seed, datasets, model, run folder,
    resume); the constructor takes those parts built, and touches neither global state nor the run folder beyond
    opening its log, so the loop runs on any model and datasets."""

    @classmethod
    def from_config(cls, cfg: PipelineConfig, registry: Registry, *, progress: bool = True, resume: bool = False,
                    overwrite: bool = False) -> Trainer:  # fmt: skip
        """The trainer of pipeline *cfg*: joins the process group (under torchrun), picks the device, seeds torch
        with ``train.seed``, builds the datasets, model (``init_from``, SyncBN) and losses, prepares the run folder
        (refusing to mix two runs) and, with *resume*, loads its newest intact checkpoint."""
        t = cfg.train
        device_type = "cuda" if cfg.run.device.startswith("cuda") or (cfg.run.device == "auto" and torch.cuda.is_available()) else "cpu"
        dist = init_distributed(device_type)
        device = resolve_device(cfg.run.device, dist.local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.manual_seed(t.seed)
        progress = progress and dist.main

        train_set = build_split(cfg.data, registry, "train")
        val_set = build_split(cfg.data, registry, "val")
        shared = set(split_names(cfg.data.train_split)) & set(split_names(cfg.data.val_split))
        if shared and cfg.data.random_split is None and progress:
            tqdm.write(f"note: split(s) {', '.join(sorted(shared))} are trained on and evaluated: the val mIoU of this "
                       "run is not a held-out figure (a final model on every labelled split, as intended?)", file=sys.stderr)  # fmt: skip
        meta = train_set.meta
        _check_channels(train_set, cfg)
        num_classes = cfg.model.num_classes or meta.num_classes
        model = build_model(cfg.model, registry, num_classes=num_classes)
        if cfg.model.init_from is not None and not resume:  # a resumed run has its own weights
            fresh = init_from(model, resolve_source(cfg.model.init_from, what="[model] init_from", registry=registry).weights())
            if progress and fresh:
                tqdm.write(f"init_from {cfg.model.init_from}: {len(fresh)} tensors start fresh ({', '.join(fresh[:4])}"
                           f"{', ...' if len(fresh) > 4 else ''})")
        if t.sync_bn and dist.world > 1:
            if device.type == "cpu":
                raise ConfigError("train.sync_bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); set it to false on the CPU")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        memory_format = torch.channels_last if t.channels_last else torch.preserve_format
        model = model.to(device, memory_format=memory_format)
        if progress and t.amp != "none":
            native = bf16_supported(device)
            if t.amp == "auto":
                tqdm.write(f"train.amp = \"auto\": {'bf16 autocast' if native else 'fp32 (no native bf16)'} on {device}",
                           file=sys.stderr)  # fmt: skip
            elif not native:
                tqdm.write(f"note: train.amp = \"bf16\" on {device}, which has no native bf16 (a CPU without AVX512-BF16 or AMX): "
                           "PyTorch emulates it, several times slower than fp32. Set train.amp = \"auto\" (bf16 where the "
                           "hardware has it) or \"none\"", file=sys.stderr)  # fmt: skip
        criterion = Criterion(cfg.loss, cfg.model.aux, registry, num_classes=num_classes,
                              ignore_index=meta.ignore_index)  # fmt: skip
        _iters_per_epoch(cfg, len(train_set), dist.world)  # before anything is written
        _check_sizes_fit(cfg, model, train_set, device)

        run = RunFolder(cfg.run.out_dir)
        if dist.main:
            run.prepare(cfg, resume=resume, overwrite=overwrite, registry=registry)
        try:
            trainer = cls(cfg, model=model, criterion=criterion, train_set=train_set, val_set=val_set, run=run,
                          device=device, dist=dist, progress=progress)  # fmt: skip
            if resume:
                trainer.resume()
        except BaseException:  # a bad start_iter, a damaged checkpoint: the folder is free again, not at collection
            run.release()
            raise
        return trainer

    def close(self) -> None:
        """Close the run's log (its TensorBoard writer) and let go of the run folder's lock: the folder is another
        process's to take from here on. `segcore.engine.run.run_pipeline` calls it when `fit` ends, however it
        ends; again is a no-op."""
        self.log.close()
        self.run.release()

    def __init__(self, cfg: PipelineConfig, *, model: SegModel, criterion: nn.Module, train_set: Dataset,
                 val_set: Dataset, run: RunFolder | str | Path, device: torch.device | str = "cpu",
                 dist: DistInfo | None = None, progress: bool = True) -> None:  # fmt: skip
        """*run* must be prepared (`RunFolder.prepare`) on the main process; the model and criterion are moved to
        *device*; *dist* is one process when not given."""
        self.cfg, t = cfg, cfg.train
        self.dist = dist if dist is not None else DistInfo()
        self.device = torch.device(device)
        self.progress = progress and self.dist.main
        self.train_set, self.val_set = train_set, val_set
        self.meta: DatasetMeta = train_set.meta
        self.memory_format = torch.channels_last if t.channels_last else torch.preserve_format
        self.bf16 = trains_in_bf16(cfg, self.device)  # autocast in training and its evaluations (train.amp)
        self.model: SegModel = model.to(self.device, memory_format=self.memory_format)
        # before the EMA copies the model; the sub-grid convolutions before the work-arounds, which know them
        if t.fast_dilated:
            fast_dilated_convs(self.model)
        if t.fast_resize:
            fast_resizes(self.model)
        training_workarounds(self.model, device=self.device, bf16=self.bf16, channels_last=t.channels_last)
        self.criterion = criterion.to(self.device)
        self.augment = BatchAugment(cfg.data.augment, self.meta.ignore_index)

        self.per_rank, self.iters_per_epoch = _iters_per_epoch(cfg, len(train_set), self.dist.world)
        self.total = t.iters or t.epochs * self.iters_per_epoch
        self.freeze_iters = t.freeze_backbone * (self.iters_per_epoch if t.epochs else 1)
        for i, spec in enumerate(cfg.loss):
            if spec.start_iter >= self.total:
                raise ConfigError(f"loss[{i}].start_iter = {spec.start_iter}: the run trains {self.total} steps, so the "
                                  f"{spec.name!r} loss would never count; set it below {self.total}, or remove it")

        self.ema = None
        if t.ema_decay is not None:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=t.ema_decay, use_warmup=t.ema_warmup)
            if self.model.frozen_backbone:  # one copy of weights that never change: the EMA shares the model's
                self.ema.module.backbone = self.model.backbone
        groups = param_groups(self.model, t)
        self.head_groups = [g for g in groups if not g["name"].startswith("backbone")]
        self.backbone_groups = [g for g in groups if g["name"].startswith("backbone")]
        self.frozen = self.freeze_iters > 0 and not self.model.frozen_backbone  # a phase; frozen = true is the run
        self.optimizer = build_optimizer(self.head_groups + ([] if self.frozen else self.backbone_groups), t)
        self._set_frozen(self.frozen)
        self.schedule = LRSchedule(t, self.total)

        self.run = run if isinstance(run, RunFolder) else RunFolder(run)
        self.log = report.RunLog(self.run.path, enabled=self.dist.main, tensorboard=t.tensorboard)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best = -1.0
        self.elapsed = 0.0  # wall-clock seconds of fit() so far, across resumes (logged as elapsed_s)
        self._fit_started: float | None = None
        self._stop: float | None = None  # when the first Ctrl-C came (time.monotonic())
        self.ddp = self._wrap()
        self.clock = StepClock(self.device)  # off; `segcore bench --trainer` turns it on

    @property
    def out(self) -> Path:
        """The run folder."""
        return self.run.path

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
        self.ddp = self._wrap()  # DDP must see the parameters that now need gradients

    def _wrap(self) -> nn.Module:
        """The module the training step calls: the model, in DDP across processes, compiled with ``train.compile``."""
        module: nn.Module = self.model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=self.cfg.train.find_unused_parameters)
        return torch.compile(module) if self.cfg.train.compile else module

    def _say(self, message: str) -> None:
        if self.dist.main:
            tqdm.write(message, file=sys.stderr)

    def resume(self) -> None:
        """Continue from the newest intact checkpoint (saying which newer ones were skipped and why); with none
        yet, start from scratch."""
        folder = self.run.checkpoints
        ckpt, skipped = newest_intact_checkpoint(folder)
        for path, why in skipped:
            self._say(f"--resume: skipped {path.name}: {why}")
        if ckpt is None:
            if skipped:
                raise DamagedFileError(
                    f"--resume: every checkpoint in {folder} is damaged (see above); pass --overwrite instead of "
                    "--resume to start again (it deletes them and the run's weights, logs and plots; files segcore "
                    "did not write stay)"
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
            image = to_unit(batch["image"].to(self.device, non_blocking=True), self.model.max_value)
            mask = batch["mask"].to(self.device, non_blocking=True).long()
            image, mask = self.augment(image, mask)
            image = image.contiguous(memory_format=self.memory_format)
            self.clock.lap("augment")
            sync = i == len(micro_batches) - 1 or self.dist.world == 1
            ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()
            with ctx:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    output = self.ddp(image)
                loss, terms = self.criterion(output, mask, step=self.step)
                if not torch.isfinite(loss):
                    self._fail(loss, terms)
                self.clock.lap("forward")
                (loss / len(micro_batches)).backward()
            total += float(loss.detach()) / len(micro_batches)
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + float(v) / len(micro_batches)
            self.clock.lap("backward")
        if t.clip_grad_norm is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            terms_sum["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, t.clip_grad_norm))  # before clipping
        elif (self.step + 1) % t.log_every == 0 or self.step + 1 == self.total:  # logged: a step that goes astray shows
            grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            terms_sum["grad_norm"] = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0  # clip_grad_norm_'s
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)
        self.clock.lap("optimizer")
        return total, terms_sum

    def _fail(self, loss: Tensor, terms: dict[str, Tensor]) -> None:
        last = latest_checkpoint(self.run.checkpoints)
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
        folder = self._save(self.run.checkpoint(self.step))
        prune_checkpoints(self.run.checkpoints, self.cfg.train.keep_last)
        return folder

    def _evaluate(self, *, final: bool = False) -> EvalResult:
        """Every rank calls it and scores its share of the validation set, all with rank 0's model."""
        model = self.ema.module if self.ema is not None else self.model
        broadcast_buffers(model)
        result = evaluate(
            model, self._val_loader(), self.meta, self.device, self.cfg.eval, amp=self.bf16,
            channels_last=self.cfg.train.channels_last, keep_samples=self.cfg.eval.plots if final else 0,
            progress=self.progress,
        )  # fmt: skip
        m = result.metrics
        self.log.write("eval", self.step, epoch=self.epoch, **m)
        if self.dist.main and m["mIoU"] > self.best:
            self.best = m["mIoU"]
            self._save(self.run.best)
        return result

    def _elapsed(self) -> float:
        """Wall-clock seconds this run has trained (its evaluations included), summed over resumed sessions."""
        started = self._fit_started
        return self.elapsed + (time.perf_counter() - started if started is not None else 0.0)

    def _due(self, every: int | None, at_epoch_end: bool) -> bool:
        """Is an every-N-units event (eval, checkpoint) due after this step? (units: epochs or iters; None: at
        every epoch's end, whatever the budget)"""
        if every is None:
            return at_epoch_end
        if every <= 0:
            return False
        if self.cfg.train.epochs:
            return at_epoch_end and self.epoch % every == 0
        return self.step % every == 0

    def fit(self) -> EvalResult:
        """Train to the budget, checkpoint, evaluate; with ``train.deterministic``, in deterministic algorithms
        (`deterministic_algorithms`: the previous setting is back afterwards)."""
        with deterministic_algorithms(self.cfg.train.deterministic):
            return self._fit()

    def _fit(self) -> EvalResult:
        t = self.cfg.train
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)  # every rank: a Ctrl-C reaches the whole process group
        bar = tqdm(total=self.total, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        start, seen = time.perf_counter(), 0
        self._fit_started = start
        # what this session trains on (a run resumed elsewhere logs another): with train.amp = "auto" the precision
        # is the machine's, and records of the run (a sweep's evidence, the card) say which each session used
        if self.step < self.total:
            gpu = {"gpu": torch.cuda.get_device_name(self.device)} if self.device.type == "cuda" else {}
            self.log.write("start", self.step, scalars=False, precision="bf16" if self.bf16 else "fp32",
                           device=str(self.device), cpu=cpuinfo("model name") or platform.machine(),
                           cores=usable_cores(), processes=self.dist.world, **gpu)  # fmt: skip
        self.clock.start()
        try:
            while self.step < self.total:
                skip = self.batch_in_epoch * t.grad_accum_steps
                micro: list[dict[str, Tensor]] = []
                for batch in self._loader(self.epoch, skip):
                    self.clock.lap("data")
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
                    if at_epoch_end:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                    ended = self.step >= self.total
                    if not ended and self._due(t.eval_every, at_epoch_end):
                        miou = self._evaluate().metrics["mIoU"]
                        if t.stop_at_miou is not None and miou >= t.stop_at_miou:  # every rank sees the same metrics
                            self._say(f"val mIoU {100 * miou:.2f} >= train.stop_at_miou {100 * t.stop_at_miou:.2f} at "
                                      f"step {self.step}: training stops")  # fmt: skip
                            self.total, ended = self.step, True
                    if not ended and (self._due(t.checkpoint_every, at_epoch_end) or
                                      (t.checkpoint_every_iters and self.step % t.checkpoint_every_iters == 0)):  # fmt: skip
                        self._checkpoint()
                    if any_rank(self._stop is not None, self.device):  # every rank stops after the same step
                        folder = self._checkpoint()
                        raise Interrupted(
                            f"interrupted at step {self.step}; checkpoint {folder}. Continue with: "
                            f"segcore run <pipeline> --resume"
                        )
                    self.clock.step_done()
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
        if self._stop is not None and (self.dist.world == 1 or time.monotonic() - self._stop > 2.0):  # a second Ctrl-C
            raise KeyboardInterrupt
        if self._stop is None:
            self._stop = time.monotonic()
            if self.dist.main:
                tqdm.write("Ctrl-C: finishing this step and writing a checkpoint (Ctrl-C again to abort without one)",
                           file=sys.stderr)  # fmt: skip

    def _finish(self, result: EvalResult) -> None:
        """The inference weights (no auxiliary heads), metrics and plots."""
        model = self.ema.module if self.ema is not None else self.model
        save_weights(without_training_heads(model), self.run.weights)
        write_text(self.run.metrics, json.dumps({"step": self.step, "val": result.metrics}, indent=1))
        if self.cfg.train.plots:
            plots = self.run.plots
            report.plot_curves(self.log.read(), plots / "curves.png")
            report.plot_iou(self.meta.class_names, result.metrics["IoU"], result.metrics["mIoU"], plots / "iou.png")
            report.plot_confusion(self.meta.class_names, result.matrix, plots / "confusion.png")
            if result.samples:
                report.plot_overlays(result.samples, self.meta.palette, self.meta.ignore_index, plots / "overlays.png")
