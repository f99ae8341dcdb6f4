"""The sweep files of configs/: the thesis' Tables I-V as sweeps (every row the pipeline file of that run, Table IV's
GFLOPs within 0.1 % of the thesis' with AFU's own increments shown as they are), and camvid_afu.sweep.toml, the
CPU-sized study of AFU's variants."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import attrs
import pytest

from segcore import load_pipeline
from segcore.cli.main import main
from segcore.pipeline import load_sweep

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@cache
def sweep(name: str, registry):
    return load_sweep(CONFIGS / name, registry=registry)


def hosts(folder: str, resnets: tuple[str, ...]) -> dict[str, str]:
    """Tables III-V: row -> pipeline file, UperNet on Swin-T/S/B then DeepLabV3 on the ResNets, each +/- AFU."""
    out = {}
    for tag, stem in [(f"UperNet Swin-{s.upper()}", f"upernet_swin_{s}") for s in "tsb"] + \
                     [(f"DeepLabV3 {r.upper()}", f"deeplabv3_{r}") for r in resnets]:  # fmt: skip
        out[tag] = f"{folder}/{stem}"
        out[f"{tag} + avg"] = f"{folder}/{stem}-afu"
    return out


TABLES = {
    "table1.sweep.toml": {"OCNet": "table1/ocnet_r101-none", "OCNet + avg": "table1/ocnet_r101-avg",
                          "OCNet + max": "table1/ocnet_r101-max", "OCNet + avg+max": "table1/ocnet_r101-avg_max"},
    "table2.sweep.toml": {"OCNet": "table1/ocnet_r101-none", "OCNet + avg": "table1/ocnet_r101-avg",
                          "HRNetV2-W48": "cityscapes/hrnetv2_w48", "HRNetV2-W48 + avg": "cityscapes/hrnetv2_w48-afu"},
    "table3.sweep.toml": hosts("cityscapes", ("r18", "r50", "r101")),
    "table4.sweep.toml": hosts("ade20k", ("r50", "r101")),
    "table5.sweep.toml": hosts("voc", ("r50", "r101")),
}  # fmt: skip


def same_run(spec, path: Path, registry):
    """*path*'s pipeline as the sweep runs it: the run's seed and folder."""
    cfg = load_pipeline(path, registry=registry)
    return attrs.evolve(
        cfg, train=attrs.evolve(cfg.train, seed=spec.seed), run=attrs.evolve(cfg.run, out_dir=spec.cfg.run.out_dir)
    )


@pytest.mark.parametrize("name", TABLES)
@pytest.mark.slow  # ~7-13 s a table: every row built on 2 idle AVX2 cores
def test_every_row_is_the_pipeline_file_of_that_run(name, registry):
    """Each row (hosts switched by set/unset over one base) resolves to the very pipeline of its per-run file, and
    carries the thesis' mIoU."""
    s = sweep(name, registry)
    assert [r.name for r in s.rows] == list(TABLES[name]) and s.seeds == (0, 1, 2) and s.convention == "mmcv"
    for row in s.rows:
        assert "miou" in row.published, row.name
        for spec in s.runs_of(row):
            assert spec.cfg == same_run(spec, CONFIGS / f"{TABLES[name][row.name]}.toml", registry), row.name


def test_table4_gflops_beside_the_thesis(registry):
    """ADE20K at 512x512 under mmcv's rule: the hosts within 0.01 % of Table IV; AFU adds the elements it pools,
    0.075 G on UperNet and 0.039 G on DeepLabV3, where the thesis writes +0.08 (Swin-T/S) and +0.06 (Swin-B and
    the ResNets). Both stay within 0.1 % of the thesis' totals; the dry run prints the difference."""
    s = sweep("table4.sweep.toml", registry)
    counts = {r.name: s.counts[r.name] for r in s.rows}
    for row in s.rows:
        assert abs(counts[row.name].macs / 1e9 - row.published["gflops"]) / row.published["gflops"] < 1e-3, row.name
        assert "params_m" not in row.published  # the thesis' params count the auxiliary head, these do not
    for host in ("UperNet Swin-T", "UperNet Swin-S", "UperNet Swin-B", "DeepLabV3 R50", "DeepLabV3 R101"):
        base, afu = counts[host], counts[f"{host} + avg"]
        assert afu.params == base.params
        places = 150 * 512 * 512 + (512 * (32 * 32 + 64 * 64 + 4 * 128 * 128) if "UperNet" in host else 0)
        assert afu.macs - base.macs == places


@pytest.mark.slow  # ~10 s: every row checked on 2 idle AVX2 cores
def test_camvid_afu_sweep_validates_and_its_first_rows_are_the_readme_runs(capsys, registry):
    """A dry run exits 0; "no AFU" and "avg literal" at seeds 0, 1, 2 are camvid_{base,afu}.toml and
    camvid_seeds/camvid_{base,afu}_seed{1,2}.toml; every other row changes only AFU's options."""
    path = CONFIGS / "camvid_afu.sweep.toml"
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert "ok: 6 row(s) build and pass segcore check" in capsys.readouterr().out
    s = sweep("camvid_afu.sweep.toml", registry)
    assert [r.name for r in s.rows] == ["no AFU", "avg literal", "avg rescaled", "avg spatial rescaled", "max literal",
                                        "avg+max literal"] and s.seeds == (0, 1, 2)  # fmt: skip
    for row, stem in zip(s.rows[:2], ("camvid_base", "camvid_afu")):
        for spec in s.runs_of(row):
            file = CONFIGS / (f"{stem}.toml" if spec.seed == 0 else f"camvid_seeds/{stem}_seed{spec.seed}.toml")
            assert spec.cfg == same_run(spec, file, registry), spec.label
    literal = s.runs_of(s.rows[1])[0].cfg
    for row in s.rows[2:]:
        cfg = s.runs_of(row)[0].cfg
        assert cfg != literal and attrs.evolve(cfg, model=literal.model, run=literal.run) == literal
        assert (cfg.model.backbone, cfg.model.decoder.name) == (literal.model.backbone, literal.model.decoder.name)
