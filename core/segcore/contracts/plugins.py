"""Plugin discovery with pluggy: core's built-ins and installed distributions go through the same hook."""

from __future__ import annotations

__all__ = ["BUILTIN_PLUGINS", "DISABLE_VAR", "get_plugin_manager", "load_registry"]

import importlib
import importlib.metadata
import os
import types
from typing import Any

import pluggy

from segcore.contracts import hookspecs
from segcore.errors import PluginError
from segcore.contracts.registry import PluginInfo, Registry

BUILTIN_PLUGINS = ("segcore.builtin.backbones", "segcore.builtin.enhancers", "segcore.builtin.decoders",
                   "segcore.builtin.losses", "segcore.builtin.datasets")
DISABLE_VAR = "SEGCORE_DISABLE_PLUGINS"
AUTOLOAD_OFF_VAR = "SEGCORE_DISABLE_PLUGIN_AUTOLOAD"
ENTRY_POINT_GROUP = "segcore"


class _Manager(pluggy.PluginManager):
    def __init__(self) -> None:
        super().__init__("segcore")
        self.infos: dict[str, PluginInfo] = {}
        self.load_problems: list[PluginError] = []


def get_plugin_manager(*, autoload: bool = True) -> _Manager:
    """A new manager with core's built-ins and (unless *autoload* is off) every installed ``segcore`` entry point.

    ``SEGCORE_DISABLE_PLUGINS=a,b`` blocks plugins by name, built-ins included; a plugin that fails to import is
    recorded in ``pm.load_problems`` and the others still load.
    """
    pm = _Manager()
    pm.add_hookspecs(hookspecs)
    for name in filter(None, (n.strip() for n in os.environ.get(DISABLE_VAR, "").split(","))):
        pm.set_blocked(name)
    version = importlib.metadata.version("segcore")
    for modname in BUILTIN_PLUGINS:
        if not pm.is_blocked(modname):
            pm.register(importlib.import_module(modname), name=modname)
            pm.infos[modname] = PluginInfo(modname, "segcore", version)
    if autoload and not os.environ.get(AUTOLOAD_OFF_VAR):
        _load_entry_points(pm)
    pm.check_pending()
    return pm


def _load_entry_points(pm: _Manager) -> None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
            continue
        info = PluginInfo(ep.name, ep.dist.name if ep.dist else None, ep.dist.version if ep.dist else None)
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            pm.load_problems.append(
                PluginError(
                    f"could not load {info}: {type(exc).__name__}: {exc}. "
                    f"Reinstall the plugin, or skip it with {DISABLE_VAR}={ep.name}."
                )
            )
            continue
        pm.register(module, name=ep.name)
        pm.infos[ep.name] = info


def load_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Call every plugin's ``segcore_register`` into a new `Registry`, one plugin at a time.

    A plugin whose hook raises (a component that is not a stage, any bug) is reported in ``registry.problems`` with
    its name and distribution, and its registrations are dropped. A name two plugins register costs only that
    entry of the later one (see `Registry.add`).
    """
    pm = pm or get_plugin_manager()
    registry = Registry()
    infos = getattr(pm, "infos", {})
    registry.problems.extend(getattr(pm, "load_problems", []))
    for impl in _registration_order(pm):
        info = infos.get(impl.plugin_name) or PluginInfo(impl.plugin_name, _dist_of(impl.plugin))
        try:
            with registry.registering(info):
                impl.function(registry=registry)
        except Exception as exc:
            msg = str(exc) if str(info) in str(exc) else f"{info} failed to register: {type(exc).__name__}: {exc}"
            registry.problems.append(PluginError(msg))
    return registry


def _registration_order(pm: pluggy.PluginManager) -> list[Any]:
    """Built-ins first, then tryfirst, plain and trylast hooks (pluggy's list holds trylast first, since it calls
    the list from its end). Who registers a name first keeps it; the order only decides who that is."""
    builtin = set(BUILTIN_PLUGINS)
    impls = pm.hook.segcore_register.get_hookimpls()
    return sorted(impls, key=lambda i: (i.plugin_name not in builtin, 0 if i.tryfirst else 2 if i.trylast else 1))


def _dist_of(plugin: object) -> str | None:
    if isinstance(plugin, types.ModuleType):
        top = plugin.__name__.partition(".")[0]
        dists = importlib.metadata.packages_distributions().get(top)
        return dists[0] if dists else None
    return None
