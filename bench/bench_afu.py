"""Frame rate of the seed-002 hosts with and without the AFU module, measured as the thesis does (section V.C,
Fig. 15): per host and input size, warm-up passes, then 200 timed forward passes of one image; FPS = passes / time.

    python bench/bench_afu.py [--hosts upernet_swin_t deeplabv3_r50 ...] [--sizes 512x512 512x1024]
                              [--iters 200] [--warmup 10] [--repeats 1] [--classes 19] [--threads N]
                              [--clock wall|cpu]

Hosts are the recipes' (plugins/attention-fusion/configs/hosts/*.toml, at the thesis' widths, random weights) and
``camvid`` (configs/camvid_base.toml, a small one for CPUs). The AFU model is the same model with AFU on every
upsampling place of the host and on the final logits upsampling, loaded with the base's weights (it has none of
its own). Both run in eval mode under no_grad; the timings of base and AFU alternate per repeat so that drifts in
machine load hit both; the table gives the median FPS of the repeats, the per-pass spread and the ratio.
``--clock cpu`` times the process's CPU seconds instead of wall time: on a machine shared with other jobs, with
``--threads 1``, it measures the work of a pass rather than the share of the CPU the job happened to get.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

from segcore import build_model, get_plugin_manager, load_registry
from segcore.config import read_toml, structure_pipeline

CONFIGS = Path(__file__).resolve().parents[1] / "plugins" / "attention-fusion" / "configs"
HOSTS = sorted(p.stem for p in (CONFIGS / "hosts").glob("*.toml")) + ["camvid"]
MULTI_LEVEL = ("uper", "hrnetv2_head")  # decoders whose fusion has upsampling places


def model_table(host: str, registry) -> dict:
    path = CONFIGS / ("camvid_base.toml" if host == "camvid" else f"hosts/{host}.toml")
    model = read_toml(path, registry=registry)["model"]
    model["backbone"]["pretrained"] = False  # timing only: random weights, no download
    model.pop("aux", None)  # training-only heads never run at inference
    return model


def with_afu(model: dict) -> dict:
    model = copy.deepcopy(model)
    model["attention"] = {"final_upsample": {"name": "afu"}}
    if model["decoder"]["name"] in MULTI_LEVEL:
        model["decoder"]["attention"] = {"upsample": {"name": "afu"}}
    return model


def build(model: dict, num_classes: int, registry) -> torch.nn.Module:
    raw = {"model": {**model, "num_classes": num_classes}, "data": {"dataset": {"name": "shapes"}}}
    cfg = structure_pipeline(raw, registry=registry)
    return build_model(cfg.model, registry, num_classes=num_classes).eval()


@torch.no_grad()
def time_passes(model: torch.nn.Module, image: torch.Tensor, iters: int, clock=time.perf_counter) -> list[float]:
    """Seconds (of *clock*) of each of *iters* forward passes."""
    times = []
    for _ in range(iters):
        start = clock()
        model(image)
        times.append(clock() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", nargs="+", default=[h for h in HOSTS if h.startswith(("upernet", "deeplabv3"))],
                        choices=HOSTS)  # fmt: skip
    parser.add_argument("--sizes", nargs="+", default=["512x512", "512x1024"])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = load_registry(get_plugin_manager())
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    rows = []
    for host in args.hosts:
        torch.manual_seed(0)
        base_table = model_table(host, registry)
        base = build(base_table, args.classes, registry)
        fused = build(with_afu(base_table), args.classes, registry)
        fused.load_state_dict(base.state_dict(), strict=True)
        for size in args.sizes:
            h, w = (int(v) for v in size.lower().split("x"))
            image = torch.rand(1, 3, h, w)
            for model in (base, fused):
                time_passes(model, image, args.warmup)
            fps: dict[str, list[float]] = {"base": [], "afu": []}
            spread: dict[str, list[float]] = {"base": [], "afu": []}
            for _ in range(args.repeats):
                for name, model in (("base", base), ("afu", fused)):
                    times = time_passes(model, image, args.iters, clock)
                    fps[name].append(len(times) / sum(times))
                    spread[name].append(statistics.pstdev(times) / statistics.mean(times))
            b, a = statistics.median(fps["base"]), statistics.median(fps["afu"])
            rows.append((host, f"{h}x{w}", f"{b:.3f}", f"{a:.3f}", f"{a / b:.3f}",
                         f"{100 * max(spread['base']):.1f}%", f"{100 * max(spread['afu']):.1f}%"))  # fmt: skip
            print(" ".join(rows[-1]), file=sys.stderr, flush=True)
    head = ("host", "input", "FPS base", "FPS +AFU", "ratio", "spread base", "spread +AFU")
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    print(f"{args.iters} timed passes after {args.warmup} warm-up, batch 1, {torch.get_num_threads()} threads, "
          f"{args.repeats} repeat(s), {args.clock} clock; spread = std / mean of one pass")  # fmt: skip
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
