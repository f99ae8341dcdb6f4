"""The verbs of the top-level API, in timm's manner: create a model, list what is installed and what is pretrained."""

from __future__ import annotations

__all__ = ["create_model", "list_components", "list_pretrained"]

import fnmatch
from collections.abc import Mapping
from typing import Any

from segcore.config import ModelConfig, resolve_bases, structure_table
from segcore.contracts.plugins import load_registry
from segcore.contracts.registry import Registry
from segcore.contracts.stages import STAGES
from segcore.errors import ConfigError, did_you_mean
from segcore.hub.manifest import zoo
from segcore.model.build import SegModel, build_model

_STAGE_NAMES = {s.__name__.lower(): s for s in STAGES}


def create_model(model: str | Mapping[str, Any] | ModelConfig, *, num_classes: int,
                 registry: Registry | None = None) -> SegModel:  # fmt: skip
    """A model with fresh weights from a ``[model]`` table (a dict as in a pipeline file), a `ModelConfig`, or the
    name of a registered preset (its ``[model]`` table).

    >>> import segcore
    >>> model = segcore.create_model({"backbone": {"name": "timm", "model_name": "resnet18", "out_indices": [4]},
    ...                               "decoder": {"name": "fcn"}}, num_classes=3)
    >>> sum(p.numel() for p in model.parameters()) > 0
    True
    """
    registry = registry if registry is not None else load_registry()
    if isinstance(model, str):
        raw = resolve_bases({"base": model}, registry=registry, where=f"create_model({model!r})")
        if "model" not in raw:
            raise ConfigError(f"create_model: preset {model!r} has no [model] table; pass a [model] table instead")
        model, source = raw["model"], f"preset {model!r}"
    else:
        source = "create_model"
    cfg = model if isinstance(model, ModelConfig) else structure_table(dict(model), ModelConfig, registry=registry,
                                                                       source=source)  # fmt: skip
    return build_model(cfg, registry, num_classes=num_classes)


def list_components(stage: str | None = None, pattern: str = "*", *, registry: Registry | None = None) -> list[str]:
    """Registered component names, sorted; *stage* (``"decoder"``, ``"loss"``, ...) narrows to one stage, where names
    are given as ``stage:name`` otherwise; *pattern* is a shell-style filter on the name.

    >>> "fcn" in segcore.list_components("decoder")
    True
    """
    registry = registry if registry is not None else load_registry()
    if stage is not None and stage not in _STAGE_NAMES:
        raise ConfigError(f"list_components: unknown stage {stage!r}{did_you_mean(stage, _STAGE_NAMES)}; "
                          f"stages: {', '.join(_STAGE_NAMES)}")  # fmt: skip
    stages = [_STAGE_NAMES[stage]] if stage is not None else STAGES
    out = []
    for s in stages:
        for entry in registry.entries(s):
            if fnmatch.fnmatchcase(entry.name, pattern):
                out.append(entry.name if stage is not None else f"{s.__name__.lower()}:{entry.name}")
    return sorted(out)


def list_pretrained(pattern: str = "*", *, registry: Registry | None = None) -> list[str]:
    """The pretrained names ``from_pretrained`` accepts (the zoo manifest and what plugins register), sorted."""
    registry = registry if registry is not None else load_registry()
    return [n for n in zoo(registry) if fnmatch.fnmatchcase(n, pattern)]
