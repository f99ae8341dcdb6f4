"""The segmentation model assembled from stages, and the builder that wires them through the registry."""

from __future__ import annotations

__all__ = ["SegModel", "TrainingHead", "build_model", "inference_state_dict", "init_from", "without_training_heads"]

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from segcore.config.schema import IMAGENET_MEAN, IMAGENET_STD, AttentionSpec, AuxHeadConfig, ModelConfig, _WiredSpec
from segcore.errors import ConfigError, ContractError, SegcoreError
from segcore.contracts.registry import Entry, Registry
from segcore.model.weights import apply_weights, read_weights
from segcore.contracts.stages import (Attention, AttentionSlots, Backbone, DatasetMeta, Decoder, Enhancer, FeatureInfo,
                                     ModelOutput, Upsample, takes_wiring)  # fmt: skip



class TrainingHead(nn.Module):
    """A training-only head (``[model.aux.<name>]``): a decoder on backbone levels or on the decoder's map; for
    ``output = "logits"`` followed by dropout and a 1x1 classifier."""

    def __init__(self, decoder: Decoder, *, source: Literal["backbone", "decoder"], in_index: Sequence[int],
                 output: Literal["logits", "extra"], num_classes: int, dropout: float, weight: float) -> None:  # fmt: skip
        super().__init__()
        self.decoder = decoder
        self.source, self.output, self.in_index, self.weight = source, output, tuple(in_index), weight
        if output == "logits":
            self.dropout = nn.Dropout2d(dropout)
            self.classifier = nn.Conv2d(decoder.out_channels, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        x = self.decoder([features[i] for i in self.in_index])
        return self.classifier(self.dropout(x)) if self.output == "logits" else x


class SegModel(nn.Module):
    """image (B, C, H, W) float in [0, 1] -> `ModelOutput` with logits (B, K, H, W) at the input size.

    Normalisation (mean/std, one per channel) is part of the model, so saved weights carry it; ``max_value`` says
    which stored pixel value the caller scales to 1.0 (None: the image type's largest; `segcore.data.images.to_unit`).
    Training-only heads (``self.aux``) run only in training mode and are left out of inference weights and exports
    (`without_training_heads`).
    A backbone frozen for the whole run has no gradients, runs under no_grad and stays in eval mode.
    """

    def __init__(
        self,
        backbone: Backbone,
        decoder: Decoder,
        *,
        num_classes: int,
        enhancers: Sequence[Enhancer] = (),
        aux: dict[str, TrainingHead] | None = None,
        final_attention: nn.Module | None = None,
        frozen_backbone: bool = False,
        dropout: float = 0.1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        max_value: float | None = None,
    ) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ConfigError(f"[model] mean has {len(mean)} values and std {len(std)}; give one of each per channel")
        self.num_classes = num_classes
        self.in_channels, self.max_value = len(mean), max_value
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.backbone = backbone
        self.enhancers = nn.ModuleList(enhancers)
        self.decoder = decoder
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(decoder.out_channels, num_classes, 1)
        self.final_upsample = Upsample(decoder.final_resize, final_attention or nn.Identity())
        self.aux = nn.ModuleDict(aux or {})
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)  # mmseg's conv_seg init
        nn.init.zeros_(self.classifier.bias)
        self.frozen_backbone = frozen_backbone
        if frozen_backbone:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        # what a model folder needs: build_model sets the config, from_pretrained all three (save_pretrained reads them)
        self.model_config: ModelConfig | None = None  # the [model] table it was built from
        self.meta: DatasetMeta | None = None  # class names, palette, ignore id
        self.hub_config: dict[str, Any] | None = None  # the config.json it was loaded from

    def train(self, mode: bool = True) -> SegModel:
        super().train(mode)
        if self.frozen_backbone:
            self.backbone.eval()  # BN statistics stay those of the frozen weights
        return self

    def forward(self, image: Tensor) -> ModelOutput:
        size = image.shape[-2:]
        x = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        if self.frozen_backbone:
            with torch.no_grad():
                features = self.backbone(x)
        else:
            features = self.backbone(x)
        levels = features
        for enhancer in self.enhancers:
            levels = enhancer(levels)
        fused = self.decoder(levels)
        logits = self.final_upsample(self.classifier(self.dropout(fused)), size)
        if not self.training or not self.aux:
            return ModelOutput(logits, {}, {})
        aux: dict[str, Tensor] = {}
        extras: dict[str, Tensor] = {}
        for name, head in self.aux.items():
            y = head(features if head.source == "backbone" else [fused])
            if head.output == "logits":
                aux[name] = head.decoder.final_resize(y, size)
            else:
                extras[name] = y
        return ModelOutput(logits, aux, extras)


def without_training_heads(model: nn.Module) -> nn.Module:
    """The inference model: *model* (sharing its modules) minus every training-only head. The one rule that
    save, checkpoint export, hub and ONNX/torch.export use."""
    if not isinstance(model, SegModel) or not len(model.aux):
        return model
    stripped = copy.copy(model)
    stripped._modules = dict(model._modules)
    stripped.aux = nn.ModuleDict()
    return stripped


def inference_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The tensors an inference model needs (no training-only heads)."""
    return without_training_heads(model).state_dict()


# -- building -----------------------------------------------------------------------------------------------------


def _describe(path: str, entry: Entry) -> str:
    return f"[{path}] {entry.stage.__name__.lower()} {entry.name!r} ({entry.plugin})"


def _construct(entry: Entry, cfg: Any, path: str, **wiring: Any) -> Any:
    """Build one component; a user error (SegcoreError) gains the TOML path, anything else is the plugin's bug and
    keeps its traceback (the registry checked the constructor's signature when the plugin registered it)."""
    try:
        obj = entry.cls(cfg, **wiring)
    except SegcoreError as exc:
        raise type(exc)(f"{_describe(path, entry)}: {exc}") from exc
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


def _slots(spec: _WiredSpec | ModelConfig, registry: Registry, path: str) -> AttentionSlots:
    def factory(slot: str, attn: AttentionSpec):
        entry = registry.get(Attention, attn.name, attn.plugin)

        def build(channels: int) -> nn.Module:
            module = _construct(entry, attn.config, f"{path}.attention.{slot}", channels=channels)
            module.segcore_where = _describe(f"{path}.attention.{slot}", entry)  # for messages about this place
            return module

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
    entry = registry.get(Backbone, cfg.backbone.name, cfg.backbone.plugin)
    backbone = _construct(entry, cfg.backbone.config, "model.backbone", **_input_wiring(entry, cfg.in_channels))
    backbone_info = _check_feature_info(backbone, entry, "model.backbone")
    info, source = backbone_info, f"[model.backbone] ({cfg.backbone.name!r})"

    enhancers = []
    for i, spec in enumerate(cfg.enhancers):
        path = f"model.enhancers[{i}]"
        _check_inputs(spec, info, path, source)
        entry = registry.get(Enhancer, spec.name, spec.plugin)
        enh = _wired(lambda: _construct(entry, spec.config, path, in_features=info, attention=_slots(spec, registry, path)),
                     path, source, info)  # fmt: skip
        info, source = _check_feature_info(enh, entry, path), f"[{path}] ({spec.name!r})"
        enhancers.append(enh)

    decoder = _build_decoder(cfg.decoder, registry, "model.decoder", info, source)
    decoder_info = (FeatureInfo(decoder.out_channels, decoder.stride),)
    aux = {name: _build_aux(name, head, registry, backbone_info if head.source == "backbone" else decoder_info, num_classes)
           for name, head in cfg.aux.items()}  # fmt: skip
    final = None
    if "final_upsample" in cfg.attention:
        final = _slots(cfg, registry, "model")("final_upsample", num_classes)
    model = SegModel(
        backbone, decoder, num_classes=num_classes, enhancers=enhancers, aux=aux, final_attention=final,
        frozen_backbone=cfg.backbone.frozen, dropout=cfg.dropout, mean=cfg.mean, std=cfg.std, max_value=cfg.max_value,
    )  # fmt: skip
    model.model_config = cfg  # what segcore.save_pretrained writes into a model folder's config.json
    return model


def _input_wiring(entry: Entry, in_channels: int) -> dict[str, int]:
    """``in_channels`` for a backbone whose constructor declares it; a backbone without it takes RGB only."""
    if takes_wiring(entry.cls, "in_channels"):
        return {"in_channels": in_channels}
    if in_channels != 3:
        raise ConfigError(
            f"[model] in_channels = {in_channels}: {_describe('model.backbone', entry)} takes only 3-channel (RGB) "
            f"images: {entry.cls.__name__}'s constructor has no in_channels keyword. Use a backbone that takes it "
            "(timm, hrnet, van), or add `*, in_channels: int = 3` to its constructor (segcore.Backbone says how)."
        )
    return {}


def _build_decoder(spec: _WiredSpec, registry: Registry, path: str, info: Sequence[FeatureInfo], source: str) -> Decoder:
    _check_inputs(spec, info, path, source)
    entry = registry.get(Decoder, spec.name, spec.plugin)
    decoder = _wired(lambda: _construct(entry, spec.config, path, in_features=tuple(info), attention=_slots(spec, registry, path)),
                     path, source, info)  # fmt: skip
    for attr in ("out_channels", "stride"):
        value = getattr(decoder, attr, None)
        if not isinstance(value, int) or value <= 0:
            raise ContractError(f"{_describe(path, entry)} must set {attr} to a positive int, got {value!r}")
    return decoder


def _build_aux(name: str, cfg: AuxHeadConfig, registry: Registry, info: Sequence[FeatureInfo], num_classes: int) -> TrainingHead:
    path = f"model.aux.{name}"
    in_index = tuple(range(len(info))) if cfg.in_index is None else cfg.in_index
    bad = [i for i in in_index if not -len(info) <= i < len(info)]
    if bad:
        what = "the backbone gives" if cfg.source == "backbone" else 'source = "decoder" gives one map, so'
        raise ContractError(
            f"[{path}] in_index {list(in_index)}: {what} {len(info)} maps, so indices must be in "
            f"0..{len(info) - 1} (or negative from the end); {bad} are not."
        )
    picked = [info[i] for i in in_index]
    source = "[model.backbone]" if cfg.source == "backbone" else "[model.decoder]"
    decoder = _build_decoder(cfg.decoder, registry, f"{path}.decoder", picked, source)
    return TrainingHead(decoder, source=cfg.source, in_index=in_index, output=cfg.output, num_classes=num_classes,
                        dropout=cfg.dropout, weight=cfg.weight)  # fmt: skip


# -- starting from another model ------------------------------------------------------------------------------------


def _classifier_keys(model: nn.Module) -> list[str]:
    """State-dict keys of every 1x1 classifier to the class count (the model's and the logits heads')."""
    parts = (k.split(".") for k in model.state_dict())
    return [".".join(p) for p in parts if p[0] == "classifier" or (p[0] == "aux" and p[2:3] == ["classifier"])]


def init_from(model: SegModel, path: str | Path) -> list[str]:
    """Load another model's weights from safetensors file *path* (or a folder's model.safetensors) into *model* by
    tensor name, for fine-tuning (``[model] init_from``: the trainer resolves the pipeline's text, which may also be
    a pretrained name or a Hub repo id, to the file with `segcore.hub.resolve_source` first).

    Classifiers whose class count differs keep their fresh initialisation; RGB input convolutions are adapted to the
    model's ``in_channels`` (`segcore.adapt_input_channels`); training-only heads absent from the file
    (inference weights never have them) stay fresh too. Any other missing, unexpected or wrong-shape tensor is a
    ConfigError listing them. Returns the names that were left as initialised.
    """
    path = Path(path)
    if path.is_dir():  # a run or model folder
        path = path / "model.safetensors"
    if not path.is_file():
        raise ConfigError(f"init_from: {str(path)!r} is neither a file nor a folder holding model.safetensors; a "
                          "pretrained name or a Hub repo id resolves to one with "
                          "segcore.hub.resolve_source(text, what=...).weights()")  # fmt: skip
    # a file without segcore's integrity record (written elsewhere, or by the conversion segcore's own refusal of a
    # pickle prints) loads with a warning, as run.checkpoint's does; a record that is there is checked
    tensors = read_weights(path, require_record=False)
    own = model.state_dict()
    fresh = [k for k in _classifier_keys(model) if k in tensors and tensors[k].shape != own[k].shape]
    kept = {k: v for k, v in tensors.items() if k not in fresh}
    # a model trained on RGB starts one of other channels: its input convolution adapted (timm's adapt_input_conv)
    report = apply_weights(model, kept, source=path, ignore_missing=["aux.", *fresh], in_channels=model.in_channels,
                           hint="[model] init_from takes a model of the same architecture (only the class count and "
                                "the input channels of RGB weights may differ).")  # fmt: skip
    return [*fresh, *report.missing]
