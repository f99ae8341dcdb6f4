"""Atomic writes: a temp file (or folder) in the same folder, then a rename, so a crash never leaves half a file.

Temp names start with ``.`` and hold ``.tmp`` (``.model.safetensors.k3j2.tmp``, ``.ckpt-00000042.tmp.x8a1``), so
`remove_stale_temps` can find and remove what a killed process left behind. What is written ends up with the
permissions the user's umask gives any new file or folder (mkstemp/mkdtemp alone would give 0600/0700).
"""

from __future__ import annotations

__all__ = ["atomic_dir", "atomic_write", "cpuinfo", "remove_stale_temps", "write_text"]

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_MARK = ".tmp"
_TEMP_NAME = re.compile(r"^\..+(\.[a-z0-9_]{8}\.tmp|\.tmp\.[a-z0-9_]{8})$")  # mkstemp/mkdtemp: 8 random


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside *path*; on success it replaces *path* in one rename, on failure it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_MARK, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # after the writer: some (safetensors) replace the file they are given, with mkstemp's 0600
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside *path*; on success it takes *path*'s place (an existing *path* is moved aside
    first and removed after, so one whole version exists at every moment), on failure it is removed. What the
    old *path* holds that the new one does not (a user's file: segcore writes every one of its own each time)
    is copied over, never lost."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMP_MARK}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.is_dir():
            for entry in path.iterdir():
                if not (tmp / entry.name).exists():
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.copytree(entry, tmp / entry.name, symlinks=True)
                    else:
                        shutil.copy2(entry, tmp / entry.name, follow_symlinks=False)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old{TEMP_MARK}.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temps(folder: str | Path, *, legacy: tuple[str, ...] = ()) -> list[Path]:
    """Remove the temp files and folders an interrupted writer left directly in *folder*; return them.

    Only names this module makes are touched (``.<name>.<8 random>.tmp`` files, ``.<name>.tmp.<8 random>``
    folders), and hidden names starting with one of *legacy* (what older versions left). Call it only where no
    other process is writing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if not (_TEMP_NAME.match(entry.name) or any(entry.name.startswith(f".{p}") for p in legacy)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def cpuinfo(key: str) -> str | None:
    """The value of the first *key* line of ``/proc/cpuinfo`` (``"model name"``, ``"flags"``), or None where there is
    no such line or no such file (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                name, sep, value = line.partition(":")
                if sep and name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None
