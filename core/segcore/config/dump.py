"""Writing a pipeline back: config objects as plain TOML values, and as TOML text."""

from __future__ import annotations

__all__ = ["dump_pipeline", "unstructure"]

import functools
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from segcore.config.schema import OMIT_IF_DEFAULT, ComponentSpec, PipelineConfig


def _empty_default(f: attrs.Attribute) -> bool:
    """A field whose default is None, () or {}: absent from TOML, it reads back the same, so it is left out when it
    has that value (TOML has no null; every None here is a default)."""
    default = f.default.factory() if isinstance(f.default, attrs.Factory) and not f.default.takes_self else f.default
    return default is None or (default in ((), {}) and not isinstance(default, (str, bool, int, float)))


@functools.cache
def _converter() -> cattrs.Converter:
    conv = cattrs.Converter(unstruct_collection_overrides={tuple: list})

    def unstructure_attrs(cls: type) -> Any:
        omit = {f.name: override(omit_if_default=True) for f in attrs.fields(cls)
                if _empty_default(f) or f.metadata.get(OMIT_IF_DEFAULT)}  # fmt: skip
        plain = make_dict_unstructure_fn(cls, conv, **omit)
        order = [f.name for f in attrs.fields(cls)]

        def table(obj: Any) -> dict[str, Any]:  # cattrs writes the omittable keys last: keep the class's order
            out = plain(obj)
            return {k: out[k] for k in order if k in out}

        return table

    def unstructure_component(spec: ComponentSpec) -> dict[str, Any]:
        """Flattened: ``{name, <the spec's own keys>, <the component config's keys>}``, None and {} left out."""
        table: dict[str, Any] = {"name": spec.name}
        table |= {f.name: getattr(spec, f.name) for f in attrs.fields(type(spec)) if f.name not in ("name", "config")}
        if attrs.has(type(spec.config)):
            table |= {f.name: getattr(spec.config, f.name) for f in attrs.fields(type(spec.config))}
        return {k: conv.unstructure(v) for k, v in table.items() if v is not None and v != {}}

    def unstructure_mapping(value: Mapping[Any, Any]) -> dict[str, Any]:
        return {str(k): conv.unstructure(v) for k, v in value.items() if v is not None}

    conv.register_unstructure_hook_func(lambda t: isinstance(t, type) and issubclass(t, ComponentSpec),
                                        unstructure_component)  # fmt: skip
    conv.register_unstructure_hook_factory(lambda t: attrs.has(t) and not issubclass(t, ComponentSpec), unstructure_attrs)
    conv.register_unstructure_hook_func(lambda t: isinstance(t, type) and issubclass(t, Mapping), unstructure_mapping)
    return conv


def unstructure(obj: Any) -> Any:
    """A config object as plain TOML values: component tables flattened to ``{name, <own keys>, <config keys>}``,
    tuples as lists, ``None`` left out (TOML has no null; every None here is a default). Reads back equal:
    ``structure_pipeline(unstructure(cfg)) == cfg``."""
    return _converter().unstructure(obj)


def dump_pipeline(cfg: PipelineConfig) -> str:
    """The resolved pipeline as TOML text (no ``base``: every value explicit)."""
    import tomli_w

    return tomli_w.dumps(unstructure(cfg))
