"""BatchNorm folded into the convolution before it, for any module graph: the conv -> BN pairs are found by running
an example through the model and following the tensors; the arithmetic is torch's `fuse_conv_bn_weights`."""

from __future__ import annotations

__all__ = ["fold_batchnorm"]

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

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
        trainable = conv.weight.requires_grad
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                            bn.weight, bn.bias)  # fmt: skip
        conv.weight = nn.Parameter(weight.detach(), requires_grad=trainable)
        conv.bias = nn.Parameter(bias.detach().to(weight.dtype), requires_grad=trainable)
        for parent, name in parents.get(bn, ()):
            setattr(parent, name, nn.Identity())
        folded += 1
    return folded
