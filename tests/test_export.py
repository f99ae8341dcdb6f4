"""segcore export: ONNX through torch.export with dynamic batch/height/width, parity with PyTorch in onnxruntime,
training-only heads absent; and the CLI on a pipeline file."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from segcore.cli.main import main
from segcore.inference.onnx import check_onnx, export_onnx, onnx_initializers

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# core's built-ins alone (HRNet_L, with bicubic upsampling places: tests/integration/test_export_hrnet_l.py)
TINY = {"model": {"backbone": {"name": "timm", "model_name": "test_resnet"},
                  "decoder": {"name": "fcn", "channels": 16, "in_index": 1},
                  "aux": {"fcn": {"decoder": {"name": "fcn", "channels": 8}, "in_index": [2]}}},
          "data": {"dataset": {"name": "shapes", "size": [96, 128], "num_train": 4, "num_val": 3}},
          "loss": [{"name": "ce"}]}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # tests/conftest.py
    yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory, export_model, registry):
    """timm's test_resnet + the FCN head, with a training-only FCN head, trained state not needed: BN statistics
    randomized so that every op matters (tests/conftest.py)."""
    model = export_model(TINY, registry)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx", example_size=(96, 128))
    return model, path


def test_onnx_graph_is_dynamic_and_has_no_training_heads(exported):
    model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape) == ("image", ["batch", 3, "height", "width"])
    assert (out.name, out.shape) == ("logits", ["batch", 5, "height", "width"])
    names = onnx_initializers(path)
    assert names and not [n for n in names if "aux" in n]
    assert any(k.startswith("aux.fcn.") for k in model.state_dict())  # the model has the head; the graph has not


@pytest.mark.parametrize("size", [(97, 131), (128, 160)])
def test_onnx_matches_pytorch_at_two_sizes(exported, size):
    model, path = exported
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g) for _ in range(2)]
    check = check_onnx(path, model, images, repeats=1)
    assert check.size == size and check.images == 2
    assert check.max_abs_logit > 0.5  # logits of a size where a 1e-4 difference is small
    assert check.max_abs_diff < 1e-4 * max(1.0, check.max_abs_logit)
    assert check.agreement >= 0.999
    assert check.torch_ms > 0 and check.onnxruntime_ms > 0 and check.fast_ms > 0


def test_onnx_runs_a_batch_of_two(exported):
    model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 70, 90)
    out = session.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).logits.numpy()
    assert out.shape == (2, 5, 70, 90)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # ~10 s: an export through the command on 2 idle AVX2 cores
def test_cli_exports_a_pipeline_and_checks_it(tmp_path, capsys):
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text(textwrap.dedent("""
        [model.backbone]
        name = "timm"
        model_name = "test_resnet"
        [model.decoder]
        name = "fcn"
        channels = 16
        in_index = 1
        [[loss]]
        name = "ce"

        [data.dataset]
        name = "shapes"
        size = [96, 128]
        num_train = 4
        num_val = 2
        [run]
        input_size = [96, 128]
    """))
    code = main(["export", str(pipeline), "--check-images", "2", "--scales", "1.0", "0.75", "--repeats", "1"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert (tmp_path / "tiny.onnx").is_file()
    assert "training-only heads in the graph: 0" in out.out
    assert "random weights" in out.err
    rows = [line.split() for line in out.out.splitlines() if line.strip().startswith(("96x128", "72x96"))]
    assert [r[0] for r in rows] == ["96x128", "72x96"]  # 0.75 of 96x128 through the same graph
