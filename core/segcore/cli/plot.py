"""``segcore plot RUN ...``: several runs' training loss (or another logged value) and val mIoU on one PNG."""

from __future__ import annotations

__all__ = ["add_parser", "cmd_plot"]

import argparse
from pathlib import Path

from segcore.cli import _common
from segcore.errors import SegcoreError


def cmd_plot(args: argparse.Namespace) -> int:
    from segcore.engine.report import RunLog, plot_compare

    if Path(args.out).is_dir():
        raise SegcoreError(f"--out {args.out} is a folder; give the PNG file to write (e.g. {Path(args.out) / 'compare.png'})")
    if args.label and len(args.label) != len(args.runs):
        raise SegcoreError(f"--label: {len(args.label)} labels for {len(args.runs)} runs; give one per run or none")
    runs = []
    for i, folder in enumerate(args.runs):
        records = RunLog(Path(folder), enabled=False).read()
        if not records:
            raise SegcoreError(f"{folder}: no log.jsonl with records; pass run folders (run.out_dir of segcore run)")
        runs.append((args.label[i] if args.label else Path(folder).name, records))
    plot_compare(runs, Path(args.out), x=args.x, y=args.y, smooth=args.smooth)
    for label, records in runs:
        evals = [r for r in records if r["kind"] == "eval" and "mIoU" in r]
        best = max(evals, key=lambda r: r["mIoU"]) if evals else None
        last = f"last val mIoU {100 * evals[-1]['mIoU']:.2f} (step {evals[-1]['step']}), best {100 * best['mIoU']:.2f} " \
               f"(step {best['step']})" if best else "no evaluation logged"  # fmt: skip
        print(f"{label}: {last}")
    print(f"wrote {args.out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="several runs' training loss and val mIoU on one PNG, to compare them")
    p.add_argument("runs", nargs="+", help="run folders (run.out_dir of segcore run)")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--label", nargs="+", help="a label per run (default: the folders' names)")
    p.add_argument("--x", choices=("step", "hours"), default="step", help="x axis: the step, or the logged wall-clock hours")
    p.add_argument("--y", default="loss", metavar="NAME", help="the training value to draw: loss (the total, default), "
                   "a term (loss.ce, ...), grad_norm, lr: any number the runs' log.jsonl train records hold")  # fmt: skip
    p.add_argument("--smooth", type=_common.positive, default=1, metavar="N",
                   help="draw the mean of every N consecutive logged records (default 1: each record)")
    p.set_defaults(func=cmd_plot)
