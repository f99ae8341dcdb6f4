"""The training input pipeline: how long segcore's own training step waits for data.

    python bench/bench_input.py [--steps 8] [--workers 2] [--threads N] [--root ../shared/data/camvid]

HRNet_L-W18 (seed 000's preset) on CamVid, batch 8, 384x384 crops, bf16 autocast + channels_last, the default
augmentation (random scale 0.5-2.0 + padded crop, flip, colour jitter; kornia on the batch, core/segcore/augment.py)
and metrics on (the batch's argmax into a confusion matrix every step): the Trainer's own loader and
``_train_step``, with the time spent blocked on the loader (decoding in ``--workers`` processes), in the
augmentation and in the metrics taken apart. The first step (worker start-up, oneDNN's first calls) is not counted.
"Waiting for data" is the loader wait plus the augmentation, which runs on the main process before the model can
start; the target is under 5 % of the step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from segcore import load_registry
from segcore.config import resolve_bases, structure_pipeline
from segcore.engine.trainer import Trainer
from segcore.engine.metrics import ConfusionMatrix


def pipeline(root: str, workers: int, out: str) -> dict:
    return {
        "base": "hrnet_l_w18",
        "model": {"backbone": {"pretrained": False}},
        "data": {"dataset": {"name": "camvid", "root": root}, "batch_size": 8, "num_workers": workers,
                 "augment": {"scale": [0.5, 2.0], "crop_size": [384, 384], "hflip": 0.5, "brightness": 0.4,
                             "contrast": 0.4, "saturation": 0.4, "hue": 0.1}},
        "loss": [{"name": "ce"}],
        "train": {"iters": 1000, "optimizer": "adamw", "lr": 1e-4, "amp": "bf16", "channels_last": True,
                  "plots": False},
        "run": {"device": "cpu", "out_dir": out},
    }  # fmt: skip


class Timed:
    """Wraps a callable and adds up the wall time of its calls."""

    def __init__(self, fn) -> None:
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"))
    parser.add_argument("--steps", type=int, default=8, help="timed steps (after one untimed)")
    parser.add_argument("--workers", type=int, default=2, help="data.num_workers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = load_registry()
    with tempfile.TemporaryDirectory() as tmp:
        raw = resolve_bases(pipeline(args.root, args.workers, tmp), registry=registry)
        cfg = structure_pipeline(raw, registry=registry)
        trainer = Trainer.from_config(cfg, registry, progress=False, overwrite=True)
        trainer.augment = augment = Timed(trainer.augment)
        matrix = ConfusionMatrix(trainer.meta.num_classes, trainer.meta.ignore_index)
        criterion = trainer.criterion

        def criterion_with_metrics(output, mask):
            start = time.perf_counter()
            matrix.update(output.logits.detach().argmax(1), mask)
            metrics.seconds += time.perf_counter() - start
            return criterion(output, mask)

        metrics = Timed(None)
        trainer.criterion = criterion_with_metrics
        rows = []
        batches = iter(trainer._loader(0, 0))
        for step in range(args.steps + 1):
            augment.seconds = metrics.seconds = 0.0
            start = time.perf_counter()
            batch = next(batches)
            waited = time.perf_counter() - start
            trainer._train_step([batch])
            total = time.perf_counter() - start
            if step:
                rows.append((waited, augment.seconds, metrics.seconds, total))
            trainer.step += 1
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    total = sum(r[3] for r in rows)
    waited, aug, met = (sum(r[i] for r in rows) for i in range(3))
    print(f"HRNet_L-W18 on CamVid train, batch 8, 384x384 crops, bf16 + channels_last, kornia scale+crop+flip+jitter, "
          f"metrics on; {args.workers} loader workers, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {len(rows)} steps after 1 untimed")  # fmt: skip
    print(f"{'':<34} {'median s/step':>13} {'share of the steps':>19}")
    for name, m, s in (("step (all of it)", med[3], total), ("waiting on the loader", med[0], waited),
                       ("augmentation (main process)", med[1], aug), ("metrics (confusion matrix)", med[2], met)):  # fmt: skip
        print(f"{name:<34} {m:13.3f} {100 * s / total:18.2f}%")
    share = 100 * (waited + aug) / total
    print(f"the model waits for data (loader + augmentation) {share:.2f}% of the step: "
          f"{'under' if share < 5 else 'NOT under'} the 5% target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
