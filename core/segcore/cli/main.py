"""The ``segcore`` command: run, check, bench, export, list, plot, data, hub."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from segcore.model.counting import CONVENTIONS
from segcore.errors import SegcoreError
from segcore.contracts.stages import STAGES


def _registry():
    from segcore.contracts.plugins import load_registry

    registry = load_registry()
    for problem in registry.problems:
        print(f"warning: {problem}", file=sys.stderr)
    return registry


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text!r}")
    return value


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW like 512x1024, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"height and width must be > 0, got {text!r}")
    return h, w


def cmd_run(args: argparse.Namespace) -> int:
    import attrs

    from segcore.config import load_pipeline
    from segcore.engine.evaluate import EvalResult, format_metrics
    from segcore.engine.run import run_pipeline
    from segcore.data.datasets import dataset_meta
    from segcore.engine.trainer import Interrupted

    if args.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        return _launch(args)
    registry = _registry()
    cfg = load_pipeline(args.pipeline, registry=registry)
    overrides = {k: v for k, v in (("device", args.device), ("out_dir", args.out_dir)) if v is not None}
    if overrides:
        cfg = attrs.evolve(cfg, run=attrs.evolve(cfg.run, **overrides))
    try:
        result = run_pipeline(cfg, registry, progress=not args.quiet, resume=args.resume, overwrite=args.overwrite)
    except Interrupted as exc:
        if _rank() == 0:
            print(str(exc).replace("segcore run <pipeline> --resume", _resume_command(args)), file=sys.stderr)
        return 130
    if _rank() != 0:
        return 0
    if isinstance(result, EvalResult):
        print(format_metrics(result.metrics, dataset_meta(cfg.data.dataset, registry)))
        if cfg.run.task == "train":
            print(f"weights, metrics, log and plots in {cfg.run.out_dir}/")
    else:
        print(f"wrote {len(result)} files to {cfg.predict.output_dir}/")
    return 0


def _launch(args: argparse.Namespace) -> int:
    """``segcore run --nproc-per-node N``: torchrun's own launcher (`torch.distributed.run`, ``--standalone``) in
    this process, so that it ends as one process does: Ctrl-C has every worker finish its step and rank 0 write a
    checkpoint, then exit 130 (torchrun alone would add its SignalException traceback and exit 1); a worker's
    error exits with the worker's code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    worker = ["run", args.pipeline, *_run_flags(args)]
    try:
        run(get_args_parser().parse_args(["--standalone", "--nproc-per-node", str(args.nproc_per_node), "-m", "segcore", *worker]))
    except SignalException as exc:
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        code = exc.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code  # a worker killed by signal N: -N
    return 0


def _run_flags(args: argparse.Namespace) -> list[str]:
    flags = [x for flag, v in (("--out-dir", args.out_dir), ("--device", args.device)) if v is not None for x in (flag, v)]
    return flags + [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite), ("-q", args.quiet)) if on]


def _resume_command(args: argparse.Namespace) -> str:
    """The command that continues this run: same pipeline, same --out-dir/--device, same launcher."""
    import shlex

    cmd = ["segcore", "run", args.pipeline, "--resume"]
    cmd += [x for flag, v in (("--out-dir", args.out_dir), ("--device", args.device)) if v is not None for x in (flag, v)]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        cmd += ["--nproc-per-node", str(world)]
    return shlex.join(cmd)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def cmd_check(args: argparse.Namespace) -> int:
    from segcore.model.check import check_pipeline, format_json, format_table
    from segcore.config import load_pipeline

    start = time.perf_counter()
    registry = _registry()
    cfg = load_pipeline(args.pipeline, registry=registry)
    size = args.input_size or cfg.run.input_size
    rows = check_pipeline(cfg, registry, input_size=size, convention=args.convention)
    if args.json:  # stdout is the JSON document alone; an exit code of 0 says every contract held
        print(format_json(rows, size, args.convention))
        return 0
    print(format_table(rows, size, args.convention))
    print(f"ok: every stage keeps its contract (meta device, no weights allocated; {time.perf_counter() - start:.2f} s)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from segcore.tools.bench import format_bench, run_bench, to_json
    from segcore.config import load_pipeline

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    registry = _registry()
    cfg = load_pipeline(args.pipeline, registry=registry)
    extra = (("fast path + compile", args.compile), ("fast path + int8", args.int8))
    modes = list(args.modes) + [mode for mode, on in extra if on]
    say = None if args.json or args.quiet else (lambda message: print(f"  {message}", file=sys.stderr))
    result = run_bench(cfg, registry, input_size=args.input_size, batch=args.batch, train_size=args.train_size,
                       train_batch=args.train_batch, inference_modes=modes,
                       train_modes=[] if args.no_train else args.train_modes,
                       baseline=args.baseline, repeats=args.repeats, warmup=args.warmup, progress=say)  # fmt: skip
    print(to_json(result) if args.json else format_bench(result))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from segcore.inference import EXPORTERS
    from segcore.inference.onnx import check_onnx, onnx_initializers, parity_images

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    registry = _registry()
    model, cfg, out = _export_source(args, registry)
    start = time.perf_counter()
    size = cfg.run.input_size if cfg else ((getattr(model, "hub_config", None) or {}).get("input_size") or (512, 512))
    path = EXPORTERS[args.format](model, out, example_size=tuple(size), opset=args.opset)
    heads = [n for n in onnx_initializers(path) if ".aux." in f".{n}"]
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB, {time.perf_counter() - start:.0f} s): input image "
          f"(batch, 3, height, width) float in [0, 1], output logits (batch, {model.num_classes}, height, width); "
          f"training-only heads in the graph: {len(heads)}")
    if args.no_check:
        return 0
    images, where = parity_images(cfg, registry, images_dir=args.images, count=args.check_images)
    import torch

    print(f"parity with PyTorch (fp32 eager) on {len(images)} {where}; latency: batch 1, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'size':>9}  {'max |diff|':>10}  {'max |logit|':>11}  {'argmax agree':>12}  {'PyTorch ms':>10}  "
          f"{'onnxruntime ms':>14}  {'ORT speed-up':>12}  {'PyTorch fast path ms':>20}")  # fmt: skip
    ok = True
    for scale in args.scales:
        c = check_onnx(path, model, images, scale=scale, repeats=args.repeats)
        ok &= c.agreement >= 0.999
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
        return model.eval(), cfg, Path(args.out or source.with_suffix(".onnx"))
    source = resolve_source(args.source, what="segcore export", registry=registry)
    model, cfg = load_source(source, registry)
    if args.weights:  # other weights for the same model (a run's checkpoints/ckpt-<step>)
        load_model_weights(model, args.weights, what="segcore export --weights", registry=registry)
    if source.folder is not None and source.kind != "zoo":
        out = source.folder / "model.onnx"
    elif source.kind == "file":
        out = source.path.with_suffix(".onnx")
    else:
        out = Path(f"{args.source.removeprefix('hf-hub:').replace('/', '_').replace('@', '_')}.onnx")
    return model.eval(), cfg, Path(args.out or out)


def cmd_list(args: argparse.Namespace) -> int:
    registry = _registry()
    for stage in STAGES:
        entries = registry.entries(stage)
        print(f"{stage.__name__} ({len(entries)})")
        width = max((len(e.name) for e in entries), default=0)
        for e in entries:
            slots = getattr(e.cls, "attention_slots", ())
            extra = f"  slots: {', '.join(slots)}" if slots else ""
            print(f"  {e.name:<{width}}  {e.plugin.name} ({e.plugin.dist or '?'} {e.plugin.version or ''}){extra}".rstrip())
    presets = registry.presets()
    if presets:
        print(f"Preset ({len(presets)})")
        for name, plugin in presets.items():
            print(f"  {name}  {plugin.name} ({plugin.dist} {plugin.version})")
    if registry.problems:
        print(f"{len(registry.problems)} plugin(s) failed; see the warnings above")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from segcore.engine.report import RunLog, plot_compare

    if args.label and len(args.label) != len(args.runs):
        raise SegcoreError(f"--label: {len(args.label)} labels for {len(args.runs)} runs; give one per run or none")
    runs = []
    for i, folder in enumerate(args.runs):
        records = RunLog(Path(folder), enabled=False).read()
        if not records:
            raise SegcoreError(f"{folder}: no log.jsonl with records; pass run folders (run.out_dir of segcore run)")
        runs.append((args.label[i] if args.label else Path(folder).name, records))
    plot_compare(runs, Path(args.out), x=args.x)
    for label, records in runs:
        evals = [r for r in records if r["kind"] == "eval" and "mIoU" in r]
        best = max(evals, key=lambda r: r["mIoU"]) if evals else None
        last = f"last val mIoU {100 * evals[-1]['mIoU']:.2f} (step {evals[-1]['step']}), best {100 * best['mIoU']:.2f} " \
               f"(step {best['step']})" if best else "no evaluation logged"  # fmt: skip
        print(f"{label}: {last}")
    print(f"wrote {args.out}")
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from segcore.config import DatasetSpec, structure_table
    from segcore.data.datasets import build_dataset
    from segcore.errors import DataError
    from segcore.hub.datasets import convert
    from segcore.contracts.stages import Dataset

    registry = _registry()
    entry = registry.get(Dataset, args.name)
    table = dict(_parse_set(args.set))
    if args.root is not None:
        table["root"] = args.root
    spec = structure_table({"name": args.name, **table}, DatasetSpec, registry=registry,
                           source=f"segcore data convert {args.name} (--root/--set)")  # fmt: skip
    if args.splits:
        built = {split: build_dataset(spec, registry, split) for split in args.splits}
    else:  # every split the release on disk has
        built = {}
        for split in entry.cls.splits:
            try:
                built[split] = build_dataset(spec, registry, split)
            except DataError:
                continue
    out = convert(built, Path(args.out), title=args.title or f"{args.name} (segcore)", rows_per_shard=args.rows_per_shard)
    print(f"wrote {', '.join(f'{s}: {len(d)}' for s, d in built.items())} samples to {out}/ (parquet + README.md card)")
    return 0


def _parse_set(items: Sequence[str]) -> list[tuple[str, object]]:
    import tomllib

    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out.append((key.strip(), tomllib.loads(f"v = {value}")["v"]))
        except tomllib.TOMLDecodeError:
            out.append((key.strip(), value))
    return out


def cmd_data_push(args: argparse.Namespace) -> int:
    from segcore.hub.datasets import push

    url = push(Path(args.folder), args.repo_id, private=args.private)
    print(f"pushed {args.folder} to {args.repo_id}: {url}")
    return 0


def cmd_hub_list(args: argparse.Namespace) -> int:
    from segcore.hub.manifest import zoo

    entries = zoo(_registry())
    rows = [("name", "plugin", "dataset", "val mIoU", "weights", "recipe")]
    for name, e in entries.items():
        if e.metrics.get("mIoU") is not None:
            miou = f"{e.metrics['mIoU']:.2f}"
        else:
            miou = f"({e.paper['mIoU']} paper)" if "mIoU" in e.paper else "-"
        recipe = e.path(e.recipe)  # None without SEGCORE_ZOO: the manifest's own relative path
        rows.append((name, e.plugin, e.dataset or "-", miou, e.status, os.path.relpath(recipe) if recipe else e.recipe or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_hub_save(args: argparse.Namespace) -> int:
    from segcore.tools.publish import manifest_lines, save_run

    config = save_run(args.run_dir, args.out, name=args.name, dtype=args.dtype, evaluate=not args.no_evaluate,
                      hardware=args.hardware, train_hours=args.train_hours, cores=args.cores, registry=_registry(),
                      progress=not args.quiet)  # fmt: skip
    m = config.get("metrics")
    if m:
        print(f"{m['split']} mIoU {100 * m['mIoU']:.2f} ({config['weights']['dtype']} weights)"
              + (f"; float32 weights: {100 * m['float32_mIoU']:.2f}" if "float32_mIoU" in m else ""))  # fmt: skip
    print(f"wrote {args.out}/ (model.safetensors, config.json, README.md). Manifest lines (segcore/hub/zoo.toml, or "
          "$SEGCORE_ZOO/manifest.toml):\n")
    print(manifest_lines(Path(args.out), config))
    return 0


def cmd_hub_push(args: argparse.Namespace) -> int:
    from segcore.hub.publish import push_to_hub

    result = push_to_hub(args.folder, args.repo_id, private=args.private)
    print(f"pushed {args.folder} to {result.url}\nManifest lines:\n\nrepo_id = \"{result.repo_id}\"\n"
          f"revision = \"{result.revision}\"\nsha256 = \"{result.sha256}\"")  # fmt: skip
    return 0


def cmd_hub_cards(args: argparse.Namespace) -> int:
    from segcore.hub.folder import render_zoo_card
    from segcore.errors import ConfigError
    from segcore.hub.manifest import ZOO_VAR, zoo, zoo_dir
    from segcore.io import write_text

    registry = _registry()
    folder = zoo_dir()
    if folder is None:
        raise ConfigError(f"segcore hub cards writes <zoo folder>/cards/: set {ZOO_VAR} to it (in a clone: {ZOO_VAR}=hub)")
    written = 0
    for name, entry in zoo(registry).items():
        if entry.folder is None and entry.recipe is not None:
            write_text(folder / "cards" / f"{name}.md", render_zoo_card(entry, registry))
            written += 1
    print(f"wrote {written} cards to {folder / 'cards'}/")
    return 0


def _push_parser(sub, help: str, func) -> None:
    p = sub.add_parser("push", help=help)
    p.add_argument("folder")
    p.add_argument("--repo-id", required=True, help="owner/name")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=func)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segcore", description="Plugin-based semantic segmentation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="run what the pipeline file's [run] section says (train, evaluate or predict)")
    p.add_argument("pipeline", help="pipeline TOML file")
    p.add_argument("--device", help="override run.device (cpu, cuda, cuda:N, auto)")
    p.add_argument("--out-dir", help="override run.out_dir")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in run.out_dir")
    p.add_argument("--overwrite", action="store_true", help="replace a different run in run.out_dir")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("--nproc-per-node", type=_positive, default=1, metavar="N",
                   help="train with N processes on this machine (torchrun's launcher; data.batch_size is per process)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check", help="build the model on the meta device; print channels, strides, params, MACs")
    p.add_argument("pipeline", help="pipeline TOML file")
    p.add_argument("--input-size", type=_size, help="HxW to count MACs at (default: run.input_size)")
    p.add_argument("--convention", choices=tuple(CONVENTIONS), default="true",
                   help="how to count: true (every parameter; conv + matmul MACs), thop2x (seed 000: 2 x thop MACs, "
                        "thop params), mmcv (mmcv get_model_complexity_info; aux heads: params only)")
    p.add_argument("--json", action="store_true", help="print per-stage rows and totals as JSON instead of the table")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("bench", help="time inference and a training step (fp32, channels_last, bf16, fast path) "
                       "and the machine's peaks")
    p.add_argument("pipeline", help="pipeline TOML file")
    p.add_argument("--input-size", type=_size, help="HxW for inference (default: eval.resize, else run.input_size)")
    p.add_argument("--batch", type=_positive, help="inference batch (default: eval.batch_size)")
    p.add_argument("--train-size", type=_size, help="HxW for the training step (default: data.augment.crop_size, "
                   "else the inference size)")
    p.add_argument("--train-batch", type=_positive, help="training batch (default: data.batch_size)")
    p.add_argument("--modes", nargs="+", default=["fp32 eager", "channels_last", "bf16 autocast", "fast path"],
                   choices=["fp32 eager", "channels_last", "bf16 autocast", "fast path"], help="inference modes")
    p.add_argument("--train-modes", nargs="+", default=["fp32 eager", "channels_last", "bf16 autocast"],
                   choices=["fp32 eager", "channels_last", "bf16 autocast"], help="training-step modes")
    p.add_argument("--no-train", action="store_true", help="time inference only")
    p.add_argument("--compile", action="store_true", help="also time the fast path compiled (inductor, freezing; the "
                   "compile takes minutes on a CPU)")
    p.add_argument("--int8", action="store_true", help="also time the fast path with int8 convolutions (PT2E, x86 "
                   "quantizer, needs torchao; calibrated on random images, for timing only), compiled")
    p.add_argument("--baseline", metavar="TIMM_MODEL", help="also time this timm model's features (fp32 eager) on "
                   "the same input and print every inference mode's speed-up over it, e.g. hrnet_w48")
    p.add_argument("--repeats", type=_positive, default=3, help="timed runs per case (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per case first")
    p.add_argument("--threads", type=_positive, help="torch threads (default: torch's own choice; on a machine shared "
                   "with other jobs 1 thread gives steadier numbers)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("export", help="write the inference model as ONNX (dynamic batch/height/width) and check it "
                       "against PyTorch with onnxruntime")
    p.add_argument("source", help="a pipeline file (weights: --weights or run.checkpoint), or a run folder, a model "
                   "folder, a .safetensors file beside its config.json or pipeline.toml, a pretrained name or a Hub repo id")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", type=Path, help="output file (default: beside the source, .onnx)")
    p.add_argument("--weights", help="other weights for the model: a .safetensors file, a run or checkpoint folder, a "
                   "model folder, a pretrained name or a Hub repo id (overrides run.checkpoint)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: torch's)")
    p.add_argument("--no-check", action="store_true", help="skip the parity check and the onnxruntime timing")
    p.add_argument("--check-images", type=_positive, default=8, help="validation images to check on (default 8)")
    p.add_argument("--images", type=Path, help="a folder of images to check on (default: the pipeline's val split)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.75],
                   help="image scales to check at (default: 1.0 0.75, two sizes through the one graph)")
    p.add_argument("--repeats", type=_positive, default=3, help="timed runs for the latencies")
    p.add_argument("--threads", type=_positive, help="threads for PyTorch and onnxruntime alike (default: torch's own "
                   "choice; on a machine shared with other jobs 1 thread gives steadier numbers)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("list", help="every stage with its components and the plugin providing each")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("plot", help="several runs' training loss and val mIoU on one PNG, to compare them")
    p.add_argument("runs", nargs="+", help="run folders (run.out_dir of segcore run)")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--label", nargs="+", help="a label per run (default: the folders' names)")
    p.add_argument("--x", choices=("step", "hours"), default="step", help="x axis: the step, or the logged wall-clock hours")
    p.set_defaults(func=cmd_plot)
    data = sub.add_parser("data", help="datasets as parquet + dataset card (Hugging Face Hub format)")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    p = dsub.add_parser("convert", help="write a registered dataset as parquet shards and a dataset card")
    p.add_argument("name", help="registered dataset name (segcore list)")
    p.add_argument("--root", help="the dataset's root folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--splits", nargs="+", help="splits to convert (default: every split found)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another key of the dataset's config")
    p.add_argument("--title", help="the card's title")
    p.add_argument("--rows-per-shard", type=int, default=500)
    p.set_defaults(func=cmd_data_convert)
    _push_parser(dsub, "upload a converted folder to the Hugging Face Hub as a dataset repo", cmd_data_push)
    hub = sub.add_parser("hub", help="the model zoo: list it, make a model folder from a run, push one to the Hub")
    hsub = hub.add_subparsers(dest="hub_command", required=True, metavar="COMMAND")
    p = hsub.add_parser("list", help="every pretrained name: dataset, val mIoU, where its weights are, its recipe")
    p.set_defaults(func=cmd_hub_list)
    p = hsub.add_parser("save", help="a finished run folder -> a model folder with its card (evaluates the stored weights)")
    p.add_argument("run_dir", help="the run folder (run.out_dir of a finished training run)")
    p.add_argument("out", help="the model folder to write, e.g. hub/models/hrnet_l-camvid")
    p.add_argument("--name", help="the pretrained name (default: the folder's name)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="storage dtype of the weights (bfloat16 halves the file; both are evaluated and the change stated)")
    p.add_argument("--no-evaluate", action="store_true", help="state the run's last evaluation instead of evaluating")
    p.add_argument("--hardware", help="what it trained on, for the card (default: this machine's cores and CPU)")
    p.add_argument("--train-hours", type=float, help="wall-clock hours it trained (default: from the run's log)")
    p.add_argument("--cores", type=_positive, help="cores it trained on, for CPU hours (default: this machine's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_hub_save)
    _push_parser(hsub, "upload a model folder to the Hugging Face Hub (create_repo + upload_folder)", cmd_hub_push)
    p = hsub.add_parser("cards", help="rewrite hub/cards/<name>.md for the entries whose weights are not in the repository")
    p.set_defaults(func=cmd_hub_cards)
    from segcore.cli import sweep as sweep_cli
    sweep_cli.add_parser(sub)
    return parser


def _strip_worker_traceback(message: str) -> str:
    """A DataLoader worker re-raises our error with its traceback in the message: keep only the message."""
    if "Original Traceback" in message:
        return message.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return message


def main(argv: Sequence[str] | None = None) -> int:
    from segcore.cli import _interrupts

    _interrupts.restore()  # the imports are done: Ctrl-C is a KeyboardInterrupt again, handled below
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except SegcoreError as exc:
        print(f"error: {_strip_worker_traceback(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
