"""Confusion-matrix accumulation: segcore's ConfusionMatrix against torchmetrics' MulticlassJaccardIndex
(validate_args=False) on the same predictions of the CamVid val labels, in one run; the numbers must be the same.

    python bench/bench_metrics.py [--root ../shared/data/camvid] [--repeats 5] [--threads 1]

Predictions are the val labels with a seeded 20 % of pixels (and every void pixel) set to a random class, so every
cell of the matrix is exercised. Timed: updating with all 101 (prediction, label) pairs, then computing IoU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torchmetrics.classification import MulticlassJaccardIndex

from segcore import Dataset, load_registry
from segcore.engine.metrics import ConfusionMatrix


def pairs(root: str) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int, int]:
    registry = load_registry()
    entry = registry.get(Dataset, "camvid")
    ds = entry.build(entry.config(root=root), split="val")
    k, ignore = ds.meta.num_classes, ds.meta.ignore_index
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(len(ds)):
        label = ds[i]["mask"].long()
        pred = label.clone()
        noise = (torch.rand(label.shape, generator=g) < 0.2) | (label == ignore)
        pred[noise] = torch.randint(0, k, (int(noise.sum()),), generator=g)
        out.append((pred, label))
    return out, k, ignore


def run_ours(data, k, ignore):
    cm = ConfusionMatrix(k, ignore)
    for pred, label in data:
        cm.update(pred, label)
    return cm.matrix, cm.compute()["IoU"]


def run_torchmetrics(data, k, ignore):
    metric = MulticlassJaccardIndex(num_classes=k, ignore_index=ignore, average=None, validate_args=False)
    for pred, label in data:
        metric.update(pred, label)
    return metric.confmat, metric.compute().tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data, k, ignore = pairs(args.root)
    (ours_m, ours_iou), (tm_m, tm_iou) = run_ours(data, k, ignore), run_torchmetrics(data, k, ignore)
    same_matrix = torch.equal(ours_m, tm_m.long())
    same_iou = all(abs(a - b) < 1e-6 for a, b in zip(ours_iou, tm_iou))
    times: dict[str, list[float]] = {"torchmetrics MulticlassJaccardIndex": [], "segcore ConfusionMatrix": []}
    for _ in range(args.repeats):  # interleaved, so load drifts hit both
        for name, fn in zip(times, (run_torchmetrics, run_ours)):
            start = time.process_time()
            fn(data, k, ignore)
            times[name].append(time.process_time() - start)
    pixels = sum(label.numel() for _, label in data)
    print(f"CamVid val: {len(data)} maps, {pixels / 1e6:.1f} M pixels, {k} classes + ignore {ignore}; CPU time, "
          f"median of "
          f"{args.repeats}; {torch.get_num_threads()} threads, torch {torch.__version__}, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
    base = statistics.median(times["torchmetrics MulticlassJaccardIndex"])
    print(f"{'accumulator':<38} {'ms':>8} {'Mpx/s':>8} {'x torchmetrics':>15}")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"{name:<38} {1000 * t:8.1f} {pixels / t / 1e6:8.1f} {base / t:14.2f}x")
    print(f"same confusion matrix: {same_matrix}; same per-class IoU (to 1e-6): {same_iou}")
    return 0 if same_matrix and same_iou else 1


if __name__ == "__main__":
    sys.exit(main())
