"""The sanity run (``segcore run PIPELINE --overfit N``): can the pipeline learn N training images by heart?

A pipeline that cannot fit a handful of images will not fit thousands: the labels do not belong to the images,
the model's output does not depend on its input, or the learning rate is off. `overfit_config` turns a pipeline
into that check for the ordinary trainer (no loop of its own): the first N images of the training split,
augmentation off, evaluated on the same N images every few steps, stopped once their mIoU reaches the target;
`overfit_verdict` reads the result.

A network learns a few images by heart whatever labels they carry, so fitting them does not show that the labels
belong to their images (a shuffled or mis-sorted file list trains to the same curve). `overfit_pairing` checks
that without a model (`segcore.data.pairing`: each image's edges against every label's class boundaries), and
the verdict counts a fit on labels that belong to other images as not learnt.
"""

from __future__ import annotations

__all__ = ["LEARNED_MIOU", "STOP_MIOU", "overfit_config", "overfit_pairing", "overfit_verdict"]

from collections.abc import Sequence
from typing import Any

import attrs

from segcore.config.schema import AugmentConfig, PipelineConfig
from segcore.contracts.registry import Registry
from segcore.data.datasets import build_split
from segcore.data.pairing import PairingCheck, dataset_pairing
from segcore.errors import ConfigError

STOP_MIOU = 0.99  # training stops once the N images score this
LEARNED_MIOU = 0.95  # at least this at the end: learned


def overfit_config(cfg: PipelineConfig, n: int, *, steps: int = 300, eval_every: int = 25) -> PipelineConfig:
    """*cfg* as a sanity run on its first *n* training images: those images are the training and the validation
    set (``data.subset``; a ``random_split`` is read from its source split), no augmentation, one budget of
    *steps* optimizer steps that stops at `STOP_MIOU` (``train.stop_at_miou``), no EMA, frozen phase, gradient
    accumulation or intermediate checkpoints; the run goes to ``<run.out_dir>-overfit<n>``."""
    if n <= 0 or steps <= 0:
        raise ConfigError(f"--overfit takes a number of images > 0 and a number of steps > 0, got {n} and {steps}")
    data = cfg.data
    split = data.random_split.source if data.random_split is not None else data.train_split
    data = attrs.evolve(data, train_split=split, val_split=split, random_split=None, subset=n,
                        batch_size=min(data.batch_size, n), augment=AugmentConfig(hflip=0.0))  # fmt: skip
    train = attrs.evolve(cfg.train, epochs=None, iters=steps, eval_every=min(eval_every, steps), checkpoint_every=0,
                         checkpoint_every_iters=0, stop_at_miou=STOP_MIOU, ema_decay=None, freeze_backbone=0,
                         grad_accum_steps=1, warmup_iters=min(cfg.train.warmup_iters, steps // 10))  # fmt: skip
    run = attrs.evolve(cfg.run, task="train", out_dir=f"{cfg.run.out_dir.rstrip('/')}-overfit{n}")
    return attrs.evolve(cfg, data=data, train=train, eval=attrs.evolve(cfg.eval, plots=min(n, cfg.eval.plots)), run=run)


def overfit_pairing(cfg: PipelineConfig, registry: Registry) -> PairingCheck:
    """Do the sanity run's images (*cfg* as `overfit_config` made it) carry their own labels?"""
    train = build_split(cfg.data, registry, "train")
    return dataset_pairing(train, range(len(train)))


def overfit_verdict(metrics: dict[str, Any], records: Sequence[dict[str, Any]], n: int,
                    pairing: PairingCheck | None = None) -> tuple[bool, str]:  # fmt: skip
    """(learned?, what to tell the user) from the final metrics on the N images, the run's log records and, when
    given, whether the images carry their own labels (`overfit_pairing`)."""
    miou = float(metrics["mIoU"])
    train = [r for r in records if r["kind"] == "train" and "loss" in r]
    evals = [r for r in records if r["kind"] == "eval" and "mIoU" in r]
    step = train[-1]["step"] if train else (evals[-1]["step"] if evals else 0)
    losses = f"loss {train[0]['loss']:.3f} at step {train[0]['step']} -> {train[-1]['loss']:.3f}" if train else "no loss logged"
    mismatched = pairing is not None and pairing.suspicious
    if miou >= LEARNED_MIOU and not mismatched:
        pairs = ("" if pairing is None or not pairing.compared else
                 f"; their labels belong to them ({pairing.explain()})")  # fmt: skip
        return True, (f"learned: the {n} training image(s) score mIoU {100 * miou:.2f} after {step} steps ({losses})"
                      f"{pairs}; the pipeline can fit its data, start the real run")  # fmt: skip
    if mismatched:
        fitted = (f"the model fit them by heart (mIoU {100 * miou:.2f} after {step} steps, {losses}), which a "
                  "network does with any labels on a few images, but " if miou >= LEARNED_MIOU else "")  # fmt: skip
        return False, (f"did NOT learn the images: {fitted}the labels do not belong to their images: "
                       f"{pairing.explain()}. The file list is likely shuffled or mis-sorted (images and masks listed "  # type: ignore[union-attr]
                       "in different orders, stems that do not match); `segcore data verify` checks the whole "
                       "dataset.")  # fmt: skip
    causes = []
    if train and train[-1]["loss"] > 0.5 * train[0]["loss"]:
        causes.append("the loss hardly fell: the learning rate may be far too low (or too high: watch for spikes), "
                      "the backbone frozen, or the logits not wired to the input (a decoder that ignores its features)")  # fmt: skip
    else:
        labels = ("the labels may not belong to their images (a shuffled or mis-sorted file list, *_color vs "
                  "*_labelIds masks), or " if pairing is None or not pairing.compared else "")  # fmt: skip
        causes.append(f"the loss fell but the images are not segmented right: {labels}the class ids may be mapped "
                      "wrong (`segcore data verify` checks the label values)")  # fmt: skip
    causes.append("a train/eval mismatch (normalisation, resize, ignore_index)")
    return False, (f"did NOT learn: the {n} training image(s) score mIoU {100 * miou:.2f} after {step} steps "
                   f"({losses}); near 100 was expected. Likely causes: " + "; ".join(causes) + ".")  # fmt: skip
