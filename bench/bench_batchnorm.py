"""BatchNorm in training, NCHW against channels_last: where HRNet's training step loses its time on a CPU.

    python bench/bench_batchnorm.py [--repeats 5] [--threads N]

Times ``nn.BatchNorm2d`` forward and backward in training mode (batch statistics) on the maps HRNet-W18 trains at
with batch 8 of 352x480 crops (its four streams at 18/36/72/144 channels, and the stem and stage 1 at 64 and 256),
in fp32 and bf16, in NCHW and channels_last, and prints each channels_last time against NCHW's in the same run.
The trainer runs channels_last (its convolutions are faster that way); this shows what that costs its BatchNorms.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

# (channels, height, width): HRNet-W18's maps at 352x480 (strides 4, 8, 16, 32; stage 1 at stride 4)
SHAPES = [(18, 88, 120), (36, 44, 60), (72, 22, 30), (144, 11, 15), (64, 88, 120), (256, 88, 120)]


def _time(channels: int, size: tuple[int, int], dtype: torch.dtype, channels_last: bool,
          repeats: int) -> tuple[float, float]:  # fmt: skip
    """Median forward and backward ms of one training-mode BatchNorm on a batch of 8."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    bn = nn.BatchNorm2d(channels).to(memory_format=fmt)
    x = torch.randn(8, channels, *size).to(dtype).contiguous(memory_format=fmt).requires_grad_()
    grad = torch.randn_like(x)
    fwd, bwd = [], []
    for i in range(repeats + 2):  # two untimed warm-ups
        x.grad = None  # each backward writes a fresh gradient, as in a training step
        t0 = time.perf_counter()
        y = bn(x)
        t1 = time.perf_counter()
        y.backward(grad)
        t2 = time.perf_counter()
        if i >= 2:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    return statistics.median(fwd) * 1e3, statistics.median(bwd) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"BatchNorm2d in training mode, batch 8, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'map (C x H x W)':<18} {'dtype':<9} {'NCHW fwd':>9} {'NCHW bwd':>9} {'CL fwd':>9} {'CL bwd':>9} "
          f"{'CL/NCHW fwd':>12} {'CL/NCHW bwd':>12}")  # fmt: skip
    for c, h, w in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            nf, nb = _time(c, (h, w), dtype, False, args.repeats)
            cf, cb = _time(c, (h, w), dtype, True, args.repeats)
            name = "bf16" if dtype == torch.bfloat16 else "fp32"
            print(f"{f'{c} x {h} x {w}':<18} {name:<9} {nf:>9.2f} {nb:>9.2f} {cf:>9.2f} {cb:>9.2f} "
                  f"{cf / nf:>11.2f}x {cb / nb:>11.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
