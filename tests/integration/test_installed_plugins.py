"""The repository's plugins, installed: found with their distributions, their presets build, and the components that
moved between them resolve where they live now."""

from __future__ import annotations

import warnings

import pytest
import torch

from segcore import Decoder, Loss
from segcore.config import resolve_bases, structure_pipeline, unstructure
from segcore.model.build import build_model

pytest.importorskip("segcore_plugin_classic", reason="an integration test: it needs segcore-plugin-classic "
                    "(pip install -e plugins/classic)")  # fmt: skip


def test_installed_classic_plugin_is_found_with_its_distribution(registry):
    entry = registry.get(Decoder, "hrnetv2_head")
    assert (entry.plugin.name, entry.plugin.dist, entry.plugin.version) == ("classic", "segcore-plugin-classic", "0.1.0")


def test_moved_components_live_where_they_moved(registry):
    for stage, name in ((Decoder, "fcn"), (Loss, "ce")):
        assert registry.get(stage, name).plugin.dist == "segcore"
    for name in ("focal", "dice"):
        entry = registry.get(Loss, name)
        assert entry.plugin.name == "classic" and entry.formerly == ("segcore-plugin-hrnet-fusion",)


def test_frm_old_names_are_deprecated_aliases(registry):
    pytest.importorskip("segcore_plugin_frm", reason="needs segcore-plugin-frm (pip install -e plugins/frm)")
    assert {"embed": "pixel_embed", "fpn": "sfnet_fpn"}.items() <= registry.aliases(Decoder).items()
    for old, new in (("fpn", "sfnet_fpn"), ("embed", "pixel_embed")):
        with pytest.warns(DeprecationWarning, match=f"write name = '{new}'"):
            assert registry.get(Decoder, old) is registry.get(Decoder, new)


@pytest.mark.slow  # ~19 s: builds every preset on 2 idle AVX2 cores
def test_every_registered_preset_builds(registry):
    presets = registry.presets()
    assert presets
    for name in presets:
        raw = resolve_bases({"base": name}, registry=registry)
        raw.setdefault("data", {"dataset": {"name": "shapes"}})
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # no preset names a deprecated alias
            cfg = structure_pipeline(raw, registry=registry, source=f"preset {name!r}")
        assert structure_pipeline(unstructure(cfg), registry=registry) == cfg
        with torch.device("meta"):
            build_model(cfg.model, registry, num_classes=cfg.model.num_classes or 19)
