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


# Seed 000's HRNet_L (hrnet-fusion's preset: classic's hrnet backbone, AAM, FUSM with bicubic upsampling places)
# narrowed to width 8, one block and one module per stage: the fast path, export and bench tests.
TINY_HRNET_L = """
base = "hrnet_l_w18"
[model.backbone]
width = 8
num_blocks = 1
num_modules = [1, 1, 1]
[[loss]]
name = "ce"
"""


@pytest.fixture
def tiny_hrnet_l() -> str:
    """TOML text of a tiny HRNet_L pipeline without [data] and [run] (the test adds its own)."""
    return TINY_HRNET_L


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
