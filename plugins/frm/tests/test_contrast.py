"""The hybrid loss CE + lambda x pixel contrast (seed 003 eq. 4-6, BLOCKS.md 003.6) and its training-only embedding
head: hand-computed values, hard/easy anchor sampling, and the head's absence from the inference model."""

from __future__ import annotations

import math

import safetensors.torch
import pytest
import torch
import torch.nn.functional as F

from segcore import ModelOutput, build_model
from segcore.pipeline import check_pipeline, totals
from segcore.pipeline import structure_pipeline
from segcore.pipeline import Trainer
from segcore_plugin_frm.contrast import PixelContrastLoss, PixelContrastLossConfig, contrast_loss, sample_anchors



def _loss(**kw) -> PixelContrastLoss:
    return PixelContrastLoss(PixelContrastLossConfig(**kw), num_classes=3, ignore_index=255)


def test_hand_built_case_has_the_closed_form_value():
    """One image, embeddings 2x4: class 0 at (1, 0), class 1 at (cos 60, sin 60), every prediction right. With
    max_views = 3 each class gives 3 easy anchors (which 3 does not matter: equal embeddings). For any anchor:
    2 positives with s = 1 / 0.1 = 10, 3 negatives with s = 0.5 / 0.1 = 5, so each pair's term is
    -[10 - log(e^10 + 3 e^5)] = log(1 + 3 e^-5) and so is the mean: 0.0200147..."""
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([math.cos(math.pi / 3), math.sin(math.pi / 3)])
    target = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    emb = torch.where(target[:, None] == 0, e0[None, :, None, None], e1[None, :, None, None])  # (1, 2, 2, 4)
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 5  # predicts the labels
    terms = _loss(max_views=3)(logits, target, ModelOutput(logits, {}, {"embedding": emb}))
    assert terms["contrast"].item() == pytest.approx(math.log(1 + 3 * math.exp(-5)), rel=1e-5)
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(logits, target).item())
    half = _loss(max_views=3, contrast_weight=0.5, ce=False)(logits, target, ModelOutput(logits, {}, {"embedding": emb}))
    assert set(half) == {"contrast"} and half["contrast"].item() == pytest.approx(0.5 * terms["contrast"].item())


def _naive(feats: torch.Tensor, classes: torch.Tensor, tau: float) -> torch.Tensor:
    """Eq. 6 term by term: mean over anchors of the mean over its positives."""
    per_anchor = []
    for a in range(len(classes)):
        neg = sum(math.exp(feats[a] @ feats[n] / tau) for n in range(len(classes)) if classes[n] != classes[a])
        terms = [-math.log(math.exp(feats[a] @ feats[p] / tau) / (math.exp(feats[a] @ feats[p] / tau) + neg))
                 for p in range(len(classes)) if p != a and classes[p] == classes[a]]  # fmt: skip
        if terms:
            per_anchor.append(sum(terms) / len(terms))
    return torch.tensor(sum(per_anchor) / len(per_anchor), dtype=torch.float64)


def test_contrast_loss_equals_eq6_term_by_term():
    torch.manual_seed(0)
    feats = F.normalize(torch.randn(9, 4, dtype=torch.float64), dim=1)
    classes = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])  # class 3 has no positive: left out as an anchor
    torch.testing.assert_close(contrast_loss(feats, classes, 0.1), _naive(feats, classes, 0.1))


@pytest.mark.parametrize("n_hard, n_easy, kept", [(10, 10, (3, 3)), (1, 10, (1, 5)), (10, 2, (4, 2))])
def test_anchor_sampling_takes_half_hard_half_easy_and_fills_in(n_hard, n_easy, kept):
    """Class 1 with n_hard wrongly and n_easy rightly predicted pixels, max_views 6 -> 6 anchors of it."""
    labels = torch.tensor([[1] * (n_hard + n_easy) + [255] * 9])
    preds = torch.tensor([[2] * n_hard + [1] * n_easy + [1] * 9])
    images, pixels, classes = sample_anchors(labels, preds, max_samples=1024, max_views=6, ignore_index=255)
    assert classes.tolist() == [1] * 6 and images.tolist() == [0] * 6
    hard = int((pixels < n_hard).sum())
    assert (hard, 6 - hard) == kept
    assert len(set(pixels.tolist())) == 6 and int(pixels.max()) < n_hard + n_easy  # distinct, never an ignored pixel


def test_anchor_sampling_needs_more_than_max_views_pixels_and_shares_max_samples():
    labels = torch.tensor([[0] * 7 + [1] * 6 + [2] * 20, [2] * 33])
    images, _, classes = sample_anchors(labels, labels, max_samples=10, max_views=6, ignore_index=255)
    # class 1 has 6 pixels, not more than 6: out; (0, 0), (0, 2), (1, 2) share 10 -> min(10 // 3, 6) = 3 each
    assert list(zip(images.tolist(), classes.tolist())) == [(0, 0)] * 3 + [(0, 2)] * 3 + [(1, 2)] * 3
    empty = sample_anchors(torch.full((1, 5), 255), torch.zeros(1, 5, dtype=torch.long), max_samples=10, max_views=1,
                           ignore_index=255)  # fmt: skip
    assert [len(t) for t in empty] == [0, 0, 0]


def test_loss_without_embedding_is_the_cross_entropy():
    """In evaluation mode the training-only head does not run: the contrastive term is 0."""
    logits, target = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 8, 8))
    terms = _loss()(logits, target, ModelOutput(logits, {}, {}))
    assert terms["contrast"].item() == 0.0
    torch.testing.assert_close(terms["ce"], F.cross_entropy(logits, target))


def _tiny_pipeline(tmp_path, contrast: bool = True) -> dict:
    raw = {
        "model": {
            "backbone": {"name": "van", "dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1]},
            "enhancers": [{"name": "frm", "channels": 16, "ffn_channels": 8}],
            "decoder": {"name": "sfnet_fpn", "channels": 16},
            "aux": {"embedding": {"source": "decoder", "output": "extra", "decoder": {"name": "pixel_embed", "dim": 8}}},
            "dropout": 0.0,
        },
        "data": {"dataset": {"name": "shapes", "size": [64, 64], "num_train": 8, "num_val": 2}, "batch_size": 4},
        "loss": [{"name": "pixel_contrast", "heads": ["main"], "max_views": 20}],
        "train": {"iters": 1, "optimizer": "adamw", "lr": 0.003, "log_every": 1, "plots": False},
        "run": {"out_dir": str(tmp_path / "run"), "device": "cpu"},
    }
    return raw


def test_embedding_head_is_training_only(registry, tmp_path):
    cfg = structure_pipeline(_tiny_pipeline(tmp_path), registry=registry)
    model = build_model(cfg.model, registry, num_classes=5)
    out = model.train()(torch.rand(2, 3, 64, 64))
    assert out.extras["embedding"].shape == (2, 8, 16, 16)  # the FPN map's 1/4 grid
    torch.testing.assert_close(out.extras["embedding"].norm(dim=1), torch.ones(2, 16, 16))
    assert model.eval()(torch.rand(2, 3, 64, 64)).extras == {}

    rows = check_pipeline(cfg, registry, input_size=(64, 64))
    sums = totals(rows)
    head = 16 * 8 + 8
    assert [r.params for r in rows if r.training_only] == [head]
    assert sums.inference.params == sums.total.params - head == sum(p.numel() for n, p in model.named_parameters()
                                                                     if not n.startswith("aux."))  # fmt: skip

    trainer = Trainer.from_config(cfg, registry, progress=False)
    trainer.fit()
    logged = [r for r in trainer.log.read() if r["kind"] == "train"]
    assert {"loss.pixel_contrast.ce", "loss.pixel_contrast.contrast"} <= set(logged[0])
    assert logged[0]["loss.pixel_contrast.contrast"] > 0  # shapes images have classes with > 20 pixels at 16x16
    saved = safetensors.torch.load_file(str(tmp_path / "run" / "model.safetensors"))
    assert not [k for k in saved if k.startswith("aux.")] and "aux.embedding.decoder.proj.weight" in model.state_dict()
    assert sum(t.numel() for k, t in saved.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) \
        == sums.inference.params
