"""``segcore export``: a model as ONNX through torch.export (the dynamo-based exporter, torch's default), with
dynamic batch, height and width; checked against PyTorch on real images and timed with onnxruntime beside it.

The graph is the inference model (`without_training_heads`, eval mode) returning the logits alone: input ``image``
(B, C, H, W) float32 in [0, 1] (normalisation is inside; the file's metadata_props record C, the value that
was scaled to 1.0, mean and std), output ``logits`` (B, K, H, W). Height and width are
export dimensions from twice the backbone's largest stride (its smallest map keeps 2 px) up to 8192; sizes need
not divide by anything, as in PyTorch. Needs ``onnx``, ``onnxscript`` and, for the check, ``onnxruntime``
(``pip install "segcore[export]"``).
"""

from __future__ import annotations

__all__ = ["CUTS", "OnnxCheck", "check_onnx", "export_module", "export_onnx", "onnxruntime_session"]

import copy
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segcore.data.images import model_input, to_unit
from segcore.errors import ConfigError
from segcore.inference.resize import export_resizes
from segcore.model.build import without_training_heads

MAX_SIDE = 8192
FIRST_OPSET = 18  # torch's dynamo exporter writes 18 and newer natively; older ones only where a conversion works
CUTS = ("logits", "labels")  # where the graph ends: `segcore export --cut`


class _Logits(nn.Module):
    """The inference model returning its logits tensor (ONNX outputs are tensors)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> Tensor:
        out = self.model(image)
        return out.logits if hasattr(out, "logits") else out


class _Labels(_Logits):
    """The inference model returning the label map: (B, H, W) uint8 class ids (argmax inside the graph)."""

    def forward(self, image: Tensor) -> Tensor:
        return super().forward(image).argmax(1).to(torch.uint8)


def export_module(model: nn.Module, *, cut: str = "logits") -> nn.Module:
    """The module an export traces: a copy of *model*'s inference model (`without_training_heads`, eval mode)
    ending at its logits (B, K, H, W) or, with ``cut="labels"``, at the (B, H, W) uint8 label map, with its bicubic
    upsampling places as matrix products (`GraphResize`: onnxruntime's and OpenVINO's cubic resizes are slow)."""
    if cut not in CUTS:
        raise ConfigError(f"segcore export: --cut {cut!r} is not one of {', '.join(CUTS)}")
    if cut == "labels" and getattr(model, "num_classes", 0) > 256:
        raise ConfigError(f"segcore export --cut labels: {model.num_classes} classes do not fit a uint8 label map; "
                          "use --cut logits")  # fmt: skip
    wrapper = (_Labels if cut == "labels" else _Logits)(copy.deepcopy(without_training_heads(model))).eval()
    export_resizes(wrapper)
    return wrapper


def _min_side(model: nn.Module) -> int:
    info = getattr(getattr(model, "backbone", None), "feature_info", None)
    stride = max((i.stride for i in info), default=32) if info else 32
    return 2 * stride


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"segcore export needs the {module!r} package: pip install onnx onnxscript onnxruntime "
                          '(or pip install "segcore[export]")')  # fmt: skip


def export_onnx(model: nn.Module, path: str | Path, *, example_size: tuple[int, int] = (256, 256),
                opset: int | None = None, cut: str = "logits", verbose: bool = False) -> Path:  # fmt: skip
    """Write *model*'s inference graph to *path* (.onnx), dynamic in batch, height and width. Returns the path.

    *cut*: where the graph ends (`export_module`): ``"logits"`` (output ``logits``, (B, K, H, W) float32) or
    ``"labels"`` (output ``labels``, (B, H, W) uint8, the argmax in the graph).

    *opset*: the ONNX opset to write (None: torch's default). torch writes 18 and newer; an older one is a conversion
    that fails for some operators, which is then refused (ConfigError) rather than written at another opset."""
    _require("onnx")
    _require("onnxscript")
    from torch.export import Dim

    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not 1 <= opset <= newest:
        raise ConfigError(f"segcore export: --opset {opset} does not exist: onnx {onnx.__version__} knows opsets 1 to "
                          f"{newest}, and torch's exporter writes {FIRST_OPSET} and newer; leave --opset out for torch's "
                          "default")  # fmt: skip
    wrapper = export_module(model, cut=cut)
    low = _min_side(wrapper.model)
    h, w = (max(s, low) for s in example_size)
    channels, max_value = model_input(model)
    # batch 2: torch.export fixes a dimension of size 1 in the example to 1
    example = torch.rand(2, channels, h, w, device=next(wrapper.parameters()).device)
    dims = {"image": {0: Dim("batch", min=1, max=1024), 2: Dim("height", min=low, max=MAX_SIDE),
                      3: Dim("width", min=low, max=MAX_SIDE)}}  # fmt: skip
    # Guards torch.export cannot prove for every size (ceil-mode pooling, strides of 1-pixel maps: true, but past its
    # solver) become checks in the graph instead of refusing the export (frm_van_b0-camvid needs this).
    program = torch.export.export(wrapper, (example,), dynamic_shapes=dims,
                                  prefer_deferred_runtime_asserts_over_guards=True)  # fmt: skip
    kwargs = {} if opset is None else {"opset_version": opset}
    onnx_program = torch.onnx.export(program, (example,), dynamo=True, input_names=["image"], output_names=[cut],
                                     verbose=verbose, **kwargs)  # fmt: skip
    _name_dims(onnx_program.model.graph, {0: "batch", 2: "height", 3: "width"})
    written = onnx_program.model.opset_imports.get("", None)
    if opset is not None and written != opset:  # torch's version converter gives up on some ops, and says nothing
        raise ConfigError(f"segcore export: --opset {opset}: torch's ONNX exporter could not convert this model to "
                          f"opset {opset} (the graph stays at opset {written}); nothing was written. Give --opset "
                          f"{FIRST_OPSET} or newer, or leave it out")  # fmt: skip
    onnx_program.model.metadata_props.update(input_metadata(model, channels, max_value))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_program.save(str(path))
    return path


def input_metadata(model: nn.Module, channels: int, max_value: float | None) -> dict[str, str]:
    """What a consumer of the ONNX file needs to feed it (its metadata_props): the channel count, the value that
    is 1.0 (empty: the image type's largest, 255 or 65535), and the mean and std the graph applies itself."""
    module = getattr(model, "module", model)
    out = {"segcore.in_channels": str(channels), "segcore.max_value": "" if max_value is None else repr(max_value)}
    for key in ("mean", "std"):
        value = getattr(module, key, None)
        if isinstance(value, Tensor):
            out[f"segcore.{key}"] = ",".join(f"{v:.6g}" for v in value.flatten().tolist())
    return out


def _name_dims(graph, names: dict[int, str]) -> None:
    """The graph's inputs and outputs with the image's dynamic dimensions named (batch, height, width), not torch's
    symbols (s40, s73): what onnxruntime and netron show users."""
    import onnx_ir as ir

    image = graph.inputs[0]
    rename = {str(image.shape[i]): name for i, name in names.items() if isinstance(image.shape[i], ir.SymbolicDim)}
    for value in (*graph.inputs, *graph.outputs):
        value.shape = ir.Shape([ir.SymbolicDim(rename.get(str(d), str(d))) if isinstance(d, ir.SymbolicDim) else d
                                for d in value.shape])  # fmt: skip


@attrs.frozen
class OnnxCheck:
    """Parity of the ONNX model with PyTorch (fp32 eager) on some images at one size, and both latencies."""

    size: tuple[int, int]
    images: int
    max_abs_diff: float  # over every logit (nan for a graph cut at the labels)
    max_abs_logit: float  # the largest |logit|, for scale
    agreement: float  # fraction of pixels with the same argmax
    torch_ms: float  # median latency per image, batch 1
    onnxruntime_ms: float  # the exported graph's runtime: onnxruntime, or the session given to check_onnx
    fast_ms: float  # PyTorch's inference fast path (segcore.inference), for comparison


def _session(path: Path, threads: int):
    _require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # all of onnxruntime's graph rewrites (its default, said here): conv + activation fusion and the NCHWc layout,
    # on which the convolutions run in its blocked kernels
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnxruntime_session(path: str | Path, threads: int) -> Any:
    """The onnxruntime CPU session segcore checks and times an exported graph with: *threads* intra-op threads,
    one inter-op thread, every graph optimisation."""
    return _session(Path(path), threads)


def check_onnx(path: str | Path, model: nn.Module, images: Sequence[Tensor], *, scale: float = 1.0,
               repeats: int = 3, session: Any = None) -> OnnxCheck:  # fmt: skip
    """Run *images* ((C, H, W) uint8/uint16, scaled by the model's max_value, or float in [0, 1], all one size), rescaled by *scale*, through PyTorch (the
    model in fp32 eager) and onnxruntime; compare every logit and argmax; time both, and PyTorch's fast path, on
    the first image (median of *repeats* runs after one warm-up, batch 1, the torch thread count). *session*:
    another runtime's (OpenVINO's, `segcore.inference.openvino`), anything with onnxruntime's ``run(None, feed)``.
    A graph cut at the labels (uint8 output) is compared with PyTorch's argmax."""
    from segcore.inference.fast import optimize_for_inference

    session = session or _session(Path(path), torch.get_num_threads())
    wrapper = _Logits(without_training_heads(model)).eval()
    fast = optimize_for_inference(model)
    max_value = model_input(model)[1]
    worst = biggest = 0.0
    same = total = 0
    torch_times: list[float] = []
    ort_times: list[float] = []
    fast_times: list[float] = []
    size = None
    for i, img in enumerate(images):
        x = to_unit(img, max_value)[None]
        if scale != 1.0:
            x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False)
        size = tuple(x.shape[-2:])
        with torch.no_grad():
            ref = wrapper(x).numpy()
        feed = {"image": x.numpy()}
        out = session.run(None, feed)[0]
        labels = out.dtype == np.uint8  # --cut labels
        worst = float("nan") if labels else max(worst, float(np.abs(out - ref).max()))
        biggest = max(biggest, float(np.abs(ref).max()))
        same += int(((out if labels else out.argmax(1)) == ref.argmax(1)).sum())
        total += ref.shape[0] * ref.shape[2] * ref.shape[3]
        if i == 0:  # latency on the first image
            with torch.no_grad():
                fast(x)
                for _ in range(repeats):
                    for runner, times in ((wrapper, torch_times), (fast, fast_times)):
                        start = time.perf_counter()
                        runner(x)
                        times.append(time.perf_counter() - start)
            for _ in range(repeats):
                start = time.perf_counter()
                session.run(None, feed)
                ort_times.append(time.perf_counter() - start)
    if size is None:
        raise ConfigError("segcore export: no images to check the ONNX model on")
    return OnnxCheck(size, len(images), worst, biggest, same / total, 1000 * statistics.median(torch_times),
                     1000 * statistics.median(ort_times), 1000 * statistics.median(fast_times))  # fmt: skip


def parity_images(cfg, registry, *, images_dir: Path | None = None, count: int = 8,
                  channels: int | None = None) -> tuple[list[Tensor], str]:  # fmt: skip
    """Up to *count* real images of one size, (C, H, W) as stored, and where they came from: the files of *images_dir*,
    else the pipeline's validation split (the most common size among the first ones)."""
    from segcore.data.datasets import IMAGE_SUFFIXES, build_split, read_image

    by_size: dict[tuple[int, int], list[Tensor]] = {}
    channels = channels or (cfg.model.in_channels if cfg is not None else 3)  # the model's, read from images_dir
    if images_dir is not None:
        files = sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            image = torch.from_numpy(read_image(f, channels).copy()).permute(2, 0, 1)
            group = by_size.setdefault(tuple(image.shape[-2:]), [])
            group.append(image)
            if len(group) >= count:
                break
        where = f"images from {images_dir}"
    elif cfg is not None:
        dataset = build_split(cfg.data, registry, "val")
        for i in range(len(dataset)):
            image = dataset[i]["image"]
            group = by_size.setdefault(tuple(image.shape[-2:]), [])
            group.append(image)
            if len(group) >= count:
                break
        where = f"{cfg.data.dataset.name} validation images"
    else:
        raise ConfigError("segcore export: a pretrained model has no validation split; give --images <folder> for the "
                          "parity check, or --no-check")  # fmt: skip
    if not by_size:
        raise ConfigError(f"segcore export: no images found for the parity check ({where})")
    return max(by_size.values(), key=len), where


def onnx_initializers(path: str | Path) -> list[str]:
    """Names of the ONNX model's initializers (its weights)."""
    import onnx

    return [t.name for t in onnx.load(str(path), load_external_data=False).graph.initializer]
