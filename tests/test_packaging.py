"""What the packaging claims: the oldest torch pyproject.toml admits is the one .ci/run tests (.ci/floor.txt)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def _pins(text: str) -> dict[str, str]:
    """name -> version of each `name==version` line (comments and local tags such as +cpu left out)."""
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return {name.strip(): version.strip().split("+")[0] for name, version in
            (line.split("==") for line in lines if "==" in line)}  # fmt: skip


def _floor(requirements: list[str], name: str) -> str:
    (spec,) = [r for r in requirements if re.match(rf"{name}\s*>=", r)]
    return spec.split(">=")[1].split(",")[0].strip()


def _release(version: str) -> str:
    return version[: -len(".0")] if version.count(".") == 2 and version.endswith(".0") else version  # 2.10.0 -> 2.10


def test_the_torch_floor_pyproject_states_is_the_one_ci_tests():
    """pyproject's `torch>=X` and [int8]'s `torchao>=Y` are what .ci/floor.txt pins (requirements-dev and the int8
    message say the same), and .ci/run installs those pins in .venv-floor, checks them and runs the tests there."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _pins((REPO / ".ci" / "floor.txt").read_text())
    torch_floor, ao_floor = _floor(project["dependencies"], "torch"), _floor(project["optional-dependencies"]["int8"],
                                                                             "torchao")  # fmt: skip
    assert _release(pins["torch"]) == torch_floor and _release(pins["torchao"]) == ao_floor
    assert "torchvision" in pins  # timm imports it; PyPI's newest would not load beside an old torch
    dev = [line.split("#")[0].strip() for line in (REPO / "requirements-dev.txt").read_text().splitlines()]
    assert _floor(dev, "torchao") == ao_floor
    assert f"torch {torch_floor} or newer" in (REPO / "README.md").read_text()

    from segcore.inference.quant import _torchao_missing  # the message quantize_int8 raises (tests/test_fastpath.py)

    assert f"torch {torch_floor}, segcore's oldest, takes torchao {ao_floor}" in _torchao_missing(AttributeError("x"))

    stage = (REPO / ".ci" / "run").read_text().split("the torch floor", 1)[1]
    steps = [re.search(pattern, stage, flags=re.M) for pattern in
             (r"^\.venv-floor/bin/pip install .*-c \.ci/floor\.txt", r"^\. \.venv-floor/bin/activate$",
              r"pins\[module\.__name__\]", r"^pytest -n auto")]  # fmt: skip
    assert all(steps) and [s.start() for s in steps] == sorted(s.start() for s in steps), steps
