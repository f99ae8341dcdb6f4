"""Core behaviour across plugins: these tests need the repository's plugins installed (pip install -e
plugins/classic plugins/hrnet-fusion ...). Each module skips, naming the missing plugin, when one is not
(``pytest.importorskip`` at its top); ``registry``
here is every installed plugin (tests/conftest.py's is core alone)."""

from __future__ import annotations

import pytest

from segcore import Registry, get_plugin_manager, load_registry

# A small, valid pipeline the error tests start from: hrnet_w18_small (16/32/64/128 channels) + classic's HRNetV2 head.
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
def base_pipeline() -> str:
    return BASE_PIPELINE


@pytest.fixture
def tiny_hrnet_l() -> str:
    """TOML text of a tiny HRNet_L pipeline without [data] and [run] (the test adds its own)."""
    return TINY_HRNET_L


@pytest.fixture(scope="session")
def registry() -> Registry:
    """Every installed plugin (core's built-ins, plugins/classic, ...)."""
    reg = load_registry(get_plugin_manager())
    assert not reg.problems, reg.problems
    return reg
