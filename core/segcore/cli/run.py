"""``segcore run PIPELINE``: train, evaluate or predict as the pipeline's [run] table says; ``--nproc-per-node``
through torchrun's own launcher."""

from __future__ import annotations

__all__ = ["add_parser", "cmd_run"]

import argparse
import os
import sys

from segcore.cli import _common


def cmd_run(args: argparse.Namespace) -> int:
    import attrs

    from segcore.config import load_pipeline
    from segcore.data.datasets import dataset_meta
    from segcore.engine.evaluate import EvalResult, format_metrics
    from segcore.engine.run import run_pipeline
    from segcore.engine.rundir import check_flags
    from segcore.engine.trainer import Interrupted

    check_flags(resume=args.resume, overwrite=args.overwrite)  # before torchrun starts workers
    if args.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        return _launch(args)
    registry = _common.registry()
    cfg = load_pipeline(args.pipeline, registry=registry)
    overrides = {k: v for k, v in (("device", args.device), ("out_dir", args.out_dir)) if v is not None}
    if overrides:
        cfg = attrs.evolve(cfg, run=attrs.evolve(cfg.run, **overrides))
    if args.overfit is not None:
        from segcore.engine.overfit import overfit_config

        cfg = overfit_config(cfg, args.overfit, steps=args.overfit_steps)
    try:
        result = run_pipeline(cfg, registry, progress=not args.quiet, resume=args.resume, overwrite=args.overwrite)
    except Interrupted as exc:
        if _common.rank() == 0:
            print(str(exc).replace("segcore run <pipeline> --resume", _resume_command(args)), file=sys.stderr)
        return 130
    if _common.rank() != 0:
        return 0
    if isinstance(result, EvalResult):
        print(format_metrics(result.metrics, dataset_meta(cfg.data.dataset, registry)))
        if args.overfit is not None:
            from segcore.engine.overfit import overfit_pairing, overfit_verdict
            from segcore.engine.report import RunLog

            records = RunLog(cfg.run.out_dir, enabled=False).read()
            learned, verdict = overfit_verdict(result.metrics, records, args.overfit, overfit_pairing(cfg, registry))
            print(verdict)
            return 0 if learned else 1
        if cfg.run.task == "train":
            print(f"weights, metrics, log and plots in {cfg.run.out_dir}/")
    else:
        print(f"wrote {len(result)} files to {cfg.predict.output_dir}/")
    return 0


def _launch(args: argparse.Namespace) -> int:
    """``segcore run --nproc-per-node N``: torchrun's own launcher (`torch.distributed.run`, ``--standalone``) in
    this process, so that it ends as one process does: Ctrl-C has every worker finish its step and rank 0 write a
    checkpoint, then exit 130 (torchrun alone would add its SignalException traceback and exit 1); a worker's
    error exits with the worker's code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    worker = ["run", args.pipeline, *_run_flags(args)]
    try:
        run(get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(args.nproc_per_node), "-m", "segcore", *worker]))
    except SignalException as exc:
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        code = exc.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code  # a worker killed by signal N: -N
    return 0


def _run_flags(args: argparse.Namespace) -> list[str]:
    flags = [x for flag, v in (("--out-dir", args.out_dir), ("--device", args.device)) if v is not None for x in (flag, v)]
    if args.overfit is not None:
        flags += ["--overfit", str(args.overfit), "--overfit-steps", str(args.overfit_steps)]
    return flags + [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite), ("-q", args.quiet)) if on]


def _resume_command(args: argparse.Namespace) -> str:
    """The command that continues this run: same pipeline, same --out-dir/--device, same launcher."""
    import shlex

    cmd = ["segcore", "run", args.pipeline, "--resume"]
    cmd += [x for flag, v in (("--out-dir", args.out_dir), ("--device", args.device)) if v is not None for x in (flag, v)]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        cmd += ["--nproc-per-node", str(world)]
    return shlex.join(cmd)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run what the pipeline file's [run] section says (train, evaluate or predict)")
    p.add_argument("pipeline", help="pipeline TOML file")
    p.add_argument("--device", help="override run.device (cpu, cuda, cuda:N, auto)")
    p.add_argument("--out-dir", help="override run.out_dir")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in run.out_dir")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run in run.out_dir (segcore's own files only) and start again; not with --resume")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--overfit", type=_common.positive, metavar="N",
                   help="sanity run: train on the first N training images, augmentation off, and evaluate on them "
                   "until their mIoU reaches 99 (or --overfit-steps); says whether the model learned them (exit 0) or "
                   "not (exit 1, with likely causes), and whether their labels belong to them (a shuffled file list "
                   "fits as well). Written to <run.out_dir>-overfitN")  # fmt: skip
    p.add_argument("--overfit-steps", type=_common.positive, default=300, metavar="STEPS",
                   help="the sanity run's step budget (default 300)")
    p.add_argument("--nproc-per-node", type=_common.positive, default=1, metavar="N",
                   help="train with N processes on this machine (torchrun's launcher; data.batch_size is per process)")
    p.set_defaults(func=cmd_run)
