from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from segcore import Registry, get_plugin_manager, load_registry

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"

# A small, valid pipeline of core's built-ins alone: hrnet_w18_small (16/32/64/128 channels at strides 4-32) + the FCN
# head on the coarsest level, the shapes dataset and cross-entropy. Tests that need plugins are in tests/integration/.
BASE_PIPELINE = """
[model.backbone]
name = "timm"
model_name = "hrnet_w18_small"

[model.decoder]
name = "fcn"
channels = 32

[data.dataset]
name = "shapes"
size = [64, 64]
num_train = 8
num_val = 4

[[loss]]
name = "ce"

[run]
input_size = [64, 64]
"""


@pytest.fixture
def base_pipeline() -> str:
    return BASE_PIPELINE


@pytest.fixture
def small_pipeline() -> str:
    """tests/data/small.toml: test_resnet + a one-conv FCN at 32x32 on shapes, 4 steps, checkpoints at 2 and 4."""
    return (Path(__file__).parent / "data" / "small.toml").read_text()


@pytest.fixture(scope="session")
def registry() -> Registry:
    """Core's built-ins alone (no installed plugin is loaded): core's tests need nothing else. A test's own plugin
    goes into a registry of its own (``pm = get_plugin_manager(autoload=False); pm.register(...)``)."""
    reg = load_registry(get_plugin_manager(autoload=False))
    assert not reg.problems, reg.problems
    assert {p.dist for p in reg.plugins} == {"segcore"}
    return reg


@pytest.fixture
def write_pipeline(tmp_path: Path):
    """Write TOML text (dedented) to a file and return its path."""

    def write(text: str, name: str = "pipeline.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
