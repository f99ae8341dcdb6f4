"""The inference fast path: BatchNorm folded into the convolutions, channels_last, bf16 where the hardware has it
and, optionally, torch.compile (inductor, freezing) for one image size; used by ``segcore run`` (evaluate,
predict), `segcore.predict` and `evaluate` unless ``[eval] fast = false`` (`segcore.engine.inference.fast_model_for`).
The parts: `segcore.inference.fold` (BatchNorm folding), `.resize` (bicubic as matrix products), `.quant` (bf16,
int8), `.cpu` (hardware features).

`optimize_for_inference` never changes the model it is given: it works on a copy without training-only heads
(`without_training_heads`). Measured on a 2-core AMD EPYC (avx512_bf16), HRNet_L-W18 at 256x512: the folded model
with bf16 weights runs at 0.49 s of CPU time per image, torch.compile with freezing on top at 0.45 s after a
compile of about 3 minutes, bf16 autocast + channels_last at 0.67 s, fp32 eager at 1.29 s; with dynamic shapes the
compiled model ran at 0.72 s after an 8-minute compile. Hence: the whole model in bf16 (no per-op casts), and
compiling only one (static) size: the first one seen twice, every other size runs the same folded bf16 model eagerly,
so mixed sizes never recompile.
"""

from __future__ import annotations

__all__ = [
    "FastModel", "MatmulResize", "bf16_supported", "cached_fast_model", "cubic_matrix", "fold_batchnorm",
    "optimize_for_inference", "quantize_int8",
]  # fmt: skip

import contextlib
import copy
import warnings
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any, Literal

import torch
from torch import Tensor, nn

from segcore.contracts.stages import ModelOutput
from segcore.errors import SegcoreError
from segcore.inference.cpu import bf16_supported
from segcore.inference.fold import fold_batchnorm
from segcore.inference.dilated import fast_dilated_convs
from segcore.inference.quant import quantize_int8, segmodel_to_bf16
from segcore.inference.resize import MatmulResize, cubic_matrix, fast_resizes
from segcore.model.build import SegModel, without_training_heads

Precision = Literal["auto", "bf16", "fp32"]


class FastModel(nn.Module):
    """image (B, C, H, W) float in [0, 1] -> `ModelOutput` with fp32 logits (B, K, H, W), under no_grad.

    ``module`` is the optimized copy (a `SegModel` when given one, so ``module.decoder.final_resize`` stays
    visible to inference). With ``compile`` (or ``int8``), the first input shape seen twice is compiled (inductor,
    freezing, static shape; with ``int8``, quantized first, see `quantize_int8`) and every later call with that
    shape runs compiled; other shapes run ``module`` eagerly, so there is at most one compile however many sizes
    come. A compile that fails warns once and the fast path goes on eagerly. ``compiles`` counts the compiles
    started, ``compile_error`` keeps the failure.
    """

    def __init__(self, module: nn.Module, *, dtype: torch.dtype, autocast: bool, channels_last: bool, compile: bool,
                 backend: str = "inductor", folded: int = 0, int8: nn.Module | None = None,
                 calibration: Sequence[Tensor] = (), int8_options: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.module = module
        self.dtype, self.autocast, self.channels_last = dtype, autocast, channels_last
        self.compile, self.backend, self.folded = compile or int8 is not None, backend, folded
        self.int8 = int8 is not None
        self._int8_source = [int8] if int8 is not None else []  # a list: not a submodule (no second state dict)
        self._calibration = list(calibration)
        self._int8_options = dict(int8_options or {})  # quantize_int8's knobs (skip, skip_first_last)
        self.compiles = 0
        self.compile_error: BaseException | None = None
        self._compiled: Any = None
        self._compiled_key: tuple[Any, ...] | None = None
        self._seen: Counter[tuple[Any, ...]] = Counter()

    def extra_repr(self) -> str:
        return (f"dtype={self.dtype}, autocast={self.autocast}, channels_last={self.channels_last}, "
                f"folded_bn={self.folded}, compile={self.compile}, int8={self.int8}")  # fmt: skip

    def _runner(self, image: Tensor) -> Any:
        if not self.compile or self.compile_error is not None:
            return self.module
        key = (tuple(image.shape), image.dtype, image.device)
        if self._compiled_key is None:
            self._seen[key] += 1
            if self._seen[key] < 2:
                return self.module
            self._compiled_key = key
            self.compiles += 1
            if self.int8:
                try:
                    self._compiled = quantize_int8(self._int8_source[0], image, self._calibration, **self._int8_options)
                except SegcoreError:
                    raise
                except Exception as exc:  # torch.export or the quantizer cannot take this model
                    self._failed(exc)
                    return self.module
            else:
                # freezing: weights become constants, folded and prepacked for oneDNN (inductor's option)
                options = {"freezing": True} if self.backend == "inductor" else None
                self._compiled = torch.compile(self.module, backend=self.backend, dynamic=False, options=options)
        return self._compiled if key == self._compiled_key else self.module

    def _failed(self, exc: Exception) -> None:
        self.compile_error = exc
        what = "int8 quantization" if self.int8 else "torch.compile"
        root = exc
        while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None:  # dynamo wraps it
            root = inner
        first = (str(root).strip().splitlines() or [""])[0]
        warnings.warn(f"{what} failed ({type(root).__name__}: {first}); the fast path goes on without it. Set [eval] "
                      f"{'int8' if self.int8 else 'compile'} = false to skip it.", stacklevel=3)  # fmt: skip

    def forward(self, image: Tensor) -> ModelOutput:
        if self.channels_last and image.dim() == 4:
            image = image.contiguous(memory_format=torch.channels_last)
        cast = torch.autocast(image.device.type, dtype=self.dtype) if self.autocast else contextlib.nullcontext()
        with torch.no_grad(), cast:
            runner = self._runner(image)
            if runner is self.module:
                out = runner(image)
            else:
                try:
                    out = runner(image)
                except (SegcoreError, KeyboardInterrupt):
                    raise
                except Exception as exc:  # inductor missing a compiler, an op it cannot lower, ...
                    self._failed(exc)
                    out = self.module(image)
        if isinstance(out, ModelOutput):
            return ModelOutput(out.logits.float(), {}, {})
        return out.float() if isinstance(out, Tensor) else out


def optimize_for_inference(
    model: nn.Module,
    *,
    device: torch.device | str | None = None,
    precision: Precision = "auto",
    channels_last: bool = True,
    fold_bn: bool = True,
    compile: bool = False,
    int8: bool = False,
    calibration: Sequence[Tensor] = (),
    backend: str = "inductor",
    example_size: tuple[int, int] = (64, 64),
    int8_options: Mapping[str, Any] | None = None,
) -> FastModel:
    """The fast inference model of *model* (left unchanged): a copy without training-only heads, in eval mode,
    BatchNorm folded into the convolutions, bicubic upsampling places as banded matrix products (`MatmulResize`),
    dilated depthwise convolutions on CPUs computed on sub-grids (`segcore.inference.dilated`), in channels_last, in
    bf16 where *device* has it natively (``precision = "auto"``; "bf16" forces it, "fp32" keeps fp32), and
    optionally compiled for one size, or quantized to int8 (x86 CPUs; calibrated on *calibration*; its convolutions
    stay plain) and compiled for one size (see `FastModel`).

    A `SegModel` in bf16 keeps its input normalisation and final upsampling in fp32 (its backbone, enhancers,
    decoder and classifier hold bf16 weights: no per-op casts; the logits are made fp32 before the upsampling);
    any other module runs under bf16 autocast. *example_size* is the image used to find the conv -> BN pairs (the
    smallest map must stay >= 1 px). *int8_options*: `quantize_int8`'s keyword arguments (modules kept in
    fp32: ``skip``, ``skip_first_last``).
    """
    if device is None:
        device = next(chain(model.parameters(), model.buffers()), torch.empty(0)).device
    device = torch.device(device)
    fast = copy.deepcopy(without_training_heads(model)).to(device).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    folded = 0
    if fold_bn:
        folded = fold_batchnorm(fast, torch.rand(1, getattr(fast, "in_channels", 3), *example_size, device=device))
    fast_resizes(fast)
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    fp32 = copy.deepcopy(fast) if int8 else None  # what int8 quantizes: plain convolutions
    fast_dilated_convs(fast)
    autocast = False
    if use_bf16 and isinstance(fast, SegModel):
        segmodel_to_bf16(fast)
    elif use_bf16:
        autocast = True
    dtype = torch.bfloat16 if use_bf16 else torch.float32
    return FastModel(fast, dtype=dtype, autocast=autocast, channels_last=channels_last, compile=compile,
                     backend=backend, folded=folded, int8=fp32, calibration=calibration,
                     int8_options=int8_options)  # fmt: skip


# -- one fast model per model, for per-image calls ------------------------------------------------------------------

_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[Any, FastModel]] = weakref.WeakKeyDictionary()


def _stamp(model: nn.Module) -> tuple[Any, ...]:
    """Changes whenever a parameter or buffer of *model* is replaced or updated in place (optimizer steps,
    load_state_dict), so a cached fast model is rebuilt from the new weights."""
    return tuple((t.data_ptr(), t._version) for t in chain(model.parameters(), model.buffers()))


def cached_fast_model(model: nn.Module, **options: Any) -> FastModel:
    """`optimize_for_inference(model, **options)`, kept while *model*'s weights and *options* stay the same (what
    `segcore.predict` uses, so a folder of images is optimized, and compiled, once)."""
    if isinstance(model, FastModel):
        return model
    settings = tuple((k, tuple(map(id, v)) if isinstance(v, (list, tuple)) else v) for k, v in sorted(options.items()))
    key = (settings, _stamp(model))
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    fast = optimize_for_inference(model, **options)
    _CACHE[model] = (key, fast)
    return fast
