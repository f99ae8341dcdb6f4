"""A Ctrl-C while the ``segcore`` command is still importing (torch alone takes seconds) ends it with "interrupted"
and exit code 130, as a Ctrl-C later does, not with a traceback from inside some library's import (numpy even
turns it into an ImportError).

Imported first by ``segcore/cli/__init__.py``; `segcore.cli.main` hands Ctrl-C back to Python once the imports are
done. Only the command line is affected: a script or notebook importing segcore keeps Python's own handling.
"""

from __future__ import annotations

import os
import signal
import sys
import threading


def _is_cli() -> bool:
    argv = getattr(sys, "orig_argv", sys.argv)
    if os.path.basename(sys.argv[0]) == "segcore":  # the console script
        return True
    return any(a == "-m" and b == "segcore" for a, b in zip(argv, argv[1:]))  # python -m segcore, torchrun -m segcore


def _quit(signum: int, frame: object) -> None:
    print("interrupted", file=sys.stderr, flush=True)
    os._exit(130)


def restore() -> None:
    """Ctrl-C raises KeyboardInterrupt again (the CLI's handlers take over)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is _quit:
        signal.signal(signal.SIGINT, signal.default_int_handler)


if _is_cli() and threading.current_thread() is threading.main_thread():
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _quit)
