"""HRNet's building blocks: residual blocks, the multi-resolution module and the stream-adding transition.

HRNet (Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition", arXiv:1908.07919).
Written from the structure of HRNet/HRNet-Semantic-Segmentation ``lib/models/seg_hrnet.py`` (MIT) and
timm ``timm/models/hrnet.py`` (Apache-2.0; BLOCKS.md 000.1). Changed: every fusion resizes a lower-resolution
stream to the exact size of the stream it is added to (mode and align_corners configurable; timm upsamples by a
fixed scale factor and fails unless H and W divide by 32), and a module may output fewer streams than it reads
(the last module of a reverse-HRNet stage, BLOCKS.md 001.3). Child names follow timm's, so timm's HRNet state
dicts load key for key into `HRModule` and `Transition`.

Initialisation (BLOCKS.md 0.4, HRNet official from scratch): conv weights N(0, 0.001), BN weight 1 and bias 0;
BN momentum 0.1 (BLOCKS.md 000.1).
"""

from __future__ import annotations

__all__ = ["BasicBlock", "Bottleneck", "HRModule", "Transition", "init_hrnet_weights"]

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from segcore.layers.basic import resize_to

BN_MOMENTUM = 0.1


def init_hrnet_weights(module: nn.Module, *, std: float = 0.001) -> None:
    """HRNet official initialisation of every conv (N(0, std), bias 0) and BN (1, 0) inside *module*."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _shortcut(in_channels: int, out_channels: int, stride: int, bn_momentum: float) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels, momentum=bn_momentum),
    )


class BasicBlock(nn.Module):
    """conv3x3 (stride) -> BN -> ReLU -> conv3x3 -> BN, + shortcut, ReLU.

    (B, in_channels, H, W) -> (B, channels, ceil(H / stride), ceil(W / stride)). The shortcut is a conv1x1 + BN
    (``downsample``) when the stride or the width changes, the identity otherwise.
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, *, stride: int = 1, bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, channels, stride, bn_momentum)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + shortcut)


class Bottleneck(nn.Module):
    """conv1x1 -> BN -> ReLU -> conv3x3 (stride) -> BN -> ReLU -> conv1x1 (x4) -> BN, + shortcut, ReLU.

    (B, in_channels, H, W) -> (B, 4 * channels, ceil(H / stride), ceil(W / stride)).
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, *, stride: int = 1, bn_momentum: float = BN_MOMENTUM) -> None:
        super().__init__()
        out = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, momentum=bn_momentum)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, momentum=bn_momentum)
        self.conv3 = nn.Conv2d(channels, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, out, stride, bn_momentum)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + shortcut)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}


def make_blocks(
    block: Literal["basic", "bottleneck"], in_channels: int, channels: int, num_blocks: int, *,
    stride: int = 1, bn_momentum: float = BN_MOMENTUM,
) -> nn.Sequential:  # fmt: skip
    """*num_blocks* blocks in sequence; the first takes *in_channels* (and the stride), the rest its output."""
    cls = BLOCKS[block]
    layers = [cls(in_channels, channels, stride=stride, bn_momentum=bn_momentum)]
    layers += [cls(channels * cls.expansion, channels, bn_momentum=bn_momentum) for _ in range(num_blocks - 1)]
    return nn.Sequential(*layers)


class HRModule(nn.Module):
    """One HRNet module: n parallel streams of blocks, then the exchange fusion into m <= n streams.

    ``features``: n maps, finest first, (B, in_channels[j], H_j, W_j) with H_{j+1} = ceil(H_j / 2).
    Returns m maps, (B, out_channels[i], H_i, W_i) for i < m (the m highest-resolution streams).

    Stream j runs ``num_blocks[j]`` blocks of width ``channels[j]`` (out = channels[j] * expansion). Fused output
    i = ReLU(sum_j T_ij(y_j)): T_ii identity; j > i (coarser): conv1x1 + BN, then resized to the exact size of y_i
    (``mode``, ``align_corners``); j < i (finer): i - j stride-2 conv3x3 + BN, ReLU between them, the
    intermediate ones keeping y_j's width. With m < n the dropped streams are still fused into the kept ones.
    A module with one input and one output stream has no fusion (its output is the branch's, as upstream).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_blocks: Sequence[int],
        channels: Sequence[int] | None = None,
        *,
        block: Literal["basic", "bottleneck"] = "basic",
        num_outputs: int | None = None,
        mode: Literal["nearest", "bilinear", "bicubic"] = "bilinear",
        align_corners: bool = False,
        bn_momentum: float = BN_MOMENTUM,
    ) -> None:
        super().__init__()
        n = len(in_channels)
        channels = tuple(in_channels if channels is None else channels)
        m = n if num_outputs is None else num_outputs
        if not (len(num_blocks) == len(channels) == n) or not 1 <= m <= n:
            raise ValueError(
                f"HRModule: in_channels {tuple(in_channels)}, num_blocks {tuple(num_blocks)} and channels {channels} "
                f"must have one entry per stream, and 1 <= num_outputs ({m}) <= {n}"
            )
        expansion = BLOCKS[block].expansion
        self.in_channels = tuple(in_channels)
        self.out_channels = tuple(c * expansion for c in channels[:m])
        self.mode, self.align_corners = mode, align_corners
        self.branches = nn.ModuleList(
            make_blocks(block, cin, c, nb, bn_momentum=bn_momentum) for cin, c, nb in zip(in_channels, channels, num_blocks)
        )
        width = [c * expansion for c in channels]
        self.fuse_layers = nn.ModuleList()
        if n > 1:
            for i in range(m):
                self.fuse_layers.append(nn.ModuleList(self._fuse(width, j, i, bn_momentum) for j in range(n)))
        self.fuse_act = nn.ReLU()
        init_hrnet_weights(self)

    @staticmethod
    def _fuse(width: Sequence[int], j: int, i: int, bn_momentum: float) -> nn.Module:
        if j == i:
            return nn.Identity()
        if j > i:
            return nn.Sequential(nn.Conv2d(width[j], width[i], 1, bias=False), nn.BatchNorm2d(width[i], momentum=bn_momentum))
        steps = []
        for k in range(i - j):
            last = k == i - j - 1
            cout = width[i] if last else width[j]
            step = [nn.Conv2d(width[j], cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout, momentum=bn_momentum)]
            steps.append(nn.Sequential(*step) if last else nn.Sequential(*step, nn.ReLU()))
        return nn.Sequential(*steps)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        if len(features) != len(self.branches):
            raise ValueError(f"HRModule built for {len(self.branches)} streams got {len(features)} maps")
        ys = [branch(x) for branch, x in zip(self.branches, features)]
        if not len(self.fuse_layers):
            return ys
        out = []
        for i, layers in enumerate(self.fuse_layers):
            size = ys[i].shape[-2:]
            total = ys[i]
            for j, layer in enumerate(layers):
                if j == i:
                    continue
                t = layer(ys[j])
                if j > i:
                    t = resize_to(t, size, mode=self.mode, align_corners=self.align_corners)
                total = total + t
            out.append(self.fuse_act(total))
        return out


class Transition(nn.ModuleList):
    """Between stages: adapt existing streams' widths and add new, coarser streams.

    ``features``: len(in_channels) maps -> len(out_channels) maps (B, out_channels[i], ...). Stream i <
    len(in_channels) passes through unchanged when its width matches, else conv3x3 + BN + ReLU (stride 1).
    Each new stream comes from the coarsest input stream through stride-2 conv3x3 + BN + ReLU steps (one per
    halving; the intermediate ones keep that stream's width).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int], *, bn_momentum: float = BN_MOMENTUM) -> None:
        layers: list[nn.Module] = []
        n_in = len(in_channels)
        for i, cout in enumerate(out_channels):
            if i < n_in:
                cin = in_channels[i]
                layers.append(nn.Identity() if cin == cout else nn.Sequential(
                    nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, momentum=bn_momentum),
                    nn.ReLU(inplace=True)))  # fmt: skip
                continue
            steps = []
            for k in range(i + 1 - n_in):
                cin = in_channels[-1]
                c = cout if k == i - n_in else cin
                steps.append(nn.Sequential(nn.Conv2d(cin, c, 3, stride=2, padding=1, bias=False),
                                           nn.BatchNorm2d(c, momentum=bn_momentum), nn.ReLU(inplace=True)))  # fmt: skip
            layers.append(nn.Sequential(*steps))
        super().__init__(layers)
        self.in_channels, self.out_channels = tuple(in_channels), tuple(out_channels)
        init_hrnet_weights(self)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:  # type: ignore[override]
        n_in = len(self.in_channels)
        return [layer(features[i] if i < n_in else features[-1]) for i, layer in enumerate(self)]
