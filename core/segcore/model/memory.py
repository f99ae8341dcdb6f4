"""How much memory a forward pass takes, counted on the meta device before anything real is allocated.

The estimate runs the model itself on a meta input of the real size, with its parameters and buffers swapped for
meta tensors of the same shapes and dtypes (`torch.func.functional_call`; the model is left as it is): every
operation's output is counted from when it is made until it is freed, so the figure is the peak of what one
forward pass holds at once, quadratic attention maps included. In training mode autograd keeps what the backward
pass needs, so the same count is the activation memory of a training step; the gradients of the trainable
parameters are added. Memory the kernels use as scratch, and the allocator's rounding, are not counted: the figure
is a lower bound, and only a size that cannot fit even so is refused.
"""

from __future__ import annotations

__all__ = ["activation_peak", "base_model", "check_forward_fits", "check_inference_fits", "forward_bytes"]

import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from segcore.config.schema import EvalConfig
from segcore.io import check_memory, format_bytes
from segcore.model.meta import meta_shortcuts

_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], int | None]] = weakref.WeakKeyDictionary()


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of every new tensor an op makes (views and in-place results share memory: not counted) until
    its Python object is freed; ``peak`` is the most held at once."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if all(r.alias_info is None for r in func._schema.returns):
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    n = t.numel() * t.element_size()
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(t, self._free, n)
        return out


def base_model(model: nn.Module) -> nn.Module:
    """The module that computes: *model* without its wrappers (DDP, EMA, the fast path's `FastModel`)."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def activation_peak(model: nn.Module, shape: tuple[int, ...], *, train: bool = False,
                    dtype: torch.dtype | None = None) -> int | None:  # fmt: skip
    """The most bytes one forward pass of *model* on a float input of *shape* (B, C, H, W) holds at once, counted on
    the meta device (module docstring); with *train*, in training mode with autograd recording, plus the trainable
    parameters' gradients. *dtype* (bf16 for autocast) is the floating dtype the parameters and input are counted
    in. None when the model cannot run on the meta device (then nothing can be said). Cached per model and shape."""
    model = base_model(model)
    key = (tuple(shape), train, dtype)
    cache = _CACHE.setdefault(model, {})
    if key in cache:
        return cache[key]

    def meta(t: torch.Tensor) -> torch.Tensor:
        kind = dtype if dtype is not None and t.is_floating_point() else t.dtype
        return torch.empty(t.shape, dtype=kind, device="meta").requires_grad_(train and t.requires_grad)

    was_training = model.training
    counter = _LiveBytes()
    try:
        params = {name: meta(p) for name, p in model.named_parameters()}
        buffers = {name: meta(b) for name, b in model.named_buffers()}
        x = torch.empty(shape, dtype=dtype or torch.float32, device="meta")
        model.train(train)
        with torch.set_grad_enabled(train), meta_shortcuts(), counter:
            out = torch.func.functional_call(model, {**params, **buffers}, (x,))
            peak = counter.peak
            del out
    except Exception:  # an estimate that cannot be made (an op without a meta kernel, data-dependent code) stops nothing
        peak = None
    finally:
        model.train(was_training)
    if peak is not None and train:
        peak += sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    cache[key] = peak
    return peak


def forward_bytes(model: nn.Module, shape: tuple[int, ...], *, train: bool = False,
                  dtype: torch.dtype | None = None) -> int | None:  # fmt: skip
    """`activation_peak` plus the float input itself (what the caller holds during the pass)."""
    peak = activation_peak(model, shape, train=train, dtype=dtype)
    if peak is None:
        return None
    b, c, h, w = shape
    return peak + b * c * h * w * 4


BASIS = ("counted by running the model on the meta device at this size: the most its tensors hold at once{extra}; "
         "kernels' scratch memory comes on top")


def check_forward_fits(model: nn.Module, shape: tuple[int, ...], device: object, *, what: str, hint: str,
                       train: bool = False, dtype: torch.dtype | None = None, extra: int = 0,
                       extra_what: str = "") -> None:  # fmt: skip
    """Refuse (`segcore.errors.MemoryLimitError`, before anything is allocated) a forward pass of *model* on *shape*
    whose `forward_bytes` (+ *extra* bytes, *extra_what*) exceeds the memory available on *device*."""
    need = forward_bytes(model, shape, train=train, dtype=dtype)
    if need is None:
        return
    parts = (", with what autograd keeps for the backward pass and the gradients" if train else "") + (
        f", plus {extra_what}" if extra_what else "")
    b, _, h, w = shape
    check_memory(need + extra, device, what=f"{what} (batch {b} at {h}x{w})", basis=BASIS.format(extra=parts), hint=hint)


def check_inference_fits(model: nn.Module, shape: tuple[int, ...], cfg: EvalConfig, device: object, *, what: str,
                         hint: str, dtype: torch.dtype | None = None) -> None:  # fmt: skip
    """`check_forward_fits` for `segcore.engine.inference.infer` on images of *shape* (B, C, H, W) under ``[eval]``
    *cfg*: the model at the size it really runs at (``resize``, the largest of ``scales``, a ``slide`` window), plus
    the class scores at the images' size (two maps when views are averaged)."""
    b, c, h, w = shape
    fh, fw = cfg.resize or (h, w)
    scale = max(cfg.scales)
    fh, fw = max(1, int(fh * scale)), max(1, int(fw * scale))
    if cfg.mode == "slide":
        fh, fw = min(fh, cfg.window[0]), min(fw, cfg.window[1])
    classes = int(getattr(base_model(model), "num_classes", 0) or 0)
    views = len(cfg.scales) * (2 if cfg.flip else 1)
    scores = b * classes * h * w * 4 * (2 if views > 1 or cfg.mode == "slide" else 1) + b * c * h * w * 4
    check_forward_fits(model, (b, c, fh, fw), device, what=what, hint=hint, dtype=dtype, extra=scores,
                       extra_what=f"the {h}x{w} input and class scores ({format_bytes(scores)})")
