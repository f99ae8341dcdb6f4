"""The embedding head of pixel-wise contrastive learning (seed 003 sec. 2.3; Wang et al., "Exploring Cross-Image
Pixel Contrast for Semantic Segmentation", ICCV 2021, arXiv:2101.11939).

Written for segcore from the seed's text ("one 1x1 convolution", training only) and tfzhou/ContrastiveSeg
``lib/models/modules/projection.py`` (MIT), whose default ``convmlp`` form (conv1x1-BN-ReLU-conv1x1) is the
option ``kind = "convmlp"``. It is a Decoder so that it can sit in a training-only head:

    [model.aux.embedding]
    source = "decoder"        # reads the decoder's output map (128 channels at 1/4 for the FPN)
    output = "extra"          # its map goes to ModelOutput.extras["embedding"], for the pixel_contrast loss
    decoder = { name = "pixel_embed", dim = 256 }

Such heads run only in training and are absent from the inference model, its weights and exports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from attrs import field, frozen
from attrs.validators import gt
from torch import Tensor, nn

from segcore import AttentionSlots, Decoder, FeatureInfo


@frozen
class EmbedHeadConfig:
    """Table [model.aux.NAME.decoder] when name = "pixel_embed" ("embed" before 0.1, still accepted with a warning)."""

    dim: int = field(default=256, validator=gt(0))  # ContrastiveSeg's proj_dim
    kind: Literal["linear", "convmlp"] = "linear"  # the seed's single conv1x1, or ContrastiveSeg's default


class EmbedHead(Decoder):
    """features -> (B, dim, h, w) of the last given level, unit length over channels at every pixel."""

    def __init__(self, cfg: EmbedHeadConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        c = in_features[-1].channels
        if cfg.kind == "linear":
            self.proj = nn.Conv2d(c, cfg.dim, 1)
        else:
            self.proj = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                                      nn.Conv2d(c, cfg.dim, 1))  # fmt: skip
        self.out_channels = cfg.dim
        self.stride = in_features[-1].stride

    def forward(self, features: list[Tensor]) -> Tensor:
        return F.normalize(self.proj(features[-1]), p=2, dim=1)
