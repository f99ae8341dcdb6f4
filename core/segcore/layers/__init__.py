"""Building blocks that several plugins need as code (plugins never import each other).

Everything here is public API: ``from segcore.layers import ConvBNAct, resize_to``.
"""

from __future__ import annotations

__all__ = [
    "BasicBlock", "Bottleneck", "ConvBNAct", "building_on_meta", "DisentangledNonLocal", "HRModule", "Transition", "context_levels",
    "init_hrnet_weights", "make_blocks", "pool_concat", "resize_to",
]  # fmt: skip

from segcore.layers.basic import ConvBNAct, building_on_meta, resize_to
from segcore.layers.context import context_levels, pool_concat
from segcore.layers.dnl import DisentangledNonLocal
from segcore.layers.hrnet import BasicBlock, Bottleneck, HRModule, Transition, init_hrnet_weights, make_blocks
