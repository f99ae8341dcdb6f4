"""Issue 23, findings 1-6: nothing segcore writes replaces a file it did not write (`segcore.io.claim`, the record
``.segcore-written.json``), never through a link, and ``--overwrite`` never with ``--resume``; converting a dataset
again replaces its whole shard set at once.

One small run (tests/data/small.toml: timm's test_resnet + a one-conv FCN head on 32x32 shapes, 4 steps, checkpoints
at 2 and 4) is trained once; each test copies it. Every command goes through `segcore.cli.main`, as a user types it.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

import segcore
from segcore.cli.main import main
from segcore.errors import ForeignFileError
from segcore.io import LOCK, WRITTEN, claim, record, remove_written

PIPELINE = (Path(__file__).parent / "data" / "small.toml").read_text()  # the small_pipeline fixture's


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def cli(capsys, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def contents(folder: Path) -> dict[str, bytes]:
    """Every file under *folder* but the lock (which names the last process that wrote there)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK}


def users_files(folder: Path, names: list[str]) -> dict[str, bytes]:
    files = {name: f"the user's {name}".encode() for name in names}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


# -- the shared mechanism ------------------------------------------------------------------------------------------


def test_claim_refuses_what_segcore_did_not_write_and_links_and_remove_written_keeps_them(tmp_path):
    folder, outside = tmp_path / "f", tmp_path / "outside"
    users_files(folder, ["mine.txt", "sub/mine.png"])
    users_files(outside, ["a.png"])
    claim(folder, ["ours.txt", "sub/ours.png"], what="w", hint="fix.")  # absent names: nothing to refuse
    for name in ("ours.txt", "sub/ours.png"):
        (folder / name).write_text("segcore's")
    record(folder, ["ours.txt", "sub/ours.png"])
    claim(folder, ["ours.txt", "sub/*.png"], what="w", hint="fix.", ours=["sub/mine.png"])  # ours: a legacy folder
    with pytest.raises(ForeignFileError, match=r"^w: .* holds sub/mine.png, which segcore did not write; .* fix\.$"):
        claim(folder, ["ours.txt", "sub/*.png"], what="w", hint="fix.")
    (folder / "link").symlink_to(outside)
    with pytest.raises(ForeignFileError, match=rf"link is a link \(to {outside}\); segcore never writes or deletes"):
        claim(folder, ["link/a.png"], what="w", hint="fix.", ours=["link/a.png"])
    record(folder, ["link/a.png"])  # a record that names a file behind a link ...
    removed = remove_written(folder, ["*.txt", "sub/*", "link/*"])  # ... still deletes nothing through it
    assert sorted(p.name for p in removed) == ["ours.png", "ours.txt"]
    assert (folder / "mine.txt").is_file() and (folder / "sub" / "mine.png").is_file() and (outside / "a.png").is_file()
    record(folder, ["new.txt"], forget=["sub/*", "link/*"])
    assert json.loads((folder / WRITTEN).read_text())["written"] == ["new.txt", "ours.txt"]


# -- 1: hub save / save_pretrained -----------------------------------------------------------------------------------


def test_hub_save_and_save_pretrained_never_replace_a_users_readme_pipeline_or_curves(trained, registry, tmp_path, capsys):
    folder = tmp_path / "mine"
    users = users_files(folder, ["README.md", "pipeline.toml", "curves.png"])
    model = segcore.from_pretrained(trained[1], registry=registry)
    with pytest.raises(ForeignFileError, match=r"save_pretrained: .*mine holds README.md, which segcore did not write"):
        segcore.save_pretrained(model, folder, registry=registry)
    code, _, err = cli(capsys, "hub", "save", trained[1], folder, "--name", "tiny-shapes", "--no-evaluate", "-q")
    assert code == 2 and "Traceback" not in err
    assert "segcore hub save: " in err and "README.md, pipeline.toml, which segcore did not write" in err
    assert contents(folder) == users  # nothing written, not even the record

    saved = tmp_path / "saved"
    code, _, err = cli(capsys, "hub", "save", trained[1], saved, "--name", "tiny-shapes", "--no-evaluate", "-q")
    assert code == 0, err
    (saved / "notes.md").write_text("mine")
    written = json.loads((saved / WRITTEN).read_text())["written"]
    assert written == ["README.md", "config.json", "model.safetensors", "pipeline.toml"]
    segcore.save_pretrained(model, saved, registry=registry)  # segcore's own files: replaced, the user's kept
    assert (saved / "notes.md").read_text() == "mine" and (saved / "config.json").is_file()


# -- 2 and 6: data convert ---------------------------------------------------------------------------------------------


def convert(capsys, out: Path, *, rows: int, num_train: int = 10) -> tuple[int, str, str]:
    return cli(capsys, "data", "convert", "shapes", "--out", out, "--set", "size=[16, 16]", "--set",
               f"num_train={num_train}", "--set", "num_val=2", "--rows-per-shard", rows)  # fmt: skip


def test_data_convert_never_replaces_a_users_card_or_shards(tmp_path, capsys):
    out = tmp_path / "ds"
    users = users_files(out, ["README.md", "data/train-00000-of-00001.parquet"])
    code, _, err = convert(capsys, out, rows=10)
    assert code == 2 and "Traceback" not in err
    assert "segcore data convert: " in err and "README.md, data/train-00000-of-00001.parquet, which segcore did not write" in err
    assert contents(out) == users


def test_converting_again_replaces_the_whole_shard_set_at_once(registry, tmp_path, capsys, monkeypatch):
    from segcore.contracts.stages import Dataset
    from segcore.hub import datasets as hubdatasets

    out = tmp_path / "ds"
    assert convert(capsys, out, rows=5)[0] == 0  # 2 train shards of 5
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet",
                                                               "val-00000-of-00001.parquet"]  # fmt: skip
    (out / "data" / "notes.txt").write_text("mine")
    code, _, err = convert(capsys, out, rows=10)  # 1 train shard of 10
    assert code == 0, err
    assert sorted(p.name for p in (out / "data").iterdir()) == ["notes.txt", "train-00000-of-00001.parquet",
                                                               "val-00000-of-00001.parquet"]  # fmt: skip
    hub = registry.get(Dataset, "hub")
    assert len(hub.build(hub.config(path=str(out)), split="train")) == 10  # not 20 from two shard sets

    before = contents(out)
    calls = []
    real = hubdatasets._rows

    def fails_at_the_second_shard(dataset, indices):
        calls.append(indices)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(dataset, indices)

    monkeypatch.setattr(hubdatasets, "_rows", fails_at_the_second_shard)
    with pytest.raises(OSError, match="disk full"):
        convert(capsys, out, rows=4, num_train=10)
    assert contents(out) == before  # the old set whole: no new shard beside it
    assert not [p for p in out.rglob(".*tmp*")]


# -- 3: --resume with --overwrite ----------------------------------------------------------------------------------


def test_resume_with_overwrite_is_refused_and_deletes_nothing(trained, run_copy, capsys):
    before = contents(run_copy)
    code, _, err = cli(capsys, "run", trained[0], "--out-dir", run_copy, "--resume", "--overwrite", "-q")
    assert code == 2 and "Traceback" not in err
    assert err.startswith("error: --resume and --overwrite together: ") and "deletes its checkpoints" in err
    assert contents(run_copy) == before


def test_a_damaged_run_json_says_what_overwrite_would_delete(trained, run_copy, capsys):
    (run_copy / "run.json").write_text("{not json")
    code, _, err = cli(capsys, "run", trained[0], "--out-dir", run_copy, "--resume", "-q")
    assert code == 2
    assert "To keep what it holds, choose another run.out_dir (or --out-dir); --overwrite would delete its checkpoints" in err


# -- 4: links ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [("--overwrite",), ("--resume",)])
def test_a_run_never_writes_or_deletes_through_a_linked_folder(trained, run_copy, tmp_path, capsys, flags):
    elsewhere = tmp_path / "elsewhere"
    users = users_files(elsewhere, ["curves.png", "iou.png", "confusion.png"])
    shutil.rmtree(run_copy / "plots", ignore_errors=True)
    (run_copy / "plots").symlink_to(elsewhere, target_is_directory=True)
    plots = write(tmp_path / "plots.toml", PIPELINE.replace("plots = false", "plots = true"))
    before = contents(run_copy)
    code, _, err = cli(capsys, "run", plots, "--out-dir", run_copy, *flags, "-q")
    assert code == 2 and "Traceback" not in err
    assert f"{run_copy / 'plots'} is a link (to {elsewhere}); segcore never writes or deletes through links" in err
    assert contents(elsewhere) == users and contents(run_copy) == before


# -- 5: export -----------------------------------------------------------------------------------------------------


@pytest.mark.slow  # ~19 s: three ONNX exports on 2 idle AVX2 cores
def test_export_without_weights_never_replaces_an_earlier_export_unasked(trained, tmp_path, capsys):
    pipeline = write(tmp_path / "p.toml", PIPELINE.replace("[run]\n", f'[run]\ncheckpoint = "{trained[1]}"\n'))
    code, _, err = cli(capsys, "export", pipeline, "--no-check")  # the trained weights
    assert code == 0, err
    trained_onnx = (tmp_path / "p.onnx").read_bytes()
    write(pipeline, PIPELINE)  # no weights any more
    code, _, err = cli(capsys, "export", pipeline, "--no-check")
    assert code == 2 and "Traceback" not in err
    assert f"exporting random weights would replace {tmp_path / 'p.onnx'}" in err and "--overwrite" in err
    assert (tmp_path / "p.onnx").read_bytes() == trained_onnx

    (tmp_path / "mine.onnx").write_bytes(b"the user's model")
    for flags in ((), ("--overwrite",)):  # never a file segcore did not write
        code, _, err = cli(capsys, "export", pipeline, "--no-check", "--out", tmp_path / "mine.onnx", *flags)
        assert code == 2 and "mine.onnx, which segcore did not write" in err
    assert (tmp_path / "mine.onnx").read_bytes() == b"the user's model"
    code, _, err = cli(capsys, "export", pipeline, "--no-check", "--overwrite")  # asked for: replaced
    assert code == 0 and "random weights" in err
    assert (tmp_path / "p.onnx").read_bytes() != trained_onnx
