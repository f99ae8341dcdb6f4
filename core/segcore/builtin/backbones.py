"""A backbone over any timm model created with ``features_only=True``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from attrs import field, frozen
from torch import Tensor

from ..errors import ConfigError, did_you_mean
from ..hookspecs import hookimpl
from ..registry import Registry
from ..stages import Backbone, FeatureInfo


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
    4W, 8W channels at strides 4-32), not timm's classification "incre" features.
    """

    model_name: str = field(validator=_timm_model_name)
    pretrained: bool = False
    out_indices: tuple[int, ...] | None = None
    pad_to_stride: bool = True  # pad the input to a multiple of the coarsest stride, crop the maps back
    drop_path_rate: float | None = None
    kwargs: Mapping[str, Any] = field(factory=dict)  # more timm.create_model arguments


class TimmBackbone(Backbone):
    """Feature maps of a timm model; any input size.

    timm's HRNet adds upsampled branches by a fixed scale factor and raises unless H and W divide by 32
    (360x480 fails). With ``pad_to_stride`` the input is zero-padded (after normalisation: the mean colour) at
    the bottom and right to a multiple of the coarsest stride and each map is cropped to ceil(H / stride).
    """

    def __init__(self, cfg: TimmBackboneConfig) -> None:
        super().__init__()
        import timm

        kwargs = dict(cfg.kwargs)
        out_indices = cfg.out_indices
        if cfg.model_name.startswith("hrnet") and "feature_location" not in kwargs:
            kwargs["feature_location"] = ""
            out_indices = out_indices or (1, 2, 3, 4)
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        if cfg.drop_path_rate is not None:
            kwargs["drop_path_rate"] = cfg.drop_path_rate
        try:
            self.model = timm.create_model(cfg.model_name, pretrained=cfg.pretrained, features_only=True, **kwargs)
        except (TypeError, IndexError, ValueError, AssertionError) as exc:
            raise ConfigError(f"timm.create_model({cfg.model_name!r}, features_only=True, **{kwargs}) failed: {exc}") from exc
        except (OSError, RuntimeError) as exc:
            if not cfg.pretrained:
                raise
            raise ConfigError(
                f"could not fetch pretrained weights for {cfg.model_name!r}: {exc}. Set pretrained = false, or fill "
                "the Hugging Face cache on a machine with network and run with HF_HUB_OFFLINE=1."
            ) from exc
        channels, strides = self.model.feature_info.channels(), self.model.feature_info.reduction()
        self.feature_info = tuple(FeatureInfo(c, s) for c, s in zip(channels, strides))
        self.pad_to = max(strides) if cfg.pad_to_stride else 1

    def forward(self, image: Tensor) -> list[Tensor]:
        h, w = image.shape[-2:]
        pad_h, pad_w = -h % self.pad_to, -w % self.pad_to
        if not pad_h and not pad_w:
            return list(self.model(image))
        maps = self.model(F.pad(image, (0, pad_w, 0, pad_h)))
        return [m[..., : math.ceil(h / i.stride), : math.ceil(w / i.stride)] for m, i in zip(maps, self.feature_info)]


@hookimpl
def segcore_register(registry: Registry) -> None:
    registry.add(
        TimmBackbone, name="timm", config=TimmBackboneConfig,
        tiny=TimmBackboneConfig(model_name="test_efficientnet", out_indices=(1, 2, 3, 4)),
    )  # fmt: skip
