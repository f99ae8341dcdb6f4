from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from segcore import Registry, get_plugin_manager, load_registry

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"

# A small, valid pipeline the error tests start from: hrnet_w18_small (16/32/64/128 channels) + HRNetV2 head.
BASE_PIPELINE = """
[model.backbone]
name = "timm"
model_name = "hrnet_w18_small"

[model.decoder]
name = "hrnetv2_head"

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


@pytest.fixture(scope="session")
def registry() -> Registry:
    """Every installed plugin (core's built-ins and plugins/classic)."""
    reg = load_registry(get_plugin_manager())
    assert not reg.problems, reg.problems
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
