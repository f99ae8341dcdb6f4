"""The training objective: each ``[[loss]]`` on the heads it names, with the extra tensors it declares."""

from __future__ import annotations

__all__ = ["Criterion"]

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from segcore.config.schema import AuxHeadConfig, LossSpec
from segcore.errors import ConfigError
from segcore.contracts.registry import Registry
from segcore.contracts.stages import Loss, ModelOutput
from segcore.model.losses import MAIN, loss_routes


class Criterion(nn.Module):
    """Total loss = sum over ``[[loss]]`` of weight x loss on each of its heads (auxiliary heads scaled by their
    ``weight``). Built and checked with the pipeline: unknown heads or missing extras are ConfigErrors."""

    def __init__(self, specs: Sequence[LossSpec], heads: Mapping[str, AuxHeadConfig], registry: Registry, *,
                 num_classes: int, ignore_index: int) -> None:  # fmt: skip
        super().__init__()
        self.specs = list(specs)
        if not self.specs:
            raise ConfigError("the pipeline has no [[loss]] table; add one, e.g. [[loss]] name = \"ce\"")
        self.routes = loss_routes(self.specs, heads, registry)
        self.head_weights = {MAIN: 1.0} | {k: h.weight for k, h in heads.items() if h.output == "logits"}
        self.losses = nn.ModuleList(
            registry.get(Loss, s.name, s.plugin).build(s.config, num_classes=num_classes, ignore_index=ignore_index) for s in self.specs
        )

    def forward(self, output: ModelOutput, target: Tensor, *, step: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """-> total loss (scalar) and every named term (detached) for logging. *step*: the training step (0 for the
        first), for the losses' ``start_iter``; None: every loss counts."""
        total = output.logits.new_zeros((), dtype=torch.float32)
        terms: dict[str, Tensor] = {}
        for spec, loss, (heads, extras) in zip(self.specs, self.losses, self.routes):
            weight = spec.weight if step is None or step >= spec.start_iter else 0.0
            seen = ModelOutput(output.logits, output.aux, {need: output.extras[head] for need, head in extras.items()
                                                           if head in output.extras})  # fmt: skip
            for head in heads:
                logits = output.logits if head == MAIN else output.aux.get(head)
                if logits is None:  # evaluation mode: no auxiliary logits
                    continue
                value = loss(logits, target, seen)
                prefix = "" if head == MAIN else f"aux.{head}."
                for part, v in (value if isinstance(value, dict) else {"": value}).items():
                    terms[f"loss.{prefix}{spec.name}" + (f".{part}" if part else "")] = v.detach()
                    total = total + self.head_weights[head] * weight * v
        return total, terms
