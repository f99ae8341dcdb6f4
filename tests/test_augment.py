"""segcore.augment's kornia augmentations: ScaleCrop (rescale + padded crop) and FastColorJitter (kornia's ColorJitter
with cheaper arithmetic), and BatchAugment's AugmentationSequential around them. The label/alignment/ignore-padding
checks on whole batches are in tests/test_data.py."""

from __future__ import annotations

import itertools

import kornia.augmentation as K
import pytest
import torch
from kornia.constants import DataKey
from kornia.geometry.transform import warp_affine

from segcore.data.augment import AugmentConfig, BatchAugment, FastColorJitter, ScaleCrop


def _crop_params(scale: list[float], origin: list[list[float]], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    return {
        "scale": torch.tensor(scale), "origin": torch.tensor(origin),
        "output_size": torch.tensor([list(size)] * len(scale)), "batch_prob": torch.ones(len(scale)),
    }  # fmt: skip


# -- ScaleCrop -------------------------------------------------------------------------------------------------------


def test_scale_crop_at_scale_one_is_a_shifted_window_with_zero_padding():
    image = torch.arange(1.0, 1.0 + 2 * 6 * 7).view(1, 2, 6, 7)
    # sample 0: the window at x 2, y 1 lies inside; sample 1: it starts one pixel left of and above the image
    out = ScaleCrop((4, 5))(image.expand(2, -1, -1, -1), params=_crop_params([1.0, 1.0], [[2, 1], [-1, -1]], (4, 5)))
    assert out.shape == (2, 2, 4, 5)
    torch.testing.assert_close(out[0], image[0, :, 1:5, 2:7])
    # the first row and column are one pixel outside: zero (to grid_sample's float rounding of the coordinates)
    torch.testing.assert_close(out[1, :, 0], torch.zeros(2, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, :, :, 0], torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, :, 1:, 1:], image[0, :, 0:3, 0:4])


def test_scale_crop_at_scale_two_interpolates_half_pixels():
    # source pixel (x, y) holds x-value + 10 y
    image = (torch.tensor([0.0, 2.0, 4.0, 8.0]) + 10 * torch.arange(3.0)[:, None]).view(1, 1, 3, 4)
    # crop pixel (x', y') = 2 * ((x, y) - (0.5, 0)): x' = 0..4 sample source x = 0.5, 1, 1.5, 2, 2.5; y' = 0..2 sample
    # y = 0, 0.5, 1
    params = _crop_params([2.0], [[0.5, 0.0]], (3, 5))
    out = ScaleCrop((3, 5))(image, params=params)
    row = torch.tensor([1.0, 2.0, 3.0, 4.0, 6.0])
    torch.testing.assert_close(out[0, 0], torch.stack([row, row + 5, row + 10]))
    # nearest, away from halves: from (0.25, 0.25) x = 0.25, 0.75, 1.25, 1.75, 2.25 and y = 0.25, 0.75, 1.25
    nearest = ScaleCrop((3, 5), resample="nearest")(image, params=_crop_params([2.0], [[0.25, 0.25]], (3, 5)))
    row = torch.tensor([0.0, 2.0, 2.0, 4.0, 4.0])
    torch.testing.assert_close(nearest[0, 0], torch.stack([row, row + 10, row + 10]))


@pytest.mark.parametrize("align_corners", [True, False])
def test_scale_crop_matches_kornia_warp_affine_with_its_matrix(align_corners):
    torch.manual_seed(0)
    image = torch.rand(4, 3, 37, 53)
    op = ScaleCrop((20, 30), (0.5, 2.0), align_corners=align_corners)
    out = op(image)
    matrix = op.transform_matrix  # source pixel -> crop pixel: [[s, 0, -s x0], [0, s, -s y0], [0, 0, 1]]
    s, origin = op._params["scale"], op._params["origin"]
    torch.testing.assert_close(matrix[:, 0, 0], s)
    torch.testing.assert_close(matrix[:, :2, 2], -s[:, None] * origin)
    ref = warp_affine(image, matrix[:, :2], (20, 30), align_corners=align_corners)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("image_size", "crop", "scale"), [((64, 80), (32, 40), (0.5, 2.0)), ((20, 24), (48, 64), (1.0, 1.0))]
)
def test_scale_crop_generator_places_the_window_inside_or_around_the_image(image_size, crop, scale):
    torch.manual_seed(0)
    params = ScaleCrop(crop, scale).forward_parameters((400, 3, *image_size))
    s, origin = params["scale"], params["origin"]
    assert s.min() >= scale[0] and s.max() <= scale[1]
    assert torch.equal(params["output_size"], torch.tensor([list(crop)] * 400))
    # room = last source pixel centre - the window's extent in source pixels, per axis (x, y); origin / room in [0, 1]
    room = torch.tensor([image_size[1] - 1, image_size[0] - 1]) - torch.tensor([crop[1] - 1, crop[0] - 1]) / s[:, None]
    fraction = origin / room
    assert fraction.min() >= 0 and fraction.max() <= 1 and fraction.max() > 0.9 and fraction.min() < 0.1


def test_scale_crop_without_a_size_keeps_the_input_size():
    torch.manual_seed(0)
    image, mask = torch.rand(2, 3, 30, 44), torch.randint(0, 4, (2, 30, 44))
    out_image, out_mask = BatchAugment(AugmentConfig(scale=(0.5, 2.0), hflip=0.0), 255)(image, mask)
    assert out_image.shape == (2, 3, 30, 44) and out_mask.shape == (2, 30, 44)


# -- FastColorJitter ---------------------------------------------------------------------------------------------------


def _test_image() -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 20)
    x[0, :, :4] = 0.5  # gray: hue 0, delta 0
    x[1, 0, :4] = x[1, 1, :4]  # red and green tied
    x[2] = (x[2] * 4).round() / 4  # many ties, exact 0 and 1
    x[3, :, :4] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # pure red
    return x


def test_fast_colour_jitter_matches_kornia_colour_jitter_for_every_order():
    x = _test_image()
    ref, ours = K.ColorJitter(0.4, 0.4, 0.4, 0.5), FastColorJitter(0.4, 0.4, 0.4, 0.5)
    for order in itertools.permutations(range(4)):
        params = ref.forward_parameters(x.shape)
        params["order"] = torch.tensor(order)
        torch.testing.assert_close(ours(x, params=dict(params)), ref(x, params=dict(params)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("hue", torch.linspace(-0.5, 0.5, 21).tolist())
def test_fast_hue_matches_kornia_round_trip(hue):
    x = _test_image()
    params = {"brightness_factor": torch.ones(6), "contrast_factor": torch.ones(6), "saturation_factor": torch.ones(6),
              "hue_factor": torch.full((6,), hue), "order": torch.arange(4)}  # fmt: skip
    out = FastColorJitter(hue=0.5)(x, params=dict(params))
    torch.testing.assert_close(out, K.ColorJitter(hue=0.5)(x, params=dict(params)), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("rgb", "turns", "expected"),
    [
        ((1.0, 0.0, 0.0), 1 / 3, (0.0, 1.0, 0.0)),  # red + 120 degrees = green
        ((1.0, 0.0, 0.0), -1 / 3, (0.0, 0.0, 1.0)),  # red - 120 degrees = blue
        ((1.0, 0.5, 0.0), 1 / 6, (0.5, 1.0, 0.0)),  # orange (30 degrees) + 60 = chartreuse (90)
        ((0.8, 0.2, 0.4), 0.5, (0.2, 0.8, 0.6)),  # hue 340 + 180 = 160 keeps max 0.8, min 0.2
        ((0.3, 0.3, 0.3), 0.25, (0.3, 0.3, 0.3)),  # gray has no hue
    ],
)
def test_fast_hue_by_hand(rgb, turns, expected):
    x = torch.tensor(rgb).view(1, 3, 1, 1)
    params = {"brightness_factor": torch.ones(1), "contrast_factor": torch.ones(1), "saturation_factor": torch.ones(1),
              "hue_factor": torch.tensor([turns]), "order": torch.arange(4)}  # fmt: skip
    out = FastColorJitter(hue=0.5)(x, params=params)
    torch.testing.assert_close(out.view(3), torch.tensor(expected), atol=1e-6, rtol=0)


def test_brightness_contrast_saturation_by_hand():
    x = torch.tensor([0.2, 0.4, 0.9]).view(1, 3, 1, 1).repeat(1, 1, 1, 2)
    x[..., 1] = torch.tensor([0.0, 0.0, 0.0]).view(1, 3, 1)  # a black pixel beside it
    ones = torch.ones(1)

    def run(b: float, c: float, s: float) -> torch.Tensor:
        params = {"brightness_factor": torch.tensor([b]), "contrast_factor": torch.tensor([c]),
                  "saturation_factor": torch.tensor([s]), "hue_factor": 0 * ones, "order": torch.arange(4)}  # fmt: skip
        return FastColorJitter(0.5, 0.5, 0.5)(x, params=params)[0, :, 0]

    torch.testing.assert_close(run(1.5, 1, 1)[:, 0], torch.tensor([0.3, 0.6, 1.0]))  # x * 1.5, clamped
    # contrast 0.5 around the mean gray: gray(0.2, 0.4, 0.9) = 0.0598 + 0.2348 + 0.1026 = 0.3972, black 0 -> mean 0.1986
    torch.testing.assert_close(run(1, 0.5, 1)[:, 0], torch.tensor([0.2, 0.4, 0.9]) * 0.5 + 0.1986 * 0.5)
    torch.testing.assert_close(run(1, 1, 0.0)[:, 0], torch.full((3,), 0.3972))  # saturation 0: the pixel's gray


def test_jitter_probability_zero_leaves_the_image():
    image, mask = torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)
    aug = BatchAugment(AugmentConfig(hflip=0.0, brightness=0.4, hue=0.2, jitter_p=0.0), 255)
    out_image, out_mask = aug(image, mask)
    assert torch.equal(out_image, image) and torch.equal(out_mask, mask)


# -- BatchAugment ------------------------------------------------------------------------------------------------------


def test_batch_augment_is_one_kornia_sequence_with_mask_data_keys():
    aug = BatchAugment(AugmentConfig(scale=(0.5, 2.0), crop_size=(32, 32), brightness=0.2), 255)
    assert isinstance(aug.sequence, K.AugmentationSequential)
    assert [type(op) for op in aug.sequence.children()] == [ScaleCrop, K.RandomHorizontalFlip, FastColorJitter]
    assert aug.sequence.data_keys == [DataKey.get("image"), DataKey.get("mask")]
    aug(torch.rand(2, 3, 24, 20), torch.zeros(2, 24, 20, dtype=torch.long))
    # the ScaleCrop's output_size parameter tells the container the new size: the ops after it draw for 32x32
    shapes = [p.data["forward_input_shape"].tolist() for p in aug.sequence._params]
    assert shapes == [[2, 3, 24, 20], [2, 3, 32, 32], [2, 3, 32, 32]]
    assert BatchAugment(AugmentConfig(hflip=0.0), 255).sequence is None


def test_full_flip_flips_image_and_mask():
    torch.manual_seed(0)
    image, mask = torch.rand(2, 3, 5, 7), torch.randint(0, 4, (2, 5, 7))
    out_image, out_mask = BatchAugment(AugmentConfig(hflip=1.0), 255)(image, mask)
    assert torch.equal(out_image, image.flip(-1)) and torch.equal(out_mask, mask.flip(-1))


def test_mask_follows_the_image_crop_nearest_and_padding_is_ignore():
    torch.manual_seed(3)
    image = torch.rand(3, 3, 24, 32)
    mask = torch.randint(0, 5, (3, 24, 32))
    aug = BatchAugment(AugmentConfig(scale=(0.5, 2.0), crop_size=(40, 40), hflip=0.0), ignore_index=255)
    out_image, out_mask = aug(image, mask)
    crop_params = aug.sequence._params[0].data  # the ScaleCrop's draw, replayed on the mask by hand
    replay = ScaleCrop((40, 40), resample="nearest")((mask[:, None] + 1).float(), params=dict(crop_params))
    expected = torch.where(replay[:, 0] == 0, 255, replay[:, 0].long() - 1)
    assert torch.equal(out_mask, expected)
    torch.testing.assert_close(out_image, ScaleCrop((40, 40))(image, params=dict(crop_params)))
    assert (out_mask == 255).any()  # a crop 40x40 from a 24x32 image at scale <= 2 sometimes leaves it


@pytest.mark.slow
def test_compiled_colour_steps_match_eager():
    x = _test_image()
    eager, compiled = FastColorJitter(0.4, 0.4, 0.4, 0.1), FastColorJitter(0.4, 0.4, 0.4, 0.1, compile=True)
    torch.manual_seed(0)
    params = eager.forward_parameters(x.shape)
    torch.testing.assert_close(compiled(x, params=dict(params)), eager(x, params=dict(params)), atol=1e-5, rtol=0)
