"""The inference fast path: BatchNorm folded into the convolutions, channels_last, bf16 where the hardware has it
and, optionally, torch.compile (inductor, freezing) for one image size; used by ``segcore run`` (evaluate,
predict), `segcore.predict` and `evaluate` unless ``[eval] fast = false``.

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
    "FastModel", "MatmulResize", "bf16_supported", "cached_fast_model", "cubic_matrix", "fast_model_for",
    "fold_batchnorm", "optimize_for_inference", "quantize_int8",
]  # fmt: skip

import contextlib
import copy
import functools
import sys
import warnings
import weakref
from collections import Counter
from collections.abc import Sequence
from itertools import chain
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from segcore.config.schema import EvalConfig
from segcore.errors import SegcoreError
from segcore.model.build import SegModel, without_training_heads
from segcore.contracts.stages import ModelOutput

Precision = Literal["auto", "bf16", "fp32"]


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return frozenset(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return frozenset()


def bf16_supported(device: torch.device | str) -> bool:
    """Whether *device* computes in bf16 natively: CUDA (Ampere and later), or a CPU with AVX512-BF16 or AMX
    (elsewhere oneDNN emulates bf16 convolutions, slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        if sys.platform == "darwin" or not torch.backends.mkldnn.is_available():
            return False
        return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    return False


# -- BatchNorm folding --------------------------------------------------------------------------------------------

_METADATA = frozenset({"__get__", "size", "dim", "numel", "stride", "is_contiguous", "data_ptr", "element_size"})


class _Uses(TorchFunctionMode):
    """Counts the torch calls that read each tensor of *watched* (ids of live tensors; shape and other metadata
    reads do not count)."""

    def __init__(self, watched: dict[int, Any]) -> None:
        super().__init__()
        self.watched = watched
        self.count: Counter[int] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") not in _METADATA:
            for leaf in pytree.tree_leaves((args, kwargs)):
                if isinstance(leaf, Tensor) and id(leaf) in self.watched:
                    self.count[id(leaf)] += 1
        return func(*args, **kwargs)


def _parents(model: nn.Module) -> dict[nn.Module, list[tuple[nn.Module, str]]]:
    out: dict[nn.Module, list[tuple[nn.Module, str]]] = {}
    for parent in model.modules():
        for name, child in parent.named_children():
            out.setdefault(child, []).append((parent, name))
    return out


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: Tensor) -> int:
    """Fold every eval-mode ``BatchNorm2d`` whose only input is the output of a ``Conv2d`` used by nothing else into
    that convolution (weight scaled per output channel, bias shifted), and replace the BN with ``nn.Identity``.
    In place; returns the number folded. *model* must be in eval mode.

    Which convolution feeds which BN is found by running *example* through *model* once and following the tensors
    (a small image is enough), so it works on any model: HRNet blocks, ``ConvBNAct``, ``nn.Sequential``, plugin code.
    A conv whose output is also read elsewhere (a pre-activation branch, a shortcut) is left alone.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (BatchNorm folds its running statistics)")
    made: dict[int, nn.Module] = {}  # id of a live conv output -> its conv
    keep: list[Tensor] = []  # holds every conv output alive, so an id never stands for two tensors
    outputs: Counter[nn.Module] = Counter()  # conv -> outputs made
    pairs: list[tuple[nn.Module, int, nn.Module | None]] = []  # (BN, id of its input, the conv that made it or None)

    def after_conv(module: nn.Module, args: Any, output: Tensor) -> None:
        made[id(output)] = module
        keep.append(output)
        outputs[module] += 1

    def before_bn(module: nn.Module, args: Any) -> None:
        pairs.append((module, id(args[0]), made.get(id(args[0]))))  # resolved now: the input is alive now

    convs = [m for m in model.modules() if type(m) is nn.Conv2d]
    bns = [m for m in model.modules() if type(m) is nn.BatchNorm2d]
    handles = [m.register_forward_hook(after_conv) for m in convs]
    handles += [m.register_forward_pre_hook(before_bn) for m in bns]
    uses = _Uses(made)  # counts reads of conv outputs only
    try:
        with uses:
            model(example)
    finally:
        for h in handles:
            h.remove()
    sources: dict[nn.Module, set[nn.Module | None]] = {}  # BN -> the convs its inputs came from (None: not a conv)
    targets: dict[nn.Module, set[nn.Module]] = {}  # conv -> the BNs its outputs went to
    to_bn: Counter[nn.Module] = Counter()  # conv -> outputs read by a BN and by nothing else
    for bn, tid, conv in pairs:
        sources.setdefault(bn, set()).add(conv)
        if conv is not None:
            targets.setdefault(conv, set()).add(bn)
            to_bn[conv] += uses.count[tid] == 1
    parents = _parents(model)
    folded = 0
    for bn, convs_in in sources.items():
        if len(convs_in) != 1 or None in convs_in or bn.running_mean is None:
            continue
        (conv,) = convs_in
        # every output of the conv went to this BN and nowhere else; channels agree
        if targets[conv] != {bn} or to_bn[conv] != outputs[conv] or conv.out_channels != bn.num_features:
            continue
        scale = (bn.running_var + bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
        for parent, name in parents.get(bn, ()):
            setattr(parent, name, nn.Identity())
        folded += 1
    return folded


# -- bicubic upsampling as two matrix products ----------------------------------------------------------------------

_CUBIC_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution coefficient


def cubic_matrix(n_in: int, n_out: int, *, align_corners: bool) -> np.ndarray:
    """(n_out, n_in) float64: row o holds the weights `F.interpolate(mode="bicubic")` gives the input samples for
    output sample o along one axis (source index from PyTorch's rule, four taps clamped at the border). Plain NumPy,
    so that tracing (torch.export, torch.compile) sees a constant."""
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
    else:
        src = (dst + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(src)
    t = src - base
    a = _CUBIC_A
    weights = np.stack([
        ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
        ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
    ], axis=1)  # fmt: skip
    taps = np.clip(base.astype(np.int64)[:, None] + np.arange(-1, 3), 0, n_in - 1)
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.repeat(np.arange(n_out), 4), taps.ravel()), weights.ravel())
    return matrix


class MatmulResize:
    """``Resize("bicubic", ...)`` as banded matrix products along W, then H (`cubic_matrix`, cut into blocks of
    ``block`` output samples, each multiplying only the input samples it reads): the same values as
    `F.interpolate` to float rounding, 3-5x faster on CPUs, where PyTorch's bicubic kernel is not vectorized for
    channels_last maps. Computes in fp32, or in bf16 for bf16 maps (rounding the weights like the map itself).
    Called like a `Resize`: ``(x (B, C, h, w), size) -> (B, C, *size)`` in x's dtype, channels_last."""

    def __init__(self, align_corners: bool, block: int = 32) -> None:
        self.align_corners, self.block = align_corners, block
        self._cache: dict[tuple[int, int, torch.device, torch.dtype], list[tuple[int, int, Tensor]]] = {}

    def _bands(self, n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> list[tuple[int, int, Tensor]]:
        """(first input, end input, (block, end - first) weights) per block of output samples."""
        key = (n_in, n_out, device, dtype)
        if key not in self._cache:
            matrix = cubic_matrix(n_in, n_out, align_corners=self.align_corners)
            bands = []
            for o0 in range(0, n_out, self.block):
                rows = matrix[o0 : o0 + self.block]
                used = np.flatnonzero(np.abs(rows).sum(0))
                i0, i1 = int(used[0]), int(used[-1]) + 1
                bands.append((i0, i1, torch.tensor(rows[:, i0:i1], dtype=dtype, device=device)))
            self._cache[key] = bands
        return self._cache[key]

    def __call__(self, x: Tensor, size: Sequence[int]) -> Tensor:
        b, c, h, w = x.shape
        out_h, out_w = (int(s) for s in size)
        dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32
        y = x.permute(0, 2, 3, 1).to(dtype)  # (B, h, w, C): contiguous for a channels_last x
        y = torch.cat([torch.matmul(m, y[:, :, i0:i1]) for i0, i1, m in self._bands(w, out_w, x.device, dtype)], dim=2)
        y = y.reshape(b, h, out_w * c)
        y = torch.cat([torch.matmul(m, y[:, i0:i1]) for i0, i1, m in self._bands(h, out_h, x.device, dtype)], dim=1)
        return y.reshape(b, out_h, out_w, c).to(x.dtype).permute(0, 3, 1, 2)  # (B, C, out_h, out_w), channels_last


def _fast_resizes(model: nn.Module) -> int:
    """Every bicubic upsampling place of *model* (`segcore.Upsample`) computed by `MatmulResize`; returns how many."""
    from segcore.contracts.stages import Upsample

    done = 0
    for m in model.modules():
        if isinstance(m, Upsample) and m.resize.mode == "bicubic":
            m.resize = MatmulResize(m.resize.align_corners)
            done += 1
    return done


# -- the fast model -----------------------------------------------------------------------------------------------


def _to_bf16(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (args[0].to(torch.bfloat16),) + tuple(args[1:])


def _output_fp32(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
    return output.float()


def _separate_activations(graph_module: torch.fx.GraphModule) -> None:
    """Give every call of an ``nn.ReLU`` module its own source partition: one ReLU module used at several places
    (HRNet's ``fuse_act``, the blocks' ``relu``) otherwise forms one partition with several outputs, which the x86
    quantizer rejects ("Input partition has more than one output node")."""
    for node in graph_module.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op == "call_function" and stack:
            _, cls = list(stack.values())[-1]
            if cls is nn.ReLU or cls == "torch.nn.modules.activation.ReLU":
                node.meta["source_fn_stack"] = [(node.name, nn.ReLU)]


def quantize_int8(module: nn.Module, example: Tensor, calibration: Sequence[Tensor]) -> Any:
    """*module* (fp32, eval) quantized to int8 for *example*'s shape: torch.export, PT2E with torchao's
    X86InductorQuantizer (its default static per-tensor activation / per-channel weight config), observers run on
    the *calibration* images (each (3, H, W) in [0, 1] or uint8, resized to the shape), then torch.compile
    (inductor, freezing), which lowers the int8 convolutions to oneDNN's with fused post-ops."""
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError:
        raise SegcoreError("int8 inference needs torchao (PT2E quantization): pip install torchao") from None
    if not calibration:
        raise SegcoreError("int8 inference needs calibration images (the training split's first few are used by "
                           "segcore run; give calibration=[...] in Python)")  # fmt: skip
    graph = torch.export.export(module, (example,)).module()
    _separate_activations(graph)
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    size = example.shape[-2:]
    for image in calibration:
        x = image.float().div(255) if image.dtype == torch.uint8 else image.float()
        x = torch.nn.functional.interpolate(x[None].to(example.device), size=tuple(size), mode="bilinear",
                                            align_corners=False)
        prepared(x.expand(example.shape[0], -1, -1, -1).contiguous(memory_format=torch.channels_last))
    return torch.compile(convert_pt2e(prepared))  # frozen on its first call (FastModel)


class FastModel(nn.Module):
    """image (B, 3, H, W) float in [0, 1] -> `ModelOutput` with fp32 logits (B, K, H, W), under no_grad.

    ``module`` is the optimized copy (a `SegModel` when given one, so ``module.decoder.final_resize`` stays
    visible to inference). With ``compile`` (or ``int8``), the first input shape seen twice is compiled (inductor,
    freezing, static shape; with ``int8``, quantized first, see `quantize_int8`) and every later call with that
    shape runs compiled; other shapes run ``module`` eagerly, so there is at most one compile however many sizes
    come. A compile that fails warns once and the fast path goes on eagerly. ``compiles`` counts the compiles
    started, ``compile_error`` keeps the failure.
    """

    def __init__(self, module: nn.Module, *, dtype: torch.dtype, autocast: bool, channels_last: bool, compile: bool,
                 backend: str = "inductor", folded: int = 0, int8: nn.Module | None = None,
                 calibration: Sequence[Tensor] = ()) -> None:  # fmt: skip
        super().__init__()
        self.module = module
        self.dtype, self.autocast, self.channels_last = dtype, autocast, channels_last
        self.compile, self.backend, self.folded = compile or int8 is not None, backend, folded
        self.int8 = int8 is not None
        self._int8_source = [int8] if int8 is not None else []  # a list: not a submodule (no second state dict)
        self._calibration = list(calibration)
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
                    self._compiled = quantize_int8(self._int8_source[0], image, self._calibration)
                except SegcoreError:
                    raise
                except Exception as exc:  # torch.export or the quantizer cannot take this model
                    self._failed(exc)
                    return self.module
            else:
                self._compiled = torch.compile(self.module, backend=self.backend, dynamic=False)
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
                    # freezing: weights become constants, folded and prepacked for oneDNN (set while the first call
                    # compiles; inductor reads it then)
                    with torch._inductor.config.patch(freezing=True):
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
) -> FastModel:
    """The fast inference model of *model* (left unchanged): a copy without training-only heads, in eval mode,
    BatchNorm folded into the convolutions, bicubic upsampling places as banded matrix products (`MatmulResize`),
    in channels_last, in bf16 where *device* has it natively (``precision = "auto"``; "bf16" forces it, "fp32"
    keeps fp32), and optionally compiled for one size, or quantized to int8 (x86 CPUs; calibrated on
    *calibration*) and compiled for one size (see `FastModel`).

    A `SegModel` in bf16 keeps its input normalisation and final upsampling in fp32 (its backbone, enhancers,
    decoder and classifier hold bf16 weights: no per-op casts; the logits are made fp32 before the upsampling);
    any other module runs under bf16 autocast. *example_size* is the image used to find the conv -> BN pairs (the
    smallest map must stay >= 1 px).
    """
    if device is None:
        device = next(chain(model.parameters(), model.buffers()), torch.empty(0)).device
    device = torch.device(device)
    fast = copy.deepcopy(without_training_heads(model)).to(device).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    folded = 0
    if fold_bn:
        folded = fold_batchnorm(fast, torch.rand(1, 3, *example_size, device=device))
    _fast_resizes(fast)
    use_bf16 = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    fp32 = copy.deepcopy(fast) if int8 else None
    autocast = False
    if use_bf16 and isinstance(fast, SegModel):
        for part in (fast.backbone, fast.enhancers, fast.decoder, fast.classifier):
            part.to(torch.bfloat16)
        fast.backbone.register_forward_pre_hook(_to_bf16)
        fast.classifier.register_forward_hook(_output_fp32)
    elif use_bf16:
        autocast = True
    dtype = torch.bfloat16 if use_bf16 else torch.float32
    return FastModel(fast, dtype=dtype, autocast=autocast, channels_last=channels_last, compile=compile,
                     backend=backend, folded=folded, int8=fp32, calibration=calibration)  # fmt: skip


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


def fast_model_for(model: nn.Module, cfg: EvalConfig, *, device: torch.device | str | None = None,
                   calibration: Sequence[Tensor] = ()) -> nn.Module:  # fmt: skip
    """The model inference runs for ``[eval]`` *cfg*: *model* itself with ``fast = false``, else its fast path
    (`cached_fast_model`) with the table's precision, compile and int8 settings."""
    if not cfg.fast or isinstance(model, FastModel):
        return model
    options: dict[str, Any] = {"precision": cfg.precision, "compile": cfg.compile, "int8": cfg.int8}
    if cfg.int8:
        options["calibration"] = tuple(calibration)
    return cached_fast_model(model, device=device, **options)
