"""The quickstart through README's first set-up command, on a fresh clone (slow: a venv and a training run)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The set-up commands: the lines of README.md's first ```bash block."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"^```bash\n(.*?)^```$", text, flags=re.S | re.M)
    assert block, "README.md has no ```bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_exactly_two_setup_commands_at_its_top():
    text = (REPO / "README.md").read_text()
    assert text.index("```bash") < 800  # at the top
    install_run, install_test = readme_commands()
    assert install_run.endswith("segcore run examples/quickstart.toml")
    assert install_test.endswith("pytest -n auto --dist worksteal")  # one process per core: pytest-xdist, a development requirement
    assert "requirements-dev.txt" in install_test
    assert re.search(r"^pytest-xdist\b", (REPO / "requirements-dev.txt").read_text(), flags=re.M)


@pytest.mark.slow
def test_quickstart_on_a_fresh_clone(tmp_path):
    clone = tmp_path / "segcore"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    command = readme_commands()[0]
    out = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    miou = float(re.search(r"^mIoU (\d+\.\d+)", out.stdout, flags=re.M).group(1))
    assert miou > 50.0, out.stdout  # chance is ~20 (5 classes); the README states the figure
    assert (clone / "runs" / "quickstart" / "model.safetensors").is_file()
