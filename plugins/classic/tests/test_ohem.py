"""OHEM cross-entropy on hand-built cases (BLOCKS 002.3): which pixels are kept, and the loss value."""

from __future__ import annotations

import math

import pytest
import torch

from segcore import ConfigError, ModelOutput
from segcore_plugin_classic.ohem import OhemCrossEntropyConfig, OhemCrossEntropyLoss

IGNORE = 255
P = [0.9, 0.6, 0.3, 0.8, 0.5]  # probability of the true class (1) at five labelled pixels; a sixth is ignored


def _case(batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes; logit 0 for class 0 and log(p / (1 - p)) for class 1, so softmax gives exactly p for class 1."""
    class1 = torch.tensor([math.log(p / (1 - p)) for p in P] + [5.0])
    logits = torch.stack([torch.zeros(6), class1])[None, :, None, :].repeat(batch, 1, 1, 1)  # (B, 2, 1, 6)
    target = torch.tensor([1, 1, 1, 1, 1, IGNORE]).view(1, 1, 6).repeat(batch, 1, 1)
    return logits, target


def _loss(**kw) -> OhemCrossEntropyLoss:
    return OhemCrossEntropyLoss(OhemCrossEntropyConfig(**kw), num_classes=2, ignore_index=IGNORE)


def _ce(*ps: float) -> float:
    return sum(-math.log(p) for p in ps)


@pytest.mark.parametrize("min_kept, kept, ps", [
    (2, [0, 1, 1, 0, 1, 0], (0.6, 0.3, 0.5)),        # sorted p .3 .5 .6 .8 .9; rank 2 is .6 < thresh .7: tau = .7
    (4, [0, 1, 1, 1, 1, 0], (0.6, 0.3, 0.8, 0.5)),   # rank 4 is .9 > .7: tau = .9, the .8 pixel joins
    (100, [0, 1, 1, 1, 1, 0], (0.6, 0.3, 0.8, 0.5)),  # rank clipped to n - 1 = 4; the easiest pixel is never kept
    (0, [0, 1, 1, 0, 1, 0], (0.6, 0.3, 0.5)),        # rank 0 is .3: tau = thresh
])  # fmt: skip
def test_kept_pixels_and_loss_by_hand(min_kept, kept, ps):
    logits, target = _case()
    loss = _loss(thresh=0.7, min_kept=min_kept)
    assert loss.kept(logits, target)[0, 0].int().tolist() == kept
    value = loss(logits, target, ModelOutput(logits=logits))
    assert value.item() == pytest.approx(_ce(*ps) / len(ps), rel=1e-6)


@pytest.mark.parametrize("per, kept_per_image", [("image", [0, 0, 1, 0, 1, 0]), ("batch", [0, 0, 1, 0, 0, 0])])
def test_min_kept_counts_per_image_or_per_batch(per, kept_per_image):
    """Two copies of the case, thresh 0.4. Sorted p: .3 .3 .5 .5 .6 .6 .8 .8 .9 .9. Per image (mmseg): rank 2 x 2 = 4
    is .6, so p < .6 is kept; per batch (HRNet): rank 2 is .5, so p < .5."""
    logits, target = _case(batch=2)
    kept = _loss(thresh=0.4, min_kept=2, min_kept_per=per).kept(logits, target)
    assert kept[:, 0].int().tolist() == [kept_per_image, kept_per_image]


@pytest.mark.parametrize("normalize, count", [("kept", 3), ("valid", 5), ("all", 6)])
def test_normalisation(normalize, count):
    """The same three kept pixels (.6, .3, .5), averaged over kept (HRNet), labelled or all pixels (mmseg)."""
    logits, target = _case()
    value = _loss(thresh=0.7, min_kept=2, normalize=normalize)(logits, target, ModelOutput(logits=logits))
    assert value.item() == pytest.approx(_ce(0.6, 0.3, 0.5) / count, rel=1e-6)


def test_class_weights_scale_each_pixel_and_the_mean_stays_over_kept_pixels():
    logits, target = _case()
    value = _loss(thresh=0.7, min_kept=2, class_weights=(1.0, 2.5))(logits, target, ModelOutput(logits=logits))
    assert value.item() == pytest.approx(2.5 * _ce(0.6, 0.3, 0.5) / 3, rel=1e-6)


def test_only_kept_pixels_get_gradients():
    logits, target = _case()
    logits.requires_grad_(True)
    _loss(thresh=0.7, min_kept=2)(logits, target, ModelOutput(logits=logits)).backward()
    has_grad = logits.grad.abs().sum(dim=1)[0, 0] > 0
    assert has_grad.int().tolist() == [0, 1, 1, 0, 1, 0]


def test_all_ignored_gives_zero_not_nan():
    logits, target = _case()
    target.fill_(IGNORE)
    assert _loss()(logits, target, ModelOutput(logits=logits)).item() == 0.0


def test_class_weights_must_match_the_class_count():
    with pytest.raises(ConfigError, match="class_weights has 3 values for 2 classes"):
        _loss(class_weights=(1.0, 1.0, 1.0))
