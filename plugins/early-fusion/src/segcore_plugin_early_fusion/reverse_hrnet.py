"""Reverse-HRNet decoder of "Early Fusion of Features for Semantic Segmentation" (Gupta, Krishnamurthy, Singh; the
seed paper 001, no arXiv id or public code known: BLOCKS.md 001).

An encoder's four maps (strides 4-32) enter at once, each through a 1x1 adapter to an HRNet stream width (the
"early fusion"), and HRNet modules with full multi-resolution exchange then run HRNet-W48's stages backwards:
3 modules on 4 streams, 4 on 3, 1 on 2, the last module of each stage giving one stream fewer (its fusion still
reads every input, so the dropped coarsest stream is fused upward). The 1/4 stream that is left goes through a
conv1x1-BN-ReLU head; the model's classifier and its bilinear resize to the input follow. The ``half_stream``
variant adds a fifth, 1/2-resolution stream fed by the encoder's stride-2 stem tap and runs fewer modules per
stage (1, 2, 2, 1 on 5, 4, 3, 2 streams; BLOCKS.md 001.4).

Written from the seed's text and the HRNet structure of HRNet/HRNet-Semantic-Segmentation
``lib/models/seg_hrnet.py`` (MIT) through `segcore.layers.HRModule` (every fusion resizes to the exact size of the
stream it adds to, so 360x480, 97x131 and CamVid's 720x960 work). Choices the seed leaves open ([AMBIGUOUS] in
BLOCKS.md), all configurable: adapters are conv1x1 (no bias) + BN + ReLU (HRNet's transition style); the head is
the simple conv1x1-BN-ReLU (no bias: a BN follows) instead of a mirrored stage 1 or an HRNetV2 concat head; the
1/2 stream is W/2 wide. Initialisation: HRNet official from scratch (conv N(0, 0.001), BN 1/0; BLOCKS.md 0.4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from attrs import field, frozen
from attrs.validators import gt, optional
from torch import Tensor, nn

from segcore import AttentionSlots, ContractError, Decoder, FeatureInfo
from segcore.layers import ConvBNAct, HRModule, init_hrnet_weights

# modules per stage, most streams first (BLOCKS.md 001.3: HRNet-W48's 1, 4, 3 reversed; 001.4: "reduced")
DEFAULT_MODULES = {4: (3, 4, 1), 5: (1, 2, 2, 1)}


def _modules_fit(cfg: "ReverseHRNetConfig", attribute: Any, value: tuple[int, ...] | None) -> None:
    if value is None:
        return
    streams = 5 if cfg.half_stream else 4
    if len(value) != streams - 1 or min(value) < 1:
        raise ValueError(
            f"num_modules: one count >= 1 per stage, {streams - 1} stages for {streams} streams "
            f"({streams} -> 1 streams, most streams first), got {list(value)}; the default is {list(DEFAULT_MODULES[streams])}"
        )


def _half_width_needs_half_stream(cfg: "ReverseHRNetConfig", attribute: Any, value: int | None) -> None:
    if value is not None and not cfg.half_stream:
        raise ValueError("half_width is the width of the 1/2 stream: set half_stream = true too, or remove half_width")


@frozen
class ReverseHRNetConfig:
    """Table [model.decoder] when name = "reverse_hrnet".

    ``width`` W: streams W, 2W, 4W, 8W at strides 4-32 (18, 32, 48: the widths of HRNetV2-W18/W32/W48).
    ``half_stream``: a fifth stream at stride 2 (the encoder's stem tap), ``half_width`` wide (default W // 2).
    ``num_modules``: HRNet modules per stage, most streams first (default 3, 4, 1; with ``half_stream`` 1, 2, 2, 1).
    ``num_blocks``: BasicBlocks per stream in every module (HRNet: 4).
    """

    width: int = field(default=48, validator=gt(0))
    half_stream: bool = False
    half_width: int | None = field(default=None, validator=[optional(gt(0)), _half_width_needs_half_stream])
    num_modules: tuple[int, ...] | None = field(default=None, validator=_modules_fit)
    num_blocks: int = field(default=4, validator=gt(0))
    resize_mode: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    align_corners: bool = False

    @property
    def widths(self) -> tuple[int, ...]:
        """Stream widths, finest first."""
        four = tuple(self.width * 2**i for i in range(4))
        return ((self.half_width or max(self.width // 2, 1)),) + four if self.half_stream else four

    @property
    def modules(self) -> tuple[int, ...]:
        return self.num_modules or DEFAULT_MODULES[len(self.widths)]


class ReverseHRNetDecoder(Decoder):
    """features (finest first) -> (B, W', ceil(H / s), ceil(W / s)) with W' and s the finest stream's width and stride.

    Reads the last 4 maps (5 with ``half_stream``), which must have strides s, 2s, 4s, 8s (, 16s): with
    ResNet-50 taps 0-4 the 4-stream decoder ignores the stride-2 tap and the 5-stream one starts from it.
    """

    def __init__(self, cfg: ReverseHRNetConfig, *, in_features: Sequence[FeatureInfo], attention: AttentionSlots) -> None:
        super().__init__()
        widths = cfg.widths
        n = len(widths)
        self.first = _check_levels(in_features, n, cfg.half_stream)
        used = in_features[self.first:]
        self.adapters = nn.ModuleList(ConvBNAct(i.channels, w, 1) for i, w in zip(used, widths))
        fuse = {"mode": cfg.resize_mode, "align_corners": cfg.align_corners}
        self.stages = nn.ModuleList()
        for k, count in enumerate(cfg.modules):
            streams = widths[: n - k]
            blocks = (cfg.num_blocks,) * len(streams)
            self.stages.append(nn.Sequential(*(
                HRModule(streams, blocks, num_outputs=len(streams) - 1 if m == count - 1 else None, **fuse)
                for m in range(count)
            )))  # fmt: skip
        self.head = ConvBNAct(widths[0], widths[0], 1)
        init_hrnet_weights(self.adapters)
        init_hrnet_weights(self.head)
        self.out_channels = widths[0]
        self.stride = used[0].stride

    def forward(self, features: list[Tensor]) -> Tensor:
        xs = [adapter(f) for adapter, f in zip(self.adapters, features[self.first:])]
        for stage in self.stages:
            xs = stage(xs)
        return self.head(xs[0])


def _check_levels(info: Sequence[FeatureInfo], n: int, half_stream: bool) -> int:
    """Index of the first map the decoder reads (the last *n* maps), after checking their strides double."""
    strides = [i.stride for i in info]
    used = strides[-n:]
    if len(info) < n or any(b != 2 * a for a, b in zip(used, used[1:])):
        need = "5 maps at strides 2, 4, 8, 16, 32 (half_stream = true)" if half_stream else "4 maps at strides 4, 8, 16, 32"
        fix = "out_indices = [0, 1, 2, 3, 4]" if half_stream else "out_indices = [1, 2, 3, 4] (or [0, 1, 2, 3, 4])"
        raise ContractError(
            f"reverse_hrnet reads its last {n} input maps, whose strides must double from one to the next ({need} for "
            f"a ResNet); got {len(info)} maps at strides {tuple(strides)}. For timm's ResNets set [model.backbone] {fix}."
        )
    return len(info) - n
