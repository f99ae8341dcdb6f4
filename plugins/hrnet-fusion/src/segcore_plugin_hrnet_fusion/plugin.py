"""Entry point of segcore-plugin-hrnet-fusion: its components and the paper's presets."""

from segcore import Registry, hookimpl

from .bfem import BFEM, BFEMConfig
from .blocks import AAM, CCSF, AAMConfig, CCSFConfig
from .fusm import FUSM, FUSMConfig
from .losses import DiceLoss, DiceLossConfig, FocalLoss, FocalLossConfig
from .presets import presets


@hookimpl
def segcore_register(registry: Registry) -> None:
    registry.add(BFEM, name="bfem", config=BFEMConfig, tiny=BFEMConfig(depths=(1, 1, 1)))
    registry.add(FUSM, name="fusm", config=FUSMConfig, tiny=FUSMConfig(ccsf=True, channels=8))
    registry.add(AAM, name="aam", config=AAMConfig)
    registry.add(CCSF, name="ccsf", config=CCSFConfig)
    registry.add(FocalLoss, name="focal", config=FocalLossConfig)
    registry.add(DiceLoss, name="dice", config=DiceLossConfig)
    for name, table in presets().items():
        registry.add_preset(name, table)
