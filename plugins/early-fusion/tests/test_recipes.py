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
    ("cityscapes_from_mapillary_half.toml", "mapillary_half.toml", (65, 19)),
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


# HRNet-Semantic-Segmentation lib/datasets/cityscapes.py: class_weights, one per train id
HRNET_CITYSCAPES_WEIGHTS = (0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023, 0.9539,
                            0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507)  # fmt: skip


@pytest.mark.parametrize("name", ["cityscapes_from_mapillary.toml", "cityscapes_from_mapillary_half.toml"])
def test_cityscapes_recipes_use_hrnets_class_weighted_ce(registry, name):
    cfg = load_pipeline(CONFIGS / name, registry=registry)
    [loss] = cfg.loss
    assert loss.name == "ce" and loss.config.class_weights == HRNET_CITYSCAPES_WEIGHTS
    assert len(HRNET_CITYSCAPES_WEIGHTS) == classes(registry, cfg) == 19


@pytest.mark.parametrize("half, full", [("mapillary_half.toml", "mapillary.toml"),
                                        ("cityscapes_from_mapillary_half.toml", "cityscapes_from_mapillary.toml")])
def test_five_stream_files_are_their_four_stream_twins_with_the_half_stream(registry, half, full):
    """The seed's 5-stream variant: the 4-stream file with the decoder's 1/2 stream on (the model of the preset
    early_fusion_half_w48, as the 4-stream files' is early_fusion_w48's) and its own run folder."""
    a, b = load_pipeline(CONFIGS / half, registry=registry), load_pipeline(CONFIGS / full, registry=registry)
    assert a.model.decoder.config.half_stream and not b.model.decoder.config.half_stream
    assert a.model.decoder.config == attrs.evolve(b.model.decoder.config, half_stream=True)
    assert attrs.evolve(a.model, decoder=b.model.decoder, init_from=b.model.init_from) == b.model
    assert (a.data, a.loss, a.train, a.eval) == (b.data, b.loss, b.train, b.eval) and a.run.out_dir != b.run.out_dir
