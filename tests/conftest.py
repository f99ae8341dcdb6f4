from __future__ import annotations

import shutil
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
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(pipeline file, finished run folder) of tests/data/small.toml through ``segcore run``, trained once for the
    session (checkpoints at steps 2 and 4); tests that change a run work on `run_copy`."""
    from segcore.cli.main import main

    base = tmp_path_factory.mktemp("trained")
    pipeline = base / "p.toml"
    pipeline.write_text((Path(__file__).parent / "data" / "small.toml").read_text())
    assert main(["run", str(pipeline), "-q", "--out-dir", str(base / "run")]) == 0
    return pipeline, base / "run"


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    """A copy of the `trained` run folder to change."""
    shutil.copytree(trained[1], tmp_path / "run")
    return tmp_path / "run"


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


@pytest.fixture
def one_thread():
    """torch on one thread for the test (tiny ops on a shared machine: see tests/test_fastpath.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def export_model():
    """A function: (pipeline table, registry) -> its model (5 classes, eval mode) for export tests: trained state not needed,
    BN statistics randomized so that every op matters, logits of order 1 (not 0.01) so that argmax is not decided
    by rounding."""
    import copy

    from segcore.config import resolve_bases, structure_pipeline
    from segcore.model.build import build_model

    def make(table: dict, registry: Registry):
        cfg = structure_pipeline(resolve_bases(copy.deepcopy(table), registry=registry), registry=registry)
        torch.manual_seed(0)
        model = build_model(cfg.model, registry, num_classes=5).eval()
        g = torch.Generator().manual_seed(1)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
        with torch.no_grad():
            model.classifier.weight.mul_(100)
        return model

    return make
