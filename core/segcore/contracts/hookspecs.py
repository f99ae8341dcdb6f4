"""The hooks a segcore plugin implements. Their docstrings are the contract."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from segcore.contracts.registry import Registry

hookspec = pluggy.HookspecMarker("segcore")
hookimpl = pluggy.HookimplMarker("segcore")


@hookspec
def segcore_register(registry: Registry) -> None:
    """Add this plugin's components, presets and pretrained names to *registry*.

    Called once per registry, for every plugin, in no promised order. Only call ``registry.add``,
    ``registry.add_preset`` and ``registry.add_pretrained`` here: no I/O, no downloads, no CUDA. If this hook
    raises, everything the plugin added is dropped and the failure is reported with the plugin's name and
    distribution; the other plugins are unaffected.
    """
