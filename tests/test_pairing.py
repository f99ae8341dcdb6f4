"""`segcore.data.pairing`: each image's edges against every label's class boundaries tell a right file list from
a shuffled one, on rendered shapes and on CamVid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segcore.builtin.datasets import render
from segcore.data.pairing import boundary, check_pairing, edge_rank

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def _shapes(n: int, size: tuple[int, int] = (64, 64)) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    samples = [render(size, np.random.default_rng([7, i]), 4) for i in range(n)]
    return [torch.from_numpy(im).permute(2, 0, 1) for im, _ in samples], [torch.from_numpy(m).long() for _, m in samples]


def test_boundary_marks_both_sides_of_a_class_change_but_not_ignore():
    mask = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 255, 255]])
    assert boundary(mask, 255).tolist() == [[False, True, True, False], [False, True, True, False], [False] * 4]


def test_edge_rank_is_a_percentile_independent_of_the_value_range():
    images, _ = _shapes(1)
    rank8 = edge_rank(images[0])
    rank16 = edge_rank(images[0].int() * 257)  # the same image stored 16-bit
    assert rank8.shape == (64, 64) and 0 <= float(rank8.min()) and float(rank8.max()) <= 1
    assert float(rank8.mean()) == pytest.approx(0.5, abs=0.01)
    torch.testing.assert_close(rank8, rank16)


def test_own_labels_line_up_best_and_a_rotated_list_is_suspicious():
    images, masks = _shapes(8)
    right = check_pairing(images, masks, 255, [f"{i}.png" for i in range(8)])
    assert not right.suspicious and right.own_best == 8 and right.own_score() > right.other_score() + 0.2
    shuffled = check_pairing(images, masks[1:] + masks[:1], 255, [f"{i}.png" for i in range(8)])
    assert shuffled.suspicious and shuffled.own_best <= 1
    assert shuffled.best[0] == 7  # image 0's own mask was filed for sample 7
    assert "0.png lines up best with the label filed for 7.png" in shuffled.explain()


def test_labels_without_boundaries_or_of_another_size_are_not_compared():
    images, masks = _shapes(3)
    flat = torch.zeros(64, 64, dtype=torch.long)
    small = masks[2][:32, :32]
    check = check_pairing(images, [masks[0], flat, small], 255)
    assert check.scores[0][1] is None and check.scores[0][2] is None and check.scores[0][0] is not None
    assert check.compared == [] and not check.suspicious  # nothing to compare an image's own label with
    with pytest.raises(ValueError, match="3 images and 2 masks"):
        check_pairing(images, masks[:2], 255)


@pytest.mark.skipif(not CAMVID.is_dir(), reason="needs ../shared/data/camvid")
def test_camvid_consecutive_frames_are_told_apart():
    """CamVid's first 8 training frames, 1 s apart: each fits its own label; rotated by one, hardly any does."""
    files = sorted((CAMVID / "train").glob("*.png"))[:8]
    images = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]
    masks = [torch.from_numpy(np.array(Image.open(CAMVID / "trainannot" / f.name)).astype(np.int64)) for f in files]
    right = check_pairing(images, masks, 11)
    assert not right.suspicious and right.own_best == 8
    assert 0.7 < right.own_score() and right.other_score() < right.own_score() - 0.1
    assert check_pairing(images, masks[1:] + masks[:1], 11).suspicious
