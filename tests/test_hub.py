"""Issue 13: model folders, the zoo manifest, from_pretrained / save_pretrained / push_to_hub and `segcore hub`.

Everything here is offline. Hub loading goes through huggingface-hub's real code path: a cache written in its
layout (models--owner--name/{blobs,refs,snapshots}) under a temporary HF_HUB_CACHE with HF_HUB_OFFLINE=1, and
`hf_hub_download` is what fetches from it. Models are tiny (HRNet width 4 + FUSM 8 channels, 3 classes).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub
import numpy as np
import pytest
import torch

import segcore
from segcore import ConfigError
from segcore import hub as hubmod
from segcore.cli.main import main
from segcore.config import EvalConfig, ModelConfig, structure_table
from segcore.errors import DamagedFileError
from segcore.inference.cpu import bf16_supported
from segcore.io import WRITTEN
from segcore.contracts.stages import DatasetMeta
from segcore.model.weights import read_weights, save_weights

REPO = Path(__file__).resolve().parents[1]
from segcore.cli import _common as CLI  # the CLI's shared registry()
COMMIT = "a" * 40
OTHER_COMMIT = "b" * 40
TINY = {
    "backbone": {"name": "hrnet", "width": 4, "small": True, "num_blocks": 1},
    "decoder": {"name": "fusm", "channels": 8, "attention": {"per_level": {"name": "aam"}}},
    "mean": [0.5, 0.4, 0.3],
    "std": [0.2, 0.25, 0.3],
}
META = DatasetMeta(("sky", "road", "car"), ((128, 128, 128), (128, 64, 128), (64, 0, 128)), 255)


@pytest.fixture(scope="module")
def registry():
    """Every installed plugin: the tiny model is HRNet + FUSM of hrnet_fusion, and its missing-plugin messages are
    about that distribution."""
    from segcore import get_plugin_manager, load_registry

    return load_registry(get_plugin_manager())


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is faster, and the machine is shared (two spinning OpenMP threads per test wait)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(registry, *, seed: int = 0, table=TINY, classes: int = 3):
    """A tiny model with every float tensor random (BN statistics too), so equal logits mean equal weights."""
    cfg = structure_table(table, ModelConfig, registry=registry, source="tiny")
    model = segcore.build_model(cfg, registry, num_classes=classes)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                noise = torch.rand(t.shape, generator=gen) + 0.5 if "running_var" in name else torch.randn(t.shape, generator=gen) * 0.3
                t.copy_(noise)
    return model.eval()


def logits(model, x):
    with torch.no_grad():
        return model(x).logits


# -- fixtures: a zoo and a Hugging Face cache in tmp dirs --------------------------------------------------------------


def _blob_name(data: bytes, filename: str) -> str:
    if filename.endswith(".safetensors"):  # LFS files: the blob is named by its sha256
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git blob id


def put_in_cache(cache: Path, repo_id: str, folder: Path, commit: str, *, ref: str | None = "main") -> Path:
    """Write *folder*'s files as huggingface-hub's cache holds a downloaded repo: blobs, snapshots/<commit> links, refs."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in sorted(folder.iterdir()):
        data = f.read_bytes()
        blob = repo / "blobs" / _blob_name(data, f.name)
        blob.write_bytes(data)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snap


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and an empty HF_HUB_CACHE (huggingface-hub read both at import: patch its constants too)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def downloads(monkeypatch):
    """Every hf_hub_download call (the real function runs): (repo_id, filename, revision, local_files_only)."""
    calls = []
    real = huggingface_hub.hf_hub_download

    def spy(repo_id, filename, **kw):
        calls.append((repo_id, filename, kw.get("revision"), kw.get("local_files_only")))
        return real(repo_id, filename, **kw)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    return calls


@pytest.fixture
def saved(registry, tmp_path):
    """A tiny model and its folder."""
    model = tiny_model(registry)
    folder = segcore.save_pretrained(model, tmp_path / "tiny-shapes", meta=META, dataset="shapes", registry=registry)
    return model, folder


def write_zoo(root: Path, entries: dict[str, dict]) -> Path:
    import tomli_w

    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.toml").write_text(tomli_w.dumps({"format": 1, "models": entries}))
    return root


@pytest.fixture
def zoo(tmp_path, monkeypatch, saved, offline):
    """SEGCORE_ZOO with: a shipped folder, a Hub entry (cached), an uncached Hub entry, an unpublished entry."""
    _, folder = saved
    root = tmp_path / "zoo"
    shutil.copytree(folder, root / "models" / "tiny-shipped")
    put_in_cache(offline, "segcore/tiny-shapes", folder, COMMIT)
    sha = hubmod.file_sha256(folder / "model.safetensors")
    (root / "recipes").mkdir(parents=True)
    (root / "recipes" / "tiny-later.toml").write_text('[model.backbone]\nname = "hrnet"\n')
    write_zoo(root, {
        "tiny-shipped": {"plugin": "hrnet_fusion", "dataset": "shapes", "folder": "models/tiny-shipped", "sha256": sha,
                         "repo_id": "segcore/tiny-shapes", "revision": COMMIT},
        "tiny-hub": {"plugin": "hrnet_fusion", "dataset": "shapes", "repo_id": "segcore/tiny-shapes", "revision": COMMIT,
                     "sha256": sha},
        "tiny-uncached": {"plugin": "hrnet_fusion", "dataset": "shapes", "repo_id": "segcore/not-cached",
                          "revision": OTHER_COMMIT, "sha256": sha},
        "tiny-later": {"plugin": "hrnet_fusion", "dataset": "cityscapes", "recipe": "recipes/tiny-later.toml",
                       "reason": "trains on Cityscapes, not on these machines"},
    })  # fmt: skip
    monkeypatch.setenv(hubmod.ZOO_VAR, str(root))
    return root


# -- save -> load --------------------------------------------------------------------------------------------------------


def test_round_trip_gives_identical_logits_and_the_folder_is_a_hub_model_repo(registry, saved):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == [WRITTEN, "README.md", "config.json", "model.safetensors"]
    loaded = segcore.from_pretrained(folder, registry=registry)
    for size in ((37, 53), (64, 64)):
        x = torch.rand(2, 3, *size)
        assert torch.equal(logits(loaded, x), logits(model, x))
    assert loaded.meta == META and not loaded.training
    config = json.loads((folder / "config.json").read_text())
    assert config["plugins"] == [
        {"plugin": "classic", "distribution": "segcore-plugin-classic", "version": "0.1.0", "provides": ["backbone hrnet"]},
        {"plugin": "hrnet_fusion", "distribution": "segcore-plugin-hrnet-fusion", "version": "0.1.0",
         "provides": ["decoder fusm", "attention aam"]},
    ]  # fmt: skip
    assert config["model"]["mean"] == [0.5, 0.4, 0.3] and config["model"]["std"] == [0.2, 0.25, 0.3]
    assert config["model"]["num_classes"] == 3
    assert config["dataset"] == {"name": "shapes", "class_names": ["sky", "road", "car"], "ignore_index": 255,
                                 "palette": [[128, 128, 128], [128, 64, 128], [64, 0, 128]]}  # fmt: skip
    assert config["weights"]["parameters"] == sum(p.numel() for p in model.parameters())
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: segcore" in card and 'segcore.from_pretrained("tiny-shapes")' in card
    assert "| 2 | car | (64, 0, 128) |" in card


def test_predict_gives_the_label_map_at_the_image_size_with_the_model_normalisation(registry, saved):
    model, folder = saved
    loaded = segcore.from_pretrained(folder, registry=registry)
    image = np.random.default_rng(0).integers(0, 256, (41, 59, 3), dtype=np.uint8)
    labels = segcore.predict(loaded, image, eval_cfg=EvalConfig(precision="fp32"))  # the fast path, in fp32
    assert labels.shape == (41, 59)
    # the model's own normalisation: (x / 255 - mean) / std with the saved mean and std, not ImageNet's
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    assert np.array_equal(labels, logits(model, x).argmax(1)[0].numpy())
    assert loaded.mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])


def test_training_heads_stay_out_and_bfloat16_storage_rounds_only_the_weights(registry, tmp_path):
    table = {**TINY, "aux": {"fcn": {"decoder": {"name": "fcn", "channels": 8}, "in_index": [2]}},
             "backbone": {**TINY["backbone"], "pretrained": False}, "init_from": "runs/x"}  # fmt: skip
    model = tiny_model(registry, table=table)
    assert any(k.startswith("aux.") for k in model.state_dict())
    folder = segcore.save_pretrained(model, tmp_path / "m", meta=META, dtype="bfloat16", registry=registry)
    stored = read_weights(folder / "model.safetensors")
    assert not any(k.startswith("aux.") for k in stored)
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.bfloat16}
    config = json.loads((folder / "config.json").read_text())
    assert "aux" not in config["model"] and "init_from" not in config["model"] and config["weights"]["dtype"] == "bfloat16"
    loaded = segcore.from_pretrained(folder, registry=registry)
    rounded = tiny_model(registry, table=table)
    with torch.no_grad():
        for t in rounded.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.to(torch.bfloat16).float())
    x = torch.rand(1, 3, 33, 47)
    assert torch.equal(logits(loaded, x), logits(rounded, x))


def test_num_classes_reinitialises_only_the_classifier(registry, saved):
    model, folder = saved
    loaded = segcore.from_pretrained(folder, num_classes=5, registry=registry)
    assert loaded.classifier.weight.shape == (5, 8, 1, 1) and loaded.meta is None
    theirs = model.state_dict()
    changed = [k for k, v in loaded.state_dict().items() if v.shape != theirs[k].shape or not torch.equal(v, theirs[k])]
    assert changed == ["classifier.weight", "classifier.bias"]


# -- the zoo: shipped folders, the Hub cache, revisions -------------------------------------------------------------------


def test_names_load_from_a_shipped_folder_without_the_hub_and_from_the_cache_through_hf_hub_download(
    registry, saved, zoo, offline, downloads
):
    model, _ = saved
    x = torch.rand(1, 3, 40, 40)
    shipped = segcore.from_pretrained("tiny-shipped", registry=registry)
    assert downloads == []  # a shipped folder wins over the same entry's Hub revision
    assert torch.equal(logits(shipped, x), logits(model, x))
    cached = segcore.from_pretrained("tiny-hub", registry=registry)
    assert downloads == [("segcore/tiny-shapes", "config.json", COMMIT, True), ("segcore/tiny-shapes", "model.safetensors", COMMIT, True)]
    assert torch.equal(logits(cached, x), logits(model, x))
    by_repo = segcore.from_pretrained("segcore/tiny-shapes", registry=registry)  # refs/main -> the same snapshot
    assert downloads[-1] == ("segcore/tiny-shapes", "model.safetensors", None, True)
    assert torch.equal(logits(by_repo, x), logits(model, x))
    segcore.from_pretrained(f"hf-hub:segcore/tiny-shapes@{COMMIT}", registry=registry)
    assert downloads[-1] == ("segcore/tiny-shapes", "model.safetensors", COMMIT, True)


def test_a_name_a_plugin_registers_loads_from_its_repo_and_is_pinned_by_its_sha256(registry, saved, zoo, offline):
    from segcore.contracts.registry import PluginInfo

    reg = _reduced(registry, "none")
    sha = hubmod.file_sha256(saved[1] / "model.safetensors")
    with reg.registering(PluginInfo("fake", "segcore-plugin-fake", "1.0")):
        reg.add_pretrained("fake-shapes", repo_id="segcore/tiny-shapes", revision=COMMIT, sha256=sha)
        reg.add_pretrained("fake-pinned-wrong", repo_id="segcore/tiny-shapes", revision=COMMIT, sha256="0" * 64)
    x = torch.rand(1, 3, 24, 24)
    assert torch.equal(logits(segcore.from_pretrained("fake-shapes", registry=reg), x), logits(saved[0], x))
    with pytest.raises(DamagedFileError, match="pins for fake-pinned-wrong"):
        segcore.from_pretrained("fake-pinned-wrong", registry=reg)


def test_a_revision_picks_another_snapshot_of_the_same_repo(registry, saved, zoo, offline, tmp_path):
    other = segcore.save_pretrained(tiny_model(registry, seed=1), tmp_path / "v2", meta=META, registry=registry)
    put_in_cache(offline, "segcore/tiny-shapes", other, OTHER_COMMIT, ref="v2")
    x = torch.rand(1, 3, 32, 32)
    v2 = segcore.from_pretrained("segcore/tiny-shapes", revision="v2", registry=registry)
    assert torch.equal(logits(v2, x), logits(tiny_model(registry, seed=1), x))
    # a zoo name at another revision than the pinned one: the manifest's sha256 is not that file's, so not checked
    assert torch.equal(logits(segcore.from_pretrained("tiny-hub", revision=OTHER_COMMIT, registry=registry), x), logits(v2, x))


# -- every refusal, through a local folder and through the cache ---------------------------------------------------------


def _reduced(registry, plugin: str):
    """The registry without *plugin*, as if it were not installed."""
    reduced = copy.copy(registry)
    reduced._entries = {stage: dict(entries) for stage, entries in registry._entries.items()}
    reduced._presets, reduced._pretrained, reduced.problems = dict(registry._presets), dict(registry._pretrained), []
    reduced.remove_plugin(plugin)
    return reduced


def test_a_missing_plugin_gives_the_pip_install_line_before_any_weights_are_fetched(registry, saved, zoo, downloads, monkeypatch):
    _, folder = saved
    reduced = _reduced(registry, "hrnet_fusion")
    want = ('needs decoder fusm, attention aam from plugin \'hrnet_fusion\' (segcore-plugin-hrnet-fusion 0.1.0), which is '
            'not installed. Install it: pip install "segcore-plugin-hrnet-fusion==0.1.0" (in a clone of segcore: pip '
            'install -e plugins/hrnet-fusion)')  # fmt: skip
    for source in (folder, "tiny-hub"):
        with pytest.raises(ConfigError) as err:
            segcore.from_pretrained(source, registry=reduced)
        assert want in str(err.value)
    assert [call[1] for call in downloads] == ["config.json"]  # the weights were never requested
    monkeypatch.setenv("SEGCORE_DISABLE_PLUGINS", "hrnet_fusion")
    with pytest.raises(ConfigError, match=r"which is disabled \(SEGCORE_DISABLE_PLUGINS=hrnet_fusion\): remove hrnet_fusion"):
        segcore.from_pretrained(folder, registry=reduced)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("config", "is (8,) in the file, (16,) in the model"),  # 7 tensors of the head and classifier, 5 shown
        ("drop", "1 missing from the file (classifier.bias)"),
        ("extra", "1 the model does not have (extra.weight)"),
    ],
)
def test_tensors_missing_unexpected_or_of_another_shape_are_named(registry, saved, edit, message):
    _, folder = saved
    if edit == "config":
        config = json.loads((folder / "config.json").read_text())
        config["model"]["decoder"]["channels"] = 16
        (folder / "config.json").write_text(json.dumps(config))
    else:
        tensors = read_weights(folder / "model.safetensors")
        if edit == "drop":
            del tensors["classifier.bias"]
        else:
            tensors["extra.weight"] = torch.zeros(2)
        save_weights(tensors, folder / "model.safetensors")
    with pytest.raises(ConfigError) as err:
        segcore.from_pretrained(folder, registry=registry)
    assert message in str(err.value) and "do not describe the same model" in str(err.value)


def test_a_sha256_other_than_the_manifest_s_is_refused_shipped_and_cached(registry, zoo, offline, tmp_path):
    other = segcore.save_pretrained(tiny_model(registry, seed=7), tmp_path / "other", meta=META, registry=registry)
    replacement = (other / "model.safetensors").read_bytes()  # a valid segcore file with its own intact record
    shipped = zoo / "models" / "tiny-shipped" / "model.safetensors"
    shipped.write_bytes(replacement)
    with pytest.raises(DamagedFileError, match=r"differs from [0-9a-f]{64}, the one the zoo manifest .* pins for tiny-shipped"):
        segcore.from_pretrained("tiny-shipped", registry=registry)
    blob = (offline / "models--segcore--tiny-shapes" / "snapshots" / COMMIT / "model.safetensors").resolve()
    blob.write_bytes(replacement)
    with pytest.raises(DamagedFileError, match="pins for tiny-hub"):
        segcore.from_pretrained("tiny-hub", registry=registry)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_truncated_or_altered_weights_file_is_refused_with_its_name(registry, zoo, offline, damage):
    link = offline / "models--segcore--tiny-shapes" / "snapshots" / COMMIT / "model.safetensors"  # -> ../../blobs/<sha256>
    shipped = zoo / "models" / "tiny-shipped" / "model.safetensors"
    for path, name in ((shipped, "tiny-shipped"), (link, "tiny-hub")):
        data = bytearray(path.read_bytes())
        path.resolve().write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:-9] + bytes([data[-9] ^ 1]) + data[-8:])
        with pytest.raises(DamagedFileError) as err:
            segcore.from_pretrained(name, registry=registry)
        want = "truncated" if damage == "truncate" else "the tensors differ from the file's integrity record"
        assert str(path) in str(err.value) and want in str(err.value)


def test_an_uncached_name_while_offline_fails_at_once_with_the_download_command(registry, zoo, offline, downloads,
                                                                                 segcore_network):  # fmt: skip
    with pytest.raises(ConfigError) as err:
        segcore.from_pretrained("tiny-uncached", registry=registry)
    net = segcore_network
    assert net.attempts == [] and net.sleeps == []  # no probe, no retries (the Hub's etag timeout alone is 10 s)
    assert downloads == [("segcore/not-cached", "config.json", OTHER_COMMIT, True)]
    msg = str(err.value)
    assert f"config.json of segcore/not-cached at revision {OTHER_COMMIT} is not in the Hugging Face cache ({offline})" in msg
    assert f"HF_HUB_OFFLINE=1 forbids downloading it. On a machine with network run `hf download segcore/not-cached" in msg
    with pytest.raises(ConfigError, match="nobody/nothing at revision main is not in the Hugging Face cache"):
        segcore.from_pretrained("nobody/nothing", registry=registry)


def test_an_unreachable_hub_is_not_retried(registry, zoo, offline, downloads, segcore_network, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    probe = ("connect", (urlparse(huggingface_hub.constants.ENDPOINT).hostname, 443))
    x = torch.rand(1, 3, 24, 24)
    model = segcore.from_pretrained("tiny-hub", registry=registry)  # what is cached still loads
    assert downloads[-1] == ("segcore/tiny-shapes", "model.safetensors", COMMIT, True) and logits(model, x).shape == (1, 3, 24, 24)
    net = segcore_network
    assert net.attempts and set(net.attempts) == {probe}  # one probe a file, then the cache alone
    net.attempts.clear()
    with pytest.raises(ConfigError, match=r"config.json of segcore/not-cached at revision b{40} is not cached and the Hub "
                                          r"cannot be reached; check the network, or fill the cache elsewhere with `hf download"):
        segcore.from_pretrained("tiny-uncached", registry=registry)
    assert net.attempts == [probe] and net.sleeps == []  # probed once, not retried


def test_unpublished_unknown_and_misplaced_names_say_what_to_do(registry, zoo, saved):
    with pytest.raises(ConfigError) as err:
        segcore.from_pretrained("tiny-later", registry=registry)
    recipe = zoo / "recipes" / "tiny-later.toml"
    assert str(err.value).startswith("from_pretrained 'tiny-later': weights not published (trains on Cityscapes, not on these machines). "
                                     f"Its recipe is {recipe}: train it with `segcore run {recipe}`")  # fmt: skip
    with pytest.raises(ConfigError, match=r"unknown pretrained name \(did you mean 'tiny-hub'\?\)"):
        segcore.from_pretrained("tiny-hubb", registry=registry)
    alone = zoo.parent / "alone.safetensors"  # weights with neither config.json nor pipeline.toml beside them
    shutil.copyfile(saved[1] / "model.safetensors", alone)
    with pytest.raises(ConfigError, match="a .safetensors file holds weights only, and neither config.json nor pipeline.toml"):
        segcore.from_pretrained(alone, registry=registry)
    with pytest.raises(ConfigError, match="revision='main' applies to Hub repos; a local path has none"):
        segcore.from_pretrained(saved[1], revision="main", registry=registry)


def test_the_real_zoo_s_unpublished_entries_point_at_their_recipes(registry, monkeypatch):
    monkeypatch.delenv(hubmod.ZOO_VAR, raising=False)  # the packaged manifest, as from a wheel:
    monkeypatch.setattr("segcore.hub.manifest._editable_clone_hub", lambda: None)  # not an editable clone
    with pytest.raises(ConfigError) as err:
        segcore.from_pretrained("hrnet_l-cityscapes", registry=registry)
    want = "from_pretrained 'hrnet_l-cityscapes': weights not published (Cityscapes is not on the 2-CPU machines"
    assert str(err.value).startswith(want)
    assert "Its recipe is hub/recipes/hrnet_l-cityscapes.toml of a clone (SEGCORE_ZOO=<clone>/hub)" in str(err.value)
    monkeypatch.setenv(hubmod.ZOO_VAR, str(REPO / "hub"))  # a clone's hub/: the recipe's path
    with pytest.raises(ConfigError) as err:
        segcore.from_pretrained("hrnet_l-cityscapes", registry=registry)
    assert f"Its recipe is {REPO / 'hub' / 'recipes' / 'hrnet_l-cityscapes.toml'}" in str(err.value)


def test_an_editable_install_from_a_clone_finds_the_clone_s_zoo_folder(monkeypatch):
    from segcore.hub import manifest

    monkeypatch.delenv(manifest.ZOO_VAR, raising=False)
    manifest._editable_clone_hub.cache_clear()
    assert manifest.zoo_dir() == REPO / "hub"  # this checkout is installed with pip install -e (README)
    assert manifest.zoo()["hrnet_l-camvid"].status.startswith("shipped (models/hrnet_l-camvid)")


def test_a_bad_manifest_entry_is_a_config_error_naming_it(tmp_path, monkeypatch, registry):
    root = write_zoo(tmp_path / "z", {"x-y": {"plugin": "p", "dataset": "d", "revison": COMMIT}})
    monkeypatch.setenv(hubmod.ZOO_VAR, str(root))
    with pytest.raises(ConfigError, match=r"unknown key 'revison' \(did you mean 'revision'\?\)"):
        hubmod.zoo()
    write_zoo(root, {"x-y": {"plugin": "p", "dataset": "d", "repo_id": "a/b", "revision": COMMIT}})
    with pytest.raises(ConfigError, match="needs the sha256 of its model.safetensors"):
        hubmod.zoo()


# -- through the CLI: exit code 2 ----------------------------------------------------------------------------------------

TRAIN = """
[model.backbone]
name = "hrnet"
width = 4
small = true
num_blocks = 1

[model.decoder]
name = "fusm"
channels = 8

[model.decoder.attention.per_level]
name = "aam"

[model.aux.fcn]                 # a training-only head: never in the model folder
decoder = {{ name = "fcn", channels = 8 }}
in_index = [2]

[data.dataset]
name = "shapes"
size = [32, 32]
num_train = 8
num_val = 4

[data]
batch_size = 4

[[loss]]
name = "ce"

[train]
iters = 5
optimizer = "adamw"
lr = 0.01
log_every = 1
eval_every = 2

[run]
out_dir = "{out}"
input_size = [32, 32]
device = "cpu"
"""


def evaluate_pipeline(folder: Path, train: Path, checkpoint: str) -> Path:
    path = folder / f"eval-{checkpoint.replace('/', '_')}.toml"
    path.write_text(f'base = "{train}"\n\n[run]\ntask = "evaluate"\ncheckpoint = "{checkpoint}"\n')
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, registry):
    """A 5-step run on the shapes data, made into model folders by `segcore hub save` (float32 and bfloat16)."""
    root = tmp_path_factory.mktemp("hub-run")
    train = root / "train.toml"
    train.write_text(textwrap.dedent(TRAIN.format(out=root / "run")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CLI, "registry", lambda: registry)
        assert main(["run", str(train), "-q"]) == 0
        assert main(["hub", "save", str(root / "run"), str(root / "zoo" / "models" / "tiny-shapes"), "-q"]) == 0
        assert main(["hub", "save", str(root / "run"), str(root / "zoo" / "models" / "tiny16-shapes"), "--dtype",
                     "bfloat16", "--hardware", "2 CPU cores (test)", "--train-hours", "0.01", "--cores", "2", "-q"]) == 0  # fmt: skip
    folders = {n: root / "zoo" / "models" / n for n in ("tiny-shapes", "tiny16-shapes")}
    write_zoo(root / "zoo", {n: {"plugin": "hrnet_fusion", "dataset": "shapes", "folder": f"models/{n}",
                                 "sha256": hubmod.file_sha256(f / "model.safetensors")} for n, f in folders.items()})  # fmt: skip
    return root, train, folders


def test_hub_save_makes_a_folder_whose_card_states_what_segcore_run_prints(trained, registry, monkeypatch, capsys):
    root, train, folders = trained
    monkeypatch.setenv(hubmod.ZOO_VAR, str(root / "zoo"))
    monkeypatch.setattr(CLI, "registry", lambda: registry)
    folder = folders["tiny-shapes"]
    assert sorted(p.name for p in folder.iterdir() if p.name != WRITTEN) == ["README.md", "config.json", "curves.png",
                                                                         "model.safetensors", "pipeline.toml"]  # fmt: skip
    config = json.loads((folder / "config.json").read_text())
    assert not any(k.startswith("aux.") for k in read_weights(folder / "model.safetensors"))
    assert config["input_size"] == [32, 32] and config["dataset"]["name"] == "shapes"
    assert [r["step"] for r in config["training"]["curve"]] == [2, 4, 5] and config["training"]["steps"] == 5
    assert config["training"]["aux_heads"] == ["fcn"] and config["training"]["start"] == "from scratch"
    miou = f"{100 * config['metrics']['mIoU']:.2f}"
    card = (folder / "README.md").read_text()
    assert f"| mIoU | **{miou}** |" in card and "value: " + str(round(100 * config["metrics"]["mIoU"], 2)) in card
    assert "![loss and val mIoU](curves.png)" in card and "| 5 |" in card
    capsys.readouterr()
    assert main(["run", str(evaluate_pipeline(root, train, "tiny-shapes")), "-q"]) == 0
    assert f"mIoU {miou}  mAcc" in capsys.readouterr().out
    bf16 = json.loads((folders["tiny16-shapes"] / "config.json").read_text())
    assert bf16["metrics"]["float32_mIoU"] == config["metrics"]["mIoU"]  # the same evaluation of the run's own weights
    assert bf16["training"]["hardware"] == "2 CPU cores (test)" and bf16["training"]["cpu_hours"] == 0.02
    change = 100 * (bf16["metrics"]["mIoU"] - config["metrics"]["mIoU"])
    assert f"(change {change:+.2f})" in (folders["tiny16-shapes"] / "README.md").read_text()
    assert main(["run", str(evaluate_pipeline(root, train, "tiny16-shapes")), "-q"]) == 0
    assert f"mIoU {100 * bf16['metrics']['mIoU']:.2f}  mAcc" in capsys.readouterr().out


def test_init_from_and_run_checkpoint_take_a_pretrained_name(trained, registry, monkeypatch, capsys):
    root, train, folders = trained
    monkeypatch.setenv(hubmod.ZOO_VAR, str(root / "zoo"))
    monkeypatch.setattr(CLI, "registry", lambda: registry)
    cfg = segcore.load_pipeline(train, registry=registry)
    model = segcore.build_model(cfg.model, registry, num_classes=5)
    fresh = segcore.init_from(model, hubmod.resolve_source("tiny-shapes", what="[model] init_from").weights())
    stored = read_weights(folders["tiny-shapes"] / "model.safetensors")
    assert fresh == []  # same class count: nothing of the inference model starts fresh (the aux head is not in it)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in stored.items())
    # a pipeline whose [model] is not the saved one is refused, naming the key
    other = root / "other.toml"
    other.write_text(f'base = "{evaluate_pipeline(root, train, "tiny-shapes")}"\n[model.decoder]\nchannels = 16\n')
    capsys.readouterr()
    assert main(["run", str(other), "-q"]) == 2
    err = capsys.readouterr().err
    assert "the pipeline's [model] is not the model tiny-shapes was saved with (model.decoder.channels: the pipeline has 16, tiny-shapes 8)" in err


@pytest.mark.parametrize(
    ("checkpoint", "prepare", "message"),
    [
        ("tiny-later", None, "run.checkpoint 'tiny-later': weights not published"),
        ("tiny-uncached", None, "HF_HUB_OFFLINE=1 forbids downloading it"),
        ("tiny-shipped", "replace", "differs from"),
        ("tiny-shipped", "truncate", "truncated"),
        ("tiny-shipped", "plugin", 'pip install "segcore-plugin-hrnet-fusion==0.1.0"'),
        ("tiny-shipped", "shape", "do not describe the same model"),
    ],
)
def test_every_refusal_exits_2_from_segcore_run(zoo, registry, tmp_path, monkeypatch, capsys, checkpoint, prepare, message):
    shipped = zoo / "models" / "tiny-shipped"
    if prepare == "replace":
        segcore.save_pretrained(tiny_model(registry, seed=3), tmp_path / "o", meta=META, registry=registry)
        shutil.copyfile(tmp_path / "o" / "model.safetensors", shipped / "model.safetensors")
    elif prepare == "truncate":
        data = (shipped / "model.safetensors").read_bytes()
        (shipped / "model.safetensors").write_bytes(data[:1000])
    elif prepare == "shape":
        tensors = read_weights(shipped / "model.safetensors")
        tensors["classifier.bias"] = torch.zeros(4)
        save_weights(tensors, shipped / "model.safetensors")
        (zoo / "manifest.toml").write_text((zoo / "manifest.toml").read_text().replace(
            hubmod.file_sha256(tmp_path / "tiny-shapes" / "model.safetensors"), hubmod.file_sha256(shipped / "model.safetensors")))
    reg = _reduced(registry, "hrnet_fusion") if prepare == "plugin" else registry
    monkeypatch.setattr(CLI, "registry", lambda: reg)
    train = tmp_path / "train.toml"
    train.write_text(textwrap.dedent(TRAIN.format(out=tmp_path / "run")).replace(
        'name = "fusm"', 'name = "hrnetv2_head"').replace('name = "aam"', 'name = "eca"') if prepare == "plugin" else
        textwrap.dedent(TRAIN.format(out=tmp_path / "run")))  # fmt: skip
    assert main(["run", str(evaluate_pipeline(tmp_path, train, checkpoint)), "-q"]) == 2
    assert message in capsys.readouterr().err


def test_hub_list_shows_each_entry_s_weights(zoo, registry, monkeypatch, capsys):
    monkeypatch.setattr(CLI, "registry", lambda: registry)
    assert main(["hub", "list"]) == 0
    lines = {line.split()[0]: " ".join(line.split()) for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["tiny-shipped"] == f"tiny-shipped hrnet_fusion shapes - shipped (models/tiny-shipped), Hub segcore/tiny-shapes@{COMMIT[:7]} -"
    recipe = os.path.relpath(zoo / "recipes" / "tiny-later.toml")
    assert lines["tiny-later"] == f"tiny-later hrnet_fusion cityscapes - weights not published {recipe}"


# -- push_to_hub, up to the upload call ------------------------------------------------------------------------------


def test_push_to_hub_sends_the_model_folder(trained, registry, monkeypatch):
    from huggingface_hub import HfApi

    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        folder = Path(kw["folder_path"])
        sent = {p.name: p.read_bytes() for p in folder.iterdir()}
        calls.append(("upload_folder", sent, {k: v for k, v in kw.items() if k != "folder_path"}))
        return type("CommitInfo", (), {"oid": "c" * 40, "commit_url": "https://huggingface.co/me/m/commit/" + "c" * 40})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    folder = trained[2]["tiny-shapes"]
    result = segcore.push_to_hub(folder, "me/tiny-shapes")
    assert calls[0] == ("create_repo", "me/tiny-shapes", {"repo_type": "model", "private": False, "exist_ok": True})
    _, sent, kw = calls[1]
    assert sent == {p.name: p.read_bytes() for p in folder.iterdir()}  # the folder as it is, byte for byte
    assert kw == {"repo_id": "me/tiny-shapes", "repo_type": "model", "commit_message": "segcore hub push", "ignore_patterns": [".*"]}
    assert result == hubmod.PushResult("me/tiny-shapes", "c" * 40, "https://huggingface.co/me/m/commit/" + "c" * 40,
                                       hubmod.file_sha256(folder / "model.safetensors"))  # fmt: skip
    # a model object is saved first; what is sent is a complete model folder
    calls.clear()
    model = segcore.from_pretrained(folder, registry=registry)
    segcore.push_to_hub(model, "me/again")
    sent = calls[1][1]
    assert sorted(sent) == [WRITTEN, "README.md", "config.json", "model.safetensors"]  # ignore_patterns: the record stays
    assert json.loads(sent["config.json"])["model"] == json.loads((folder / "config.json").read_bytes())["model"]


def test_push_to_hub_refuses_a_damaged_folder_before_any_request(saved, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setattr(HfApi, "create_repo", lambda *a, **k: pytest.fail("create_repo called"))
    _, folder = saved
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(DamagedFileError, match="integrity record"):
        segcore.push_to_hub(folder, "me/x")


# -- the repository's zoo --------------------------------------------------------------------------------------------


def test_the_manifest_s_recipes_load_and_its_cards_are_current(registry, monkeypatch):
    monkeypatch.setenv(hubmod.ZOO_VAR, str(REPO / "hub"))  # the packaged manifest, its paths in the clone's hub/
    entries = hubmod.zoo()
    assert {"hrnet_l-camvid", "frm_van_b0-camvid", "hrnet_l-cityscapes"} <= set(entries)
    assert {e.plugin for e in entries.values()} == {"hrnet_fusion", "frm", "attention_fusion", "early_fusion"}
    for name, entry in entries.items():
        cfg = segcore.load_pipeline(entry.path(entry.recipe), registry=registry)
        assert cfg.data.dataset.name == entry.dataset and cfg.run.out_dir == f"runs/zoo/{name}", name
        if entry.folder is None:
            assert entry.reason, name
            card = REPO / "hub" / "cards" / f"{name}.md"
            assert card.read_text() == hubmod.render_zoo_card(entry, registry), f"{card} is stale: run `segcore hub cards`"
        else:  # shipped: the file the manifest pins, and the metrics its card states
            folder = entry.path(entry.folder)
            assert hubmod.file_sha256(folder / "model.safetensors") == entry.sha256, name
            m = json.loads((folder / "config.json").read_text())["metrics"]
            assert entry.metrics["mIoU"] == round(100 * m["mIoU"], 2), name
    for name in ("hrnet_l-camvid", "frm_van_b0-camvid"):  # what the cards of the models trained here are measured with
        cfg = segcore.load_pipeline(REPO / "hub" / "recipes" / f"{name}.eval.toml", registry=registry)
        assert (cfg.run.task, cfg.run.checkpoint, cfg.data.dataset.name, cfg.data.val_split) == ("evaluate", name, "camvid", "val")
    weights = sum(p.stat().st_size for p in (REPO / "hub").rglob("*.safetensors"))
    assert weights < 50e6  # the shipped weights stay small


@pytest.mark.slow
def test_a_fresh_clone_evaluates_and_predicts_with_the_shipped_camvid_models_offline(tmp_path):
    shipped = {n: e for n, e in hubmod.zoo().items() if e.folder and e.dataset == "camvid"}
    if not shipped:
        pytest.skip("no CamVid model is shipped yet (segcore/hub/zoo.toml: train one with its recipe, then segcore hub save)")
    camvid = REPO.parent / "shared" / "data" / "camvid"
    clone = tmp_path / "main"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    (tmp_path / "shared").symlink_to(REPO.parent / "shared")  # the recipes' root = "../shared/data/camvid"
    cache = tmp_path / "empty-hf-cache"
    cache.mkdir()
    env = {**os.environ, "PYTHONPATH": str(clone / "core"), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    env[hubmod.ZOO_VAR] = str(clone / "hub")  # the shipped folders: a clone's hub/, named explicitly
    image = sorted((camvid / "val").glob("*.png"))[0]
    for name, entry in shipped.items():
        pipeline = clone / "hub" / "recipes" / f"{name}.eval.toml"
        out = subprocess.run([sys.executable, "-m", "segcore", "run", str(pipeline), "-q"], cwd=clone, env=env,
                             capture_output=True, text=True, timeout=3600)  # fmt: skip
        assert out.returncode == 0, out.stderr
        # the card's figure through the bf16 fast path; BN folding's arithmetic (torch's fuse_conv_bn_weights since
        # 0.2) rounds a few bf16 weights differently, which moved an earlier hrnet_l-camvid from 53.00 to 53.01. A CPU
        # without native bf16 computes in fp32: the manifest's fp32_compute_mIoU (0.04-0.06 from the card's)
        miou = float(re.search(r"^mIoU (\d+\.\d+)", out.stdout, flags=re.M).group(1))
        expected = entry.metrics["mIoU"] if bf16_supported("cpu") else entry.metrics["fp32_compute_mIoU"]
        assert abs(miou - expected) <= 0.02, out.stdout
        code = (f"import segcore; from segcore.data import read_image; m = segcore.from_pretrained({name!r}); "
                f"print(segcore.__file__, segcore.predict(m, read_image({str(image)!r})).shape)")  # fmt: skip
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        where, shape = out.stdout.strip().split(" ", 1)
        assert where == str(clone / "core" / "segcore" / "__init__.py") and shape == "(360, 480)"


@pytest.mark.slow  # ~12 s: every row of the hub's sweep files checked on 2 idle AVX2 cores
def test_the_hub_s_sweep_files_build_and_the_evidence_sweeps_are_their_recipes(registry):
    """Every study and evidence sweep under hub/recipes/ builds and passes segcore check; an evidence sweep's runs are
    its recipe but for what `segcore hub save --evidence` lets differ (the split, the seed, the folder, the precision)."""
    import attrs

    from segcore.tools.publish import EVIDENCE_MAY_DIFFER
    from segcore.tools.sweep import load_sweep

    files = sorted((REPO / "hub" / "recipes").rglob("*.sweep.toml"))
    assert any(f.name.endswith(".evidence.sweep.toml") for f in files)
    assert EVIDENCE_MAY_DIFFER == ("data.train_split", "train.seed", "run.out_dir", "train.amp")
    for file in files:
        sweep = load_sweep(file, registry=registry)
        assert len(sweep.seeds) >= 3, file  # a recipe choice is decided by 3 seeds or more
        if not file.name.endswith(".evidence.sweep.toml"):
            continue
        recipe = segcore.load_pipeline(file.with_name(file.name.replace(".evidence.sweep.toml", ".toml")), registry=registry)
        assert "val" in recipe.data.train_split  # the shipped model trains on train + val
        for run in sweep.runs:
            assert run.cfg.data.train_split == "train", file
            same = attrs.evolve(recipe, data=attrs.evolve(recipe.data, train_split="train"),
                                train=attrs.evolve(recipe.train, seed=run.seed),
                                run=attrs.evolve(recipe.run, out_dir=run.cfg.run.out_dir))  # fmt: skip
            assert run.cfg == same, (file, run.label)


@pytest.mark.slow  # ~12 s: every evidence record read against its sweep on 2 idle AVX2 cores
def test_the_hub_s_evidence_records_are_their_sweeps_and_agree_with_the_cards(registry):
    """hub/evidence/<name>/ is the record of hub/recipes/<name>.evidence.sweep.toml, kept without weights: every
    finished seed trained what the sweep resolves to for it, the record's table is the one its runs give, and a
    shipped model whose card states evidence states what the record gives (`segcore hub evidence`)."""
    import tomllib

    from segcore.config import dump_pipeline
    from segcore.tools.publish import read_evidence
    from segcore.tools.sweep import collect_table, is_finished, load_sweep, same_run

    records = [(p, REPO / "hub" / "recipes" / f"{p.name}.evidence.sweep.toml")
               for p in sorted((REPO / "hub" / "evidence").iterdir()) if p.is_dir()]  # fmt: skip
    assert records
    # the studies' records (hub/studies/<study>/ of hub/recipes/study/<study>.sweep.toml) are checked the same way
    studies = [(p, REPO / "hub" / "recipes" / "study" / f"{p.name}.sweep.toml")
               for p in sorted((REPO / "hub" / "studies").iterdir()) if p.is_dir()]  # fmt: skip
    assert studies
    for record, sweep_file in records + studies:
        sweep = load_sweep(sweep_file, registry=registry, out_dir=record)
        finished = [spec for spec in sweep.runs if is_finished(spec.folder)]
        assert finished, record
        for spec in finished:
            written = (spec.folder / "sweep_pipeline.toml").read_text()
            assert same_run(written, dump_pipeline(spec.cfg), registry=registry), spec.label
            assert tomllib.loads(written)["train"]["seed"] == spec.seed
            assert not any(spec.folder.rglob("*.safetensors")), f"{spec.folder}: a record keeps no weights"
            log = [json.loads(line) for line in (spec.folder / "log.jsonl").read_text().splitlines()]
            assert max(r["step"] for r in log if r["kind"] == "train") == spec.cfg.train.iters
        table = json.loads((record / "table.json").read_text())
        assert table["rows"] == collect_table(sweep, registry)["rows"], f"{record}: segcore sweep FILE --table --out-dir"
        if (record, sweep_file) in studies:
            continue
        config = json.loads((REPO / "hub" / "models" / record.name / "config.json").read_text())
        if "evidence" in config:
            assert config["evidence"] == read_evidence(record / "table.json", REPO / "hub" / "models" / record.name
                                                       / "pipeline.toml", registry=registry)  # fmt: skip
