"""Entry point of segcore-plugin-early-fusion: the reverse-HRNet decoder and the paper's presets."""

from segcore import Registry, hookimpl

from .presets import presets
from .reverse_hrnet import ReverseHRNetConfig, ReverseHRNetDecoder


@hookimpl
def segcore_register(registry: Registry) -> None:
    registry.add(ReverseHRNetDecoder, name="reverse_hrnet", config=ReverseHRNetConfig,
                 tiny=ReverseHRNetConfig(width=4, num_blocks=1, num_modules=(1, 1, 1)))  # fmt: skip
    for name, table in presets().items():
        registry.add_preset(name, table)
