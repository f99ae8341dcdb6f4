"""ConfusionMatrix: one bincount over every pixel, the same matrix as torchmetrics, invalid labels still caught."""

from __future__ import annotations

import pytest
import torch

from segcore.engine.metrics import ConfusionMatrix

torchmetrics = pytest.importorskip("torchmetrics")


@pytest.mark.parametrize(("num_classes", "ignore_index", "dtype"), [(11, 11, torch.int64), (19, 255, torch.uint8),
                                                                     (4, 255, torch.int64), (3, 1, torch.int32)])  # fmt: skip
def test_same_matrix_as_torchmetrics(num_classes, ignore_index, dtype):
    from torchmetrics.classification import MulticlassConfusionMatrix

    g = torch.Generator().manual_seed(0)
    ours = ConfusionMatrix(num_classes, ignore_index)
    theirs = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index, validate_args=False)
    for _ in range(3):
        target = torch.randint(0, num_classes, (37, 53), generator=g)
        target[torch.rand(37, 53, generator=g) < 0.2] = ignore_index
        pred = torch.randint(0, num_classes, (37, 53), generator=g)
        ours.update(pred, target.to(dtype))
        theirs.update(pred, target)
    assert torch.equal(ours.matrix, theirs.compute().long())
    assert ours.matrix.sum() == int(theirs.compute().sum()) > 0


def test_ignore_id_inside_the_class_range_and_negative():
    cm = ConfusionMatrix(3, ignore_index=1)  # class 1 is the ignore id: its pixels never count
    cm.update(torch.tensor([0, 2, 2, 1]), torch.tensor([0, 1, 2, 2]))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    cm = ConfusionMatrix(3, ignore_index=-1)
    cm.update(torch.tensor([0, 2, 2, 1]), torch.tensor([0, -1, 2, 2]))
    assert cm.matrix.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]


@pytest.mark.parametrize("bad", [7, 3, -2])
def test_targets_outside_the_classes_are_still_an_error(bad):
    with pytest.raises(ValueError, match="outside 0..2 that are not the ignore id 255"):
        ConfusionMatrix(3, 255).update(torch.tensor([0, 1]), torch.tensor([0, bad]))
    with pytest.raises(ValueError, match="outside 0..2 that are not the ignore id 4"):
        ConfusionMatrix(3, 4).update(torch.tensor([0, 1]), torch.tensor([0, bad]))
