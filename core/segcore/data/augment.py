"""Batch augmentation with kornia, on the training device: random scale + padded crop, horizontal flip, colour jitter.

One ``kornia.augmentation.AugmentationSequential`` over ``["image", "mask"]`` draws one set of random parameters per
sample and applies it to both; masks are resampled nearest. kornia pads with 0, a real class, so masks are shifted
by one around the sequence and padding comes out as the ignore id, never a class (STYLE.md section 5). Two of the
augmentations are ours, written as kornia augmentations so that the container handles them like its own:

- ``ScaleCrop``: no kornia op rescales by a random factor and then cuts a fixed-size window that may leave the image
  (``RandomResizedCrop`` never leaves it, a padded ``RandomCrop`` cannot rescale). A ``GeometricAugmentationBase2D``
  with its own parameter generator; its ``output_size`` parameter tells the container the new size.
- ``FastColorJitter``: kornia's ``ColorJitter`` (torchvision's formulas, the same parameter generator, a random order
  per call) with cheaper arithmetic that gives the same values to float rounding: the hue shift is computed from
  each pixel's max, min and hue directly instead of the full HSV round trip, and the blends run in place. Eager, it
  is what makes the default as fast as torchvision.transforms.v2 per sample (``python bench/bench_data.py``).

Normalisation is part of the model (``[model] mean/std``), so it travels with saved weights.
"""

from __future__ import annotations

__all__ = ["AugmentConfig", "BatchAugment", "FastColorJitter", "ScaleCrop"]

from typing import Any, Callable

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.augmentation.random_generator import ColorJitterGenerator, RandomGeneratorBase, UniformDistribution
from kornia.augmentation.utils import _adapted_rsampling
from kornia.constants import Resample
from torch import Tensor

from segcore.config.schema import AugmentConfig


class ScaleCropGenerator(RandomGeneratorBase):
    """Per sample: ``scale`` s ~ U(scale) (B,), ``origin`` (B, 2) = the source pixel (x, y) that lands on the crop's
    top-left pixel, uniform over the places where the window stays inside the image (or, on an axis where it is
    larger than the image, where the image stays inside the window), and ``output_size`` (B, 2) = (h, w)."""

    def __init__(self, size: tuple[int, int] | None, scale: tuple[float, float]) -> None:
        super().__init__()
        self.size = size
        self.scale = scale

    def __repr__(self) -> str:
        return f"size={self.size}, scale={self.scale}"

    def make_samplers(self, device: torch.device, dtype: torch.dtype) -> None:
        low, high = (torch.tensor(v, device=device, dtype=dtype) for v in self.scale)
        self.scale_sampler = UniformDistribution(low, high, validate_args=False)  # low == high is allowed
        zero, one = torch.tensor(0.0, device=device, dtype=dtype), torch.tensor(1.0, device=device, dtype=dtype)
        self.place_sampler = UniformDistribution(zero, one, validate_args=False)

    def forward(self, batch_shape: tuple[int, ...], same_on_batch: bool = False) -> dict[str, Tensor]:
        b, h, w = batch_shape[0], batch_shape[-2], batch_shape[-1]
        out_h, out_w = self.size or (h, w)
        scale = _adapted_rsampling((b,), self.scale_sampler, same_on_batch)
        place = _adapted_rsampling((b, 2), self.place_sampler, same_on_batch)
        # from the first to the last pixel centre, in source pixels: the window's extent and the image's
        window = torch.tensor([out_w - 1, out_h - 1], dtype=scale.dtype, device=scale.device) / scale[:, None]
        image = torch.tensor([w - 1, h - 1], dtype=scale.dtype, device=scale.device)
        return {
            "scale": scale,
            "origin": place * (image - window),  # negative on an axis where the window is larger than the image
            "output_size": torch.tensor([out_h, out_w], dtype=torch.long).repeat(b, 1),
        }


class ScaleCrop(K.GeometricAugmentationBase2D):
    """Rescale each sample by s ~ U(scale), then cut a ``size`` window at a random place, zero where it leaves the
    image: crop pixel (x', y') = s * (source pixel (x, y) - origin), at pixel centres (``align_corners=True``).

    (B, C, H, W) -> (B, C, *size); ``size=None`` keeps (H, W). In an ``AugmentationSequential`` masks follow with
    nearest resampling and zero padding; ``transform_matrix`` is the (B, 3, 3) source-to-crop map.
    """

    def __init__(
        self, size: tuple[int, int] | None = None, scale: tuple[float, float] = (1.0, 1.0), *,
        resample: str = "bilinear", align_corners: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(p=1.0)  # changes the size: every sample of a batch must go through it
        self._param_generator = ScaleCropGenerator(size, scale)
        self.flags = {"size": size, "resample": Resample.get(resample), "align_corners": align_corners}

    def compute_transformation(self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any]) -> Tensor:
        scale = params["scale"].to(input.device, input.dtype)
        origin = params["origin"].to(input.device, input.dtype)
        matrix = torch.zeros(input.shape[0], 3, 3, device=input.device, dtype=input.dtype)
        matrix[:, 0, 0] = matrix[:, 1, 1] = scale
        matrix[:, :2, 2] = -scale[:, None] * origin
        matrix[:, 2, 2] = 1.0
        return matrix

    def apply_transform(
        self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any], transform: Tensor | None = None
    ) -> Tensor:
        if transform is None:
            raise ValueError("ScaleCrop.apply_transform needs the transform matrix of its parameters")
        out_h, out_w = flags["size"] or params["output_size"][0].tolist()
        # the map is axis-aligned, so the sampling grid is separable: one source coordinate per output column and one
        # per output row, written into the grid (kornia's warp_affine multiplies out a full meshgrid, ~6x slower)
        m = transform.to(input.device, input.dtype)
        grid = input.new_empty(input.shape[0], out_h, out_w, 2)
        for axis, (out_size, in_size) in enumerate(((out_w, input.shape[-1]), (out_h, input.shape[-2]))):
            crop = torch.arange(out_size, device=input.device, dtype=input.dtype)
            source = (crop - m[:, axis, 2, None]) / m[:, axis, axis, None]  # (B, out_size) source pixels
            # to grid_sample's [-1, 1]: the first and last pixel centres with align_corners, else the outer edges
            if flags["align_corners"]:
                source = source * (2 / max(in_size - 1, 1)) - 1
            else:
                source = (source * 2 + 1) / in_size - 1
            grid[..., axis] = source[:, None, :] if axis == 0 else source[:, :, None]
        mode = flags["resample"].name.lower()
        return F.grid_sample(input, grid, mode=mode, padding_mode="zeros", align_corners=flags["align_corners"])


# -- colour jitter -------------------------------------------------------------------------------------------------

_GRAY = (0.299, 0.587, 0.114)  # kornia's rgb_to_grayscale (ITU-R BT.601), as torchvision


def _per_sample(factor: Tensor, x: Tensor) -> Tensor:
    return factor.to(x.device, x.dtype).view(-1, 1, 1, 1)


def _brightness(x: Tensor, factor: Tensor) -> Tensor:
    """x * f, clamped (kornia's adjust_brightness_accumulative)."""
    return x.mul_(_per_sample(factor, x)).clamp_(0.0, 1.0)


def _contrast(x: Tensor, factor: Tensor) -> Tensor:
    """x * f + mean(gray(x)) * (1 - f), clamped (adjust_contrast_with_mean_subtraction); the mean of the gray image
    is the gray of the channel means, one pass."""
    f = _per_sample(factor, x)
    mean = (x.mean((-2, -1)) @ x.new_tensor(_GRAY)).view(-1, 1, 1, 1)
    return x.mul_(f).add_(mean * (1 - f)).clamp_(0.0, 1.0)


def _saturation(x: Tensor, factor: Tensor) -> Tensor:
    """x * f + gray(x) * (1 - f), clamped (adjust_saturation_with_gray_subtraction)."""
    f = _per_sample(factor, x)
    weights = (1 - f) * x.new_tensor(_GRAY).view(1, 3, 1, 1)  # (B, 3, 1, 1): gray * (1 - f) in one sum
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    gray = (r * weights[:, 0:1]).addcmul_(g, weights[:, 1:2]).addcmul_(b, weights[:, 2:3])
    return x.mul_(f).add_(gray).clamp_(0.0, 1.0)


def _hue(x: Tensor, factor: Tensor) -> Tensor:
    """Rotate the HSV hue by ``factor`` turns, keeping saturation and value (kornia's adjust_hue, torchvision's).

    A hue shift keeps each pixel's max and min, so instead of the RGB -> HSV -> RGB round trip: hue h in sextants
    from the channel holding the max, then channel n (R 5, G 3, B 1) = max - (max - min) * clamp(min(k, 4 - k), 0, 1)
    with k = (n + h + 6 * factor) mod 6, the closed form of the HSV -> RGB table. Equal to the round trip to float
    rounding (there S = (max - min) / (max + 1e-8), so V * S is max - min to 1e-8). Branches are blends by 0/1
    weights and the modulo is a frac: on the CPU (torch 2.14) torch.where and torch.remainder cost ~10x more per
    element than these element-wise ops.
    """
    mx, mn = x.amax(1, keepdim=True), x.amin(1, keepdim=True)
    delta = mx - mn
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    # the max in red: (g - b) / delta, in green: 2 + (b - r) / delta, in blue: 4 + (r - g) / delta; channels tied
    # for the max give the same hue mod 6, so which one wins does not matter (kornia's rgb_to_hsv takes r, then g)
    is_red, is_green = (r == mx).to(x.dtype), (g == mx).to(x.dtype)
    green_or_blue = torch.lerp((r - g).add_(delta, alpha=4), (b - r).add_(delta, alpha=2), is_green)
    sextant = torch.lerp(green_or_blue, g - b, is_red)
    # in turns, shifted by one so that the sum below is positive; a gray pixel (delta 0, sextant 0) gets hue 0 as in
    # rgb_to_hsv
    turns = sextant.div_(delta.mul(6).clamp_min_(torch.finfo(x.dtype).tiny))
    offsets = x.new_tensor((11.0, 9.0, 7.0)).div_(6).view(1, 3, 1, 1) + _per_sample(factor, x)  # (B, 3, 1, 1), 1 + n/6
    # k / 6 = frac(n / 6 + h / 6 + factor); the trapezoid clamp(min(k, 4 - k), 0, 1) = 1 - clamp(|k - 2| - 1, 0, 1)
    # and max - delta * trapezoid = min + delta * clamp(|k - 2| - 1, 0, 1), in place
    ramp = torch.add(turns, offsets).frac_().sub_(1 / 3).abs_().mul_(6).sub_(1).clamp_(0.0, 1.0)
    return ramp.mul_(delta).add_(mn)


_STEPS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (_brightness, _contrast, _saturation, _hue)
_FACTORS = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
_NEUTRAL = (1.0, 1.0, 1.0, 0.0)


class FastColorJitter(K.IntensityAugmentationBase2D):
    """kornia's ``ColorJitter`` with cheaper arithmetic: RGB (B, 3, H, W) in [0, 1] -> the same.

    The parameters are kornia's ``ColorJitterGenerator``'s (factors per sample, brightness/contrast/saturation in
    [max(0, 1 - v), 1 + v], hue in [-v, v] turns, a random order per call); the input is clamped into [0, 1] and each
    step is torchvision's formula, clamped. A step whose factors are all neutral is skipped, as kornia does.
    ``compile=True`` runs each step through torch.compile.
    """

    def __init__(
        self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0, *,
        p: float = 1.0, compile: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(p=p)
        self._param_generator = ColorJitterGenerator(brightness, contrast, saturation, hue)
        self.flags = {"compile": compile}
        # the order changes per call: compiling the steps one by one keeps it to four graphs
        self._steps = tuple(torch.compile(s, dynamic=False) for s in _STEPS) if compile else _STEPS

    def apply_transform(
        self, input: Tensor, params: dict[str, Tensor], flags: dict[str, Any], transform: Tensor | None = None
    ) -> Tensor:
        x = input.clamp(0.0, 1.0)  # a fresh tensor: the steps may work in place
        for i in params["order"].tolist():
            if (params[_FACTORS[i]] != _NEUTRAL[i]).any():
                x = self._steps[i](x, params[_FACTORS[i]])
        return x


# -- the batch augmentation ----------------------------------------------------------------------------------------


class BatchAugment:
    """(image (B, 3, H, W) float in [0, 1], mask (B, H, W) int64) -> the same, augmented; randomness from torch's
    global generator (the trainer seeds it per step, so a resumed run draws the same parameters)."""

    def __init__(self, cfg: AugmentConfig, ignore_index: int) -> None:
        self.cfg = cfg
        self.ignore_index = ignore_index
        ops: list[K.AugmentationBase2D] = []
        if cfg.scale is not None or cfg.crop_size is not None:
            ops.append(ScaleCrop(cfg.crop_size, cfg.scale or (1.0, 1.0)))
        if cfg.hflip:
            ops.append(K.RandomHorizontalFlip(p=cfg.hflip))
        jitter = (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
        if any(jitter):
            ops.append(FastColorJitter(*jitter, p=cfg.jitter_p, compile=cfg.compile))
        # masks: nearest by default
        self.sequence = K.AugmentationSequential(*ops, data_keys=["image", "mask"]) if ops else None

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.sequence is None:
            return image, mask
        # padding (0) is no class: see the module docstring. The mask goes in as float32, which the container would
        # convert an integer mask to anyway (after a check that labels below 2**24 do not need)
        image, shifted = self.sequence(image, (mask[:, None] + 1).float())
        shifted = shifted[:, 0].long()
        return image, torch.where(shifted == 0, self.ignore_index, shifted - 1)
