"""``segcore data convert|push``: datasets as parquet shards + a dataset card, and to the Hub."""

from __future__ import annotations

__all__ = ["add_parser", "cmd_data_convert", "cmd_data_push"]

import argparse
from collections.abc import Sequence
from pathlib import Path

from segcore.cli import _common


def cmd_data_convert(args: argparse.Namespace) -> int:
    from segcore.config import DatasetSpec, structure_table
    from segcore.contracts.stages import Dataset
    from segcore.data.datasets import build_dataset
    from segcore.errors import DataError
    from segcore.hub.datasets import convert

    registry = _common.registry()
    entry = registry.get(Dataset, args.name)
    table = dict(_parse_set(args.set))
    if args.root is not None:
        table["root"] = args.root
    spec = structure_table({"name": args.name, **table}, DatasetSpec, registry=registry,
                           source=f"segcore data convert {args.name} (--root/--set)")  # fmt: skip
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
    data = sub.add_parser("data", help="datasets as parquet + dataset card (Hugging Face Hub format)")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
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
