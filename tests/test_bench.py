"""segcore bench: every case timed in one run, FLOPs from the counting rules, peaks and the baseline ratio."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from segcore.cli.main import main
from segcore.config import load_pipeline
from segcore.model.build import build_model

# core's built-ins alone: timm's test_resnet and the FCN head (every BatchNorm follows a convolution)
MODEL = """
[model.backbone]
name = "timm"
model_name = "test_resnet"
[model.decoder]
name = "fcn"
channels = 16
[[loss]]
name = "ce"
"""
DATA = """
[data.dataset]
name = "shapes"
size = [64, 64]
[data]
batch_size = 2
[data.augment]
crop_size = [64, 96]
[run]
input_size = [64, 64]
"""


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the command sets --threads for the process


def test_bench_json_has_every_case_and_the_ratios(tmp_path, capsys, registry):
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text(textwrap.dedent(MODEL) + textwrap.dedent(DATA))
    cfg = load_pipeline(pipeline, registry=registry)
    model = build_model(cfg.model, registry, num_classes=5)
    batchnorms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert batchnorms > 0
    code = main(["bench", str(pipeline), "--repeats", "1", "--warmup", "0", "--threads", "1", "--baseline",
                 "resnet10t", "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    rows = {(r["kind"], r["mode"]): r for r in result["rows"]}
    assert list(rows) == [("inference", m) for m in ("fp32 eager", "channels_last", "bf16 autocast", "fast path")] + [
        ("train", m) for m in ("fp32 eager", "channels_last", "bf16 autocast")] + [
        ("baseline", "timm resnet10t features, fp32 eager")]  # fmt: skip
    inference, train = rows[("inference", "fp32 eager")], rows[("train", "fp32 eager")]
    assert inference["size"] == [64, 64] and inference["batch"] == 1  # run.input_size, eval.batch_size
    assert train["size"] == [64, 96] and train["batch"] == 2  # the crop and data.batch_size
    # 2 x the "true" MACs of the inference model; a training step counts 3 x its forward at its own size and batch
    assert train["gflops"] == pytest.approx(3 * 2 * (64 * 96) / (64 * 64) * inference["gflops"], rel=0.02)
    for r in rows.values():
        assert r["latency_ms"] > 0 and r["gflop_s"] == pytest.approx(r["gflops"] / r["latency_ms"] * 1000)
    assert rows[("inference", "fast path")]["note"].startswith(f"{batchnorms} BN folded")
    assert set(result["peaks"]) == {f"{d}_{op}_gflop_s" for d in ("fp32", "bf16") for op in ("matmul", "conv")}
    base = rows[("baseline", "timm resnet10t features, fp32 eager")]
    assert [r["mode"] for r in result["ratios"]] == ["fp32 eager", "channels_last", "bf16 autocast", "fast path"]
    for r in result["ratios"]:
        assert r["wall"] == pytest.approx(base["latency_ms"] / rows[("inference", r["mode"])]["latency_ms"])
    assert result["machine"]["threads"] == 1
