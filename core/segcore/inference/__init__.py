"""Inference: the fast path (BN folding, matmul resizes, bf16, int8, compile), ONNX and OpenVINO export.

``EXPORTERS`` maps an export format (``segcore export --format``) to its function ``(model, path, *, example_size,
opset, cut, **format_options) -> path``.
"""

from segcore.inference.cpu import bf16_supported
from segcore.inference.fast import FastModel, cached_fast_model, optimize_for_inference
from segcore.inference.fold import fold_batchnorm
from segcore.inference.onnx import check_onnx, export_onnx
from segcore.inference.openvino import export_openvino
from segcore.inference.quant import quantize_int8
from segcore.inference.resize import MatmulResize, cubic_matrix

EXPORTERS = {"onnx": export_onnx, "openvino": export_openvino}

__all__ = [
    "EXPORTERS", "FastModel", "MatmulResize", "bf16_supported", "cached_fast_model", "check_onnx", "cubic_matrix",
    "export_onnx", "export_openvino", "fold_batchnorm", "optimize_for_inference", "quantize_int8",
]  # fmt: skip
