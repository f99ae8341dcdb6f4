"""Where an exported ONNX graph spends its time in onnxruntime: its profiler's time per op type (and per cubic /
linear Resize), at one thread by default, on random input of one size.

    segcore export hrnet_l-camvid --format onnx --out camvid.onnx --no-check
    python bench/profile_onnx.py camvid.onnx 360x480 [--threads 1] [--runs 3]

The session is the one segcore checks and times exports with (`segcore.inference.onnx.onnxruntime_session`: every
graph optimisation, one inter-op thread). docs/speed.md has the profile of HRNet_L-W18 before and after the fix.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", type=Path)
    parser.add_argument("size", help="HxW, e.g. 360x480")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3, help="profiled runs after one warm-up")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    import onnx
    import onnxruntime as ort

    h, w = (int(v) for v in args.size.lower().split("x"))
    graph = onnx.load(str(args.onnx), load_external_data=False).graph
    modes = {n.name: next((a.s.decode() for a in n.attribute if a.name == "mode"), "nearest")
             for n in graph.node if n.op_type == "Resize"}  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(args.onnx), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)}
    session.run(None, feed)  # warm-up, not profiled
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(os.environ.get("TMPDIR", "/tmp")) / "segcore-ort-profile")
    session = ort.InferenceSession(str(args.onnx), options, providers=["CPUExecutionProvider"])
    session.run(None, feed)
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    per_op: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"]["op_name"]
            if op == "Resize":
                op = f"Resize ({modes.get(e['name'].removesuffix('_kernel_time'), 'fused')})"
            per_op[op] += e["dur"]
            calls[op] += 1
    total = sum(per_op.values())
    n = args.runs + 1
    print(f"{args.onnx.name} at {h}x{w}, {args.threads} thread(s), onnxruntime {ort.__version__}: "
          f"{1000 * statistics.median(times):.0f} ms per run (median of {args.runs}); time per op type:")  # fmt: skip
    for op, us in per_op.most_common(args.top):
        print(f"  {op:<24} {us / 1000 / n:8.1f} ms  {100 * us / total:5.1f} %  {calls[op] // n:4d} nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
