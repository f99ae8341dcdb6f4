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


@pytest.mark.slow  # ~18 s: times every inference case on 2 idle AVX2 cores
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


def test_baseline_pads_to_a_size_its_stride_divides():
    """timm's HRNets fail on CamVid's 360x480 (360 / 32 is not whole): the baseline runs padded and says so."""
    from segcore.tools.bench import _baseline_case

    case = _baseline_case("hrnet_w18_small", 1, (72, 100))
    assert case.size == (96, 128)
    assert case.note == "input padded from 72x100: hrnet_w18_small needs sizes divisible by 32"
    assert len(case.run()) == 5  # the features at strides 2-32
    assert _baseline_case("resnet10t", 1, (64, 96)).note == ""


# -- segcore bench --trainer: the real trainer's step under the speed levers ------------------------------------------


def test_step_clock_times_phases_after_the_skipped_steps():
    from segcore.engine.clock import PHASES, StepClock

    off = StepClock()
    off.lap("data")
    off.step_done()
    assert off.steps == 0 and sum(off.seconds.values()) == 0.0  # off: nothing recorded
    clock = StepClock(enabled=True, skip=1)
    clock.start()
    for _ in range(3):
        clock.lap("data")
        clock.lap("forward")
        clock.step_done()
    assert clock.steps == 2 and set(clock.seconds) == set(PHASES)
    assert clock.seconds["data"] > 0 and clock.seconds["augment"] == 0.0
    assert sum(clock.shares().values()) == pytest.approx(1.0)


@pytest.mark.slow  # ~22 s: times every trainer variant on 2 idle AVX2 cores
def test_bench_trainer_times_each_variant_with_its_phases(tmp_path, capsys):
    pipeline = tmp_path / "tiny.toml"
    pipeline.write_text(textwrap.dedent(MODEL) + textwrap.dedent(DATA) + '[train]\noptimizer = "adamw"\n')
    code = main(["bench", str(pipeline), "--trainer", "--variants", "fp32", "bf16+fused", "--steps", "3",
                 "--warmup-steps", "1", "--threads", "1", "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["fp32", "bf16+fused"]
    assert (rows["fp32"]["amp"], rows["bf16+fused"]["amp"], rows["bf16+fused"]["optimizer_impl"]) == ("none", "bf16", "fused")
    for r in rows.values():
        assert r["steps"] == 3
        # the phases add up to the step; a step has a forward, a backward and an optimizer step
        assert sum(r["phases_s"].values()) == pytest.approx(r["s_per_step"])
        assert min(r["phases_s"][k] for k in ("data", "augment", "forward", "backward", "optimizer")) > 0
        assert r["img_s"] == pytest.approx(2 / r["s_per_step"])  # batch 2
    assert result["size"] == [64, 96] and result["batch"] == 2
    code = main(["bench", str(pipeline), "--trainer", "--variants", "bf16+fusd"])
    assert code == 2 and "bf16+fused" in capsys.readouterr().err


@pytest.mark.parametrize("impl", ["fused", "foreach", "loop"])
def test_optimizer_impl_picks_torch_s_implementation(impl):
    from segcore.config.schema import TrainConfig
    from segcore.engine.optim import build_optimizer

    params = [torch.nn.Parameter(torch.randn(4, 4))]
    for name in ("sgd", "adamw"):
        opt = build_optimizer([{"params": params, "lr_scale": 1.0}], TrainConfig(optimizer=name, optimizer_impl=impl))
        assert (opt.defaults.get("fused"), opt.defaults.get("foreach")) == {
            "fused": (True, None), "foreach": (None, True), "loop": (None, False)}[impl]  # fmt: skip


@pytest.mark.slow  # ~7 s: measures the peaks on 2 idle AVX2 cores
def test_a_cpu_without_native_bf16_gets_its_bf16_peaks_small_and_the_tables_say_so(monkeypatch):
    """PyTorch emulates bf16 at about 1 GFLOP/s on a CPU without AVX512-BF16 or AMX: the bf16 peaks are measured on a
    512^3 product and a 32 x 32 map there (seconds, not minutes), and both tables say bf16 is emulated."""
    import segcore.tools.bench as bench
    from segcore.engine.clock import PHASES
    from segcore.tools.bench_train import format_trainer_bench

    sizes = []
    mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b: (sizes.append((a.dtype, a.shape[0])), mm(a, b))[1])
    monkeypatch.setattr(bench, "bf16_supported", lambda device: False)
    peaks = bench.measure_peaks(repeats=1)
    assert set(sizes) == {(torch.float32, 2048), (torch.bfloat16, 512)}
    assert set(peaks) == {f"{d}_{op}_gflop_s" for d in ("fp32", "bf16") for op in ("matmul", "conv")}
    assert min(peaks.values()) > 0
    row = {"variant": "bf16", "amp": "bf16", "s_per_step": 2.0, "img_s": 1.0, "gflop_s": 3.0,
           "phases_s": {k: 2.0 / len(PHASES) for k in PHASES}}  # fmt: skip
    result = {"batch": 2, "size": [64, 96], "steps": 3, "warmup": 1, "repeats": 1, "threads": 2, "rows": [row],
              "peaks": peaks}  # fmt: skip
    for native in (True, False):
        table = format_trainer_bench({**result, "bf16_native": native})
        assert (bench.BF16_EMULATED in table) is not native
        assert f"{100 * 3.0 / peaks['bf16_conv_gflop_s']:.0f}" in table  # the bf16 row against the bf16 peak
    inference = {"pipeline": {"backbone": "hrnet", "enhancers": [], "decoder": "fusm", "num_classes": 11},
                 "repeats": 1, "peaks": peaks, "skipped": [],
                 "rows": [{"kind": "inference", "mode": "bf16 autocast", "precision": "bf16", "batch": 1, "size": [64, 96],
                           "latency_ms": 5.0, "cpu_ms": 9.0, "img_s": 200.0, "gflops": 0.5, "gflop_s": 100.0, "note": ""}]}  # fmt: skip
    for native in (True, False):  # and the inference table (segcore bench without --trainer)
        machine = {"torch": torch.__version__, "threads": 2, "cpu_count": 2, "bf16_native": native,
                   "load_average": [0.1], "load_average_end": [0.2]}  # fmt: skip
        table = bench.format_bench({**inference, "machine": machine})
        assert (bench.BF16_EMULATED in table) is not native and ("bf16 (emulated, smaller sizes)" in table) is not native
        assert f"{100 * 100.0 / peaks['bf16_conv_gflop_s']:.0f} bf16" in table
