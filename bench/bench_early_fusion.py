"""Peak memory and time of one training step of the early-fusion model (plugins/early-fusion) with the ResNet-50
encoder frozen (the paper's setting) against fine-tuned: same preset, batch, input size and optimizer.

    python bench/bench_early_fusion.py [--preset early_fusion_w48] [--batch 2] [--size 256 512] [--steps 3] [--threads 1]

Each case runs in a fresh process so that its peak resident memory is its own. The model is built as the trainer
builds it (``[model.backbone] frozen = true`` or false; random weights: the memory and time do not depend on them),
the optimizer is the trainer's (SGD, momentum 0.9, over core's parameter groups: the frozen encoder is in none).
One warm-up step allocates the optimizer state and warms the CPU kernels; then the peak-RSS mark is reset
(``/proc/self/clear_refs``) and ``--steps`` steps (zero_grad, forward, cross-entropy, backward, step) are timed.
Printed per case: trainable parameters, resident memory once the model is built, the peak during the timed steps
and what training adds on top of the built model (activations, gradients, optimizer state), the median wall time
of a step and its CPU time (the process's user + system seconds); then the ratios frozen / fine-tuned. One torch
thread by default: on a machine other jobs share, torch's OpenMP threads spin while they wait for a descheduled
sibling, which inflated a 2-thread step here up to 10x in wall and CPU time alike and made the comparison noise;
with one thread the CPU time is the work. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def run_case(preset: str, frozen: bool, batch: int, size: tuple[int, int], steps: int, threads: int) -> dict:
    """One case, in this process: returns its figures."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)

    from segcore import build_model, get_plugin_manager, load_registry
    from segcore.config import resolve_bases, structure_pipeline
    from segcore.engine.optim import build_optimizer, param_groups

    registry = load_registry(get_plugin_manager())
    raw = {"base": preset, "model": {"backbone": {"pretrained": False, "frozen": frozen}},
           "data": {"dataset": {"name": "shapes"}}, "train": {"iters": 1, "optimizer": "sgd", "momentum": 0.9}}  # fmt: skip
    cfg = structure_pipeline(resolve_bases(raw, registry=registry), registry=registry)
    torch.manual_seed(0)
    model = build_model(cfg.model, registry, num_classes=19).train()
    optimizer = build_optimizer(param_groups(model, cfg.train), cfg.train)
    image = torch.rand(batch, 3, *size)
    target = torch.randint(0, 19, (batch, *size))
    built_kb = _rss_kb("VmRSS")

    def step() -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(image).logits, target)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start, time.process_time() - cpu

    step()  # warm-up: optimizer state, kernels
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
    times = [step() for _ in range(steps)]
    peak_kb = _rss_kb("VmHWM")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"frozen": frozen, "trainable": trainable, "built_mb": built_kb / 1024, "peak_mb": peak_kb / 1024,
            "added_mb": (peak_kb - built_kb) / 1024, "step_s": statistics.median(t for t, _ in times),
            "cpu_s": statistics.median(c for _, c in times)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="early_fusion_w48")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case (default 1, see above)")
    parser.add_argument("--case", choices=("frozen", "finetuned"), help=argparse.SUPPRESS)  # internal: one case
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.preset, args.case == "frozen", args.batch, tuple(args.size), args.steps, args.threads)))
        return
    rows = {}
    for case in ("frozen", "finetuned"):
        cmd = [sys.executable, __file__, "--case", case, "--preset", args.preset, "--batch", str(args.batch),
               "--size", *map(str, args.size), "--steps", str(args.steps), "--threads", str(args.threads)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows[case] = json.loads(out.strip().splitlines()[-1])
    h, w = args.size
    print(f"{args.preset}, batch {args.batch} x 3x{h}x{w}, 19 classes, SGD momentum 0.9, CPU ({args.threads} thread"
          f"{'s' if args.threads > 1 else ''}), median of {args.steps} steps")
    head = ("encoder", "trainable params", "RSS built (MB)", "peak RSS in step (MB)", "added by training (MB)",
            "wall s/step", "CPU s/step")  # fmt: skip
    body = [(case.replace("finetuned", "fine-tuned"), f"{r['trainable']:,}", f"{r['built_mb']:.0f}", f"{r['peak_mb']:.0f}",
             f"{r['added_mb']:.0f}", f"{r['step_s']:.2f}", f"{r['cpu_s']:.2f}") for case, r in rows.items()]  # fmt: skip
    f, t = rows["frozen"], rows["finetuned"]
    keys = ("trainable", "built_mb", "peak_mb", "added_mb", "step_s", "cpu_s")
    body.append(("frozen / fine-tuned", *(f"{f[k] / t[k]:.3f}" for k in keys)))
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    for row in (head, tuple("-" * n for n in widths), *body):
        print("  ".join(c.ljust(n) if i == 0 else c.rjust(n) for i, (c, n) in enumerate(zip(row, widths))))


if __name__ == "__main__":
    main()
