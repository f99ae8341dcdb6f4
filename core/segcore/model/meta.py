"""Shape-only shortcuts for the meta device: segcore runs models on meta tensors to check, count and size them
before anything is allocated (`segcore.model.check`, `segcore.model.counting.Meter`, `segcore.model.memory`).

A few operators have no meta kernel of their own: on meta, PyTorch runs their Python decomposition op by op (or
imports torch._dynamo, seconds, for its reference implementation) only to learn the output's shape. Inside
`meta_shortcuts` they are answered directly, on meta inputs only:

- bicubic and bilinear upsampling (HRNet-style heads, ``segcore.layers.resize_to``): an empty tensor of the
  output size, in the input's memory format (inputs laid out exactly as contiguous or channels_last tensors; other
  layouts are left to PyTorch), as the kernel allocates it; about 0.2 s a call on meta before;
- ``normal_`` (HRNet's and most heads' initialisation): a meta tensor has no values to fill, the tensor is returned
  as it is.

Modes entered after it (a FLOP counter, the memory meter) still see the original operators; real tensors are never
touched. tests/test_model.py compares every shortcut with what the real kernels give.
"""

from __future__ import annotations

__all__ = ["meta_shortcuts"]

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten


def _memory_format(x: torch.Tensor) -> torch.memory_format | None:
    """The input's memory format (what the kernel gives its output) where its strides are exactly those of one of
    the two; None for any other layout (a strided view), left to PyTorch."""
    for fmt in (torch.contiguous_format, torch.channels_last):
        if x.stride() == torch.empty(x.shape, device="meta", memory_format=fmt).stride():
            return fmt
    return None


def _upsample(x: torch.Tensor, output_size: Any, *_: Any, **__: Any) -> torch.Tensor | None:
    fmt = _memory_format(x)
    if fmt is None or min(*x.shape[2:], *output_size) <= 0:  # an empty side: PyTorch answers as it does
        return None
    return torch.empty((*x.shape[:2], *output_size), dtype=x.dtype, device="meta", memory_format=fmt)


# (the .vec overloads F.interpolate calls are composite: they reach a dispatch mode as .default, sizes computed)
_SHORTCUTS = {
    _aten.upsample_bicubic2d.default: _upsample,
    _aten.upsample_bilinear2d.default: _upsample,
    _aten.normal_.default: lambda x, *_, **__: x,
}


class meta_shortcuts(TorchDispatchMode):  # noqa: N801 (a context manager, named like torch's modes)
    """``with meta_shortcuts(): model(x_on_meta)``: the operators above, on meta inputs, without their slow paths."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        shortcut = _SHORTCUTS.get(func)
        if shortcut is not None and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            out = shortcut(*args, **(kwargs or {}))
            if out is not None:  # None: a case the shortcut leaves to PyTorch (a strided view)
                return out
        return func(*args, **(kwargs or {}))
