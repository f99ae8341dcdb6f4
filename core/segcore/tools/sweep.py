"""``segcore sweep FILE``: an ablation as one file and one command.

A sweep file names a base pipeline and rows, each a few changes to it::

    base = "pipeline.toml"          # a pipeline file (relative to this file) or a preset name

    [sweep]
    seeds = [0, 1, 2]               # every row trains once per seed (train.seed)
    convention = "thop2x"           # how params/FLOPs are counted (segcore check --convention)
    input_size = [512, 1024]        # where FLOPs are counted (default: the base's run.input_size)
    out_dir = "runs/sweeps/table3"  # default: runs/sweeps/<this file's stem>
    focus_classes = ["pole", "sign"]  # optional: the table adds their mean IoU and every class's IoU per row

    [[row]]
    name = "HRNet"                  # the first row is the base row unless another says baseline = true
    published = { miou = 72.13, params_m = 65.86, gflops = 374.4 }

    [[row]]
    name = "+FUSM"
    set = { "model.decoder.name" = "fusm", "model.decoder.channels" = 256 }
    unset = ["train.epochs"]

``set`` paths are dotted paths into the base pipeline (after its own ``base`` is merged in); ``loss[0].weight``
indexes an array of tables. A set may add a key to a table the base has, never a table the base lacks; setting a
component's ``name`` to another component replaces its table (as a derived pipeline file does), so its other keys
come from the row alone. ``unset`` removes a key of the base (unsets apply before sets). Every problem of every row
(unknown keys, paths that do not exist, rows that do not structure or do not pass ``segcore check``, duplicate names)
is collected and raised as one `ConfigError` before anything trains.

Each row x seed trains in its own run folder, ``<out_dir>/<row folder>/seed<k>``: the trainer's files, plus
``sweep_pipeline.toml`` (the resolved pipeline: ``segcore run`` it to reproduce the run), ``sweep_run.json``
(status, threads, processes) and, for a run that failed, ``sweep_error.txt``. The table (`collect_table`,
`write_table`) is rebuilt from those folders alone.
"""

from __future__ import annotations

__all__ = [
    "RunSpec", "Sweep", "SweepInterrupted", "SweepResult", "collect_table", "format_counts", "load_sweep",
    "is_finished", "resume_command", "run_sweep", "same_run", "select_rows", "select_seeds", "write_record",
    "write_table",
]  # fmt: skip

import collections
import csv
import io
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
import tomllib
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from attrs import frozen

from segcore.config import dump_pipeline, pipeline_as_today, resolve_bases, structure_pipeline
from segcore.config.schema import PipelineConfig
from segcore.contracts.registry import Registry
from segcore.engine.rundir import NOT_IDENTITY_TRAIN_KEYS
from segcore.errors import ConfigError, SegcoreError, did_you_mean
from segcore.io import LOCK, atomic_dir, write_text
from segcore.model.check import check_pipeline, totals
from segcore.model.counting import Count, get_convention

SWEEP_KEYS = ("base", "sweep", "row")
SECTION_KEYS = ("seeds", "convention", "input_size", "out_dir", "focus_classes")
ROW_KEYS = ("name", "set", "unset", "published", "baseline")
PUBLISHED_KEYS = ("miou", "params_m", "gflops")
RESERVED = {"train.seed": "the [sweep] seeds set it", "run.out_dir": "the sweep gives every run its own folder"}

PIPELINE_FILE = "sweep_pipeline.toml"
RUN_FILE = "sweep_run.json"
ERROR_FILE = "sweep_error.txt"
TABLE_FILES = ("table.md", "table.csv", "table.json", "table.png")


class SweepInterrupted(SegcoreError):
    """Ctrl-C during a sweep: what finished is kept, the run in progress has a checkpoint (when the trainer got to
    write one); ``--resume`` continues."""


@frozen
class Row:
    name: str
    folder: str
    set: Mapping[str, Any]
    unset: tuple[str, ...]
    published: Mapping[str, float]
    baseline: bool


@frozen
class RunSpec:
    row: Row
    seed: int
    cfg: PipelineConfig
    folder: Path

    @property
    def label(self) -> str:
        return f"{self.row.name} seed {self.seed}"


@frozen
class Sweep:
    """A sweep file read, every row built and checked: the runs, and each row's count under the convention."""

    path: Path
    base: str
    seeds: tuple[int, ...]
    convention: str
    input_size: tuple[int, int]
    out_dir: Path
    rows: tuple[Row, ...]
    runs: tuple[RunSpec, ...]
    counts: Mapping[str, Count]  # row name -> inference params and MACs (training-only heads left out)
    focus_classes: tuple[str, ...] = ()  # class names whose mean IoU the table shows beside the mIoU

    @property
    def base_row(self) -> Row:
        return next((r for r in self.rows if r.baseline), self.rows[0])

    def runs_of(self, row: Row) -> list[RunSpec]:
        return [r for r in self.runs if r.row.name == row.name]


# -- reading ---------------------------------------------------------------------------------------------------------


def folder_name(name: str) -> str:
    """A row's folder: its name with ``+`` spelt ``plus`` and anything but letters, digits, ``.``, ``_`` as ``-``."""
    slug = re.sub(r"[^\w.]+", "-", name.replace("+", " plus ")).strip("-.")
    return slug or "row"


_SEGMENT = re.compile(r"^([^\[\]]+)((?:\[\d+\])*)$")


def _parse_path(path: str) -> list[str | int]:
    """``"loss[0].weight"`` -> ``["loss", 0, "weight"]``; ValueError for a malformed path."""
    if not isinstance(path, str) or not path:
        raise ValueError("a dotted path must be a non-empty string")
    steps: list[str | int] = []
    for part in path.split("."):
        m = _SEGMENT.match(part.strip())
        if not m:
            raise ValueError(f"malformed dotted path {path!r} (write it like model.decoder.channels or loss[0].weight)")
        steps.append(m.group(1))
        steps += [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
    return steps


def _show(steps: Sequence[str | int]) -> str:
    out = ""
    for s in steps:
        out += f"[{s}]" if isinstance(s, int) else (f".{s}" if out else s)
    return out or "<pipeline>"


def _walk(table: Any, steps: Sequence[str | int]) -> Any:
    """The container at *steps*; ValueError naming the first step that does not exist or is not a table."""
    node = table
    for i, step in enumerate(steps):
        here = _show(steps[: i + 1])
        if isinstance(step, int):
            if not isinstance(node, list):
                raise ValueError(f"{_show(steps[:i])} is not an array, so it has no [{step}]")
            if step >= len(node):
                raise ValueError(f"{_show(steps[:i])} has {len(node)} entries, so no [{step}]")
            node = node[step]
        else:
            if not isinstance(node, dict):
                raise ValueError(f"{_show(steps[:i]) or 'the pipeline'} is not a table, so it has no key {step!r}")
            if step not in node:
                keys = [k for k, v in node.items() if isinstance(v, (dict, list))]
                hint = did_you_mean(step, node)
                raise ValueError(f"the base pipeline has no table {here}{hint}"
                                 + (f" (tables there: {', '.join(keys)})" if keys and not hint else ""))
            node = node[step]
    return node


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))  # TOML values: dicts, lists, scalars (dates do not occur in pipelines)


def _apply(base: Mapping[str, Any], row: Row) -> tuple[dict[str, Any], list[str]]:
    """*base* with *row*'s unsets then sets applied; the problems, each ``<path>: <problem>``."""
    table = _copy(base)
    problems = []
    for path in row.unset:
        try:
            steps = _parse_path(path)
            parent = _walk(table, steps[:-1])
            leaf = steps[-1]
            if isinstance(leaf, int) or not isinstance(parent, dict):
                raise ValueError("unset removes a key of a table; give the key's dotted path")
            if leaf not in parent:
                raise ValueError(f"the base pipeline has no key {path}{did_you_mean(leaf, parent)}, so there is "
                                 "nothing to unset")  # fmt: skip
            del parent[leaf]
        except ValueError as exc:
            problems.append(f"unset {path}: {exc}")
    # a component's new name first (it replaces the component's table), outer tables before inner ones
    order = sorted(row.set, key=lambda p: (not str(p).endswith(".name") and p != "name", str(p).count(".")))
    for path in order:
        value = row.set[path]
        try:
            steps = _parse_path(path)
            if _show(steps) in RESERVED:
                raise ValueError(f"not settable in a row: {RESERVED[_show(steps)]}")
            parent = _walk(table, steps[:-1])
            leaf = steps[-1]
            if isinstance(leaf, int):
                if not isinstance(parent, list) or leaf >= len(parent):
                    raise ValueError(f"{_show(steps[:-1])} has no entry [{leaf}]")
                parent[leaf] = _copy(value)
            elif not isinstance(parent, dict):
                raise ValueError(f"{_show(steps[:-1])} is not a table")
            elif leaf == "name" and len(steps) > 1 and parent.get("name") not in (None, value):
                parent.clear()  # another component: its keys are another config class's (as in a derived file)
                parent["name"] = value
            else:
                parent[leaf] = _copy(value)
        except ValueError as exc:
            problems.append(f"set {path}: {exc}")
    return table, problems


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such sweep file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the sweep file: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}. See https://toml.io for the syntax.") from None


def _unknown(keys: Sequence[str], allowed: Sequence[str]) -> list[str]:
    return [f"unknown key {k!r}{did_you_mean(k, allowed)}; allowed: {', '.join(allowed)}" for k in keys if k not in allowed]


def _read_rows(raw_rows: Any, problems: list[str]) -> list[Row]:
    if not isinstance(raw_rows, list) or not raw_rows or not all(isinstance(r, dict) for r in raw_rows):
        problems.append("no rows: add [[row]] tables (name = \"...\", set = { ... }, unset = [...])")
        return []
    rows, seen = [], {}
    for i, raw in enumerate(raw_rows):
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"row {i + 1}: name: every row needs a name (a non-empty string)")
            name = f"#{i + 1}"
        where = f"row {name!r}"
        problems += [f"{where}: {p}" for p in _unknown(list(raw), ROW_KEYS)]
        sets = raw.get("set", {})
        if not isinstance(sets, dict):
            problems.append(f"{where}: set: must be a table of dotted path = value, like "
                            "set = { \"model.decoder.name\" = \"fcn\" }")  # fmt: skip
            sets = {}
        unset = raw.get("unset", [])
        if not isinstance(unset, list) or not all(isinstance(u, str) for u in unset):
            problems.append(f"{where}: unset: must be an array of dotted paths, like unset = [\"train.epochs\"]")
            unset = []
        published = raw.get("published", {})
        if not isinstance(published, dict):
            problems.append(f"{where}: published: must be a table like {{ miou = 73.25, params_m = 66.6, gflops = 385.0 }}")
            published = {}
        for key, value in published.items():
            if key not in PUBLISHED_KEYS:
                problems.append(f"{where}: published: unknown key {key!r}{did_you_mean(key, PUBLISHED_KEYS)}; "
                                f"allowed: {', '.join(PUBLISHED_KEYS)}")  # fmt: skip
            elif not isinstance(value, (int, float)) or isinstance(value, bool):
                problems.append(f"{where}: published.{key}: must be a number, got {value!r}")
        published = {k: float(v) for k, v in published.items() if k in PUBLISHED_KEYS and isinstance(v, (int, float))}
        baseline = raw.get("baseline", False)
        if not isinstance(baseline, bool):
            problems.append(f"{where}: baseline: must be true or false")
            baseline = False
        row = Row(name, folder_name(name), sets, tuple(unset), published, baseline)
        if name in seen:
            problems.append(f"{where}: duplicate row name (rows {seen[name] + 1} and {i + 1}); give each row its own name")
        else:
            clash = next((r for r in rows if r.folder == row.folder), None)
            if clash is not None:
                problems.append(f"{where}: its folder {row.folder!r} is row {clash.name!r}'s too; rename one of them")
            seen[name] = i
        rows.append(row)
    if sum(r.baseline for r in rows) > 1:
        problems.append(f"baseline = true on rows {', '.join(repr(r.name) for r in rows if r.baseline)}; mark one base row")
    return rows


def load_sweep(path: str | Path, *, registry: Registry, out_dir: str | Path | None = None) -> Sweep:
    """Read sweep file *path*, build and check every row x seed; one ConfigError with every problem found.
    *out_dir* replaces the file's ``[sweep] out_dir`` (``segcore sweep --out-dir``)."""
    path, override = Path(path), out_dir
    raw = _read_file(path)
    problems = [f"{p}" for p in _unknown(list(raw), SWEEP_KEYS)]
    section = raw.get("sweep", {})
    if not isinstance(section, dict):
        problems.append("sweep: must be a table ([sweep])")
        section = {}
    problems += [f"[sweep] {p}" for p in _unknown(list(section), SECTION_KEYS)]
    seeds = section.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        problems.append(f"[sweep] seeds: must be a non-empty array of whole numbers >= 0, got {seeds!r}")
        seeds = [0]
    elif len(set(seeds)) != len(seeds):
        problems.append(f"[sweep] seeds: {seeds!r} repeats a seed")
    convention = section.get("convention", "true")
    try:
        get_convention(convention)
    except (ConfigError, TypeError) as exc:
        problems.append(f"[sweep] convention: {exc}")
        convention = "true"
    input_size = section.get("input_size")
    if input_size is not None and not (isinstance(input_size, list) and len(input_size) == 2
                                       and all(isinstance(x, int) and x > 0 for x in input_size)):  # fmt: skip
        problems.append(f"[sweep] input_size: must be [height, width] (whole numbers > 0), got {input_size!r}")
        input_size = None
    out_dir = section.get("out_dir", str(Path("runs") / "sweeps" / path.stem.removesuffix(".sweep")))
    if override is not None:
        out_dir = str(override)
    if not isinstance(out_dir, str) or not out_dir:
        problems.append(f"[sweep] out_dir: must be a folder path, got {out_dir!r}")
        out_dir = str(Path("runs") / "sweeps" / path.stem)
    focus = section.get("focus_classes", [])
    if not (isinstance(focus, list) and all(isinstance(c, str) and c for c in focus)):
        problems.append(f'[sweep] focus_classes: must be an array of class names (focus_classes = ["pole", "sign"]), '
                        f"got {focus!r}")  # fmt: skip
        focus = []
    elif len(set(focus)) != len(focus):
        problems.append(f"[sweep] focus_classes: {focus!r} repeats a class")
    base = raw.get("base")
    base_table: dict[str, Any] | None = None
    if not isinstance(base, str) or not base:
        problems.append('base: missing; name the base pipeline: base = "pipeline.toml" (relative to this file) or a '
                        "preset name (segcore list)")  # fmt: skip
    else:
        try:
            base_table = resolve_bases({"base": base}, registry=registry, where=path)
        except SegcoreError as exc:
            problems.append(f"base: {exc}")
    rows = _read_rows(raw.get("row"), problems)

    runs: list[RunSpec] = []
    counts: dict[str, Count] = {}
    checked: dict[tuple[Any, ...], Any] = {}  # rows sharing a model are run on the meta device once
    size: tuple[int, int] | None = tuple(input_size) if input_size else None
    if base_table is not None:
        for row in rows:
            where = f"row {row.name!r}"
            table, row_problems = _apply(base_table, row)
            if row_problems:
                problems += [f"{where}: {p}" for p in row_problems]
                continue
            try:
                cfg = structure_pipeline(table, registry=registry, source="its pipeline")
            except SegcoreError as exc:
                problems.append(f"{where}: does not build: {exc}")
                continue
            if cfg.run.task != "train":
                problems.append(f'{where}: run.task: is "{cfg.run.task}"; a sweep trains every row (run.task = "train")')
                continue
            row_size = size or tuple(cfg.run.input_size)
            try:
                counted = check_pipeline(cfg, registry, input_size=row_size, convention=convention, cache=checked)
            except SegcoreError as exc:
                problems.append(f"{where}: does not pass segcore check: {exc}")
                continue
            except Exception as exc:  # a component that fails to build or run on the meta device
                problems.append(f"{where}: does not pass segcore check: {type(exc).__name__}: {exc}")
                continue
            counts[row.name] = totals(counted).inference
            if size is None:
                size = row_size
            for seed in seeds:
                folder = Path(out_dir) / row.folder / f"seed{seed}"
                run = attrs.evolve(cfg.run, out_dir=str(folder))
                runs.append(RunSpec(row, seed, attrs.evolve(cfg, train=attrs.evolve(cfg.train, seed=seed), run=run), folder))
    if focus and runs:
        from segcore.data.datasets import dataset_meta

        names = dataset_meta(runs[0].cfg.data.dataset, registry).class_names
        for c in focus:
            if c not in names:
                problems.append(f"[sweep] focus_classes: the dataset has no class {c!r}{did_you_mean(c, names)}; its "
                                f"classes: {', '.join(names)}")  # fmt: skip
    if problems:
        lines = "\n".join("  - " + p.replace("\n", "\n      ") for p in problems)
        raise ConfigError(f"{path}: {len(problems)} problem(s) in the sweep file; nothing was trained:\n{lines}\n"
                          "Fix them and run the command again (--dry-run checks the file without training).")  # fmt: skip
    return Sweep(path, base, tuple(seeds), convention, size or (512, 512), Path(out_dir), tuple(rows), tuple(runs), counts,
                 tuple(focus))


def select_rows(sweep: Sweep, names: Sequence[str] | None) -> list[Row]:
    """The rows ``--rows`` names (all when None); a ConfigError for a name the file does not have."""
    if not names:
        return list(sweep.rows)
    known = [r.name for r in sweep.rows]
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"--rows: {sweep.path} has no row {bad[0]!r}{did_you_mean(bad[0], known)}; its rows: "
                          f"{', '.join(map(repr, known))}")  # fmt: skip
    return [r for r in sweep.rows if r.name in names]


def select_seeds(sweep: Sweep, seeds: Sequence[int] | None) -> list[int] | None:
    """The seeds ``--seeds`` names, in the file's order (None: all the file's); a ConfigError for a seed ``[sweep]
    seeds`` does not list (a seed outside the file would be a run its table never shows)."""
    if not seeds:
        return None
    bad = [s for s in seeds if s not in sweep.seeds]
    if bad:
        fix = "add it there to train it, or pick among those" if bad[0] >= 0 else "seeds are whole numbers >= 0"
        raise ConfigError(f"--seeds: {sweep.path} has no seed {bad[0]} ([sweep] seeds = {list(sweep.seeds)}); {fix}")
    return [s for s in sweep.seeds if s in seeds]


def resume_command(sweep: Sweep, rows: Sequence[Row] | None = None, nproc: int = 1,
                   seeds: Sequence[int] | None = None) -> str:
    """The command that continues *sweep* where it is: its folder (``--out-dir``, which may not be the file's), the
    rows run (``--rows``, when not all), the seeds (``--seeds``, when not all) and the processes a run trains with
    (``--nproc-per-node``, when more than one: a run continued in another number would take other batches per
    process), quoted for a shell."""
    words = ["segcore", "sweep", str(sweep.path), "--out-dir", str(sweep.out_dir)]
    if rows and {r.name for r in rows} != {r.name for r in sweep.rows}:
        words += ["--rows", *(r.name for r in rows)]
    if seeds and set(seeds) != set(sweep.seeds):
        words += ["--seeds", *map(str, seeds)]
    if nproc > 1:
        words += ["--nproc-per-node", str(nproc)]
    return shlex.join([*words, "--resume"])


# -- counting ------------------------------------------------------------------------------------------------------


def _pct(measured: float, published: float | None) -> str:
    if published is None or published == 0:
        return ""
    return f"{100 * (measured - published) / published:+.2f} %"


def _flops_label(convention: str) -> str:
    unit = get_convention(convention).unit
    return "GMACs" if unit == "MAC" else f"GFLOPs ({unit})"


def format_counts(sweep: Sweep, rows: Sequence[Row] | None = None) -> str:
    """Per row: params (M) and FLOPs under the convention, the published ones beside them, the relative difference."""
    rows = list(rows or sweep.rows)
    conv = get_convention(sweep.convention)
    flops = _flops_label(sweep.convention)
    head = ("row", "params (M)", "published", "diff", flops, "published", "diff")
    body = []
    for r in rows:
        c = sweep.counts[r.name]
        p_params, p_flops = r.published.get("params_m"), r.published.get("gflops")
        body.append((r.name + (" (base)" if r is sweep.base_row else ""), f"{c.params / 1e6:.3f}",
                     "" if p_params is None else f"{p_params:.3f}", _pct(c.params / 1e6, p_params),
                     f"{c.macs / 1e9:.3f}", "" if p_flops is None else f"{p_flops:.3f}", _pct(c.macs / 1e9, p_flops)))  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()  # noqa: E731
    h, w = sweep.input_size
    title = (f"{sweep.path}: {len(sweep.rows)} rows x {len(sweep.seeds)} seeds -> {sweep.out_dir}/\n"
             f"counted at 1x3x{h}x{w}, convention {conv.name}: {conv.summary}; inference model (training-only heads "
             "left out)")  # fmt: skip
    return "\n".join([title, line(head), line(["-" * w for w in widths]), *map(line, body)])


# -- running -------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def is_finished(folder: Path) -> bool:
    """A run that ended: its final metrics.json, and its weights or the sweep's record that it is done. A finished
    run's weights, checkpoints and best/ may be deleted to keep it small (a record in a repository, say): the table
    only reads metrics.json, sweep_run.json and log.jsonl, and --resume keeps such a run."""
    metrics = _read_json(folder / "metrics.json")
    if not isinstance(metrics, dict) or "val" not in metrics:
        return False
    record = _read_json(folder / RUN_FILE)
    return (folder / "model.safetensors").is_file() or (isinstance(record, dict) and record.get("status") == "done")


def same_run(written: str, wanted: str, *, registry: Registry | None = None) -> bool:
    """Whether a run folder's ``sweep_pipeline.toml`` (*written*) is the pipeline a row x seed resolves to now
    (*wanted*), wherever the sweep folder is: a moved or copied folder (another ``--out-dir``) is the same run.
    With *registry*, *written* is validated again by today's schema first, so that a key added to segcore since the
    run was trained counts at its default (a run that predates ``train.fast_resize`` trained without it); a key
    that was removed or renamed makes it another run; keys that change only what a run writes
    (`segcore.engine.rundir.COSMETIC_TRAIN_KEYS`: checkpoints, logs, plots) and keys that compute the same values
    another way (`SAME_VALUES_TRAIN_KEYS`: train.fast_dilated) do not count. A row whose ``train.amp`` is
    ``"auto"`` (bf16 where the machine computes it natively, fp32 elsewhere) keeps a run trained with ``"bf16"`` or
    ``"none"``."""
    try:
        a, b = tomllib.loads(written), tomllib.loads(wanted)
    except tomllib.TOMLDecodeError:
        return False
    if registry is not None:
        try:
            a = pipeline_as_today(a, registry=registry)
        except ConfigError:
            return False
    for table in (a, b):
        table.get("run", {}).pop("out_dir", None)
        for key in NOT_IDENTITY_TRAIN_KEYS:  # what a run writes or how it computes, not what it trains
            table.get("train", {}).pop(key, None)
    if b.get("train", {}).get("amp") == "auto" and isinstance(a.get("train"), dict) and "amp" in a["train"]:
        a["train"]["amp"] = "auto"  # "auto" is the machine's precision: a run trained in bf16 or fp32 is one of it
    return a == b


def _has_runs(out_dir: Path) -> list[Path]:
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.glob("*/seed*") if p.is_dir() and any(p.iterdir()))


@frozen
class SweepResult:
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    failed: Mapping[str, str]  # run label -> error (first line)


def _record(folder: Path, **values: Any) -> None:
    old = _read_json(folder / RUN_FILE) or {}
    write_text(folder / RUN_FILE, json.dumps(old | values, indent=1))


def _workers(spec: RunSpec, nproc: int) -> dict[str, Any]:
    import torch

    device = spec.cfg.run.device
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    threads = int(os.environ.get("OMP_NUM_THREADS", "1")) if nproc > 1 else torch.get_num_threads()
    return {"device": "cuda" if cuda else "cpu", "processes": nproc, "threads_per_process": threads}


def _torchrun(spec: RunSpec, pipeline: Path, *, resume: bool, nproc: int, say: Callable[[str], None]) -> None:
    """The run through torchrun (``torch.distributed.run``, this interpreter's): ``segcore run`` per process."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "segcore", "run", str(pipeline), "-q", *(["--resume"] if resume else [])]  # fmt: skip
    tail: collections.deque[str] = collections.deque(maxlen=40)
    first_error = None  # a worker's "error: ..." line (segcore run's message), usually far above torchrun's report
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.rstrip("\n"))
            if first_error is None and line.startswith("error: "):
                first_error = line.rstrip("\n").removeprefix("error: ")
            say(line.rstrip("\n"))
        code = proc.wait()
    except KeyboardInterrupt:  # the workers got the terminal's Ctrl-C too: let them write their checkpoint
        proc.wait()
        raise
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        text = "\n".join(tail)
        what = f"{first_error} (torchrun exited with code {code})" if first_error else f"torchrun exited with code {code}"
        raise SegcoreError(f"{what}\n--- torchrun's last lines ({' '.join(cmd)}):\n{text}")


def run_sweep(sweep: Sweep, registry: Registry, *, rows: Sequence[Row] | None = None, resume: bool = False,
              nproc: int = 1, progress: bool = True, say: Callable[[str], None] = print,
              runner: Callable[..., Any] | None = None, seeds: Sequence[int] | None = None) -> SweepResult:  # fmt: skip
    """Train and evaluate *rows* (default: all) x *seeds* (default: the file's; `select_seeds`), one run at a time.
    Finished runs are skipped (``resume``), half-finished ones continue from their newest checkpoint; a failing run
    is recorded (``sweep_error.txt``, ``sweep_run.json``) and the sweep goes on. Ctrl-C: `SweepInterrupted` (after
    the trainer's checkpoint)."""
    from tqdm import tqdm

    from segcore.engine.run import run_pipeline
    from segcore.engine.trainer import Interrupted

    runner = runner or run_pipeline
    names = {r.name for r in (rows or sweep.rows)}
    todo = [s for s in sweep.runs if s.row.name in names and (not seeds or s.seed in seeds)]
    existing = _has_runs(sweep.out_dir)
    if existing and not resume:
        raise ConfigError(
            f"{sweep.out_dir} already holds runs of a sweep ({len(existing)} run folders, e.g. {existing[0]}): pass "
            "--resume to continue it (finished runs are kept, half-finished ones continue), or set [sweep] out_dir "
            "to another folder, or move that one away"
        )
    skipped, stale = [], []
    for spec in todo:
        if is_finished(spec.folder):
            written = spec.folder / PIPELINE_FILE
            if written.is_file() and not same_run(written.read_text(encoding="utf-8"), dump_pipeline(spec.cfg),
                                                   registry=registry):
                stale.append(f"{spec.label}: {spec.folder} was trained with another pipeline ({written} differs from "
                             "this row's now); move the folder away to train the row again, or restore the row")  # fmt: skip
            skipped.append(spec)
    if stale:
        raise ConfigError("the sweep file changed since these runs finished:\n" + "\n".join(f"  - {s}" for s in stale))
    pending = [s for s in todo if s not in skipped]
    if skipped:
        say(f"--resume: {len(skipped)} finished run(s) kept, {len(pending)} to run")
    failed: dict[str, str] = {}
    ran = []
    bar = tqdm(total=len(pending), desc="sweep", unit="run", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    write = (lambda m: bar.write(m, file=sys.stderr)) if progress else say
    try:
        for spec in pending:
            bar.set_postfix_str(f"row {spec.row.name!r} seed {spec.seed}", refresh=True)
            folder = spec.folder
            folder.mkdir(parents=True, exist_ok=True)
            (folder / ERROR_FILE).unlink(missing_ok=True)
            write_text(folder / PIPELINE_FILE, dump_pipeline(spec.cfg))
            again = (folder / "run.json").is_file()  # an earlier attempt: continue from its newest checkpoint
            _record(folder, row=spec.row.name, seed=spec.seed, status="running", **_workers(spec, nproc))
            start = time.perf_counter()
            try:
                if nproc > 1:
                    _torchrun(spec, folder / PIPELINE_FILE, resume=again, nproc=nproc, say=write)
                else:
                    runner(spec.cfg, registry, progress=False, resume=again)
            except (Interrupted, KeyboardInterrupt):
                _record(folder, status="interrupted")
                raise SweepInterrupted(
                    f"interrupted during {spec.label} ({folder}); finished runs are kept. Continue with: "
                    f"{resume_command(sweep, rows, nproc, seeds)}"
                ) from None
            except Exception as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if not isinstance(exc, SegcoreError):
                    message = f"{type(exc).__name__}: {message}"
                failed[spec.label] = message
                write_text(folder / ERROR_FILE, "".join(traceback.format_exception(exc)))
                _record(folder, status="failed", error=message, wall_s=round(time.perf_counter() - start, 1))
                write(f"sweep: {spec.label} failed: {message} (traceback in {folder / ERROR_FILE}); going on")
            else:
                _record(folder, status="done", wall_s=round(time.perf_counter() - start, 1))
                ran.append(spec.label)
            bar.update()
    finally:
        bar.close()
    return SweepResult(tuple(ran), tuple(s.label for s in skipped), failed)


# -- the table -----------------------------------------------------------------------------------------------------


def _std(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def _mean_present(values: Sequence[Any]) -> float | None:
    """100 x the mean of the numbers that are not NaN/None (a class absent from a run's val split has no IoU)."""
    present = [float(v) for v in values if isinstance(v, (int, float)) and v == v]
    return 100 * statistics.fmean(present) if present else None


def _last_elapsed(folder: Path) -> float | None:
    path = folder / "log.jsonl"
    if not path.is_file():
        return None
    elapsed = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "elapsed_s" in record:
            elapsed = float(record["elapsed_s"])
    return elapsed


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


CPU_HOURS_NOTE = ("cpu_hours: the trainer's wall clock (log.jsonl elapsed_s, summed over resumed sessions, the final "
                  "evaluation left out) x torch threads x processes, summed over the row's seeds; for runs on CUDA "
                  "gpu_hours: wall clock x processes")  # fmt: skip


def collect_table(sweep: Sweep, registry: Registry) -> dict[str, Any]:
    """The table from the run folders alone: per row params, FLOPs, val mIoU mean/std over seeds (%), per-class IoU
    means, the paired difference to the base row, CPU-hours, and the published values beside the measured ones."""
    from segcore.data.datasets import dataset_meta

    per_seed: dict[str, dict[int, dict[str, Any]]] = {}
    for row in sweep.rows:
        per_seed[row.name] = {}
        for spec in sweep.runs_of(row):
            if not is_finished(spec.folder):
                continue
            metrics = _read_json(spec.folder / "metrics.json")
            record = _read_json(spec.folder / RUN_FILE) or {}
            per_seed[row.name][spec.seed] = {"val": metrics["val"], "elapsed_s": _last_elapsed(spec.folder),
                                             "record": record}  # fmt: skip
    base = sweep.base_row
    base_miou = {s: 100 * v["val"]["mIoU"] for s, v in per_seed[base.name].items()}
    out_rows = []
    for row in sweep.rows:
        done = per_seed[row.name]
        mious = {s: 100 * v["val"]["mIoU"] for s, v in sorted(done.items())}
        states = {spec.seed: (_read_json(spec.folder / RUN_FILE) or {}).get("status") for spec in sweep.runs_of(row)}
        failed = [s for s in sweep.seeds if s not in done and states.get(s) == "failed"]
        missing = [s for s in sweep.seeds if s not in done and s not in failed]
        c = sweep.counts[row.name]
        entry: dict[str, Any] = {
            "name": row.name, "folder": row.folder, "base": row is base,
            "params": c.params, "params_m": _r(c.params / 1e6, 4), "flops": c.macs, "gflops": _r(c.macs / 1e9, 4),
            "miou": {"per_seed": {str(s): _r(v, 4) for s, v in mious.items()},
                     "mean": _r(statistics.fmean(mious.values()), 4) if mious else None,
                     "std": _r(_std(list(mious.values())), 4), "n": len(mious)},
            "failed_seeds": failed, "missing_seeds": missing,
        }  # fmt: skip
        if done:
            meta = dataset_meta(sweep.runs_of(row)[0].cfg.data.dataset, registry)
            ious = [v["val"].get("IoU") for v in done.values()]
            if all(isinstance(i, list) and len(i) == len(meta.class_names) for i in ious):
                per_class = {name: [100 * i[k] for i in ious if isinstance(i[k], (int, float)) and i[k] == i[k]]
                             for k, name in enumerate(meta.class_names)}  # NaN: the class is absent from val
                entry["per_class_iou"] = {name: _r(_mean_present([i[k] for i in ious]), 4)
                                          for k, name in enumerate(meta.class_names)}
                entry["per_class_iou_pct"] = {name: {"mean": _r(statistics.fmean(v), 2) if v else None,
                                                     "std": _r(_std(v), 2)} for name, v in per_class.items()}
                if sweep.focus_classes:
                    idx = [meta.class_names.index(c) for c in sweep.focus_classes]
                    focus = {str(s): _mean_present([v["val"]["IoU"][k] for k in idx]) for s, v in sorted(done.items())}
                    focus = {s: f for s, f in focus.items() if f is not None}
                    entry["focus_miou"] = {"per_seed": {s: _r(f, 4) for s, f in focus.items()},
                                           "mean": _r(statistics.fmean(focus.values()), 4) if focus else None,
                                           "std": _r(_std(list(focus.values())), 4), "n": len(focus)}
        if row is not base:
            pairs = [mious[s] - base_miou[s] for s in mious if s in base_miou]
            entry["delta_miou"] = {"mean": _r(statistics.fmean(pairs), 4) if pairs else None,
                                   "std": _r(_std(pairs), 4), "n_pairs": len(pairs)}  # fmt: skip
        hours: dict[str, float] = {}
        for v in done.values():
            rec = v["record"]
            if v["elapsed_s"] is None:
                continue
            procs = int(rec.get("processes", 1))
            if rec.get("device") == "cuda":
                hours["gpu_hours"] = hours.get("gpu_hours", 0.0) + v["elapsed_s"] * procs / 3600
            else:
                threads = int(rec.get("threads_per_process", 1))
                hours["cpu_hours"] = hours.get("cpu_hours", 0.0) + v["elapsed_s"] * threads * procs / 3600
        entry |= {k: _r(v, 4) for k, v in hours.items()}
        if row.published:
            entry["published"] = dict(row.published)
            diff = {}
            if "miou" in row.published and entry["miou"]["mean"] is not None:
                diff["miou"] = _r(entry["miou"]["mean"] - row.published["miou"], 4)
            for key, measured in (("params_m", c.params / 1e6), ("gflops", c.macs / 1e9)):
                if row.published.get(key):
                    diff[f"{key}_pct"] = _r(100 * (measured - row.published[key]) / row.published[key], 4)
            entry["published_diff"] = diff
        out_rows.append(entry)
    conv = get_convention(sweep.convention)
    return {
        "sweep": str(sweep.path), "base_pipeline": sweep.base, "seeds": list(sweep.seeds),
        "convention": {"name": conv.name, "unit": conv.unit, "summary": conv.summary},
        "input_size": list(sweep.input_size), "base_row": base.name, "focus_classes": list(sweep.focus_classes),
        "notes": ["miou, per_class_iou, delta_miou in % (val split, the final evaluation of each run); std with "
                  "ddof=1 over seeds; delta_miou pairs each seed with the base row's same seed",
                  f"params and gflops: the inference model under convention {conv.name} at "
                  f"{sweep.input_size[0]}x{sweep.input_size[1]} ({_flops_label(sweep.convention)})", CPU_HOURS_NOTE,
                  *([f"focus mIoU: per seed the mean IoU of {', '.join(sweep.focus_classes)}, then mean ± std over "
                     "seeds"] if sweep.focus_classes else [])],
        "rows": out_rows,
    }  # fmt: skip


def _pm(mean: float | None, std: float | None, signed: bool = False) -> str:
    if mean is None:
        return "-"
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return text + (f" ± {std:.2f}" if std is not None else "")


def _table_cells(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    flops = _flops_label(table["convention"]["name"])
    focus = bool(table.get("focus_classes"))
    head = ["row", "params (M)", flops, "val mIoU (%)", *(["focus mIoU (%)"] if focus else []), "seeds", "Δ vs base",
            "CPU-h", "published mIoU", "published params (M)", f"published {flops.split(' ')[0]}"]  # fmt: skip
    body = []
    for r in table["rows"]:
        m = r["miou"]
        seeds = f"{m['n']}/{len(table['seeds'])}" + (f" ({len(r['failed_seeds'])} failed)" if r["failed_seeds"] else "")
        delta = "base" if r["base"] else _pm(r["delta_miou"]["mean"], r["delta_miou"]["std"], signed=True)
        hours = "-"
        if "cpu_hours" in r or "gpu_hours" in r:
            hours = " + ".join(f"{r[k]:.3f}{' GPU' if k == 'gpu_hours' else ''}" for k in ("cpu_hours", "gpu_hours") if k in r)
        pub = r.get("published", {})
        body.append([r["name"] + (" (base)" if r["base"] else ""), f"{r['params_m']:.3f}", f"{r['gflops']:.3f}",
                     _pm(m["mean"], m["std"]),
                     *([_pm(r.get("focus_miou", {}).get("mean"), r.get("focus_miou", {}).get("std"))] if focus else []),
                     seeds, delta, hours,
                     f"{pub['miou']:.2f}" if "miou" in pub else "", f"{pub['params_m']:.3f}" if "params_m" in pub else "",
                     f"{pub['gflops']:.3f}" if "gflops" in pub else ""])  # fmt: skip
    return head, body


def format_markdown(table: dict[str, Any]) -> str:
    head, body = _table_cells(table)
    out = [f"# {Path(table['sweep']).name}: {len(table['rows'])} rows x seeds {table['seeds']}", "",
           "| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]  # fmt: skip
    out += ["| " + " | ".join(c or " " for c in cells) + " |" for cells in body]
    classes = next((list(r["per_class_iou_pct"]) for r in table["rows"] if "per_class_iou_pct" in r), None)
    if classes and table.get("focus_classes"):
        focus = set(table["focus_classes"])
        out += ["", "Per-class val IoU (%), mean ± std over seeds; focus classes in bold:", "",
                "| row | " + " | ".join(f"**{c}**" if c in focus else c for c in classes) + " |",
                "|---|" + "---:|" * len(classes)]  # fmt: skip
        for r in table["rows"]:
            pct = r.get("per_class_iou_pct", {})
            out.append(f"| {r['name']} | " + " | ".join(_pm(pct.get(c, {}).get("mean"), pct.get(c, {}).get("std"))
                                                         for c in classes) + " |")  # fmt: skip
    out += ["", *(f"- {n}" for n in table["notes"]), ""]
    return "\n".join(out)


def format_csv(table: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "base", "params", "params_m", "gflops", "miou_mean", "miou_std", "seeds_done", "seeds_failed",
                "delta_mean", "delta_std", "delta_pairs", "cpu_hours", "gpu_hours", "published_miou",
                "published_params_m", "published_gflops", "focus_miou_mean", "focus_miou_std"])  # fmt: skip
    for r in table["rows"]:
        d = r.get("delta_miou", {})
        p = r.get("published", {})
        w.writerow([r["name"], r["base"], r["params"], r["params_m"], r["gflops"], r["miou"]["mean"], r["miou"]["std"],
                    r["miou"]["n"], len(r["failed_seeds"]), d.get("mean"), d.get("std"), d.get("n_pairs"),
                    r.get("cpu_hours"), r.get("gpu_hours"), p.get("miou"), p.get("params_m"), p.get("gflops"),
                    r.get("focus_miou", {}).get("mean"), r.get("focus_miou", {}).get("std")])  # fmt: skip
    return buf.getvalue().replace(",None", ",")


def _bar_panel(ax: Any, rows: Sequence[dict[str, Any]], key: str, label: str, published: bool,
               n_seeds: int) -> None:  # fmt: skip
    """One panel of `plot_table`: the rows' *key* ({"per_seed", "mean", "std"}) with seed dots; a row with fewer than
    *n_seeds* finished says how many under its name. The axis spans the values; where it then starts above 0 the
    means are drawn as diamonds, not bars, since a bar cut off at the axis would show a ratio that is not there."""
    x = list(range(len(rows)))
    stats = [r.get(key) or {"per_seed": {}, "mean": None, "std": None} for r in rows]
    means = [m["mean"] if m["mean"] is not None else 0.0 for m in stats]
    stds = [m["std"] or 0.0 for m in stats]
    colors = ["tab:orange" if r["base"] else "tab:blue" for r in rows]
    done = [v for m in stats for v in m["per_seed"].values()] + [m for m in means if m]
    if published:
        done += [r["published"]["miou"] for r in rows if "miou" in r.get("published", {})]
    bottom = 0.0
    if done:
        lo, hi = min(done), max(done)
        pad = max(1.0, 0.15 * (hi - lo))
        bottom = max(0.0, lo - pad - max(stds, default=0))
        ax.set_ylim(bottom, hi + pad + max(stds, default=0))
    if bottom > 0:
        for i in (i for i, m in enumerate(stats) if m["mean"] is not None):
            ax.errorbar([i], [means[i]], yerr=[stds[i]], fmt="D", markersize=9, capsize=5, color=colors[i],
                        markeredgecolor="black", ecolor="black", elinewidth=1, zorder=2)  # fmt: skip
    else:
        ax.bar(x, means, yerr=stds, capsize=4, color=colors, alpha=0.8, edgecolor="black", linewidth=0.5)
    for i, m in enumerate(stats):
        values = list(m["per_seed"].values())
        ax.scatter([i] * len(values), values, s=12, color="black", zorder=3)
        if published and "miou" in rows[i].get("published", {}):
            ax.scatter([i], [rows[i]["published"]["miou"]], marker="x", s=40, color="tab:red", zorder=4)
    base = next((m for r, m in zip(rows, stats) if r["base"]), None)
    if base is not None and base["mean"] is not None:
        ax.axhline(base["mean"], color="tab:orange", linestyle="--", linewidth=1)
    # a long row name in lines of 22 characters at most, so that neighbouring names do not run into each other
    names = [textwrap.fill(r["name"], 22) + ("" if len(m["per_seed"]) == n_seeds
                                             else f"\n({len(m['per_seed'])} of {n_seeds} seeds)")
             for r, m in zip(rows, stats)]  # fmt: skip
    ax.set_xticks(x, names, rotation=30 if len(rows) > 4 else 0, ha="right" if len(rows) > 4 else "center")
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylabel(label)
    ax.grid(axis="y", alpha=0.3)


def plot_table(table: dict[str, Any], path: Path) -> None:
    """Mean val mIoU per row (bars from 0, or diamonds on an axis that starts above 0), error bars the std over
    seeds, each seed a dot, the base row highlighted, the published mIoU a cross where given; with focus classes a
    second panel, their mean IoU, the same way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segcore.io import atomic_write

    rows = table["rows"]
    focus = table.get("focus_classes") or []
    width = max(6.0, 1.1 * len(rows) + 1.5)
    fig, axes = plt.subplots(1, 2 if focus else 1, figsize=(2 * width if focus else width, 4.0), squeeze=False)
    try:
        n_seeds = len(table["seeds"])
        _bar_panel(axes[0][0], rows, "miou", "val mIoU (%)", published=True, n_seeds=n_seeds)
        if focus:
            _bar_panel(axes[0][1], rows, "focus_miou", "focus mIoU (%)", published=False, n_seeds=n_seeds)
            axes[0][1].set_title(f"focus classes: {', '.join(focus)}", fontsize=9)
        fig.suptitle(f"{Path(table['sweep']).name}: mean ± std over seeds {table['seeds']}, dots: seeds, orange: base"
                     + (", x: published" if any("miou" in r.get("published", {}) for r in rows) else ""),
                     fontsize=9)  # fmt: skip
        fig.tight_layout()
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)


def write_table(table: dict[str, Any], out_dir: Path) -> list[Path]:
    """table.md, table.csv, table.json and table.png in *out_dir*, each written atomically."""
    out_dir = Path(out_dir)
    paths = [out_dir / name for name in TABLE_FILES]
    write_text(paths[0], format_markdown(table))
    write_text(paths[1], format_csv(table))
    write_text(paths[2], json.dumps(table, indent=1, allow_nan=False, default=str) + "\n")
    plot_table(table, paths[3])
    return paths


# what a record of a sweep leaves out of each finished run: the weights, the checkpoints, the per-run plots, the lock
RECORD_LEAVES = ("*.safetensors", "checkpoints", "best", "plots", LOCK)


def write_record(sweep: Sweep, registry: Registry, dest: str | Path) -> tuple[list[str], list[Path]]:
    """Copy the sweep's finished runs to *dest* without `RECORD_LEAVES` (a small record to keep, in a repository say)
    and write the table there; returns the runs copied and the table's files. The record is a sweep folder of its
    own: ``--table`` and ``--resume --out-dir`` work on it (its runs stay finished, `is_finished`), and
    ``segcore hub evidence`` reads it. Each run folder is replaced whole (`segcore.io.atomic_dir`)."""
    dest = Path(dest)
    if dest.resolve() == sweep.out_dir.resolve():
        raise ConfigError(f"--record {dest}: that is the sweep's own folder; give another (e.g. hub/evidence/<name>)")
    runs, copied = [], []
    for spec in sweep.runs:
        folder = dest / spec.folder.relative_to(sweep.out_dir)
        runs.append(attrs.evolve(spec, folder=folder, cfg=attrs.evolve(spec.cfg, run=attrs.evolve(spec.cfg.run,
                                                                                              out_dir=str(folder)))))
        if is_finished(spec.folder):
            with atomic_dir(folder, drop=RECORD_LEAVES) as tmp:
                shutil.copytree(spec.folder, tmp, ignore=shutil.ignore_patterns(*RECORD_LEAVES), dirs_exist_ok=True)
            copied.append(spec.label)
    if not copied:
        raise ConfigError(f"--record: {sweep.out_dir} holds no finished run yet; nothing to record (segcore sweep "
                          f"{sweep.path} --resume trains them)")  # fmt: skip
    record = attrs.evolve(sweep, out_dir=dest, runs=tuple(runs))
    return copied, write_table(collect_table(record, registry), dest)

