"""Reference pages generated from the code, so they cannot drift: the pipeline reference from the attrs schema
(``segcore.config.schema``) and the command line from the argparse parser (``segcore.cli.main.make_parser``).

A key's help text is the comment beside its field (or the comment lines right above it) in the class body; a table's
text is its class docstring. ``tests/test_docs.py`` checks that the pipeline reference names every schema field and
gives each one a help text; the mkdocs hook (``segcore_docs.py``) puts both pages into the site.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import io
import os
import re
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import attrs

# -- help text from the source ------------------------------------------------------------------------------------


def _comments(source: str) -> dict[int, str]:
    """Line number (1-based) -> the comment on it, without ``#`` and tool directives (``fmt: skip``)."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if text and not text.startswith(("fmt:", "noqa", "type:")):
                out[tok.start[0]] = text
    return out


def field_help(cls: type) -> dict[str, str]:
    """Field name -> its help text: the comment lines right above the field, then the comment beside it, for every
    field the class (or a base class in its MRO) declares in its body."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not attrs.has(klass) or klass.__module__ == "builtins":
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        comments, lines = _comments(source), source.splitlines()
        (classdef,) = ast.parse(source).body
        for stmt in classdef.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            above, n = [], stmt.lineno - 1
            while n >= 1 and lines[n - 1].strip().startswith("#") and n in comments:
                above.insert(0, comments[n])
                n -= 1
            beside = [comments[i] for i in range(stmt.lineno, stmt.end_lineno + 1) if i in comments]
            text = " ".join(above + beside)
            if text:
                helps[stmt.target.id] = text
    return helps


def _docstring_clause(cls: type, name: str) -> str:
    """The first clause (up to ``;`` or the end of a sentence) of the class docstrings in *cls*'s MRO that names
    ````name```` (how ``LossSpec`` documents ``weight``, ``heads`` and ``extras``)."""
    for klass in cls.__mro__:
        doc = " ".join(_doc(klass).split())
        for clause in re.split(r"(?<=[.;])\s+(?=``|[A-Z])", doc):
            if f"``{name}``" in clause or f"``{name} =" in clause:
                return clause.rstrip(";").replace("``", "`")
    return ""


def help_texts(cls: type) -> dict[str, str]:
    """Field name -> help text for every field of *cls*: its comment (`field_help`), else the clause of the class
    docstring that names it, else empty."""
    helps = field_help(cls)
    return {f.name: helps.get(f.name) or _docstring_clause(cls, f.name) for f in attrs.fields(cls)}


def _doc(cls: type) -> str:
    doc = cls.__dict__.get("__doc__") or ""
    return inspect.cleandoc(doc) if doc and not doc.startswith(f"{cls.__name__}(") else ""


# -- types and defaults as TOML ------------------------------------------------------------------------------------

_SCALARS = {str: "string", int: "integer", float: "float", bool: "boolean"}


def toml_type(tp: Any) -> str:
    """A Python annotation as the TOML a user writes: ``tuple[int, int] | None`` -> ``[integer, integer]``."""
    if isinstance(tp, str):
        return tp
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _SCALARS:
        return _SCALARS[tp]
    if origin is Literal:
        return " \\| ".join(f'`"{a}"`' if isinstance(a, str) else f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [toml_type(a) for a in args if a is not type(None)]
        return " or ".join(parts)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"array of {toml_type(args[0])}"
        return "[" + ", ".join(toml_type(a) for a in args) + "]"
    if origin in (Mapping, dict) or (origin is not None and isinstance(origin, type) and issubclass(origin, Mapping)):
        return f"table of {toml_type(args[1])}" if args else "table"
    if attrs.has(tp):
        return "table"
    return getattr(tp, "__name__", str(tp))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def toml_default(field: attrs.Attribute) -> str:
    default = field.default
    if default is attrs.NOTHING:
        return "**required**"
    if isinstance(default, attrs.Factory):
        default = default.factory() if not default.takes_self else attrs.NOTHING
        if default is attrs.NOTHING:
            return "computed"
    if default is None:
        return "not set"
    if attrs.has(type(default)):
        return "its table's defaults"
    return f"`{_toml_value(default)}`"


def _resolve(cls: type) -> None:
    """Turn the class's string annotations (PEP 563) into types, where they resolve."""
    try:
        attrs.resolve_types(cls)
    except Exception:  # an annotation that does not resolve is shown as written
        pass


def _nested(tp: Any) -> tuple[type, str] | None:
    """The attrs class inside an annotation and how it nests: ``table``, ``array`` (``[[...]]``) or ``map``
    (``[....<name>]``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if attrs.has(tp):
        return tp, "table"
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _nested(inner[0]) if len(inner) == 1 else None
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and attrs.has(args[0]):
        return args[0], "array"
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping) and attrs.has(args[1]):
        return args[1], "map"
    return None


# -- the pipeline reference ---------------------------------------------------------------------------------------

# A component table's ``name`` picks the component (the converter pops it; see segcore.config.convert), ``config``
# is the rest of the table structured into that component's config class: not a key of its own.
_COMPONENT_KEYS = {"name": ("string", "**required**", "the registered component (`segcore list` shows them)")}
_PLACEHOLDER = {"aux": "NAME", "attention": "SLOT"}


def _table_name(path: list[str], kind: str) -> str:
    return f"[[{'.'.join(path)}]]" if kind == "array" else f"[{'.'.join(path)}]"


def _anchor(name: str) -> str:
    return "".join(c for c in name.lower().replace(".", "-") if c.isalnum() or c in "-_")


def schema_tables(root: type | None = None) -> Iterator[tuple[str, type, list[tuple[str, str, str, str]]]]:
    """Every table of a pipeline file: (TOML table name, its attrs class, rows of (key, type, default, help))."""
    from segcore.config.schema import ComponentSpec, PipelineConfig

    root = root or PipelineConfig
    seen: dict[type, str] = {}
    walked: set[type] = {root}

    def walk(cls: type, path: list[str], kind: str) -> Iterator[tuple[str, type, list]]:
        name = _table_name(path, kind) if path else "(top level)"
        _resolve(cls)
        first = seen.setdefault(cls, name)
        helps, rows, children = help_texts(cls), [], []
        if issubclass(cls, ComponentSpec):
            rows.append(("name", *_COMPONENT_KEYS["name"]))
        for f in attrs.fields(cls):
            if issubclass(cls, ComponentSpec) and f.name in ("name", "config"):
                continue
            nested = _nested(f.type)
            if nested:
                sub_cls, sub_kind = nested
                sub_path = path + ([f.name, _PLACEHOLDER.get(f.name, "NAME")] if sub_kind == "map" else [f.name])
                sub_name = _table_name(sub_path, sub_kind)
                where = seen.setdefault(sub_cls, sub_name)  # the first place a table is reached names it
                rows.append((f.name, f"table [`{where}`](#{_anchor(where)})" if sub_kind != "array"
                             else f"array of tables [`{where}`](#{_anchor(where)})", toml_default(f), helps.get(f.name, "")))
                if where == sub_name and sub_cls not in walked:
                    walked.add(sub_cls)
                    children.append((sub_cls, sub_path, sub_kind))
            else:
                rows.append((f.name, toml_type(f.type), toml_default(f), helps.get(f.name, "")))
        if first == name:
            yield name, cls, rows
        for sub_cls, sub_path, sub_kind in children:
            yield from walk(sub_cls, sub_path, sub_kind)

    yield from walk(root, [], "table")


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows_table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, type_, default, help_ in rows:
        type_ = type_ if "\\|" in type_ or "[`" in type_ else _esc(type_)
        out.append(f"| `{key}` | {type_} | {default} | {_esc(help_)} |")
    return out


def pipeline_reference(registry: Any = None) -> str:
    """Markdown: every table of the schema with its keys; with *registry*, every registered component's own keys."""
    lines: list[str] = []
    for name, cls, rows in schema_tables():
        lines += [f"## `{name}`" + " { #" + _anchor(name) + " }", ""]
        doc = _doc(cls)
        if doc:
            lines += [doc.replace("``", "`"), ""]
        lines += [*_rows_table(rows), ""]
        if any(r[0] == "name" for r in rows):
            lines += ["Every other key of this table is a field of the named component's config class: see "
                      "[components](#components).", ""]
    if registry is not None:
        lines += component_reference(registry)
    return "\n".join(lines)


def component_reference(registry: Any) -> list[str]:
    """The keys each registered component adds to its table (its config class), stage by stage."""
    from segcore.contracts.stages import STAGES

    lines = ["## Components { #components }", "",
             "The components installed when this page was built, and the keys each one takes in its table besides "
             "`name` (from its config class; the help text is the comment beside the field in the plugin's code).", ""]
    for stage in STAGES:
        entries = registry.entries(stage)
        if not entries:
            continue
        lines += [f"### {stage.__name__}", ""]
        for e in entries:
            dist = f"{e.plugin.dist} {e.plugin.version}" if e.plugin.dist else e.plugin.name
            lines += [f"#### `{e.name}`" + " { #" + f"{stage.__name__.lower()}-{e.name}" + " }", "",
                      f"`{e.cls.__module__}.{e.cls.__qualname__}` with `{e.config.__qualname__}`, from {dist}.", ""]
            _resolve(e.config)
            helps = help_texts(e.config)
            rows = [(f.name, toml_type(f.type), toml_default(f), helps.get(f.name, "")) for f in attrs.fields(e.config)]
            lines += [*_rows_table(rows), ""] if rows else ["No keys besides `name`.", ""]
    return lines


# -- the command line ---------------------------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser, prefix: str) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", helps.get(name) or "", sub
                yield from _subcommands(sub, f"{prefix} {name}")


def cli_reference() -> str:
    """Markdown: ``segcore --help`` and every (sub)command's ``--help``, as argparse prints them."""
    from segcore.cli.main import make_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "110"  # argparse wraps at the terminal's width: fix it
    try:
        parser = make_parser()
        lines = ["## `segcore`", "", "```text", parser.format_help().rstrip(), "```", ""]
        for name, help_, sub in _subcommands(parser, "segcore"):
            lines += [f"## `{name}`", ""]
            if help_:
                lines += [help_[0].upper() + help_[1:] + ("" if help_.endswith(".") else "."), ""]
            lines += ["```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(lines)
