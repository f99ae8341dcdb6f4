"""The recipes in configs/: one pipeline per experiment of the thesis (Tables I-V) and the CamVid pair. Each loads,
builds on the meta device with AFU exactly at the places BLOCKS 002.1 lists, and carries the thesis' settings."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
import torch

from segcore import Dataset, build_model
from segcore.pipeline import read_toml, structure_pipeline
from segcore_plugin_attention_fusion.afu import AFU

PLUGIN = Path(__file__).resolve().parents[1]
CONFIGS = PLUGIN / "configs"
RECIPES = sorted(p for p in CONFIGS.rglob("*.toml") if p.parent.name != "hosts" and not p.name.endswith(".sweep.toml"))
BENCH = PLUGIN.parents[1] / "bench" / "bench_afu.py"


def load(registry, path: Path):
    """The pipeline with pretrained weights switched off (no download on a test machine)."""
    raw = read_toml(path, registry=registry)
    raw["model"]["backbone"]["pretrained"] = False
    return structure_pipeline(raw, registry=registry, source=str(path))


def places(registry, cfg) -> int:
    num_classes = registry.get(Dataset, cfg.data.dataset.name).cls.meta.num_classes
    with torch.device("meta"):
        model = build_model(cfg.model, registry, num_classes=num_classes)
    return sum(isinstance(m, AFU) for m in model.modules())


def _id(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def test_every_thesis_experiment_has_a_recipe():
    names = {_id(p) for p in RECIPES}
    table1 = {f"table1/ocnet_r101-{v}.toml" for v in ("none", "avg", "max", "avg_max")}
    swin = [f"upernet_swin_{s}" for s in "tsb"]
    per_dataset = {"cityscapes": ["hrnetv2_w48", *swin, "deeplabv3_r18", "deeplabv3_r50", "deeplabv3_r101"],
                   "ade20k": [*swin, "deeplabv3_r50", "deeplabv3_r101"], "voc": [*swin, "deeplabv3_r50", "deeplabv3_r101"]}  # fmt: skip
    tables = {f"{d}/{h}{afu}.toml" for d, hosts in per_dataset.items() for h in hosts for afu in ("", "-afu")}
    camvid = {"camvid_base.toml", "camvid_afu.toml"} | {f"camvid_seeds/camvid_{v}_seed{s}.toml" for v in ("base", "afu") for s in (1, 2)}
    assert names == table1 | tables | camvid


# AFU modules per host when the module is on: UperNet 3 top-down + 3 to-1/4 + final; HRNetV2 head 3 streams + final;
# the single-level heads (DeepLabV3, OCNet) the final logits upsampling only.
EXPECTED_PLACES = {"upernet": 7, "hrnetv2": 4, "camvid": 4, "deeplabv3": 1, "ocnet": 1}


@pytest.mark.parametrize("path", RECIPES, ids=_id)
def test_recipe_builds_with_afu_exactly_at_its_places(registry, path):
    cfg = load(registry, path)
    with_afu = path.stem.endswith("-afu") or path.stem.startswith("camvid_afu") or (
        path.parent.name == "table1" and not path.stem.endswith("none"))  # fmt: skip
    expected = next(n for prefix, n in EXPECTED_PLACES.items() if path.stem.startswith(prefix))
    assert places(registry, cfg) == (expected if with_afu else 0)


@pytest.mark.parametrize("path", [p for p in RECIPES if p.stem.endswith("-afu") or p.stem.startswith("camvid_afu")], ids=_id)
def test_afu_recipe_differs_from_its_baseline_only_by_the_module(registry, path):
    base = path.with_name(path.name.replace("-afu", "").replace("camvid_afu", "camvid_base"))
    a, b = load(registry, path), load(registry, base)
    assert a.train == b.train and a.data == b.data and a.loss == b.loss and a.eval == b.eval
    assert a.model.backbone == b.model.backbone and a.model.decoder.config == b.model.decoder.config
    assert a.model.aux == b.model.aux and a.run.input_size == b.run.input_size and a.run.out_dir != b.run.out_dir
    assert {s.name for s in a.model.attention.values()} == {"afu"} and dict(b.model.attention) == {}


@pytest.mark.parametrize("variant, pool", [("none", None), ("avg", "avg"), ("max", "max"), ("avg_max", "avg+max")])
def test_table1_module_design_study(registry, variant, pool):
    """Section IV.A: Cityscapes, 512x512 crops, 40k iterations, fixed lr 1e-2 (AdamW, section IV), OHEM (BLOCKS 002.3
    defaults)."""
    cfg = load(registry, CONFIGS / "table1" / f"ocnet_r101-{variant}.toml")
    assert cfg.model.decoder.name == "ocnet" and cfg.model.backbone.config.model_name.startswith("resnet101c")
    assert cfg.data.dataset.name == "cityscapes" and cfg.data.augment.crop_size == (512, 512)
    assert (cfg.train.iters, cfg.train.schedule, cfg.train.lr, cfg.train.optimizer) == (40000, "constant", 0.01, "adamw")
    [loss] = cfg.loss
    assert loss.name == "ohem_ce" and (loss.config.thresh, loss.config.min_kept) == (0.7, 100000)
    assert (cfg.model.aux["dsn"].weight, cfg.model.dropout) == (0.4, 0.05)
    assert cfg.model.aux["dsn"].decoder.name == "ocnet_dsn"  # openseg's dsn: conv bias, align_corners True
    final = cfg.model.attention.get("final_upsample")
    assert (final.config.pool if final else None) == pool


@pytest.mark.parametrize("path", [p for p in RECIPES if p.parent.name in ("cityscapes", "ade20k", "voc")], ids=_id)
def test_tables_2_to_5_training_settings(registry, path):
    """Section IV.B: AdamW for every host (section IV), Swin lr 6e-5, ResNet/HRNet lr 0.01, poly decay; crops
    512x1024 (Cityscapes) or 512x512; 160k iterations; cross-entropy; auxiliary FCN head at 0.4 where mmseg has one."""
    cfg = load(registry, path)
    crop = {"cityscapes": (512, 1024), "ade20k": (512, 512), "voc": (512, 512)}[path.parent.name]
    dataset = {"cityscapes": "cityscapes", "ade20k": "ade20k", "voc": "voc_aug"}[path.parent.name]
    assert cfg.data.dataset.name == dataset and cfg.data.augment.crop_size == crop == cfg.run.input_size
    assert (cfg.train.iters, cfg.train.schedule, [s.name for s in cfg.loss]) == (160000, "poly", ["ce"])
    if "swin" in path.stem:
        assert (cfg.train.optimizer, cfg.train.lr, cfg.model.decoder.name) == ("adamw", 6e-5, "uper")
    else:
        train = cfg.train
        assert (train.optimizer, train.lr, train.betas, train.weight_decay) == ("adamw", 0.01, (0.9, 0.999), 0.01)
    aux = {name: head.weight for name, head in cfg.model.aux.items()}
    assert aux == ({} if "hrnetv2" in path.stem else {"fcn": 0.4})


def test_bench_times_both_models(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench_afu.py", "--hosts", "camvid", "--sizes", "65x97", "--iters", "2",
                                      "--warmup", "1", "--classes", "5", "--threads", "1"])  # fmt: skip
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(BENCH), run_name="__main__")
    assert done.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2 timed passes after 1 warm-up, batch 1")
    assert out[3].split()[:2] == ["camvid", "65x97"] and len(out) == 4
