"""``segcore export --format openvino``: the ONNX graph of `segcore.inference.onnx` (dynamic batch, height and
width; the bicubic upsampling places as matrix products) converted to OpenVINO's IR (``model.xml`` + ``model.bin``,
fp32 weights), optionally quantized to int8 by NNCF's post-training quantization on calibration images. Needs
``openvino`` and, for int8, ``nncf`` (``pip install "segcore[openvino]"``).

int8 (`Int8Options`): NNCF's defaults for CPUs (symmetric int8 activations per tensor, weights per output
channel, fast bias correction) with the knobs that trade speed for accuracy: how many calibration images, per-tensor
weights, the ``mixed`` preset (asymmetric activations), the first and last convolutions kept in fp32, the matrix
products (attention, and the bicubic upsampling matrices) kept in fp32 (the default: quantizing the final
upsampling of the logits costs accuracy for little time), and NNCF's transformer model type (softmax / attention
blocks handled as such). Choose them by val mIoU and argmax agreement: ``python bench/bench_accuracy.py``.
"""

from __future__ import annotations

__all__ = [
    "Int8Options", "OpenVinoSession", "calibration_images", "export_openvino", "quantize_openvino", "require_openvino",
]  # fmt: skip

import contextlib
import importlib.util
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from segcore.data.images import model_input, to_unit
from segcore.errors import ConfigError, SegcoreError
from segcore.inference.onnx import export_onnx

FIX = 'pip install "segcore[openvino]" (or: pip install openvino nncf)'


def require_openvino(*, int8: bool = False) -> None:
    """ConfigError naming the install command when openvino (and, for *int8*, nncf) is missing."""
    for module in ("openvino", "nncf") if int8 else ("openvino",):
        if importlib.util.find_spec(module) is None:
            what = "int8 quantization (NNCF)" if module == "nncf" else "OpenVINO export and inference"
            raise ConfigError(f"{what} needs the {module!r} package: {FIX}")


@attrs.frozen
class Int8Options:
    """NNCF post-training quantization settings (`quantize_openvino`); the defaults are NNCF's for CPUs, with the
    matrix products kept in fp32."""

    calibration_images: int = attrs.field(default=32, validator=attrs.validators.gt(0))
    per_channel: bool = True  # weights: one scale per output channel (False: one per tensor)
    preset: Literal["performance", "mixed"] = "performance"  # mixed: asymmetric activations
    keep_first_last: bool = False  # the first and the last convolution stay fp32
    quantize_matmuls: bool = False  # attention and the bicubic upsampling matrices in int8 too
    transformer: bool = False  # NNCF's model_type=TRANSFORMER (softmax/attention blocks as such)
    accurate_bias_correction: bool = False  # NNCF's slower, more accurate bias correction
    ignored: tuple[str, ...] = ()  # more node names (regular expressions) kept in fp32


def _conv_names(ov_model: Any) -> list[str]:
    return [op.get_friendly_name() for op in ov_model.get_ordered_ops() if op.get_type_name() == "Convolution"]


def quantize_openvino(ov_model: Any, images: Sequence[Tensor], *, options: Int8Options = Int8Options(),
                      max_value: float | None = None) -> Any:  # fmt: skip
    """*ov_model* (fp32 IR in memory) quantized by NNCF on *images* ((C, H, W), as stored or in [0, 1]; each
    resized to the first one's size; at most ``options.calibration_images``)."""
    require_openvino(int8=True)
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    if not images:
        raise ConfigError("int8 quantization needs calibration images (training images of the model's dataset): give "
                          "--calibration-data PIPELINE or --calibration-images N > 0")  # fmt: skip
    images = list(images)[: options.calibration_images]
    size = tuple(images[0].shape[-2:])
    name = ov_model.inputs[0].get_any_name()

    def feed(image: Tensor) -> dict[str, np.ndarray]:
        x = to_unit(image, max_value)[None]
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return {name: x.numpy()}

    convs = _conv_names(ov_model)
    names = [convs[0], convs[-1]] if options.keep_first_last and convs else []
    types = [] if options.quantize_matmuls else ["MatMul"]
    scope = nncf.IgnoredScope(names=names, patterns=list(options.ignored), types=types, validate=False)
    advanced = AdvancedQuantizationParameters(
        weights_quantization_params=QuantizationParameters(per_channel=options.per_channel))
    with _nncf_to_stderr():
        return nncf.quantize(
            ov_model, nncf.Dataset(images, feed), subset_size=len(images), ignored_scope=scope,
            preset=nncf.QuantizationPreset.MIXED if options.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
            model_type=nncf.ModelType.TRANSFORMER if options.transformer else None,
            fast_bias_correction=not options.accurate_bias_correction, advanced_parameters=advanced,
        )  # fmt: skip


@contextlib.contextmanager
def _nncf_to_stderr() -> Any:
    """NNCF's progress bars and log on stderr, its INFO lines (one per node left unquantized) off: stdout stays the
    command's (``segcore bench --json``)."""
    logger = logging.getLogger("nncf")
    level = logger.level
    streams = [(h, h.setStream(sys.stderr)) for h in logger.handlers if isinstance(h, logging.StreamHandler)]
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logger.setLevel(level)
        for handler, stream in streams:
            handler.setStream(stream)


def export_openvino(model: nn.Module, path: str | Path, *, example_size: tuple[int, int] = (256, 256),
                    opset: int | None = None, cut: str = "logits", int8: bool = False,
                    calibration: Sequence[Tensor] = (), options: Int8Options = Int8Options()) -> Path:  # fmt: skip
    """Write *model*'s inference graph as OpenVINO IR to *path* (.xml; weights in the .bin beside it), dynamic in
    batch, height and width, through the ONNX export (`export_onnx`, same *cut*, *opset*); with *int8*, quantized
    by NNCF on *calibration* images (`quantize_openvino`). The ONNX file's metadata (input channels, scaling, mean
    and std) is kept in the IR's rt_info under ``segcore``. Returns the path."""
    require_openvino(int8=int8)
    import onnx
    import openvino as ov

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "model.onnx", example_size=example_size, opset=opset, cut=cut)
        ov_model = ov.convert_model(str(onnx_path))
        metadata = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    if int8:
        ov_model = quantize_openvino(ov_model, calibration, options=options, max_value=model_input(model)[1])
    for key, value in metadata.items():
        ov_model.set_rt_info(value, ["segcore", key.removeprefix("segcore.")])
    ov_model.set_rt_info("int8" if int8 else "fp32", ["segcore", "precision"])
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return path


class OpenVinoSession:
    """An IR compiled for the CPU, run like an onnxruntime session (``run(None, {"image": x}) -> [output]``), so
    `check_onnx` compares it with PyTorch. *precision*: OpenVINO's inference precision for what is not int8
    (``f32``: fp32 as PyTorch; ``bf16`` where the CPU has it)."""

    def __init__(self, path: str | Path, *, threads: int | None = None, precision: str = "f32") -> None:
        require_openvino()
        import openvino as ov

        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                                  "NUM_STREAMS": 1}  # fmt: skip
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer(feed)
        return [np.array(result[out]) for out in self.compiled.outputs]  # copies: the next call reuses the buffers



def calibration_images(cfg: Any, registry: Any, *, data: Path | None = None, count: int = 32,
                       source: str = "the model") -> tuple[list[Tensor], str]:  # fmt: skip
    """Up to *count* training images ((C, H, W) as stored) for int8 calibration, and where they came from: *data*
    (a folder of images, or a pipeline file whose training split is read), else *cfg*'s training split (the source's
    own pipeline, or a model folder's recipe)."""
    from segcore.config import load_pipeline
    from segcore.data.datasets import build_split
    from segcore.inference.onnx import parity_images

    if data is not None and Path(data).is_dir():
        images, where = parity_images(None, registry, images_dir=Path(data), count=count)
        return images, where
    if data is not None:
        cfg = load_pipeline(Path(data), registry=registry)
    if cfg is None:
        raise ConfigError(f"segcore export --int8: {source} names no dataset to calibrate on; give "
                          "--calibration-data PIPELINE.toml (its training split) or --calibration-data FOLDER (images)")  # fmt: skip
    try:
        train = build_split(cfg.data, registry, "train")
        images = [train[i]["image"] for i in range(min(count, len(train)))]
    except SegcoreError as exc:
        raise ConfigError(f"segcore export --int8: could not read the training images of {cfg.data.dataset.name!r} "
                          f"to calibrate on ({exc}). Give --calibration-data PIPELINE.toml or --calibration-data "
                          "FOLDER (images of the deployment's kind)") from exc  # fmt: skip
    if not images:
        raise ConfigError(f"segcore export --int8: the training split of {cfg.data.dataset.name!r} is empty; give "
                          "--calibration-data")  # fmt: skip
    return images, f"{cfg.data.dataset.name} training images"
