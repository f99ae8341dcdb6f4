"""``segcore sweep FILE``: build every row of an ablation, print their params and FLOPs, train and evaluate every
row x seed, and write the table (`segcore.tools.sweep`)."""

from __future__ import annotations

__all__ = ["add_parser", "cmd_sweep"]

import argparse
import sys

from segcore.cli import _common


def cmd_sweep(args: argparse.Namespace) -> int:
    from segcore.tools.sweep import (
        SweepInterrupted,
        collect_table,
        format_counts,
        load_sweep,
        resume_command,
        run_sweep,
        select_rows,  # fmt: skip
        select_seeds,
        write_record,
        write_table,
    )

    registry = _common.registry()
    sweep = load_sweep(args.file, registry=registry, out_dir=args.out_dir)
    rows = select_rows(sweep, args.rows)
    seeds = select_seeds(sweep, args.seeds)
    if args.table:
        paths = write_table(collect_table(sweep, registry), sweep.out_dir)
        print(paths[0].read_text(encoding="utf-8"))
        print(f"wrote {', '.join(p.name for p in paths)} to {sweep.out_dir}/ (from the run folders; nothing trained)")
        return 0
    if args.record:
        copied, paths = write_record(sweep, registry, args.record)
        print(paths[0].read_text(encoding="utf-8"))
        print(f"recorded {len(copied)} finished run(s) ({', '.join(copied)}) in {args.record}/ without their weights, "
              f"checkpoints and plots, and wrote {', '.join(p.name for p in paths)} there; nothing trained")  # fmt: skip
        return 0
    print(format_counts(sweep, rows))
    if args.dry_run:
        print(f"ok: {len(rows)} row(s) build and pass segcore check; --dry-run: nothing trained")
        return 0
    sys.stdout.flush()
    try:
        result = run_sweep(sweep, registry, rows=rows, resume=args.resume, nproc=args.nproc_per_node,
                           progress=not args.quiet, say=lambda m: print(m, file=sys.stderr), seeds=seeds)  # fmt: skip
    except SweepInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return 130
    paths = write_table(collect_table(sweep, registry), sweep.out_dir)
    print(paths[0].read_text(encoding="utf-8"))
    print(f"ran {len(result.ran)}, kept {len(result.skipped)} finished, {len(result.failed)} failed; wrote "
          f"{', '.join(p.name for p in paths)} to {sweep.out_dir}/")  # fmt: skip
    if result.failed:
        again = resume_command(sweep, rows, args.nproc_per_node, seeds)
        print(f"error: {len(result.failed)} run(s) failed (error text in each run folder's sweep_error.txt); after "
              f"fixing the cause, {again} runs them again:", file=sys.stderr)  # fmt: skip
        for label, message in result.failed.items():
            print(f"  - {label}: {message}", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "sweep", help="an ablation: build every row of a sweep file, count it, train and evaluate every row x seed, "
        "write the table (md, csv, json, png)")  # fmt: skip
    p.add_argument("file", help="sweep TOML file (base, [sweep], [[row]])")
    p.add_argument("--dry-run", action="store_true", help="build and count every row, print params and FLOPs beside "
                   "the published ones, train nothing")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue a sweep: keep finished runs, continue half-finished "
                   "ones from their newest checkpoint, retry failed ones")  # fmt: skip
    p.add_argument("--rows", nargs="+", metavar="NAME", help="run these rows only (the table still lists every row)")
    p.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="run these of [sweep] seeds only (a sweep "
                   "spread over sessions or machines; the table still lists every seed)")  # fmt: skip
    p.add_argument("--nproc-per-node", type=_common.positive, default=1, metavar="N",
                   help="train each run with N processes through torchrun (segcore run on the run's resolved pipeline)")
    p.add_argument("--out-dir", metavar="DIR", help="override [sweep] out_dir (e.g. a folder outside the work tree for "
                   "a sweep that spans sessions; give it again with --resume and --table)")
    p.add_argument("--table", action="store_true", help="rebuild the table from the run folders without training")
    p.add_argument("--record", metavar="DIR", help="copy the finished runs to DIR without their weights, checkpoints "
                   "and plots, with the table: a small record to keep (e.g. in a repository) that --table, --resume "
                   "--out-dir DIR and segcore hub evidence read; trains nothing")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_sweep)
    return p
