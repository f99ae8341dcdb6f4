"""The ``segcore`` command: one module per command group, ``main`` dispatches."""

from segcore.cli import _interrupts  # noqa: F401  (first: a Ctrl-C during the imports below ends the CLI quietly)
from segcore.cli.main import main

__all__ = ["main"]
