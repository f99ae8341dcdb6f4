"""A minimal training and evaluation loop for `segcore run` (the engine issue makes it complete)."""

from __future__ import annotations

__all__ = ["Criterion", "build_dataset", "evaluate", "resolve_device", "run_pipeline", "train"]

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .config import DatasetSpec, LossSpec, PipelineConfig
from .errors import ConfigError, SegcoreError
from .io import save_weights, write_text
from .metrics import ConfusionMatrix
from .model import SegModel, build_model
from .registry import Registry
from .stages import Dataset, DatasetMeta, Loss, ModelOutput


class Criterion(nn.Module):
    """The configured losses on the main logits, and (scaled by each head's weight) on every auxiliary head."""

    def __init__(self, specs: Iterable[LossSpec], registry: Registry, *, num_classes: int, ignore_index: int,
                 aux_weights: dict[str, float] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.specs = list(specs)
        if not self.specs:
            raise ConfigError("the pipeline has no [[loss]] table; add one, e.g. [[loss]] name = \"ce\"")
        self.losses = nn.ModuleList(
            registry.get(Loss, s.name).build(s.config, num_classes=num_classes, ignore_index=ignore_index) for s in self.specs
        )
        self.aux_weights = dict(aux_weights or {})

    def forward(self, output: ModelOutput, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        """-> total loss (scalar) and every named term (detached floats) for logging."""
        heads = {"": (output.logits, 1.0)} | {f"aux.{k}.": (v, self.aux_weights.get(k, 0.4)) for k, v in output.aux.items()}
        total = output.logits.new_zeros((), dtype=torch.float32)
        terms: dict[str, float] = {}
        for prefix, (logits, head_weight) in heads.items():
            for spec, loss in zip(self.specs, self.losses):
                value = loss(logits, target, output)
                parts = value if isinstance(value, dict) else {"": value}
                for part, v in parts.items():
                    terms[prefix + spec.name + (f".{part}" if part else "")] = float(v.detach())
                    total = total + head_weight * spec.weight * v
        return total, terms


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device = {name!r} but this machine has no CUDA device; use \"cpu\" or \"auto\"")
    return device


def build_dataset(spec: DatasetSpec, registry: Registry, split: str) -> Dataset:
    entry = registry.get(Dataset, spec.name)
    if split not in entry.cls.splits:
        raise ConfigError(f"dataset {spec.name!r} has no split {split!r}; its splits: {', '.join(entry.cls.splits)}")
    return entry.build(spec.config, split=split)


def dataset_meta(spec: DatasetSpec, registry: Registry) -> DatasetMeta:
    """The dataset's meta without building it when the class declares it (no file access)."""
    entry = registry.get(Dataset, spec.name)
    meta = getattr(entry.cls, "meta", None)
    return meta if isinstance(meta, DatasetMeta) else entry.build(spec.config, split=entry.cls.splits[0]).meta


def _batch_to(batch: dict[str, Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    image = batch["image"].to(device, non_blocking=True).float().div_(255)
    return image, batch["mask"].to(device, non_blocking=True).long()


def _augment(image: Tensor, mask: Tensor, crop: tuple[int, int] | None, hflip: bool, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random crop and horizontal flip of a whole batch (the data issue replaces this with kornia)."""
    if crop is not None:
        h, w = image.shape[-2:]
        ch, cw = min(crop[0], h), min(crop[1], w)
        top = int(torch.randint(0, h - ch + 1, (), generator=gen))
        left = int(torch.randint(0, w - cw + 1, (), generator=gen))
        image, mask = image[..., top : top + ch, left : left + cw], mask[..., top : top + ch, left : left + cw]
    if hflip:
        flip = (torch.rand(image.shape[0], generator=gen) < 0.5).to(image.device)
        image = torch.where(flip[:, None, None, None], image.flip(-1), image)
        mask = torch.where(flip[:, None, None], mask.flip(-1), mask)
    return image, mask


@torch.no_grad()
def evaluate(model: SegModel, loader: Iterable[dict[str, Tensor]], meta: DatasetMeta, device: torch.device,
             *, progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Whole-image inference over *loader*; metrics from the confusion matrix at the label resolution."""
    model.eval()
    cm = ConfusionMatrix(meta.num_classes, meta.ignore_index)
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
        image, mask = _batch_to(batch, device)
        logits = model(image).logits
        if logits.shape[-2:] != mask.shape[-2:]:
            logits = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
        cm.update(logits.argmax(1), mask)
    return cm.compute()


def format_metrics(metrics: dict[str, Any], meta: DatasetMeta) -> str:
    width = max(len(n) for n in meta.class_names)
    rows = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}"]
    for name, iou, acc in zip(meta.class_names, metrics["IoU"], metrics["Acc"]):
        rows.append(f"{name:<{width}}  {100 * iou:6.2f}  {100 * acc:6.2f}")
    rows.append(
        f"mIoU {100 * metrics['mIoU']:.2f}  mAcc {100 * metrics['mAcc']:.2f}  "
        f"aAcc {100 * metrics['aAcc']:.2f}  fwIoU {100 * metrics['fwIoU']:.2f}"
    )
    return "\n".join(rows)


def _lr_factor(cfg: PipelineConfig, step: int, total: int) -> float:
    t = min(step / max(total, 1), 1.0)
    if cfg.train.schedule == "poly":
        return (1 - t) ** cfg.train.poly_power
    if cfg.train.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    return 1.0


def train(cfg: PipelineConfig, registry: Registry, *, progress: bool = True) -> dict[str, Any]:
    """Train as the pipeline says, evaluate on the val split, write weights and metrics to ``run.out_dir``."""
    device = resolve_device(cfg.run.device)
    torch.manual_seed(cfg.train.seed)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    train_set = build_dataset(cfg.data.dataset, registry, cfg.data.train_split)
    val_set = build_dataset(cfg.data.dataset, registry, cfg.data.val_split)
    meta = train_set.meta
    num_classes = cfg.model.num_classes or meta.num_classes
    model = build_model(cfg.model, registry, num_classes=num_classes).to(device)
    criterion = Criterion(
        cfg.loss, registry, num_classes=num_classes, ignore_index=meta.ignore_index,
        aux_weights={k: v.weight for k, v in cfg.model.aux.items()},
    ).to(device)  # fmt: skip
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=cfg.data.batch_size, shuffle=True, drop_last=len(train_set) > cfg.data.batch_size,
        num_workers=cfg.data.num_workers, generator=torch.Generator().manual_seed(cfg.train.seed),
    )  # fmt: skip
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.train.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.train.lr, momentum=cfg.train.momentum, weight_decay=cfg.train.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    total = cfg.train.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(cfg, s, total))
    out_dir = Path(cfg.run.out_dir)
    log: list[dict[str, Any]] = []
    step, seen, start = 0, 0, time.perf_counter()
    bar = tqdm(total=total, desc="train", disable=not progress, dynamic_ncols=True)
    for epoch in range(cfg.train.epochs):
        model.train()
        for batch in loader:
            image, mask = _augment(*_batch_to(batch, device), cfg.data.crop_size, cfg.data.hflip, gen)
            loss, terms = criterion(model(image), mask)
            if not torch.isfinite(loss):
                raise SegcoreError(f"loss became {float(loss)} at step {step} (terms: {terms}); lower train.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            seen += image.shape[0]
            loss_value = float(loss.detach())
            rate = seen / (time.perf_counter() - start)
            if step % cfg.train.log_every == 0 or step == total:
                log.append({"step": step, "epoch": epoch, "loss": loss_value, **terms, "lr": sched.get_last_lr()[0]})
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{sched.get_last_lr()[0]:.2e}", img_s=f"{rate:.1f}")
            bar.update()
    bar.close()
    metrics = evaluate(model, val_loader, meta, device, progress=progress)
    save_weights(model, out_dir / "model.safetensors")
    write_text(out_dir / "metrics.json", json.dumps({"val": metrics, "train_log": log}, indent=1))
    return metrics


def load_weights(model: nn.Module, path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"run.checkpoint: no such file {str(path)!r}; point it at a model.safetensors written by a run")
    missing, unexpected = safetensors.torch.load_model(model, str(path), strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"{path}: weights do not fit this model (missing {len(missing)}: {missing[:3]}..., unexpected "
            f"{len(unexpected)}: {unexpected[:3]}...); was it trained with this pipeline's [model]?"
        )


def run_pipeline(cfg: PipelineConfig, registry: Registry, *, progress: bool = True) -> dict[str, Any]:
    """What ``segcore run`` does: the task named in ``[run]``."""
    if cfg.run.task == "train":
        return train(cfg, registry, progress=progress)
    device = resolve_device(cfg.run.device)
    val_set = build_dataset(cfg.data.dataset, registry, cfg.data.val_split)
    model = build_model(cfg.model, registry, num_classes=cfg.model.num_classes or val_set.meta.num_classes)
    if cfg.run.checkpoint is None:
        raise ConfigError("run.task = \"evaluate\" needs run.checkpoint = \"<path to model.safetensors>\"")
    load_weights(model, cfg.run.checkpoint)
    loader = torch.utils.data.DataLoader(val_set, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers)
    return evaluate(model.to(device), loader, val_set.meta, device, progress=progress)
