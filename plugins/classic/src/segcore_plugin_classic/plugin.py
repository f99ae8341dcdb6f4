"""Entry point of segcore-plugin-classic."""

from segcore import Registry, hookimpl

from .attention import CBAM, ECA, SE, CBAMConfig, ECAConfig, SEConfig, StripPooling, StripPoolingConfig
from .fcn_head import FCNHead, FCNHeadConfig
from .hrnet import HRNet, HRNetConfig
from .hrnetv2_head import HRNetV2Head, HRNetV2HeadConfig
from .losses import CrossEntropyLoss, CrossEntropyLossConfig


@hookimpl
def segcore_register(registry: Registry) -> None:
    registry.add(HRNet, name="hrnet", config=HRNetConfig, tiny=HRNetConfig(width=4, small=True, num_blocks=1))
    registry.add(HRNetV2Head, name="hrnetv2_head", config=HRNetV2HeadConfig, tiny=HRNetV2HeadConfig(channels=8))
    registry.add(FCNHead, name="fcn", config=FCNHeadConfig, tiny=FCNHeadConfig(channels=8))
    registry.add(CrossEntropyLoss, name="ce", config=CrossEntropyLossConfig)
    registry.add(SE, name="se", config=SEConfig)
    registry.add(ECA, name="eca", config=ECAConfig)
    registry.add(CBAM, name="cbam", config=CBAMConfig)
    registry.add(StripPooling, name="strip_pooling", config=StripPoolingConfig)
