"""Entry point of segcore-plugin-frm."""

from segcore import Registry, hookimpl

from .contrast import PixelContrastLoss, PixelContrastLossConfig
from .embed import EmbedHead, EmbedHeadConfig
from .fpn import FPNDecoder, FPNDecoderConfig
from .frm import FRM, FRMConfig
from .van import VAN, VANConfig

TINY_VAN = VANConfig(dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), drop_path_rate=0.0)


@hookimpl
def segcore_register(registry: Registry) -> None:
    registry.add(VAN, name="van", config=VANConfig, tiny=TINY_VAN)
    registry.add(FRM, name="frm", config=FRMConfig, tiny=FRMConfig(channels=16, ffn_channels=8))
    # "fpn" and "embed" until 0.1: too generic for one plugin to own; kept as deprecated aliases
    registry.add(FPNDecoder, name="sfnet_fpn", config=FPNDecoderConfig, tiny=FPNDecoderConfig(channels=32), aliases=["fpn"])
    registry.add(EmbedHead, name="pixel_embed", config=EmbedHeadConfig, tiny=EmbedHeadConfig(dim=8), aliases=["embed"])
    registry.add(PixelContrastLoss, name="pixel_contrast", config=PixelContrastLossConfig,
                 tiny=PixelContrastLossConfig(max_views=2))  # fmt: skip
