"""Do the labels belong to their images? A check that needs no model.

A label's class boundaries are drawn along the edges of its own image: where a car meets the road the pixels
change. Score a (image, label) pair by how strong the image's edges are where the label changes class (the mean
percentile rank of the image's gradient magnitude over the label's boundary pixels: 0.5 for a label unrelated to
the image, 0.75-0.8 for CamVid's own pairs, about 0.95 for rendered shapes). Scoring every image against every
label of a handful of samples tells a right file list (each image's own label lines up best) from a shuffled or
mis-sorted one (another sample's label lines up better), which training cannot tell: a network learns four
images by heart whatever labels they are given.

Used by the sanity run (``segcore run --overfit N``) and by ``segcore data verify``.
"""

from __future__ import annotations

__all__ = ["TOLERANCE", "PairingCheck", "boundary", "check_pairing", "dataset_pairing", "edge_rank"]

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from attrs import frozen
from torch import Tensor

from segcore.contracts.stages import Dataset
from segcore.errors import DataError

TOLERANCE = 0.03  # a label within this of the best-fitting one still fits
_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def edge_rank(image: Tensor) -> Tensor:
    """(H, W) percentile rank in [0, 1] of the image's edge strength: the Sobel gradient magnitude of the sum over
    channels, widened by one pixel (labels drawn by hand sit within a pixel of the edge). Ranks make the score
    independent of the image's value range (8-bit, 16-bit, float) and contrast."""
    # float64, channel sum and squared magnitude: exact for integer images, so a 16-bit copy ranks the same
    grey = image.double().sum(0)[None, None]
    pad = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    kx = _SOBEL.to(grey.device, grey.dtype)[None, None]
    gx, gy = F.conv2d(pad, kx), F.conv2d(pad, kx.transpose(-1, -2))
    magnitude = F.max_pool2d(gx.square() + gy.square(), 3, stride=1, padding=1)[0, 0]
    flat = magnitude.flatten()  # ranks of the squared magnitude: those of the magnitude
    ordered = flat.sort().values
    # ties (flat regions, the widening) share their middle rank
    mid = torch.searchsorted(ordered, flat, side="left") + torch.searchsorted(ordered, flat, side="right")
    return (mid.float() / (2 * flat.numel())).view_as(magnitude)


def boundary(mask: Tensor, ignore_index: int) -> Tensor:
    """(H, W) bool: the pixels on either side of a change of class, ignored pixels left out."""
    out = torch.zeros(mask.shape, dtype=torch.bool, device=mask.device)
    for dim in (0, 1):
        a, b = mask.narrow(dim, 1, mask.shape[dim] - 1), mask.narrow(dim, 0, mask.shape[dim] - 1)
        change = (a != b) & (a != ignore_index) & (b != ignore_index)
        out.narrow(dim, 1, mask.shape[dim] - 1).logical_or_(change)
        out.narrow(dim, 0, mask.shape[dim] - 1).logical_or_(change)
    return out


@frozen
class PairingCheck:
    """``scores[i][j]``: how well label *j* lines up with image *i*'s edges (None: different sizes, or label *j*
    has no boundary). ``best[i]``: the label that lines up best with image *i* (None: no comparison possible)."""

    names: tuple[str, ...]
    scores: tuple[tuple[float | None, ...], ...]

    @property
    def best(self) -> tuple[int | None, ...]:
        out: list[int | None] = []
        for i, row in enumerate(self.scores):
            usable = [j for j, s in enumerate(row) if s is not None]
            out.append(max(usable, key=lambda j: row[j]) if row[i] is not None and len(usable) >= 2 else None)  # type: ignore[arg-type,return-value]
        return tuple(out)

    @property
    def compared(self) -> list[int]:
        """The images whose own label could be compared with at least one other label."""
        return [i for i, b in enumerate(self.best) if b is not None]

    def fits(self, i: int) -> bool:
        """Image *i*'s own label lines up with it best, or within `TOLERANCE` of the best (frames a fraction of
        a second apart have near-identical labels)."""
        return self.scores[i][i] >= self.scores[i][self.best[i]] - TOLERANCE  # type: ignore[operator,index]

    @property
    def own_best(self) -> int:
        """How many compared images fit their own label (`fits`)."""
        return sum(self.fits(i) for i in self.compared)

    @property
    def suspicious(self) -> bool:
        """Half or fewer of the compared images fit their own label. A right file list: all but a few, in every
        dataset tried (CamVid in groups of 16: train 367 of 367, val 101 of 101); rotated by one: train 18 of 367."""
        n = len(self.compared)
        return n >= 2 and self.own_best <= n / 2

    def own_score(self) -> float:
        own = [self.scores[i][i] for i in self.compared]
        return sum(own) / len(own) if own else float("nan")

    def other_score(self) -> float:
        other = [s for i in self.compared for j, s in enumerate(self.scores[i]) if j != i and s is not None]
        return sum(other) / len(other) if other else float("nan")

    def explain(self, limit: int = 3) -> str:
        """What was found, naming the images whose labels line up better elsewhere."""
        n = len(self.compared)
        text = (f"{self.own_best} of {n} image(s) line up best with their own label (edge score: own labels "
                f"{self.own_score():.2f}, other samples' labels {self.other_score():.2f}; 0.5 = unrelated)")  # fmt: skip
        wrong = [i for i in self.compared if not self.fits(i)]
        if wrong:
            named = [f"{self.names[i]} lines up best with the label filed for {self.names[self.best[i]]} "  # type: ignore[index]
                     f"({self.scores[i][self.best[i]]:.2f} against {self.scores[i][i]:.2f} for its own)"  # type: ignore[index]
                     for i in wrong[:limit]]  # fmt: skip
            text += "; " + "; ".join(named) + (f"; and {len(wrong) - limit} more" if len(wrong) > limit else "")
        return text


def check_pairing(images: Sequence[Tensor], masks: Sequence[Tensor], ignore_index: int,
                  names: Sequence[str] | None = None) -> PairingCheck:  # fmt: skip
    """Score every image (C, H, W) against every mask (H, W) of the same size; see the module's docstring."""
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images and {len(masks)} masks")
    names = tuple(names) if names is not None else tuple(f"sample {i}" for i in range(len(images)))
    ranks = [edge_rank(im) for im in images]
    edges = [boundary(m, ignore_index) for m in masks]
    scores = tuple(tuple(float(rank[b].mean()) if b.shape == rank.shape and bool(b.any()) else None for b in edges)
                   for rank in ranks)  # fmt: skip
    return PairingCheck(names, scores)


def dataset_pairing(dataset: Dataset, indices: Sequence[int]) -> PairingCheck:
    """`check_pairing` of samples *indices* of *dataset*, read as stored (`Dataset.raw_sample`: no augmentation,
    files named), labels through the dataset's id mapping (an unknown id is a class of its own here); a sample that
    cannot be read, a colour mask or a label of another size than its image is left out (`segcore data verify`
    reports those)."""
    meta = dataset.meta
    images, masks, names = [], [], []
    for i in indices:
        try:
            raw = dataset.raw_sample(i)
        except DataError:
            continue
        if raw.label.ndim != 2 or raw.label.shape != raw.image.shape[:2]:
            continue
        label = raw.label.astype(np.int64)
        if raw.lut is not None:
            inside = (label >= 0) & (label < len(raw.lut))
            label = np.where(inside, raw.lut[np.clip(label, 0, len(raw.lut) - 1)], -1)
        image = torch.from_numpy(np.array(raw.image))  # a copy: decoded arrays may be read-only
        images.append(image.permute(2, 0, 1) if image.ndim == 3 else image[None])
        masks.append(torch.from_numpy(label))
        names.append(raw.image_path.name if raw.image_path is not None else f"sample {i}")
    return check_pairing(images, masks, meta.ignore_index, names)
