"""A zoo model trained on train + val has no held-out score of its own: ``segcore hub save --evidence`` puts the
recipe's train-only seeds (a ``segcore sweep`` table) on its card, checked to be the same recipe."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import torch

from segcore import ConfigError
from segcore.cli import _common as CLI
from segcore.cli.main import main

RECIPE = """
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
train_split = ["train", "val"]
[data.dataset]
name = "shapes"
size = [32, 32]
num_train = 8
num_val = 4
[[loss]]
name = "ce"
[train]
iters = 24
optimizer = "adamw"
lr = 0.02
log_every = 1
eval_every = 24
plots = false
[run]
device = "cpu"
input_size = [32, 32]
out_dir = "{out}"
"""

SWEEP = """
base = "recipe.toml"
[sweep]
seeds = [0, 1, 2]
out_dir = "{out}"

[[row]]
name = "train only"
set = {{ "data.train_split" = "train" }}

[[row]]
name = "train only, lr 0.04"
set = {{ "data.train_split" = "train", "train.lr" = 0.04 }}
"""


@pytest.fixture(scope="module")
def made(tmp_path_factory, registry):
    """The recipe trained on train + val, and a sweep of it on train alone over 3 seeds (plus a row that is not it)."""
    root = tmp_path_factory.mktemp("evidence")
    (root / "recipe.toml").write_text(textwrap.dedent(RECIPE.format(out=root / "final")))
    (root / "evidence.sweep.toml").write_text(textwrap.dedent(SWEEP.format(out=root / "sweep")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(CLI, "registry", lambda: registry)
            assert main(["run", str(root / "recipe.toml"), "-q"]) == 0
            assert main(["sweep", str(root / "evidence.sweep.toml"), "-q"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root


def save(capsys, monkeypatch, registry, made: Path, out: str, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(CLI, "registry", lambda: registry)
    capsys.readouterr()
    code = main(["hub", "save", str(made / "final"), str(made / out), "--no-evaluate", "-q", *args])
    o, e = capsys.readouterr()
    return code, o, e


def test_the_card_gives_the_recipe_s_train_only_seeds_and_says_val_was_trained_on(made, registry, capsys, monkeypatch):
    code, out, err = save(capsys, monkeypatch, registry, made, "with-evidence", "--evidence",
                          str(made / "sweep" / "table.json"))  # fmt: skip
    assert code == 0, err
    table = json.loads((made / "sweep" / "table.json").read_text())
    row = table["rows"][0]
    config = json.loads((made / "with-evidence" / "config.json").read_text())
    ev = config["evidence"]
    assert ev["row"] == "train only" and ev["train_split"] == "train" and ev["seeds"] == [0, 1, 2]
    assert ev["miou"] == {k: row["miou"][k] for k in ("per_seed", "mean", "std")}
    assert set(ev["miou"]["per_seed"]) == {"0", "1", "2"} and ev["miou"]["std"] is not None
    assert ev["per_class"] == row["per_class_iou_pct"]
    assert ev["precision"] == {"0": "fp32", "1": "fp32", "2": "fp32"}  # what each seed computed in (train.amp "none")
    assert config["metrics"]["trained_on"] == ["train", "val"]
    card = (made / "with-evidence" / "README.md").read_text()
    assert re.search(r"row 'train only'; trained in fp32; \d+\.\d\d CPU-core hours in all\), each evaluated once at "
                     "its end on val", card)
    mean, std = ev["miou"]["mean"], ev["miou"]["std"]
    assert "**Trained on the train + val splits**: no held-out score of its own." in card
    assert f"val mIoU {mean:.2f} ± {std:.2f}** (mean ± std over 3 seeds)" in card
    assert "the scores below are on images they learned from, not a held-out result" in card
    # the model-index carries the recipe's held-out number, not the trained-on one
    assert re.search(rf"value: {round(mean, 2)}\n", card) and "name: mean IoU of the same recipe trained on train" in card
    background = row["per_class_iou_pct"]["background"]
    assert f"| background | {background['mean']:.2f} | {background['std']:.2f} |" in card
    assert f"evidence_mIoU = {mean:.2f}, evidence_std = {std:.2f}, evidence_seeds = 3" in out
    assert 'trained_on = ["train", "val"]' in out and "not a held-out score" in out


def test_without_evidence_a_train_val_model_states_no_held_out_score(made, registry, capsys, monkeypatch):
    code, _, err = save(capsys, monkeypatch, registry, made, "no-evidence")
    assert code == 0, err
    card = (made / "no-evidence" / "README.md").read_text()
    assert "no held-out score of its own." in card and "Evidence for the recipe" not in card
    assert "model-index" not in card  # no number presented as a val result


@pytest.mark.parametrize(("args", "message"), [
    (["--evidence-row", "train only, lr 0.04"], "row 'train only, lr 0.04' seed 0 is not this run's recipe (train.lr: "
                                                "0.04 there, 0.02 here)"),
    (["--evidence-row", "train"], "no row 'train' (did you mean 'train only'?)"),
])  # fmt: skip
def test_evidence_that_is_not_this_recipe_is_refused(made, registry, capsys, monkeypatch, args, message):
    code, _, err = save(capsys, monkeypatch, registry, made, "refused-shapes", "--evidence", str(made / "sweep" / "table.json"),
                        *args)  # fmt: skip
    assert code == 2 and message in err
    assert not (made / "refused-shapes").exists()


def test_a_missing_evidence_table_names_the_fix(made, registry, capsys, monkeypatch):
    code, _, err = save(capsys, monkeypatch, registry, made, "refused-shapes", "--evidence", str(made / "nothing.json"))
    assert code == 2 and "no such file; give the table.json that segcore sweep wrote" in err


def test_hub_list_gives_a_train_val_model_its_recipe_s_score(made, registry, capsys, monkeypatch):
    import shutil

    import tomli_w

    from segcore import hub as hubmod

    assert save(capsys, monkeypatch, registry, made, "listed-shapes", "--evidence", str(made / "sweep" / "table.json"))[0] == 0
    zoo = made / "zoo"
    shutil.copytree(made / "listed-shapes", zoo / "models" / "listed-shapes")
    sha = hubmod.file_sha256(zoo / "models" / "listed-shapes" / "model.safetensors")
    entry = {"plugin": "classic", "dataset": "shapes", "folder": "models/listed-shapes", "sha256": sha}
    trained_on = {"split": "val", "mIoU": 99.0, "aAcc": 99.5, "trained_on": ["train", "val"]}
    (zoo / "manifest.toml").write_text(tomli_w.dumps({"format": 1, "models": {
        "a-shapes": entry | {"metrics": trained_on | {"evidence_mIoU": 63.1, "evidence_std": 0.52, "evidence_seeds": 3}},
        "b-shapes": entry | {"metrics": trained_on},
        "c-shapes": entry | {"metrics": {"split": "val", "mIoU": 41.5, "aAcc": 80.0}},
    }}))  # fmt: skip
    monkeypatch.setenv(hubmod.ZOO_VAR, str(zoo))
    assert main(["hub", "list"]) == 0
    lines = {line.split()[0]: " ".join(line.split()) for line in capsys.readouterr().out.splitlines()[1:]}
    assert " 63.10 ± 0.52 (recipe, train only) " in lines["a-shapes"]
    assert " - (trained on val) " in lines["b-shapes"] and " 41.50 " in lines["c-shapes"]


def test_evidence_goes_on_a_shipped_folder_afterwards_from_a_record_without_weights(made, registry, capsys, monkeypatch,
                                                                                    tmp_path):  # fmt: skip
    """A model shipped before its recipe's seeds finished (its run folder gone): ``segcore hub evidence`` adds them to
    config.json and the card, and compares the seeds with the folder's own pipeline.toml. The sweep's record may
    have lost its weights and checkpoints (kept small in a repository): the runs still count as finished."""
    import hashlib
    import shutil

    assert save(capsys, monkeypatch, registry, made, "later-shapes")[0] == 0
    folder = tmp_path / "later-shapes"
    shutil.copytree(made / "later-shapes", folder)
    record = tmp_path / "record"
    sweep_file = str(made / "evidence.sweep.toml")
    assert main(["sweep", sweep_file, "--record", str(made / "sweep")]) == 2
    assert "that is the sweep's own folder" in capsys.readouterr().err
    assert main(["sweep", sweep_file, "--record", str(record)]) == 0
    assert "recorded 6 finished run(s)" in capsys.readouterr().out
    assert not list(record.rglob("*.safetensors")) and not list(record.rglob("checkpoints"))
    assert sorted(p.name for p in (record / "train-only" / "seed1").iterdir()) == sorted(
        p.name for p in (made / "sweep" / "train-only" / "seed1").iterdir()
        if p.name not in ("model.safetensors", "checkpoints", "best", "plots", ".segcore.lock"))  # fmt: skip
    assert json.loads((record / "table.json").read_text())["rows"] == json.loads((made / "sweep" / "table.json").read_text())["rows"]
    (record / "table.json").unlink()  # the record is a sweep folder: its table comes back from it alone
    assert main(["sweep", sweep_file, "--table", "--out-dir", str(record), "-q"]) == 0
    assert json.loads((record / "table.json").read_text())["rows"] == json.loads((made / "sweep" / "table.json").read_text())["rows"]
    assert main(["sweep", sweep_file, "--resume", "--out-dir", str(record), "-q"]) == 0
    assert "6 finished run(s) kept, 0 to run" in capsys.readouterr().err
    before = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()}
    capsys.readouterr()

    assert main(["hub", "evidence", str(folder), str(record / "table.json")]) == 0
    out = capsys.readouterr().out
    after = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()}
    assert set(after) == set(before)
    assert {k for k in after if after[k] != before[k]} == {"config.json", "README.md"}
    config = json.loads((folder / "config.json").read_text())
    row = json.loads((record / "table.json").read_text())["rows"][0]
    ev = config["evidence"]
    assert ev["seeds"] == [0, 1, 2] and ev["train_split"] == "train"
    assert ev["miou"] == {k: row["miou"][k] for k in ("per_seed", "mean", "std")}
    card = (folder / "README.md").read_text()
    assert f"val mIoU {ev['miou']['mean']:.2f} ± {ev['miou']['std']:.2f}** (mean ± std over 3 seeds)" in card
    assert f"evidence_mIoU = {ev['miou']['mean']:.2f}" in out and "the weights unchanged" in out

    # the other row is another recipe: refused, the folder untouched
    code = main(["hub", "evidence", str(folder), str(record / "table.json"), "--row", "train only, lr 0.04"])
    assert code == 2 and "is not this run's recipe (train.lr: 0.04 there, 0.02 here)" in capsys.readouterr().err
    assert {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()} == after
    # a folder that is not a model folder
    code = main(["hub", "evidence", str(record), str(record / "table.json")])
    assert code == 2 and "not a model folder written by segcore hub save (no config.json" in capsys.readouterr().err


def test_seeds_written_before_segcore_gained_a_key_are_still_the_recipe_s_evidence(made, registry, tmp_path):
    """A seed whose sweep_pipeline.toml predates train.fast_resize and train.ema_warmup (the keys absent) is the same
    recipe as a model written today, as both are read by today's schema; a seed with the key set otherwise is not."""
    import shutil

    from segcore.tools.publish import read_evidence

    sweep = tmp_path / "sweep"
    shutil.copytree(made / "sweep", sweep)
    old = sweep / "train-only" / "seed1" / "sweep_pipeline.toml"
    text = old.read_text()
    assert "fast_resize = false\n" in text and "ema_warmup = false\n" in text
    old.write_text(text.replace("fast_resize = false\n", "").replace("ema_warmup = false\n", ""))
    evidence = read_evidence(sweep / "table.json", made / "final" / "pipeline.toml", registry=registry)
    assert evidence["seeds"] == [0, 1, 2]
    # written when checkpoint_every defaulted to 1 (a key that changes what a run writes, not what it trains)
    assert "checkpoint_every =" not in text and "plots = false\n" in text
    old.write_text(text.replace("fast_resize = false\n", "fast_resize = false\ncheckpoint_every = 1\n").replace("plots = false\n", "plots = true\n"))
    assert read_evidence(sweep / "table.json", made / "final" / "pipeline.toml", registry=registry)["seeds"] == [0, 1, 2]
    old.write_text(text.replace("fast_resize = false\n", "fast_resize = true\n"))
    with pytest.raises(ConfigError, match=r"seed 1 is not this run's recipe \(train.fast_resize: True there, False here\)"):
        read_evidence(sweep / "table.json", made / "final" / "pipeline.toml", registry=registry)
    old.write_text(text.replace("fast_resize = false\n", "fast_resize = false\nno_such_key = 1\n"))
    with pytest.raises(ConfigError, match=r"seed 1: .* is not a pipeline this segcore reads"):
        read_evidence(sweep / "table.json", made / "final" / "pipeline.toml", registry=registry)


def test_seeds_trained_in_another_precision_are_evidence_and_the_card_says_which(made, registry, tmp_path):
    """train.amp = "auto" trains in bf16 on one machine and fp32 on another: seeds may differ from the model in
    train.amp, and the evidence gives what each computed in (its log's start records, else its train.amp)."""
    import shutil

    from segcore.hub.card import _evidence
    from segcore.tools.publish import read_evidence

    sweep = tmp_path / "sweep"
    shutil.copytree(made / "sweep", sweep)
    seeds = [sweep / "train-only" / f"seed{s}" for s in range(3)]

    def edit(folder: Path, amp: str, starts: list[tuple[int, str]]) -> None:
        file = folder / "sweep_pipeline.toml"
        file.write_text(re.sub(r'(?m)^amp = "\w+"$', f'amp = "{amp}"', file.read_text(), count=1))
        log = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        log = [r for r in log if r["kind"] != "start"] + [{"kind": "start", "step": s, "precision": p} for s, p in starts]
        (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))

    edit(seeds[1], "bf16", [])  # a fixed train.amp names the precision (a record from before the start records)
    edit(seeds[2], "auto", [(0, "bf16"), (12, "fp32")])  # resumed on a machine without native bf16
    evidence = read_evidence(sweep / "table.json", made / "final" / "pipeline.toml", registry=registry)
    assert evidence["precision"] == {"0": "fp32", "1": "bf16", "2": "bf16 then fp32"}
    assert "; trained in fp32 (seed 0), bf16 (seed 1) and bf16 then fp32 (seed 2); " in _evidence(evidence)
    edit(seeds[1], "auto", [])
    evidence = read_evidence(sweep / "table.json", made / "final" / "pipeline.toml", registry=registry)
    assert evidence["precision"]["1"] is None  # "auto" and no log of it: unknown, and the card says nothing of it
    assert "; trained in fp32 (seed 0) and bf16 then fp32 (seed 2); " in _evidence(evidence)
    edit(seeds[1], "auto", [(5, "fp32")])  # steps 1-5 trained by a segcore that wrote no start records
    evidence = read_evidence(sweep / "table.json", made / "final" / "pipeline.toml", registry=registry)
    assert evidence["precision"]["1"] == "unknown then fp32"
    (seeds[1] / "sweep_pipeline.toml").write_text((seeds[1] / "sweep_pipeline.toml").read_text().replace(
        "lr = 0.02\n", "lr = 0.03\n"))  # anything else is still another recipe
    with pytest.raises(ConfigError, match=r"seed 1 is not this run's recipe \(train.lr: 0.03 there, 0.02 here\)"):
        read_evidence(sweep / "table.json", made / "final" / "pipeline.toml", registry=registry)


def test_seeds_trained_with_fast_dilated_are_evidence_for_a_model_without_it(made, registry, tmp_path):
    """train.fast_dilated computes the same values another way: a recipe that gained it after its model trained
    keeps that model's evidence. Any other key still makes another recipe (here train.fast_resize)."""
    import shutil

    from segcore.tools.publish import read_evidence

    sweep = tmp_path / "sweep"
    shutil.copytree(made / "sweep", sweep)
    for s in range(3):
        file = sweep / "train-only" / f"seed{s}" / "sweep_pipeline.toml"
        text = file.read_text()
        assert "\nfast_dilated = false\n" in text
        file.write_text(text.replace("\nfast_dilated = false\n", "\nfast_dilated = true\n", 1))
    evidence = read_evidence(sweep / "table.json", made / "final" / "pipeline.toml", registry=registry)
    assert evidence["seeds"] == [0, 1, 2]
    file.write_text(file.read_text().replace("\nfast_resize = false\n", "\nfast_resize = true\n", 1))
    with pytest.raises(ConfigError, match=r"seed 2 is not this run's recipe \(train.fast_resize: True there, False"):
        read_evidence(sweep / "table.json", made / "final" / "pipeline.toml", registry=registry)


def test_a_model_trained_at_amp_auto_says_what_it_computed_in(made, registry, capsys, monkeypatch, tmp_path):
    """train.amp = "auto" is the machine's precision: the card gives the one the run's log records."""
    import shutil

    run = tmp_path / "final"
    shutil.copytree(made / "final", run)
    (run / "pipeline.toml").write_text(re.sub(r'(?m)^amp = "none"$', 'amp = "auto"', (run / "pipeline.toml").read_text()))
    monkeypatch.setattr(CLI, "registry", lambda: registry)
    assert main(["hub", "save", str(run), str(tmp_path / "fcn-shapes"), "--no-evaluate", "-q"]) == 0
    training = json.loads((tmp_path / "fcn-shapes" / "config.json").read_text())["training"]
    assert (training["amp"], training["precision"]) == ("auto", "fp32")
    assert "amp auto (computed in fp32), seed 0" in (tmp_path / "fcn-shapes" / "README.md").read_text()


def test_the_card_names_the_machine_the_log_says_the_run_trained_on(made, registry, monkeypatch, tmp_path):
    """The start records (one per session) say where a run trained; `hub save` on another machine gives those, and
    counts CPU-hours with each session's cores; --cores or --train-hours say otherwise; a log without them (an older
    segcore) gives the saving machine, as before."""
    import shutil

    from segcore.io import usable_cores
    from segcore.tools.publish import run_hardware

    run = tmp_path / "final"
    shutil.copytree(made / "final", run)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["cores"] for r in log if r["kind"] == "start"] == [usable_cores()]  # what the trainer writes
    cores = usable_cores() + 14  # another machine's
    log = [r | {"cpu": "AMD EPYC 7B13", "cores": cores} if r["kind"] == "start" else r for r in log]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    seconds = max(r["elapsed_s"] for r in log if r["kind"] == "train")
    monkeypatch.setattr(CLI, "registry", lambda: registry)

    def save(*flags: str) -> dict:
        out = tmp_path / f"fcn-shapes{len(list(tmp_path.iterdir()))}"
        assert main(["hub", "save", str(run), str(out), "--no-evaluate", "-q", *flags]) == 0
        training = json.loads((out / "config.json").read_text())["training"]
        assert f"- hardware: {training['hardware']}\n" in (out / "README.md").read_text()
        return training

    training = save()
    assert (training["hardware"], training["cores"]) == (f"{cores} CPU cores (AMD EPYC 7B13)", cores)
    assert training["cpu_hours"] == round(seconds * cores / 3600, 3)
    assert save("--train-hours", "0.5")["cpu_hours"] == cores / 2
    training = save("--cores", "4", "--train-hours", "0.5")
    assert (training["hardware"], training["cores"], training["cpu_hours"]) == ("4 CPU cores (AMD EPYC 7B13)", 4, 2.0)

    def start(step: int, **more) -> dict:
        return {"kind": "start", "step": step, "cpu": "AMD EPYC", "cores": 2, "processes": 1, "device": "cpu"} | more

    train = [{"kind": "train", "step": s, "elapsed_s": t} for s, t in ((10, 100.0), (20, 200.0), (30, 260.0))]
    assert run_hardware([start(0), *train]) == ("2 CPU cores (AMD EPYC)", 2, 260.0 * 2 / 3600)
    assert run_hardware([start(0), *train[:2], start(20, cpu="Xeon", cores=8), train[2]]) == (
        "2 CPU cores (AMD EPYC) then 8 CPU cores (Xeon)", 8, (200.0 * 2 + 60.0 * 8) / 3600)  # resumed elsewhere
    assert run_hardware([start(0, gpu="NVIDIA H100", device="cuda:0", processes=2), *train])[0] == "2 x NVIDIA H100"
    assert run_hardware([start(0, device="mps"), *train])[0] == "1 x mps"
    assert run_hardware([start(0), {"kind": "train", "step": 10}]).core_hours is None  # no times logged
    assert run_hardware([start(0, cores=None), *train]) is None  # an older segcore's start record
    assert run_hardware([train[0], start(10), *train[1:]]) is None  # steps 1-10 trained with no record of where
    assert run_hardware(train) is None
