"""Batch augmentation with kornia, on the training device: random scale + crop, horizontal flip, colour jitter.

Masks are resampled nearest and stay aligned with their images (one set of random parameters per sample,
applied to both). kornia fills padding with 0, a real class; masks are shifted by one around every geometric
op so that padding becomes the ignore id and never a class (STYLE.md section 5). Normalisation is part of the
model (``[model] mean/std``), so it travels with saved weights.
"""

from __future__ import annotations

__all__ = ["AugmentConfig", "BatchAugment"]

import kornia.augmentation as K
import torch
from attrs import field, frozen
from attrs.validators import ge, le
from kornia.geometry.transform import warp_affine
from torch import Tensor

from .validators import positive_size


def _range(instance: object, attribute: object, value: tuple[float, float] | None) -> None:
    if value is not None and not 0 < value[0] <= value[1]:
        raise ValueError(f"'{attribute.name}' must be [low, high] with 0 < low <= high, got {list(value)}")


@frozen
class AugmentConfig:
    """``[data.augment]``: what happens to each training batch on the device."""

    scale: tuple[float, float] | None = field(default=None, validator=_range)  # random rescale, e.g. [0.5, 2.0]
    # (H, W) of the training crops; padded with ignore where the image ends
    crop_size: tuple[int, int] | None = field(default=None, validator=positive_size)
    hflip: float = field(default=0.5, validator=[ge(0.0), le(1.0)])  # probability
    brightness: float = field(default=0.0, validator=ge(0.0))
    contrast: float = field(default=0.0, validator=ge(0.0))
    saturation: float = field(default=0.0, validator=ge(0.0))
    hue: float = field(default=0.0, validator=[ge(0.0), le(0.5)])
    jitter_p: float = field(default=1.0, validator=[ge(0.0), le(1.0)])
    # torch.compile kornia's ColorJitter: its HSV hue round trip is many small element-wise kernels that
    # inductor fuses (measured ~4x faster on the CPU, bench/bench_data.py) after a one-off compile of ~10 s
    compile: bool = False


class BatchAugment:
    """(image (B, 3, H, W) float in [0, 1], mask (B, H, W) int64) -> the same, augmented; randomness from torch's
    global generator (the trainer seeds it per step, so a resumed run draws the same parameters)."""

    def __init__(self, cfg: AugmentConfig, ignore_index: int) -> None:
        self.cfg = cfg
        self.ignore_index = ignore_index
        self.flip = K.RandomHorizontalFlip(p=cfg.hflip) if cfg.hflip else None
        jitter = (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
        self.jitter = K.ColorJitter(*jitter, p=cfg.jitter_p) if any(jitter) else None
        if self.jitter is not None and cfg.compile:
            self.jitter = torch.compile(self.jitter)

    def scale_crop(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Rescale each sample by s ~ U(scale) and cut a crop_size window at a random place; where the window
        leaves the image the crop is padded (image 0, mask ignore)."""
        b, _, h, w = image.shape
        ch, cw = self.cfg.crop_size or (h, w)
        lo, hi = self.cfg.scale or (1.0, 1.0)
        s = lo + (hi - lo) * torch.rand(b)
        win_h, win_w = ch / s, cw / s  # the window in source pixels
        y0 = torch.where(win_h <= h, torch.rand(b) * (h - win_h), (h - win_h) * torch.rand(b))
        x0 = torch.where(win_w <= w, torch.rand(b) * (w - win_w), (w - win_w) * torch.rand(b))
        # the affine map from source pixels to crop pixels (window corners onto crop corners)
        sx, sy = (cw - 1) / (win_w - 1), (ch - 1) / (win_h - 1)
        matrix = torch.zeros(b, 2, 3)
        matrix[:, 0, 0], matrix[:, 0, 2] = sx, -sx * x0
        matrix[:, 1, 1], matrix[:, 1, 2] = sy, -sy * y0
        matrix = matrix.to(image.device, image.dtype)
        image = warp_affine(image, matrix, (ch, cw), mode="bilinear", align_corners=True)
        shifted = warp_affine((mask[:, None] + 1).to(image.dtype), matrix, (ch, cw), mode="nearest", align_corners=True)
        return image, self._unshift(shifted)

    def _unshift(self, shifted: Tensor) -> Tensor:
        m = shifted[:, 0].round().long()
        return torch.where(m == 0, self.ignore_index, m - 1)

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        if self.cfg.scale is not None or self.cfg.crop_size is not None:
            image, mask = self.scale_crop(image, mask)
        if self.flip is not None:  # a flip never pads: the mask goes through the same parameters unshifted
            image = self.flip(image)
            flipped = self.flip._params["batch_prob"].to(mask.device).bool()  # kornia keeps them to replay
            mask = torch.where(flipped[:, None, None], mask.flip(-1), mask)
        if self.jitter is not None:
            image = self.jitter(image)
        return image, mask
