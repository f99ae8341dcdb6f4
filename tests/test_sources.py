"""One source resolver (`segcore.hub.resolve_source`) behind every caller that takes a model or its weights.

`from_pretrained`, a pipeline's ``[model] init_from`` (through the trainer), ``[run] checkpoint`` (task = "evaluate")
and ``segcore export`` accept the same five kinds of source (a run folder, a model folder, a ``.safetensors`` file,
a zoo name, a Hub repo id) and give the same weights; they refuse the same bad ones with the same message after
their own prefix. Offline: the zoo is a SEGCORE_ZOO manifest in a tmp folder, the Hub a huggingface-hub cache in its
layout under HF_HUB_OFFLINE=1. The model is timm's test_resnet + a one-conv FCN head at 32x32 on the shapes data.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import attrs
import huggingface_hub
import pytest
import torch

import segcore
from segcore.cli.main import main
from segcore.config import dump_pipeline, load_pipeline
from segcore.data.datasets import dataset_meta
from segcore.engine.run import run_pipeline
from segcore.engine.trainer import Trainer
from segcore.errors import ConfigError
from segcore.hub import ZOO_VAR, file_sha256
from segcore.model.build import build_model, without_training_heads
from segcore.model.weights import save_weights

from segcore.cli import _common as CLI  # the CLI's shared registry()
COMMIT = "c" * 40
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
num_train = 4
num_val = 2
[[loss]]
name = "ce"
[train]
iters = 1
[eval]
fast = false
[run]
device = "cpu"
input_size = [32, 32]
out_dir = "{out}"
"""
GOOD = ("run", "folder", "file", "zoo", "hub")
BAD = ("missing", "neither", "pickle", "malformed", "unknown")


def put_in_cache(cache: Path, repo_id: str, folder: Path, commit: str) -> None:
    """*folder*'s files as huggingface-hub's cache holds a downloaded repo (blobs, snapshots/<commit>, refs/main)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in sorted(folder.iterdir()):
        data = f.read_bytes()
        blob = hashlib.sha256(data).hexdigest() if f.suffix == ".safetensors" else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (repo / "snapshots" / commit / f.name).symlink_to(Path("..") / ".." / "blobs" / blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture(scope="module")
def world(tmp_path_factory, registry):
    """A model and the same weights as a run folder, a model folder, a file, a zoo entry and a cached Hub repo."""
    root = tmp_path_factory.mktemp("sources")
    cfg = load_pipeline(_write(root / "train.toml", PIPELINE.format(out=root / "train-run")), registry=registry)
    meta = dataset_meta(cfg.data.dataset, registry)
    torch.manual_seed(0)
    model = build_model(cfg.model, registry, num_classes=meta.num_classes).eval()
    with torch.no_grad():  # BN statistics too: equal logits mean equal weights
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape) + 0.5 if "running_var" in name else torch.randn(t.shape) * 0.3)
    run = root / "run"  # what the trainer leaves: run.json, pipeline.toml, model.safetensors
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"identity": {}}))
    (run / "pipeline.toml").write_text(dump_pipeline(cfg))
    save_weights(without_training_heads(model), run / "model.safetensors")
    folder = segcore.save_pretrained(model, root / "zoo" / "models" / "tiny-shapes", meta=meta, dataset="shapes",
                                     registry=registry)  # fmt: skip
    _write(root / "zoo" / "manifest.toml", f'format = 1\n[models."tiny-shapes"]\nplugin = "segcore"\ndataset = "shapes"\n'
                                           f'folder = "models/tiny-shapes"\nsha256 = "{file_sha256(folder / "model.safetensors")}"\n')  # fmt: skip
    cache = root / "hf-cache"
    put_in_cache(cache, "me/tiny-shapes", folder, COMMIT)
    (root / "neither").mkdir()
    _write(root / "weights.pt", "not a pickle either")
    sources = {"run": str(run), "folder": str(folder), "file": str(run / "model.safetensors"), "zoo": "tiny-shapes",
               "hub": "me/tiny-shapes", "missing": str(root / "nowhere" / "model.safetensors"),
               "neither": str(root / "neither"), "pickle": str(root / "weights.pt"), "malformed": "hf-hub:me/bad name!",
               "unknown": "tiny-shapez"}  # fmt: skip
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(x).logits
    return root, cfg, model, x, reference, sources, cache


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def offline_zoo(world, monkeypatch):
    root, *_, cache = world
    monkeypatch.setenv(ZOO_VAR, str(root / "zoo"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


# -- the four callers: each returns the weights it ended up with (as logits on x, or metrics), or raises -------------


def _from_pretrained(world, registry, text, tmp_path, capsys, monkeypatch):
    _, _, _, x, _, _, _ = world
    with torch.no_grad():
        return segcore.from_pretrained(text, registry=registry)(x).logits


def _init_from(world, registry, text, tmp_path, capsys, monkeypatch):
    _, cfg, _, x, _, _, _ = world
    pipeline = attrs.evolve(cfg, model=attrs.evolve(cfg.model, init_from=text), run=attrs.evolve(cfg.run, out_dir=str(tmp_path / "ft")))
    trainer = Trainer.from_config(pipeline, registry, progress=False)  # init_from happens here, before any step
    with torch.no_grad():
        return trainer.model.eval()(x).logits


def _checkpoint(world, registry, text, tmp_path, capsys, monkeypatch):
    _, cfg, *_ = world
    pipeline = attrs.evolve(cfg, run=attrs.evolve(cfg.run, task="evaluate", checkpoint=text))
    return torch.tensor([run_pipeline(pipeline, registry, progress=False).metrics[k] for k in ("mIoU", "aAcc")])


def _export(world, registry, text, tmp_path, capsys, monkeypatch):
    _, _, _, x, _, _, _ = world
    exported = []

    def export_onnx(model, out, **kw):
        exported.append(model)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"onnx")
        return out

    import segcore.inference
    import segcore.inference.onnx as onnx

    monkeypatch.setattr(onnx, "export_onnx", export_onnx)  # the exporter, wherever the CLI looks it up
    monkeypatch.setitem(getattr(segcore.inference, "EXPORTERS", {}), "onnx", export_onnx)
    monkeypatch.setattr(onnx, "onnx_initializers", lambda path: [])
    monkeypatch.setattr(CLI, "registry", lambda: registry)
    capsys.readouterr()
    code = main(["export", text, "--out", str(tmp_path / "m.onnx"), "--no-check"])
    if code != 0:
        raise ConfigError(capsys.readouterr().err.strip().removeprefix("error: "))
    with torch.no_grad():
        return exported[0](x).logits


CALLERS = {"from_pretrained": _from_pretrained, "[model] init_from": _init_from, "run.checkpoint": _checkpoint,
           "segcore export": _export}  # fmt: skip


@pytest.mark.parametrize("kind", GOOD + BAD)
def test_every_caller_takes_the_same_sources_and_refuses_the_same_ones_alike(kind, world, registry, offline_zoo,
                                                                             tmp_path, capsys, monkeypatch):  # fmt: skip
    _, cfg, _, _, reference, sources, _ = world
    text = sources[kind]
    if kind in GOOD:
        metrics = _checkpoint(world, registry, sources["folder"], tmp_path, capsys, monkeypatch)
        for what, call in CALLERS.items():
            got = call(world, registry, text, tmp_path / what.replace(" ", "_"), capsys, monkeypatch)
            want = metrics if what == "run.checkpoint" else reference
            assert torch.equal(got, want), f"{what} {text!r}"
        return
    rests = {}
    for what, call in CALLERS.items():
        with pytest.raises(ConfigError) as err:
            call(world, registry, text, tmp_path / what.replace(" ", "_"), capsys, monkeypatch)
        prefix = f"{what} {text!r}: "
        assert str(err.value).startswith(prefix), str(err.value)
        rests[what] = str(err.value).removeprefix(prefix)
    assert len(set(rests.values())) == 1, rests
    rest = next(iter(rests.values()))
    expected = {"missing": "no such file or folder; give a run folder, a model folder",
                "neither": "is a folder with neither model.safetensors nor config.json",
                "pickle": "this is a .pt file, not a safetensors weights file; segcore never unpickles",
                "malformed": "is not a Hub repo id (", "unknown": "unknown pretrained name (did you mean 'tiny-shapes'?)"}  # fmt: skip
    assert rest.startswith(expected[kind]), rest


def test_a_folder_saved_under_a_component_s_old_name_is_the_model_a_pipeline_names_anew(world, tmp_path):
    """A component renamed with a deprecated alias (frm's fpn -> sfnet_fpn): a model folder whose config.json has
    the old name still evaluates as ``run.checkpoint`` of a pipeline that writes the new one."""
    import shutil

    from segcore import Decoder, get_plugin_manager, hookimpl, load_registry

    class Rename:
        @hookimpl(trylast=True)
        def segcore_register(self, registry):
            registry.add_alias(Decoder, "plain_head", "fcn")

    pm = get_plugin_manager(autoload=False)
    pm.register(Rename(), name="rename")
    registry = load_registry(pm)
    assert registry.problems == []
    _, cfg, _, _, _, sources, _ = world
    old = shutil.copytree(sources["folder"], tmp_path / "old-name")
    config = json.loads((old / "config.json").read_text())
    assert config["model"]["decoder"]["name"] == "fcn"
    config["model"]["decoder"]["name"] = "plain_head"
    (old / "config.json").write_text(json.dumps(config))
    runs = [attrs.evolve(cfg, run=attrs.evolve(cfg.run, task="evaluate", checkpoint=str(f))) for f in (sources["folder"], old)]
    new_name, old_name = (run_pipeline(p, registry, progress=False).metrics for p in runs)
    assert [old_name[k] for k in ("mIoU", "aAcc", "fwIoU")] == [new_name[k] for k in ("mIoU", "aAcc", "fwIoU")]
    config["model"]["dropout"] = 0.5  # a real difference is still one
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"model.dropout: the pipeline has 0.0, .* 0.5"):
        run_pipeline(runs[1], registry, progress=False)


def test_a_zoo_name_is_the_zoo_entry_even_with_a_folder_of_that_name_in_the_working_directory(
        world, registry, offline_zoo, tmp_path, capsys, monkeypatch):  # fmt: skip
    """#23 (7): a folder ``tiny-shapes/`` in the working directory does not replace the zoo entry ``tiny-shapes`` (whose
    sha256 is checked) in any caller; ``./tiny-shapes`` loads the folder, and the message on the bare name says so."""
    import copy
    import shutil

    _, _, model, x, reference, sources, _ = world
    cwd = tmp_path / "cwd"
    shadow = shutil.copytree(sources["folder"], cwd / "tiny-shapes")
    other = copy.deepcopy(model)
    with torch.no_grad():
        for t in other.state_dict().values():
            if t.is_floating_point():
                t.add_(0.5)
        shadowed = other.eval()(x).logits
    save_weights(without_training_heads(other), shadow / "model.safetensors")
    assert not torch.equal(shadowed, reference)
    monkeypatch.chdir(cwd)
    for what, call in CALLERS.items():
        if what == "run.checkpoint":
            continue  # compared through metrics below
        with pytest.warns(UserWarning, match=r"'tiny-shapes' is the zoo entry .* write './tiny-shapes'"):
            got = call(world, registry, "tiny-shapes", tmp_path / what.replace(" ", "_"), capsys, monkeypatch)
        assert torch.equal(got, reference), what
        got = call(world, registry, "./tiny-shapes", tmp_path / (what.replace(" ", "_") + "-local"), capsys, monkeypatch)
        assert torch.equal(got, shadowed), what
    metrics = _checkpoint(world, registry, sources["folder"], tmp_path, capsys, monkeypatch)
    with pytest.warns(UserWarning, match="write './tiny-shapes'"):
        assert torch.equal(_checkpoint(world, registry, "tiny-shapes", tmp_path, capsys, monkeypatch), metrics)
    (shadow / "model.safetensors").unlink()  # a broken shadow is never read for the zoo name
    with pytest.warns(UserWarning):
        assert torch.equal(_from_pretrained(world, registry, "tiny-shapes", tmp_path, capsys, monkeypatch), reference)
