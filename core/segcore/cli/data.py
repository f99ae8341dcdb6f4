"""``segcore data verify|convert|push``: check a dataset as stored; datasets as parquet shards + a dataset card,
and to the Hub."""

from __future__ import annotations

__all__ = ["add_parser", "cmd_data_convert", "cmd_data_push", "cmd_data_verify"]

import argparse
from collections.abc import Sequence
from pathlib import Path

from segcore.cli import _common
from segcore.errors import SegcoreError


def _dataset_spec(args: argparse.Namespace, registry, command: str):
    """The dataset named on the command line, its config from --root and --set."""
    from segcore.config import DatasetSpec, structure_table

    table = dict(_parse_set(args.set))
    if args.root is not None:
        table["root"] = args.root
    return structure_table({"name": args.name, **table}, DatasetSpec, registry=registry,
                           source=f"segcore data {command} {args.name} (--root/--set)")  # fmt: skip


def cmd_data_verify(args: argparse.Namespace) -> int:
    import json
    import os

    from segcore.config import load_pipeline
    from segcore.data.datasets import split_names
    from segcore.data.verify import format_report, verify_dataset
    from segcore.engine.report import plot_class_histogram
    from segcore.io import claim, record

    registry = _common.registry()
    target = Path(args.name)
    splits, train_splits, workers = args.splits, args.train_splits, args.workers
    if target.suffix == ".toml" or target.is_file():  # a pipeline: its [data] dataset, the splits it reads
        if args.root is not None or args.set:
            raise SegcoreError(f"{args.name}: --root and --set are for a dataset name; edit the pipeline's [data.dataset]")
        data = load_pipeline(target, registry=registry).data
        spec = data.dataset
        if data.random_split is not None:
            train_splits = [data.random_split.source]
        else:
            train_splits = list(split_names(data.train_split))
        splits = splits or list(dict.fromkeys([*train_splits, *split_names(data.val_split)]))
        workers = data.num_workers if workers is None else workers
    else:
        spec = _dataset_spec(args, registry, "verify")
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    report = verify_dataset(spec, registry, splits=splits, train_splits=train_splits, num_workers=workers,
                            progress=not args.quiet)  # fmt: skip
    plot = None
    if args.plot != "none" and report.splits:
        plot = Path(args.plot or f"data_verify_{spec.name}.png")
        claim(plot.parent, [plot.name], what="segcore data verify --plot",
              hint="Choose another --plot path, or move that file away.")  # a file segcore did not write stays
        plot_class_histogram(report.meta.class_names, {n: (s.class_pixels, s.ignore_share) for n, s in report.splits.items()},
                             report.weights(), plot, title=f"{spec.name}: pixels per class")  # fmt: skip
        record(plot.parent, [plot.name])
    if args.json:
        print(json.dumps({**report.to_dict(), "plot": str(plot) if plot else None}, indent=1))
    else:
        print(format_report(report))
        if plot:
            print(f"class histogram: {plot}")
    return 2 if report.errors else 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from segcore.contracts.stages import Dataset
    from segcore.data.datasets import build_dataset
    from segcore.errors import DataError
    from segcore.hub.datasets import convert

    registry = _common.registry()
    entry = registry.get(Dataset, args.name)
    spec = _dataset_spec(args, registry, "convert")
    if args.splits:
        built = {split: build_dataset(spec, registry, split) for split in args.splits}
    else:  # every split the release on disk has
        built = {}
        for split in entry.cls.splits:
            try:
                built[split] = build_dataset(spec, registry, split)
            except DataError:
                continue
    out = convert(built, Path(args.out), title=args.title or f"{args.name} (segcore)", rows_per_shard=args.rows_per_shard)
    print(f"wrote {', '.join(f'{s}: {len(d)}' for s, d in built.items())} samples to {out}/ (parquet + README.md card)")
    return 0


def _parse_set(items: Sequence[str]) -> list[tuple[str, object]]:
    import tomllib

    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out.append((key.strip(), tomllib.loads(f"v = {value}")["v"]))
        except tomllib.TOMLDecodeError:
            out.append((key.strip(), value))
    return out


def cmd_data_push(args: argparse.Namespace) -> int:
    from segcore.hub.datasets import push

    url = push(Path(args.folder), args.repo_id, private=args.private)
    print(f"pushed {args.folder} to {args.repo_id}: {url}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="datasets: check one as stored (verify), convert it to parquet + dataset "
                          "card, push that to the Hub")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    p = dsub.add_parser(
        "verify", help="check a dataset as stored: sizes, label values, ignore share, class pixels and weights, repeats",
        description="Read every image and label file of a dataset as stored (before any id mapping) and report per "
        "split: the image count and sizes, the label values against the class list (unknown ids with the files "
        "holding them; RGB or palette-coloured masks explained), the ignore share, pixels per class with suggested "
        "class weights (median frequency, ENet's 1/ln(1.02+p)), and images found twice (same decoded pixels); a PNG "
        "of the class histogram. Exit 2 on an error (unknown ids, colour masks, an empty split, unreadable files, "
        "an image of a training split also in an evaluation split), 0 when only warnings remain.",
    )  # fmt: skip
    p.add_argument("name", metavar="PIPELINE_OR_DATASET",
                   help="a pipeline file (its [data] dataset and the splits it reads) or a registered dataset name")
    p.add_argument("--root", help="the dataset's root folder (with a dataset name)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another key of the dataset's config")
    p.add_argument("--splits", nargs="+", help="splits to read (default: the pipeline's, or every split of the dataset)")
    p.add_argument("--train-splits", nargs="+", default=["train"], metavar="SPLIT",
                   help="splits trained on, for the weights and the leak check (default: train; a pipeline's train_split)")
    p.add_argument("--workers", type=int, metavar="N", help="DataLoader workers (default: data.num_workers, or up to 4)")
    p.add_argument("--plot", metavar="PNG", help="where the class histogram goes (default data_verify_<dataset>.png; none: no plot)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_data_verify)
    p = dsub.add_parser("convert", help="write a registered dataset as parquet shards and a dataset card")
    p.add_argument("name", help="registered dataset name (segcore list)")
    p.add_argument("--root", help="the dataset's root folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--splits", nargs="+", help="splits to convert (default: every split found)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another key of the dataset's config")
    p.add_argument("--title", help="the card's title")
    p.add_argument("--rows-per-shard", type=int, default=500)
    p.set_defaults(func=cmd_data_convert)
    _common.push_parser(dsub, "upload a converted folder to the Hugging Face Hub as a dataset repo", cmd_data_push)
