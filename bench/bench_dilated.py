"""Dilated depthwise convolutions, PyTorch's kernel against the sub-grid form (`segcore.inference.dilated`).

    python bench/bench_dilated.py [--repeats 5] [--threads N] [--no-backward] [--pipeline PIPELINE.toml]

Times VAN's large-kernel-attention convolution (7x7, dilation 3, one kernel per channel) at the four VAN-B0 stages'
maps of a batch of 8 crops of 352x480 (32/64/160/256 channels at strides 4-32), forward and backward (training
mode: input and weight gradients), in float32, NCHW and channels_last, natively (``nn.Conv2d``) and on sub-grids
(`SubgridDilatedConv2d`, what ``[train] fast_dilated`` and the inference fast path use), in one run; each row gives
the native time over the sub-grid one. With ``--pipeline``, also the inference fast path
(`optimize_for_inference`) of that pipeline's model on one image of its ``run.input_size``, with the sub-grid
convolutions and with them switched back to ``nn.Conv2d``, alternating.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from segcore.inference.dilated import SubgridDilatedConv2d, fast_dilated_convs

# (channels, height, width): VAN-B0's stages at 352x480 (strides 4, 8, 16, 32)
SHAPES = [(32, 88, 120), (64, 44, 60), (160, 22, 30), (256, 11, 15)]


def _time(conv: nn.Module, x: torch.Tensor, repeats: int, backward: bool) -> tuple[float, float]:
    """Median forward and backward ms (two untimed warm-ups: oneDNN compiles its kernels on the first call)."""
    grad = torch.randn_like(conv(x))
    fwd, bwd = [], []
    for i in range(repeats + 2):
        x.grad = None
        conv.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        y = conv(x)
        t1 = time.perf_counter()
        if backward:
            y.backward(grad)
        t2 = time.perf_counter()
        if i >= 2:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    return statistics.median(fwd) * 1e3, statistics.median(bwd) * 1e3


def _fast_path(pipeline: str, repeats: int) -> None:
    """The fast path's forward on the pipeline's model: sub-grid convolutions against the native ones."""
    from segcore import build_model, load_pipeline, load_registry
    from segcore.data.datasets import dataset_meta
    from segcore.inference.fast import optimize_for_inference

    registry = load_registry()
    cfg = load_pipeline(pipeline, registry=registry)
    num_classes = cfg.model.num_classes or dataset_meta(cfg.data.dataset, registry).num_classes
    model = build_model(cfg.model, registry, num_classes=num_classes).eval()
    fast = optimize_for_inference(model)
    switched = [m for m in fast.modules() if type(m) is SubgridDilatedConv2d]
    x = torch.rand(1, 3, *cfg.run.input_size)
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(repeats + 1):  # the first round untimed
        for grids in (True, False):
            for m in switched:
                m.__class__ = SubgridDilatedConv2d if grids else nn.Conv2d
            t0 = time.perf_counter()
            fast(x)
            if i:
                times[grids].append(time.perf_counter() - t0)
    native, grids = (statistics.median(times[k]) * 1e3 for k in (False, True))
    print(f"\nfast path of {pipeline} ({len(switched)} dilated depthwise convolutions), 1 x {x.shape[-2]}x"
          f"{x.shape[-1]}, {fast.dtype}, median of {repeats}: native {native:.0f} ms, sub-grid {grids:.0f} ms, "
          f"{native / grids:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-backward", action="store_true", help="forward only (inference)")
    parser.add_argument("--pipeline", help="also time the fast path of this pipeline's model, with and without")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    backward = not args.no_backward
    print(f"7x7 depthwise convolution, dilation 3, batch 8, float32, {torch.get_num_threads()} threads, median of "
          f"{args.repeats}; ms")  # fmt: skip
    head = f"{'map (C x H x W)':<16} {'layout':<7} {'native fwd':>10} {'sub-grid fwd':>12}"
    if backward:
        head += f" {'native bwd':>10} {'sub-grid bwd':>12}"
    print(head + f" {'native / sub-grid':>18}")
    torch.manual_seed(0)
    for c, h, w in SHAPES:
        for fmt, name in ((torch.contiguous_format, "NCHW"), (torch.channels_last, "CL")):
            native = nn.Conv2d(c, c, 7, padding=9, dilation=3, groups=c).to(memory_format=fmt)
            grids = copy.deepcopy(native)
            assert fast_dilated_convs(nn.Sequential(grids)) == 1
            x = torch.randn(8, c, h, w).contiguous(memory_format=fmt).requires_grad_(backward)
            nf, nb = _time(native, x, args.repeats, backward)
            gf, gb = _time(grids, x, args.repeats, backward)
            row = f"{f'{c} x {h} x {w}':<16} {name:<7} {nf:>10.1f} {gf:>12.1f}"
            if backward:
                row += f" {nb:>10.1f} {gb:>12.1f}"
            print(row + f" {(nf + nb) / (gf + gb):>17.2f}x")
    print("oneDNN runs a dilated depthwise convolution as im2col + GEMM in forward and both backward passes "
          "(ONEDNN_VERBOSE=1 names x64:gemm:jit)")  # fmt: skip
    if args.pipeline:
        _fast_path(args.pipeline, args.repeats)


if __name__ == "__main__":
    main()
