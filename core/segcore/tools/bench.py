"""``segcore bench PIPELINE``: how fast a pipeline's model infers and trains on this machine, in one run.

Inference (batch ``eval.batch_size``, at ``run.input_size``) in fp32 eager, fp32 channels_last, bf16 autocast +
channels_last and the fast path (`segcore.inference`; ``--compile`` adds the compiled fast path); a training step
(forward, the pipeline's losses, backward, SGD step; batch ``data.batch_size`` at the augmentation's crop size, or
``run.input_size``) in fp32 eager, channels_last and bf16 autocast + channels_last. Beside them, in the same run,
the machine's fp32 and bf16 peaks (a 2048 x 2048 matrix product and a 3x3 convolution at 256 channels), and
optionally a timm model's features in fp32 eager as the baseline every row is compared with (``--baseline``).

GFLOP/s count 2 x the multiply-accumulates of convolutions and matrix products (`segcore.counting`, "true"), and
3 x the forward's for a training step (forward + backward). Each case runs ``--warmup`` times, then ``--repeats``
timed runs interleaved across cases so that load drifts hit them all; the median is reported, as wall-clock time
and as this process's CPU time (all threads), which other processes on a shared machine inflate less.
"""

from __future__ import annotations

__all__ = ["BenchCase", "format_bench", "measure_peaks", "run_bench"]

import copy
import json
import os
import statistics
import time
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
from segcore.model.build import build_model, without_training_heads
from segcore.model.memory import check_forward_fits
from segcore.contracts.registry import Registry
from segcore.errors import ConfigError, did_you_mean

INFERENCE_MODES = ("fp32 eager", "channels_last", "bf16 autocast", "fast path")
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

    def row(self) -> dict[str, Any]:
        wall, cpu = statistics.median(self.wall), statistics.median(self.cpu)
        return {"kind": self.kind, "mode": self.mode, "batch": self.batch, "size": list(self.size),
                "latency_ms": 1000 * wall, "cpu_ms": 1000 * cpu, "img_s": self.batch / wall,
                "gflops": self.flops / 1e9, "gflop_s": self.flops / wall / 1e9, "setup_s": self.setup_s,
                "note": self.note, "wall_s": self.wall, "cpu_s": self.cpu}  # fmt: skip


def _time(fn: Callable[[], Any]) -> tuple[float, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def measure_peaks(*, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of the best of *repeats*: a 2048 x 2048 x 2048 matrix product, and a 3x3 convolution 256 -> 256 on a
    (1, 256, 128, 128) map (the faster of NCHW and channels_last), each in fp32 and in bf16."""
    n = 2048
    peaks = {}
    a, b = torch.randn(n, n), torch.randn(n, n)
    conv = nn.Conv2d(256, 256, 3, padding=1, bias=False).eval()
    x = torch.randn(1, 256, 128, 128)
    conv_flops = 2 * 256 * 256 * 9 * 128 * 128
    with torch.no_grad():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            aa, bb = a.to(dtype), b.to(dtype)
            torch.mm(aa, bb)
            mm = min(_time(lambda: torch.mm(aa, bb))[0] for _ in range(repeats))
            best = float("inf")
            for layout in (torch.contiguous_format, torch.channels_last):
                cv, xx = copy.deepcopy(conv).to(dtype, memory_format=layout), x.to(dtype, memory_format=layout)
                cv(xx)
                best = min(best, *(_time(lambda: cv(xx))[0] for _ in range(repeats)))
            peaks[f"{name}_matmul_gflop_s"] = 2 * n**3 / mm / 1e9
            peaks[f"{name}_conv_gflop_s"] = conv_flops / best / 1e9
    return peaks


def _forward_flops(model: nn.Module, batch: int, size: tuple[int, int]) -> float:
    meta = copy.deepcopy(model).to("meta")
    return 2.0 * count(meta, torch.empty(batch, 3, *size, device="meta"), convention="true").macs


def _inference_cases(model: nn.Module, batch: int, size: tuple[int, int], modes: Sequence[str]) -> list[BenchCase]:
    infer_model = without_training_heads(model).eval()
    flops = _forward_flops(infer_model, batch, size)
    x = torch.rand(batch, 3, *size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    cases = []
    for mode in modes:
        start = time.perf_counter()
        note = ""
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
            note = f"{m.folded} BN folded, " + {
                "fast path": f"{str(m.dtype).removeprefix('torch.')} eager",
                "fast path + compile": f"{str(m.dtype).removeprefix('torch.')}, compiled (inductor, freezing)",
                "fast path + int8": "int8 convs (PT2E, x86 quantizer; random calibration), compiled"}[mode]
        else:
            known = ", ".join([*INFERENCE_MODES, "fast path + compile", "fast path + int8"])
            raise ValueError(f"unknown inference mode {mode!r}; modes: {known}")

        def run(m: nn.Module = m, inp: Tensor = inp, amp: bool = amp) -> Any:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                return m(inp)

        setup = time.perf_counter() - start
        cases.append(BenchCase("inference", mode, batch, size, flops, run, setup_s=setup, note=note))
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
        training_workarounds(m, device="cpu", bf16=amp, channels_last=mode != "fp32 eager")  # as the trainer does
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

        def step(m: nn.Module = m, inp: Tensor = inp, opt: torch.optim.Optimizer = opt, amp: bool = amp) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out = m(inp)
            loss = criterion(out, target)[0] if criterion is not None else F.cross_entropy(out.logits.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        cases.append(BenchCase("train", mode, batch, size, flops, step))
    return cases


def _baseline_case(name: str, batch: int, size: tuple[int, int]) -> BenchCase:
    import timm

    start = time.perf_counter()
    model = timm.create_model(name, pretrained=False, features_only=True).eval()
    flops = _forward_flops(model, batch, size)
    x = torch.rand(batch, 3, *size)

    def run() -> Any:
        with torch.no_grad():
            return model(x)

    return BenchCase("baseline", f"timm {name} features, fp32 eager", batch, size, flops, run,
                     setup_s=time.perf_counter() - start)  # fmt: skip


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
    cases = _inference_cases(model, batch, size, inference_modes)
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
        "repeats": repeats, "warmup": warmup, "rows": rows,
    }  # fmt: skip
    if peaks:
        say("peaks")
        result["peaks"] = measure_peaks()
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
    bf16_peak = peaks["bf16_conv_gflop_s"] if peaks else None
    head = ("kind", "mode", "batch", "size", "ms", "CPU ms", "img/s", "GFLOP", "GFLOP/s", "% bf16 conv peak", "note")
    body = []
    for r in result["rows"]:
        share = f"{100 * r['gflop_s'] / bf16_peak:.0f}" if bf16_peak else ""
        body.append((r["kind"], r["mode"], str(r["batch"]), "x".join(map(str, r["size"])), f"{r['latency_ms']:.0f}",
                     f"{r['cpu_ms']:.0f}", f"{r['img_s']:.2f}", f"{r['gflops']:.1f}", f"{r['gflop_s']:.1f}", share,
                     r["note"]))  # fmt: skip
    lines += _table(head, body)
    if peaks:
        lines.append(
            f"peaks (same run): matmul 2048^3 fp32 {peaks['fp32_matmul_gflop_s']:.1f}, bf16 "
            f"{peaks['bf16_matmul_gflop_s']:.1f} GFLOP/s; conv3x3 256ch fp32 {peaks['fp32_conv_gflop_s']:.1f}, bf16 "
            f"{peaks['bf16_conv_gflop_s']:.1f} GFLOP/s"
        )
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
