"""`segcore check`: build a pipeline's model on the meta device, verify every stage contract, count per stage."""

from __future__ import annotations

__all__ = ["StageRow", "Totals", "check_model", "check_pipeline", "format_json", "format_table", "totals"]


import json
from collections.abc import Sequence
from typing import Any

import torch
from attrs import asdict, frozen
from torch import Tensor, nn

from segcore.config import unstructure
from segcore.config.schema import ComponentSpec, PipelineConfig
from segcore.model.losses import loss_routes
from segcore.model.counting import Convention, Count, Meter, get_convention
from segcore.errors import ContractError
from segcore.model.build import SegModel, build_model
from segcore.model.meta import meta_shortcuts
from segcore.contracts.registry import PluginInfo, Registry
from segcore.contracts.stages import Attention, Backbone, Dataset, Decoder, Enhancer, FeatureInfo, Loss
from segcore.data.datasets import dataset_meta, split_names


@frozen
class StageRow:
    """One stage: where it is in the pipeline, what it outputs, its size and cost.

    ``params`` and ``macs`` follow the convention the check ran with (`segcore.counting`): for ``"true"`` every
    parameter and the multiply-accumulates of convolutions and matrix products; ``"thop2x"``'s ``macs`` are 2 x
    thop's MACs (seed 000's "FLOPs"). Training-only heads (``model.aux.*``) have rows of their own.
    """

    path: str
    component: str
    plugin: str
    channels: str
    stride: str
    params: int
    macs: int

    @property
    def training_only(self) -> bool:
        return self.path.startswith("model.aux.")


@frozen
class Totals:
    """Sums over rows: ``total`` (every row) and ``inference`` (without training-only heads)."""

    total: Count
    inference: Count


def totals(rows: Sequence[StageRow]) -> Totals:
    inference = [r for r in rows if not r.training_only]
    return Totals(
        Count(sum(r.params for r in rows), sum(r.macs for r in rows)),
        Count(sum(r.params for r in inference), sum(r.macs for r in inference)),
    )


def _sizes_ok(t: Tensor, stride: int, size: Sequence[int]) -> bool:
    return all(abs(got - n / stride) < 1 for got, n in zip(t.shape[-2:], size))


def _verify_maps(where: str, maps: Sequence[Tensor], info: Sequence[FeatureInfo], size: Sequence[int]) -> None:
    if len(maps) != len(info):
        raise ContractError(f"{where} declares {len(info)} feature maps but returned {len(maps)}")
    for i, (m, fi) in enumerate(zip(maps, info)):
        if m.shape[1] != fi.channels or not _sizes_ok(m, fi.stride, size):
            raise ContractError(
                f"{where}: map {i} declares {fi.channels} channels at stride {fi.stride} "
                f"(~{size[0] / fi.stride:.0f}x{size[1] / fi.stride:.0f} for a {size[0]}x{size[1]} input) but is "
                f"{tuple(m.shape[1:])}"
            )


Names = dict[str, tuple[str, "PluginInfo | None"]]  # stage path -> (component, plugin)


def _verify(model: SegModel, captured: dict[str, object], size: Sequence[int], names: Names) -> None:
    """Compare each captured stage output with what the stage declared."""
    declared = {"model.backbone": model.backbone.feature_info}
    declared |= {f"model.enhancers[{i}]": e.feature_info for i, e in enumerate(model.enhancers)}
    declared["model.decoder"] = [FeatureInfo(model.decoder.out_channels, model.decoder.stride)]
    for path, info in declared.items():
        if path in captured:
            maps = captured[path]
            where = _where(path, names)
            _verify_maps(where, [maps] if path == "model.decoder" else maps, info, size)


def _where(path: str, names: Names) -> str:
    name, plugin = names.get(path, ("", None))
    return f"[{path}]" + (f" {name!r} ({plugin})" if plugin else "")


def check_model(
    model: SegModel, input_size: tuple[int, int], names: Names | None = None, *, convention: str | Convention = "true"
) -> list[StageRow]:
    """Run *model* (meta or real) on one (1, C, H, W) input (C: its in_channels); check declared channels/strides against real shapes.

    Returns a row per stage, counted under *convention* (``"true"``, ``"thop2x"``, ``"mmcv"``: `segcore.counting`);
    raises ContractError naming the stage that broke its contract.
    """
    convention = get_convention(convention)
    names = names or {}
    device = next(model.parameters()).device
    image = torch.zeros(1, getattr(model, "in_channels", 3), *input_size, device=device)
    captured: dict[str, object] = {}
    hooks = []
    stages: dict[str, nn.Module] = {"model.backbone": model.backbone}
    stages |= {f"model.enhancers[{i}]": e for i, e in enumerate(model.enhancers)}
    stages |= {"model.decoder": model.decoder, "model.classifier": model.classifier}
    stages |= {f"model.aux.{k}": v for k, v in model.aux.items()}
    for path, module in stages.items():
        hooks.append(module.register_forward_hook(lambda m, i, o, path=path: captured.__setitem__(path, o)))

    def attention_hook(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        if out.shape != inputs[0].shape:
            where = getattr(m, "segcore_where", f"attention {type(m).__name__}")
            raise ContractError(f"{where} changed the shape {tuple(inputs[0].shape)} -> {tuple(out.shape)}; an Attention "
                                "must return a map of its input's shape")  # fmt: skip

    hooks += [m.register_forward_hook(attention_hook) for m in model.modules() if isinstance(m, Attention)]
    was_training = model.training
    model.train(bool(model.aux))  # aux heads run only in training mode
    for m in model.modules():  # but norms keep their running statistics: a check changes none, and batch 1
        if isinstance(m, nn.modules.batchnorm._BatchNorm):  # through a BN after global pooling (PPM, ASPP) works
            m.eval()
    try:
        with Meter(model, convention) as meter:
            out = model(image)
    except Exception as exc:
        _verify(model, captured, input_size, names)  # a stage that broke its declaration is the likely cause
        failed = next((p for p in stages if p not in captured), "model")  # otherwise a bug: keep its traceback
        exc.add_note(f"segcore: raised inside {_where(failed, names)} on a {input_size[0]}x{input_size[1]} input")
        raise
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    if out.logits.shape[-2:] != image.shape[-2:]:
        raise ContractError(f"logits are {tuple(out.logits.shape)} for a {tuple(image.shape)} input")
    _verify(model, captured, input_size, names)

    def row(path: str, module: nn.Module, channels: str, stride: str) -> StageRow:
        counted = meter.count(module)
        name, plugin = names.get(path, (type(module).__name__, None))
        where = f"{plugin.name} {plugin.version or ''}".rstrip() if plugin else "core"
        training_only = path.startswith("model.aux.")
        macs = counted.macs if convention.training_heads_macs or not training_only else 0
        return StageRow(path, name, where, channels, stride, counted.params, macs)

    def fmt(info: Sequence[FeatureInfo]) -> tuple[str, str]:
        return ",".join(str(i.channels) for i in info), ",".join(str(i.stride) for i in info)

    rows = [row("model.backbone", model.backbone, *fmt(model.backbone.feature_info))]
    rows += [row(f"model.enhancers[{i}]", e, *fmt(e.feature_info)) for i, e in enumerate(model.enhancers)]
    rows.append(row("model.decoder", model.decoder, str(model.decoder.out_channels), str(model.decoder.stride)))
    rows.append(row("model.classifier", model.classifier, str(model.num_classes), str(model.decoder.stride)))
    final = getattr(model, "final_upsample", None)  # the logits' upsampling place: a row when its slot is filled
    if final is not None and meter.count(final) != Count(0, 0):
        rows.append(row("model.final_upsample", final, str(model.num_classes), "1"))
    for k, v in model.aux.items():
        extra = getattr(v, "output", "logits") == "extra"  # an "extra" head outputs its decoder's map as is
        channels = v.decoder.out_channels if extra else model.num_classes
        rows.append(row(f"model.aux.{k}", v, str(channels), str(v.decoder.stride)))
    return rows


def _check_data_and_losses(cfg: PipelineConfig, registry: Registry, num_classes: int, ignore_index: int) -> None:
    """What ``run`` would trip on before its first step, without touching a file: the splits it reads and the losses'
    heads and extras (`loss_routes`), and that each loss builds."""
    dataset = registry.get(Dataset, cfg.data.dataset.name, cfg.data.dataset.plugin).cls
    split = cfg.data.random_split
    for name in (split.source,) if split is not None else (*split_names(cfg.data.train_split), *split_names(cfg.data.val_split)):
        dataset.check_split(cfg.data.dataset.config, name)
    if cfg.loss:
        loss_routes(cfg.loss, cfg.model.aux, registry)
        for spec in cfg.loss:
            registry.get(Loss, spec.name, spec.plugin).build(spec.config, num_classes=num_classes, ignore_index=ignore_index)


def check_pipeline(
    cfg: PipelineConfig, registry: Registry, *, input_size: tuple[int, int] | None = None,
    convention: str | Convention = "true", cache: dict[tuple[Any, ...], tuple[StageRow, ...]] | None = None,
) -> list[StageRow]:
    """Build *cfg*'s model on the meta device (no weights allocated), check it at *input_size*, count it under
    *convention* (see `check_model`). With *cache* (a dict the caller keeps, for one registry), a pipeline whose
    ``[model]``, class count, size and convention (by name) were checked before reuses those rows: a sweep's rows
    mostly change training keys, and a meta-device forward of a 360x480 HRNet takes seconds. Its data and losses are
    always checked."""
    meta = dataset_meta(cfg.data.dataset, registry)
    num_classes = cfg.model.num_classes or meta.num_classes
    _check_data_and_losses(cfg, registry, num_classes, meta.ignore_index)
    size = tuple(input_size or cfg.run.input_size)
    convention = get_convention(convention)
    if cache is None:
        return _check_built(cfg, registry, num_classes, size, convention)
    key = (json.dumps(unstructure(cfg.model), sort_keys=True), num_classes, size, convention.name)
    if key not in cache:
        cache[key] = tuple(_check_built(cfg, registry, num_classes, size, convention))
    return list(cache[key])


def _check_built(cfg: PipelineConfig, registry: Registry, num_classes: int, size: tuple[int, int],
                 convention: Convention) -> list[StageRow]:  # fmt: skip
    """`check_model` on *cfg*'s model built on the meta device, its stages named by component and plugin."""
    with torch.device("meta"), meta_shortcuts():
        model = build_model(cfg.model, registry, num_classes=num_classes)
    names = {"model.backbone": _name(registry, Backbone, cfg.model.backbone),
             "model.decoder": _name(registry, Decoder, cfg.model.decoder), "model.classifier": ("conv1x1", None)}  # fmt: skip
    names |= {f"model.enhancers[{i}]": _name(registry, Enhancer, e) for i, e in enumerate(cfg.model.enhancers)}
    names |= {f"model.aux.{k}": (f"{v.decoder.name} (training only)", registry.get(Decoder, v.decoder.name, v.decoder.plugin).plugin)
              for k, v in cfg.model.aux.items()}  # fmt: skip
    return check_model(model, size, names, convention=convention)


def _name(registry: Registry, stage: type, spec: ComponentSpec) -> tuple[str, PluginInfo]:
    return spec.name, registry.get(stage, spec.name, spec.plugin).plugin


def format_table(rows: Sequence[StageRow], input_size: tuple[int, int], convention: str | Convention = "true") -> str:
    """The table ``segcore check`` prints: a row per stage, the total, and the inference total when there are
    training-only heads; the title names the convention the rows were counted with."""
    convention = get_convention(convention)
    unit = "GMACs" if convention.unit == "MAC" else f"GFLOPs ({convention.unit})"
    head = ("stage", "component", "plugin", "out channels", "stride", "params", unit)
    body = [(r.path, r.component, r.plugin, r.channels, r.stride, f"{r.params:,}", f"{r.macs / 1e9:.3f}") for r in rows]
    sums = totals(rows)
    labels = [("total", sums.total)] + ([("inference (no aux)", sums.inference)] if sums.inference != sums.total else [])
    body += [(label, "", "", "", "", f"{c.params:,}", f"{c.macs / 1e9:.3f}") for label, c in labels]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    title = f"input 1x3x{input_size[0]}x{input_size[1]}; convention {convention.name}: {convention.summary}"
    return "\n".join([title, line(head), line(["-" * w for w in widths]), *map(line, body)])


def format_json(rows: Sequence[StageRow], input_size: tuple[int, int], convention: str | Convention = "true") -> str:
    """``segcore check --json``: the convention, the input size, a row per stage and the totals, as JSON."""
    convention = get_convention(convention)
    doc = {
        "convention": {"name": convention.name, "unit": convention.unit, "summary": convention.summary},
        "input_size": list(input_size),
        "rows": [asdict(r) | {"training_only": r.training_only} for r in rows],
        "totals": asdict(totals(rows)),
    }
    return json.dumps(doc, indent=2)
