"""What the hardware computes natively: CPU feature flags (``/proc/cpuinfo``) and bf16 support per device."""

from __future__ import annotations

__all__ = ["bf16_supported", "cpu_flags"]

import functools
import sys

import torch

from segcore.io import cpuinfo


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``avx512_bf16``, ``amx_bf16``, ...); empty where ``/proc/cpuinfo`` is missing."""
    return frozenset((cpuinfo("flags") or "").split())


def bf16_supported(device: torch.device | str) -> bool:
    """Whether *device* computes in bf16 natively: CUDA (Ampere and later), or a CPU with AVX512-BF16 or AMX
    (elsewhere oneDNN emulates bf16 convolutions, slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        if sys.platform == "darwin" or not torch.backends.mkldnn.is_available():
            return False
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return False
