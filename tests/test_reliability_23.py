"""Issue 23, findings 8, 9, 11-15 (finding 7, the zoo name a local folder shadows, is in tests/test_sources.py):
what a user gives a plugin clash, an export, an oversized input, a hand-edited config.json, a bad log or Hub id, the
pickle-conversion hint or a resumed run ends in one message (exit 2 from the CLI) or works; never a traceback, never a
silently wrong model or metric.

The small model is timm's test_resnet + a one-conv FCN head at 32x32 on the shapes data (as tests/test_reliability.py).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import attrs
import pytest
import torch

from segcore import Decoder, hookimpl, load_registry
from segcore.cli import _common as CLI
from segcore.cli.main import main
from segcore.config import load_pipeline
from segcore.contracts.plugins import get_plugin_manager
from segcore.errors import ConfigError
from segcore.model.build import build_model

def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def cli(capsys, *args: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# -- 8: a component name two plugins register -----------------------------------------------------------------------


@attrs.frozen
class _EmptyCfg:  # classic's keys, so one pipeline fits both
    num_convs: int = 2
    channels: int = 256
    in_index: int = -1


class _EmptyFCN(Decoder):
    """A third party's 'fcn' without parameters: what took over classic's in the report."""

    def __init__(self, cfg: _EmptyCfg, *, in_features, attention) -> None:
        super().__init__()
        self.out_channels, self.stride = in_features[-1].channels, in_features[-1].stride

    def forward(self, features):
        return features[-1]


class _ThirdParty:
    @hookimpl(tryfirst=True)
    def segcore_register(self, registry):
        registry.add(_EmptyFCN, name="fcn", config=_EmptyCfg)


@pytest.fixture
def clash_registry(monkeypatch):
    pm = get_plugin_manager(autoload=False)
    pm.register(_ThirdParty(), name="thirdparty")
    registry = load_registry(pm)
    monkeypatch.setattr(CLI, "registry", lambda: registry)
    return registry


def test_a_component_name_two_plugins_register_stops_the_build_naming_both(clash_registry, small_pipeline, tmp_path, capsys):
    path = write(tmp_path / "p.toml", small_pipeline)
    with pytest.raises(ConfigError) as err:
        load_pipeline(path, registry=clash_registry)
    msg = str(err.value)
    assert "model.decoder: decoder 'fcn' is registered by 2 plugins" in msg
    assert 'plugin "segcore.builtin.decoders"' in msg and 'plugin "thirdparty"' in msg
    assert "plugin = 'thirdparty'" in msg and "SEGCORE_DISABLE_PLUGINS=thirdparty" in msg
    code, out, err = cli(capsys, "check", path)
    assert code == 2 and "ok:" not in out and "Traceback" not in err
    assert "'fcn' is registered by 2 plugins" in err


@pytest.mark.parametrize(("plugin", "params"), [("segcore", "> 0"), ("segcore.builtin.decoders", "> 0"), ("thirdparty", "0")])
def test_naming_the_plugin_in_the_component_table_picks_its_component(clash_registry, small_pipeline, tmp_path, capsys, plugin, params):
    path = write(tmp_path / "p.toml", small_pipeline.replace('name = "fcn"\n', f'name = "fcn"\nplugin = "{plugin}"\n'))
    cfg = load_pipeline(path, registry=clash_registry)
    assert cfg.model.decoder.plugin == plugin
    with torch.device("meta"):
        decoder = build_model(cfg.model, clash_registry, num_classes=3).decoder
    n = sum(p.numel() for p in decoder.parameters())
    assert (n > 0) if params == "> 0" else (n == 0), n
    code, out, err = cli(capsys, "check", path)
    assert code == 0 and "ok:" in out, err


@pytest.mark.parametrize(("value", "fragment"), [
    ('"nobody"', "decoder 'fcn' is not registered by a plugin or distribution 'nobody'; it is by plugin "
                 "\"segcore.builtin.decoders\""),
    ("3", "plugin must be a string naming the plugin"),
])  # fmt: skip
def test_the_plugin_key_is_validated_like_every_key(registry, small_pipeline, tmp_path, value, fragment):
    path = write(tmp_path / "p.toml", small_pipeline.replace('name = "fcn"\n', f'name = "fcn"\nplugin = {value}\n'))
    with pytest.raises(ConfigError, match="model.decoder: ") as err:
        load_pipeline(path, registry=registry)
    assert fragment in str(err.value)


def test_the_plugin_key_is_kept_in_the_resolved_pipeline(clash_registry, small_pipeline, tmp_path):
    from segcore.config import dump_pipeline

    path = write(tmp_path / "p.toml", small_pipeline.replace('name = "fcn"\n', 'name = "fcn"\nplugin = "segcore"\n'))
    cfg = load_pipeline(path, registry=clash_registry)
    again = load_pipeline(write(tmp_path / "again.toml", dump_pipeline(cfg)), registry=clash_registry)
    assert again == cfg and again.model.decoder.plugin == "segcore"
    assert not isinstance(build_model(again.model, clash_registry, num_classes=3).decoder, _EmptyFCN)
