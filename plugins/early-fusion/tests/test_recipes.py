"""The recipe files: each loads; the fine-tuning chains (Mapillary Vistas -> Cityscapes, Mapillary Vistas -> CamVid,
COCO-Stuff -> VOC 2012 + SBD) start from the out_dir of their first step with the same model, so that only the
classifier (another class count) starts fresh."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from segcore import Dataset
from segcore.pipeline import load_pipeline

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CHAINS = [  # (second step, first step, classes first -> second)
    ("cityscapes_from_mapillary.toml", "mapillary.toml", (65, 19)),
    ("camvid_from_mapillary.toml", "mapillary.toml", (65, 11)),
    ("voc_from_coco_stuff.toml", "coco_stuff.toml", (171, 21)),
]


def classes(registry, cfg) -> int:
    return registry.get(Dataset, cfg.data.dataset.name).cls.meta.num_classes


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_recipe_loads_with_a_frozen_encoder(registry, name):
    cfg = load_pipeline(CONFIGS / name, registry=registry)
    backbone = cfg.model.backbone
    assert backbone.name == "timm" and backbone.frozen
    assert backbone.config.model_name == "resnet50.fb_swsl_ig1b_ft_in1k" and backbone.config.out_indices == (0, 1, 2, 3, 4)
    assert cfg.model.decoder.name == "reverse_hrnet"


@pytest.mark.parametrize("second, first, counts", CHAINS, ids=[c[0] for c in CHAINS])
def test_chain_starts_from_the_first_step_with_the_same_model(registry, second, first, counts):
    a = load_pipeline(CONFIGS / first, registry=registry)
    b = load_pipeline(CONFIGS / second, registry=registry)
    assert a.model.init_from is None and a.model.backbone.config.pretrained  # step 1 loads the swsl weights
    assert b.model.init_from == a.run.out_dir  # step 2 reads step 1's run folder (its weights include the encoder)
    same = attrs.evolve(b.model, init_from=None, backbone=attrs.evolve(
        b.model.backbone, config=attrs.evolve(b.model.backbone.config, pretrained=True)))  # fmt: skip
    assert same == a.model  # identical architecture: only the classifier differs, by the class count
    assert (classes(registry, a), classes(registry, b)) == counts
