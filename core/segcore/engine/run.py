"""What ``segcore run`` does: the task named in the pipeline's ``[run]`` table."""

from __future__ import annotations

__all__ = ["load_model_weights", "run_pipeline"]

import functools
from pathlib import Path

import torch

from segcore.model.check import check_pipeline
from segcore.config.schema import PipelineConfig
from segcore.errors import ConfigError
from segcore.engine.inference import fast_model_for
from segcore.hub.folder import load_for_pipeline
from segcore.hub.sources import resolve_source
from segcore.contracts.stages import DatasetMeta
from segcore.model.build import SegModel, build_model
from segcore.contracts.registry import Registry
from segcore.model.weights import load_weights
from segcore.engine.dist import init_distributed
from segcore.engine.evaluate import EvalResult, evaluate
from segcore.engine.inference import pad_collate
from segcore.engine.predict import predict_folder
from segcore.data.datasets import build_split, dataset_meta
from segcore.engine.trainer import Trainer, resolve_device


def load_model_weights(model: SegModel, source: str | Path, *, what: str = "run.checkpoint",
                       registry: Registry | None = None) -> None:  # fmt: skip
    """Weights from any source `segcore.hub.resolve_source` takes (a run folder, a model folder, a ``.safetensors``
    file, a pretrained name, a Hub repo id) into *model*, by tensor name; auxiliary heads may be absent."""
    path = resolve_source(source, what=what, registry=registry).weights()
    # a file without segcore's integrity record (written elsewhere) loads with a warning
    load_weights(model, path, ignore_missing=("aux.",), require_record=False,
                 hint="Was it trained with this pipeline's [model]?")  # fmt: skip


def _trained_model(cfg: PipelineConfig, registry: Registry, meta: DatasetMeta, device: torch.device) -> SegModel:
    if cfg.run.checkpoint is None:
        raise ConfigError(f'run.task = "{cfg.run.task}" needs run.checkpoint = "<run folder, model folder, '
                          '.safetensors file, pretrained name or Hub repo id>"')  # fmt: skip
    source = resolve_source(cfg.run.checkpoint, what="run.checkpoint", registry=registry)
    if source.has_config:  # a model folder, a zoo name, a Hub repo: its config.json must be the pipeline's [model]
        return load_for_pipeline(cfg.model, source, registry, meta).to(device).eval()
    model = build_model(cfg.model, registry, num_classes=cfg.model.num_classes or meta.num_classes)
    load_weights(model, source.weights(), ignore_missing=("aux.",), require_record=False,
                 hint="Was it trained with this pipeline's [model]?")  # fmt: skip
    return model.to(device).eval()


def _inference_model(model: SegModel, cfg: PipelineConfig, registry: Registry, device: torch.device) -> torch.nn.Module:
    """What evaluate and predict run: the fast path (`segcore.inference`) unless ``[eval] fast = false``; int8 is
    calibrated on the first ``[eval] calibration_images`` training images."""
    calibration = []
    if cfg.eval.fast and cfg.eval.int8:
        train = build_split(cfg.data, registry, "train")
        calibration = [train[i]["image"] for i in range(min(cfg.eval.calibration_images, len(train)))]
    return fast_model_for(model, cfg.eval, device=device, calibration=calibration)


def run_pipeline(cfg: PipelineConfig, registry: Registry, *, progress: bool = True, resume: bool = False,
                 overwrite: bool = False) -> EvalResult | list[Path]:  # fmt: skip
    check_pipeline(cfg, registry)  # every contract `segcore check` verifies (meta device), before any work
    if cfg.run.task == "train":
        trainer = Trainer.from_config(cfg, registry, progress=progress, resume=resume, overwrite=overwrite)
        try:
            return trainer.fit()
        finally:  # the folder is free when the run ends, not when the trainer is collected (a sweep's runs, say)
            trainer.close()
    info = init_distributed("cpu")
    device = resolve_device(cfg.run.device, info.local_rank)
    meta = dataset_meta(cfg.data.dataset, registry)
    model = _inference_model(_trained_model(cfg, registry, meta, device), cfg, registry, device)
    if cfg.run.task == "predict":
        return predict_folder(model, cfg.predict, meta, eval_cfg=cfg.eval, progress=progress)
    val_set = build_split(cfg.data, registry, "val")
    loader = torch.utils.data.DataLoader(
        val_set, batch_size=cfg.eval.batch_size, num_workers=cfg.data.num_workers,
        collate_fn=functools.partial(pad_collate, ignore_index=meta.ignore_index),
    )  # fmt: skip
    return evaluate(model, loader, meta, device, cfg.eval, progress=progress)
