"""``segcore sweep`` through the CLI on the built-in ``shapes`` dataset: tiny rows end to end, a Ctrl-C in the
middle and --resume, a failing run, --table, malformed sweep files, --dry-run against ``segcore check``."""

from __future__ import annotations

import json
import os
import shutil
import shlex
import signal
import textwrap
from pathlib import Path

import pytest
import torch

import segcore.engine.report
import segcore.engine.run
from segcore.cli.main import main
from segcore.errors import ConfigError

PIPELINE = """
[model]
dropout = 0.0
[model.backbone]
name = "timm"
model_name = "test_resnet"
[model.decoder]
name = "fcn"
num_convs = 1
channels = 16
in_index = -1
[data]
batch_size = 2
[data.dataset]
name = "shapes"
size = [32, 32]
num_train = 8
num_val = 2
[[loss]]
name = "ce"
[train]
iters = 3
optimizer = "adamw"
lr = 0.01
log_every = 1
checkpoint_every = 0
checkpoint_every_iters = 1
plots = false
[run]
device = "cpu"
input_size = [32, 32]
"""

ROWS = """
[[row]]
name = "fcn16"
published = { miou = 40.0, params_m = 0.39 }

[[row]]
name = "+wide"
set = { "model.decoder.channels" = 24 }
"""

RUN_FILES = ["fcn16/seed0", "fcn16/seed1", "plus-wide/seed0", "plus-wide/seed1"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny runs on a shared machine: one thread is ~20x faster than two fighting for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sweep_file(tmp_path: Path, rows: str = ROWS, seeds: str = "[0, 1]", extra: str = "") -> Path:
    (tmp_path / "p.toml").write_text(PIPELINE)
    path = tmp_path / "abl.sweep.toml"
    path.write_text(f'base = "p.toml"\n[sweep]\nseeds = {seeds}\nconvention = "thop2x"\n'
                    f'out_dir = "{tmp_path / "out"}"\n{extra}\n{textwrap.dedent(rows)}')  # fmt: skip
    return path


def sweep(capsys, path: Path, *args: str) -> tuple[int, str, str]:
    code = main(["sweep", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def counted(monkeypatch):
    """run_pipeline with a log of (out_dir, resume) per call."""
    calls: list[tuple[str, bool]] = []
    real = segcore.engine.run.run_pipeline

    def counting(cfg, registry, **kw):
        calls.append((cfg.run.out_dir, kw.get("resume", False)))
        return real(cfg, registry, **kw)

    monkeypatch.setattr(segcore.engine.run, "run_pipeline", counting)
    return calls


def tables(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("table.md", "table.csv", "table.json")}


@pytest.mark.slow  # ~11 s: trains every row on 2 idle AVX2 cores
def test_sweep_end_to_end_and_table_rebuild(tmp_path, capsys, counted):
    path = sweep_file(tmp_path, extra='focus_classes = ["disc", "triangle"]')
    code, out, err = sweep(capsys, path)
    assert code == 0, err
    assert len(counted) == 4
    root = tmp_path / "out"
    for run in RUN_FILES:
        folder = root / run
        assert (folder / "metrics.json").is_file() and (folder / "model.safetensors").is_file()
        assert (folder / "sweep_pipeline.toml").is_file()
        assert json.loads((folder / "sweep_run.json").read_text())["status"] == "done"
    # every seed trained with its own train.seed, into its own folder
    assert 'seed = 1' in (root / "fcn16/seed1/sweep_pipeline.toml").read_text()
    assert "sweep:" in err  # the one progress line
    table = json.loads((root / "table.json").read_text())
    assert [r["name"] for r in table["rows"]] == ["fcn16", "+wide"]
    base, wide = table["rows"]
    assert base["base"] and not wide["base"]
    assert base["miou"]["n"] == wide["miou"]["n"] == 2 and set(base["miou"]["per_seed"]) == {"0", "1"}
    assert base["miou"]["std"] is not None and base["per_class_iou"]["background"] > 0
    assert wide["delta_miou"]["n_pairs"] == 2
    expected = [wide["miou"]["per_seed"][s] - base["miou"]["per_seed"][s] for s in ("0", "1")]
    assert wide["delta_miou"]["mean"] == pytest.approx(sum(expected) / 2, abs=1e-3)
    assert wide["params"] > base["params"] and base["published"]["miou"] == 40.0
    assert base["cpu_hours"] > 0
    # the focus classes: per seed the mean of their IoU, then over seeds; every class's IoU with its spread
    for r in (base, wide):
        pct = r["per_class_iou_pct"]
        assert set(pct) == {"background", "disc", "square", "triangle", "ring"}
        for c, v in pct.items():  # None where no val image of any seed has the class
            assert v["mean"] is None if r["per_class_iou"][c] is None else v["mean"] == pytest.approx(
                r["per_class_iou"][c], abs=0.01)
        for s in ("0", "1"):
            iou = json.loads((root / r["folder"] / f"seed{s}" / "metrics.json").read_text())["val"]["IoU"]
            present = [100 * iou[k] for k in (1, 3) if iou[k] == iou[k]]  # NaN: not in the 2 val images
            assert present and r["focus_miou"]["per_seed"][s] == pytest.approx(sum(present) / len(present), abs=1e-3)
    assert table["focus_classes"] == ["disc", "triangle"]
    md = (root / "table.md").read_text()
    assert "| fcn16 (base) |" in md and "| +wide |" in md and "40.00" in md
    assert "focus mIoU (%)" in md and "| row | background | **disc** | square | **triangle** | ring |" in md
    assert (root / "table.csv").read_text().splitlines()[1].startswith("fcn16,True,")
    assert (root / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| +wide |" in out

    # --table rebuilds the same table from the run folders, training nothing
    before = tables(root)
    for name in before:
        (root / name).unlink()
    code, out, _ = sweep(capsys, path, "--table")
    assert code == 0 and tables(root) == before and len(counted) == 4

    # a second sweep into the same folder without --resume is refused, naming the fix
    code, _, err = sweep(capsys, path, "-q")
    assert code == 2 and "--resume" in err and len(counted) == 4
    # with --resume every finished run is kept
    code, _, err = sweep(capsys, path, "-q", "--resume")
    assert code == 0 and len(counted) == 4 and "4 finished run(s) kept" in err
    # a finished run stays finished without its weights and checkpoints (a small record of the sweep)
    for folder in (root / "fcn16/seed0", root / "plus-wide/seed1"):
        (folder / "model.safetensors").unlink()
        shutil.rmtree(folder / "checkpoints")
    code, _, err = sweep(capsys, path, "-q", "--resume")
    assert code == 0 and len(counted) == 4 and "4 finished run(s) kept" in err
    code, _, _ = sweep(capsys, path, "--table")
    assert code == 0 and tables(root) == before
    # a moved folder is the same sweep; a changed sweep file is refused for the runs it would change
    shutil.copytree(root, tmp_path / "moved")
    code, _, err = sweep(capsys, path, "-q", "--resume", "--out-dir", str(tmp_path / "moved"))
    assert code == 0 and len(counted) == 4 and "4 finished run(s) kept" in err
    path.write_text(path.read_text().replace('"model.decoder.channels" = 24', '"model.decoder.channels" = 20'))
    code, _, err = sweep(capsys, path, "-q", "--resume", "--out-dir", str(tmp_path / "moved"))
    assert code == 2 and len(counted) == 4 and "the sweep file changed since these runs finished" in err
    assert "+wide seed 0" in err and "+wide seed 1" in err and "fcn16" not in err.split("finished:", 1)[1]
    path.write_text(path.read_text().replace('"model.decoder.channels" = 20', '"model.decoder.channels" = 24'))
    # ... but not one the sweep did not record as done (a run killed after its metrics.json, say)
    (root / "fcn16/seed0/sweep_run.json").write_text(json.dumps({"status": "running"}))
    code, _, err = sweep(capsys, path, "-q", "--resume")
    assert code == 0 and len(counted) == 5 and counted[-1] == (str(root / "fcn16/seed0"), True)


def test_ctrl_c_mid_run_then_resume(tmp_path, capsys, counted, monkeypatch):
    """A real Ctrl-C (SIGINT) after the first step of the 3rd run: the trainer checkpoints, the sweep stops (130);
    --resume continues that run from its checkpoint and runs the 4th, without redoing the first two."""
    path = sweep_file(tmp_path)
    real_write = segcore.engine.report.RunLog.write

    def write(self, kind, step, **values):
        real_write(self, kind, step, **values)
        if len(counted) == 3 and kind == "train" and step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(segcore.engine.report.RunLog, "write", write)
    code, _, err = sweep(capsys, path, "-q")
    root = tmp_path / "out"
    again = shlex.join(["segcore", "sweep", str(path), "--out-dir", str(root), "--resume"])
    assert code == 130 and f"Continue with: {again}" in err and "+wide seed 0" in err
    third = root / "plus-wide/seed0"
    assert not (third / "metrics.json").exists() and any((third / "checkpoints").iterdir())
    assert json.loads((third / "sweep_run.json").read_text())["status"] == "interrupted"
    assert not (root / "plus-wide/seed1").exists()
    mtimes = {run: (root / run / "metrics.json").stat().st_mtime_ns for run in RUN_FILES[:2]}

    monkeypatch.setattr(segcore.engine.report.RunLog, "write", real_write)
    code, _, err = sweep(capsys, path, "-q", "--resume")
    assert code == 0, err
    assert counted[3:] == [(str(third), True), (str(root / "plus-wide/seed1"), False)]
    assert {run: (root / run / "metrics.json").stat().st_mtime_ns for run in RUN_FILES[:2]} == mtimes
    log = [json.loads(line) for line in (third / "log.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in log if r["kind"] == "train"]
    assert train_steps == [1, 2, 3]  # step 1 from before the Ctrl-C, 2 and 3 after --resume: no step redone
    assert [(r["step"], r["precision"]) for r in log if r["kind"] == "start"] == [(0, "fp32"), (1, "fp32")]  # 2 sessions
    table = json.loads((root / "table.json").read_text())
    assert [r["miou"]["n"] for r in table["rows"]] == [2, 2]


def test_a_row_whose_amp_becomes_auto_keeps_its_finished_runs(tmp_path, capsys, counted):
    """train.amp = "auto" is the machine's precision (bf16 where it is native, fp32 elsewhere): a run trained with
    "none" (or "bf16") is one of it and --resume keeps it; a row changed to another fixed precision is another run."""
    path = sweep_file(tmp_path, rows=ROWS.split("[[row]]\nname = \"+wide\"")[0], seeds="[0]")
    assert sweep(capsys, path, "-q")[0] == 0 and len(counted) == 1
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(PIPELINE.replace("[train]\n", '[train]\namp = "auto"\n'))
    code, out, err = sweep(capsys, path, "-q", "--resume")
    assert code == 0 and len(counted) == 1, err  # kept, not trained again
    pipeline.write_text(PIPELINE.replace("[train]\n", '[train]\namp = "bf16"\n'))
    code, out, err = sweep(capsys, path, "-q", "--resume")
    assert code == 2 and "was trained with another pipeline" in err and len(counted) == 1


def test_failing_run_is_reported_and_the_others_finish(tmp_path, capsys, counted, monkeypatch):
    rows = ROWS + '\n[[row]]\nname = "broken"\nset = { "model.decoder.channels" = 8 }\n'
    path = sweep_file(tmp_path, rows=rows, seeds="[0]")
    counting = segcore.engine.run.run_pipeline

    def failing(cfg, registry, **kw):
        if "/broken/" in cfg.run.out_dir:
            raise RuntimeError("simulated crash in the broken row")
        return counting(cfg, registry, **kw)

    monkeypatch.setattr(segcore.engine.run, "run_pipeline", failing)
    code, out, err = sweep(capsys, path, "-q")
    assert code == 1
    assert "broken seed 0: RuntimeError: simulated crash in the broken row" in err
    root = tmp_path / "out"
    assert "simulated crash" in (root / "broken/seed0/sweep_error.txt").read_text()
    assert json.loads((root / "broken/seed0/sweep_run.json").read_text())["status"] == "failed"
    table = json.loads((root / "table.json").read_text())
    assert [(r["name"], r["miou"]["n"], r["failed_seeds"]) for r in table["rows"]] == [
        ("fcn16", 1, []), ("+wide", 1, []), ("broken", 0, [0])]
    assert "1 failed" in (root / "table.md").read_text()
    assert len(counted) == 2
    assert f"fixing the cause, {shlex.join(['segcore', 'sweep', str(path), '--out-dir', str(root), '--resume'])} runs" in err
    # the command to run again names the rows when a run was given some
    code, _, err = sweep(capsys, path, "-q", "--resume", "--rows", "broken")
    again = shlex.join(["segcore", "sweep", str(path), "--out-dir", str(root), "--rows", "broken", "--resume"])
    assert code == 1 and f"fixing the cause, {again} runs" in err, err

    # the cause fixed, --resume (here of that row alone) runs the failed run again; the table still lists every row
    monkeypatch.setattr(segcore.engine.run, "run_pipeline", counting)
    code, _, err = sweep(capsys, path, "-q", "--resume", "--rows", "brokn")
    assert code == 2 and "no row 'brokn' (did you mean 'broken'?)" in err
    code, _, err = sweep(capsys, path, "-q", "--resume", "--rows", "broken")
    assert code == 0, err
    assert [c[0] for c in counted[2:]] == [str(root / "broken/seed0")]
    assert not (root / "broken/seed0/sweep_error.txt").exists()
    table = json.loads((root / "table.json").read_text())
    assert [(r["name"], r["miou"]["n"], r["failed_seeds"]) for r in table["rows"]] == [
        ("fcn16", 1, []), ("+wide", 1, []), ("broken", 1, [])]


def test_seeds_runs_some_of_the_file_s_seeds_and_the_table_lists_all(tmp_path, capsys, monkeypatch):
    """--seeds trains only the seeds named (a sweep spread over sessions or machines), every row of them; the table
    still lists the others as missing, and the command to run again names the seeds."""
    path = sweep_file(tmp_path, seeds="[0, 1, 2]")
    calls = []

    def failing(cfg, registry, **kw):
        calls.append(cfg.run.out_dir)
        raise RuntimeError("no training in this test")

    monkeypatch.setattr(segcore.engine.run, "run_pipeline", failing)
    root = tmp_path / "out"
    code, _, err = sweep(capsys, path, "-q", "--seeds", "2", "0")
    assert code == 1 and calls == [str(root / f) for f in ("fcn16/seed0", "fcn16/seed2", "plus-wide/seed0",
                                                            "plus-wide/seed2")], err  # fmt: skip
    again = shlex.join(["segcore", "sweep", str(path), "--out-dir", str(root), "--seeds", "0", "2", "--resume"])
    assert f"fixing the cause, {again} runs" in err, err
    table = json.loads((root / "table.json").read_text())
    assert [(r["failed_seeds"], r["missing_seeds"]) for r in table["rows"]] == [([0, 2], [1]), ([0, 2], [1])]
    code, _, err = sweep(capsys, path, "-q", "--resume", "--seeds", "3")
    assert code == 2 and "--seeds: " in err and "has no seed 3 ([sweep] seeds = [0, 1, 2]); add it there" in err
    code, _, err = sweep(capsys, path, "-q", "--resume", "--seeds", "-1")
    assert code == 2 and "has no seed -1 ([sweep] seeds = [0, 1, 2]); seeds are whole numbers >= 0" in err
    assert len(calls) == 4

    def interrupted(cfg, registry, **kw):
        calls.append(cfg.run.out_dir)
        raise KeyboardInterrupt

    monkeypatch.setattr(segcore.engine.run, "run_pipeline", interrupted)  # Ctrl-C: the command to continue, too
    code, _, err = sweep(capsys, path, "-q", "--resume", "--rows", "+wide", "--seeds", "1")
    again = shlex.join(["segcore", "sweep", str(path), "--out-dir", str(root), "--rows", "+wide", "--seeds", "1",
                        "--resume"])  # fmt: skip
    assert code == 130 and calls[4:] == [str(root / "plus-wide/seed1")] and f"Continue with: {again}" in err, err


MALFORMED = {
    "unknown key": ('[[row]]\nname = "a"\n[[row]]\nname = "b"\nsett = { "train.lr" = 0.1 }\n',
                    "row 'b': unknown key 'sett' (did you mean 'set'?)"),
    "missing path": ('[[row]]\nname = "a"\n[[row]]\nname = "b"\nset = { "model.decodr.channels" = 8 }\n',
                     "row 'b': set model.decodr.channels: the base pipeline has no table model.decodr"),
    "does not build": ('[[row]]\nname = "a"\n[[row]]\nname = "b"\nset = { "train.lr" = -1.0 }\n',
                       "row 'b': does not build"),
    "duplicate": ('[[row]]\nname = "a"\n[[row]]\nname = "a"\nset = { "train.lr" = 0.1 }\n',
                  "row 'a': duplicate row name"),
    "unset missing": ('[[row]]\nname = "a"\n[[row]]\nname = "b"\nunset = ["train.epochs"]\n',
                      "row 'b': unset train.epochs: the base pipeline has no key train.epochs"),
    "unknown section key": ('[[row]]\nname = "a"\n', "[sweep] unknown key 'sed' (did you mean 'seeds'?)"),
    "unknown focus class": ('[[row]]\nname = "a"\n', "[sweep] focus_classes: the dataset has no class 'rings' "
                            "(did you mean 'ring'?); its classes: background, disc, square, triangle, ring"),
}

EXTRA = {"unknown section key": "sed = 1", "unknown focus class": 'focus_classes = ["disc", "rings"]'}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_sweep_files_exit_2_naming_the_row(tmp_path, capsys, counted, case):
    rows, message = MALFORMED[case]
    path = sweep_file(tmp_path, rows=rows, extra=EXTRA.get(case, ""))
    code, _, err = sweep(capsys, path)
    assert code == 2
    assert message in err
    assert not counted and not (tmp_path / "out").exists()


def test_every_problem_of_every_row_at_once(tmp_path, capsys, counted):
    rows = """
    [[row]]
    name = "a"
    [[row]]
    name = "b"
    sett = { "train.lr" = 0.1 }
    [[row]]
    name = "c"
    set = { "model.decodr.channels" = 8 }
    [[row]]
    name = "d"
    set = { "train.lr" = -1.0 }
    [[row]]
    name = "e"
    unset = ["train.epochs"]
    [[row]]
    name = "a"
    """
    path = sweep_file(tmp_path, rows=rows)
    code, _, err = sweep(capsys, path, "--dry-run")
    assert code == 2 and not counted
    for message in ("row 'b': unknown key 'sett'", "row 'c': set model.decodr.channels", "row 'd': does not build",
                    "row 'e': unset train.epochs", "row 'a': duplicate row name"):
        assert message in err
    assert "5 problem(s)" in err


def test_rows_that_share_a_model_are_checked_on_the_meta_device_once(tmp_path, registry, monkeypatch):
    """A sweep's rows mostly change training keys: a model is run on the meta device once per sweep file, every row
    still gets its counts, and a row's own data and losses are still checked."""
    import segcore.model.check as check
    from segcore.tools.sweep import load_sweep

    runs = []
    real = check.check_model
    monkeypatch.setattr(check, "check_model", lambda model, *a, **k: (runs.append(model), real(model, *a, **k))[1])
    rows = ROWS + '[[row]]\nname = "lr"\nset = { "train.lr" = 0.02 }\n[[row]]\nname = "wide lr"\n' \
                  'set = { "model.decoder.channels" = 24, "train.lr" = 0.02 }\n'  # fmt: skip
    sweep = load_sweep(sweep_file(tmp_path, rows=rows), registry=registry)
    assert len(runs) == 2  # fcn16 = lr, +wide = wide lr
    assert sweep.counts["lr"] == sweep.counts["fcn16"] != sweep.counts["+wide"] == sweep.counts["wide lr"]
    bad = rows + '[[row]]\nname = "no split"\nset = { "data.val_split" = "vall" }\n'
    with pytest.raises(ConfigError, match=r"row 'no split': does not pass segcore check: .*vall"):
        load_sweep(sweep_file(tmp_path, rows=bad), registry=registry)


def test_the_command_to_continue_names_the_folder_rows_and_processes(tmp_path, registry):
    """A sweep trained with --nproc-per-node 2 continues with 2 processes: the printed command says so (a run
    continued in one process would take other batches per step)."""
    from segcore.tools.sweep import load_sweep, resume_command

    sweep = load_sweep(sweep_file(tmp_path), registry=registry, out_dir=str(tmp_path / "elsewhere"))
    head = ["segcore", "sweep", str(sweep.path), "--out-dir", str(tmp_path / "elsewhere")]
    assert resume_command(sweep) == shlex.join([*head, "--resume"])
    assert resume_command(sweep, sweep.rows[:1], nproc=2) == shlex.join(
        [*head, "--rows", sweep.rows[0].name, "--nproc-per-node", "2", "--resume"])
    assert resume_command(sweep, seeds=[1]) == shlex.join([*head, "--seeds", "1", "--resume"])
    assert resume_command(sweep, seeds=[0, 1]) == resume_command(sweep)  # all the file's seeds: none named
    assert resume_command(sweep, seeds=[0, 0]) == shlex.join([*head, "--seeds", "0", "0", "--resume"])  # not all
    assert resume_command(sweep, sweep.rows[1:], seeds=[0]) == shlex.join(
        [*head, "--rows", sweep.rows[1].name, "--seeds", "0", "--resume"])


def test_a_set_may_add_a_key_and_unset_removes_one(tmp_path, capsys):
    rows = """
    [[row]]
    name = "a"
    [[row]]
    name = "b"
    set = { "model.decoder.kernel_size" = 1, "loss[0].name" = "ce" }
    unset = ["train.log_every"]
    """
    path = sweep_file(tmp_path, rows=rows)
    code, out, err = sweep(capsys, path, "--dry-run")
    assert code == 0, err
    assert "ok: 2 row(s)" in out


def test_a_new_component_name_replaces_its_table():
    from segcore.tools.sweep import Row, _apply

    base = {"model": {"decoder": {"name": "fcn", "channels": 16, "num_convs": 1}}, "train": {"iters": 3}}
    row = Row("x", "x", {"model.decoder.channels": 8, "model.decoder.name": "psp"}, (), {}, False)
    table, problems = _apply(base, row)
    assert not problems and table["model"]["decoder"] == {"name": "psp", "channels": 8}
    assert base["model"]["decoder"]["num_convs"] == 1  # the base is not changed
    same = Row("y", "y", {"model.decoder.name": "fcn"}, (), {}, False)  # the same name keeps the table
    assert _apply(base, same)[0]["model"]["decoder"] == base["model"]["decoder"]
    _, problems = _apply(base, Row("z", "z", {"train.iters.x": 1, "model[0]": 1}, ("loss",), {}, False))
    assert len(problems) == 3


def test_dry_run_counts_equal_segcore_check(tmp_path, capsys, counted):
    path = sweep_file(tmp_path, extra="input_size = [128, 160]")
    code, out, err = sweep(capsys, path, "--dry-run")
    assert code == 0, err
    assert not counted and not (tmp_path / "out").exists()
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("fcn16", "+wide"))}
    (tmp_path / "wide.toml").write_text(PIPELINE.replace("channels = 16", "channels = 24"))
    for name, pipeline in (("fcn16", tmp_path / "p.toml"), ("+wide", tmp_path / "wide.toml")):
        assert main(["check", str(pipeline), "--convention", "thop2x", "--input-size", "128x160", "--json"]) == 0
        totals = json.loads(capsys.readouterr().out)["totals"]["inference"]
        cells = lines[name]
        assert f"{totals['params'] / 1e6:.3f}" in cells
        assert f"{totals['macs'] / 1e9:.3f}" in cells
    # the published params beside the measured ones, with the relative difference
    assert lines["fcn16"][3] == "0.390" and lines["fcn16"][5] == "%"


def test_out_dir_on_the_command_line_replaces_the_file_s(tmp_path, capsys, counted):
    path = sweep_file(tmp_path, rows='[[row]]\nname = "only"\n', seeds="[3]")
    elsewhere = tmp_path / "outside" / "study"
    code, _, err = sweep(capsys, path, "-q", "--out-dir", str(elsewhere))
    assert code == 0, err
    assert counted == [(str(elsewhere / "only" / "seed3"), False)]
    assert (elsewhere / "table.json").is_file() and not (tmp_path / "out").exists()


def test_a_record_of_a_sweep_with_no_finished_run_is_refused(tmp_path, capsys, counted):
    path = sweep_file(tmp_path)
    code, _, err = sweep(capsys, path, "--record", str(tmp_path / "record"))
    assert code == 2 and "holds no finished run yet; nothing to record" in err
    assert not (tmp_path / "record").exists() and not counted


def _panel_row(name, per_seed, base=False):
    """A table row as `segcore.tools.sweep._bar_panel` reads it: per-seed val mIoU, their mean (None without seeds)."""
    values = list(per_seed.values())
    return {"name": name, "base": base, "miou": {"per_seed": per_seed, "mean": sum(values) / len(values) if values else None,
                                                  "std": None}}  # fmt: skip


def test_the_plot_says_which_rows_have_fewer_seeds_than_the_sweep():
    """A sweep that is still running (or a record of one): a bar over 1 of 3 seeds says so under its name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segcore.tools.sweep import _bar_panel

    row = _panel_row
    rows = [row("full", {"0": 50.0, "1": 51.0, "2": 52.0}, base=True), row("partial", {"0": 48.0}), row("none", {}),
            row("ContrastiveSeg's weight, 0.1 x 0.1/0.07", {"0": 47.0})]  # a long name: in lines, not across others
    fig, ax = plt.subplots()
    try:
        _bar_panel(ax, rows, "miou", "val mIoU (%)", published=False, n_seeds=3)
        labels = [t.get_text() for t in ax.get_xticklabels()]
    finally:
        plt.close(fig)
    assert labels == ["full", "partial\n(1 of 3 seeds)", "none\n(0 of 3 seeds)",
                      "ContrastiveSeg's\nweight, 0.1 x 0.1/0.07\n(1 of 3 seeds)"]


def test_the_plot_draws_no_bar_cut_off_by_a_zoomed_axis():
    """Rows between 47 and 56 mIoU: the axis starts near 46, so a bar's length would not be its value; the means
    are diamonds with the std as error bars. Rows that reach down to 0 keep bars from 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from segcore.tools.sweep import _bar_panel

    row = _panel_row
    for rows, zoomed in (([row("a", {"0": 47.5}, base=True), row("b", {"0": 55.4})], True),
                         ([row("a", {"0": 34.4}, base=True), row("b", {"0": 0.5})], False)):  # fmt: skip
        fig, ax = plt.subplots()
        try:
            _bar_panel(ax, rows, "miou", "val mIoU (%)", published=False, n_seeds=1)
            bottom = ax.get_ylim()[0]
            bars = [p for p in ax.patches if isinstance(p, Rectangle)]
            diamonds = [line for line in ax.get_lines() if line.get_marker() == "D"]
        finally:
            plt.close(fig)
        if zoomed:
            assert bottom > 40 and not bars and len(diamonds) == 2
            assert sorted(d.get_ydata()[0] for d in diamonds) == [47.5, 55.4]
        else:
            assert bottom == 0 and len(bars) == 2 and not diamonds
