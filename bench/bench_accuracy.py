"""What the inference fast path costs in accuracy: val mIoU and per-pixel argmax agreement, fp32 eager against the
fast path (bf16, and optionally fp32 and int8), on a trained model, in one run.

    python bench/bench_accuracy.py RUN_FOLDER [--int8] [--runtime onnxruntime openvino] [--threads N] [--limit N]

RUN_FOLDER is a finished `segcore run` folder or a model folder (its pipeline.toml and model.safetensors, e.g.
hub/models/hrnet_l-camvid); the validation split of its dataset is scored whole-image at its own size, as `segcore
run` with task = "evaluate" does. int8 is calibrated on the first ``[eval] calibration_images`` training images, as
`segcore run` does (``--calibration-images`` overrides). ``--runtime`` adds the exported graph (`segcore export`) in
onnxruntime and/or OpenVINO (fp32; with ``--int8``, OpenVINO int8 through NNCF too, with the knobs below, which
choose what `segcore export --format openvino --int8` should be given). Also printed: CPU time per image.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from segcore import load_registry
from segcore.config import load_pipeline
from segcore.data.datasets import build_split, dataset_meta
from segcore.engine.run import load_model_weights
from segcore.inference.fast import optimize_for_inference
from segcore.engine.metrics import ConfusionMatrix
from segcore.model.build import build_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder")
    parser.add_argument("--int8", action="store_true", help="also int8 (needs torchao)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N validation images only")
    parser.add_argument("--runtime", nargs="+", choices=["onnxruntime", "openvino"], default=[],
                        help="also the exported graph in these runtimes")
    parser.add_argument("--calibration-images", type=int, default=None,
                        help="int8 calibration images (default: [eval] calibration_images)")
    int8 = parser.add_argument_group("int8 knobs (segcore's fast path: --skip-first-last; OpenVINO/NNCF: all)")
    int8.add_argument("--skip-first-last", action="store_true", help="keep the first and last convolutions fp32")
    int8.add_argument("--per-tensor", action="store_true", help="OpenVINO: one weight scale per tensor")
    int8.add_argument("--preset", choices=["performance", "mixed"], default="performance", help="OpenVINO: NNCF preset")
    int8.add_argument("--quantize-matmuls", action="store_true", help="OpenVINO: matrix products in int8 too")
    int8.add_argument("--transformer", action="store_true", help="OpenVINO: NNCF's transformer model type")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = load_registry()
    cfg = load_pipeline(args.run / "pipeline.toml", registry=registry)
    meta = dataset_meta(cfg.data.dataset, registry)
    model = build_model(cfg.model, registry, num_classes=cfg.model.num_classes or meta.num_classes)
    load_model_weights(model, args.run)
    model.eval()
    val = build_split(cfg.data, registry, "val")
    n = min(len(val), args.limit or len(val))
    variants = {"fp32 eager (reference)": model,
                "fast path, bf16": optimize_for_inference(model, precision="bf16"),
                "fast path, fp32": optimize_for_inference(model, precision="fp32")}  # fmt: skip
    calibration = []
    if args.int8:
        train = build_split(cfg.data, registry, "train")
        count = args.calibration_images or cfg.eval.calibration_images
        calibration = [train[i]["image"] for i in range(min(count, len(train)))]
        variants["fast path, int8"] = optimize_for_inference(model, precision="bf16", int8=True, calibration=calibration,
                                                             int8_options={"skip_first_last": args.skip_first_last})  # fmt: skip
    tmp = tempfile.TemporaryDirectory(prefix="bench-accuracy-")
    size = tuple(val[0]["image"].shape[-2:])
    variants.update(_exported(model, args, Path(tmp.name), size, calibration))
    matrices = {k: ConfusionMatrix(meta.num_classes, meta.ignore_index) for k in variants}
    same = dict.fromkeys(variants, 0)
    cpu = dict.fromkeys(variants, 0.0)
    pixels = 0
    with torch.no_grad():
        for i in range(n):
            sample = val[i]
            x = sample["image"][None].float().div(255)
            ref = None
            for name, m in variants.items():
                start = time.process_time()
                pred = m(x).logits.argmax(1)[0]
                if i > 1:  # the first two images warm up (the int8 variant compiles on the second)
                    cpu[name] += time.process_time() - start
                ref = pred if ref is None else ref
                same[name] += int((pred == ref).sum())
                matrices[name].update(pred, sample["mask"])
            pixels += ref.numel()
    print(f"{cfg.model.backbone.name} + {cfg.model.decoder.name} from {args.run}, {cfg.data.dataset.name} "
          f"{cfg.data.val_split}: {n} images; {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
    print(f"{'inference':<24} {'mIoU':>7} {'aAcc':>7} {'argmax = fp32':>14} {'CPU s/img':>10}")
    base = matrices["fp32 eager (reference)"].compute()["mIoU"]
    for name in variants:
        m = matrices[name].compute()
        print(f"{name:<24} {100 * m['mIoU']:7.2f} {100 * m['aAcc']:7.2f} {100 * same[name] / pixels:13.3f}% "
              f"{cpu[name] / max(n - 2, 1):10.3f}   mIoU change {100 * (m['mIoU'] - base):+.2f}")  # fmt: skip
    return 0


class _Exported:
    """An exported graph's session called like the model: (1, C, H, W) -> an object with ``logits``."""

    def __init__(self, session) -> None:  # noqa: ANN001
        self.session = session

    def __call__(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(None, {"image": x.numpy()})[0]))


def _exported(model, args, tmp: Path, size, calibration) -> dict[str, _Exported]:  # noqa: ANN001
    """The --runtime variants: the graph `segcore export` writes, in onnxruntime and OpenVINO (fp32; int8 with
    --int8)."""
    out = {}
    threads = torch.get_num_threads()
    if "onnxruntime" in args.runtime:
        from segcore.inference.onnx import export_onnx, onnxruntime_session

        out["onnxruntime, fp32"] = _Exported(onnxruntime_session(export_onnx(model, tmp / "m.onnx", example_size=size),
                                                                 threads))  # fmt: skip
    if "openvino" in args.runtime:
        from segcore.inference.openvino import Int8Options, OpenVinoSession, export_openvino

        out["OpenVINO, fp32"] = _Exported(OpenVinoSession(export_openvino(model, tmp / "m.xml", example_size=size),
                                                          threads=threads))  # fmt: skip
        if args.int8:
            options = Int8Options(calibration_images=max(len(calibration), 1), per_channel=not args.per_tensor,
                                  preset=args.preset, keep_first_last=args.skip_first_last,
                                  quantize_matmuls=args.quantize_matmuls, transformer=args.transformer)  # fmt: skip
            path = export_openvino(model, tmp / "m-int8.xml", example_size=size, int8=True, calibration=calibration,
                                   options=options)  # fmt: skip
            out["OpenVINO, int8"] = _Exported(OpenVinoSession(path, threads=threads))
    return out


if __name__ == "__main__":
    sys.exit(main())
