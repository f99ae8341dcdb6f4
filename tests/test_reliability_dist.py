"""Issue 8, two processes (torchrun's launcher, gloo on the CPU): the ranks evaluate and save one model, and a
Ctrl-C to the whole process group ends as in one process (a checkpoint, exit 130, a resume command that works).

A BatchNorm model (test_resnet + FCN with a BN conv) learns something in 16 steps on 48x48 shapes (class weights
keep it from predicting only background), so a mix of two ranks' BN statistics would change the score.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from segcore import load_registry
from segcore.config import load_pipeline
from segcore.engine.checkpoint import latest_checkpoint, read_checkpoint
from segcore.engine.run import run_pipeline

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
in_index = 0
[data]
batch_size = 2
[data.dataset]
name = "shapes"
size = [48, 48]
num_train = 16
num_val = 6
[data.augment]
hflip = 0.0
[[loss]]
name = "ce"
class_weights = [0.1, 1.0, 1.0, 1.0, 1.0]
[train]
iters = 16
optimizer = "adamw"
lr = 0.01
weight_decay = 0.0
plots = false
find_unused_parameters = true  # the FCN reads only the finest level
[run]
device = "cpu"
input_size = [48, 48]
"""

ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}


def _segcore(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "segcore", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, **kwargs)  # fmt: skip


@pytest.mark.slow  # two processes train 16 steps, then one evaluates: about 40 s on 2 busy cores
def test_two_processes_report_the_score_of_the_model_they_save(tmp_path):
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(PIPELINE)
    proc = _segcore(str(pipeline), "-q", "--out-dir", str(tmp_path / "run"), "--nproc-per-node", "2")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    reported = json.loads((tmp_path / "run" / "metrics.json").read_text())["val"]

    evaluate = tmp_path / "eval.toml"
    # the model as trained (fp32), not the inference fast path, so that the two numbers are the same arithmetic
    evaluate.write_text(PIPELINE.replace("[run]\n", f'[eval]\nfast = false\n[run]\ntask = "evaluate"\ncheckpoint = "{tmp_path / "run"}"\n'))
    registry = load_registry()
    result = run_pipeline(load_pipeline(evaluate, registry=registry), registry, progress=False)
    alone = result.metrics
    assert result.matrix[:, 1:].sum() > 0  # it predicts more than background, so BN statistics matter
    assert reported["mIoU"] == pytest.approx(alone["mIoU"], abs=1e-12)
    assert reported["aAcc"] == pytest.approx(alone["aAcc"], abs=1e-12)


@pytest.mark.slow  # two processes, interrupted, then resumed: about 60 s
def test_ctrl_c_to_the_process_group_checkpoints_and_exits_130(tmp_path):
    pipeline = tmp_path / "p.toml"
    pipeline.write_text(PIPELINE.replace("iters = 16", "iters = 30\ncheckpoint_every_iters = 2\ncheckpoint_every = 0"))
    out_dir = tmp_path / "run"
    proc = _segcore(str(pipeline), "-q", "--out-dir", str(out_dir), "--nproc-per-node", "2", start_new_session=True)
    end = time.monotonic() + 300
    while latest_checkpoint(out_dir / "checkpoints") is None:
        assert time.monotonic() < end and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group gets it
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "gloo" not in err.lower()
    command = f"Continue with: segcore run {pipeline} --resume --out-dir {out_dir} --nproc-per-node 2"
    assert command in err
    last = read_checkpoint(latest_checkpoint(out_dir / "checkpoints"))  # whole and verified
    assert last.step < 30 and not (out_dir / "model.safetensors").exists()

    resumed = _segcore(str(pipeline), "-q", "--out-dir", str(out_dir), "--nproc-per-node", "2", "--resume")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert f"resumed from {last.folder} (step {last.step}" in err
    assert json.loads((out_dir / "metrics.json").read_text())["step"] == 30
