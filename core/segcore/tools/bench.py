"""``segcore bench PIPELINE``: how fast a pipeline's model infers and trains on this machine, in one run.

Inference (batch ``eval.batch_size``, at ``run.input_size``) in fp32 eager, fp32 channels_last, bf16 autocast +
channels_last and the fast path (`segcore.inference`; ``--compile`` adds the compiled fast path); a training step
(forward, the pipeline's losses, backward, SGD step; batch ``data.batch_size`` at the augmentation's crop size, or
``run.input_size``) in fp32 eager, channels_last and bf16 autocast + channels_last. Beside them, in the same run,
the machine's fp32 and bf16 peaks (a 2048 x 2048 matrix product and a 3x3 convolution at 256 channels), and
optionally a timm model's features in fp32 eager as the baseline every row is compared with (``--baseline``).
``--runtimes`` adds the exported graph (`segcore export`) in onnxruntime (fp32) and OpenVINO (fp32, int8 through
NNCF) on the same model and input; with an int8 row, the int8 peak of the same convolution (OpenVINO) is measured
too, and each row's share of the peak is of its own precision's.

GFLOP/s count 2 x the multiply-accumulates of convolutions and matrix products (`segcore.counting`, "true"), and
3 x the forward's for a training step (forward + backward). Each case runs ``--warmup`` times, then ``--repeats``
timed runs interleaved across cases so that load drifts hit them all; the median is reported, as wall-clock time
and as this process's CPU time (all threads), which other processes on a shared machine inflate less.
"""

from __future__ import annotations

__all__ = ["BF16_EMULATED", "RUNTIME_MODES", "BenchCase", "format_bench", "int8_conv_peak", "measure_peaks", "run_bench"]

import copy
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segcore.config.schema import PipelineConfig
from segcore.model.counting import count
from segcore.data.datasets import dataset_meta
from segcore.inference.fast import bf16_supported, optimize_for_inference
from segcore.inference.dilated import fast_dilated_convs
from segcore.inference.resize import fast_resizes
from segcore.model.build import build_model, without_training_heads
from segcore.model.memory import check_forward_fits
from segcore.contracts.registry import Registry
from segcore.errors import ConfigError, did_you_mean

INFERENCE_MODES = ("fp32 eager", "channels_last", "bf16 autocast", "fast path")
# the exported graph (segcore export) in other runtimes, on the same model and input
RUNTIME_MODES = ("onnxruntime fp32", "openvino fp32", "openvino int8")
TRAIN_MODES = ("fp32 eager", "channels_last", "bf16 autocast")


@attrs.define
class BenchCase:
    """One timed case: ``run()`` does one iteration of ``batch`` images costing ``flops``."""

    kind: str  # "inference", "train" or "baseline"
    mode: str
    batch: int
    size: tuple[int, int]
    flops: float
    run: Callable[[], Any]
    wall: list[float] = attrs.field(factory=list)
    cpu: list[float] = attrs.field(factory=list)
    setup_s: float = 0.0
    note: str = ""
    precision: str = "fp32"  # what it computes in: its peak (fp32, bf16 or int8 conv) in the % column

    def row(self) -> dict[str, Any]:
        wall, cpu = statistics.median(self.wall), statistics.median(self.cpu)
        return {"kind": self.kind, "mode": self.mode, "batch": self.batch, "size": list(self.size),
                "latency_ms": 1000 * wall, "cpu_ms": 1000 * cpu, "img_s": self.batch / wall,
                "gflops": self.flops / 1e9, "gflop_s": self.flops / wall / 1e9, "setup_s": self.setup_s,
                "note": self.note, "precision": self.precision, "wall_s": self.wall, "cpu_s": self.cpu}  # fmt: skip


# what the tables say under their rows on a CPU that emulates bf16
BF16_EMULATED = ("bf16 is emulated on this CPU (no AVX512-BF16 or AMX): bf16 runs slower than fp32 here; train with "
                 'train.amp = "auto" (bf16 where the hardware has it, else fp32)')


def _time(fn: Callable[[], Any]) -> tuple[float, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def measure_peaks(*, repeats: int = 5, int8: bool = False) -> dict[str, float]:
    """GFLOP/s of the best of *repeats*: a 2048 x 2048 x 2048 matrix product, and a 3x3 convolution 256 -> 256 on a
    (1, 256, 128, 128) map (the faster of NCHW and channels_last), each in fp32 and in bf16; with *int8*, the same
    convolution in int8 (`int8_conv_peak`, when OpenVINO and NNCF are installed).

    On a CPU without native bf16 (`bf16_supported`: no AVX512-BF16 or AMX) PyTorch emulates bf16 at about 1 GFLOP/s,
    so its bf16 peaks are measured on a 512^3 product and a 32 x 32 map, twice (seconds, not minutes)."""
    peaks = {}
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False).eval()
    emulated = not bf16_supported("cpu")
    with torch.no_grad():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            small = dtype == torch.bfloat16 and emulated
            n, side, runs = (512, 32, min(repeats, 2)) if small else (2048, 128, repeats)
            aa, bb = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            x = torch.randn(1, 256, side, side)
            torch.mm(aa, bb)
            mm = min(_time(lambda: torch.mm(aa, bb))[0] for _ in range(runs))
            best = float("inf")
            for layout in (torch.contiguous_format, torch.channels_last):
                cv, xx = copy.deepcopy(conv).to(dtype, memory_format=layout), x.to(dtype, memory_format=layout)
                cv(xx)
                best = min(best, *(_time(lambda: cv(xx))[0] for _ in range(runs)))
            peaks[f"{name}_matmul_gflop_s"] = 2 * n**3 / mm / 1e9
            peaks[f"{name}_conv_gflop_s"] = 2 * 256 * 256 * 9 * side * side / best / 1e9
    if int8:
        peak = int8_conv_peak(repeats=repeats)
        if peak is not None:
            peaks["int8_conv_gflop_s"] = peak
    return peaks


def int8_conv_peak(*, repeats: int = 5) -> float | None:
    """GFLOP/s (multiply-adds x 2, as the other peaks) of the best of *repeats* of the peaks' 3x3 convolution
    256 -> 256 on (1, 256, 128, 128) in int8: four of them in a row, each + ReLU, NNCF-quantized, run by OpenVINO on
    the torch thread count (one alone measures the fp32 input's quantization as much as the convolution: 1,316
    against 2,820 GFLOP/s on one core with AMX). The int8 peak the int8 rows are compared with; None without
    openvino and nncf."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None:
        return None
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    from segcore.inference.openvino import Int8Options, quantize_openvino

    g = np.random.default_rng(0)
    image = ops.parameter([1, 256, 128, 128], np.float32, name="image")
    out, depth = image, 4
    for _ in range(depth):
        weight = ops.constant((g.standard_normal((256, 256, 3, 3)) * 0.02).astype(np.float32))
        out = ops.relu(ops.convolution(out, weight, [1, 1], [1, 1], [1, 1], [1, 1]))
    model = ov.Model([out], [image], "conv3x3_256")
    sample = g.random((1, 256, 128, 128), dtype=np.float32)
    quantized = quantize_openvino(model, [torch.from_numpy(sample[0])], options=Int8Options(calibration_images=1))
    compiled = ov.Core().compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                                          "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})  # fmt: skip
    request = compiled.create_infer_request()
    request.infer({0: sample})
    best = min(_time(lambda: request.infer({0: sample}))[0] for _ in range(repeats))
    return depth * 2 * 256 * 256 * 9 * 128 * 128 / best / 1e9


def _forward_flops(model: nn.Module, batch: int, size: tuple[int, int]) -> float:
    meta = copy.deepcopy(model).to("meta")
    return 2.0 * count(meta, torch.empty(batch, 3, *size, device="meta"), convention="true").macs


def _inference_cases(model: nn.Module, batch: int, size: tuple[int, int], modes: Sequence[str],
                     skipped: list[dict[str, str]] | None = None) -> list[BenchCase]:  # fmt: skip
    infer_model = without_training_heads(model).eval()
    flops = _forward_flops(infer_model, batch, size)
    x = torch.rand(batch, 3, *size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    cases = []
    runtimes = [mode for mode in modes if mode in RUNTIME_MODES]
    for mode in (mode for mode in modes if mode not in RUNTIME_MODES):
        start = time.perf_counter()
        note = ""
        precision = "bf16" if mode == "bf16 autocast" else "fp32"
        if mode == "fp32 eager":
            m, inp, amp = infer_model, x, False
        elif mode in ("channels_last", "bf16 autocast"):
            m = copy.deepcopy(infer_model).to(memory_format=torch.channels_last)
            inp, amp = x_cl, mode == "bf16 autocast"
        elif mode in ("fast path", "fast path + compile", "fast path + int8"):
            int8 = mode == "fast path + int8"
            calibration = [torch.rand(3, *size) for _ in range(2)] if int8 else ()  # timing only: random images
            m = optimize_for_inference(infer_model, device="cpu", compile=mode == "fast path + compile", int8=int8,
                                       calibration=calibration)  # fmt: skip
            inp, amp = x, False
            precision = "int8" if int8 else str(m.dtype).removeprefix("torch.").replace("float32", "fp32").replace(
                "bfloat16", "bf16")  # fmt: skip
            note = f"{m.folded} BN folded, " + {
                "fast path": f"{str(m.dtype).removeprefix('torch.')} eager",
                "fast path + compile": f"{str(m.dtype).removeprefix('torch.')}, compiled (inductor, freezing)",
                "fast path + int8": "int8 convs (PT2E, x86 quantizer; random calibration), compiled"}[mode]
        else:
            known = ", ".join([*INFERENCE_MODES, "fast path + compile", "fast path + int8", *RUNTIME_MODES])
            raise ValueError(f"unknown inference mode {mode!r}; modes: {known}")

        def run(m: nn.Module = m, inp: Tensor = inp, amp: bool = amp) -> Any:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                return m(inp)

        setup = time.perf_counter() - start
        cases.append(BenchCase("inference", mode, batch, size, flops, run, setup_s=setup, note=note,
                               precision=precision))  # fmt: skip
    if runtimes:
        cases += _runtime_cases(infer_model, batch, size, flops, x, runtimes, [] if skipped is None else skipped)
    return cases


def _runtime_cases(model: nn.Module, batch: int, size: tuple[int, int], flops: float, x: Tensor,
                   modes: Sequence[str], skipped: list[dict[str, str]]) -> list[BenchCase]:  # fmt: skip
    """The model exported as `segcore export` writes it (ONNX, dynamic sizes; OpenVINO IR converted from it, int8
    through NNCF calibrated on random images: timing only), run by onnxruntime or OpenVINO on the same input, the
    torch thread count. A mode whose package is missing is left out, with the install command in *skipped*."""
    import importlib.util
    import tempfile

    from segcore.inference.onnx import export_onnx, onnxruntime_session

    needs = {"onnxruntime fp32": ("onnx", "onnxscript", "onnxruntime"), "openvino fp32": ("onnx", "onnxscript", "openvino"),
             "openvino int8": ("onnx", "onnxscript", "openvino", "nncf")}  # fmt: skip
    fixes = {"onnxruntime fp32": 'pip install "segcore[export]"', "openvino fp32": 'pip install "segcore[openvino]"',
             "openvino int8": 'pip install "segcore[openvino]"'}  # fmt: skip
    runnable = []
    for mode in modes:
        missing = [m for m in needs[mode] if importlib.util.find_spec(m) is None]
        if missing:
            skipped.append({"mode": mode, "note": f"skipped: no {', '.join(missing)} ({fixes[mode]})"})
        else:
            runnable.append(mode)
    if not runnable:
        return []
    threads = torch.get_num_threads()
    feed = {"image": x.numpy()}
    tmp = Path(tempfile.mkdtemp(prefix="segcore-bench-"))
    start = time.perf_counter()
    onnx_path = export_onnx(model, tmp / "model.onnx", example_size=size)
    export_s = time.perf_counter() - start
    cases = []
    for mode in runnable:
        start = time.perf_counter()
        if mode == "onnxruntime fp32":
            import onnxruntime

            session: Any = onnxruntime_session(onnx_path, threads)
            note = f"onnxruntime {onnxruntime.__version__}, the exported ONNX graph (export {export_s:.0f} s)"
        else:
            import openvino as ov

            from segcore.inference.openvino import OpenVinoSession, quantize_openvino

            ov_model = ov.convert_model(str(onnx_path))
            note = f"OpenVINO {ov.__version__.split('-')[0]}, IR from the exported ONNX graph"
            if mode == "openvino int8":
                calibration = [torch.rand(3, *size) for _ in range(2)]
                ov_model = quantize_openvino(ov_model, calibration)
                note += "; int8 (NNCF, random calibration: timing only)"
            ov.save_model(ov_model, str(tmp / f"{mode.replace(' ', '_')}.xml"), compress_to_fp16=False)
            session = OpenVinoSession(tmp / f"{mode.replace(' ', '_')}.xml", threads=threads)

        def run(session: Any = session) -> Any:
            return session.run(None, feed)

        cases.append(BenchCase("inference", mode, batch, size, flops, run, setup_s=time.perf_counter() - start,
                               note=note, precision=mode.split()[-1]))  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)  # the sessions hold what they read
    return cases


def _train_cases(cfg: PipelineConfig, registry: Registry, model: nn.Module, batch: int, size: tuple[int, int],
                 num_classes: int, ignore_index: int, modes: Sequence[str]) -> list[BenchCase]:  # fmt: skip
    from segcore.engine.criterion import Criterion
    from segcore.engine.workarounds import training_workarounds

    criterion = None
    if cfg.loss:
        criterion = Criterion(cfg.loss, cfg.model.aux, registry, num_classes=num_classes, ignore_index=ignore_index)
    flops = 3 * _forward_flops(model.train(), batch, size)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, *size, generator=generator)
    target = torch.randint(0, num_classes, (batch, *size), generator=generator)
    cases = []
    for mode in modes:
        if mode not in TRAIN_MODES:
            raise ValueError(f"unknown training mode {mode!r}; modes: {', '.join(TRAIN_MODES)}")
        m = copy.deepcopy(model).train()
        inp = x
        if mode != "fp32 eager":
            m = m.to(memory_format=torch.channels_last)
            inp = x.contiguous(memory_format=torch.channels_last)
        amp = mode == "bf16 autocast"
        if cfg.train.fast_dilated:  # as the trainer does
            fast_dilated_convs(m)
        if cfg.train.fast_resize:
            fast_resizes(m)
        training_workarounds(m, device="cpu", bf16=amp, channels_last=mode != "fp32 eager")
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

        def step(m: nn.Module = m, inp: Tensor = inp, opt: torch.optim.Optimizer = opt, amp: bool = amp) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out = m(inp)
            loss = criterion(out, target)[0] if criterion is not None else F.cross_entropy(out.logits.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        cases.append(BenchCase("train", mode, batch, size, flops, step, precision="bf16" if amp else "fp32"))
    return cases


def _baseline_case(name: str, batch: int, size: tuple[int, int]) -> BenchCase:
    import timm

    start = time.perf_counter()
    model = timm.create_model(name, pretrained=False, features_only=True).eval()
    # a timm backbone takes sizes its deepest stride divides (its HRNets fail on 360x480): pad up to them, as a user
    # deploying it would, and say so
    stride = max(model.feature_info.reduction())
    padded = (-(-size[0] // stride) * stride, -(-size[1] // stride) * stride)
    note = "" if padded == size else f"input padded from {size[0]}x{size[1]}: {name} needs sizes divisible by {stride}"
    flops = _forward_flops(model, batch, padded)
    x = torch.rand(batch, 3, *padded)

    def run() -> Any:
        with torch.no_grad():
            return model(x)

    return BenchCase("baseline", f"timm {name} features, fp32 eager", batch, padded, flops, run,
                     setup_s=time.perf_counter() - start, note=note)  # fmt: skip


def _check_baseline(name: str) -> None:
    """An unknown timm model for ``--baseline`` is a ConfigError with the closest names, before anything is timed."""
    import timm

    names = timm.list_models()
    if name.split(".")[0] not in names:
        raise ConfigError(f"--baseline {name!r}: timm has no such model{did_you_mean(name, names)}; list them with "
                          f"python -c \"import timm; print(timm.list_models('{name[:3]}*'))\"")  # fmt: skip


def run_bench(
    cfg: PipelineConfig,
    registry: Registry,
    *,
    input_size: tuple[int, int] | None = None,
    batch: int | None = None,
    train_size: tuple[int, int] | None = None,
    train_batch: int | None = None,
    inference_modes: Sequence[str] = INFERENCE_MODES,
    train_modes: Sequence[str] = TRAIN_MODES,
    baseline: str | None = None,
    repeats: int = 3,
    warmup: int = 1,
    peaks: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time every case (see the module docstring); returns a JSON-able dict with ``rows``, ``peaks``, ``machine``
    and ``ratios`` (baseline latency / case latency, wall and CPU time)."""
    say = progress or (lambda message: None)
    if baseline:
        _check_baseline(baseline)
    meta = dataset_meta(cfg.data.dataset, registry)
    num_classes = cfg.model.num_classes or meta.num_classes
    size = tuple(input_size or cfg.eval.resize or cfg.run.input_size)
    batch = batch or cfg.eval.batch_size
    train_size = tuple(train_size or cfg.data.augment.crop_size or size)
    train_batch = train_batch or cfg.data.batch_size
    torch.manual_seed(0)
    say("building the model")
    model = build_model(cfg.model, registry, num_classes=num_classes)
    hint = "Give segcore bench a smaller --input-size or --batch (--train-size, --train-batch for the training step)."
    check_forward_fits(model, (batch, 3, *size), "cpu", what="inference for segcore bench", hint=hint)
    if train_modes:
        check_forward_fits(model, (train_batch, 3, *train_size), "cpu", train=True, what="a training step for segcore bench",
                           hint=hint + " Or time inference only: --no-train.")  # fmt: skip
    skipped: list[dict[str, str]] = []  # runtime modes whose package is missing
    cases = _inference_cases(model, batch, size, inference_modes, skipped)
    if train_modes:
        cases += _train_cases(cfg, registry, model, train_batch, train_size, num_classes, meta.ignore_index,
                              train_modes)
    if baseline:
        cases.append(_baseline_case(baseline, batch, size))
    for case in cases:  # warm-up (the compiled fast path compiles on its second call)
        say(f"warm-up: {case.kind} {case.mode}")
        start = time.perf_counter()
        compiled = case.mode in ("fast path + compile", "fast path + int8")
        for _ in range(max(warmup, 2) if compiled else warmup):
            case.run()
        case.setup_s += time.perf_counter() - start
    for r in range(repeats):
        for case in cases:
            say(f"repeat {r + 1}/{repeats}: {case.kind} {case.mode}")
            wall, cpu = _time(case.run)
            case.wall.append(wall)
            case.cpu.append(cpu)
    rows = [c.row() for c in cases]
    result: dict[str, Any] = {
        "pipeline": {"backbone": cfg.model.backbone.name, "decoder": cfg.model.decoder.name,
                     "enhancers": [e.name for e in cfg.model.enhancers], "num_classes": num_classes},
        "machine": {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "bf16_native": bf16_supported("cpu"), "load_average": list(os.getloadavg())},
        "repeats": repeats, "warmup": warmup, "rows": rows, "skipped": skipped,
    }  # fmt: skip
    if peaks:
        say("peaks")
        result["peaks"] = measure_peaks(int8=any(c.precision == "int8" for c in cases))
    if baseline:
        base = rows[-1]
        result["ratios"] = [{"mode": r["mode"], "kind": r["kind"], "wall": base["latency_ms"] / r["latency_ms"],
                             "cpu": base["cpu_ms"] / r["cpu_ms"]} for r in rows if r["kind"] == "inference"]  # fmt: skip
    result["machine"]["load_average_end"] = list(os.getloadavg())
    return result


def format_bench(result: dict[str, Any]) -> str:
    """The table ``segcore bench`` prints."""
    m = result["machine"]
    p = result["pipeline"]
    lines = [f"{p['backbone']} + {' + '.join(p['enhancers'] + [p['decoder']])}, {p['num_classes']} classes; torch "
             f"{m['torch']}, {m['threads']} threads on {m['cpu_count']} cores, bf16 native: {m['bf16_native']}, load "
             f"average {m['load_average'][0]:.1f} -> {m['load_average_end'][0]:.1f}; median of {result['repeats']}"]  # fmt: skip
    peaks = result.get("peaks")
    head = ("kind", "mode", "batch", "size", "ms", "CPU ms", "img/s", "GFLOP", "GFLOP/s", "% of peak", "note")
    body = []
    for r in result["rows"]:  # each row against the conv peak of what it computes in (fp32, bf16, int8)
        peak = (peaks or {}).get(f"{r.get('precision', 'fp32')}_conv_gflop_s")
        share = f"{100 * r['gflop_s'] / peak:.0f} {r.get('precision', 'fp32')}" if peak else ""
        body.append((r["kind"], r["mode"], str(r["batch"]), "x".join(map(str, r["size"])), f"{r['latency_ms']:.0f}",
                     f"{r['cpu_ms']:.0f}", f"{r['img_s']:.2f}", f"{r['gflops']:.1f}", f"{r['gflop_s']:.1f}", share,
                     r["note"]))  # fmt: skip
    lines += _table(head, body)
    if peaks:
        emulated = "" if m["bf16_native"] else " (emulated, smaller sizes)"
        lines.append(
            f"peaks (same run): matmul 2048^3 fp32 {peaks['fp32_matmul_gflop_s']:.1f}, bf16{emulated} "
            f"{peaks['bf16_matmul_gflop_s']:.1f} GFLOP/s; conv3x3 256ch fp32 {peaks['fp32_conv_gflop_s']:.1f}, bf16 "
            f"{peaks['bf16_conv_gflop_s']:.1f}"
            + (f", int8 {peaks['int8_conv_gflop_s']:.1f}" if "int8_conv_gflop_s" in peaks else "")
            + " GFLOP/s"
        )
    if not m["bf16_native"]:
        lines.append(BF16_EMULATED)
    lines += [f"{s['mode']}: {s['note']}" for s in result.get("skipped", [])]
    if "ratios" in result:
        base = result["rows"][-1]["mode"]
        lines.append(f"speed-up over {base} (its latency / the mode's; wall clock and CPU time):")
        lines += [f"  {r['mode']:<22} {r['wall']:5.2f}x wall  {r['cpu']:5.2f}x CPU" for r in result["ratios"]]
    return "\n".join(lines)


def _table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
    fmt = lambda row: "  ".join(str(v).ljust(w) if i in (0, 1, len(head) - 1) else str(v).rjust(w)  # noqa: E731
                                for i, (v, w) in enumerate(zip(row, widths))).rstrip()  # fmt: skip
    return [fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)]


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=1)
