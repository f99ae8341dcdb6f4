"""A finished run -> an evaluated model folder with its card (``segcore hub save``).

Above the engine: the stored weights are evaluated exactly as ``segcore run`` with task = "evaluate" does
(`segcore.engine.run.run_pipeline`), and the run's log gives the card its curve; the folder itself is written by
the hub (`segcore.hub.folder`).
"""

from __future__ import annotations

__all__ = ["manifest_lines", "save_run"]

import datetime
import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from segcore.config import PipelineConfig, load_pipeline, unstructure
from segcore.contracts.plugins import load_registry
from segcore.contracts.registry import Registry
from segcore.data.datasets import build_split, dataset_meta
from segcore.engine.report import RunLog
from segcore.engine.run import run_pipeline
from segcore.errors import ConfigError
from segcore.hub.folder import CONFIG, WEIGHTS, _write_folder
from segcore.hub.manifest import NAME, zoo, zoo_dir
from segcore.hub.sources import file_sha256, resolve_source
from segcore.io import cpuinfo
from segcore.model.build import build_model
from segcore.model.weights import load_weights


def _training(cfg: PipelineConfig, records: list[dict[str, Any]], *, hardware: str | None, train_hours: float | None,
              cores: int | None, step: int | None) -> dict[str, Any]:  # fmt: skip
    """How the run trained: the recipe's settings, the time it took, the curve (eval and loss records)."""
    t, d = cfg.train, cfg.data
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    elapsed = [r["elapsed_s"] for r in train if isinstance(r.get("elapsed_s"), (int, float))]
    if train_hours is not None:
        hours, how = train_hours, "as given to segcore hub save"
    elif elapsed:
        hours, how = max(elapsed) / 3600, "logged wall-clock time of the run (training and its evaluations)"
    elif train and train[-1].get("img_s"):
        images = train[-1]["step"] * d.batch_size * t.grad_accum_steps
        hours, how = images / train[-1]["img_s"] / 3600, "estimated from the logged throughput (training steps only)"
    else:
        hours, how = None, "unknown"
    cores = cores or os.cpu_count() or 1
    backbone = cfg.model.backbone.config
    start = "from scratch"
    if getattr(backbone, "pretrained", False) or getattr(backbone, "weights", None):
        start = "ImageNet-pretrained backbone"
    if cfg.model.init_from:
        start = f"initialised from {cfg.model.init_from}"
    return {
        "steps": step if step is not None else (train[-1]["step"] if train else None),
        "budget": f"{t.iters} iterations" if t.iters else f"{t.epochs} epochs",
        "optimizer": t.optimizer, "lr": t.lr, "weight_decay": t.weight_decay, "schedule": t.schedule,
        "warmup_iters": t.warmup_iters, "batch_size": d.batch_size * t.grad_accum_steps, "amp": t.amp, "seed": t.seed,
        "augment": unstructure(d.augment), "losses": [unstructure(loss) for loss in cfg.loss],
        "aux_heads": sorted(cfg.model.aux), "start": start, "train_split": d.train_split,
        "hardware": hardware or f"{cores} CPU cores ({cpuinfo('model name') or platform.processor() or platform.machine()})", "cores": cores,
        "hours": None if hours is None else round(hours, 3),
        "cpu_hours": None if hours is None else round(hours * cores, 3), "time_source": how,
        "curve": [{"step": r["step"], "mIoU": r.get("mIoU")} for r in evals],
        "loss": [{"step": r["step"], "loss": r.get("loss")} for r in train],
    }


def _eval_protocol(cfg: PipelineConfig, count: int) -> str:
    e = cfg.eval
    how = "whole images" if e.mode == "whole" else f"sliding {e.window[0]}x{e.window[1]} windows, stride {e.stride[0]}x{e.stride[1]}"
    tta = f", scales {list(e.scales)}" if tuple(e.scales) != (1.0,) else ""
    return (f"{cfg.data.val_split} split ({count} images), {how}{tta}{', + flip' if e.flip else ''}, float32 compute, "
            "scored at each label's resolution, the ignore id excluded; mIoU over the classes present in the labels "
            "(`segcore run` with task = \"evaluate\")")  # fmt: skip


def save_run(run_dir: str | Path, out: str | Path, *, name: str | None = None, dtype: str = "float32",
             evaluate: bool = True, hardware: str | None = None, train_hours: float | None = None,
             cores: int | None = None, registry: Registry | None = None, progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """A finished run folder -> model folder *out* with its card (``segcore hub save``); returns its config.json.

    With *evaluate* the stored weights are evaluated exactly as ``segcore run`` with task = "evaluate" does (the
    run's [data] and [eval]; float32 compute), so the card states what that command prints; with *dtype* other than
    float32 the run's float32 weights are evaluated too and the change is stated. Without, the metrics are those of
    the run's last evaluation (metrics.json: under the run's train.amp).
    """
    source = resolve_source(run_dir, what="segcore hub save")
    run_dir, out = Path(run_dir), Path(out)
    missing = [f for f in ("run.json", "pipeline.toml", WEIGHTS) if not (run_dir / f).is_file()]
    if source.kind != "run" or missing:
        raise ConfigError(f"{run_dir}: not a finished run folder (no {', '.join(missing)}); point at a run that ended "
                          "(its model.safetensors is written at the end)")  # fmt: skip
    name = name or out.name
    if not NAME.match(name):
        raise ConfigError(f"name {name!r}: pretrained names are <arch>-<dataset>[-<recipe>], lowercase (like 'hrnet_l-camvid')")
    entry = zoo().get(name)
    registry = registry if registry is not None else load_registry()
    cfg = load_pipeline(run_dir / "pipeline.toml", registry=registry)
    meta = dataset_meta(cfg.data.dataset, registry)
    model = build_model(cfg.model, registry, num_classes=cfg.model.num_classes or meta.num_classes)
    load_weights(model, run_dir / WEIGHTS, ignore_missing=("aux.",))
    final = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    records = RunLog(run_dir, enabled=False).read() if (run_dir / "log.jsonl").is_file() else []

    def measure(checkpoint: Path) -> dict[str, Any]:
        run = attrs.evolve(cfg.run, task="evaluate", checkpoint=str(checkpoint), device="cpu")
        return run_pipeline(attrs.evolve(cfg, run=run), registry, progress=progress).metrics

    def metrics(folder: Path) -> dict[str, Any]:
        count = len(build_split(cfg.data, registry, "val"))  # the [data] table's val set, whichever way it is drawn
        if evaluate:
            m = measure(folder)
            reference = measure(run_dir) if dtype != "float32" else m
            source = "the stored weights, evaluated by segcore hub save"
        elif final:
            m = reference = final["val"]
            source = f"the run's last evaluation (train.amp = {cfg.train.amp!r}), from metrics.json"
        else:
            return {}
        out_m = {"split": cfg.data.val_split, "protocol": _eval_protocol(cfg, count), "source": source,
                 "eval": unstructure(cfg.eval), **{k: m[k] for k in ("mIoU", "mAcc", "aAcc", "fwIoU")},
                 "IoU": dict(zip(meta.class_names, m["IoU"]))}  # fmt: skip
        if dtype != "float32" and evaluate:
            out_m["float32_mIoU"] = reference["mIoU"]
        return {"metrics": out_m}

    def card_info(folder: Path) -> dict[str, Any]:
        info = metrics(folder)
        info["training"] = _training(cfg, records, hardware=hardware, train_hours=train_hours, cores=cores,
                                     step=final.get("step"))  # fmt: skip
        info["saved"] = datetime.date.today().isoformat()
        if entry is not None and entry.summary:  # the zoo's one-line description heads the card
            info["summary"] = entry.summary
        return info

    files = {"pipeline.toml": run_dir / "pipeline.toml"}
    if (run_dir / "plots" / "curves.png").is_file():
        files["curves.png"] = run_dir / "plots" / "curves.png"
    _write_folder(out, model, cfg.model, meta, registry, name=name, dtype=dtype, dataset=cfg.data.dataset.name,
                  input_size=cfg.run.input_size, files=files, before_card=card_info, what="segcore hub save")  # fmt: skip
    return json.loads((out / CONFIG).read_text())


def manifest_lines(out: Path, config: Mapping[str, Any]) -> str:
    """The manifest keys `segcore hub save` prints for the entry of the folder it wrote."""
    folder = zoo_dir()
    try:
        rel = str(Path(out).resolve().relative_to(folder.resolve())) if folder else str(Path(out).resolve())
    except ValueError:
        rel = str(Path(out).resolve())
    lines = [f'[models."{config["name"]}"]', f'folder = "{rel}"', f'sha256 = "{file_sha256(Path(out) / WEIGHTS)}"']
    m = config.get("metrics")
    if m:
        hours = config.get("training", {}).get("cpu_hours")
        extra = f', cpu_hours = {hours}' if hours is not None else ""
        f32 = f', float32_mIoU = {100 * m["float32_mIoU"]:.2f}' if "float32_mIoU" in m else ""
        lines.append(f'metrics = {{ split = "{m["split"]}", mIoU = {100 * m["mIoU"]:.2f}, aAcc = {100 * m["aAcc"]:.2f}, '
                     f'weights = "{config["weights"]["dtype"]}"{f32}{extra} }}')  # fmt: skip
    return "\n".join(lines)
