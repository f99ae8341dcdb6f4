"""Counting conventions: parameters and MACs counted the way a paper's tool counted them (`segcore check --convention`).

Published "FLOPs" differ by tool, so a number is only comparable under the rule that produced it (BLOCKS.md 0.3):

- ``true``: every parameter; multiply-accumulates of convolutions and matrix products as torch runs them
  (``torch.utils.flop_counter.FlopCounterMode`` FLOPs / 2, bias adds not counted). Norms, activations, pools,
  resizes and element-wise ops count 0.
- ``thop2x``: seed 000's rule (the authors' ``summary.py``): 2 x the MACs of thop 0.1.1 ``thop.profile``, and
  thop's parameters. thop hooks the modules whose *exact* type is in its table (a subclass of ``nn.Conv2d`` is not
  counted) and counts a module's parameters only if it ran; functional ops (``F.interpolate``, matmul, ``+``,
  ``torch.cat``) and the parameters and ops of every other module type (GroupNorm, third-party SyncBN, a custom
  layer-scale ``nn.Parameter``) count 0. A counted module counts for its whole subtree.
- ``mmcv``: mmcv 1.x ``get_model_complexity_info`` as mmseg 0.x ``tools/get_flops.py`` runs it: its own table of
  exact module types (conv bias adds included, activations, pools and norms per element, ``nn.Upsample``, no
  matmul); parameters of everything; training-only heads excluded from the MACs (get_flops runs backbone and
  decode head only) but included in the parameters.

Written from reading thop 0.1.1.post2209072238 (``thop/profile.py``, ``thop/vision/basic_hooks.py``,
``thop/vision/calc_func.py``; Lyken17/pytorch-OpCounter, MIT) and mmcv 1.x ``mmcv/cnn/utils/flops_counter.py``
(open-mmlab/mmcv, Apache-2.0); no code copied. What differs: thop's RNN/LSTM/GRU rules are not reproduced (such
modules count as unregistered); mmcv divides by the batch size and thop does not, so counts are for batch 1, as
``segcore check`` runs; thop profiles in eval mode, so ``nn.PReLU`` always counts as in eval; mmcv counts only
parameters with ``requires_grad`` (a frozen backbone would vanish), here every parameter counts.

A module class can declare its own rule for a hook-based convention (``thop2x``, ``mmcv``) with a class attribute
``counting_rules = {"thop2x": rule}``; ``rule(module, inputs, output) -> MACs`` of one call, read from shapes only.
The module then counts as registered (its subtree is its rule's; under ``thop2x`` its parameters count when it ran).
"""

from __future__ import annotations

__all__ = ["CONVENTIONS", "MMCV_RULES", "THOP_RULES", "Convention", "Count", "Meter", "Rule", "count", "get_convention"]

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

from attrs import frozen
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from segcore.errors import ConfigError, did_you_mean
from segcore.model.meta import meta_shortcuts

Rule = Callable[[nn.Module, tuple[Any, ...], Any], int]
"""MACs of one forward call of a module, from its inputs' and output's shapes (meta tensors work)."""


@frozen
class Count:
    """Parameters and MACs (in the unit of the convention that counted them)."""

    params: int
    macs: int


@frozen
class Convention:
    """How to count: a table of rules per exact module type, or torch's FlopCounterMode when ``rules`` is None.

    ``params``: ``"all"`` counts every parameter, ``"counted"`` only those of modules with a rule that ran (thop).
    ``factor`` multiplies the MACs (2 for seed 000's "FLOPs"). ``training_heads_macs`` False: training-only heads
    report their parameters but 0 MACs (mmseg's get_flops never runs them).
    """

    name: str
    unit: str  # what the MAC column means: "MAC" or "2xMAC"
    summary: str
    rules: Mapping[type[nn.Module], Rule] | None = None
    params: Literal["all", "counted"] = "all"
    factor: int = 1
    training_heads_macs: bool = True


# -- thop 0.1.1 ----------------------------------------------------------------------------------------------------


def _zero(m: nn.Module, inputs: tuple[Any, ...], out: Any) -> int:
    return 0


def _thop_conv(m: nn.Module, inputs: tuple[Any, ...], out: Tensor) -> int:
    # per output element: input channels / groups x kernel area; no bias; the same formula for transposed convs
    return out.numel() * (inputs[0].shape[1] // m.groups) * math.prod(m.weight.shape[2:])


def _thop_norm(m: nn.Module, inputs: tuple[Any, ...], out: Tensor) -> int:
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return 2 * inputs[0].numel() * (2 if affine else 1)  # BatchNorm2d with affine: 4 per element


def _thop_prelu(m: nn.Module, inputs: tuple[Any, ...], out: Tensor) -> int:
    return inputs[0].numel()  # thop counts PReLU only in eval mode, and profile() runs in eval mode


def _thop_softmax(m: nn.Softmax, inputs: tuple[Any, ...], out: Tensor) -> int:
    x = inputs[0]
    dim = m.dim if m.dim is not None else (0 if x.dim() in (0, 1, 3) else 1)  # torch's implicit-dim rule
    n = x.shape[dim]
    return x.numel() // n * (3 * n - 1)  # exp + add + div per feature, minus one add


def _thop_avgpool(m: nn.Module, inputs: tuple[Any, ...], out: Tensor) -> int:
    return out.numel()


def _thop_adaptive_avgpool(m: nn.Module, inputs: tuple[Any, ...], out: Tensor) -> int:
    window = math.prod(i / o for i, o in zip(inputs[0].shape[2:], out.shape[2:]))  # float, as thop (float64)
    return int((window + 1) * out.numel())


def _thop_linear(m: nn.Linear, inputs: tuple[Any, ...], out: Tensor) -> int:
    return m.in_features * out.numel()


_THOP_UPSAMPLE = {"nearest": 1, "linear": 5, "bilinear": 11, "bicubic": 259}  # other modes (trilinear, ...): 0


def _thop_upsample(m: nn.Upsample, inputs: tuple[Any, ...], out: Tensor) -> int:
    return _THOP_UPSAMPLE.get(m.mode, 0) * out.numel()


THOP_RULES: dict[type[nn.Module], Rule] = {
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
                    _thop_conv),
    **dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm,
                     nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d), _thop_norm),
    nn.PReLU: _thop_prelu,
    nn.Softmax: _thop_softmax,
    **dict.fromkeys((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), _thop_avgpool),
    **dict.fromkeys((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _thop_adaptive_avgpool),
    nn.Linear: _thop_linear,
    **dict.fromkeys((nn.Upsample, nn.UpsamplingBilinear2d, nn.UpsamplingNearest2d), _thop_upsample),
    # registered with zero ops: they cost nothing but are "counted" (no parameters in any of them)
    **dict.fromkeys((nn.ZeroPad2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                     nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout, nn.PixelShuffle),
                    _zero),
}  # fmt: skip


# -- mmcv 1.x ------------------------------------------------------------------------------------------------------


def _mmcv_conv(m: nn.Module, inputs: tuple[Any, ...], out: Tensor) -> int:
    positions = out.shape[0] * math.prod(out.shape[2:])
    macs = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups) * positions
    return macs + (m.out_channels * positions if m.bias is not None else 0)


def _mmcv_deconv(m: nn.ConvTranspose2d, inputs: tuple[Any, ...], out: Tensor) -> int:
    x = inputs[0]
    macs = math.prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups) * x.shape[0] * math.prod(x.shape[2:])
    # (sic) mmcv's bias term multiplies the output height by itself, not by the width
    return macs + (m.out_channels * out.shape[0] * out.shape[2] * out.shape[2] if m.bias is not None else 0)


def _mmcv_per_output(m: nn.Module, inputs: tuple[Any, ...], out: Tensor) -> int:
    return out.numel()


def _mmcv_per_input(m: nn.Module, inputs: tuple[Any, ...], out: Tensor) -> int:
    return inputs[0].numel()


def _mmcv_norm(m: nn.Module, inputs: tuple[Any, ...], out: Tensor) -> int:
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return inputs[0].numel() * (2 if affine else 1)


def _mmcv_linear(m: nn.Linear, inputs: tuple[Any, ...], out: Tensor) -> int:
    return inputs[0].numel() * out.shape[-1]


def _mmcv_upsample(m: nn.Upsample, inputs: tuple[Any, ...], out: Tensor) -> int:
    return out[0].numel()  # mmcv counts the first sample's elements (then divides by the batch size)


MMCV_RULES: dict[type[nn.Module], Rule] = {
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d), _mmcv_conv),
    nn.ConvTranspose2d: _mmcv_deconv,
    **dict.fromkeys((nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6), _mmcv_per_output),
    **dict.fromkeys((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                     nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.AdaptiveAvgPool1d,
                     nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _mmcv_per_input),
    **dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm1d,
                     nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm), _mmcv_norm),
    nn.Linear: _mmcv_linear,
    nn.Upsample: _mmcv_upsample,
}  # fmt: skip


CONVENTIONS: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention("true", "MAC",
                   "every parameter; MACs of convolutions and matrix products (torch FlopCounterMode / 2)"),
        Convention("thop2x", "2xMAC", "seed 000: 2 x thop 0.1.1 MACs and thop params (registered module types only)",
                   THOP_RULES, params="counted", factor=2),
        Convention("mmcv", "MAC", "mmcv 1.x get_model_complexity_info (no matmuls; training-only heads: params only)",
                   MMCV_RULES, training_heads_macs=False),
    )
}  # fmt: skip


def get_convention(name: str | Convention) -> Convention:
    """A convention by name (``"true"``, ``"thop2x"``, ``"mmcv"``); a `Convention` passes through."""
    if isinstance(name, Convention):
        return name
    if name not in CONVENTIONS:
        hint = did_you_mean(name, CONVENTIONS)
        raise ConfigError(f"unknown counting convention {name!r}{hint}; choose one of {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


# -- counting ------------------------------------------------------------------------------------------------------


class Meter:
    """Counts one or more forward passes of *model* under a convention; read per submodule afterwards.

    ``with Meter(model, "thop2x") as meter: model(x)``, then ``meter.count(model.decoder)``. Hook-based conventions
    read shapes only, so a meta-device model works.
    """

    def __init__(self, model: nn.Module, convention: str | Convention = "true") -> None:
        self.model = model
        self.convention = get_convention(convention)
        self._macs: dict[nn.Module, int] = {}
        self._ran: set[nn.Module] = set()
        self._hooks: list[Any] = []
        self._flops: FlopCounterMode | None = None
        self._fqn: dict[nn.Module, str] = {}
        self._stack = contextlib.ExitStack()  # meta_shortcuts (segcore.model.meta), and the FLOP counter

    def _rule(self, module: nn.Module) -> Rule | None:
        declared = getattr(type(module), "counting_rules", None) or {}
        if self.convention.name in declared:
            return declared[self.convention.name]
        return (self.convention.rules or {}).get(type(module))  # exact type, as both tools match

    def __enter__(self) -> Meter:
        with contextlib.ExitStack() as stack:  # closed again if entering the counter fails
            stack.enter_context(meta_shortcuts())  # beneath the counter: it sees the model's own operators
            if self.convention.rules is None:
                prefix = type(self.model).__name__  # FlopCounterMode names modules by the root's class + attribute path
                self._fqn = {m: f"{prefix}.{name}" if name else prefix for name, m in self.model.named_modules()}
                self._flops = stack.enter_context(FlopCounterMode(display=False))
            self._stack = stack.pop_all()
        if self._flops is not None:
            return self
        for module in self.model.modules():
            rule = self._rule(module)
            if rule is not None:
                self._hooks.append(module.register_forward_hook(self._hook(rule)))
        return self

    def _hook(self, rule: Rule):
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            self._macs[module] = self._macs.get(module, 0) + int(rule(module, inputs, output))
            self._ran.add(module)

        return hook

    def __exit__(self, *exc: object) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._stack.__exit__(*exc)  # the FLOP counter, then the shortcuts, whatever either raises

    def count(self, module: nn.Module) -> Count:
        """Parameters and MACs of *module* (a submodule of the metered model, or the model itself)."""
        if self._flops is not None:
            flops = self._flops.get_flop_counts().get(self._fqn[module], {})
            return Count(sum(p.numel() for p in module.parameters()), sum(flops.values()) // 2)
        params, macs = self._walk(module)
        if self.convention.params == "all":
            params = sum(p.numel() for p in module.parameters())
        return Count(params, macs * self.convention.factor)

    def _walk(self, module: nn.Module) -> tuple[int, int]:
        """(counted params, MACs): a module with a rule counts for its subtree; any other adds up its children."""
        if self._rule(module) is not None:
            ran = module in self._ran
            return (sum(p.numel() for p in module.parameters()) if ran else 0), self._macs.get(module, 0)
        params = macs = 0
        for child in module.children():
            p, m = self._walk(child)
            params, macs = params + p, macs + m
        return params, macs


def count(module: nn.Module, *inputs: Any, convention: str | Convention = "true") -> Count:
    """Run ``module(*inputs)`` once and count it: ``count(nn.Conv2d(8, 4, 3), x, convention="mmcv")``."""
    with Meter(module, convention) as meter:
        module(*inputs)
    return meter.count(module)
