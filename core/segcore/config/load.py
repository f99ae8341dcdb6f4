"""Reading pipeline files: TOML, ``base`` (presets and files) merged in, structured and validated whole."""

from __future__ import annotations

__all__ = ["load_pipeline", "read_toml", "resolve_bases", "structure_pipeline", "structure_table"]

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import cattrs

from segcore.config.convert import format_errors, make_converter
from segcore.config.schema import PipelineConfig
from segcore.errors import ConfigError, SegcoreError, did_you_mean

if TYPE_CHECKING:
    from segcore.contracts.registry import Registry


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; anything else (values, arrays) in *over* replaces *base*'s.

    A component table whose ``name`` changes is replaced whole, since its keys belong to another config class.
    """
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        both = isinstance(old, Mapping) and isinstance(value, Mapping)  # a value over a table replaces it (and fails later)
        if both and ("name" not in value or old.get("name") == value["name"]):
            out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def read_toml(path: Path, *, registry: Registry, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parse *path*, resolving ``base = "<preset or file>"`` (a file relative to this one), recursively."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such pipeline file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read pipeline file: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}. See https://toml.io for the syntax.") from None
    return resolve_bases(raw, registry=registry, where=path, _seen=(*_seen, str(path.resolve())))


def _preset(registry: Registry, name: str) -> dict[str, Any]:
    """Preset *name*'s table, its top-level keys checked against the pipeline's sections. The registry keeps presets
    as plain TOML tables (it does not know the schema): a misspelt section is reported here, naming the plugin that
    registered the preset."""
    table = registry.preset(name)
    sections = ["base", *(f.name for f in attrs.fields(PipelineConfig))]
    bad = [k for k in table if k not in sections]
    if bad:
        plugin = registry.presets().get(name)
        raise ConfigError(f"{plugin}: preset {name!r}: unknown section {bad[0]!r}{did_you_mean(bad[0], sections)}; "
                          f"sections: {', '.join(sections)}")  # fmt: skip
    return table


def resolve_bases(raw: Mapping[str, Any], *, registry: Registry, where: Path | str = "<pipeline>",
                  _seen: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """*raw* merged over its ``base`` (a preset name, or a .toml path relative to *where*), which may have its own."""
    raw = dict(raw)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{where}: base: must be a preset name or a path to a TOML file, got {base!r}")
    if base.endswith(".toml"):
        base_path = (Path(where).parent / base).resolve() if str(where) != "<pipeline>" else Path(base).resolve()
        if str(base_path) in _seen:
            raise ConfigError(f"{where}: base: {base!r} includes itself")
        parent = read_toml(base_path, registry=registry, _seen=_seen)
    else:
        if f"preset:{base}" in _seen:
            raise ConfigError(f"{where}: base: preset {base!r} includes itself")
        try:
            table = _preset(registry, base)
        except SegcoreError as exc:
            raise ConfigError(f"{where}: base: {exc}") from None
        parent = resolve_bases(table, registry=registry, where=f"preset {base!r}", _seen=(*_seen, f"preset:{base}"))
    return _merge(parent, raw)


def structure_table(raw: Mapping[str, Any], cls: type, *, registry: Registry, source: str) -> Any:
    """Structure *raw* into *cls* (a pipeline, or one component table); one ConfigError listing every problem."""
    try:
        return make_converter(registry).structure(raw, cls)
    except (cattrs.BaseValidationError, SegcoreError, ValueError, TypeError) as exc:
        raise format_errors(exc, raw, source) from None


def structure_pipeline(raw: Mapping[str, Any], *, registry: Registry, source: str = "<pipeline>") -> PipelineConfig:
    """Validate a parsed pipeline table whole; raise one ConfigError listing every problem."""
    return structure_table(raw, PipelineConfig, registry=registry, source=source)


def pipeline_as_today(raw: Mapping[str, Any], *, registry: Registry) -> dict[str, Any]:
    """A recorded pipeline table (a run's ``pipeline.toml``, a sweep run's ``sweep_pipeline.toml``) as today's schema
    reads it: validated and written out again, every key explicit, so that a key segcore gained since it was written
    appears at its default (segcore's rule: a new key's default is what segcore did before the key existed) and two
    records compare equal when they are the same pipeline. `ConfigError` when today's schema rejects it (a key
    removed or renamed since)."""
    from segcore.config.dump import dump_pipeline

    return tomllib.loads(dump_pipeline(structure_pipeline(raw, registry=registry)))


def load_pipeline(path: str | Path, *, registry: Registry) -> PipelineConfig:
    """Read, merge its bases and validate pipeline file *path*."""
    raw = read_toml(Path(path), registry=registry)
    return structure_pipeline(raw, registry=registry, source=str(path))
