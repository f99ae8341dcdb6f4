"""The cattrs converter for pipeline files, and its errors as messages with TOML paths.

TOML has types, so the scalar hooks are strict ("3" is not an int, 1 is not a bool); extra keys are refused; a
component table (``name`` + keys) is structured into the config class its component registered. Every problem of a
file is collected and reported at once, each at its TOML path with the bad value and the allowed choices
(`format_errors`).
"""

from __future__ import annotations

__all__ = ["format_errors", "make_converter", "strict_converter"]

import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs
import cattrs
from cattrs.errors import AttributeValidationNote, ClassValidationError, ForbiddenExtraKeysError

from segcore.config.schema import ComponentSpec
from segcore.errors import ConfigError, SegcoreError, did_you_mean

if TYPE_CHECKING:
    from segcore.contracts.registry import Registry


def _strict(kind: type, accept: tuple[type, ...], what: str):
    def hook(value: Any, _: type) -> Any:
        if isinstance(value, bool) and kind is not bool or not isinstance(value, accept):
            raise TypeError(f"expected {what}, got {value!r} ({type(value).__name__})")
        return kind(value)

    return hook


def strict_converter(*, forbid_extra_keys: bool = True) -> cattrs.Converter:
    """A converter for typed files (TOML, JSON): "3" is not an int and 1 is not a bool (cattrs would coerce both)."""
    conv = cattrs.Converter(forbid_extra_keys=forbid_extra_keys)
    conv.register_structure_hook(int, _strict(int, (int,), "an integer"))
    conv.register_structure_hook(float, _strict(float, (int, float), "a number"))
    conv.register_structure_hook(bool, _strict(bool, (bool,), "true or false"))
    conv.register_structure_hook(str, _strict(str, (str,), "a string"))
    return conv


def make_converter(registry: Registry) -> cattrs.Converter:
    """The converter for pipeline files, with component tables looked up in *registry*."""
    conv = strict_converter()

    def structure_union(value: Any, union: Any) -> Any:
        """``int | tuple[int, ...]`` and the like: the member whose TOML kind (array, table, scalar) the value has."""
        members = [m for m in typing.get_args(union) if m is not type(None)]
        if value is None and len(members) < len(typing.get_args(union)):
            return None
        kind = list if isinstance(value, list) else Mapping if isinstance(value, Mapping) else None
        for m in members:
            origin = typing.get_origin(m) or m
            if kind is list and origin in (tuple, list):
                return conv.structure(value, m)
            if kind is Mapping and (origin in (dict, Mapping) or attrs.has(m)):
                return conv.structure(value, m)
        scalars = [m for m in members if m in (int, float, bool, str)]
        errors = []
        for m in scalars if kind is None else ():
            try:
                return conv.structure(value, m)
            except TypeError as exc:
                errors.append(exc)
        names = " or ".join(getattr(m, "__name__", str(m)) for m in members)
        raise TypeError(f"expected {names}, got {value!r} ({type(value).__name__})")

    def is_mixed_union(t: Any) -> bool:  # cattrs handles Optional[X] itself; this covers scalar-or-array unions
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return typing.get_origin(t) in (typing.Union, types.UnionType) and len(args) > 1

    conv.register_structure_hook_func(is_mixed_union, structure_union)

    def structure_component(value: Any, spec_cls: type[ComponentSpec]) -> ComponentSpec:
        kind = spec_cls.stage.__name__.lower()
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a table like {{ name = \"...\" }} naming a {kind}, got {value!r}")
        installed = ", ".join(e.name for e in registry.entries(spec_cls.stage)) or "none"
        if "name" not in value:
            raise ConfigError(f"missing key 'name': which {kind} to use; installed: {installed}")
        name = value["name"]
        if not isinstance(name, str):
            raise ConfigError(f"name must be a string, got {name!r}; installed: {installed}")
        plugin = value.get("plugin")
        if plugin is not None and not isinstance(plugin, str):
            raise ConfigError(f"plugin must be a string naming the plugin (or distribution) whose {kind} {name!r} to "
                              f"use, got {plugin!r}")  # fmt: skip
        entry = registry.get(spec_cls.stage, name, plugin=plugin)
        own = {f.name: f for f in attrs.fields(spec_cls) if f.name not in ("name", "config", "plugin")}
        errors: list[Exception] = []
        kwargs: dict[str, Any] = {}
        for key, fld in own.items():
            if key not in value:
                continue
            try:
                kwargs[key] = conv.structure(value[key], fld.type)
            except Exception as exc:
                exc.__notes__ = [*getattr(exc, "__notes__", []), AttributeValidationNote(f"@ {key}", key, fld.type)]
                errors.append(exc)
        slots = getattr(entry.cls, "attention_slots", ())
        for slot in kwargs.get("attention", {}):
            if slot not in slots:
                err = ConfigError(
                    f"{kind} {name!r} has no attention slot {slot!r}{did_you_mean(slot, slots)}; "
                    f"its slots: {', '.join(slots) or 'none'}"
                )
                err.__notes__ = [AttributeValidationNote("@ attention", "attention", None)]
                errors.append(err)
        rest = {k: v for k, v in value.items() if k not in ("name", "plugin") and k not in own}
        try:
            config = conv.structure(rest, entry.config)
        except ClassValidationError as exc:
            errors.extend(_with_own_keys(e, own) for e in exc.exceptions)
        except Exception as exc:
            errors.append(_with_own_keys(exc, own))
        if errors:
            raise ClassValidationError(f"While structuring {kind} {name!r}", errors, entry.config)
        try:
            return spec_cls(name=name, config=config, plugin=plugin, **kwargs)
        except ValueError as exc:  # a validator of a core-level key (weight, ...)
            raise ConfigError(str(exc)) from None

    conv.register_structure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, ComponentSpec), structure_component
    )
    return conv


# -- error messages -----------------------------------------------------------------------------------------------


def _unknown_keys(keys: Iterable[str], allowed: list[str]) -> str:
    keys = sorted(keys)
    return f"unknown key {', '.join(map(repr, keys))}{did_you_mean(keys[0], allowed)}; allowed: {', '.join(allowed)}"


def _with_own_keys(exc: BaseException, own: Iterable[str]) -> BaseException:
    """An unknown key in a component table: the allowed keys are ``name``, the spec's own keys (``weight``,
    ``attention``, ``in_channels``, ...) and the component's config fields."""
    if not isinstance(exc, ForbiddenExtraKeysError) or not attrs.has(exc.cl):
        return exc
    allowed = ["name", *own, *(a.name for a in attrs.fields(exc.cl)), "plugin"]
    return ConfigError(_unknown_keys(exc.extra_fields, allowed))


def _error_text(exc: BaseException, type_: Any) -> str:
    """One structuring error as the text after its TOML path (cattrs' ``format_exception`` for the rest)."""
    if isinstance(exc, SegcoreError) or (isinstance(exc, (ValueError, TypeError)) and type_ is None):
        return str(exc)
    if isinstance(exc, ForbiddenExtraKeysError):  # a section's table (component tables: _with_own_keys)
        return _unknown_keys(exc.extra_fields, [a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else [])
    if typing.get_origin(type_) is Literal:
        return f"must be one of {', '.join(map(repr, typing.get_args(type_)))}"
    if isinstance(exc, KeyError):
        return "missing required key"
    if isinstance(type_, type) and attrs.has(type_) and isinstance(exc, (TypeError, AttributeError)):
        return "expected a table of keys, not a single value"
    if isinstance(exc, TypeError) and str(exc).startswith("expected "):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def _lookup(raw: Any, path: str) -> tuple[bool, Any]:
    """The raw TOML value at a dotted path like ``loss[0].weight`` (found, value)."""
    node = raw
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            i = int(part[1:-1])
            if not isinstance(node, list) or i >= len(node):
                return False, None
            node = node[i]
        elif isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return False, None
    return True, node


def format_errors(exc: BaseException, raw: Mapping[str, Any], source: str, *, kind: str = "pipeline config",
                  error: type[SegcoreError] = ConfigError) -> SegcoreError:  # fmt: skip
    """Every problem in *exc* (a cattrs validation error, or one error) as one *error* (a ConfigError): a line per
    problem with its path in *raw* and, for a scalar, the value found there."""
    lines = []
    for msg in cattrs.transform_error(exc, path="", format_exception=_error_text):
        what, _, where = msg.rpartition(" @ ")
        where = re.sub(r"\['([^']*)'\]", r".\1", where).lstrip(".")
        found, value = _lookup(raw, where)
        if found and not isinstance(value, (Mapping, list)) and "got " not in what:
            what += f" (got {value!r})"
        lines.append(f"  {where or '(top level)'}: {what}")
    return error(f"{source}: invalid {kind}\n" + "\n".join(lines))
