"""``segcore export SOURCE``: the inference model as ONNX, checked against PyTorch."""

from __future__ import annotations

__all__ = ["add_parser", "cmd_export"]

import argparse
import sys
import time
from pathlib import Path

from segcore.cli import _common

SUFFIXES = {"onnx": ".onnx", "openvino": ".xml"}  # --format -> the output file (OpenVINO's IR: .xml + .bin)


def cmd_export(args: argparse.Namespace) -> int:
    from segcore.inference import EXPORTERS
    from segcore.data.images import model_input
    from segcore.inference.onnx import check_onnx, onnx_initializers, parity_images

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    registry = _common.registry()
    model, cfg, out = _export_source(args, registry)
    start = time.perf_counter()
    size = cfg.run.input_size if cfg else ((getattr(model, "hub_config", None) or {}).get("input_size") or (512, 512))
    path = EXPORTERS[args.format](model, out, example_size=tuple(size), opset=args.opset, cut=args.cut,
                                  **_openvino_options(args, model, cfg, registry))  # fmt: skip
    heads = [n for n in onnx_initializers(path) if ".aux." in f".{n}"] if args.format == "onnx" else []
    channels, max_value = model_input(model)
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]  # an IR's weights: the .bin
    print(f"wrote {path} ({sum(f.stat().st_size for f in files) / 2**20:.1f} MB, {time.perf_counter() - start:.0f} s): input image "
          f"(batch, {channels}, height, width) float in [0, 1] (pixel values / {max_value or 'the type maximum'}), "
          f"output logits (batch, {model.num_classes}, height, width); "
          f"training-only heads in the graph: {len(heads)}")
    if args.cut == "labels":
        print("  --cut labels: the graph's output is labels (batch, height, width) uint8, the argmax of the logits")
    if args.no_check:
        return 0
    check_cfg = cfg if cfg is not None or args.images is not None else _recipe(args, registry)
    images, where = parity_images(check_cfg, registry, images_dir=args.images, count=args.check_images, channels=channels)
    import torch

    print(f"parity with PyTorch (fp32 eager) on {len(images)} {where}; latency: batch 1, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    runtime, session = "onnxruntime", None
    if args.format == "openvino":
        from segcore.inference.openvino import OpenVinoSession

        runtime, session = "OpenVINO", OpenVinoSession(path, threads=torch.get_num_threads())
    print(f"{'size':>9}  {'max |diff|':>10}  {'max |logit|':>11}  {'argmax agree':>12}  {'PyTorch ms':>10}  "
          f"{runtime + ' ms':>14}  {'speed-up':>12}  {'PyTorch fast path ms':>20}")  # fmt: skip
    ok = True
    for scale in args.scales:
        c = check_onnx(path, model, images, scale=scale, repeats=args.repeats, session=session)
        ok &= c.agreement >= 0.999 or args.int8  # int8 agreement is reported; bench/bench_accuracy.py judges it
        print(f"{c.size[0]:>4}x{c.size[1]:<4}  {c.max_abs_diff:10.2e}  {c.max_abs_logit:11.2f}  "
              f"{100 * c.agreement:11.3f}%  {c.torch_ms:10.0f}  {c.onnxruntime_ms:14.0f}  "
              f"{c.torch_ms / c.onnxruntime_ms:11.2f}x  {c.fast_ms:20.0f}")
    if not ok:
        print("error: argmax agreement below 99.9 % at some size", file=sys.stderr)
        return 1
    return 0


def _export_source(args: argparse.Namespace, registry):
    """(model in eval mode, its pipeline or None, output path) from a pipeline file (its run.checkpoint or --weights),
    or any source `segcore.hub.resolve_source` takes: a run folder, a model folder, a .safetensors file, a pretrained
    name, a Hub repo id."""
    from segcore.config import load_pipeline
    from segcore.data.datasets import dataset_meta
    from segcore.engine.run import load_model_weights
    from segcore.hub.folder import load_source
    from segcore.hub.sources import resolve_source
    from segcore.model.build import build_model

    if args.source.endswith(".toml"):
        source = Path(args.source)
        cfg = load_pipeline(source, registry=registry)
        weights = args.weights or cfg.run.checkpoint
        meta = dataset_meta(cfg.data.dataset, registry)
        model = build_model(cfg.model, registry, num_classes=cfg.model.num_classes or meta.num_classes)
        if weights:
            load_model_weights(model, weights, what="segcore export --weights" if args.weights else "run.checkpoint",
                               registry=registry)  # fmt: skip
        else:
            print("warning: no weights (give --weights or run.checkpoint): exporting random weights", file=sys.stderr)
        out = Path(args.out or _int8_name(source.with_suffix(SUFFIXES[args.format]), args))
        out = _claim_output(out, random_weights=not weights, overwrite=args.overwrite)
        return model.eval(), cfg, out
    source = resolve_source(args.source, what="segcore export", registry=registry)
    model, cfg = load_source(source, registry)
    if args.weights:  # other weights for the same model (a run's checkpoints/ckpt-<step>)
        load_model_weights(model, args.weights, what="segcore export --weights", registry=registry)
    suffix = SUFFIXES[args.format]
    if source.folder is not None and source.kind != "zoo":
        out = source.folder / f"model{suffix}"
    elif source.kind == "file":
        out = source.path.with_suffix(suffix)
    else:
        out = Path(f"{args.source.removeprefix('hf-hub:').replace('/', '_').replace('@', '_')}{suffix}")
    return model.eval(), cfg, _claim_output(Path(args.out or _int8_name(out, args)), random_weights=False, overwrite=args.overwrite)


def _recipe(args: argparse.Namespace, registry):  # noqa: ANN202 (a PipelineConfig or None)
    """A model folder's or zoo model's own pipeline.toml (the recipe it was trained with) when its dataset is on this
    machine (relative roots from the working directory), for the parity check's validation images; else None."""
    from segcore.config import load_pipeline
    from segcore.data.datasets import build_split
    from segcore.errors import SegcoreError
    from segcore.hub.sources import resolve_source

    recipe = resolve_source(args.source, what="segcore export", registry=registry).beside("pipeline.toml")
    if recipe is None:
        return None
    try:
        cfg = load_pipeline(recipe, registry=registry)
        build_split(cfg.data, registry, "val")
    except SegcoreError as exc:
        print(f"note: the parity check cannot read the validation images of {args.source}'s recipe ({exc}); give "
              "--images <folder>", file=sys.stderr)  # fmt: skip
        return None
    return cfg


def _int8_name(out: Path, args: argparse.Namespace) -> Path:
    """The default output name: model-int8.xml for an int8 IR, so that it does not replace the fp32 one."""
    return out.with_name(f"{out.stem}-int8{out.suffix}") if args.int8 else out


def _openvino_options(args: argparse.Namespace, model, cfg, registry) -> dict:
    """The exporter's keyword arguments beyond the ONNX ones: OpenVINO's int8 settings and calibration images."""
    from segcore.errors import ConfigError

    if args.format != "openvino":
        if args.int8:
            raise ConfigError("segcore export --int8 quantizes an OpenVINO IR (NNCF): add --format openvino; int8 in "
                              "PyTorch is [eval] int8 = true")  # fmt: skip
        return {}
    from segcore.inference.openvino import Int8Options, calibration_images, require_openvino

    require_openvino(int8=args.int8)
    if not args.int8:
        return {}
    options = Int8Options(calibration_images=args.calibration_images, per_channel=not args.per_tensor,
                          preset=args.preset, keep_first_last=args.keep_first_last,
                          quantize_matmuls=args.quantize_matmuls, transformer=args.transformer)  # fmt: skip
    recipe = None
    if cfg is None and args.calibration_data is None:  # a model folder or zoo name: the recipe it was trained with
        from segcore.hub.sources import resolve_source

        recipe = resolve_source(args.source, what="segcore export", registry=registry).beside("pipeline.toml")
    images, where = calibration_images(cfg, registry, data=args.calibration_data or recipe,
                                       count=args.calibration_images, source=args.source)  # fmt: skip
    print(f"int8: NNCF post-training quantization calibrated on {len(images)} {where}")
    return {"int8": True, "calibration": images, "options": options}


def _claim_output(out: Path, *, random_weights: bool, overwrite: bool) -> Path:
    """*out*, once it is shown free to write: never a file segcore did not write (`segcore.io.claim`), and an
    export of random weights replaces an earlier export only with --overwrite. Recorded as segcore's."""
    from segcore.errors import ConfigError
    from segcore.io import claim, record

    names = [out.name, out.with_suffix(".bin").name] if out.suffix == ".xml" else [out.name]  # IR: .xml + .bin
    claim(out.parent, names, what="segcore export", hint="Give --out another file.")
    if random_weights and out.exists() and not overwrite:
        raise ConfigError(f"segcore export: no weights (give --weights or run.checkpoint), and exporting random weights "
                          f"would replace {out}. Give the weights, or --out another file, or --overwrite to replace it "
                          "with random weights.")  # fmt: skip
    record(out.parent, names)  # before writing: a file cut off by a crash is still segcore's to replace
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write the inference model as ONNX or OpenVINO IR (dynamic batch/height/width; "
                       "int8 through NNCF) and check it against PyTorch with onnxruntime or OpenVINO")
    p.add_argument("source", help="a pipeline file (weights: --weights or run.checkpoint), or a run folder, a model "
                   "folder, a .safetensors file beside its config.json or pipeline.toml, a pretrained name or a Hub repo id")
    p.add_argument("--format", choices=list(SUFFIXES), default="onnx",
                   help="onnx (onnxruntime and most runtimes), or openvino (IR .xml + .bin; pip install "
                   '"segcore[openvino]")')  # fmt: skip
    p.add_argument("--cut", choices=["logits", "labels"], default="logits", help="where the graph ends: the logits "
                   "(batch, classes, height, width) float32, or the label map (batch, height, width) uint8 (argmax "
                   "in the graph)")  # fmt: skip
    q = p.add_argument_group("int8 (--format openvino; NNCF post-training quantization)")
    q.add_argument("--int8", action="store_true", help="quantize the IR to int8 (writes model-int8.xml by default)")
    q.add_argument("--calibration-images", type=_common.positive, default=32,
                   help="training images that calibrate int8 (default 32)")
    q.add_argument("--calibration-data", type=Path, help="where they come from: a pipeline file (its training split) "
                   "or a folder of images (default: the source's own pipeline, or a model's recipe dataset)")
    q.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (default: per channel)")
    q.add_argument("--preset", choices=["performance", "mixed"], default="performance",
                   help="NNCF preset: performance (symmetric activations) or mixed (asymmetric activations)")
    q.add_argument("--keep-first-last", action="store_true", help="keep the first and last convolutions in fp32")
    q.add_argument("--quantize-matmuls", action="store_true", help="also quantize matrix products (attention, the "
                   "bicubic upsampling matrices); kept fp32 by default")  # fmt: skip
    q.add_argument("--transformer", action="store_true", help="NNCF's transformer model type (softmax and "
                   "attention blocks handled as such)")
    p.add_argument("--out", type=Path, help="output file (default: a pipeline's or .safetensors file's name with "
                   ".onnx, or .xml with --format openvino; model.onnx in a run or model folder; <name>.onnx in the "
                   "working folder for a pretrained name or Hub repo id; -int8 before the suffix with --int8)")
    p.add_argument("--weights", help="other weights for the model: a .safetensors file, a run or checkpoint folder, a "
                   "model folder, a pretrained name or a Hub repo id (overrides run.checkpoint)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export even with random weights (never a file segcore did not write)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: torch's)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the parity check and the runtime's timing (onnxruntime or OpenVINO)")
    p.add_argument("--check-images", type=_common.positive, default=8, help="validation images to check on (default 8)")
    p.add_argument("--images", type=Path, help="a folder of images to check on (default: the pipeline's val split)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.75],
                   help="image scales to check at (default: 1.0 0.75, two sizes through the one graph)")
    p.add_argument("--repeats", type=_common.positive, default=3, help="timed runs for the latencies")
    p.add_argument("--threads", type=_common.positive, help="threads for PyTorch and onnxruntime alike (default: torch's own "
                   "choice; on a machine shared with other jobs 1 thread gives steadier numbers)")
    p.set_defaults(func=cmd_export)
