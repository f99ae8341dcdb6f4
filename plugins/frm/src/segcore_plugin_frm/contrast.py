"""The seed's hybrid loss L = L_ce + lambda * L_cl (seed 003 eq. 4-6): cross-entropy plus the pixel-wise contrastive
loss of Wang et al., "Exploring Cross-Image Pixel Contrast for Semantic Segmentation" (ICCV 2021, arXiv:2101.11939).

Written for segcore from the seed's text and the structure of tfzhou/ContrastiveSeg ``lib/loss/loss_contrast.py``
(MIT; BLOCKS.md 003.6); no code copied. What differs from ContrastiveSeg: no tau / base_tau factor (eq. 6 has
none; ``base_temperature`` restores it), no memory bank, no warm-up (neither is in the seed), an anchor without a
positive is left out instead of giving NaN, and a batch without an eligible class gives 0 instead of failing.

Per image, the classes present at the embedding's resolution (labels nearest-resized there; the ignore id
excluded) with more than ``max_views`` pixels each give n_view = min(max_samples // classes in the batch,
max_views) anchors: half "hard" (label c, predicted otherwise; predictions are the argmax of the logits resized
to that resolution), half "easy" (label c, predicted c), at random, one pool filling in when the other is short.
Every sampled embedding is an anchor; with s_ab = e_a . e_b / tau,

    L_a = mean over positives p (same class, p != a) of -[s_ap - log(exp s_ap + sum_{n: other class} exp s_an)]

and L_cl is the mean over anchors. The embedding comes from a training-only head (``pixel_embed``): in evaluation
mode there is none and the loss is the cross-entropy alone.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from attrs import field, frozen
from attrs.validators import ge, gt, optional
from torch import Tensor

from segcore import Loss, ModelOutput


@frozen
class PixelContrastLossConfig:
    """Table [[loss]] when name = "pixel_contrast". ``contrast_weight`` is the seed's lambda."""

    contrast_weight: float = field(default=1.0, validator=ge(0.0))
    temperature: float = field(default=0.1, validator=gt(0.0))
    base_temperature: float | None = field(default=None, validator=optional(gt(0.0)))  # ContrastiveSeg: 0.07
    max_samples: int = field(default=1024, validator=gt(0))
    max_views: int = field(default=100, validator=gt(0))
    ce: bool = True  # false: the contrastive term alone (pair it with another [[loss]] for the pixels' classes)


def sample_anchors(labels: Tensor, preds: Tensor, *, max_samples: int, max_views: int, ignore_index: int,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """labels, preds (B, N) int64 -> (image index, pixel index, class) of the anchors, each (A,).

    Hard/easy sampling as in the module docstring; A = n_view x (eligible (image, class) pairs), 0 when none.
    """
    picked: list[tuple[int, int]] = []
    for b in range(labels.shape[0]):
        classes, counts = labels[b].unique(return_counts=True)
        picked += [(b, int(c)) for c, n in zip(classes, counts) if int(c) != ignore_index and n > max_views]
    empty = labels.new_zeros(0)
    if not picked:
        return empty, empty, empty
    n_view = min(max_samples // len(picked), max_views)
    images, pixels, classes = [], [], []
    for b, c in picked:
        is_c = labels[b] == c
        hard = torch.nonzero(is_c & (preds[b] != c))[:, 0]
        easy = torch.nonzero(is_c & (preds[b] == c))[:, 0]
        n_hard = min(len(hard), n_view // 2) if len(easy) >= n_view - n_view // 2 else n_view - len(easy)
        n_easy = n_view - n_hard  # one pool is short: the other fills in (both together have > max_views pixels)
        take = torch.cat([hard[torch.randperm(len(hard), generator=generator)[:n_hard]],
                          easy[torch.randperm(len(easy), generator=generator)[:n_easy]]])  # fmt: skip
        images.append(torch.full_like(take, b))
        pixels.append(take)
        classes.append(torch.full_like(take, c))
    return torch.cat(images), torch.cat(pixels), torch.cat(classes)


def contrast_loss(embeddings: Tensor, classes: Tensor, temperature: float) -> Tensor:
    """embeddings (A, D), unit length; classes (A,) -> the mean over anchors of L_a (eq. 6), a scalar."""
    s = embeddings @ embeddings.T / temperature
    s = s - s.max(dim=1, keepdim=True).values.detach()  # for exp; cancels in every term
    same = classes[:, None] == classes[None, :]
    positive = same & ~torch.eye(len(classes), dtype=torch.bool, device=classes.device)
    negatives = (s.exp() * ~same).sum(dim=1, keepdim=True)
    log_prob = s - torch.log(s.exp() + negatives)
    n_pos = positive.sum(dim=1)
    has = n_pos > 0
    if not has.any():
        return embeddings.sum() * 0.0
    per_anchor = (log_prob * positive).sum(dim=1)[has] / n_pos[has]
    return -per_anchor.mean()


class PixelContrastLoss(Loss):
    """CE(logits, target) + contrast_weight x L_cl(embedding); returns both terms by name.

    Reads ``output.extras["embedding"]`` (B, D, h, w), unit length over D, from the training-only ``pixel_embed`` head.
    """

    extras: ClassVar[tuple[str, ...]] = ("embedding",)

    def __init__(self, cfg: PixelContrastLossConfig, *, num_classes: int, ignore_index: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.ignore_index = ignore_index
        self.factor = cfg.temperature / cfg.base_temperature if cfg.base_temperature else 1.0

    def forward(self, logits: Tensor, target: Tensor, output: ModelOutput) -> dict[str, Tensor]:
        terms = {}
        if self.cfg.ce:
            terms["ce"] = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index)
        embedding = output.extras.get("embedding")
        if embedding is None:  # evaluation mode: training-only heads did not run
            terms["contrast"] = logits.new_zeros((), dtype=torch.float32)
            return terms
        terms["contrast"] = self.cfg.contrast_weight * self.factor * self.contrast(embedding, logits, target)
        return terms

    def contrast(self, embedding: Tensor, logits: Tensor, target: Tensor) -> Tensor:
        """L_cl of one batch: (B, D, h, w), (B, K, H, W), (B, H, W) -> scalar."""
        b, d, h, w = embedding.shape
        labels = F.interpolate(target[:, None].float(), size=(h, w), mode="nearest")[:, 0].long().flatten(1)
        with torch.no_grad():
            preds = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
            preds = preds.argmax(1).flatten(1)
        cfg = self.cfg
        images, pixels, classes = sample_anchors(
            labels, preds, max_samples=cfg.max_samples, max_views=cfg.max_views, ignore_index=self.ignore_index
        )
        if len(classes) == 0:
            return embedding.sum() * 0.0
        feats = embedding.float().flatten(2).transpose(1, 2)[images, pixels]  # (A, D)
        return contrast_loss(feats, classes, self.cfg.temperature)
