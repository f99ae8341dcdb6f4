"""segcore bench: every case timed in one run, FLOPs from the counting rules, peaks and the baseline ratio."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from segcore.cli.main import main

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


def test_bench_json_has_every_case_and_the_ratios(tmp_path, capsys, tiny_hrnet_l):
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text(tiny_hrnet_l + textwrap.dedent(DATA))
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
    assert rows[("inference", "fast path")]["note"].startswith("70 BN folded")
    assert set(result["peaks"]) == {f"{d}_{op}_gflop_s" for d in ("fp32", "bf16") for op in ("matmul", "conv")}
    base = rows[("baseline", "timm resnet10t features, fp32 eager")]
    assert [r["mode"] for r in result["ratios"]] == ["fp32 eager", "channels_last", "bf16 autocast", "fast path"]
    for r in result["ratios"]:
        assert r["wall"] == pytest.approx(base["latency_ms"] / rows[("inference", r["mode"])]["latency_ms"])
    assert result["machine"]["threads"] == 1
