"""CamVid decode + augment into batches of 8 at 384x384: kornia on whole batches against torchvision.transforms.v2
per sample, the same operations (random scale 0.5-2.0, 384x384 crop padded with ignore, horizontal flip,
colour jitter), in one run.

    python bench/bench_data.py [--images 96] [--repeats 3] [--root ../shared/data/camvid]

Decoding is the same for both (segcore's CamVid loader, uint8, in the main process) and is also timed alone.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

from segcore import Dataset, load_registry
from segcore.augment import AugmentConfig, BatchAugment

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


def augmenter(ds, parts, compile: bool) -> BatchAugment:
    """Built (and, compiled, warmed up on every batch size) outside the timed part."""
    key = (parts, compile)
    if key not in _AUGMENTS:
        cfg = AugmentConfig(
            scale=(0.5, 2.0) if "scale" in parts else None, crop_size=CROP if "scale" in parts else None,
            hflip=0.5 if "flip" in parts else 0.0, **(JITTER if "jitter" in parts else {}), compile=compile,
        )  # fmt: skip
        aug = BatchAugment(cfg, ignore_index=ds.meta.ignore_index)
        if compile:  # the one-off compile is not part of the rate
            aug(torch.rand(8, 3, 360, 480), torch.zeros(8, 360, 480, dtype=torch.long))
        _AUGMENTS[key] = aug
    return _AUGMENTS[key]


def run_kornia(ds, n, parts=("scale", "flip", "jitter"), compile=False):
    aug = augmenter(ds, parts, compile)
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
    args = parser.parse_args(argv)
    registry = load_registry()
    entry = registry.get(Dataset, "camvid")
    ds = entry.build(entry.config(root=args.root), split="train")
    cases = [("decode only", run_decode, None)]
    for parts, label in ((("scale",), "scale+crop"), (("flip",), "flip"), (("jitter",), "colour jitter"),
                         (("scale", "flip", "jitter"), "scale+crop+flip+jitter")):  # fmt: skip
        cases += [(f"{label}: kornia batch", run_kornia, parts), (f"{label}: torchvision v2 per sample", run_torchvision, parts)]
        if "jitter" in parts:
            cases.append((f"{label}: kornia batch, compiled", functools.partial(run_kornia, compile=True), parts))
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(args.repeats):  # interleaved, so machine drift hits every case
        for name, fn, parts in cases:
            torch.manual_seed(0)
            start = time.perf_counter()
            fn(ds, args.images) if parts is None else fn(ds, args.images, parts)
            times[name].append(args.images / (time.perf_counter() - start))
    print(f"CamVid train, {args.images} images in batches of 8, crop {CROP[0]}x{CROP[1]}, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")  # fmt: skip
    print(f"{'case':<62} {'img/s':>8} {'kornia / torchvision':>21}")
    rows = {name: statistics.median(v) for name, v in times.items()}
    for name, rate in rows.items():
        ratio = ""
        if "kornia batch" in name:
            other = rows[name.split(": ")[0] + ": torchvision v2 per sample"]
            ratio = f"{rate / other:.2f}x"
        print(f"{name:<62} {rate:8.1f} {ratio:>21}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
