"""Issue 8, through the command line: damaged files are named (exit 2), resume falls back past damaged
checkpoints, malformed values fail in `segcore check`, plugin clashes cost one entry, and nothing segcore did not
write is ever deleted or overwritten.

One small run (test_resnet + FCN on 32x32 shapes, 4 steps, checkpoints at steps 2 and 4) is trained once; each
test copies its folder and damages the copy.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from segcore import Decoder, hookimpl, load_registry
from segcore.cli.main import main
from segcore.engine.report import RunLog
from segcore.errors import DamagedFileError, RegistryError
from segcore.contracts.plugins import get_plugin_manager
from segcore.model.weights import read_weights

PIPELINE = (Path(__file__).parent / "data" / "small.toml").read_text()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["run", *map(str, args), "-q"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def copy(run_copy: Path) -> Path:
    """The conftest's copy of the small run (ckpt-00000002 and ckpt-00000004) to damage."""
    return run_copy


def damage(path: Path, how: str) -> None:
    data = path.read_bytes() if path.is_file() else b""
    if how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "zeroed":
        path.write_bytes(bytes(len(data)))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "flipped":  # one bit in the tensor data, the header untouched
        flipped = bytearray(data)
        flipped[len(data) - 100] ^= 0x10
        path.write_bytes(bytes(flipped))
    elif how == "{}":
        path.write_text("{}")
    elif how == "garbage":
        path.write_text('{"step": 4, "epo')
    elif how == "missing":
        path.unlink()
    else:
        raise AssertionError(how)


# -- damaged checkpoints: resume falls back, saying which it skipped and why --------------------------------------


@pytest.mark.parametrize(
    ("file", "how", "reason"),
    [
        ("model.safetensors", "truncated", "truncated"),
        ("train_state.safetensors", "flipped", "differ from the file's integrity record"),
        ("state.json", "{}", "step, epoch, batch_in_epoch, optimizer missing or of the wrong type"),
        ("state.json", "garbage", "not valid JSON"),
        ("state.json", "missing", "missing"),
        (None, "empty folder", "missing"),  # what a kill while pruning left with older versions
    ],
)
def test_resume_falls_back_past_a_damaged_newest_checkpoint(trained, copy, capsys, file, how, reason):
    newest = copy / "checkpoints" / "ckpt-00000004"
    if file is None:
        shutil.rmtree(newest)
        newest.mkdir()
    else:
        damage(newest / file, how)
    reference = read_weights(copy / "model.safetensors")
    code, _, err = run(capsys, trained[0], "--out-dir", copy, "--resume")
    assert code == 0, err
    assert f"--resume: skipped ckpt-00000004: {newest / (file or 'state.json')}: " in err and reason in err
    assert f"resumed from {copy / 'checkpoints' / 'ckpt-00000002'} (step 2" in err
    again = read_weights(copy / "model.safetensors")  # steps 3 and 4 again, bitwise as the first time
    assert all(torch.equal(again[k], v) for k, v in reference.items())


def test_every_checkpoint_damaged_exits_2_naming_each(trained, copy, capsys):
    damage(copy / "checkpoints" / "ckpt-00000004" / "model.safetensors", "zeroed")
    damage(copy / "checkpoints" / "ckpt-00000002" / "state.json", "garbage")
    code, _, err = run(capsys, trained[0], "--out-dir", copy, "--resume")
    assert code == 2 and "Traceback" not in err
    assert str(copy / "checkpoints" / "ckpt-00000004" / "model.safetensors") in err
    assert str(copy / "checkpoints" / "ckpt-00000002" / "state.json") in err
    assert "every checkpoint in" in err and "pass --overwrite" in err


def test_stray_names_in_the_checkpoint_folder_are_not_checkpoints(trained, copy, capsys):
    (copy / "checkpoints" / "ckpt-00000099").write_text("not a folder")
    (copy / "checkpoints" / "ckpt-final").mkdir()
    (copy / "checkpoints" / "notes.txt").write_text("mine")
    code, _, err = run(capsys, trained[0], "--out-dir", copy, "--resume")
    assert code == 0, err
    assert f"resumed from {copy / 'checkpoints' / 'ckpt-00000004'} (step 4" in err and "skipped" not in err
    assert (copy / "checkpoints" / "notes.txt").read_text() == "mine"


def test_resume_before_the_first_checkpoint_starts_from_scratch(trained, tmp_path, capsys):
    code, _, err = run(capsys, trained[0], "--out-dir", tmp_path / "fresh", "--resume")
    assert code == 0, err
    assert "holds no checkpoint yet; starting from scratch" in err
    assert (tmp_path / "fresh" / "model.safetensors").is_file()


def test_a_log_cut_mid_line_is_repaired_on_resume(trained, copy, capsys, tmp_path):
    log = copy / "log.jsonl"
    log.write_bytes(log.read_bytes() + b'{"kind": "train", "step": 5, "lo')
    plots = write(tmp_path / "plots.toml", PIPELINE.replace("plots = false", "plots = true"))  # reads the log
    code, _, err = run(capsys, plots, "--out-dir", copy, "--resume")
    assert code == 0, err
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert max(r["step"] for r in records) == 4 and (copy / "plots" / "curves.png").is_file()


def test_a_damaged_log_line_is_named(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"kind": "train", "step": 1}\n{"kind": "tr\n{"kind": "eval", "step": 2}\n')
    with pytest.raises(DamagedFileError, match=r"log.jsonl:2: not a log record"):
        RunLog(tmp_path).read()


@pytest.mark.parametrize("content", ["{not json", "{}", ""])
def test_a_damaged_run_json_is_named(trained, copy, capsys, content):
    (copy / "run.json").write_text(content)
    before = (copy / "model.safetensors").read_bytes()
    code, _, err = run(capsys, trained[0], "--out-dir", copy, "--resume")
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"error: {copy / 'run.json'}: damaged") and "--overwrite" in err
    assert (copy / "model.safetensors").read_bytes() == before


def test_the_final_checkpoint_is_written_before_the_final_evaluation(trained, copy, monkeypatch, capsys):
    from segcore.engine import trainer

    def broken(self, *, final=False):
        raise RuntimeError("evaluation broke")

    shutil.rmtree(copy / "checkpoints" / "ckpt-00000004")
    monkeypatch.setattr(trainer.Trainer, "_evaluate", broken)
    with pytest.raises(RuntimeError, match="evaluation broke"):  # steps 3 and 4 again, then the final evaluation
        main(["run", str(trained[0]), "-q", "--out-dir", str(copy), "--resume"])
    assert json.loads((copy / "checkpoints" / "ckpt-00000004" / "state.json").read_text())["step"] == 4


# -- damaged or foreign weights for evaluate / predict ------------------------------------------------------------


def _evaluate_with(tmp_path: Path, checkpoint: Path, text: str = PIPELINE) -> Path:
    return write(tmp_path / "eval.toml", text.replace("[run]\n", f'[run]\ntask = "evaluate"\ncheckpoint = "{checkpoint}"\n'))


@pytest.mark.parametrize(
    ("how", "fragment"),
    [
        ("truncated", "truncated"),
        ("zeroed", "truncated, zeroed or overwritten"),
        ("empty", "the file is empty"),
        ("random", "not a readable safetensors file"),
        ("flipped", "differ from the file's integrity record"),
    ],
)
def test_damaged_model_weights_are_named(copy, tmp_path, capsys, how, fragment):
    damage(copy / "model.safetensors", how)
    code, _, err = run(capsys, _evaluate_with(tmp_path, copy))
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"error: {copy / 'model.safetensors'}: ") and fragment in err


def test_checkpoint_pointing_at_a_png_or_a_pickle_is_named(tmp_path, capsys):
    png = tmp_path / "photo.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png)
    pkl = tmp_path / "model.pth"
    pkl.write_bytes(pickle.dumps({"w": [1.0]}))
    for path, fragment in ((png, "this is a PNG image"), (pkl, "this is a pickle (torch.save)")):
        code, _, err = run(capsys, _evaluate_with(tmp_path, path))
        assert code == 2 and err.startswith(f"error: run.checkpoint {str(path)!r}: {fragment}"), err


def test_a_classifier_for_another_class_count_is_a_clear_error(copy, tmp_path, capsys):
    code, _, err = run(capsys, _evaluate_with(tmp_path, copy, PIPELINE.replace("dropout = 0.0", "dropout = 0.0\nnum_classes = 7")))
    assert code == 2 and "Traceback" not in err
    assert "classifier.weight is (5, 16, 1, 1) in the file, (7, 16, 1, 1) in the model" in err
    assert "The file's classifier has 5 classes, the model's 7" in err


# -- leftovers of killed runs -------------------------------------------------------------------------------------


def test_stale_temps_are_cleaned_and_user_files_kept(trained, copy, capsys):
    ours = [copy / "checkpoints" / ".ckpt-00000006.tmp.ab12cd34", copy / "checkpoints" / ".ckpt-00000006.x1y2z3ab",
            copy / ".best.tmp.abcdefgh", copy / ".best.old"]  # fmt: skip
    for folder in ours:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    ours.append(copy / ".model.safetensors.abcd_123.tmp")
    ours[-1].write_bytes(b"half")
    users = [copy / "notes.tmp", copy / ".notes", copy / "checkpoints" / "draft.tmp"]
    for path in users:
        path.write_text("mine")
    code, _, err = run(capsys, trained[0], "--out-dir", copy, "--resume")
    assert code == 0, err
    assert [p for p in ours if p.exists()] == []
    assert all(p.read_text() == "mine" for p in users)


def test_written_files_and_folders_follow_the_umask(trained):
    mask = os.umask(0)
    os.umask(mask)
    run_dir = trained[1]
    for path in (run_dir / "model.safetensors", run_dir / "metrics.json", run_dir / "checkpoints" / "ckpt-00000004" / "state.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    for path in (run_dir / "checkpoints" / "ckpt-00000004", run_dir / "best"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~mask, path


# -- never delete or overwrite what segcore did not write ---------------------------------------------------------


def test_a_folder_that_is_not_a_run_is_never_written_over(trained, tmp_path, capsys):
    folder = tmp_path / "mine"
    files = {"model.safetensors": b"my weights", "metrics.json": b"{}", "plots/figure.png": b"png",
             "checkpoints/notes.txt": b"notes"}  # fmt: skip
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    for flags in ((), ("--overwrite",)):
        code, _, err = run(capsys, trained[0], "--out-dir", folder, *flags)
        assert code == 2 and "is not a segcore run folder (it has no run.json)" in err, err
    assert {n: (folder / n).read_bytes() for n in files} == files
    assert not (folder / "run.json").exists()


def test_overwrite_replaces_only_segcores_own_files(trained, copy, capsys, tmp_path):
    users = {"plots/mine.png": "p", "checkpoints/mine.txt": "c", "best/notes.txt": "b", "notes.txt": "n"}
    for name, text in users.items():
        (copy / name).parent.mkdir(exist_ok=True)
        (copy / name).write_text(text)
    other = write(tmp_path / "other.toml", PIPELINE.replace("lr = 0.01", "lr = 0.02"))
    code, _, err = run(capsys, other, "--out-dir", copy)
    assert code == 2 and "holds a different run" in err
    code, _, err = run(capsys, other, "--out-dir", copy, "--overwrite")
    assert code == 0, err
    assert {n: (copy / n).read_text() for n in users} == users
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["ckpt-00000002", "ckpt-00000004", "mine.txt"]


def test_predict_output_names_never_collide_and_inputs_survive(copy, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("scene.png", "scene.jpg", "road.png", "road_overlay.png"):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(images / name)
    inputs = {p.name: p.read_bytes() for p in images.iterdir()}

    def predict(output: Path) -> tuple[int, str, str]:
        text = PIPELINE.replace("[run]\n", f'[run]\ntask = "predict"\ncheckpoint = "{copy}"\n')
        text += f'[predict]\ninput_dir = "{images}"\noutput_dir = "{output}"\n'
        return run(capsys, write(tmp_path / "predict.toml", text))

    code, out, err = predict(tmp_path / "pred")
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "pred").glob("*.png"))
    assert len(written) == 8 and f"wrote 8 files to {tmp_path / 'pred'}/" in out
    assert written == ["road.png", "road_overlay.png", "road_overlay_2.png", "road_overlay_2_overlay.png",
                       "scene_jpg.png", "scene_jpg_overlay.png", "scene_png.png", "scene_png_overlay.png"]  # fmt: skip
    assert predict(tmp_path / "pred")[0] == 0  # its own files may be replaced
    code, _, err = predict(images)  # into the input folder: road.png is the user's
    assert code == 2 and "which segcore did not write" in err and "road.png" in err
    assert {p.name: p.read_bytes() for p in images.iterdir()} == inputs


# -- the command line ---------------------------------------------------------------------------------------------


def test_the_ctrl_c_hint_keeps_out_dir_and_device(trained, tmp_path, monkeypatch, capsys):
    from segcore.engine import run as run_module
    from segcore.engine.trainer import Interrupted

    def interrupted(*args, **kwargs):
        raise Interrupted("interrupted at step 3; checkpoint X. Continue with: segcore run <pipeline> --resume")

    monkeypatch.setattr(run_module, "run_pipeline", interrupted)
    code = main(["run", str(trained[0]), "--out-dir", str(tmp_path / "my runs"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 130
    assert f"Continue with: segcore run {trained[0]} --resume --out-dir '{tmp_path / 'my runs'}' --device cpu" in err


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="watches the child's imports through /proc")
def test_ctrl_c_while_importing_exits_130_without_a_traceback(trained):
    # a suite started in the background (nohup pytest &) ignores SIGINT, and a child inherits an ignored signal; a
    # handled one is reset to the default on exec, so the child takes Ctrl-C as from a terminal
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "segcore", "check", str(trained[0])], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    # Ctrl-C once the child imports torch: segcore.cli installs its handler before (in the first ~0.1 s, which a
    # fixed sleep overran on loaded cores), and importing torch and the rest takes seconds more
    maps, end = Path(f"/proc/{proc.pid}/maps"), time.monotonic() + 120
    while "libtorch" not in maps.read_text():
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (130, "interrupted\n")


# -- malformed values: `segcore check` rejects what `segcore run` would trip on -----------------------------------

BAD_VALUES = {
    "shapes_size_zero": ("size = [32, 32]", "size = [0, 0]", "data.dataset: 'size' must be [height, width] with both > 0, got [0, 0]"),
    "shapes_size_negative": ("size = [32, 32]", "size = [-8, 32]", "'size' must be [height, width] with both > 0, got [-8, 32]"),
    "input_size_zero": ("input_size = [32, 32]", "input_size = [0, 0]", "run: 'input_size' must be [height, width] with both > 0"),
    "input_size_negative": ("input_size = [32, 32]", "input_size = [-32, 32]", "'input_size' must be [height, width]"),
    "eval_scales_empty": ("[run]", "[eval]\nscales = []\n[run]", "eval: 'scales' must hold at least one value, got []"),
    "eval_scales_zero": ("[run]", "[eval]\nscales = [1.0, 0.0]\n[run]", "eval: 'scales' must hold numbers > 0"),
    "slide_stride_zero": ("[run]", '[eval]\nmode = "slide"\nstride = [0, 0]\n[run]', "eval: 'stride' must be [height, width] with both > 0"),
    "slide_window_zero": ("[run]", '[eval]\nmode = "slide"\nwindow = [0, 8]\n[run]', "eval: 'window' must be [height, width]"),
    "crop_size_zero": ("[data]\n", "[data.augment]\ncrop_size = [0, 0]\n[data]\n", "data.augment: 'crop_size' must be [height, width]"),
    "milestone_past_the_end": ("iters = 4", 'iters = 4\nschedule = "step"\nstep_milestones = [1.5]',
                               "train: 'step_milestones' must hold increasing fractions of the budget between 0 and 1"),
    "decoder_key_list": ("channels = 16", "channels = 16\nin_chanels = [32]",
                         "model.decoder: unknown key 'in_chanels' (did you mean 'in_channels'?); allowed: name, attention, "
                         "in_channels, in_strides, "),
    "loss_key_list": ('name = "ce"', 'name = "ce"\nwieght = 2.0', "loss[0]: unknown key 'wieght' (did you mean 'weight'?); allowed: name, weight, "),
    "std_zero": ("dropout = 0.0", "dropout = 0.0\nstd = [0.0, 0.2, 0.2]", "model: 'std' must hold numbers > 0, got [0.0, 0.2, 0.2]"),
    "betas_past_one": ("iters = 4", "iters = 4\nbetas = [1.5, 0.9]", "train: 'betas' must hold numbers in [0, 1), got [1.5, 0.9]"),
    "section_key_list": ("iters = 4", "iters = 4\nnmae = 1", "train: unknown key 'nmae'; allowed: epochs, iters,"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_VALUES, ids=list(BAD_VALUES))
def test_check_rejects_values_run_would_trip_on(case, tmp_path, capsys):
    old, new, fragment = BAD_VALUES[case]
    assert old in PIPELINE
    path = write(tmp_path / "p.toml", PIPELINE.replace(old, new, 1))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err, err
    assert "'name' (did you mean 'name'?)" not in err


def test_a_scalar_over_a_table_of_the_base_is_a_config_error(trained, tmp_path, capsys):
    path = write(tmp_path / "p.toml", f'base = "{trained[0]}"\ntrain = 5\n')
    assert main(["check", str(path)]) == 2
    assert "train: expected a table of keys, not a single value (got 5)" in capsys.readouterr().err


def test_a_negative_input_size_option_is_refused(trained, capsys):
    with pytest.raises(SystemExit) as info:
        main(["check", str(trained[0]), "--input-size=-32x32"])
    assert info.value.code == 2 and "height and width must be > 0, got '-32x32'" in capsys.readouterr().err


def test_a_batch_larger_than_the_data_is_refused_before_training(trained, tmp_path, capsys):
    path = write(tmp_path / "p.toml", PIPELINE.replace("batch_size = 2", "batch_size = 1000000000000"))
    code, _, err = run(capsys, path, "--out-dir", tmp_path / "run")
    assert code == 2
    assert "data.batch_size = 1000000000000 is more than the 8 training samples each of the 1 process(es) sees" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


# -- plugins ------------------------------------------------------------------------------------------------------


@attrs.frozen
class _Cfg:
    channels: int = 8


class _LyingDecoder(Decoder):
    """Declares cfg.channels output channels but returns 3."""

    def __init__(self, cfg: _Cfg, *, in_features, attention) -> None:
        super().__init__()
        self.out_channels, self.stride = cfg.channels, in_features[-1].stride
        self.conv = nn.Conv2d(in_features[-1].channels, 3, 1)

    def forward(self, features):
        return self.conv(features[-1])


def _plugin(decoder_name: str, **marker):
    class Plugin:
        @hookimpl(**marker)
        def segcore_register(self, registry):
            registry.add(_LyingDecoder, name=decoder_name, config=_Cfg)
            registry.add(_LyingDecoder, name=f"{decoder_name}_extra", config=_Cfg)

    return Plugin()


@pytest.mark.parametrize(("marker", "owner"), [({"trylast": True}, "first"), ({"tryfirst": True}, "thirdparty")])
def test_a_name_clash_needs_the_plugin_named_and_costs_nothing_else(marker, owner):
    pm = get_plugin_manager(autoload=False)
    pm.register(_plugin("clashy"), name="first")
    pm.register(_plugin("clashy", **marker), name="thirdparty")
    pm.register(_plugin("fcn", tryfirst=True), name="usurper")
    registry = load_registry(pm)
    for name in ("clashy", "clashy_extra", "fcn"):  # #23: neither plugin's silently; the message names both
        with pytest.raises(RegistryError, match=f"'{name}' is registered by 2 plugins"):
            registry.get(Decoder, name)
    assert [registry.get(Decoder, "clashy", p).plugin.name for p in ("first", "thirdparty")] == ["first", "thirdparty"]
    assert registry.contested(Decoder)[Decoder, "clashy"][0].plugin.name == owner  # who registered first
    assert registry.get(Decoder, "fcn", "segcore").plugin.name == "segcore.builtin.decoders"  # a distribution name too
    assert registry.get(Decoder, "fcn_extra").plugin.name == "usurper"  # and the newcomer keeps all else
    [clash] = [str(p) for p in registry.problems if "'clashy'" in str(p)]
    assert 'plugin "thirdparty"' in clash and 'plugin "first"' in clash and "both are kept" in clash
    [builtin] = [str(p) for p in registry.problems if "'fcn'" in str(p)]
    assert 'plugin "usurper"' in builtin and 'plugin "segcore.builtin.decoders"' in builtin


def test_a_decoder_breaking_its_contract_stops_run_with_a_message(tmp_path, monkeypatch, capsys):
    pm = get_plugin_manager(autoload=False)
    pm.register(_plugin("liar"), name="liar")
    registry = load_registry(pm)
    monkeypatch.setattr("segcore.cli._common.registry", lambda: registry)
    path = write(tmp_path / "p.toml", PIPELINE.replace('name = "fcn"\nnum_convs = 1\nchannels = 16\nin_index = -1', 'name = "liar"'))
    code, _, err = run(capsys, path, "--out-dir", tmp_path / "run")
    assert code == 2 and "Traceback" not in err
    assert "[model.decoder] 'liar'" in err and "declares 8 channels" in err
    assert not (tmp_path / "run").exists()
