"""The plugin as users get it: wheels of segcore, segcore-plugin-classic and this plugin built from the tree,
installed (no editable links) into a private folder that comes first on the path of a fresh interpreter, which
then lists the plugin's components and presets. torch and the other third-party packages come from the project
venv, so the test needs no network for them and runs in about a minute (building the wheels fetches hatchling
into pip's build isolation, from its cache after the first time)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_built_wheel_installs_and_segcore_list_shows_it(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    sources = [REPO, REPO / "plugins" / "classic", REPO / "plugins" / "hrnet-fusion"]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), *map(str, sources)], check=True)
    built = sorted(p.name.split("-")[0] for p in wheels.glob("*.whl"))
    assert built == ["segcore", "segcore_plugin_classic", "segcore_plugin_hrnet_fusion"]
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), *map(str, wheels.glob("*.whl"))], check=True)

    env = dict(os.environ, PYTHONPATH=str(site))
    where = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as md, segcore, segcore_plugin_classic, segcore_plugin_hrnet_fusion as p;"
         "print(segcore.__file__, segcore_plugin_classic.__file__, p.__file__);"
         "print(md.distribution('segcore-plugin-hrnet-fusion').locate_file(''))"],
        env=env, capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    # the installed copies, not the source tree or the venv's editable installs
    assert all(Path(f).is_relative_to(site) for f in where.stdout.split()), where.stdout

    out = subprocess.run([sys.executable, "-m", "segcore", "list"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [" ".join(line.split()) for line in out.stdout.splitlines()]
    tag = "hrnet_fusion (segcore-plugin-hrnet-fusion 0.1.0)"
    for name in ("bfem", "fusm", "aam", "ccsf", "hrnet", "hrnet_s", "hrnet_m", "hrnet_l",
                 "hrnet_l_w18", "hrnet_s_w32", "hrnet_m_w48"):  # fmt: skip
        assert any(line.startswith(f"{name} {tag}") for line in lines), (name, out.stdout)
    for name in ("cbam", "focal", "dice"):  # its pipelines' losses come from classic, a dependency
        assert any(line.startswith(f"{name} classic (segcore-plugin-classic 0.1.0)") for line in lines), (name, out.stdout)
    assert "could not load" not in out.stderr
