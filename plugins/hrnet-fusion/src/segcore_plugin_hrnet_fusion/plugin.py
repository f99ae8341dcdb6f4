"""Entry point of segcore-plugin-hrnet-fusion: its components and the paper's presets (its pipelines' focal and dice
losses are segcore-plugin-classic's, a declared dependency)."""

from segcore import Registry, hookimpl

from .bfem import BFEM, BFEMConfig
from .blocks import AAM, CCSF, AAMConfig, CCSFConfig
from .fusm import FUSM, FUSMConfig
from .presets import presets


@hookimpl
def segcore_register(registry: Registry) -> None:
    registry.add(BFEM, name="bfem", config=BFEMConfig, tiny=BFEMConfig(depths=(1, 1, 1)))
    registry.add(FUSM, name="fusm", config=FUSMConfig, tiny=FUSMConfig(ccsf=True, channels=8))
    registry.add(AAM, name="aam", config=AAMConfig)
    registry.add(CCSF, name="ccsf", config=CCSFConfig)
    for name, table in presets().items():
        registry.add_preset(name, table)
