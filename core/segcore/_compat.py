"""Old import paths of modules that moved into the layer subpackages (0.1 layout), kept working for now.

``import segcore.stages`` gives the very module ``segcore.contracts.stages`` (so monkeypatching either name patches
both) and warns once with the new path. The table is data: the import graph never sees these as edges, and nothing
inside segcore may use an old path (the tests check that).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

__all__ = ["MOVED", "install"]

MOVED = {
    "segcore.stages": "segcore.contracts.stages",
    "segcore.registry": "segcore.contracts.registry",
    "segcore.hookspecs": "segcore.contracts.hookspecs",
    "segcore.plugins": "segcore.contracts.plugins",
    "segcore.validators": "segcore.contracts.validators",
    "segcore.augment": "segcore.data.augment",
    "segcore.hubdata": "segcore.data.hubdata",
    "segcore.metrics": "segcore.engine.metrics",
    "segcore.check": "segcore.model.check",
    "segcore.counting": "segcore.model.counting",
    "segcore.weights": "segcore.model.weights",
    "segcore.pretrained": "segcore.model.pretrained",
    "segcore.fastpath": "segcore.inference.fast",
    "segcore.export": "segcore.inference.onnx",
    "segcore.bench": "segcore.tools.bench",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path will be removed in segcore 0.3", DeprecationWarning,
                      stacklevel=3)  # fmt: skip
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the module is the moved one, already executed


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
