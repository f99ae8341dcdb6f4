"""The ``segcore`` command: one module per command group, each with ``add_parser(subparsers)``; errors a user can fix
(any SegcoreError) end as one ``error:`` line and exit code 2."""

from __future__ import annotations

__all__ = ["COMMANDS", "main", "make_parser"]

import argparse
import sys
import warnings
from collections.abc import Sequence

from segcore.cli import bench, data, export, hub, inspect, plot, run, sweep
from segcore.errors import SegcoreError

COMMANDS = (run, inspect, bench, export, plot, data, hub, sweep)  # in `segcore --help` order


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segcore", description="Plugin-based semantic segmentation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _strip_worker_traceback(message: str) -> str:
    """A DataLoader worker re-raises our error with its traceback in the message: keep only the message."""
    if "Original Traceback" in message:
        return message.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return message


def _format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    line: str | None = None) -> str:  # fmt: skip
    """A warning on the command line: one line for the user, without the source line a traceback reader wants
    (segcore's own warnings are user-facing; others keep their category)."""
    kind = "" if category in (UserWarning, DeprecationWarning, FutureWarning) else f" ({category.__name__})"
    return f"warning{kind}: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    from segcore.cli import _interrupts

    formatwarning = warnings.formatwarning  # catch_warnings does not restore it: put back below
    try:
        _interrupts.restore()  # the imports are done: Ctrl-C is a KeyboardInterrupt again, handled below
        args = make_parser().parse_args(argv)
        with warnings.catch_warnings():
            warnings.formatwarning = _format_warning  # how a warning is printed; recording (pytest.warns) is untouched
            return args.func(args)
    except SegcoreError as exc:
        print(f"error: {_strip_worker_traceback(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:  # main() called in-process leaves the caller's printing of warnings as it was
        warnings.formatwarning = formatwarning


if __name__ == "__main__":
    sys.exit(main())
