"""What the command modules share: the registry (with its problems as warnings) and argument types."""

from __future__ import annotations

import argparse
import os
import sys


def registry():
    from segcore.contracts.plugins import load_registry

    registry = load_registry()
    for problem in registry.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return registry


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text!r}")
    return value


def size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW like 512x1024, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"height and width must be > 0, got {text!r}")
    return h, w


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def push_parser(sub, help: str, func) -> None:
    p = sub.add_parser("push", help=help)
    p.add_argument("folder")
    p.add_argument("--repo-id", required=True, help="owner/name")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=func)
