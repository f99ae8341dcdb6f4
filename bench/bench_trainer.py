"""segcore's trainer against a plain hand-written PyTorch loop: same model, data, optimizer, schedule, batch.

    python bench/bench_trainer.py [--steps 40] [--repeats 3] [--amp none|bf16] [--size 128] [--batch 16]

Both loops are timed the same way: images per second over the whole loop (data loading, forward, loss,
backward, step), setup and the final evaluation left out. Runs alternate (segcore, plain, segcore, ...) so
that drifts in machine load hit both; the table gives the median of the repeats and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from segcore import build_model, load_registry
from segcore.builtin.datasets import ShapesConfig, ShapesDataset
from segcore.config import structure_pipeline
from segcore.engine.trainer import Trainer


def pipeline(steps: int, size: int, batch: int, amp: str, out: Path) -> dict:
    return {
        "model": {"backbone": {"name": "timm", "model_name": "hrnet_w18_small"}, "decoder": {"name": "hrnetv2_head"}},
        "data": {"dataset": {"name": "shapes", "size": [size, size], "num_train": steps * batch, "num_val": 2},
                 "batch_size": batch, "augment": {"hflip": 0.0}},
        "loss": [{"name": "ce"}],
        "train": {"iters": steps, "optimizer": "sgd", "lr": 0.01, "schedule": "poly", "amp": amp, "log_every": steps,
                  "checkpoint_every": 0, "plots": False},
        "run": {"device": "cpu", "out_dir": str(out)},
    }  # fmt: skip


def run_segcore(registry, raw: dict) -> float:
    cfg = structure_pipeline(raw, registry=registry)
    trainer = Trainer.from_config(cfg, registry, progress=False, overwrite=True)
    trainer.fit()
    return [r for r in trainer.log.read() if r["kind"] == "train"][-1]["img_s"]


def run_plain(registry, raw: dict) -> float:
    """What a researcher writes by hand for the same job."""
    torch.manual_seed(0)
    cfg = structure_pipeline(raw, registry=registry)
    data = cfg.data
    dataset = ShapesDataset(ShapesConfig(**{k: getattr(data.dataset.config, k) for k in ("size", "num_train", "num_val")}), split="train")
    loader = torch.utils.data.DataLoader(dataset, batch_size=data.batch_size, shuffle=True, drop_last=True)
    model = build_model(cfg.model, registry, num_classes=5).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    steps = cfg.train.iters
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / steps) ** 0.9)
    amp = cfg.train.amp == "bf16"
    start, seen = time.perf_counter(), 0
    for batch in loader:
        image = batch["image"].float().div_(255)
        mask = batch["mask"]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = model(image).logits
        loss = F.cross_entropy(logits.float(), mask, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        seen += len(image)
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--amp", nargs="+", default=["none", "bf16"], choices=["none", "bf16"])
    args = parser.parse_args(argv)
    registry = load_registry()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for amp in args.amp:
            raw = pipeline(args.steps, args.size, args.batch, amp, Path(tmp) / amp)
            ours, plain = [], []
            for _ in range(args.repeats):
                ours.append(run_segcore(registry, raw))
                plain.append(run_plain(registry, raw))
            rows.append((amp, statistics.median(plain), statistics.median(ours)))
    print(f"hrnet_w18_small + HRNetV2 head, shapes {args.size}x{args.size}, batch {args.batch}, SGD + poly, "
          f"{args.steps} steps, median of {args.repeats}, {torch.get_num_threads()} threads, torch {torch.__version__}")  # fmt: skip
    print(f"{'amp':<6} {'plain loop img/s':>17} {'segcore img/s':>14} {'segcore / plain':>16}")
    for amp, plain, ours in rows:
        print(f"{amp:<6} {plain:17.1f} {ours:14.1f} {ours / plain:15.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
