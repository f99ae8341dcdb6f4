"""VAN, the Visual Attention Network (Guo et al., "Visual Attention Network", arXiv:2202.09741), as a backbone.

Written for segcore from the structure of Visual-Attention-Network/VAN-Classification ``models/van.py``
(Apache-2.0; BLOCKS.md 003.1); timm has no VAN. What differs from upstream: no classifier (the four stage outputs,
each after its LayerNorm, are the features, as in the VAN segmentation release), child names are ours (the official
ImageNet checkpoints load after ``python -m segcore_plugin_frm.convert_van``, which holds the key mapping), and the
stage-end LayerNorm normalises over channels on NCHW maps instead of flattening to tokens (the same numbers).

    stage i: patch embedding (conv7x7 s4 p3 for stage 1, conv3x3 s2 p1 after; + BN)
             -> depth_i blocks: x += ls1 * DropPath(Attn(BN(x))); x += ls2 * DropPath(MLP(BN(x)))
             -> LayerNorm over channels (eps 1e-6)
    Attn = conv1x1 -> GELU -> LKA -> conv1x1, + its (normalised) input
    LKA  = x * conv1x1(DW7x7 dilation 3 (DW5x5 (x)))
    MLP  = conv1x1 (d -> r d) -> DW3x3 -> GELU -> conv1x1 (r d -> d)

Any input size: stride-2 convs round up, so a 97x131 image gives 25x33, 13x17, 7x9 and 4x5 maps.
Initialisation as upstream (BLOCKS 0.4): conv N(0, sqrt(2 / fan_out)), bias 0; norms 1/0; layer scales 1e-2.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from attrs import field, frozen
from attrs.validators import ge, gt, lt, optional
from torch import Tensor, nn

from segcore import Backbone, ConfigError, FeatureInfo, load_weights

# (dims, depths, MLP ratios) of the released variants (VAN-Classification models/van.py); B1 is the seed's "VAN-S"
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "b0": ((32, 64, 160, 256), (3, 3, 5, 2), (8, 8, 4, 4)),
    "b1": ((64, 128, 320, 512), (2, 2, 4, 2), (8, 8, 4, 4)),
    "b2": ((64, 128, 320, 512), (3, 3, 12, 3), (8, 8, 4, 4)),
    "b3": ((64, 128, 320, 512), (3, 5, 27, 3), (8, 8, 4, 4)),
}


def _four(_: object, attribute: object, value: tuple[int, ...] | None) -> None:
    if value is not None and (len(value) != 4 or any(v <= 0 for v in value)):
        raise ValueError(f"'{attribute.name}' must list 4 positive integers (one per stage), got {list(value)}")


@frozen
class VANConfig:
    """Table [model.backbone] when name = "van".

    ``dims``, ``depths``, ``mlp_ratios`` override the variant's (for small test models). ``weights``: a
    safetensors file written by ``python -m segcore_plugin_frm.convert_van`` from the official ImageNet release.
    """

    variant: Literal["b0", "b1", "b2", "b3"] = "b1"
    dims: tuple[int, ...] | None = field(default=None, validator=_four)
    depths: tuple[int, ...] | None = field(default=None, validator=_four)
    mlp_ratios: tuple[int, ...] | None = field(default=None, validator=_four)
    drop_path_rate: float = field(default=0.1, validator=[ge(0.0), lt(1.0)])  # VAN-Segmentation's B1/B2 setting
    layer_scale_init: float = field(default=1e-2, validator=gt(0.0))
    weights: str | None = field(default=None, validator=optional(lambda _, a, v: _safetensors_path(v)))


def _safetensors_path(value: str) -> None:
    if not value.endswith(".safetensors"):
        raise ValueError(
            f"weights: {value!r} is not a .safetensors file; convert the official checkpoint first: "
            f"python -m segcore_plugin_frm.convert_van van_small_811.pth.tar van_b1.safetensors"
        )


def _elementwise(per_element: int):
    def rule(m: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> int:
        return per_element * inputs[0].numel()

    return rule


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map (upstream flattens to (B, HW, C) for nn.LayerNorm).

    Counted as thop and mmcv count upstream's affine nn.LayerNorm (they match exact types, so a subclass would
    vanish with its parameters): thop 2 x 2 ops per element, mmcv 2 (`segcore.counting`).
    """

    counting_rules = {"thop2x": _elementwise(4), "mmcv": _elementwise(2)}

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al., 2016): zero a residual branch with probability p in training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], 1, 1, 1).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class PatchEmbed(nn.Module):
    """(B, C_in, H, W) -> (B, dim, ceil(H / stride), ceil(W / stride)): conv (k, stride, k // 2) -> BN."""

    def __init__(self, in_channels: int, dim: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, dim, kernel_size, stride=stride, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class LKA(nn.Module):
    """Large kernel attention: x * conv1x1(DW7x7 dilation 3 (DW5x5 (x))), a 21x21 receptive field. Same shape."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.dw_dilated = nn.Conv2d(dim, dim, 7, padding=9, dilation=3, groups=dim)
        self.pw = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.pw(self.dw_dilated(self.dw(x)))


class SpatialAttention(nn.Module):
    """conv1x1 -> GELU -> LKA -> conv1x1, plus the input. Same shape."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj1 = nn.Conv2d(dim, dim, 1)
        self.act = nn.GELU()
        self.lka = LKA(dim)
        self.proj2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj2(self.lka(self.act(self.proj1(x)))) + x


class ConvMlp(nn.Module):
    """conv1x1 (d -> h) -> DW3x3 -> GELU -> conv1x1 (h -> d). Same shape."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.dw(self.fc1(x))))


class VANBlock(nn.Module):
    """Two pre-norm (BN) residual branches, attention then MLP, each scaled per channel. Same shape."""

    def __init__(self, dim: int, mlp_ratio: int, drop_path: float, layer_scale_init: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, dim * mlp_ratio)
        self.ls1 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.ls2 = nn.Parameter(torch.full((dim,), layer_scale_init))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.ls1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.ls2[:, None, None] * self.mlp(self.norm2(x)))


class VANStage(nn.Module):
    """Patch embedding (the stage's downsampling) -> blocks -> LayerNorm over channels."""

    def __init__(self, in_channels: int, dim: int, depth: int, mlp_ratio: int, first: bool,
                 drop_paths: list[float], layer_scale_init: float) -> None:  # fmt: skip
        super().__init__()
        self.embed = PatchEmbed(in_channels, dim, 7 if first else 3, 4 if first else 2)
        self.blocks = nn.Sequential(*(VANBlock(dim, mlp_ratio, p, layer_scale_init) for p in drop_paths[:depth]))
        self.norm = LayerNorm2d(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.blocks(self.embed(x)))


class VAN(Backbone):
    """image (B, C, H, W) -> 4 maps (B, dim_i, ceil(H / s_i), ceil(W / s_i)), s = 4, 8, 16, 32.

    ``in_channels`` (C, from ``[model] in_channels``): the first patch embedding takes them; RGB ``weights`` are
    adapted to them (`segcore.adapt_input_channels`)."""

    def __init__(self, cfg: VANConfig, *, in_channels: int = 3) -> None:
        super().__init__()
        self.in_channels = in_channels
        dims, depths, ratios = VARIANTS[cfg.variant]
        dims, depths, ratios = cfg.dims or dims, cfg.depths or depths, cfg.mlp_ratios or ratios
        n = sum(depths)
        rates = [cfg.drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # stochastic depth grows linearly
        starts = [sum(depths[:i]) for i in range(4)]
        self.stages = nn.ModuleList(
            VANStage(in_channels if i == 0 else dims[i - 1], dims[i], depths[i], ratios[i], i == 0, rates[starts[i]:],
                     cfg.layer_scale_init)
            for i in range(4)
        )  # fmt: skip
        self.feature_info = tuple(FeatureInfo(d, s) for d, s in zip(dims, (4, 8, 16, 32)))
        self.apply(_init)
        if cfg.weights is not None and self.stages[0].embed.conv.weight.device.type != "meta":
            self.load(cfg.weights)  # not on the meta device: `segcore check` counts without the file

    def load(self, path: str) -> None:
        """Load a converted safetensors file (every tensor must fit: a wrong variant is named)."""
        if not Path(path).is_file():
            raise ConfigError(
                f"[model.backbone] weights: {path} does not exist (relative paths start at the working directory). "
                f"Convert the official checkpoint: python -m segcore_plugin_frm.convert_van IN.pth.tar {path}"
            )
        load_weights(self, path, require_record=False, in_channels=self.in_channels, hint=(
            "Was it converted from the checkpoint of this [model.backbone] variant? The official files: "
            "van_tiny_754 = b0, van_small_811 = b1, van_base_828 = b2, van_large_839 = b3."
        ))  # fmt: skip

    def forward(self, image: Tensor) -> list[Tensor]:
        maps = []
        x = image
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)

