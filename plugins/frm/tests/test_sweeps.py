"""The sweep files of configs/: seed 003's Table 2 (FRM, PPM, DAPPM, with and without the contrastive term) and
Table 3 (BDD100K), every paper row the pipeline file of that run, and camvid_context.sweep.toml, the CPU twin."""

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


def same_run(spec, path: Path, registry):
    """*path*'s pipeline as the sweep runs it: the run's seed and folder."""
    cfg = load_pipeline(path, registry=registry)
    return attrs.evolve(
        cfg, train=attrs.evolve(cfg.train, seed=spec.seed), run=attrs.evolve(cfg.run, out_dir=spec.cfg.run.out_dir)
    )


@pytest.mark.parametrize("name, files", [
    ("table2.sweep.toml", {"FRM": "table2_frm", "PPM": "table2_ppm", "DAPPM": "table2_dappm"}),
    ("table3.sweep.toml", {"FRM": "bdd100k_frm"}),
])  # fmt: skip
def test_paper_rows_are_the_pipeline_files_and_ce_rows_drop_only_the_term(name, files, registry):
    """The paper's rows are its pipeline files; each "X, CE only" row is X without the embedding head and with
    plain CE, and counts the same (the head is training only). Against the paper: the constant offset of README
    "Parameters and FLOPs" (params -0.36 %, GFLOPs -1.1 %), the same in every row."""
    s = sweep(name, registry)
    assert [r.name for r in s.rows] == [*files, *(f"{n}, CE only" for n in files)] and s.convention == "mmcv"
    for row in s.rows:
        specs = s.runs_of(row)
        assert [sp.seed for sp in specs] == [0, 1, 2]
        if row.name in files:
            for spec in specs:
                assert spec.cfg == same_run(spec, CONFIGS / f"{files[row.name]}.toml", registry), row.name
            count, pub = s.counts[row.name], row.published
            assert -0.4 < 100 * (count.params / 1e6 - pub["params_m"]) / pub["params_m"] < -0.3, row.name
            assert -1.2 < 100 * (count.macs / 1e9 - pub["gflops"]) / pub["gflops"] < -1.0, row.name
        else:
            paper = next(r for r in s.rows if r.name == row.name.removesuffix(", CE only"))
            with_term, ce = s.runs_of(paper)[0].cfg, specs[0].cfg
            assert not row.published and s.counts[row.name] == s.counts[paper.name]
            assert with_term.model.aux and not ce.model.aux and [loss.name for loss in ce.loss] == ["ce"]
            assert attrs.evolve(ce, model=attrs.evolve(ce.model, aux=with_term.model.aux), loss=with_term.loss,
                                run=with_term.run) == with_term  # fmt: skip


@pytest.mark.slow  # ~5 s: every row checked on 2 idle AVX2 cores
def test_camvid_context_sweep_validates_and_its_frm_row_is_the_readme_run(capsys, registry):
    path = CONFIGS / "camvid_context.sweep.toml"
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert "ok: 3 row(s) build and pass segcore check" in capsys.readouterr().out
    s = sweep("camvid_context.sweep.toml", registry)
    assert [r.name for r in s.rows] == ["FRM", "PPM", "DAPPM"] and s.seeds == (0, 1, 2)
    frm = s.runs_of(s.rows[0])
    assert frm[0].cfg == same_run(frm[0], CONFIGS / "camvid_frm_ce.toml", registry)
    for row in s.rows[1:]:
        cfg = s.runs_of(row)[0].cfg
        assert [e.name for e in cfg.model.enhancers] == [row.name.lower()]
        assert (
            attrs.evolve(cfg, model=attrs.evolve(cfg.model, enhancers=frm[0].cfg.model.enhancers), run=frm[0].cfg.run)
            == frm[0].cfg
        )
