"""The registry: every component, preset and pretrained name, with the plugin that provided it."""

from __future__ import annotations

__all__ = ["Entry", "PluginInfo", "Pretrained", "Registry"]

import contextlib
import inspect
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
from attrs import frozen

from segcore.errors import ConfigError, RegistryError, did_you_mean
from segcore.contracts.stages import STAGES, WIRING, stage_of

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@frozen
class PluginInfo:
    """Where registrations come from: the plugin's name and the distribution (and version) that ships it."""

    name: str
    dist: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        where = f" from {self.dist} {self.version}" if self.dist else ""
        return f'plugin "{self.name}"{where}'


_DIRECT = PluginInfo("(direct)")  # registrations outside any plugin's hook


@frozen
class Entry:
    """One registered component.

    ``formerly`` names the distributions that provided it before (a component that moved between plugins, or into
    core): model folders saved with one of them load with this entry. ``aliases`` are deprecated old names that still
    resolve to it (with a DeprecationWarning).
    """

    stage: type
    name: str
    cls: type
    config: type
    tiny: Any = None
    plugin: PluginInfo = PluginInfo("?")
    formerly: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    def build(self, cfg: Any = None, **wiring: Any) -> Any:
        """``cls(cfg, **wiring)``; *cfg* is a `config` instance, a mapping of its fields, or None for the defaults
        (a config with required fields then raises a `ConfigError` naming them)."""
        if cfg is None or isinstance(cfg, Mapping):
            given = dict(cfg or {})
            required = [f.name for f in attrs.fields(self.config) if f.default is attrs.NOTHING and f.name not in given]
            if required:
                raise ConfigError(
                    f"{self.stage.__name__.lower()} {self.name!r} ({self.plugin}): {self.config.__name__} has required "
                    f"field{'s' if len(required) > 1 else ''} {', '.join(required)}; pass cfg={self.config.__name__}(...)"
                )
            cfg = self.config(**given)
        return self.cls(cfg, **wiring)

    def provided_by(self, dist: str | None) -> bool:
        """Whether distribution *dist* provides (or used to provide) this component."""
        return dist is None or self.plugin.dist is None or dist == self.plugin.dist or dist in self.formerly


@frozen
class Pretrained:
    """A pretrained name ("hrnet_l-camvid") pointing at a Hub model repo at a pinned revision, with the sha256 of
    its ``model.safetensors`` (checked on load)."""

    name: str
    repo_id: str
    revision: str | None = None
    sha256: str | None = None
    plugin: PluginInfo = PluginInfo("?")


class Registry:
    """Components by stage and name, presets (named pipeline tables) and pretrained names.

    Plugins fill it in their ``segcore_register`` hook; `segcore.plugins.load_registry` builds one from every
    installed plugin.
    """

    def __init__(self) -> None:
        self._entries: dict[type, dict[str, Entry]] = {stage: {} for stage in STAGES}
        self._aliases: dict[type, dict[str, tuple[str, PluginInfo]]] = {stage: {} for stage in STAGES}
        # a name two plugins register: every plugin's entry, first one first; `get` then needs the plugin named
        self._contested: dict[type, dict[str, list[Entry]]] = {stage: {} for stage in STAGES}
        self._presets: dict[str, tuple[dict[str, Any], PluginInfo]] = {}
        self._pretrained: dict[str, Pretrained] = {}
        self._plugin = _DIRECT
        self.problems: list[Exception] = []  # plugin failures that did not stop the others
        self.plugins: list[PluginInfo] = []

    # -- registration -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def registering(self, plugin: PluginInfo) -> Iterator[None]:
        """Attribute what is added inside the block to *plugin*; on an exception, drop all of it."""
        previous, self._plugin = self._plugin, plugin
        try:
            yield
        except BaseException:
            self.remove_plugin(plugin.name)
            raise
        finally:
            self._plugin = previous
        self.plugins.append(plugin)

    def add(self, cls: type, *, name: str, config: type, tiny: Any = None, aliases: Sequence[str] = (),
            formerly: Sequence[str] = ()) -> Entry | None:
        """Register component *cls* under *name*; its stage is found from its base class. A name another plugin
        took first is skipped (None) and reported in ``problems``.

        *aliases*: old names of the component, still accepted with a DeprecationWarning (see `add_alias`).
        *formerly*: distributions that provided this component before it moved here (e.g. "segcore-plugin-classic"
        for a component that became a built-in): a model folder saved with one of them loads with this one.
        """
        where = f"{self._plugin}: component {name!r}"
        stage = stage_of(cls)
        if stage is None:
            bases = ", ".join(s.__name__ for s in STAGES)
            raise RegistryError(f"{where}: {cls!r} derives from none of the stages ({bases})")
        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistryError(f"{where}: names are lowercase snake_case (like 'hrnet_fusion')")
        if not attrs.has(config):
            raise RegistryError(f"{where}: config {config!r} is not an attrs class; decorate it with @attrs.frozen")
        if tiny is not None and not isinstance(tiny, config):
            raise RegistryError(f"{where}: tiny must be a {config.__name__}, got {type(tiny).__name__}")
        _check_signature(cls, stage, where)
        if isinstance(formerly, str) or not all(isinstance(d, str) and d for d in formerly):
            raise RegistryError(f"{where}: formerly is a list of distribution names, got {formerly!r}")
        taken = self._entries[stage].get(name)
        if taken is not None and taken.plugin.name != self._plugin.name and self._plugin != _DIRECT:
            entry = Entry(stage=stage, name=name, cls=cls, config=config, tiny=tiny, plugin=self._plugin,
                          formerly=tuple(formerly))  # fmt: skip
            rivals = self._contested[stage].setdefault(name, [taken])
            rivals.append(entry)
            kind = stage.__name__.lower()
            self.problems.append(RegistryError(
                f"{self._plugin}: {kind} {name!r} is already registered by {taken.plugin}; both are kept, and a "
                f"pipeline that uses {kind} {name!r} must say whose: {_choose(rivals)}"
            ))  # fmt: skip
            return entry
        if taken is not None:
            return self._clash(f"{stage.__name__.lower()} {name!r}", taken.plugin)
        if name in self._aliases[stage]:
            old_for, owner = self._aliases[stage][name]
            return self._clash(f"{stage.__name__.lower()} {name!r} (a deprecated alias of {old_for!r})", owner)
        entry = Entry(stage=stage, name=name, cls=cls, config=config, tiny=tiny, plugin=self._plugin,
                      formerly=tuple(formerly))  # fmt: skip
        self._entries[stage][name] = entry
        if isinstance(aliases, str):
            raise RegistryError(f"{where}: aliases is a list of names, got the string {aliases!r}")
        for old in aliases:
            self.add_alias(stage, old, name)
        return self._entries[stage][name]

    def add_alias(self, stage: type, old: str, new: str) -> None:
        """Keep the old name *old* of component *new* (same *stage*, registered first) working: `get` resolves it to
        *new* with a DeprecationWarning that names *new*. For renames; an alias never shadows a registered name."""
        where = f"{self._plugin}: alias {old!r} of {stage.__name__.lower()} {new!r}"
        if stage not in self._entries:
            raise RegistryError(f"{where}: {stage!r} is not a stage")
        if not isinstance(old, str) or not _NAME.match(old):
            raise RegistryError(f"{where}: names are lowercase snake_case (like 'hrnet_fusion')")
        target = self._entries[stage].get(new)
        if target is None:
            raise RegistryError(f"{where}: register {new!r} before its aliases")
        if old in self._entries[stage]:
            return self._clash(f"{stage.__name__.lower()} {old!r} (as an alias of {new!r})", self._entries[stage][old].plugin)
        if old in self._aliases[stage]:
            return self._clash(f"{stage.__name__.lower()} alias {old!r}", self._aliases[stage][old][1])
        self._aliases[stage][old] = (new, self._plugin)
        self._entries[stage][new] = attrs.evolve(target, aliases=(*target.aliases, old))

    def aliases(self, stage: type) -> dict[str, str]:
        """The deprecated names of *stage*: old name -> current name."""
        return {old: new for old, (new, _) in sorted(self._aliases[stage].items())}

    def add_preset(self, name: str, pipeline: Mapping[str, Any]) -> None:
        """Register a named pipeline table (a parsed TOML pipeline, possibly partial, possibly with its own
        ``base``), usable as ``base = "<name>"`` in a pipeline file. It is kept as a plain TOML table: only that is
        checked here; its sections and components are checked when a pipeline uses it (`segcore.config.load`, with
        this plugin's name) and by the test that builds every preset."""
        where = f"{self._plugin}: preset {name!r}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistryError(f"{where}: preset names are lowercase snake_case (like 'hrnet_l_w48')")
        if not isinstance(pipeline, Mapping):
            raise RegistryError(f"{where}: must be a table (dict) like a parsed pipeline file, got {type(pipeline).__name__}")
        _check_toml_values(pipeline, where)
        if name in self._presets:
            return self._clash(f"preset {name!r}", self._presets[name][1])
        self._presets[name] = (dict(pipeline), self._plugin)

    def add_pretrained(self, name: str, *, repo_id: str, revision: str | None = None, sha256: str | None = None) -> None:
        """Register pretrained weights *name* at Hub repo *repo_id*, pinned to *revision*; *sha256* is that of the
        repo's ``model.safetensors``."""
        if name in self._pretrained:
            return self._clash(f"pretrained {name!r}", self._pretrained[name].plugin)
        self._pretrained[name] = Pretrained(name, repo_id, revision, sha256, self._plugin)

    def _clash(self, what: str, first: PluginInfo) -> None:
        """A name taken by another plugin: inside a plugin's hook only this registration is lost (the first
        plugin keeps the name, every other component of both still works) and the clash is a problem naming
        both; added directly (no plugin), it raises."""
        msg = (f"{self._plugin}: {what} is already registered by {first}; this one is skipped (the rest of both "
               f"plugins works). Rename one of them, or disable one plugin with SEGCORE_DISABLE_PLUGINS="
               f"{self._plugin.name} (or ={first.name})")  # fmt: skip
        if self._plugin == _DIRECT:
            raise RegistryError(msg)
        self.problems.append(RegistryError(msg))

    def remove_plugin(self, plugin_name: str) -> None:
        """Forget everything *plugin_name* registered."""
        for stage, contested in self._contested.items():
            for name, rivals in list(contested.items()):
                rivals[:] = [e for e in rivals if e.plugin.name != plugin_name]
                if rivals and self._entries[stage].get(name, rivals[0]).plugin.name == plugin_name:
                    self._entries[stage][name] = rivals[0]  # the next plugin's takes the name
                if len(rivals) < 2:
                    del contested[name]
        for entries in self._entries.values():
            for key in [k for k, e in entries.items() if e.plugin.name == plugin_name]:
                del entries[key]
        for stage, aliases in self._aliases.items():
            for key in [k for k, (new, p) in aliases.items() if p.name == plugin_name or new not in self._entries[stage]]:
                del aliases[key]
        self._presets = {k: v for k, v in self._presets.items() if v[1].name != plugin_name}
        self._pretrained = {k: v for k, v in self._pretrained.items() if v.plugin.name != plugin_name}

    # -- lookup -------------------------------------------------------------------------------------------------

    def get(self, stage: type, name: str, plugin: str | None = None) -> Entry:
        """The entry for *name* in *stage*; an unknown name raises with the closest match and the installed names.

        *plugin* (a plugin or distribution name, a component table's ``plugin`` key) picks the entry of that plugin;
        it is required for a name two plugins register (`contested`), which otherwise raises naming both."""
        entries = self._entries[stage]
        kind = stage.__name__.lower()
        if name not in entries and name in self._aliases[stage]:
            new, owner = self._aliases[stage][name]
            warnings.warn(f"{kind} {name!r} is deprecated, renamed {new!r} by {owner}: write name = {new!r}",
                          DeprecationWarning, stacklevel=2)  # fmt: skip
            name = new
        if name not in entries:
            installed = ", ".join(sorted(entries)) or "none"
            raise RegistryError(f"unknown {kind} {name!r}{did_you_mean(name, entries)}; installed: {installed}")
        rivals = self._contested[stage].get(name, [entries[name]])
        if plugin is None:
            if len(rivals) > 1:  # never pick one silently: the other may be what the user meant
                raise RegistryError(f"{kind} {name!r} is registered by {len(rivals)} plugins, "
                                    f"{' and '.join(map(str, (e.plugin for e in rivals)))}: {_choose(rivals)}")  # fmt: skip
            return rivals[0]
        for entry in rivals:
            if plugin in (entry.plugin.name, entry.plugin.dist):
                return entry
        owners = " and ".join(f"{e.plugin} (plugin = {e.plugin.name!r})" for e in rivals)
        raise RegistryError(f"{kind} {name!r} is not registered by a plugin or distribution {plugin!r}; it is by "
                            f"{owners}")  # fmt: skip

    def contested(self, stage: type | None = None) -> dict[tuple[type, str], list[Entry]]:
        """Names two or more plugins register: (stage, name) -> their entries, first registered first."""
        stages = STAGES if stage is None else (stage,)
        return {(s, n): list(e) for s in stages for n, e in sorted(self._contested[s].items())}

    def entries(self, stage: type | None = None) -> list[Entry]:
        """All entries of *stage* (or of every stage), sorted by name."""
        stages = STAGES if stage is None else (stage,)
        return [e for s in stages for _, e in sorted(self._entries[s].items())]

    def preset(self, name: str) -> dict[str, Any]:
        if name not in self._presets:
            raise RegistryError(
                f"unknown preset {name!r}{did_you_mean(name, self._presets)}; installed: {', '.join(sorted(self._presets)) or 'none'}"
            )
        return self._presets[name][0]

    def presets(self) -> dict[str, PluginInfo]:
        return {k: v[1] for k, v in sorted(self._presets.items())}

    def pretrained(self, name: str | None = None) -> Any:
        """All pretrained names (no argument) or the one called *name*."""
        if name is None:
            return dict(sorted(self._pretrained.items()))
        if name not in self._pretrained:
            raise RegistryError(
                f"unknown pretrained model {name!r}{did_you_mean(name, self._pretrained)}; "
                f"registered: {', '.join(sorted(self._pretrained)) or 'none'}"
            )
        return self._pretrained[name]


def _choose(rivals: Sequence[Entry]) -> str:
    """How to pick one of a contested name's entries."""
    names = [e.plugin.name for e in rivals]
    alternatives = " or ".join(f"plugin = {n!r}" for n in names)
    return (f"write {alternatives} in its table (next to name = {rivals[0].name!r}), or disable a plugin with "
            f"SEGCORE_DISABLE_PLUGINS={names[-1]}")


def _check_toml_values(value: Any, where: str, path: str = "") -> None:
    """Only what TOML can hold (tables, arrays, strings, numbers, booleans): a preset must read like a file."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise RegistryError(f"{where}: key {k!r} at {path or '(top level)'} is not a string")
            _check_toml_values(v, where, f"{path}.{k}" if path else k)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_toml_values(v, where, f"{path}[{i}]")
    elif not isinstance(value, (str, int, float, bool)):
        raise RegistryError(f"{where}: {path} is a {type(value).__name__}; presets hold only TOML values")


def _check_signature(cls: type, stage: type, where: str) -> None:
    """The builder calls ``cls(cfg, **wiring)``: refuse at registration a constructor that cannot take that, so a
    TypeError while building is always the plugin's own bug (and keeps its traceback)."""
    wiring = WIRING[stage]
    try:
        inspect.signature(cls).bind(None, **dict.fromkeys(wiring))
    except TypeError as exc:
        kw = "".join(f", {w}" for w in wiring)
        shown = inspect.signature(cls).replace(return_annotation=inspect.Signature.empty)
        raise RegistryError(
            f"{where}: {cls.__name__}{shown} cannot be called as {cls.__name__}(cfg, *{kw}) ({exc}); a "
            f"{stage.__name__} takes its config and exactly this wiring (see segcore.stages)"
        ) from None
