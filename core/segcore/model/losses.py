"""Which heads each ``[[loss]]`` applies to and which extra tensors it reads: a pure function of the pipeline's loss
tables, its ``[model.aux]`` heads and the registry, shared by the trainer's `Criterion` and ``segcore check``."""

from __future__ import annotations

__all__ = ["MAIN", "Route", "loss_routes"]

from collections.abc import Mapping, Sequence

from segcore.config.schema import AuxHeadConfig, LossSpec
from segcore.contracts.registry import Registry
from segcore.contracts.stages import Loss
from segcore.errors import ConfigError

MAIN = "main"  # the model's own logits, as a head name

Route = tuple[tuple[str, ...], dict[str, str]]  # (logits heads, {extra the loss reads: the head that makes it})


def loss_routes(specs: Sequence[LossSpec], heads: Mapping[str, AuxHeadConfig], registry: Registry) -> list[Route]:
    """For each loss: the logits heads it applies to and {extra it reads: head that makes it}; every name checked,
    every problem reported in one ConfigError."""
    logit_heads = [MAIN] + [k for k, h in heads.items() if h.output == "logits"]
    extra_heads = [k for k, h in heads.items() if h.output == "extra"]
    problems, routes = [], []
    for i, spec in enumerate(specs):
        where = f"loss[{i}] ({spec.name!r})"
        names = logit_heads if spec.heads is None else list(spec.heads)
        for h in names:
            if h not in logit_heads:
                problems.append(f"{where}.heads: {h!r} is not a logits head; logits heads: {', '.join(logit_heads)}")
        needs = tuple(getattr(registry.get(Loss, spec.name, spec.plugin).cls, "extras", ()))
        for key in spec.extras:
            if key not in needs:
                problems.append(f"{where}.extras: the loss reads no extra {key!r}; it reads: {', '.join(needs) or 'none'}")
        mapping = {need: spec.extras.get(need, need) for need in needs}
        for need, head in mapping.items():
            if head not in extra_heads:
                problems.append(
                    f"{where} needs the extra tensor {need!r} but no [model.aux.{head}] head with output = \"extra\" "
                    f"makes it (extra heads: {', '.join(extra_heads) or 'none'}). Add one, or map it with "
                    f"[[loss]] extras = {{ {need} = \"<head>\" }}."
                )
        routes.append((tuple(names), mapping))
    if problems:
        raise ConfigError("losses do not fit the model:\n  " + "\n  ".join(problems))
    return routes
