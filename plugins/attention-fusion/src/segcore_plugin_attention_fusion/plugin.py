"""Entry point of segcore-plugin-attention-fusion."""

from segcore import Registry, hookimpl

from .afu import AFU, AFUConfig


@hookimpl
def segcore_register(registry: Registry) -> None:
    registry.add(AFU, name="afu", config=AFUConfig, tiny=AFUConfig(pool="avg+max"))
