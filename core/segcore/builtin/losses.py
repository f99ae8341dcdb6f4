"""The plain loss: cross-entropy with an ignore index (until segcore 0.1 in segcore-plugin-classic; same keys)."""

from __future__ import annotations

__all__ = ["CrossEntropyLoss", "CrossEntropyLossConfig"]

import torch
import torch.nn.functional as F
from attrs import field, frozen
from attrs.validators import ge, lt
from torch import Tensor

from segcore.contracts.hookspecs import hookimpl
from segcore.contracts.registry import Registry
from segcore.contracts.stages import Loss, ModelOutput
from segcore.errors import ConfigError

MOVED_FROM = ("segcore-plugin-classic",)  # the distribution that provided "ce" before it became a built-in


@frozen
class CrossEntropyLossConfig:
    """Table [[loss]] when name = "ce"."""

    class_weights: tuple[float, ...] | None = None  # one per class
    label_smoothing: float = field(default=0.0, validator=[ge(0.0), lt(1.0)])


class CrossEntropyLoss(Loss):
    """Mean over labelled pixels; pixels equal to ``ignore_index`` count for nothing."""

    def __init__(self, cfg: CrossEntropyLossConfig, *, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        if cfg.class_weights is not None and len(cfg.class_weights) != num_classes:
            raise ConfigError(f"class_weights has {len(cfg.class_weights)} values for {num_classes} classes")
        weight = None if cfg.class_weights is None else torch.tensor(cfg.class_weights, dtype=torch.float32)
        self.register_buffer("weight", weight, persistent=False)
        self.ignore_index = ignore_index
        self.label_smoothing = cfg.label_smoothing

    def forward(self, logits: Tensor, target: Tensor, output: ModelOutput) -> Tensor:
        return F.cross_entropy(
            logits.float(), target, weight=self.weight, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing
        )


@hookimpl
def segcore_register(registry: Registry) -> None:
    registry.add(CrossEntropyLoss, name="ce", config=CrossEntropyLossConfig, formerly=MOVED_FROM)
