"""Deployment (#22): the exported graph (bicubic upsampling as matrix products computed from the dynamic sizes) in
onnxruntime and OpenVINO matches PyTorch; ``--cut labels`` ends at segcore.predict's labels; OpenVINO int8 through
NNCF; bad inputs exit 2 with the fix; ``segcore bench --runtimes`` rows."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import tomli_w
import torch
import torch.nn.functional as F

from segcore.cli.main import main
from segcore.contracts.stages import Resize
from segcore.errors import ConfigError
from segcore.inference.onnx import check_onnx, export_module, export_onnx
from segcore.inference.resize import GraphResize

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
# OpenVINO's runtime threads outlive these tests and crash a later test's training run in the same process (segfault):
# the module runs in a child process of its own (conftest.py)
pytestmark = pytest.mark.isolated
has_openvino = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None
needs_openvino = pytest.mark.skipif(not has_openvino, reason='needs openvino and nncf: pip install "segcore[openvino]"')

TINY = {"model": {"backbone": {"name": "timm", "model_name": "test_resnet"},
                  "decoder": {"name": "fcn", "channels": 16, "in_index": 1}},
          "data": {"dataset": {"name": "shapes", "size": [96, 128], "num_train": 4, "num_val": 3}},
          "loss": [{"name": "ce"}]}  # fmt: skip
PIPELINE = tomli_w.dumps({**TINY, "run": {"input_size": [96, 128]}})


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # tests/conftest.py
    yield


@pytest.fixture(scope="module")
def model(export_model, registry):
    """timm's test_resnet + the FCN head with a bicubic final upsampling (align_corners, as HRNet_L's), randomized BN
    statistics and logits of order 1 (tests/conftest.py)."""
    model = export_model(TINY, registry)
    model.final_upsample.resize = Resize("bicubic", align_corners=True)
    return model


def _images(size, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g) for _ in range(n)]


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("sizes", [((45, 60), (90, 120)), ((12, 16), (97, 131)), ((7, 9), (13, 20))])
def test_graph_resize_is_bicubic_interpolation(align_corners, sizes):
    (h, w), out = sizes
    x = torch.randn(2, 4, h, w, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(x, size=out, mode="bicubic", align_corners=align_corners)
    torch.testing.assert_close(GraphResize(align_corners)(x, out), ref, atol=3e-5, rtol=1e-5)


def test_export_module_has_no_cubic_resize_left(model, tmp_path):
    """onnxruntime's cubic Resize was 62 % of HRNet_L-W18's time at 1 thread: the exported graph has none."""
    import onnx

    module = export_module(model)
    assert isinstance(module.model.final_upsample.resize, GraphResize)
    assert isinstance(model.final_upsample.resize, Resize)  # the model itself is untouched
    path = export_onnx(model, tmp_path / "m.onnx", example_size=(96, 128))
    graph = onnx.load(str(path)).graph
    modes = [a.s.decode() for n in graph.node if n.op_type == "Resize" for a in n.attribute if a.name == "mode"]
    assert "cubic" not in modes
    assert any(n.op_type == "MatMul" for n in graph.node)


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy")
    paths = {"onnx": export_onnx(model, folder / "m.onnx", example_size=(96, 128))}
    if has_openvino:
        from segcore.inference.openvino import export_openvino

        paths["openvino"] = export_openvino(model, folder / "m.xml", example_size=(96, 128))
    return paths


@pytest.mark.parametrize("size", [(97, 131), (128, 160)])
@pytest.mark.parametrize("runtime", ["onnx", pytest.param("openvino", marks=needs_openvino)])
def test_export_matches_pytorch_at_two_sizes(model, exports, runtime, size):
    session = None
    if runtime == "openvino":
        from segcore.inference.openvino import OpenVinoSession

        session = OpenVinoSession(exports["openvino"], threads=1)
    check = check_onnx(exports[runtime], model, _images(size), repeats=1, session=session)
    assert check.size == size and check.images == 2
    assert check.max_abs_logit > 0.5
    assert check.max_abs_diff < 1e-4 * max(1.0, check.max_abs_logit)
    assert check.agreement >= 0.999


def test_cut_labels_gives_the_labels_of_predict(model, tmp_path):
    from segcore import predict
    from segcore.config.schema import EvalConfig

    path = export_onnx(model, tmp_path / "labels.onnx", example_size=(96, 128), cut="labels")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.get_outputs()
    assert (out.name, out.shape, out.type) == ("labels", ["batch", "height", "width"], "tensor(uint8)")
    same = total = 0
    for image in _images((97, 131), n=3, seed=3):
        labels = session.run(None, {"image": image[None].float().div(255).numpy()})[0][0]
        expected = predict(model, image.permute(1, 2, 0).numpy(), eval_cfg=EvalConfig(precision="fp32"))
        assert labels.shape == expected.shape == (97, 131)
        same, total = same + int((labels == expected).sum()), total + labels.size
    assert same / total >= 0.999


@pytest.mark.slow  # NNCF calibration and two IR exports: the fp32 parity test above runs by default
@needs_openvino
def test_openvino_int8_is_quantized_and_close(model, tmp_path):
    import openvino as ov

    from segcore.inference.openvino import Int8Options, OpenVinoSession, export_openvino

    path = export_openvino(model, tmp_path / "m-int8.xml", example_size=(96, 128), int8=True,
                           calibration=_images((96, 128), n=4, seed=5), options=Int8Options(keep_first_last=True))  # fmt: skip
    ir = ov.Core().read_model(str(path))
    assert any(op.get_type_name() == "FakeQuantize" for op in ir.get_ops())
    assert ir.get_rt_info(["segcore", "precision"]).astype(str) == "int8"
    assert ir.get_rt_info(["segcore", "in_channels"]).astype(str) == "3"
    check = check_onnx(path, model, _images((97, 131)), repeats=1, session=OpenVinoSession(path, threads=1))
    assert check.agreement >= 0.9  # int8 on random weights: close, not equal (bench/bench_accuracy.py judges real ones)


def _pipeline(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(PIPELINE)
    return path


def test_cli_cut_labels_checks_against_the_argmax(tmp_path, capsys):
    code = main(["export", str(_pipeline(tmp_path)), "--cut", "labels", "--check-images", "2", "--scales", "1.0",
                 "--repeats", "1"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "--cut labels: the graph's output is labels (batch, height, width) uint8" in out.out
    row = next(line.split() for line in out.out.splitlines() if line.strip().startswith("96x128"))
    assert row[1] == "nan" and row[3] == "100.000%"


@pytest.mark.slow  # NNCF calibration and two IR exports: the fp32 parity test above runs by default
@needs_openvino
def test_cli_exports_openvino_fp32_and_int8(tmp_path, capsys):
    pipeline = _pipeline(tmp_path)
    code = main(["export", str(pipeline), "--format", "openvino", "--check-images", "2", "--scales", "1.0", "0.75",
                 "--repeats", "1"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert (tmp_path / "tiny.xml").is_file() and (tmp_path / "tiny.bin").is_file()
    assert "OpenVINO ms" in out.out
    assert [line.split()[0] for line in out.out.splitlines() if line.strip().startswith(("96x128", "72x96"))] == [
        "96x128", "72x96"]  # fmt: skip
    code = main(["export", str(pipeline), "--format", "openvino", "--int8", "--calibration-images", "3",
                 "--keep-first-last", "--check-images", "1", "--scales", "1.0", "--repeats", "1"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    assert (tmp_path / "tiny-int8.xml").is_file()  # beside the fp32 IR, not over it
    assert "calibrated on 3 shapes training images" in out.out


def test_cli_missing_source_exits_2_with_the_fix(tmp_path, capsys):
    assert main(["export", str(tmp_path / "runs" / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope" in err


def test_cli_unknown_format_exits_2_naming_the_formats(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["export", str(_pipeline(tmp_path)), "--format", "tflite"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'tflite'" in err and "'onnx'" in err and "'openvino'" in err


@pytest.mark.parametrize("argv, missing", [(["--format", "openvino"], "openvino"),
                                           (["--format", "openvino", "--int8"], "nncf")])  # fmt: skip
def test_cli_openvino_not_installed_exits_2_with_the_install_command(tmp_path, capsys, monkeypatch, argv, missing):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else find_spec(name, *a))
    assert main(["export", str(_pipeline(tmp_path)), *argv, "--no-check"]) == 2
    err = capsys.readouterr().err
    assert f"needs the {missing!r} package" in err and 'pip install "segcore[openvino]"' in err
    assert not (tmp_path / "tiny.xml").exists()


def test_cli_int8_without_openvino_format_exits_2(tmp_path, capsys):
    assert main(["export", str(_pipeline(tmp_path)), "--int8", "--no-check"]) == 2
    assert "add --format openvino" in capsys.readouterr().err


def test_calibration_without_a_dataset_asks_for_calibration_data(registry):
    from segcore.inference.openvino import calibration_images

    with pytest.raises(ConfigError, match="--calibration-data"):
        calibration_images(None, registry, source="hrnet_l-camvid")


@pytest.mark.slow  # ~45 s: times three runtimes on 2 idle AVX2 cores
def test_bench_times_the_runtimes_beside_pytorch(tmp_path, capsys, monkeypatch):
    """Rows only (no timing asserted); without openvino, its rows are skipped with the install command."""
    pipeline = _pipeline(tmp_path)
    if not has_openvino:
        pytest.skip("needs openvino")
    code = main(["bench", str(pipeline), "--modes", "fp32 eager", "--no-train", "--runtimes", "all", "--repeats", "1",
                 "--warmup", "0", "--threads", "1", "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    rows = {r["mode"]: r for r in result["rows"]}
    assert list(rows) == ["fp32 eager", "onnxruntime fp32", "openvino fp32", "openvino int8"]
    assert [rows[m]["precision"] for m in rows] == ["fp32", "fp32", "fp32", "int8"]
    assert rows["onnxruntime fp32"]["gflops"] == rows["fp32 eager"]["gflops"] > 0
    assert result["peaks"]["int8_conv_gflop_s"] > 0 and result["skipped"] == []
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else find_spec(name, *a))
    code = main(["bench", str(pipeline), "--modes", "fp32 eager", "--no-train", "--runtimes", "all", "--repeats", "1",
                 "--warmup", "0", "--threads", "1"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "onnxruntime fp32" in out
    assert 'openvino int8: skipped: no openvino (pip install "segcore[openvino]")' in out
    assert np.isfinite(result["rows"][0]["latency_ms"])
