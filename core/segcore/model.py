"""The segmentation model assembled from stages, and the builder that wires them through the registry."""

from __future__ import annotations

__all__ = ["AuxHead", "SegModel", "build_model"]

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import AttentionSpec, AuxHeadConfig, ModelConfig, _WiredSpec
from .errors import ContractError, SegcoreError
from .registry import Entry, Registry
from .stages import Attention, AttentionSlots, Backbone, Decoder, Enhancer, FeatureInfo, ModelOutput


class AuxHead(nn.Module):
    """A training-only head: a decoder on some backbone levels, then dropout and a 1x1 classifier."""

    def __init__(self, decoder: Decoder, in_index: Sequence[int], num_classes: int, dropout: float, weight: float):
        super().__init__()
        self.decoder = decoder
        self.in_index = tuple(in_index)
        self.weight = weight
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(decoder.out_channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.classifier(self.dropout(self.decoder([features[i] for i in self.in_index])))


class SegModel(nn.Module):
    """image (B, 3, H, W) float in [0, 1] -> `ModelOutput` with logits (B, K, H, W) at the input size.

    Normalisation (mean/std) is part of the model, so saved weights carry it. Auxiliary heads run only in
    training mode.
    """

    def __init__(
        self,
        backbone: Backbone,
        decoder: Decoder,
        *,
        num_classes: int,
        enhancers: Sequence[Enhancer] = (),
        aux: dict[str, AuxHead] | None = None,
        dropout: float = 0.1,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.backbone = backbone
        self.enhancers = nn.ModuleList(enhancers)
        self.decoder = decoder
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(decoder.out_channels, num_classes, 1)
        self.aux = nn.ModuleDict(aux or {})
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)  # mmseg's conv_seg init
        nn.init.zeros_(self.classifier.bias)

    def forward(self, image: Tensor) -> ModelOutput:
        size = image.shape[-2:]
        x = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        features = self.backbone(x)
        levels = features
        for enhancer in self.enhancers:
            levels = enhancer(levels)
        logits = self.classifier(self.dropout(self.decoder(levels)))
        logits = self.decoder.final_resize(logits, size)
        aux = {}
        if self.training:
            for name, head in self.aux.items():
                aux[name] = head.decoder.final_resize(head(features), size)
        return ModelOutput(logits=logits, aux=aux)


# -- building -----------------------------------------------------------------------------------------------------


def _describe(path: str, entry: Entry) -> str:
    return f"[{path}] {entry.stage.__name__.lower()} {entry.name!r} ({entry.plugin})"


def _construct(entry: Entry, cfg: Any, path: str, **wiring: Any) -> Any:
    try:
        obj = entry.cls(cfg, **wiring)
    except SegcoreError as exc:
        raise type(exc)(f"{_describe(path, entry)}: {exc}") from exc
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        kw = ", ".join(wiring)
        raise ContractError(
            f"{_describe(path, entry)} cannot be built as {entry.cls.__name__}(cfg, *, {kw}): {exc}. "
            f"A {entry.stage.__name__} must accept exactly these wiring keywords."
        ) from exc
    if not isinstance(obj, entry.stage):
        raise ContractError(f"{_describe(path, entry)} built a {type(obj).__name__}, not a {entry.stage.__name__}")
    return obj


def _check_feature_info(obj: Any, entry: Entry, path: str) -> tuple[FeatureInfo, ...]:
    info = getattr(obj, "feature_info", None)
    if not isinstance(info, (tuple, list)) or not info or not all(isinstance(i, FeatureInfo) for i in info):
        raise ContractError(
            f"{_describe(path, entry)} must set feature_info to a non-empty tuple of FeatureInfo(channels, stride), "
            f"got {info!r}"
        )
    return tuple(info)


def _slots(spec: _WiredSpec, registry: Registry, path: str) -> AttentionSlots:
    def factory(slot: str, attn: AttentionSpec):
        entry = registry.get(Attention, attn.name)

        def build(channels: int) -> nn.Module:
            return _construct(entry, attn.config, f"{path}.attention.{slot}", channels=channels)

        return build

    return AttentionSlots({slot: factory(slot, attn) for slot, attn in spec.attention.items()})


def _check_inputs(spec: _WiredSpec, info: Sequence[FeatureInfo], path: str, source: str) -> None:
    """The pinned ``in_channels`` / ``in_strides`` of *spec* against what the previous stage declares."""
    for key, got in (("in_channels", tuple(i.channels for i in info)), ("in_strides", tuple(i.stride for i in info))):
        want = getattr(spec, key)
        if want is not None and tuple(want) != got:
            what = key.removeprefix("in_")
            raise ContractError(
                f"{what[:-1]} mismatch: [{path}] ({spec.name!r}) expects {key} {tuple(want)}, but {source} gives "
                f"{len(got)} maps with {what} {got}. Set [{path}] {key} = {list(got)} (or remove it), or change {source}."
            )


def _wired(construct, path: str, source: str, info: Sequence[FeatureInfo]):
    """Build an enhancer or decoder; when it rejects its inputs, say which stage produced them."""
    try:
        return construct()
    except ContractError as exc:
        fed = f"{source} gives channels {tuple(i.channels for i in info)} at strides {tuple(i.stride for i in info)}"
        raise ContractError(f"{exc} ({fed})") from exc


def build_model(cfg: ModelConfig, registry: Registry, *, num_classes: int) -> SegModel:
    """Build every stage of *cfg* through *registry*, checking each declared contract as it is wired.

    Use ``with torch.device("meta"):`` around it to build without allocating weights (`segcore check`).
    """
    entry = registry.get(Backbone, cfg.backbone.name)
    backbone = _construct(entry, cfg.backbone.config, "model.backbone")
    backbone_info = _check_feature_info(backbone, entry, "model.backbone")
    info, source = backbone_info, f"[model.backbone] ({cfg.backbone.name!r})"

    enhancers = []
    for i, spec in enumerate(cfg.enhancers):
        path = f"model.enhancers[{i}]"
        _check_inputs(spec, info, path, source)
        entry = registry.get(Enhancer, spec.name)
        enh = _wired(lambda: _construct(entry, spec.config, path, in_features=info, attention=_slots(spec, registry, path)),
                     path, source, info)  # fmt: skip
        info, source = _check_feature_info(enh, entry, path), f"[{path}] ({spec.name!r})"
        enhancers.append(enh)

    decoder = _build_decoder(cfg.decoder, registry, "model.decoder", info, source)
    aux = {name: _build_aux(name, head, registry, backbone_info, num_classes) for name, head in cfg.aux.items()}
    return SegModel(
        backbone, decoder, num_classes=num_classes, enhancers=enhancers, aux=aux,
        dropout=cfg.dropout, mean=cfg.mean, std=cfg.std,
    )  # fmt: skip


def _build_decoder(spec: _WiredSpec, registry: Registry, path: str, info: Sequence[FeatureInfo], source: str) -> Decoder:
    _check_inputs(spec, info, path, source)
    entry = registry.get(Decoder, spec.name)
    decoder = _wired(lambda: _construct(entry, spec.config, path, in_features=tuple(info), attention=_slots(spec, registry, path)),
                     path, source, info)  # fmt: skip
    for attr in ("out_channels", "stride"):
        value = getattr(decoder, attr, None)
        if not isinstance(value, int) or value <= 0:
            raise ContractError(f"{_describe(path, entry)} must set {attr} to a positive int, got {value!r}")
    return decoder


def _build_aux(name: str, cfg: AuxHeadConfig, registry: Registry, info: Sequence[FeatureInfo], num_classes: int) -> AuxHead:
    path = f"model.aux.{name}"
    in_index = tuple(range(len(info))) if cfg.in_index is None else cfg.in_index
    bad = [i for i in in_index if not -len(info) <= i < len(info)]
    if bad:
        raise ContractError(
            f"[{path}] in_index {list(in_index)}: the backbone gives {len(info)} maps, so indices must be in "
            f"0..{len(info) - 1} (or negative from the end); {bad} are not."
        )
    picked = [info[i] for i in in_index]
    decoder = _build_decoder(cfg.decoder, registry, f"{path}.decoder", picked, "[model.backbone]")
    return AuxHead(decoder, in_index, num_classes, cfg.dropout, cfg.weight)
