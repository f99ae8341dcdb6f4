"""Entry point of segcore-plugin-classic.

The plain FCN head (`fcn`) and cross-entropy (`ce`) are core built-ins since segcore 0.1 (segcore.builtin); `focal`
and `dice` came here from segcore-plugin-hrnet-fusion (generic losses live in classic).
"""

from segcore import Registry, hookimpl

from .attention import CBAM, ECA, SE, CBAMConfig, ECAConfig, SEConfig, StripPooling, StripPoolingConfig
from .context import DAPPMConfig, DAPPMEnhancer, PPMConfig, PPMEnhancer
from .dnl import DNL, DNLConfig
from .hrnet import HRNet, HRNetConfig
from .hrnetv2_head import HRNetV2Head, HRNetV2HeadConfig
from .losses import DiceLoss, DiceLossConfig, FocalLoss, FocalLossConfig
from .aspp_head import ASPPHead, ASPPHeadConfig
from .ocnet_head import OCNetDSNConfig, OCNetDSNHead, OCNetHead, OCNetHeadConfig
from .ohem import OhemCrossEntropyConfig, OhemCrossEntropyLoss
from .psp_head import PSPHead, PSPHeadConfig
from .uper_head import UperHead, UperHeadConfig


@hookimpl
def segcore_register(registry: Registry) -> None:
    registry.add(HRNet, name="hrnet", config=HRNetConfig, tiny=HRNetConfig(width=4, small=True, num_blocks=1))
    registry.add(HRNetV2Head, name="hrnetv2_head", config=HRNetV2HeadConfig, tiny=HRNetV2HeadConfig(channels=8))
    registry.add(SE, name="se", config=SEConfig)
    registry.add(ECA, name="eca", config=ECAConfig)
    registry.add(CBAM, name="cbam", config=CBAMConfig)
    registry.add(StripPooling, name="strip_pooling", config=StripPoolingConfig)
    registry.add(DNL, name="dnl", config=DNLConfig)
    registry.add(PPMEnhancer, name="ppm", config=PPMConfig, tiny=PPMConfig(channels=8))
    registry.add(DAPPMEnhancer, name="dappm", config=DAPPMConfig, tiny=DAPPMConfig(branch_channels=4, channels=8))
    registry.add(ASPPHead, name="aspp", config=ASPPHeadConfig, tiny=ASPPHeadConfig(channels=8, dilations=(1, 2, 3)))
    registry.add(UperHead, name="uper", config=UperHeadConfig, tiny=UperHeadConfig(channels=8))
    registry.add(PSPHead, name="psp", config=PSPHeadConfig, tiny=PSPHeadConfig(channels=8))
    registry.add(OCNetHead, name="ocnet", config=OCNetHeadConfig, tiny=OCNetHeadConfig(channels=8, key_channels=4, value_channels=4))
    registry.add(OCNetDSNHead, name="ocnet_dsn", config=OCNetDSNConfig, tiny=OCNetDSNConfig(channels=8))
    registry.add(OhemCrossEntropyLoss, name="ohem_ce", config=OhemCrossEntropyConfig, tiny=OhemCrossEntropyConfig(min_kept=16))
    moved = ("segcore-plugin-hrnet-fusion",)  # model and run folders saved with it still load
    registry.add(FocalLoss, name="focal", config=FocalLossConfig, formerly=moved)
    registry.add(DiceLoss, name="dice", config=DiceLossConfig, formerly=moved)
