"""``segcore check`` (the model stage by stage on the meta device) and ``segcore list`` (what is installed)."""

from __future__ import annotations

__all__ = ["add_parser", "cmd_check", "cmd_list"]

import argparse
import time

from segcore.cli import _common
from segcore.contracts.stages import STAGES
from segcore.model.counting import CONVENTIONS


def cmd_check(args: argparse.Namespace) -> int:
    from segcore.config import load_pipeline
    from segcore.model.check import check_pipeline, format_json, format_table

    start = time.perf_counter()
    registry = _common.registry()
    cfg = load_pipeline(args.pipeline, registry=registry)
    size = args.input_size or cfg.run.input_size
    rows = check_pipeline(cfg, registry, input_size=size, convention=args.convention)
    if args.json:  # stdout is the JSON document alone; an exit code of 0 says every contract held
        print(format_json(rows, size, args.convention))
        return 0
    print(format_table(rows, size, args.convention))
    print(f"ok: every stage keeps its contract (meta device, no weights allocated; {time.perf_counter() - start:.2f} s)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    registry = _common.registry()
    for stage in STAGES:
        entries = registry.entries(stage)
        print(f"{stage.__name__} ({len(entries)})")
        width = max((len(e.name) for e in entries), default=0)
        for e in entries:
            slots = getattr(e.cls, "attention_slots", ())
            extra = f"  slots: {', '.join(slots)}" if slots else ""
            print(f"  {e.name:<{width}}  {e.plugin.name} ({e.plugin.dist or '?'} {e.plugin.version or ''}){extra}".rstrip())
    presets = registry.presets()
    if presets:
        print(f"Preset ({len(presets)})")
        for name, plugin in presets.items():
            print(f"  {name}  {plugin.name} ({plugin.dist} {plugin.version})")
    if registry.problems:
        print(f"{len(registry.problems)} plugin(s) failed; see the warnings above")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="build the model on the meta device; print channels, strides, params, MACs")
    p.add_argument("pipeline", help="pipeline TOML file")
    p.add_argument("--input-size", type=_common.size, help="HxW to count MACs at (default: run.input_size)")
    p.add_argument("--convention", choices=tuple(CONVENTIONS), default="true",
                   help="how to count: true (every parameter; conv + matmul MACs), thop2x (seed 000: 2 x thop MACs, "
                        "thop params), mmcv (mmcv get_model_complexity_info; aux heads: params only)")
    p.add_argument("--json", action="store_true", help="print per-stage rows and totals as JSON instead of the table")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("list", help="every stage with its components and the plugin providing each")
    p.set_defaults(func=cmd_list)
