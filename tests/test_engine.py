"""The engine on tiny models and the embedded data: training features, checkpoints, resume, safety, outputs."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import numpy as np
import pytest
import safetensors.torch
import tomli_w
import torch
from PIL import Image

from segcore import ConfigError, DataError, Loss, hookimpl
from segcore.config import structure_pipeline
from segcore.data.datasets import SplitUnion, build_split
from segcore.hub.card import _splits
from segcore.model.check import check_pipeline
from segcore.engine.checkpoint import latest_checkpoint
from segcore.engine.optim import LRSchedule, param_groups
from segcore.engine.run import run_pipeline
from segcore.engine.trainer import Trainer, TrainingError
from segcore.contracts.plugins import get_plugin_manager, load_registry
from segcore.io import usable_cores


def tiny(tmp_path: Path, **sections) -> dict:
    """A pipeline table: timm's test_resnet + a one-conv FCN head on 32x32 shapes, 16 train / 4 val images, batch 4
    (the smallest model that shows what these tests check: bookkeeping, not learning)."""
    raw = {
        "model": {"backbone": {"name": "timm", "model_name": "test_resnet"},
                  "decoder": {"name": "fcn", "num_convs": 1, "channels": 16, "in_index": -1}},
        "data": {"dataset": {"name": "shapes", "size": [32, 32], "num_train": 16, "num_val": 4}, "batch_size": 4},
        "loss": [{"name": "ce"}],
        "train": {"iters": 8, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.0, "log_every": 1, "plots": False},
        "run": {"out_dir": str(tmp_path / "run"), "device": "cpu"},
    }  # fmt: skip
    for section, values in sections.items():
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(raw.get(section, {}).get(key), dict):
                raw[section][key] = {**raw[section][key], **value}
            else:
                raw.setdefault(section, {})[key] = value
    if "epochs" in raw["train"]:
        raw["train"].pop("iters", None)
    return raw


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(folder / "model.safetensors"))


def write_toml(path: Path, raw: dict) -> Path:
    path.write_text(tomli_w.dumps(raw))
    return path


def fit(registry, raw, **kwargs):
    cfg = structure_pipeline(raw, registry=registry)
    trainer = Trainer.from_config(cfg, registry, progress=False, **kwargs)
    return trainer, trainer.fit()


def test_overfits_one_batch(registry, tmp_path):
    """The one test of learning: 4 images, 100 steps (one per epoch: no evaluation or checkpoint until the end).
    The head reads the stride-2 features: test_resnet's stride-32 ones are 1x1 at 32x32."""
    raw = tiny(tmp_path, data={"dataset": {"num_train": 4}, "val_split": "train", "augment": {"hflip": 0.0}},
               train={"iters": 100, "lr": 0.01, "eval_every": 0, "checkpoint_every": 0},
               model={"dropout": 0.0, "decoder": {"num_convs": 2, "channels": 32, "in_index": 0}})  # fmt: skip
    trainer, result = fit(registry, raw)
    log = [r for r in trainer.log.read() if r["kind"] == "train"]
    assert log[-1]["loss"] < 0.05 * log[0]["loss"]
    assert result.metrics["mIoU"] > 0.85, result.metrics


def test_checkpoints_are_written_once_an_epoch_by_default_with_an_iters_budget_too(registry, tmp_path):
    """16 images in batches of 4: an epoch is 4 steps. Without checkpoint_every, 8 steps leave checkpoints at the
    two epochs' ends, not one a step (test_engine's other runs set checkpoint_every in steps)."""
    fit(registry, tiny(tmp_path, train={"keep_last": 10}))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["ckpt-00000004", "ckpt-00000008"]


def test_same_seed_same_weights_and_outputs(registry, tmp_path):
    fit(registry, tiny(tmp_path / "a", train={"deterministic": True}))
    fit(registry, tiny(tmp_path / "b", train={"deterministic": True}))
    a, b = weights(tmp_path / "a" / "run"), weights(tmp_path / "b" / "run")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    out = tmp_path / "a" / "run"
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records[:2]] == ["start", "train"] and {r["kind"] for r in records[2:]} == {"train", "eval"}
    assert {"loss", "lr", "img_s", "elapsed_s", "loss.ce"} <= set(records[1])
    assert json.loads((out / "metrics.json").read_text())["val"]["mIoU"] > 0


def _segcore(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "segcore", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)  # fmt: skip


def _wait_for(path_glob: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = sorted(path_glob.parent.glob(path_glob.name)) if path_glob.parent.exists() else []
        if found:
            return found[0]
        if proc.poll() is not None:
            raise AssertionError(f"process ended before {path_glob}: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"no {path_glob} after {timeout} s")


@pytest.mark.parametrize("how", ["kill", "ctrl_c"])
@pytest.mark.slow  # ~30 s each: a run, then one interrupted and resumed on 2 idle AVX2 cores
def test_interrupted_and_resumed_run_is_bitwise_equal(registry, tmp_path, how):
    """16 steps per epoch, checkpoints every 3 steps (so inside epochs); stop the process after the first
    mid-epoch checkpoint (SIGKILL, or Ctrl-C which writes one more), resume, compare with an unbroken run. (The
    45 steps after the first checkpoint take about 2 s, time enough for the signal to arrive before the end.)"""
    # checkpoints only every 3 steps (3, 6, ..., 45: never at an epoch's end, 16 and 32; 48 is the last step)
    train = {"epochs": 3, "deterministic": True, "checkpoint_every": 0, "checkpoint_every_iters": 3, "keep_last": 20}
    data = {"dataset": {"num_train": 64}}
    fit(registry, tiny(tmp_path / "straight", train=train, data=data))

    raw = tiny(tmp_path / "broken", train=train, data=data)
    pipeline = write_toml(tmp_path / "p.toml", raw)
    proc = _segcore("run", str(pipeline), "-q")
    _wait_for(Path(raw["run"]["out_dir"]) / "checkpoints" / "ckpt-00000003", proc)
    proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    run = Path(raw["run"]["out_dir"])
    if how == "kill":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, err
        assert "interrupted at step" in err and "--resume" in err and "Traceback" not in err
    assert not (run / "model.safetensors").exists()
    last = latest_checkpoint(run / "checkpoints")
    state = json.loads((last / "state.json").read_text())
    assert state["step"] < 48
    if how == "kill":
        assert state["batch_in_epoch"] != 0  # resuming from inside an epoch

    again = _segcore("run", str(pipeline), "-q")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 2 and "pass --resume" in err  # never silently restarts over a run
    resumed = _segcore("run", str(pipeline), "-q", "--resume")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    a, b = weights(tmp_path / "straight" / "run"), weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the run's wall-clock time goes on from the checkpoint's instead of starting again at 0
    assert state["elapsed_s"] > 0
    after = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
             if r["kind"] == "train" and r["step"] > state["step"]]  # fmt: skip
    # (the log rounds to 0.1 s and the first step after a resume can take less than 0.05 s)
    assert after and all(r["elapsed_s"] >= round(state["elapsed_s"], 1) for r in after)


@pytest.mark.slow  # ~22 s: torchrun starts two processes on 2 idle AVX2 cores
def test_distributed_two_processes_match_one(tmp_path):
    """torchrun, 2 CPU processes with batch 2 each (gloo) against 1 process with batch 4; a model without
    batch norm or dropout (ConvNeXt's LayerNorm, no head convs) so the two are the same computation."""
    base = {
        "model": {"backbone": {"name": "timm", "model_name": "test_convnext"}, "dropout": 0.0,
                  "decoder": {"name": "fcn", "num_convs": 0, "in_index": -1}},
        "data": {"dataset": {"name": "shapes", "size": [64, 64], "num_train": 16, "num_val": 4}, "batch_size": 4,
                 "augment": {"hflip": 0.0}},
        "loss": [{"name": "ce"}],
        "train": {"iters": 6, "optimizer": "sgd", "lr": 0.05, "plots": False},
        "run": {"device": "cpu"},
    }  # fmt: skip
    one = copy.deepcopy(base)
    one["run"]["out_dir"] = str(tmp_path / "one")
    two = copy.deepcopy(base)
    two["run"]["out_dir"] = str(tmp_path / "two")
    two["data"]["batch_size"] = 2
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    r1 = subprocess.run([sys.executable, "-m", "segcore", "run", str(write_toml(tmp_path / "one.toml", one)), "-q"],
                        capture_output=True, text=True, env=env)  # fmt: skip
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
         "-m", "segcore", "run", str(write_toml(tmp_path / "two.toml", two)), "-q"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert r2.returncode == 0, r2.stderr[-3000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())["val"]
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())["val"]
    assert m1["mIoU"] == pytest.approx(m2["mIoU"], abs=1e-3)  # metrics reduced over both ranks
    assert not (tmp_path / "two" / "log.jsonl").read_text().count('"step": 1,') > 1  # rank 0 logs alone


class _NaNAfter(Loss):
    def __init__(self, cfg, *, num_classes, ignore_index):
        super().__init__()
        self.calls = 0

    def forward(self, logits, target, output):
        self.calls += 1
        value = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
        return value * float("nan") if self.calls > 4 else value


@attrs.frozen
class _Empty:
    pass


class _NaNPlugin:
    @hookimpl
    def segcore_register(self, registry):
        registry.add(_NaNAfter, name="nan_after_4", config=_Empty)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    pm = get_plugin_manager()
    pm.register(_NaNPlugin(), name="nan")
    registry = load_registry(pm)
    raw = tiny(tmp_path, train={"checkpoint_every_iters": 2})
    raw["loss"] = [{"name": "nan_after_4"}]
    with pytest.raises(TrainingError) as info:
        fit(registry, raw)
    msg = str(info.value)
    assert "loss is nan at step 4" in msg and "loss.nan_after_4=nan" in msg
    assert "the last good checkpoint is" in msg and "ckpt-00000004" in msg
    assert not (tmp_path / "run" / "model.safetensors").exists()


class _Squares(torch.utils.data.Dataset):
    """Four 32x32 samples made in memory: a bright square (class 1) on black (class 0)."""

    def __init__(self) -> None:
        from segcore import DatasetMeta

        self.meta = DatasetMeta(("background", "square"), ((0, 0, 0), (255, 255, 255)))

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        mask = torch.zeros(32, 32, dtype=torch.int64)
        mask[4 + i : 20 + i, 8:24] = 1
        return {"image": (mask * 255).to(torch.uint8).expand(3, 32, 32).clone(), "mask": mask}


def test_a_trainer_from_built_parts_trains_without_a_dataset_plugin_and_restores_determinism(registry, tmp_path):
    """The constructor takes what from_config builds: any model, criterion and datasets; the loop sets
    deterministic algorithms for fit() only."""
    from segcore import build_model
    from segcore.engine.criterion import Criterion

    cfg = structure_pipeline(tiny(tmp_path, train={"iters": 2, "deterministic": True}), registry=registry)
    model = build_model(cfg.model, registry, num_classes=2)
    criterion = Criterion(cfg.loss, cfg.model.aux, registry, num_classes=2, ignore_index=255)
    trainer = Trainer(cfg, model=model, criterion=criterion, train_set=_Squares(), val_set=_Squares(),
                      run=tmp_path / "run", progress=False)  # fmt: skip
    inside = []
    original = trainer._train_step
    trainer._train_step = lambda micro: (inside.append(torch.are_deterministic_algorithms_enabled()), original(micro))[1]
    assert not torch.are_deterministic_algorithms_enabled()
    result = trainer.fit()
    assert inside == [True, True] and not torch.are_deterministic_algorithms_enabled()
    assert len(result.metrics["IoU"]) == 2 and trainer.step == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best", "checkpoints", "log.jsonl", "metrics.json", "model.safetensors"]  # no run.json: not from_config's
    assert trainer.run.checkpoint(2).is_dir() and trainer.run.checkpoint(2).name == "ckpt-00000002"


def test_keeps_the_last_k_checkpoints_and_the_best(registry, tmp_path):
    trainer, _ = fit(registry, tiny(tmp_path, train={"iters": 8, "checkpoint_every": 1, "keep_last": 2, "eval_every": 2}))
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["ckpt-00000007", "ckpt-00000008"]
    best = json.loads((tmp_path / "run" / "best" / "state.json").read_text())
    evals = [r for r in trainer.log.read() if r["kind"] == "eval"]
    assert best["best"] == max(r["mIoU"] for r in evals)
    assert not list((tmp_path / "run").rglob("*.tmp"))  # no debris: the only hidden files are the record and the lock
    assert sorted(p.name for p in (tmp_path / "run").glob(".*")) == [".segcore-written.json", ".segcore.lock"]


def test_a_run_from_before_a_key_was_added_resumes_with_the_key_at_its_default(registry, tmp_path):
    """A run started before segcore gained a key (its run.json has no train.fast_resize) is the same run when the key
    is at its default: it resumes. With the key set otherwise, or a key today's schema does not know, it is another
    run; the sweep's check of a finished run (same_run) says the same."""
    from segcore.config import dump_pipeline
    from segcore.tools.sweep import same_run

    raw = tiny(tmp_path, train={"iters": 2})
    fit(registry, raw)
    marker = tmp_path / "run" / "run.json"
    record = json.loads(marker.read_text())
    assert record["identity"]["train"].pop("fast_resize") is False  # what segcore wrote before the key existed
    marker.write_text(json.dumps(record))
    written = (tmp_path / "run" / "pipeline.toml").read_text().replace("fast_resize = false\n", "")
    assert "fast_resize" not in written
    assert same_run(written, dump_pipeline(structure_pipeline(raw, registry=registry)), registry=registry)
    assert not same_run(written, dump_pipeline(structure_pipeline(raw, registry=registry)))  # without the schema
    # written when checkpoint_every defaulted to 1: keys that change what a run writes, not what it trains, do not count
    assert "checkpoint_every =" not in written and "[train]\n" in written and "log_every = 1\n" in written
    old_default = written.replace("[train]\n", "[train]\ncheckpoint_every = 1\n").replace("log_every = 1\n", "log_every = 3\n")
    assert same_run(old_default, dump_pipeline(structure_pipeline(raw, registry=registry)), registry=registry)
    changed = tiny(tmp_path, train={"iters": 2, "fast_resize": True})
    assert not same_run(written, dump_pipeline(structure_pipeline(changed, registry=registry)), registry=registry)
    with pytest.raises(ConfigError, match="holds a different run"):
        fit(registry, changed, resume=True)
    unknown = {**record, "identity": {**record["identity"], "train": {**record["identity"]["train"], "gone_key": 1}}}
    marker.write_text(json.dumps(unknown))
    with pytest.raises(ConfigError, match="holds a different run"):
        fit(registry, raw, resume=True)
    marker.write_text(json.dumps(record))
    trainer, _ = fit(registry, raw, resume=True)
    assert [r["step"] for r in trainer.log.read() if r["kind"] == "train"][-1] == 2
    assert "fast_resize" in json.loads(marker.read_text())["identity"]["train"]  # recorded as today's


def test_a_key_that_computes_the_same_values_another_way_is_not_a_run_s_identity(registry, tmp_path):
    """train.fast_dilated (segcore.engine.rundir.SAME_VALUES_TRAIN_KEYS): a recipe that switches it on after its
    runs started resumes them, and a sweep keeps their finished runs."""
    from segcore.config import dump_pipeline
    from segcore.tools.sweep import same_run

    raw = tiny(tmp_path, train={"iters": 2})
    fit(registry, raw)
    changed = tiny(tmp_path, train={"iters": 2, "fast_dilated": True})
    written = (tmp_path / "run" / "pipeline.toml").read_text()
    assert "fast_dilated = false\n" in written
    assert same_run(written, dump_pipeline(structure_pipeline(changed, registry=registry)), registry=registry)
    trainer, _ = fit(registry, changed, resume=True)
    assert [r["step"] for r in trainer.log.read() if r["kind"] == "train"][-1] == 2
    assert "fast_dilated" not in json.loads((tmp_path / "run" / "run.json").read_text())["identity"]["train"]


def test_tensorboard_switch(registry, tmp_path):
    raw = tiny(tmp_path, train={"iters": 1, "tensorboard": True})
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            fit(registry, raw)
    else:
        fit(registry, raw)
        assert list((tmp_path / "run" / "tensorboard").iterdir())


def test_a_different_run_is_never_overwritten_without_asking(registry, tmp_path):
    fit(registry, tiny(tmp_path, train={"iters": 2}))
    before = weights(tmp_path / "run")
    with pytest.raises(ConfigError, match="holds a different run"):
        fit(registry, tiny(tmp_path, train={"iters": 2, "lr": 0.1}))
    assert all(torch.equal(before[k], v) for k, v in weights(tmp_path / "run").items())
    fit(registry, tiny(tmp_path, train={"iters": 2, "lr": 0.1}), overwrite=True)


def test_frozen_backbone_phase(registry, tmp_path):
    raw = tiny(tmp_path, train={"iters": 4, "freeze_backbone": 2, "optimizer": "sgd", "lr": 0.05})
    cfg = structure_pipeline(raw, registry=registry)
    trainer = Trainer.from_config(cfg, registry, progress=False)
    backbone = trainer.model.backbone
    start = {k: v.clone() for k, v in backbone.state_dict().items()}
    ids = {id(p) for p in backbone.parameters()}
    steps = []
    original = trainer._train_step

    def spy(micro):
        out = original(micro)
        state = {k: v.clone() for k, v in backbone.state_dict().items()}
        owned = [p for g in trainer.optimizer.param_groups for p in g["params"] if id(p) in ids]
        with_state = [p for p in owned if trainer.optimizer.state.get(p)]
        steps.append((state, len(owned), len(with_state), all(p.grad is None for p in backbone.parameters())))
        return out

    trainer._train_step = spy
    trainer.fit()
    for state, owned, with_state, no_grads in steps[:2]:  # frozen: weights and BN statistics untouched
        assert all(torch.equal(state[k], start[k]) for k in start)
        assert owned == 0 and with_state == 0 and no_grads
    changed = steps[3][0]
    assert not all(torch.equal(changed[k], start[k]) for k in start if k.endswith("weight"))
    assert steps[3][1] > 0 and steps[3][2] > 0


def test_param_groups_lr_mult_no_decay_and_layer_decay(registry, tmp_path):
    raw = tiny(tmp_path, model={"backbone": {"model_name": "test_vit", "out_indices": [0, 1, 2]}},
               train={"backbone_lr_mult": 0.1, "no_decay_norm_bias": True, "weight_decay": 0.05, "layer_decay": 0.5})  # fmt: skip
    raw["model"]["backbone"] = {"name": "timm", "model_name": "test_vit", "out_indices": [0, 1, 2], "kwargs": {"img_size": 32}}
    cfg = structure_pipeline(raw, registry=registry)
    from segcore import build_model

    model = build_model(cfg.model, registry, num_classes=5)
    groups = param_groups(model, cfg.train)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["decoder.convs.0.1.weight"])]["weight_decay"] == 0.0  # BN
    assert by_param[id(named["classifier.bias"])]["weight_decay"] == 0.0
    assert by_param[id(named["decoder.convs.0.0.weight"])]["weight_decay"] == 0.05
    assert by_param[id(named["decoder.convs.0.0.weight"])]["lr_scale"] == 1.0
    embed = [n for n in named if n.startswith("backbone.") and "patch_embed.proj.weight" in n][0]
    first = [n for n in named if ".blocks.0." in n and n.endswith("attn.qkv.weight")][0]
    last = [n for n in named if ".blocks.1." in n and n.endswith("attn.qkv.weight")][0]
    scales = [by_param[id(named[n])]["lr_scale"] for n in (embed, first, last)]
    assert scales[0] < scales[1] < scales[2] <= 0.1 and scales[2] / scales[1] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "train, checks",
    [
        ({"schedule": "poly", "poly_power": 1.0}, [(0, 1.0), (50, 0.5), (100, 0.0)]),
        ({"schedule": "cosine", "min_lr_ratio": 0.01}, [(0, 1.0), (50, 0.505), (100, 0.01)]),
        ({"schedule": "step", "step_milestones": [0.5, 0.75]}, [(49, 1.0), (50, 0.1), (75, 0.01)]),
        ({"schedule": "constant", "warmup_iters": 10, "warmup_start_ratio": 0.1}, [(0, 0.1), (5, 0.55), (10, 1.0)]),
    ],
)
def test_schedules(train, checks):
    from segcore.config.schema import TrainConfig

    sched = LRSchedule(TrainConfig(iters=100, **train), 100)
    for step, factor in checks:
        assert sched.factor(step) == pytest.approx(factor, abs=1e-9)


def test_ema_warmup_keeps_a_short_run_s_average_off_its_untrained_weights(registry, tmp_path):
    """ema_decay 0.999 over 8 steps: without the warm-up the average is still mostly the initial weights (0.999 ** 8
    = 0.99 of them); with train.ema_warmup the decay ramps up from 0 and the average sits nearer the trained ones."""
    def distance(a: dict, b: dict) -> float:
        return sum((a[k].float() - b[k].float()).norm().item() for k in a if k.endswith("weight"))

    for warmup in (False, True):
        raw = tiny(tmp_path / str(warmup), train={"iters": 8, "lr": 0.01, "ema_decay": 0.999, "ema_warmup": warmup})
        trainer = Trainer.from_config(structure_pipeline(raw, registry=registry), registry, progress=False)
        first = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.fit()
        ema, last = trainer.ema.module.state_dict(), trainer.model.state_dict()
        to_first, to_last = distance(ema, first), distance(ema, last)
        assert (to_last < to_first) == warmup, (warmup, to_first, to_last)


@pytest.mark.parametrize("amp, native, autocast", [("auto", True, True), ("auto", False, False), ("bf16", False, True),
                                                   ("none", True, False)])  # fmt: skip
def test_amp_auto_trains_in_bf16_only_where_the_device_has_it(registry, tmp_path, monkeypatch, capsys, amp, native,
                                                              autocast):  # fmt: skip
    """train.amp = "auto": bf16 autocast where the device computes bf16 natively, fp32 elsewhere (a CPU without
    AVX512-BF16 or AMX emulates bf16, several times slower); "bf16" on such a CPU trains in bf16 and says so."""
    import segcore.engine.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "bf16_supported", lambda device: native)
    cfg = structure_pipeline(tiny(tmp_path, train={"iters": 2, "amp": amp}), registry=registry)
    assert trainer_module.trains_in_bf16(cfg, "cpu") is autocast
    trainer = Trainer.from_config(cfg, registry, progress=True)
    dtypes = []
    trainer.criterion.register_forward_pre_hook(lambda m, args: dtypes.append(args[0].logits.dtype))
    trainer.fit()
    assert dtypes == [torch.bfloat16 if autocast else torch.float32] * 2
    err = capsys.readouterr().err
    assert ("no native bf16" in err and 'Set train.amp = "auto"' in err) is (amp == "bf16" and not native)
    if amp == "auto":
        assert f'train.amp = "auto": {"bf16 autocast" if native else "fp32 (no native bf16)"} on cpu' in err
    # the log says what the session computed in (records of the run, a sweep's evidence, read it from there)
    start = [r for r in trainer.log.read() if r["kind"] == "start"]
    assert [(r["step"], r["precision"], r["device"], r["processes"], r["cores"]) for r in start] == [
        (0, "bf16" if autocast else "fp32", "cpu", 1, usable_cores())] and "gpu" not in start[0]


def test_accumulation_clipping_ema_bf16_channels_last(registry, tmp_path):
    raw = tiny(tmp_path, train={"iters": 3, "grad_accum_steps": 2, "clip_grad_norm": 0.5, "ema_decay": 0.9,
                                "amp": "bf16", "channels_last": True})  # fmt: skip
    cfg = structure_pipeline(raw, registry=registry)
    trainer = Trainer.from_config(cfg, registry, progress=False)
    norms, micro_sizes = [], []
    step = trainer.optimizer.step

    def checked_step(*a, **k):
        params = [p for g in trainer.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))))
        return step(*a, **k)

    trainer.optimizer.step = checked_step
    original = trainer._train_step
    trainer._train_step = lambda micro: (micro_sizes.append(len(micro)), original(micro))[1]
    dtypes = []  # what the model computed in under amp = "bf16": the logits the losses see
    trainer.criterion.register_forward_pre_hook(lambda m, args: dtypes.append(args[0].logits.dtype))
    result = trainer.fit()
    assert micro_sizes == [2, 2, 2]
    assert dtypes == [torch.bfloat16] * 6  # every micro-batch ran under bf16 autocast
    assert max(norms) <= 0.5 + 1e-4
    saved = weights(tmp_path / "run")
    ema = trainer.ema.module.state_dict()
    raw_model = trainer.model.state_dict()
    assert all(torch.equal(saved[k], ema[k]) for k in saved)  # the EMA weights are the ones written
    assert not all(torch.equal(saved[k], raw_model[k]) for k in saved if k.endswith("weight"))
    conv = next(m for m in trainer.model.backbone.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    reported = json.loads((tmp_path / "run" / "metrics.json").read_text())["val"]
    assert reported["mIoU"] == result.metrics["mIoU"] and reported["IoU"] == result.metrics["IoU"]


def test_the_gradient_norm_is_logged_at_every_logged_step(registry, tmp_path):
    """The gradients' global norm (before clipping, when there is clipping) is in every train record of log.jsonl, so
    that a step that goes astray shows; without clipping it is computed for the logged steps only."""
    cfg = structure_pipeline(tiny(tmp_path, train={"iters": 5, "log_every": 2}), registry=registry)
    trainer = Trainer.from_config(cfg, registry, progress=False)
    norms = []
    step = trainer.optimizer.step

    def measured_step(*a, **k):
        grads = [p.grad for g in trainer.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return step(*a, **k)

    trainer.optimizer.step = measured_step
    trainer.fit()
    log = [r for r in trainer.log.read() if r["kind"] == "train"]
    assert [r["step"] for r in log] == [2, 4, 5]  # every log_every steps, and the last
    assert [r["grad_norm"] for r in log] == pytest.approx([norms[1], norms[3], norms[4]], rel=1e-5)
    assert len(set(norms)) == 5


def test_a_loss_counts_from_its_start_iter_and_is_logged_before(registry, tmp_path):
    """[[loss]] start_iter = 3: the first 3 steps train without it (weight 0; still computed and logged), the others
    with it; a start_iter the run never reaches is refused, naming the key."""
    raw = tiny(tmp_path, train={"iters": 5})
    raw["model"]["aux"] = {"fcn": {"decoder": {"name": "fcn", "channels": 16}, "in_index": [2], "weight": 0.4}}
    raw["loss"] = [{"name": "ce", "heads": ["main"]}, {"name": "ce", "heads": ["fcn"], "start_iter": 3}]
    trainer, _ = fit(registry, raw)
    log = [r for r in trainer.log.read() if r["kind"] == "train"]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5] and all(r["loss.aux.fcn.ce"] > 0.1 for r in log)
    for r in log:  # a record's step is the count of steps done: step k + 1 trained at criterion step k
        expected = r["loss.ce"] + (0.4 * r["loss.aux.fcn.ce"] if r["step"] > 3 else 0.0)
        assert r["loss"] == pytest.approx(expected, rel=1e-5), r
    raw["loss"][1]["start_iter"] = 5
    raw["run"]["out_dir"] = str(tmp_path / "never")
    with pytest.raises(ConfigError, match=r"loss\[1\]\.start_iter = 5: the run trains 5 steps"):
        fit(registry, raw)


def test_aux_head_loss_terms_are_logged(registry, tmp_path):
    raw = tiny(tmp_path, train={"iters": 2})
    raw["model"]["aux"] = {"fcn": {"decoder": {"name": "fcn", "channels": 16}, "in_index": [2], "weight": 0.4}}
    trainer, _ = fit(registry, raw)
    first = [r for r in trainer.log.read() if r["kind"] == "train"][0]
    assert first["loss"] == pytest.approx(first["loss.ce"] + 0.4 * first["loss.aux.fcn.ce"], rel=1e-5)
    assert not any(k.startswith("aux.") for k in weights(tmp_path / "run"))  # training-only head not in the weights


def test_plots_and_predict_folder(registry, tmp_path):
    raw = tiny(tmp_path, train={"iters": 4, "plots": True, "eval_every": 2})
    fit(registry, raw)
    plots = tmp_path / "run" / "plots"
    for name in ("curves.png", "iou.png", "confusion.png", "overlays.png"):
        with Image.open(plots / name) as im:
            assert im.format == "PNG" and im.size[0] > 200
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(images / "b.jpg")
    raw["run"] |= {"task": "predict", "checkpoint": str(tmp_path / "run")}
    raw["predict"] = {"input_dir": str(images), "output_dir": str(tmp_path / "pred")}
    written = run_pipeline(structure_pipeline(raw, registry=registry), registry, progress=False)
    assert sorted(p.name for p in written) == ["a.png", "a_overlay.png", "b.png", "b_overlay.png"]
    with Image.open(tmp_path / "pred" / "a.png") as im:
        assert im.mode == "P" and im.size == (53, 37)
        assert set(np.unique(np.asarray(im)).tolist()) <= set(range(5))
        assert im.getpalette()[3:6] == [230, 25, 75]
    with Image.open(tmp_path / "pred" / "b_overlay.png") as im:
        assert im.mode == "RGB" and im.size == (48, 64)


def test_segcore_plot_compares_runs(registry, tmp_path, capsys):
    from segcore.cli.main import main

    raw = tiny(tmp_path, train={"iters": 4, "eval_every": 2})
    fit(registry, raw)
    run, out = tmp_path / "run", tmp_path / "compare.png"
    evals = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    assert main(["plot", str(run), str(run), "--label", "ce", "ce again", "--x", "hours", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"ce: last val mIoU {100 * evals[-1]['mIoU']:.2f} (step 4)" in printed and "ce again:" in printed
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 600
    # user errors: a message and exit 2
    assert main(["plot", str(run), "--label", "a", "b", "--out", str(out)]) == 2
    assert "2 labels for 1 runs" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "no log.jsonl" in capsys.readouterr().err
    old = tmp_path / "old"
    old.mkdir()
    (old / "log.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "elapsed_s"}) + "\n"
                                           for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())))
    assert main(["plot", str(old), "--x", "hours", "--out", str(out)]) == 2
    assert "no elapsed_s" in capsys.readouterr().err
    assert main(["plot", str(old), "--out", str(out)]) == 0
    # another logged value, smoothed
    assert main(["plot", str(run), "--y", "grad_norm", "--smooth", "2", "--out", str(out)]) == 0
    assert main(["plot", str(run), "--y", "loss.dice", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "run: its log has no training records with a number 'loss.dice'; it logs " in err and "loss.ce" in err, err
    assert main(["plot", str(run), "--y", "kind", "--out", str(out)]) == 2  # a key that is not a number
    assert "no training records with a number 'kind'" in capsys.readouterr().err
    for position in ("step", "epoch"):  # where a record is: the x axis, not a value to draw
        assert main(["plot", str(run), "--y", position, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"a number {position!r}; it logs " in err and "grad_norm" in err and "epoch," not in err, err
    n = sum(1 for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == "train")
    assert main(["plot", str(run), "--smooth", str(n), "--out", str(out)]) == 0  # one mean of every record
    assert main(["plot", str(run), "--smooth", str(n + 1), "--out", str(out)]) == 2  # a run shorter than one mean
    assert f"run: its log has {n} training records with 'loss', fewer than the {n + 1} " in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse's own usage error
        main(["plot", str(run), "--smooth", "0", "--out", str(out)])
    assert exited.value.code == 2 and "--smooth: expected a whole number > 0" in capsys.readouterr().err


def test_plot_compare_draws_the_value_asked_for_as_means_of_consecutive_records(tmp_path):
    from segcore.engine.report import plot_compare

    records = [{"kind": "train", "step": 10 * i, "loss": 9.0, "loss.ce": float(i), "elapsed_s": 36.0 * i}
               for i in range(1, 6)] + [{"kind": "eval", "step": 50, "mIoU": 0.5}]  # fmt: skip
    drawn = plot_compare([("a", records)], tmp_path / "a.png", y="loss.ce", smooth=2)
    assert drawn == {"a": ([20, 30, 40, 50], [1.5, 2.5, 3.5, 4.5])}
    assert plot_compare([("a", records)], tmp_path / "b.png", x="hours")["a"] == ([0.01, 0.02, 0.03, 0.04, 0.05], [9.0] * 5)
    with Image.open(tmp_path / "a.png") as im:
        assert im.format == "PNG"


@pytest.mark.parametrize("optimizer, nesterov", [("sgd", True), ("sgd", False), ("adamw", False)])
def test_optimizer_choice(optimizer, nesterov):
    from segcore.config.schema import TrainConfig
    from segcore.engine.optim import build_optimizer

    cfg = TrainConfig(iters=1, optimizer=optimizer, nesterov=nesterov, momentum=0.9, betas=(0.8, 0.9), lr=0.1)
    opt = build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr_scale": 0.5, "weight_decay": 0.01}], cfg)
    assert type(opt).__name__ == {"sgd": "SGD", "adamw": "AdamW"}[optimizer]
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(0.05) and group["weight_decay"] == 0.01
    if optimizer == "sgd":
        assert group["nesterov"] is nesterov and group["momentum"] == 0.9
    else:
        assert tuple(group["betas"]) == (0.8, 0.9)


# -- training on several splits: train_split = ["train", "val"] is one set, validated like every key --------------


def test_a_list_of_splits_is_read_as_one_set(registry, tmp_path):
    cfg = structure_pipeline(tiny(tmp_path, data={"train_split": ["train", "val"]}), registry=registry)
    assert cfg.data.train_split == ("train", "val") and cfg.data.val_split == "val"
    train, val = build_split(cfg.data, registry, "train"), build_split(cfg.data, registry, "val")
    assert isinstance(train, SplitUnion) and (len(train), len(val)) == (16 + 4, 4)
    assert train.meta == val.meta
    # the union's samples are the splits' samples, in order: its last four are val's
    assert all((train[16 + i]["mask"] == val[i]["mask"]).all() for i in range(4))
    one = structure_pipeline(tiny(tmp_path), registry=registry)
    assert len(build_split(one.data, registry, "train")) == 16  # a single name is that split, as before


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], "data: 'train_split' is an empty list"),
        (["train", "train"], "data: 'train_split' names 'train' twice"),
        (["train", 3], "data.train_split"),
    ],
)
def test_bad_split_lists_name_the_key(registry, tmp_path, value, expected):
    with pytest.raises(ConfigError, match=expected):
        structure_pipeline(tiny(tmp_path, data={"train_split": value}), registry=registry)


def test_an_unknown_split_in_a_list_is_named_by_check(registry, tmp_path):
    cfg = structure_pipeline(tiny(tmp_path, data={"train_split": ["train", "vall"]}), registry=registry)
    with pytest.raises(DataError, match="no split .vall."):
        check_pipeline(cfg, registry)


def test_training_on_train_and_val_runs_and_the_card_says_so(registry, tmp_path, capsys):
    raw = tiny(tmp_path, data={"train_split": ["train", "val"]}, train={"epochs": 1})
    cfg = structure_pipeline(raw, registry=registry)
    trainer = Trainer.from_config(cfg, registry, progress=True)
    assert trainer.iters_per_epoch == 5  # 20 images, batch 4
    trainer.fit()
    assert "val are trained on and evaluated" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == 5
    assert _splits(["train", "val"]) == "train + val splits" and _splits("train") == "train split"


def test_fast_resize_trains_the_bicubic_places_as_matrix_products(registry, tmp_path, monkeypatch):
    """train.fast_resize = true: every bicubic upsampling place is computed by MatmulResize in training, forward and
    backward, and the run follows the one with PyTorch's bicubic kernel to float tolerance. The tiny model's logits
    are resized bicubic here, as HRNet_L's are."""
    import segcore.engine.trainer as trainer_module
    from segcore.contracts.stages import Resize
    from segcore.inference.resize import MatmulResize

    def bicubic_model(*args, **kwargs):
        model = build_model(*args, **kwargs)
        model.final_upsample.resize = Resize("bicubic", align_corners=True)
        return model

    build_model = trainer_module.build_model
    monkeypatch.setattr(trainer_module, "build_model", bicubic_model)
    runs = {}
    for fast in (False, True):
        raw = tiny(tmp_path / str(fast), train={"iters": 4, "fast_resize": fast, "seed": 3})
        trainer, _ = fit(registry, raw)
        assert isinstance(trainer.model.final_upsample.resize, MatmulResize) == fast
        runs[fast] = [r["loss"] for r in trainer.log.read() if r["kind"] == "train"]
    assert len(runs[True]) == 4 and runs[True] == pytest.approx(runs[False], rel=1e-4)
    assert runs[True][-1] != runs[True][0]  # it trained


@pytest.mark.slow
def test_a_compiled_training_run_follows_the_eager_one(registry, tmp_path):
    """train.compile = true: the same losses as eager to float tolerance (inductor reorders reductions), the saved
    weights under the model's own names (no _orig_mod. prefix), and fused AdamW beside it."""
    runs = {}
    for compiled in (False, True):
        raw = tiny(tmp_path / str(compiled), train={"iters": 4, "compile": compiled, "optimizer_impl": "fused"})
        trainer, _ = fit(registry, raw)
        runs[compiled] = [r["loss"] for r in trainer.log.read() if r["kind"] == "train"]
        assert isinstance(trainer.ddp, torch._dynamo.eval_frame.OptimizedModule) == compiled
        assert not any(k.startswith("_orig_mod") for k in weights(tmp_path / str(compiled) / "run"))
    assert len(runs[True]) == 4 and runs[True] == pytest.approx(runs[False], rel=1e-3)
