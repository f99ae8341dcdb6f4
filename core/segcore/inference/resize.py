"""Bicubic upsampling as banded matrix products: the same values as `F.interpolate(mode="bicubic")` to float
rounding, several times faster on CPUs for channels_last maps."""

from __future__ import annotations

__all__ = ["GraphResize", "MatmulResize", "cubic_matrix", "export_resizes", "fast_resizes"]

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from segcore.contracts.stages import Upsample

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
    Called like a `Resize`: ``(x (B, C, h, w), size) -> (B, C, *size)`` in x's dtype and memory format, as
    `F.interpolate` keeps it (a model run in NCHW stays NCHW after it)."""

    mode = "bicubic"  # as a `Resize` says: a model trained with train.fast_resize can still be exported or made fast

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
        y = y.reshape(b, out_h, out_w, c).to(x.dtype).permute(0, 3, 1, 2)  # (B, C, out_h, out_w), channels_last
        return y if x.is_contiguous(memory_format=torch.channels_last) else y.contiguous()


def fast_resizes(model: nn.Module) -> int:
    """Every bicubic upsampling place of *model* (`segcore.Upsample`) computed by `MatmulResize`, in place; returns
    how many."""
    return _replace_bicubic(model, MatmulResize)


def _replace_bicubic(model: nn.Module, make: type) -> int:
    done = 0
    for m in model.modules():
        if isinstance(m, Upsample) and m.resize.mode == "bicubic":
            m.resize = make(m.resize.align_corners)
            done += 1
    return done


def cubic_weights(n_in, n_out, *, align_corners: bool, dtype: torch.dtype = torch.float32,
                  device: torch.device | None = None) -> Tensor:  # fmt: skip
    """(n_out, n_in) tensor: `cubic_matrix` computed with torch ops from the two sizes, so that an exported graph
    (torch.export, ONNX) computes it from its dynamic sizes instead of baking in the example's."""
    dst = torch.arange(n_out, dtype=torch.float32, device=device)
    if align_corners:
        src = dst * ((n_in - 1) / torch.sym_max(n_out - 1, 1))  # the scale first, as PyTorch rounds it
    else:
        src = (dst + 0.5) * (n_in / n_out) - 0.5
    base = src.floor()
    t = (src - base)[:, None]
    a = _CUBIC_A
    offsets = torch.arange(-1, 3, dtype=torch.float32, device=device)
    d = (t - offsets).abs()  # distance of each of the four taps, (n_out, 4)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    weights = torch.where(d <= 1, near, far)
    taps = (base[:, None] + offsets).clamp(0, n_in - 1)
    grid = torch.arange(n_in, dtype=torch.float32, device=device)
    matrix = (weights[:, :, None] * (taps[:, :, None] == grid).to(weights.dtype)).sum(1)
    return matrix.to(dtype)


class GraphResize:
    """``Resize("bicubic", ...)`` for exported graphs: two dense matrix products, ``H_matrix @ x @ W_matrix.T``,
    with the matrices computed in the graph from the sizes (`cubic_weights`), so the graph stays dynamic. The same
    values as `F.interpolate` to float rounding. onnxruntime's cubic ``Resize`` is a scalar loop: on HRNet_L-W18 at
    360x480 (1 thread) its four bicubic places took 370 ms of a 650 ms run, the matrix products take a few ms."""

    mode = "bicubic"

    def __init__(self, align_corners: bool) -> None:
        self.align_corners = align_corners

    def __call__(self, x: Tensor, size: Sequence[int]) -> Tensor:
        h, w = x.shape[-2:]
        out_h, out_w = size
        dtype = torch.float32 if x.dtype not in (torch.float32, torch.float64) else x.dtype
        rows = cubic_weights(h, out_h, align_corners=self.align_corners, dtype=dtype, device=x.device)
        cols = cubic_weights(w, out_w, align_corners=self.align_corners, dtype=dtype, device=x.device)
        return torch.matmul(rows, torch.matmul(x.to(dtype), cols.transpose(0, 1))).to(x.dtype)


def export_resizes(model: nn.Module) -> int:
    """Every bicubic upsampling place of *model* (`segcore.Upsample`) computed by `GraphResize`, in place; returns
    how many. For export: call it on a copy."""
    return _replace_bicubic(model, GraphResize)
