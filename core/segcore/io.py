"""Atomic writes, the record of what segcore wrote, and folder locks.

Atomic writes: a temp file (or folder) in the same folder, then a rename, so a crash never leaves half a file.
Temp names start with ``.`` and hold ``.tmp`` (``.model.safetensors.k3j2.tmp``, ``.ckpt-00000042.tmp.x8a1``), so
`remove_stale_temps` can find and remove what a killed process left behind. What is written ends up with the
permissions the user's umask gives any new file or folder (mkstemp/mkdtemp alone would give 0600/0700).

Nothing segcore writes replaces a file it did not write. Every writer (run folders, model folders, converted
datasets, ONNX exports, predictions) lists what it wrote in ``<folder>/.segcore-written.json`` (`WRITTEN`, a hidden
name: ``hub push`` and ``data push`` leave it behind) and, before writing, `claim` refuses with `ForeignFileError`
any file that is not on that list, and any link on the way (segcore never writes or deletes through a link, so
nothing outside the folder is touched); `remove_written` deletes only listed files. `lock_folder` holds an OS
lock (``flock``) on ``<folder>/.segcore.lock`` while a process writes there: the kernel drops it on exit and kill.
"""

from __future__ import annotations

__all__ = [
    "LOCK", "MAX_PIXELS_VAR", "WRITTEN", "FolderLock", "atomic_dir", "atomic_write", "available_memory",
    "check_image_pixels", "check_memory", "claim", "cpuinfo", "format_bytes", "image_pixel_limit", "lock_folder",
    "record", "remove_stale_temps", "remove_written", "write_text", "written",
]  # fmt: skip

import contextlib
import datetime
import errno
import fnmatch
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path

from segcore.errors import DamagedFileError, DataError, FolderInUseError, ForeignFileError, MemoryLimitError

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
def atomic_dir(path: str | Path, *, drop: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a temp folder beside *path*; on success it takes *path*'s place (an existing *path* is moved aside
    first and removed after, so one whole version exists at every moment), on failure it is removed. What the
    old *path* holds that the new one does not (a user's file) is copied over, never lost, except the names that
    match *drop* (glob patterns: segcore's own files of an earlier version that this one no longer has)."""
    path = Path(path)
    drop = tuple(drop)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TEMP_MARK}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.is_dir():
            for entry in path.iterdir():
                if not (tmp / entry.name).exists() and not _matches(entry.name, drop):
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


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS has one (a container or ``taskset`` pinned to
    2 of 64 cores gives 2), else the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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


# -- memory and image sizes -----------------------------------------------------------------------------------------


def format_bytes(n: float) -> str:
    """``1.5 GiB``, ``320 MiB``: bytes for a message."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def available_memory(device: object = "cpu") -> tuple[int, str] | None:
    """(bytes a new allocation on *device* can take, where the figure comes from), or None where it cannot be known.

    CUDA: free device memory (``torch.cuda.mem_get_info``) plus what torch's caching allocator holds unused; XPU
    likewise; MPS: the recommended working set less what the driver holds; CPU: psutil's ``available`` where psutil
    is installed, else ``MemAvailable`` of ``/proc/meminfo`` (Linux)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return free + cached, f"free on {device} (torch.cuda.mem_get_info)"
    if device.type == "xpu" and hasattr(torch, "xpu") and torch.xpu.is_available() and hasattr(torch.xpu, "mem_get_info"):
        return torch.xpu.mem_get_info(device)[0], f"free on {device} (torch.xpu.mem_get_info)"
    if device.type == "mps" and torch.backends.mps.is_available():
        return torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory(), "free for MPS"
    if device.type != "cpu":
        return None
    try:
        import psutil
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().available), "available RAM (psutil)"
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(need: int, device: object, *, what: str, basis: str, hint: str) -> None:
    """Refuse (`MemoryLimitError`) *what* when its estimate *need* (bytes; *basis* says how it was counted) exceeds
    `available_memory` on *device*; nothing where the available memory cannot be known."""
    have = available_memory(device)
    if have is None or need <= have[0]:
        return
    raise MemoryLimitError(f"{what} needs about {format_bytes(need)} on {device} ({basis}), but only "
                           f"{format_bytes(have[0])} is {have[1]}; nothing was allocated. {hint}")  # fmt: skip


MAX_PIXELS_VAR = "SEGCORE_MAX_IMAGE_PIXELS"  # the largest image segcore decodes (pixels), or "none"
_PIL_LOCK = threading.Lock()


def image_pixel_limit() -> int | None:
    """The largest image (W x H pixels) segcore decodes: ``$SEGCORE_MAX_IMAGE_PIXELS`` (a number, or ``none`` for no
    limit), else PIL's ``Image.MAX_IMAGE_PIXELS`` (89,478,485 unless changed), its guard against decompression bombs."""
    from PIL import Image

    value = os.environ.get(MAX_PIXELS_VAR, "").strip().replace("_", "")
    if not value:
        return Image.MAX_IMAGE_PIXELS
    if value.lower() in ("none", "0"):
        return None
    try:
        limit = int(float(value))
    except ValueError:
        raise MemoryLimitError(f"{MAX_PIXELS_VAR}={value!r}: give a number of pixels (400000000) or 'none'") from None
    if limit < 0:
        raise MemoryLimitError(f"{MAX_PIXELS_VAR}={value!r}: give a number of pixels (400000000) or 'none'")
    return limit


def check_image_pixels(path: str | Path) -> None:
    """Refuse (`DataError`) an image file over `image_pixel_limit`, naming it with its size, before anything is
    decoded (the header alone is read); a raised limit is handed to PIL so it decodes the file. Files PIL cannot
    open are left to the decoder that reads them (its own message)."""
    from PIL import Image

    limit = image_pixel_limit()
    with _PIL_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # read the header of any size
        try:
            with Image.open(path) as im:
                width, height = im.size
        except (OSError, ValueError, SyntaxError):  # absent, not an image PIL knows: the decoder says so
            return
        finally:
            Image.MAX_IMAGE_PIXELS = saved
        if limit is not None and width * height > limit:
            raise DataError(
                f"{path}: image is {width} x {height} ({width * height / 1e6:.0f} Mpx), over the limit of {limit:,} "
                f"pixels segcore decodes (PIL's guard against decompression bombs); if you trust the file, raise it: "
                f"{MAX_PIXELS_VAR}={width * height} (or 'none') in the environment"
            )
        if os.environ.get(MAX_PIXELS_VAR, "").strip() and (limit is None or (saved is not None and limit > saved)):
            Image.MAX_IMAGE_PIXELS = limit  # the user's raised limit is PIL's too, so the decode passes its check


# -- what segcore wrote -----------------------------------------------------------------------------------------

WRITTEN = ".segcore-written.json"  # in a folder segcore writes: {"written": [relative paths or glob patterns]}
LOCK = ".segcore.lock"


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether relative path *name* (``a/b.png``) matches one of *patterns*, component by component (a ``*`` never
    crosses a ``/``)."""
    parts = name.split("/")
    for pattern in patterns:
        pp = pattern.split("/")
        if len(pp) == len(parts) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pp)):
            return True
    return False


def _walk(folder: Path, pattern: str) -> tuple[list[Path], list[Path]]:
    """(what exists under *folder* at *pattern*, the links met on the way), following no link."""
    level, links = [folder], []
    parts = pattern.split("/")
    for depth, part in enumerate(parts):
        found = []
        for parent in level:
            if any(c in part for c in "*?["):
                try:
                    entries = sorted(e for e in parent.iterdir() if fnmatch.fnmatchcase(e.name, part))
                except OSError:
                    entries = []
            else:
                entries = [parent / part]
            for entry in entries:
                if entry.is_symlink():
                    links.append(entry)
                elif entry.exists() and (depth == len(parts) - 1 or entry.is_dir()):
                    found.append(entry)
        level = found
    return level, links


def written(folder: str | Path) -> list[str]:
    """What segcore recorded as written in *folder* (`WRITTEN`): relative paths and glob patterns; [] without a
    record. `DamagedFileError` when the record cannot be read."""
    path = Path(folder) / WRITTEN
    if path.is_symlink():
        raise ForeignFileError(f"{path} is a link; segcore never reads or writes its records through links. Remove it.")
    if not path.is_file():
        return []
    try:
        names = json.loads(path.read_text(encoding="utf-8"))["written"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TypeError("'written' is not a list of names")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise DamagedFileError(
            f"{path}: damaged ({type(exc).__name__}: {exc}); it lists the files segcore wrote in {folder}. Delete it, "
            "and segcore will replace none of the files there (move away those you want rewritten)"
        ) from None
    return names


def claim(folder: str | Path, names: Iterable[str], *, what: str, hint: str, ours: Iterable[str] = ()) -> None:
    """Check that segcore may write (or replace, or delete) *names* in *folder*: relative paths, or glob patterns
    for names that come later (``checkpoints/ckpt-[0-9]*/state.json``). Each one that exists must be a file
    segcore wrote (in *folder*'s `WRITTEN` record, or matching *ours*: what an older segcore wrote without a
    record), and no link may be on the way; else `ForeignFileError` naming the file, *what* (the command or
    setting that writes) and *hint* (how to fix). Writes nothing: `record` the names once written."""
    folder = Path(folder)
    owned = [*written(folder), *ours]
    foreign: dict[Path, None] = {}
    for name in names:
        found, links = _walk(folder, name)
        if links:
            link = links[0]
            raise ForeignFileError(
                f"{what}: {link} is a link (to {os.readlink(link)}); segcore never writes or deletes through links, so "
                f"that nothing outside {folder} is touched. Replace the link by a folder or file, or {hint}"
            )
        for path in found:
            if not (path.is_file() and _matches(path.relative_to(folder).as_posix(), owned)):
                foreign[path] = None
    if foreign:
        shown = [str(p.relative_to(folder)) for p in foreign]
        raise ForeignFileError(
            f"{what}: {folder} holds {', '.join(shown[:5])}{' ...' if len(shown) > 5 else ''}, which segcore did not "
            f"write; segcore never replaces or deletes such files, --overwrite or not. {hint}"
        )


def record(folder: str | Path, names: Iterable[str], *, forget: Iterable[str] = ()) -> None:
    """Add *names* to what segcore wrote in *folder* (`WRITTEN`, written atomically); drop what matches *forget*
    (its own files it removed)."""
    forget = tuple(forget)
    kept = [n for n in written(folder) if not _matches(n, forget)]
    write_text(Path(folder) / WRITTEN, json.dumps({"written": sorted({*kept, *names})}, indent=1) + "\n")


def remove_written(folder: str | Path, names: Iterable[str], *, ours: Iterable[str] = ()) -> list[Path]:
    """Delete the files at *names* (relative paths, glob patterns) in *folder* that segcore wrote (its `WRITTEN`
    record, or matching *ours*), following no link; return them. Every other file stays, and so do the folders."""
    folder = Path(folder)
    owned = [*written(folder), *ours]
    removed = []
    for name in names:
        for path in _walk(folder, name)[0]:
            if path.is_file() and _matches(path.relative_to(folder).as_posix(), owned):
                path.unlink()
                removed.append(path)
    return removed


# -- folder locks -------------------------------------------------------------------------------------------------

_HELD: dict[str, list[int]] = {}  # real path of a locked folder -> [descriptor, handles]: re-entrant in a process


class FolderLock:
    """A held `lock_folder` lock: `release` (or garbage collection, or the process's end) lets it go."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._finalizer = weakref.finalize(self, _unlock, key)

    def release(self) -> None:
        self._finalizer()


def _unlock(key: str) -> None:
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        del _HELD[key]
        os.close(held[0])  # closing the descriptor drops the flock


def lock_folder(folder: str | Path, *, what: str, hint: str) -> FolderLock:
    """Hold an exclusive OS lock on *folder* (``flock`` on its `LOCK` file, which then names this process: pid,
    host, start time, command) while this process writes it; the kernel releases it when the process ends, killed
    or not. A second process gets `FolderInUseError` naming the holder, *what* and *hint*. Re-entrant within a
    process. Where ``fcntl`` is missing (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return FolderLock("")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        return FolderLock(key)
    path = folder / LOCK
    try:
        # no O_TRUNC: a process that finds the folder locked must still read who holds it
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ForeignFileError(f"{what}: {path} is a link; segcore never writes through links. Remove it") from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise FolderInUseError(f"{what}: {folder} is being written by another process ({_describe_holder(holder)}). "
                               f"{hint}") from None  # fmt: skip
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": sys.argv}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    _HELD[key] = [fd, 1]
    return FolderLock(key)


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        program, *args = info["command"]
        program = Path(program).parent.name if Path(program).name == "__main__.py" else Path(program).name  # -m segcore
        command = " ".join([program, *args])
        return f"pid {info['pid']} on host {info['host']}, since {info['started']}: {command}"
    except (ValueError, KeyError, TypeError, IndexError):
        return "it has not said who it is yet"
