"""Metrics against hand-computed cases; inference modes against each other."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

from segcore.config.schema import EvalConfig
from segcore.engine.evaluate import evaluate
from segcore.engine.inference import infer, pad_collate, slide_logits
from segcore.engine.metrics import ConfusionMatrix
from segcore.contracts.stages import DatasetMeta, ModelOutput


def test_confusion_metrics_by_hand():
    #   target: 0 0 1 1 2 255     pred: 0 1 1 1 0 2
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(torch.tensor([0, 1, 1, 1, 0, 2]), torch.tensor([0, 0, 1, 1, 2, 255]))
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    m = cm.compute()
    # IoU: class 0: 1 / (2 + 2 - 1) = 1/3; class 1: 2 / (2 + 3 - 2) = 2/3; class 2: 0 / (1 + 0 - 0) = 0
    assert m["IoU"] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert m["mIoU"] == pytest.approx(1 / 3)
    assert m["Acc"] == pytest.approx([0.5, 1.0, 0.0]) and m["mAcc"] == pytest.approx(0.5)
    assert m["aAcc"] == pytest.approx(3 / 5)
    assert m["fwIoU"] == pytest.approx(2 / 5 * 1 / 3 + 2 / 5 * 2 / 3 + 1 / 5 * 0)


def test_absent_classes_are_left_out_of_the_means():
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(torch.tensor([0, 1, 3]), torch.tensor([0, 1, 1]))
    m = cm.compute()
    assert math.isnan(m["IoU"][2]) and m["IoU"][3] == 0.0  # 2 never seen; 3 predicted but absent: IoU 0 not counted
    assert m["mIoU"] == pytest.approx((1 + 0.5) / 2)


def test_labels_outside_the_classes_are_an_error():
    with pytest.raises(ValueError, match="not the ignore id"):
        ConfusionMatrix(3, 255).update(torch.tensor([0]), torch.tensor([7]))


class Pointwise(nn.Module):
    """1x1 convs only: equivariant to flips and translations, so TTA and windows change nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x):
        return ModelOutput(logits=self.net(x))


class Conv3(nn.Module):
    """A 3x3 net (not translation-equivariant at borders)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))

    def forward(self, x):
        return ModelOutput(logits=self.net(x))


def test_flip_tta_of_a_flip_equivariant_model_equals_no_tta():
    model, x = Pointwise().eval(), torch.rand(2, 3, 21, 30)
    plain = infer(model, x, EvalConfig())
    tta = infer(model, x, EvalConfig(flip=True))
    torch.testing.assert_close(tta, plain.softmax(1))


def test_multi_scale_tta_averages_probabilities_at_the_input_size():
    model, x = Conv3().eval(), torch.rand(1, 3, 40, 56)
    out = infer(model, x, EvalConfig(scales=(0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0), flip=True))
    assert out.shape == (1, 4, 40, 56)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 40, 56))


def test_sliding_window_equal_to_the_image_is_whole_inference():
    model, x = Conv3().eval(), torch.rand(1, 3, 33, 47)
    whole = infer(model, x, EvalConfig())
    slide = infer(model, x, EvalConfig(mode="slide", window=(33, 47), stride=(20, 20)))
    torch.testing.assert_close(slide, whole)


def test_sliding_window_covers_and_averages_overlaps():
    model, x = Pointwise().eval(), torch.rand(1, 3, 50, 70)
    torch.testing.assert_close(slide_logits(model, x, (32, 32), (20, 20)), model(x).logits)  # pointwise: exact


def test_mixed_size_batches_give_what_one_at_a_time_gives():
    torch.manual_seed(0)
    model = Conv3().eval()
    meta = DatasetMeta(class_names=("a", "b", "c", "d"), palette=((0, 0, 0),) * 4, ignore_index=255)
    samples = [
        {"image": torch.randint(0, 255, (3, h, w), dtype=torch.uint8), "mask": torch.randint(0, 4, (h, w))}
        for h, w in ((20, 30), (25, 17), (20, 30), (9, 9))
    ]
    collate = functools.partial(pad_collate, ignore_index=255)
    batched = evaluate(model, [collate(samples)], meta, torch.device("cpu"), progress=False)
    single = evaluate(model, [collate([s]) for s in samples], meta, torch.device("cpu"), progress=False)
    assert np.array_equal(batched.matrix, single.matrix)
    assert batched.matrix.sum() == sum(s["mask"].numel() for s in samples)


def test_predict_api_takes_uint8_hwc_and_returns_labels_at_its_size():
    import segcore

    model = Pointwise().eval()
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    labels = segcore.predict(model, image, eval_cfg=EvalConfig(precision="fp32"))  # the fast path, kept in fp32
    assert labels.shape == (37, 53) and labels.dtype == np.int64
    expected = model(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255).logits.argmax(1)[0].numpy()
    assert np.array_equal(labels, expected)
    assert np.array_equal(segcore.predict(model, image, eval_cfg=EvalConfig(fast=False)), expected)
    with pytest.raises(segcore.DataError, match="uint8 RGB"):
        segcore.predict(model, image.astype(np.float32))
