"""A third-party plugin written to a temp dir, pip-installed, found by `segcore list`, used by name in a pipeline;
and a plugin that raises on import, reported by name while the rest still work."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


PLUGIN_CODE = '''
"""A toy third-party plugin: a gain attention."""
import attrs
from segcore import Attention, Registry, hookimpl


@attrs.frozen
class GainConfig:
    gain: float = 2.0


class Gain(Attention):
    def __init__(self, cfg: GainConfig, *, channels: int) -> None:
        super().__init__()
        self.gain = cfg.gain

    def forward(self, x):
        return x * self.gain


@hookimpl
def segcore_register(registry: Registry) -> None:
    registry.add(Gain, name="gain", config=GainConfig)
'''


def _make_dist(root: Path, dist: str, module: str, code: str) -> Path:
    src = root / dist
    (src / module).mkdir(parents=True)
    (src / module / "__init__.py").write_text(code)
    (src / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "1.2.3"
        dependencies = ["segcore"]

        [project.entry-points.segcore]
        {module.removeprefix("segcore_plugin_")} = "{module}"
        """)
    )
    return src


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """Both plugins pip-installed into a private target folder; an environment that sees them."""
    root = tmp_path_factory.mktemp("plugins")
    target = root / "site"
    good = _make_dist(root, "segcore-plugin-gain", "segcore_plugin_gain", PLUGIN_CODE)
    bad = _make_dist(root, "segcore-plugin-broken", "segcore_plugin_broken", "import not_a_module_anywhere\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(good), str(bad)],
        check=True,
    )  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), env.get("PYTHONPATH")]))
    return env


def _segcore(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "segcore", *args], env=env, cwd=cwd, capture_output=True, text=True)


def test_list_shows_the_installed_plugin_and_reports_the_broken_one(plugin_env):
    out = _segcore(plugin_env, "list")
    assert out.returncode == 0, out.stderr
    assert "gain  gain (segcore-plugin-gain 1.2.3)" in out.stdout
    assert "hrnetv2_head  classic (segcore-plugin-classic" in out.stdout  # the others still work
    assert 'could not load plugin "broken" from segcore-plugin-broken 1.2.3' in out.stderr
    assert "ModuleNotFoundError" in out.stderr and "SEGCORE_DISABLE_PLUGINS=broken" in out.stderr
    assert "Traceback" not in out.stderr


def test_pipeline_uses_the_plugin_by_name(plugin_env, tmp_path, base_pipeline):
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(base_pipeline + '\n[model.decoder.attention.after_fusion]\nname = "gain"\ngain = 3.0\n')
    out = _segcore(plugin_env, "check", str(pipeline))
    assert out.returncode == 0, out.stderr
    assert "ok: every stage keeps its contract" in out.stdout


def test_disabling_the_broken_plugin_silences_it(plugin_env):
    env = dict(plugin_env, SEGCORE_DISABLE_PLUGINS="broken")
    out = _segcore(env, "list")
    assert out.returncode == 0 and "broken" not in out.stderr and "gain" in out.stdout
