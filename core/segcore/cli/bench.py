"""``segcore bench PIPELINE``: inference and training-step timings against the machine's peaks."""

from __future__ import annotations

__all__ = ["add_parser", "cmd_bench"]

import argparse
import sys

from segcore.cli import _common


def cmd_bench(args: argparse.Namespace) -> int:
    from segcore.config import load_pipeline
    from segcore.tools.bench import RUNTIME_MODES, format_bench, run_bench, to_json

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    registry = _common.registry()
    cfg = load_pipeline(args.pipeline, registry=registry)
    if args.trainer:
        return _bench_trainer(cfg, registry, args)
    extra = (("fast path + compile", args.compile), ("fast path + int8", args.int8))
    modes = list(args.modes) + [mode for mode, on in extra if on]
    modes += list(RUNTIME_MODES) if "all" in (args.runtimes or ()) else list(args.runtimes or ())
    say = None if args.json or args.quiet else (lambda message: print(f"  {message}", file=sys.stderr))
    result = run_bench(cfg, registry, input_size=args.input_size, batch=args.batch, train_size=args.train_size,
                       train_batch=args.train_batch, inference_modes=modes,
                       train_modes=[] if args.no_train else args.train_modes,
                       baseline=args.baseline, repeats=args.repeats, warmup=args.warmup, progress=say)  # fmt: skip
    print(to_json(result) if args.json else format_bench(result))
    return 0


def _bench_trainer(cfg, registry, args: argparse.Namespace) -> int:  # noqa: ANN001 (types from lazily imported modules)
    from segcore.tools.bench import to_json
    from segcore.tools.bench_train import TRAINER_VARIANTS, bench_trainer, format_trainer_bench

    say = None if args.json or args.quiet else (lambda message: print(f"  {message}", file=sys.stderr))
    result = bench_trainer(cfg, registry, variants=args.variants or list(TRAINER_VARIANTS), steps=args.steps, warmup=args.warmup_steps,
                           repeats=args.repeats, progress=say)  # fmt: skip
    print(to_json(result) if args.json else format_trainer_bench(result))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="time inference and a training step (fp32, channels_last, bf16, fast path) "
                       "and the machine's peaks")
    p.add_argument("pipeline", help="pipeline TOML file")
    p.add_argument("--input-size", type=_common.size, help="HxW for inference (default: eval.resize, else run.input_size)")
    p.add_argument("--batch", type=_common.positive, help="inference batch (default: eval.batch_size)")
    p.add_argument("--train-size", type=_common.size, help="HxW for the training step (default: data.augment.crop_size, "
                   "else the inference size)")
    p.add_argument("--train-batch", type=_common.positive, help="training batch (default: data.batch_size)")
    p.add_argument("--modes", nargs="+", default=["fp32 eager", "channels_last", "bf16 autocast", "fast path"],
                   choices=["fp32 eager", "channels_last", "bf16 autocast", "fast path"], help="inference modes")
    p.add_argument("--train-modes", nargs="+", default=["fp32 eager", "channels_last", "bf16 autocast"],
                   choices=["fp32 eager", "channels_last", "bf16 autocast"], help="training-step modes")
    p.add_argument("--no-train", action="store_true", help="time inference only")
    p.add_argument("--compile", action="store_true", help="also time the fast path compiled (inductor, freezing; the "
                   "compile takes minutes on a CPU)")
    p.add_argument("--int8", action="store_true", help="also time the fast path with int8 convolutions (PT2E, x86 "
                   "quantizer, needs torchao; calibrated on random images, for timing only), compiled")
    p.add_argument("--runtimes", nargs="+", metavar="RUNTIME", choices=["onnxruntime fp32", "openvino fp32",
                   "openvino int8", "all"], help="also time the exported graph in other runtimes: 'onnxruntime fp32', "
                   "'openvino fp32', 'openvino int8' (NNCF, random calibration: timing only), or all; a runtime "
                   "that is not installed is skipped with a note")  # fmt: skip
    p.add_argument("--baseline", metavar="TIMM_MODEL", help="also time this timm model's features (fp32 eager) on "
                   "the same input and print every inference mode's speed-up over it, e.g. hrnet_w48")
    p.add_argument("--repeats", type=_common.positive, default=3, help="timed runs per case (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per case first")
    p.add_argument("--threads", type=_common.positive, help="torch threads (default: torch's own choice; on a machine shared "
                   "with other jobs 1 thread gives steadier numbers)")
    p.add_argument("--trainer", action="store_true", help="time the real trainer's step on the pipeline's data instead "
                   "(data, augmentation, forward, backward, optimizer shares) under the speed levers (--variants)")
    p.add_argument("--variants", nargs="+", metavar="VARIANT", help="with --trainer: the variants to time, the first "
                   "the baseline of the speed-ups (default: all; an unknown name lists them)")
    p.add_argument("--steps", type=_common.positive, default=10, help="with --trainer: timed optimizer steps per variant")
    p.add_argument("--warmup-steps", type=int, default=3, help="with --trainer: untimed steps first (compiles, caches)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_bench)
