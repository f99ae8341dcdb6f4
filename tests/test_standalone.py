"""segcore installed alone (a wheel, no plugin) in a fresh venv trains and evaluates a pipeline with its built-in
loss and head, and finds its zoo manifest as package data (slow: a venv with torch)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_segcore_alone_trains_and_evaluates_in_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)])
    torch_pins = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("torch")]
    install = subprocess.run([str(py), "-m", "pip", "install", "-q", *torch_pins, str(REPO)], env=env,
                             capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    listing = subprocess.run([str(venv / "bin" / "segcore"), "list"], env=env, capture_output=True, text=True,
                             cwd=tmp_path, check=True).stdout  # fmt: skip
    assert "segcore_plugin" not in listing and "classic" not in listing, listing  # nothing but core
    for component in ("fcn", "ce", "timm", "shapes"):
        assert re.search(rf"\b{component}\b", listing), listing
    out = subprocess.run([str(venv / "bin" / "segcore"), "run", str(REPO / "examples" / "core_only.toml")], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    miou = float(re.search(r"^mIoU (\d+\.\d+)", out.stdout, flags=re.M).group(1))
    assert miou > 30.0, out.stdout  # all background scores 17.7; the example reaches 40.0 (its header)
    assert (tmp_path / "runs" / "core_only" / "model.safetensors").is_file()
    zoo = subprocess.run([str(py), "-c", "import segcore; print(segcore.list_pretrained())"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "hrnet_l-camvid" in zoo, zoo  # the manifest is package data, not found through a clone
