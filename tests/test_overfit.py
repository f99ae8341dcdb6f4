"""The sanity run, ``segcore run PIPELINE --overfit N``: an override of the pipeline for the ordinary trainer (the first
N training images, augmentation off, evaluated on themselves, stopped at mIoU 99); the quickstart learns 4 images,
a planted wiring bug is reported as not learnt."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segcore.builtin.datasets import render
from segcore.cli.main import main
from segcore.config import load_pipeline
from segcore.data.augment import BatchAugment
from segcore.data.datasets import build_split
from segcore.data.pairing import PairingCheck
from segcore.engine.overfit import overfit_config, overfit_verdict

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart.toml"


def test_overfit_is_an_override_of_the_pipeline(tmp_path, registry, write_pipeline, base_pipeline):
    cfg = load_pipeline(write_pipeline(base_pipeline + "\n[data.augment]\nhflip = 0.5\nscale = [0.5, 2.0]\ncrop_size = [32, 32]\n"
                                       "[train]\nepochs = 3\nema_decay = 0.9\n"), registry=registry)  # fmt: skip
    sane = overfit_config(cfg, 3, steps=40)
    assert (sane.data.subset, sane.data.batch_size, sane.data.train_split, sane.data.val_split) == (3, 3, "train", "train")
    assert BatchAugment(sane.data.augment, 255).sequence is None  # no flip, crop, rescale or jitter
    assert (sane.train.iters, sane.train.epochs, sane.train.stop_at_miou, sane.train.ema_decay) == (40, None, 0.99, None)
    assert sane.run.out_dir == "runs/default-overfit3" and sane.run.task == "train"
    train, val = build_split(sane.data, registry, "train"), build_split(sane.data, registry, "val")
    assert len(train) == len(val) == 3
    full = build_split(cfg.data, registry, "train")
    for i in range(3):  # the first three training images, in both sets
        torch.testing.assert_close(val[i]["image"], full[i]["image"])
        torch.testing.assert_close(train[i]["mask"], full[i]["mask"])


def test_the_trainer_stops_when_the_val_miou_reaches_stop_at_miou(tmp_path, write_pipeline, base_pipeline):
    pipeline = write_pipeline(base_pipeline.replace("[run]\n", f'[run]\ndevice = "cpu"\nout_dir = "{tmp_path / "run"}"\n') + """
[data]
batch_size = 4
[train]
iters = 30
eval_every = 2
stop_at_miou = 0.01
plots = false
""")
    assert main(["run", str(pipeline), "-q"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == 2  # the first evaluation stops it


def test_the_verdict_names_likely_causes():
    records = [{"kind": "train", "step": 10, "loss": 1.6}, {"kind": "train", "step": 300, "loss": 1.5}]
    learned, text = overfit_verdict({"mIoU": 0.31}, records, 4)
    assert not learned and "did NOT learn" in text and "mIoU 31.00 after 300 steps" in text
    assert "learning rate" in text and "wiring" not in text.split("Likely causes")[0]
    _, text = overfit_verdict({"mIoU": 0.4}, [records[0], {"kind": "train", "step": 300, "loss": 0.05}], 4)
    assert "labels may not belong to their images" in text
    learned, text = overfit_verdict({"mIoU": 0.991}, records, 4)
    assert learned and text.startswith("learned: the 4 training image(s) score mIoU 99.10")


def test_a_fit_on_labels_of_other_images_is_not_learnt():
    records = [{"kind": "train", "step": 10, "loss": 1.6}, {"kind": "train", "step": 200, "loss": 0.01}]
    names = ("a.png", "b.png")
    right = PairingCheck(names, ((0.8, 0.6), (0.55, 0.75)))
    learned, text = overfit_verdict({"mIoU": 0.99}, records, 2, right)
    assert learned and "their labels belong to them (2 of 2 image(s) line up best with their own label" in text
    swapped = PairingCheck(names, ((0.6, 0.8), (0.75, 0.55)))
    learned, text = overfit_verdict({"mIoU": 0.99}, records, 2, swapped)
    assert not learned and text.startswith("did NOT learn the images: the model fit them by heart (mIoU 99.00")
    assert "a.png lines up best with the label filed for b.png (0.80 against 0.60 for its own)" in text
    assert "labels may not belong" not in text


def _shapes_tree(root: Path, n: int, *, shift: int) -> None:
    """n shapes samples (64x64) as a folder dataset; mask i is stored with image (i + shift) % n."""
    samples = [render((64, 64), np.random.default_rng([7, i]), 4) for i in range(n)]
    for folder in ("images/train", "masks/train", "images/val", "masks/val"):
        (root / folder).mkdir(parents=True)
    for i, (image, _mask) in enumerate(samples):
        for split in ("train", "val"):
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            Image.fromarray(samples[(i - shift) % n][1]).save(root / "masks" / split / f"{i}.png")


def _quickstart_on(root: Path, out: Path, path: Path) -> Path:
    """The quickstart's model and optimiser on a folder dataset at *root*."""
    text = QUICKSTART.read_text()
    text = re.sub(r"\[data\.dataset\].*?\n\n", f'[data.dataset]\nname = "folder"\nroot = "{root}"\nimage_suffix = ".png"\n'
                  'class_names = ["background", "disc", "square", "triangle", "ring"]\n\n', text, flags=re.S)  # fmt: skip
    text = text.replace('out_dir = "runs/quickstart"', f'out_dir = "{out}"').replace("input_size = [128, 128]", "input_size = [64, 64]")
    path.write_text(text)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("shift", [0, 1], ids=["own labels", "labels shuffled"])
def test_a_folder_dataset_of_4_images_is_learnt_and_shuffled_labels_are_not(tmp_path, capsys, shift):
    """The quickstart's model on 4 shapes images at 64x64 in a folder tree: mIoU 48 / 87 / 90 / 92 at steps 25-100,
    97 at 300 (2 CPU cores). The same images with their masks rotated by one (labels shuffled) follow the same curve
    (44 / 88 / 92 / 93, 96.6 at 300): a model this size learns 4 images by heart whatever their labels. The pairing
    check tells them apart: shuffled, the run reports that it did not learn the images (exit 1) although it fit them."""
    pytest.importorskip("segcore_plugin_classic")  # the quickstart's hrnetv2_head
    _shapes_tree(tmp_path / "d", 4, shift=shift)
    pipeline = _quickstart_on(tmp_path / "d", tmp_path / "run", tmp_path / "p.toml")
    code = main(["run", str(pipeline), "--overfit", "4", "--device", "cpu", "-q"])
    out = capsys.readouterr().out
    miou = json.loads((tmp_path / "run-overfit4" / "metrics.json").read_text())["val"]["mIoU"]
    assert miou > 0.95  # fit either way
    if shift == 0:
        assert code == 0 and "learned: the 4 training image(s)" in out and "their labels belong to them (4 of 4" in out
    else:
        assert code == 1 and "did NOT learn the images: the model fit them by heart" in out
        assert "0.png lines up best with the label filed for 1.png (0.91 against 0.70" in out and "mis-sorted" in out


@pytest.mark.slow  # ~7 s: an overfit run on 2 idle AVX2 cores
def test_shuffled_labels_are_named_even_when_the_budget_is_short(tmp_path, capsys):
    """10 steps cannot fit 4 images; the verdict still names the mismatched labels as the cause, not the learning rate."""
    pytest.importorskip("segcore_plugin_classic")
    _shapes_tree(tmp_path / "d", 4, shift=1)
    pipeline = _quickstart_on(tmp_path / "d", tmp_path / "run", tmp_path / "p.toml")
    code = main(["run", str(pipeline), "--overfit", "4", "--overfit-steps", "10", "--device", "cpu", "-q"])
    out = capsys.readouterr().out
    assert code == 1 and "did NOT learn the images: but the labels do not belong" not in out
    assert "did NOT learn the images: the labels do not belong to their images: 0 of 4 image(s)" in out


@pytest.mark.slow
def test_the_quickstart_learns_4_images_within_the_default_steps(tmp_path, capsys):
    pytest.importorskip("segcore_plugin_classic")
    out_dir = tmp_path / "run"
    code = main(["run", str(QUICKSTART), "--overfit", "4", "--out-dir", str(out_dir), "--device", "cpu", "-q"])
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "run-overfit4" / "metrics.json").read_text())
    assert code == 0 and "learned: the 4 training image(s)" in out
    assert metrics["val"]["mIoU"] > 0.95 and metrics["step"] <= 300


def test_a_planted_bug_is_reported_as_not_learnt(tmp_path, capsys, write_pipeline, base_pipeline):
    """A learning rate of 1e-9 (the loss cannot fall): exit 1, "did NOT learn", the learning rate named."""
    pipeline = write_pipeline(base_pipeline.replace("[run]\n", f'[run]\ndevice = "cpu"\nout_dir = "{tmp_path / "run"}"\n')
                              + '[train]\nlr = 1e-9\nplots = false\n')  # fmt: skip
    code = main(["run", str(pipeline), "--overfit", "4", "--overfit-steps", "10", "-q"])
    out = capsys.readouterr().out
    assert code == 1 and "did NOT learn" in out and "learning rate" in out
