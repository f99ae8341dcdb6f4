"""``shapes``: a procedurally generated dataset built into core, for the quickstart and for tests.

Every sample is drawn from its own seed (``(seed, split, index)``), so the data are the same on every machine
and need no download. Each image holds a few discs, squares, triangles and rings of random colour, size,
position and rotation on a textured background (sinusoidal gratings plus noise); the mask gives each pixel
its shape class, later shapes covering earlier ones. Each class has a hue family (disc red, square green,
triangle yellow, ring blue, +-35 degrees, so neighbours overlap) at high saturation, the background low
saturation: colour is a strong but imperfect cue, and shape and boundaries do the rest.
"""

from __future__ import annotations

import numpy as np
import torch
from attrs import field, frozen
from attrs.validators import ge, gt
from torch import Tensor

from segcore.data.datasets import FolderDataset, FolderDatasetConfig
from segcore.data.hubdata import HubDataset, HubDatasetConfig
from segcore.contracts.hookspecs import hookimpl
from segcore.contracts.registry import Registry
from segcore.contracts.stages import Dataset, DatasetMeta
from segcore.contracts.validators import positive_size

CLASSES = ("background", "disc", "square", "triangle", "ring")
PALETTE = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200))
HUES = (0.0, 0.0, 120.0, 60.0, 220.0)  # per class, degrees (background unused)


@frozen
class ShapesConfig:
    """Table [data.dataset] when name = "shapes"."""

    size: tuple[int, int] = field(default=(128, 128), validator=positive_size)  # (H, W)
    num_train: int = field(default=512, validator=gt(0))
    num_val: int = field(default=64, validator=gt(0))
    max_shapes: int = field(default=4, validator=gt(0))
    seed: int = field(default=0, validator=ge(0))


class ShapesDataset(Dataset):
    meta = DatasetMeta(class_names=CLASSES, palette=PALETTE, ignore_index=255)
    splits = ("train", "val")

    def __init__(self, cfg: ShapesConfig, *, split: str) -> None:
        super().__init__()
        self.check_split(cfg, split)
        self.cfg = cfg
        self.split = split
        self._split_id = self.splits.index(split)
        self._len = cfg.num_train if split == "train" else cfg.num_val

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < self._len:
            raise IndexError(f"index {index} out of range for {self._len} samples")
        image, mask = render(self.cfg.size, np.random.default_rng([self.cfg.seed, self._split_id, index]), self.cfg.max_shapes)
        return {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(), "mask": torch.from_numpy(mask).long()}


def render(size: tuple[int, int], rng: np.random.Generator, max_shapes: int) -> tuple[np.ndarray, np.ndarray]:
    """One sample: image (H, W, 3) uint8, mask (H, W) uint8 of class ids."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = _texture(yy, xx, rng)
    mask = np.zeros((h, w), np.uint8)
    scale = min(h, w)
    for _ in range(rng.integers(1, max_shapes + 1)):
        cls = int(rng.integers(1, len(CLASSES)))
        r = rng.uniform(0.08, 0.2) * scale
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        angle = rng.uniform(0, 2 * np.pi)
        # coordinates in the shape's rotated frame
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = -dx * np.sin(angle) + dy * np.cos(angle)
        if cls == 1:  # disc
            inside = u**2 + v**2 <= r**2
        elif cls == 2:  # square
            inside = (np.abs(u) <= r * 0.85) & (np.abs(v) <= r * 0.85)
        elif cls == 3:  # equilateral triangle, circumradius r
            inside = np.ones_like(u, bool)
            for k in range(3):
                a = 2 * np.pi * k / 3
                inside &= u * np.cos(a) + v * np.sin(a) <= r / 2
        else:  # ring
            d2 = u**2 + v**2
            inside = (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
        colour = _hsv_to_rgb(HUES[cls] + rng.uniform(-35, 35), rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0))
        shade = 1 + 0.15 * np.sin(u / rng.uniform(2, 6))[..., None]  # a little texture on the shape too
        image[inside] = np.clip(colour * shade[inside], 0, 255)
        mask[inside] = cls
    noise = rng.normal(0, 6, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), mask


def _hsv_to_rgb(hue: float, sat: float, val: float) -> np.ndarray:
    """Hue in degrees, saturation and value in [0, 1] -> RGB in [0, 255]."""
    k = (np.array([5.0, 3.0, 1.0]) + (hue % 360) / 60) % 6
    return 255 * val * (1 - sat * np.clip(np.minimum(k, 4 - k), 0, 1))


def _texture(yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    base = _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.9))
    tex = np.zeros(yy.shape, np.float32)
    for _ in range(3):
        freq, theta, phase = rng.uniform(0.05, 0.5), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        tex += np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    tint = rng.uniform(-1, 1, 3) * rng.uniform(10, 50)
    return np.clip(base + tex[..., None] * tint, 0, 255).astype(np.float32)


@hookimpl
def segcore_register(registry: Registry) -> None:
    registry.add(ShapesDataset, name="shapes", config=ShapesConfig, tiny=ShapesConfig(size=(64, 64), num_train=8, num_val=4))
    registry.add(FolderDataset, name="folder", config=FolderDatasetConfig)
    registry.add(HubDataset, name="hub", config=HubDatasetConfig)
