"""CamVid decode + augment into batches of 8 at 384x384: kornia on whole batches against torchvision.transforms.v2
per sample, the same operations (random scale 0.5-2.0, 384x384 crop padded with ignore, horizontal flip,
colour jitter), in one run.

    python bench/bench_data.py [--images 96] [--repeats 3] [--threads N] [--root ../shared/data/camvid]

Decoding is the same for both (segcore's CamVid loader, uint8, in the main process) and is also timed alone.
"kornia batch" is segcore's default BatchAugment; with jitter, two variants of it: its colour op compiled
(``compile = true``, compiled before timing), and kornia's own ColorJitter in its place (the HSV round trip).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path

import kornia.augmentation as K
import torch

from segcore import Dataset, load_registry
from segcore.data.augment import AugmentConfig, BatchAugment, FastColorJitter

CROP = (384, 384)
JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)


def batches(ds, n: int, size: int = 8):
    for start in range(0, n, size):
        samples = [ds[i % len(ds)] for i in range(start, min(start + size, n))]
        yield torch.stack([s["image"] for s in samples]), torch.stack([s["mask"] for s in samples])


def run_decode(ds, n):
    for _ in batches(ds, n):
        pass


_AUGMENTS: dict = {}


def augmenter(ds, parts, variant: str, n: int) -> BatchAugment:
    """Built (and, compiled, warmed up on every batch size of n images) outside the timed part."""
    key = (parts, variant)
    if key not in _AUGMENTS:
        cfg = AugmentConfig(
            scale=(0.5, 2.0) if "scale" in parts else None, crop_size=CROP if "scale" in parts else None,
            hflip=0.5 if "flip" in parts else 0.0, **(JITTER if "jitter" in parts else {}),
            compile=variant == "compiled",
        )  # fmt: skip
        aug = BatchAugment(cfg, ignore_index=ds.meta.ignore_index)
        if variant == "kornia ColorJitter":
            ops = [K.ColorJitter(**JITTER) if isinstance(op, FastColorJitter) else op for op in aug.sequence.children()]
            aug.sequence = K.AugmentationSequential(*ops, data_keys=["image", "mask"])
        if variant == "compiled":  # the one-off compile is not part of the rate
            for b in {8, n % 8} - {0}:
                aug(torch.rand(b, 3, 360, 480), torch.zeros(b, 360, 480, dtype=torch.long))
        _AUGMENTS[key] = aug
    return _AUGMENTS[key]


def run_kornia(ds, n, parts=("scale", "flip", "jitter"), variant="default"):
    aug = augmenter(ds, parts, variant, n)
    for image, mask in batches(ds, n):
        image, mask = aug(image.float().div_(255), mask)


def run_torchvision(ds, n, parts=("scale", "flip", "jitter")):
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    ops = []
    if "scale" in parts:
        ops += [v2.RandomResize(180, 720), v2.RandomCrop(CROP, pad_if_needed=True,
                                                        fill={tv_tensors.Image: 0, tv_tensors.Mask: ds.meta.ignore_index})]  # fmt: skip
    if "flip" in parts:
        ops.append(v2.RandomHorizontalFlip(0.5))
    if "jitter" in parts:
        ops.append(v2.ColorJitter(**JITTER))
    tf = v2.Compose(ops)
    for image, mask in batches(ds, n):
        out = [tf(tv_tensors.Image(i), tv_tensors.Mask(m)) for i, m in zip(image, mask)]
        image = torch.stack([o[0] for o in out]).float().div_(255)
        mask = torch.stack([o[1] for o in out])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"))
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = load_registry()
    entry = registry.get(Dataset, "camvid")
    ds = entry.build(entry.config(root=args.root), split="train")
    cases = [("decode only", run_decode, None)]
    for parts, label in ((("scale",), "scale+crop"), (("flip",), "flip"), (("jitter",), "colour jitter"),
                         (("scale", "flip", "jitter"), "scale+crop+flip+jitter")):  # fmt: skip
        cases += [(f"{label}: kornia batch", run_kornia, parts), (f"{label}: torchvision v2 per sample", run_torchvision, parts)]
        variants = ("default", "compiled", "kornia ColorJitter") if "jitter" in parts else ("default",)
        for variant in variants:
            augmenter(ds, parts, variant, args.images)  # built and compiled before anything is timed
            if variant != "default":
                run = functools.partial(run_kornia, variant=variant)
                cases.append((f"{label}: kornia batch, {variant}", run, parts))
    # wall-clock rate, and the process's CPU time per image (all threads): on a machine shared with other jobs the
    # wall clock counts the time other processes held the cores, the CPU time does not
    rates: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(args.repeats):  # interleaved, so machine drift hits every case
        for name, fn, parts in cases:
            torch.manual_seed(0)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn(ds, args.images) if parts is None else fn(ds, args.images, parts)
            rates[name].append(args.images / (time.perf_counter() - start))
            cpu[name].append((time.process_time() - start_cpu) * 1000 / args.images)
    print(f"CamVid train, {args.images} images in batches of 8, crop {CROP[0]}x{CROP[1]}, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"{'case':<62} {'img/s':>7} {'x torchvision':>13} {'CPU ms/img':>10} {'x torchvision':>13}")
    rows = {name: (statistics.median(rates[name]), statistics.median(cpu[name])) for name in rates}
    for name, (rate, ms) in rows.items():
        ratios = ("", "")
        if "kornia batch" in name:  # faster than torchvision > 1x in both columns
            other_rate, other_ms = rows[name.split(": ")[0] + ": torchvision v2 per sample"]
            ratios = (f"{rate / other_rate:.2f}x", f"{other_ms / ms:.2f}x")
        print(f"{name:<62} {rate:7.1f} {ratios[0]:>13} {ms:10.2f} {ratios[1]:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
