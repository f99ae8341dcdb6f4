"""A backbone over any timm model created with ``features_only=True``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn.functional as F
import attrs
from attrs import field, frozen
from torch import Tensor

from segcore.errors import ConfigError, did_you_mean
from segcore.contracts.hookspecs import hookimpl
from segcore.layers.basic import building_on_meta
from segcore.model.pretrained import load_timm_checkpoint, timm_weights_file
from segcore.contracts.registry import Registry
from segcore.contracts.stages import Backbone, FeatureInfo


def _timm_model_name(_: object, attribute: object, value: str) -> None:
    import timm

    if not timm.is_model(value):
        close = did_you_mean(value, timm.list_models(value.split("_")[0] + "*") or timm.list_models())
        raise ValueError(
            f"model_name: unknown timm model {value!r}{close}; `python -c \"import timm; print(timm.list_models('{value[:4]}*'))\"` lists them"
        )


@frozen
class TimmBackboneConfig:
    """Table [model.backbone] when name = "timm".

    For timm's HRNets the default is their four branch outputs (``feature_location=""``, levels 1-4: W, 2W,
    4W, 8W channels at strides 4-32), not timm's classification "incre" features. Models with a patch embedding
    (Swin, ...) are created with ``strict_img_size = false`` unless ``kwargs`` says otherwise, so any size runs (also
    with ``img_size``, which then only sets the window grid the weights were made for).
    """

    model_name: str = field(validator=_timm_model_name)
    pretrained: bool = False
    out_indices: tuple[int, ...] | None = None
    # pad the input (bottom/right) to a multiple of this many pixels and crop the maps back. None: only where the
    # model needs it (timm's HRNet fuses by fixed x2 upsampling: the coarsest stride; patch embeddings: the patch)
    pad_to_stride: bool | None = None
    drop_path_rate: float | None = None
    # a local file of timm weights for model_name (.safetensors, .pth), loaded as timm loads its pretrained ones
    # (classifier dropped, an RGB input convolution adapted to [model] in_channels); instead of pretrained = true
    weights: str | None = None
    kwargs: Mapping[str, Any] = field(factory=dict)  # more timm.create_model arguments


def _create(cfg: TimmBackboneConfig, kwargs: dict[str, Any]):
    import timm

    if kwargs.get("checkpoint_path"):  # read here, safely, into the feature model (timm's own load unpickles, and
        rest = {k: v for k, v in kwargs.items() if k != "checkpoint_path"}  # refuses the classifier's keys)
        model = _create(cfg, rest)
        if not building_on_meta():
            load_timm_checkpoint(model, kwargs["checkpoint_path"])
        return model
    if building_on_meta():  # counting: the architecture only, nothing to download
        cfg = attrs.evolve(cfg, pretrained=False, weights=None)
    if cfg.weights is not None:  # timm's own pretrained loading from the file: in_chans adaptation, head filtering
        path = Path(cfg.weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"[model.backbone] weights: no such file {str(path)!r}; give a timm state dict of "
                              f"{cfg.model_name!r} (.safetensors or .pth)")  # fmt: skip
        cfg = attrs.evolve(cfg, pretrained=True)
        kwargs = {**kwargs, "pretrained_cfg_overlay": {"file": str(path)}}
    elif cfg.pretrained:  # from the cache, or a fast ConfigError: never a minute of retries against an unreachable Hub
        kwargs = {**kwargs, "pretrained_cfg_overlay": {"file": str(timm_weights_file(cfg.model_name, what="model.backbone.pretrained"))}}

    try:
        if "strict_img_size" in kwargs:  # the user's choice (with img_size = [H, W], true fixes the input size)
            return timm.create_model(cfg.model_name, pretrained=cfg.pretrained, features_only=True, **kwargs)
        try:  # patch-embedding models accept it and then run any size; the others refuse the keyword at once
            return timm.create_model(cfg.model_name, pretrained=cfg.pretrained, features_only=True, strict_img_size=False, **kwargs)
        except TypeError as exc:
            if "strict_img_size" not in str(exc):
                raise
            return timm.create_model(cfg.model_name, pretrained=cfg.pretrained, features_only=True, **kwargs)
    except (TypeError, IndexError, ValueError, AssertionError) as exc:
        raise ConfigError(f"timm.create_model({cfg.model_name!r}, features_only=True, **{kwargs}) failed: {exc}") from exc


class TimmBackbone(Backbone):
    """Feature maps of a timm model, NCHW, finest first; any input size.

    timm's HRNet adds upsampled branches by a fixed scale factor and raises unless H and W divide by 32 (360x480
    fails): the input is zero-padded (after normalisation: the mean colour) at the bottom and right to a multiple
    of the coarsest stride and each map is cropped to ceil(H / stride). Patch embeddings need a multiple of the
    patch size. Other models run as they are. Maps timm returns channels-last (Swin: NHWC) are permuted to NCHW.
    The size arithmetic has no Python branch on the input size, so torch.export sees one graph for every size.
    """

    def __init__(self, cfg: TimmBackboneConfig, *, in_channels: int = 3) -> None:
        super().__init__()
        kwargs = dict(cfg.kwargs)
        if "in_chans" in kwargs:
            raise ConfigError(f"kwargs.in_chans = {kwargs['in_chans']}: the input channels are [model] in_channels "
                              "(the model's normalisation has one mean and std per channel); remove in_chans from kwargs")  # fmt: skip
        if in_channels != 3:  # with pretrained weights timm adapts the RGB stem (adapt_input_conv)
            kwargs["in_chans"] = in_channels
        out_indices = cfg.out_indices
        hrnet = cfg.model_name.startswith("hrnet")
        if hrnet and "feature_location" not in kwargs:
            kwargs["feature_location"] = ""
            out_indices = out_indices or (1, 2, 3, 4)
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        if cfg.drop_path_rate is not None:
            kwargs["drop_path_rate"] = cfg.drop_path_rate
        self.model = _create(cfg, kwargs)
        channels, strides = self.model.feature_info.channels(), self.model.feature_info.reduction()
        self.feature_info = tuple(FeatureInfo(c, s) for c, s in zip(channels, strides))
        fmt = getattr(self.model, "output_fmt", "NCHW")
        self.channels_last_maps = str(getattr(fmt, "value", fmt)) == "NHWC"
        patch = any(type(m).__name__ == "PatchEmbed" for m in self.model.modules())
        if cfg.pad_to_stride is None:
            self.pad_to = max(strides) if hrnet else (min(strides) if patch else 1)
        else:
            self.pad_to = max(strides) if cfg.pad_to_stride else 1

    def forward(self, image: Tensor) -> list[Tensor]:
        if self.pad_to > 1:
            h, w = image.shape[-2:]
            image = F.pad(image, (0, (self.pad_to - w % self.pad_to) % self.pad_to, 0, (self.pad_to - h % self.pad_to) % self.pad_to))
        maps = list(self.model(image))
        if self.channels_last_maps:
            maps = [m.permute(0, 3, 1, 2) for m in maps]
        if self.pad_to > 1:
            maps = [m[..., : (h + i.stride - 1) // i.stride, : (w + i.stride - 1) // i.stride] for m, i in zip(maps, self.feature_info)]
        return maps


@hookimpl
def segcore_register(registry: Registry) -> None:
    # a name timm has (the contract tests build it), made without its validator: registering imports no timm (and
    # through it torchvision's model zoo, as long to import as torch); validators are switched back on only if they
    # were on
    was_disabled = attrs.validators.get_disabled()
    attrs.validators.set_disabled(True)
    try:
        tiny = TimmBackboneConfig(model_name="test_efficientnet", out_indices=(1, 2, 3, 4))
    finally:
        attrs.validators.set_disabled(was_disabled)
    registry.add(TimmBackbone, name="timm", config=TimmBackboneConfig, tiny=tiny)
