"""Building blocks that several plugins need as code (plugins never import each other).

Everything here is public API: ``from segcore.layers import ConvBNAct, resize_to``.
"""

from __future__ import annotations

__all__ = ["ConvBNAct", "resize_to"]

from .basic import ConvBNAct, resize_to
