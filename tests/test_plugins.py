"""Plugin discovery: built-ins through the same hook, isolation of broken plugins, blocking by name."""

from __future__ import annotations

import attrs
import pytest
import torch
from torch import nn

from segcore import Attention, Backbone, Dataset, Decoder, Loss, hookimpl, load_registry
from segcore.contracts.plugins import get_plugin_manager
from segcore.errors import RegistryError


@attrs.frozen
class _Cfg:
    scale: float = 1.0


class _Gain(Attention):
    def __init__(self, cfg: _Cfg, *, channels: int) -> None:
        super().__init__()
        self.scale = cfg.scale

    def forward(self, x):
        return x * self.scale


class _FakePlugin:
    @hookimpl
    def segcore_register(self, registry):
        registry.add(_Gain, name="gain", config=_Cfg)


def test_builtins_register_through_the_same_hook():
    pm = get_plugin_manager(autoload=False)
    from segcore.contracts.plugins import BUILTIN_PLUGINS

    names = {impl.plugin_name for impl in pm.hook.segcore_register.get_hookimpls()}
    assert names == set(BUILTIN_PLUGINS) and all(n.startswith("segcore.builtin.") for n in names)
    registry = load_registry(pm)
    assert not registry.problems
    assert {p.name for p in registry.plugins} == names and {p.dist for p in registry.plugins} == {"segcore"}
    for stage, name in ((Backbone, "timm"), (Decoder, "fcn"), (Loss, "ce"), (Dataset, "shapes")):  # a core that trains
        assert registry.get(stage, name).plugin.dist == "segcore"


def test_a_registered_plugin_object_adds_components():
    pm = get_plugin_manager(autoload=False)
    pm.register(_FakePlugin(), name="fake")
    registry = load_registry(pm)
    entry = registry.get(Attention, "gain")
    assert entry.plugin.name == "fake"
    assert entry.build(_Cfg(2.0), channels=3)(torch.ones(1)).item() == 2.0


def test_name_clash_is_reported_and_does_not_take_the_others_down():
    class Clash:
        @hookimpl
        def segcore_register(self, registry):
            registry.add(_Gain, name="other", config=_Cfg)
            registry.add(_Gain, name="gain", config=_Cfg)  # taken by "fake"

    pm = get_plugin_manager(autoload=False)
    pm.register(_FakePlugin(), name="fake")
    pm.register(Clash(), name="clash")
    registry = load_registry(pm)
    [problem] = registry.problems
    assert 'plugin "clash"' in str(problem) and 'already registered by plugin "fake"' in str(problem)
    assert "SEGCORE_DISABLE_PLUGINS=clash" in str(problem)
    with pytest.raises(RegistryError, match=r'attention \'gain\' is registered by 2 plugins, plugin "fake" and plugin "clash"'):
        registry.get(Attention, "gain")  # never one of them silently (#23)
    assert registry.get(Attention, "gain", "fake").plugin.name == "fake"
    assert registry.get(Attention, "gain", "clash").plugin.name == "clash"
    assert registry.get(Attention, "other").plugin.name == "clash"  # a clash costs nothing else
    assert registry.get(Backbone, "timm")  # the built-ins still work


@pytest.mark.parametrize(
    "register, fragment",
    [
        (lambda r: r.add(nn.Conv2d, name="conv", config=_Cfg), "derives from none of the stages"),
        (lambda r: r.add(_Gain, name="Gain-Attn", config=_Cfg), "lowercase snake_case"),
        (lambda r: r.add(_Gain, name="gain2", config=dict), "not an attrs class"),
        (lambda r: r.add(_Gain, name="gain3", config=_Cfg, tiny={"scale": 1}), "tiny must be a _Cfg"),
        (lambda r: 1 / 0, "ZeroDivisionError"),
    ],
)
def test_broken_registrations_name_the_plugin(register, fragment):
    class Broken:
        @hookimpl
        def segcore_register(self, registry):
            register(registry)

    before = load_registry(get_plugin_manager(autoload=False))
    pm = get_plugin_manager(autoload=False)
    pm.register(Broken(), name="broken")
    registry = load_registry(pm)
    [problem] = registry.problems
    assert 'plugin "broken"' in str(problem) and fragment in str(problem)
    # the broken plugin contributed nothing; the built-ins are intact
    assert {(e.stage, e.name, e.plugin) for e in registry.entries()} == {(e.stage, e.name, e.plugin) for e in before.entries()}
    assert all(e.plugin.name != "broken" for e in registry.entries())


def test_disable_variable_blocks_builtins_and_plugins(monkeypatch):
    import importlib.metadata

    from segcore.contracts.plugins import BUILTIN_PLUGINS

    installed = [ep.name for ep in importlib.metadata.entry_points(group="segcore")]  # none, or classic, the papers'...
    blocked = [*installed, *(b for b in BUILTIN_PLUGINS if b != "segcore.builtin.backbones")]
    monkeypatch.setenv("SEGCORE_DISABLE_PLUGINS", " , ".join(blocked))
    registry = load_registry(get_plugin_manager())
    assert {p.name for p in registry.plugins} == {"segcore.builtin.backbones"} and registry.presets() == {}
    assert registry.get(Backbone, "timm") and all(e.plugin.name == "segcore.builtin.backbones" for e in registry.entries())


def test_every_hookspec_is_documented_in_contributing():
    """Each hook's signature appears as a heading in CONTRIBUTING.md (as datasette's test_docs does)."""
    import inspect
    from pathlib import Path

    from segcore.contracts import hookspecs

    text = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text()
    specs = [f for name, f in vars(hookspecs).items() if name.startswith("segcore_") and callable(f)]
    assert specs
    for spec in specs:
        params = ", ".join(inspect.signature(spec).parameters)
        assert f"### `{spec.__name__}({params})`" in text
