"""The sweep files of configs/: table3.sweep.toml is seed 000's Table III (every row's params and FLOPs within
0.1 % of the paper's, every row the pipeline of configs/table3/), camvid_w18.sweep.toml its CPU-sized twin."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from segcore import load_pipeline
from segcore.cli.main import main
from segcore.pipeline import load_sweep

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# row -> its pipeline file in configs/table3/
TABLE3_FILES = {
    "HRNet": "hrnet", "+BFEM": "bfem", "+ECA": "eca", "+AAM": "aam", "+FUSM": "fusm", "+FUSM+CCSF": "fusm_ccsf",
    "+FUSM+CCSF+ECA": "fusm_ccsf_eca", "HRNet_S": "hrnet_s", "HRNet_L": "hrnet_l", "HRNet_M": "hrnet_m",
}  # fmt: skip


@pytest.fixture(scope="module")
def table3(registry):
    """Every row built on the meta device and counted at 512x1024 (about 30 s on 2 busy cores)."""
    return load_sweep(CONFIGS / "table3.sweep.toml", registry=registry)


def same_run(spec, path: Path, registry):
    """*path*'s pipeline as the sweep runs it: the run's seed and folder."""
    cfg = load_pipeline(path, registry=registry)
    return attrs.evolve(
        cfg, train=attrs.evolve(cfg.train, seed=spec.seed), run=attrs.evolve(cfg.run, out_dir=spec.cfg.run.out_dir)
    )


@pytest.mark.slow  # ~30 s: ten W48 models counted at 512x1024 (tests/test_counts.py checks each row's pipeline fast)
def test_table3_counts_within_0_1_percent_of_the_paper(table3, registry):
    """thop2x at 512x1024 beside BLOCKS.md 000.11: the rows without BFEM 721 params and 0.047 G under (the recipe's
    19 classes against the paper's 20), the BFEM rows 0.02 % over (the SyncBN share thop cannot see there)."""
    assert [r.name for r in table3.rows] == list(TABLE3_FILES)
    assert table3.convention == "thop2x" and table3.input_size == (512, 1024) and table3.seeds == (0, 1, 2)
    for row in table3.rows:
        count, pub = table3.counts[row.name], row.published
        assert set(pub) == {"miou", "params_m", "gflops"}
        assert abs(count.params / 1e6 - pub["params_m"]) / pub["params_m"] < 1e-3, row.name
        assert abs(count.macs / 1e9 - pub["gflops"]) / pub["gflops"] < 1e-3, row.name
        if "BFEM" not in row.name and row.name != "HRNet_S":
            assert round(count.params / 1e6 + 721e-6, 3) == pub["params_m"]
            assert 0.046 < pub["gflops"] - count.macs / 1e9 < 0.049


@pytest.mark.slow
def test_table3_rows_are_the_table3_pipelines(table3, registry):
    for row in table3.rows:
        for spec in table3.runs_of(row):
            assert spec.cfg == same_run(spec, CONFIGS / "table3" / f"{TABLE3_FILES[row.name]}.toml", registry), row.name


@pytest.mark.slow
def test_table3_dry_run_prints_every_row_beside_the_paper(capsys, registry):
    """The command of issue 19: ``segcore sweep plugins/hrnet-fusion/configs/table3.sweep.toml --dry-run``."""
    assert main(["sweep", str(CONFIGS / "table3.sweep.toml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0].removesuffix(" (base)") in TABLE3_FILES and len(cells) == 7:
            rows[cells[0].removesuffix(" (base)")] = cells[1:]
    assert list(rows) == list(TABLE3_FILES)
    for name, (params, p_params, p_diff, flops, p_flops, f_diff) in rows.items():
        assert abs(float(params) - float(p_params)) / float(p_params) < 1e-3, name
        assert abs(float(flops) - float(p_flops)) / float(p_flops) < 1e-3, name
        assert abs(float(p_diff.removesuffix(" %"))) < 0.1 and abs(float(f_diff.removesuffix(" %"))) < 0.1, name
    assert "ok: 10 row(s) build and pass segcore check" in out


@pytest.mark.slow  # ~28 s: every row checked on the meta device on 2 idle AVX2 cores
def test_camvid_w18_sweep_validates_and_switches_what_table3_switches(capsys, registry):
    """The CPU twin (W18, CamVid): a dry run exits 0; its rows' decoders are Table III's rows' decoders, its base
    pipeline is camvid_hrnet_l_w18.toml at a shorter budget."""
    path = CONFIGS / "camvid_w18.sweep.toml"
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert "ok: 4 row(s) build and pass segcore check" in capsys.readouterr().out
    sweep = load_sweep(path, registry=registry)
    assert [r.name for r in sweep.rows] == ["HRNet", "+FUSM", "+AAM", "HRNet_L"] and sweep.seeds == (0, 1, 2)
    for row in sweep.rows:
        spec = sweep.runs_of(row)[0]
        assert (
            spec.cfg.model.backbone
            == load_pipeline(CONFIGS / "camvid_hrnet_l_w18.toml", registry=registry).model.backbone
        )
        table3_row = load_pipeline(CONFIGS / "table3" / f"{TABLE3_FILES[row.name]}.toml", registry=registry)
        assert spec.cfg.model.decoder == table3_row.model.decoder
    hrnet_l = sweep.runs_of(sweep.rows[-1])[0]
    assert hrnet_l.cfg == same_run(hrnet_l, CONFIGS / "camvid_hrnet_l_w18_short.toml", registry)
    full = load_pipeline(CONFIGS / "camvid_hrnet_l_w18.toml", registry=registry)
    assert (hrnet_l.cfg.train.iters, hrnet_l.cfg.data.augment.crop_size) == (220, (224, 224))
    assert attrs.evolve(hrnet_l.cfg, data=full.data, train=full.train, run=full.run) == full
