"""``segcore bench PIPELINE --trainer``: the real trainer's step on the pipeline's own data, under the speed levers
one at a time, in one run.

Each variant trains the pipeline (its model, data, augmentation, losses, batch and crop) for ``warmup + steps``
optimizer steps in a temporary run folder with no evaluation but one image at the end; the first ``warmup`` steps
(compiles, allocator and cache warm-up) are not timed. A `StepClock` splits the timed steps' wall-clock time into
data (waiting for the loader), augmentation, forward with the losses, backward, optimizer and the rest. GFLOP/s
count 3 x the forward's multiply-accumulates x 2 at the crop size (forward + backward), against the bf16 and fp32
3x3-convolution peaks measured in the same run (`measure_peaks`). Variants run in turn, ``repeats`` rounds; the
median round is reported.
"""

from __future__ import annotations

__all__ = ["TRAINER_VARIANTS", "bench_trainer", "format_trainer_bench"]

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from segcore.config.schema import PipelineConfig
from segcore.contracts.registry import Registry
from segcore.data.datasets import SplitSubset, dataset_meta
from segcore.engine.clock import PHASES, StepClock
from segcore.engine.trainer import Trainer
from segcore.errors import ConfigError
from segcore.model.build import build_model
from segcore.inference.fast import bf16_supported
from segcore.tools.bench import BF16_EMULATED, _forward_flops, _table, measure_peaks

# name -> the [train] keys it sets over the pipeline's ("bf16": bf16 autocast + channels_last; "cl": channels_last;
# "dilated": train.fast_dilated); the first is the "before" every speed-up is taken against. The "fp32+cl" variants
# are what train.amp = "auto" trains with on a CPU without native bf16
_PLAIN = {"amp": "none", "channels_last": False, "optimizer_impl": "loop", "compile": False, "fast_resize": False,
          "fast_dilated": False}
TRAINER_VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": _PLAIN,
    "bf16": _PLAIN | {"amp": "bf16", "channels_last": True},
    "bf16+fused": _PLAIN | {"amp": "bf16", "channels_last": True, "optimizer_impl": "fused"},
    "bf16+fused+resize": _PLAIN | {"amp": "bf16", "channels_last": True, "optimizer_impl": "fused",
                                   "fast_resize": True},
    "bf16+fused+resize+dilated": _PLAIN | {"amp": "bf16", "channels_last": True, "optimizer_impl": "fused",
                                           "fast_resize": True, "fast_dilated": True},
    "bf16+fused+compile": _PLAIN | {"amp": "bf16", "channels_last": True, "optimizer_impl": "fused", "compile": True},
    "fp32+cl+fused+resize": _PLAIN | {"channels_last": True, "optimizer_impl": "fused", "fast_resize": True},
    "fp32+cl+fused+resize+dilated": _PLAIN | {"channels_last": True, "optimizer_impl": "fused", "fast_resize": True,
                                              "fast_dilated": True},
}  # fmt: skip


def _one_run(cfg: PipelineConfig, registry: Registry, settings: dict[str, Any], *, steps: int, warmup: int,
             folder: Path) -> dict[str, Any]:  # fmt: skip
    train = attrs.evolve(cfg.train, **settings, iters=warmup + steps, epochs=None, eval_every=0, checkpoint_every=0,
                         checkpoint_every_iters=0, ema_decay=None, freeze_backbone=0, plots=False, tensorboard=False,
                         log_every=warmup + steps)  # fmt: skip
    run = attrs.evolve(cfg.run, out_dir=str(folder))
    trial = attrs.evolve(cfg, train=train, run=run, eval=attrs.evolve(cfg.eval, plots=0))
    trainer = Trainer.from_config(trial, registry, progress=False, overwrite=True)
    trainer.val_set = SplitSubset(trainer.val_set, [0])  # the final evaluation: one image
    trainer.clock = StepClock(trainer.device, enabled=True, skip=warmup)
    trainer.fit()
    clock = trainer.clock
    total = sum(clock.seconds.values())
    per_step = total / max(clock.steps, 1)
    return {"s_per_step": per_step, "img_s": cfg.data.batch_size * cfg.train.grad_accum_steps / per_step,
            "phases_s": {k: v / max(clock.steps, 1) for k, v in clock.seconds.items()}, "steps": clock.steps}  # fmt: skip


def bench_trainer(
    cfg: PipelineConfig,
    registry: Registry,
    *,
    variants: Sequence[str] = tuple(TRAINER_VARIANTS),
    steps: int = 10,
    warmup: int = 3,
    repeats: int = 1,
    peaks: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time the trainer's step under each variant (see the module docstring); a JSON-able dict."""
    say = progress or (lambda message: None)
    unknown = [v for v in variants if v not in TRAINER_VARIANTS]
    if unknown:
        raise ConfigError(f"--variants: unknown {', '.join(map(repr, unknown))}; the variants: "
                          f"{'; '.join(TRAINER_VARIANTS)}")
    size = tuple(cfg.data.augment.crop_size or cfg.run.input_size)
    batch = cfg.data.batch_size * cfg.train.grad_accum_steps
    model = build_model(cfg.model, registry, num_classes=cfg.model.num_classes or dataset_meta(cfg.data.dataset, registry).num_classes)
    flops = 3 * _forward_flops(model.train(), batch, size)
    del model
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="segcore-bench-train-") as tmp:
        for r in range(repeats):
            for i, name in enumerate(variants):
                say(f"round {r + 1}/{repeats}: {name} ({warmup} + {steps} steps)")
                runs[name].append(_one_run(cfg, registry, TRAINER_VARIANTS[name], steps=steps, warmup=warmup,
                                           folder=Path(tmp) / f"r{r}-{i}"))  # fmt: skip
    rows = []
    for name, done in runs.items():
        mid = sorted(done, key=lambda d: d["s_per_step"])[len(done) // 2]
        rows.append({"variant": name, **TRAINER_VARIANTS[name], **mid, "gflops": flops / 1e9,
                     "gflop_s": flops / mid["s_per_step"] / 1e9,
                     "spread_s": [d["s_per_step"] for d in done]})  # fmt: skip
    result: dict[str, Any] = {"batch": batch, "size": list(size), "steps": steps, "warmup": warmup, "repeats": repeats,
                              "threads": torch.get_num_threads(), "bf16_native": bf16_supported("cpu"),
                              "rows": rows}  # fmt: skip
    if peaks:
        say("peaks")
        result["peaks"] = measure_peaks()
    return result


def format_trainer_bench(result: dict[str, Any]) -> str:
    """The table ``segcore bench --trainer`` prints: per variant ms/step, img/s, GFLOP/s, % of the matching conv
    peak, the phases' shares, and the speed-up over the first variant."""
    peaks = result.get("peaks", {})
    base = result["rows"][0]["s_per_step"]
    head = ("variant", "ms/step", "img/s", "GFLOP/s", "% conv peak", *PHASES, "speed-up")
    body = []
    for r in result["rows"]:
        peak = peaks.get("bf16_conv_gflop_s" if r["amp"] == "bf16" else "fp32_conv_gflop_s")
        total = sum(r["phases_s"].values()) or 1.0
        body.append((r["variant"], f"{1000 * r['s_per_step']:.0f}", f"{r['img_s']:.2f}", f"{r['gflop_s']:.1f}",
                     f"{100 * r['gflop_s'] / peak:.0f}" if peak else "",
                     *(f"{100 * r['phases_s'][k] / total:.0f}%" for k in PHASES), f"{base / r['s_per_step']:.2f}x"))  # fmt: skip
    lines = [f"trainer step: batch {result['batch']} at {'x'.join(map(str, result['size']))}, {result['steps']} timed "
             f"steps after {result['warmup']}, median of {result['repeats']} round(s), {result['threads']} threads"]  # fmt: skip
    lines += _table(head, body)
    if peaks:
        lines.append(f"peaks (same run): conv3x3 256ch fp32 {peaks['fp32_conv_gflop_s']:.1f}, bf16 "
                     f"{peaks['bf16_conv_gflop_s']:.1f} GFLOP/s")  # fmt: skip
    if not result.get("bf16_native", True):
        lines.append(BF16_EMULATED)
    return "\n".join(lines)
