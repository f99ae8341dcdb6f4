"""Errors a user can fix. The CLI prints them without a traceback and exits with code 2.

Anything else raised from segcore is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "ConfigError", "ContractError", "DamagedFileError", "DataError", "FolderInUseError", "ForeignFileError",
    "MemoryLimitError", "PluginError", "RegistryError", "SegcoreError", "did_you_mean",
]  # fmt: skip

import difflib
from collections.abc import Iterable


class SegcoreError(Exception):
    """Base class: the message says what went wrong, where, and how to fix it."""


class ConfigError(SegcoreError):
    """A pipeline file (or a table in it) is invalid."""


class RegistryError(SegcoreError):
    """An unknown component name, or a name registered twice."""


class PluginError(SegcoreError):
    """A plugin failed to load or to register its components."""


class ContractError(SegcoreError):
    """A component's inputs or outputs break its stage contract (channels, stride, shape)."""


class ForeignFileError(ConfigError):
    """A file segcore would write or delete is not one it wrote (or lies behind a link): segcore never replaces it."""


class FolderInUseError(ConfigError):
    """Another process is writing the folder (a run folder is locked while a run writes it)."""


class MemoryLimitError(ConfigError):
    """A size, batch or crop whose tensors cannot fit in the memory available: refused before allocating."""


class DataError(SegcoreError):
    """A dataset file or folder is missing, corrupt or inconsistent."""


class DamagedFileError(DataError):
    """A file segcore reads back (weights, a checkpoint, a run record) is missing, truncated, altered or not the
    kind of file its name says."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of *choices*, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
