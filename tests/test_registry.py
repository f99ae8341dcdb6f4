"""The registry's name rules: deprecated aliases of renamed components, components that moved between distributions,
and `Entry.build` defaults. Each with a plugin written here."""

from __future__ import annotations

import re
import warnings

import attrs
import pytest
import torch
from torch import nn

from segcore import ConfigError, Decoder, Registry, RegistryError, get_plugin_manager, hookimpl, load_registry
from segcore.contracts.registry import PluginInfo


@attrs.frozen
class PlainConfig:
    channels: int = 4


class Plain(Decoder):
    def __init__(self, cfg: PlainConfig, *, in_features, attention) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features[-1].channels, cfg.channels, 1)
        self.out_channels, self.stride = cfg.channels, in_features[-1].stride

    def forward(self, features):
        return self.conv(features[-1])


@attrs.frozen
class NeedsConfig:
    channels: int  # required
    depth: int


class Needs(Plain):
    def __init__(self, cfg: NeedsConfig, *, in_features, attention) -> None:
        super().__init__(PlainConfig(cfg.channels), in_features=in_features, attention=attention)


class Renamed:
    """A plugin that renamed its "head" to "plain_head" and keeps the old name working."""

    @hookimpl
    def segcore_register(self, registry: Registry) -> None:
        registry.add(Plain, name="plain_head", config=PlainConfig, aliases=["head"])


def _registry(*plugins) -> Registry:
    pm = get_plugin_manager(autoload=False)
    for i, plugin in enumerate(plugins):
        pm.register(plugin, name=f"test_plugin_{i}")
    return load_registry(pm)


def test_an_alias_resolves_to_the_new_name_with_a_deprecation_warning():
    registry = _registry(Renamed())
    assert not registry.problems, registry.problems
    with pytest.warns(DeprecationWarning, match=re.escape("decoder 'head' is deprecated, renamed 'plain_head' by "
                                                          'plugin "test_plugin_0"')):  # fmt: skip
        entry = registry.get(Decoder, "head")
    assert entry is registry.get(Decoder, "plain_head") and entry.name == "plain_head" and entry.aliases == ("head",)
    assert registry.aliases(Decoder) == {"head": "plain_head"}
    assert [e.name for e in registry.entries(Decoder) if e.name in ("head", "plain_head")] == ["plain_head"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.get(Decoder, "plain_head")  # the new name warns nothing


def test_a_pipeline_with_the_old_name_still_builds(write_pipeline):
    from segcore.model.build import build_model
    from segcore.config import load_pipeline

    registry = _registry(Renamed())
    path = write_pipeline('[model.backbone]\nname = "timm"\nmodel_name = "test_resnet"\n[model.decoder]\nname = "head"\n'
                          '[data.dataset]\nname = "shapes"\n[[loss]]\nname = "ce"\n')  # fmt: skip
    with pytest.warns(DeprecationWarning, match="write name = 'plain_head'"):
        cfg = load_pipeline(path, registry=registry)
        model = build_model(cfg.model, registry, num_classes=3)
    assert isinstance(model.decoder, Plain)


def test_add_alias_is_general_and_checked():
    registry = Registry()
    registry.add(Plain, name="plain_head", config=PlainConfig)
    registry.add_alias(Decoder, "older", "plain_head")
    with pytest.warns(DeprecationWarning):
        assert registry.get(Decoder, "older").name == "plain_head"
    with pytest.raises(RegistryError, match="register 'missing' before its aliases"):
        registry.add_alias(Decoder, "old", "missing")
    with pytest.raises(RegistryError, match="already registered"):  # an alias never shadows a name
        registry.add_alias(Decoder, "plain_head", "plain_head")
    with pytest.raises(RegistryError, match="already registered"):  # nor a name an alias
        registry.add(Plain, name="older", config=PlainConfig)
    with pytest.raises(RegistryError, match="aliases is a list of names"):
        registry.add(Plain, name="other", config=PlainConfig, aliases="x")


def test_an_alias_taken_by_another_plugin_is_a_problem_not_a_crash():
    class Other:
        @hookimpl(trylast=True)
        def segcore_register(self, registry: Registry) -> None:
            registry.add(Needs, name="head", config=NeedsConfig)

    registry = _registry(Renamed(), Other())
    assert len(registry.problems) == 1 and "a deprecated alias of 'plain_head'" in str(registry.problems[0])
    with pytest.warns(DeprecationWarning):
        assert registry.get(Decoder, "head").name == "plain_head"  # the first keeps it


def test_removing_a_plugin_drops_its_aliases():
    registry = _registry(Renamed())
    registry.remove_plugin("test_plugin_0")
    assert registry.aliases(Decoder) == {}
    with pytest.raises(RegistryError, match="unknown decoder 'head'"):
        registry.get(Decoder, "head")


def test_formerly_records_the_distributions_a_component_moved_from():
    registry = Registry()
    with registry.registering(PluginInfo("newhome", "segcore-plugin-newhome", "0.2")):
        entry = registry.add(Plain, name="plain_head", config=PlainConfig, formerly=["segcore-plugin-oldhome"])
    assert entry.formerly == ("segcore-plugin-oldhome",)
    assert entry.provided_by("segcore-plugin-newhome") and entry.provided_by("segcore-plugin-oldhome")
    assert not entry.provided_by("segcore-plugin-elsewhere")
    with pytest.raises(RegistryError, match="formerly is a list of distribution names"):
        registry.add(Plain, name="other", config=PlainConfig, formerly="segcore-plugin-oldhome")


def test_entry_build_with_defaults_or_a_mapping_and_a_clear_error_for_required_fields():
    registry = Registry()
    plain = registry.add(Plain, name="plain_head", config=PlainConfig)
    needs = registry.add(Needs, name="needs", config=NeedsConfig)
    from segcore import FeatureInfo

    wiring = {"in_features": (FeatureInfo(8, 4),), "attention": None}
    assert plain.build(**wiring).out_channels == 4
    assert plain.build({"channels": 6}, **wiring).out_channels == 6
    assert needs.build(NeedsConfig(5, 1), **wiring).out_channels == 5
    assert needs.build({"channels": 5, "depth": 1}, **wiring).out_channels == 5
    with pytest.raises(ConfigError, match=r"decoder 'needs' \(plugin \"\(direct\)\"\): NeedsConfig has required fields "
                                          r"channels, depth; pass cfg=NeedsConfig\(\.\.\.\)"):  # fmt: skip
        needs.build(**wiring)
    with pytest.raises(ConfigError, match="required field depth;"):
        needs.build({"channels": 5}, **wiring)
    assert torch.is_tensor(plain.build(**wiring)(torch.zeros(1, 8, 4, 4)))
