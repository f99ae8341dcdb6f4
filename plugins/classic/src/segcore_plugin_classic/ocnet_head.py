"""OCNet head, Base-OC (Yuan et al., "OCNet: Object Context Network for Scene Parsing", arXiv:1809.00916), in the
form of openseg-group/openseg.pytorch ``lib/models/nets/ocnet.py`` (``BaseOCNet``) and
``lib/models/modules/base_oc_block.py`` (MIT; written from their structure, no code copied). BLOCKS 002.2.

conv3x3 (bias) -> BN -> ReLU to 512 channels; an object-context block (self-attention over all positions:
key and query each two conv1x1 (bias) -> BN -> ReLU to 256 channels, value conv1x1 to 256, similarity
softmax(q k / sqrt(256)), an output conv1x1 back to 512 initialised to zero); the context concatenated with its
input and fused by conv1x1 (bias) -> BN -> ReLU. Upstream's Dropout2d(0.05) and conv1x1 to the classes are the
model's classifier (set ``[model] dropout = 0.05``). Upstream resizes the logits with align_corners=True.

A single-level head: no upsampling place inside; the thesis' module goes on ``[model.attention.final_upsample]``.

``ocnet_dsn`` is upstream's deep-supervision head (``BaseOCNet.dsn``) for ``[model.aux.<name>] decoder``: conv3x3
(bias) -> BN -> ReLU to 512 channels on stage 3, no dropout; the training head's classifier (bias) follows, and
its logits reach the input size with align_corners=True, as upstream resizes ``x_dsn``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from attrs import field, frozen
from attrs.validators import gt
from torch import Tensor, nn

from segcore import AttentionSlots, Decoder, FeatureInfo, Resize
from segcore.layers import ConvBNAct


@frozen
class OCNetHeadConfig:
    """Table [model.decoder] when name = "ocnet"."""

    channels: int = field(default=512, validator=gt(0))
    key_channels: int = field(default=256, validator=gt(0))
    value_channels: int = field(default=256, validator=gt(0))
    in_index: int = -1  # which level, of those the head is given
    align_corners: bool = True  # of the final logits resize, as upstream


def _projection(cin: int, cout: int) -> nn.Sequential:
    """Two conv1x1 (bias) -> BN -> ReLU, the key and the query transforms (separate weights, as upstream)."""
    return nn.Sequential(ConvBNAct(cin, cout, bias=True), ConvBNAct(cout, cout, bias=True))


class ObjectContext(nn.Module):
    """x (B, C, h, w) -> context (B, C, h, w): every position a softmax-weighted sum of all positions' values."""

    def __init__(self, channels: int, key_channels: int, value_channels: int) -> None:
        super().__init__()
        self.key = _projection(channels, key_channels)
        self.query = _projection(channels, key_channels)
        self.value = nn.Conv2d(channels, value_channels, 1)
        self.out = nn.Conv2d(value_channels, channels, 1)
        nn.init.zeros_(self.out.weight)  # the block starts as "no context", as upstream
        nn.init.zeros_(self.out.bias)
        self.scale = key_channels**-0.5

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # (B, hw, Ck)
        key = self.key(x).flatten(2)  # (B, Ck, hw)
        value = self.value(x).flatten(2).transpose(1, 2)  # (B, hw, Cv)
        attn = torch.softmax(torch.bmm(query, key) * self.scale, dim=-1)  # (B, hw, hw)
        context = torch.bmm(attn, value).transpose(1, 2).reshape(b, -1, h, w)
        return self.out(context)


class OCNetHead(Decoder):
    """features -> (B, channels, H/s, W/s) of the chosen level (stride 8 on a dilated ResNet)."""

    def __init__(self, cfg: OCNetHeadConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        level = in_features[cfg.in_index]
        self.in_index = cfg.in_index
        self.pre = ConvBNAct(level.channels, cfg.channels, 3, bias=True)
        self.context = ObjectContext(cfg.channels, cfg.key_channels, cfg.value_channels)
        self.fuse = ConvBNAct(2 * cfg.channels, cfg.channels, 1, bias=True)
        self.out_channels, self.stride = cfg.channels, level.stride
        self.final_resize = Resize("bilinear", align_corners=cfg.align_corners)

    def forward(self, features: list[Tensor]) -> Tensor:
        """(B, C_i, H/s_i, W/s_i) per level -> (B, channels, H/s, W/s) of level ``in_index``."""
        x = self.pre(features[self.in_index])
        return self.fuse(torch.cat([self.context(x), x], dim=1))


@frozen
class OCNetDSNConfig:
    """Table [model.aux.NAME.decoder] when name = "ocnet_dsn"."""

    channels: int = field(default=512, validator=gt(0))
    in_index: int = -1  # which level, of those the head is given
    align_corners: bool = True  # of the logits resize, as upstream


class OCNetDSNHead(Decoder):
    """features -> (B, channels, H/s, W/s) of the chosen level: conv3x3 (bias) -> BN -> ReLU (openseg's ``dsn``)."""

    def __init__(self, cfg: OCNetDSNConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        level = in_features[cfg.in_index]
        self.in_index = cfg.in_index
        self.conv = ConvBNAct(level.channels, cfg.channels, 3, bias=True)
        self.out_channels, self.stride = cfg.channels, level.stride
        self.final_resize = Resize("bilinear", align_corners=cfg.align_corners)

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.conv(features[self.in_index])
