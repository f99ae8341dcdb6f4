"""The model: building a pipeline's network from the registry, checking it, counting it, its weights."""

from segcore.model.build import *  # noqa: F403
from segcore.model.build import __all__ as _build

__all__ = list(_build)
