"""A plain decoder: the FCN head.

FCN head (Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015), in the form of mmseg's
``FCNHead`` (``mmseg/models/decode_heads/fcn_head.py``): ``num_convs`` conv-BN-ReLU on one level, optionally
concatenated with the input and fused by one more conv. It is the usual auxiliary head (UperNet and DeepLabV3 train it
on stage 3 at weight 0.4) and the smallest complete head a pipeline can name. Until segcore 0.1 it lived in
segcore-plugin-classic; its config keys and weight names are unchanged.
"""

from __future__ import annotations

__all__ = ["FCNHead", "FCNHeadConfig"]

from collections.abc import Sequence

import torch
from attrs import field, frozen
from attrs.validators import ge, gt
from torch import Tensor, nn

from segcore.contracts.hookspecs import hookimpl
from segcore.contracts.registry import Registry
from segcore.contracts.stages import AttentionSlots, Decoder, FeatureInfo

MOVED_FROM = ("segcore-plugin-classic",)  # the distribution that provided "fcn" before it became a built-in


@frozen
class FCNHeadConfig:
    """Table [model.decoder] (or [model.aux.NAME.decoder]) when name = "fcn"."""

    channels: int = field(default=256, validator=gt(0))
    num_convs: int = field(default=1, validator=ge(0))
    kernel_size: int = field(default=3, validator=gt(0))
    concat_input: bool = False
    in_index: int = -1  # which level, of those the head is given


def _cbr(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FCNHead(Decoder):
    """features -> (B, channels, H/s, W/s) of the chosen level. Slot ``after_convs`` follows the conv stack."""

    attention_slots = ("after_convs",)

    def __init__(self, cfg: FCNHeadConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        level = in_features[cfg.in_index]
        self.in_index = cfg.in_index
        convs = [_cbr(level.channels if i == 0 else cfg.channels, cfg.channels, cfg.kernel_size) for i in range(cfg.num_convs)]
        self.convs = nn.Sequential(*convs)
        width = cfg.channels if cfg.num_convs else level.channels
        self.attention = attention("after_convs", width)
        self.concat = _cbr(level.channels + width, cfg.channels, cfg.kernel_size) if cfg.concat_input else None
        self.out_channels = cfg.channels if (cfg.concat_input or cfg.num_convs) else level.channels
        self.stride = level.stride

    def forward(self, features: list[Tensor]) -> Tensor:
        x = features[self.in_index]
        y = self.attention(self.convs(x))
        return self.concat(torch.cat([x, y], dim=1)) if self.concat is not None else y


@hookimpl
def segcore_register(registry: Registry) -> None:
    registry.add(FCNHead, name="fcn", config=FCNHeadConfig, tiny=FCNHeadConfig(channels=8), formerly=MOVED_FROM)
