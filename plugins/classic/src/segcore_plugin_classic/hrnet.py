"""HRNetV2 backbone (Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition",
arXiv:1908.07919): W18 / W32 / W48 and timm's W18-small layout, any input size.

Written from the structure of HRNet/HRNet-Semantic-Segmentation ``lib/models/seg_hrnet.py`` (MIT) and timm
``timm/models/hrnet.py`` (Apache-2.0), with the blocks of `segcore.layers` (BLOCKS.md 000.1). Changed from timm:
every fusion resizes to the exact size of the stream it is added to (bilinear, align_corners False by default;
HRNet official and mmseg do the same, the seed-000 authors use align_corners True), so 360x480, 97x131 and
720x960 need no padding; only the four streams are built (no classification head). timm's ImageNet weights load
through `timm_to_segcore` (stem names differ, classification-head keys are dropped, the rest is key for key).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import torch
from attrs import field, frozen
from attrs.validators import gt, optional
from torch import Tensor, nn

from segcore import Backbone, ConfigError, FeatureInfo, adapt_input_channels, timm_weights_file
from segcore.layers import ConvBNAct, HRModule, Transition, init_hrnet_weights
from segcore.layers import make_blocks

# timm model names with ImageNet weights for (width, small)
TIMM_NAMES = {(18, False): "hrnet_w18", (32, False): "hrnet_w32", (48, False): "hrnet_w48", (16, True): "hrnet_w18_small"}
_HEAD_KEYS = re.compile(r"^(incre_modules|downsamp_modules|final_layer|classifier)\.")
_STEM_KEYS = {"conv1.": "stem.0.conv.", "bn1.": "stem.0.bn.", "conv2.": "stem.1.conv.", "bn2.": "stem.1.bn."}


def _pretrained_available(cfg: "HRNetConfig", attribute: Any, value: bool) -> None:
    if value and (cfg.width, cfg.small) not in TIMM_NAMES:
        have = ", ".join(f"width = {w}" + (", small = true" if s else "") for w, s in TIMM_NAMES)
        raise ValueError(f"pretrained: timm has ImageNet HRNet weights only for {have}; got width = {cfg.width}"
                         f"{', small = true' if cfg.small else ''}. Set pretrained = false, or give weights = <file>")  # fmt: skip


@frozen
class HRNetConfig:
    """Table [model.backbone] when name = "hrnet".

    ``width`` W gives streams W, 2W, 4W, 8W (18, 32, 48: HRNetV2-W18/W32/W48). ``small``: timm's
    ``hrnet_w18_small`` layout (one stage-1 bottleneck of 2W planes, one module per stage, 2 blocks per stream);
    that model's streams are 16/32/64/128, so timm's W18-small is ``width = 16, small = true``.
    ``num_blocks`` / ``num_modules`` override the blocks per stream and the modules of stages 2-4.
    ``pretrained``: timm's ImageNet weights (Hugging Face Hub or its local cache); ``pretrained_tag`` picks a
    timm tag (e.g. "ms_in1k" for W18, whose default is "ms_aug_in1k"); ``weights``: a local timm HRNet state dict
    (.safetensors, or a .pth/.bin of tensors) instead.
    """

    width: int = field(default=48, validator=gt(0))
    small: bool = False
    num_blocks: int | None = field(default=None, validator=optional(gt(0)))
    num_modules: tuple[int, int, int] | None = None
    pretrained: bool = field(default=False, validator=_pretrained_available)
    pretrained_tag: str | None = None
    weights: str | None = None
    resize_mode: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    align_corners: bool = False


def timm_to_segcore(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A timm ``HighResolutionNet`` state dict -> ours: stem conv1/bn1/conv2/bn2 renamed, the classification head
    (incre_modules, downsamp_modules, final_layer, classifier) dropped; layer1, transitions and stages unchanged."""
    out = {}
    for key, value in state_dict.items():
        if _HEAD_KEYS.match(key):
            continue
        for old, new in _STEM_KEYS.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


class HRNet(Backbone):
    """image (B, C, H, W) -> 4 maps (B, W * 2^i, ceil(H / 2^(i+2)), ...) for i = 0..3, strides 4, 8, 16, 32.

    ``in_channels`` (C, from ``[model] in_channels``): the stem's first convolution takes them; timm's RGB weights
    are adapted to them (`segcore.adapt_input_channels`)."""

    def __init__(self, cfg: HRNetConfig, *, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        w = cfg.width
        planes, stage1_blocks = (2 * w, 1) if cfg.small else (64, 4)
        blocks = cfg.num_blocks or (2 if cfg.small else 4)
        modules = cfg.num_modules or ((1, 1, 1) if cfg.small else (1, 4, 3))
        fuse = {"mode": cfg.resize_mode, "align_corners": cfg.align_corners}
        widths = [w * 2**i for i in range(4)]
        self.stem = nn.Sequential(ConvBNAct(in_channels, 64, 3, stride=2), ConvBNAct(64, 64, 3, stride=2))
        self.layer1 = make_blocks("bottleneck", 64, planes, stage1_blocks)
        init_hrnet_weights(self)
        self.transition1 = Transition((planes * 4,), widths[:2])
        self.stage2 = nn.Sequential(*(HRModule(widths[:2], (blocks,) * 2, **fuse) for _ in range(modules[0])))
        self.transition2 = Transition(widths[:2], widths[:3])
        self.stage3 = nn.Sequential(*(HRModule(widths[:3], (blocks,) * 3, **fuse) for _ in range(modules[1])))
        self.transition3 = Transition(widths[:3], widths)
        self.stage4 = nn.Sequential(*(HRModule(widths, (blocks,) * 4, **fuse) for _ in range(modules[2])))
        self.feature_info = tuple(FeatureInfo(c, 4 * 2**i) for i, c in enumerate(widths))
        # built on the meta device (`segcore check`, counting) there is nothing to load the weights into
        if (cfg.pretrained or cfg.weights) and not self.stem[0].conv.weight.is_meta:
            self.load_timm(_timm_state_dict(cfg))

    def load_timm(self, state_dict: dict[str, Tensor]) -> None:
        """Load a timm HRNet state dict of the same layout (strict after the key mapping; an RGB stem adapted to
        ``in_channels``)."""
        mapped = adapt_input_channels(timm_to_segcore(state_dict), self.state_dict(), self.in_channels)
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"the timm weights do not fit this HRNet (width {self.feature_info[0].channels}): "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). "
                "Check width and small against the weights' model."
            )

    def forward(self, image: Tensor) -> list[Tensor]:
        x = self.layer1(self.stem(image))
        xs = self.stage2(self.transition1([x]))
        xs = self.stage3(self.transition2(xs))
        return self.stage4(self.transition3(xs))


def _timm_state_dict(cfg: HRNetConfig) -> dict[str, Tensor]:
    """The state dict to load: ``weights`` (a local file) or timm's ImageNet weights from the Hub cache or the Hub."""
    if cfg.weights:
        path = Path(cfg.weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"weights: no such file {str(path)!r}; give a timm HRNet state dict (.safetensors or .pth)")
        return _load_file(path)
    name = TIMM_NAMES[(cfg.width, cfg.small)] + (f".{cfg.pretrained_tag}" if cfg.pretrained_tag else "")
    return _load_file(timm_weights_file(name, what="model.backbone.pretrained"))


def _load_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)
