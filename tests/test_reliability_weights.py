"""segcore.weights: every weights file carries an integrity record; damaged, foreign and misfit files are named."""

from __future__ import annotations

import os
import pickle
import stat

import pytest
import safetensors.torch
import torch
from torch import nn

from segcore.errors import ConfigError, DamagedFileError
from segcore.io import atomic_dir, remove_stale_temps
from segcore.model.weights import RECORD_KEY, load_weights, read_weights, save_weights, tensors_sha256


class Tiny(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.classifier = nn.Conv2d(4, classes, 1)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(1)
    model = Tiny()
    return model, save_weights(model, tmp_path / "model.safetensors")


def test_round_trip_loads_every_tensor_and_keeps_the_record(saved, tmp_path):
    model, path = saved
    other = Tiny()
    assert load_weights(other, path).missing == ()
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k
    with safetensors.safe_open(str(path), "pt") as f:
        assert f.metadata()[RECORD_KEY] == tensors_sha256(model.state_dict())


def _damage(data: bytes, kind: str) -> bytes:
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "zeroed":
        return bytes(len(data))
    if kind == "empty":
        return b""
    if kind == "random":
        return bytes((i * 37 + 11) % 256 for i in range(len(data)))
    if kind == "png":
        return b"\x89PNG\r\n\x1a\n" + data[8:]
    if kind == "pickle":
        return pickle.dumps({"conv.weight": [1.0, 2.0]}, protocol=4)
    if kind == "flipped":  # one bit of the last tensor's data
        flipped = bytearray(data)
        flipped[-5] ^= 0x01
        return bytes(flipped)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("truncated", "truncated"),
        ("zeroed", "truncated, zeroed or overwritten"),
        ("empty", "the file is empty"),
        ("random", "truncated, zeroed or overwritten"),
        ("png", "this is a PNG image"),
        ("pickle", "this is a pickle (torch.save)"),
        ("flipped", "differ from the file's integrity record"),
    ],
)
def test_damaged_file_is_named_and_refused(saved, kind, fragment):
    model, path = saved
    path.write_bytes(_damage(path.read_bytes(), kind))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DamagedFileError) as info:
        load_weights(model, path)
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_torch_save_zip_is_recognised_and_never_unpickled(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(DamagedFileError, match=r"zip archive \(torch.save writes these\).*never unpickles"):
        read_weights(path)


def test_missing_file_and_folder_are_named(tmp_path):
    with pytest.raises(DamagedFileError, match=f"{tmp_path / 'nope.safetensors'}: weights file is missing"):
        read_weights(tmp_path / "nope.safetensors")
    with pytest.raises(DamagedFileError, match="is a folder"):
        read_weights(tmp_path)


def test_file_without_a_record_is_refused_or_loaded_with_a_warning(tmp_path):
    path = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({"w": torch.arange(3.0)}, str(path))
    with pytest.raises(DamagedFileError, match="has no integrity record"):
        read_weights(path)
    with pytest.warns(UserWarning, match="loaded unverified"):
        assert torch.equal(read_weights(path, require_record=False)["w"], torch.arange(3.0))


def test_another_class_count_names_the_tensors_and_the_fix(saved):
    _, path = saved
    with pytest.raises(ConfigError) as info:
        load_weights(Tiny(classes=12), path)
    msg = str(info.value)
    assert "classifier.weight is (5, 4, 1, 1) in the file, (12, 4, 1, 1) in the model" in msg
    assert "The file's classifier has 5 classes, the model's 12" in msg and "num_classes" in msg


def test_missing_and_unexpected_by_name_and_non_strict_report(saved):
    _, path = saved
    model = Tiny()
    model.extra = nn.Linear(2, 2)
    del model.bn
    with pytest.raises(ConfigError, match=r"2 missing from the file \(extra.bias, extra.weight\).*5 the model does not have \(bn"):
        load_weights(model, path)
    report = load_weights(model, path, strict=False)
    assert report.missing == ("extra.weight", "extra.bias") and len(report.unexpected) == 5
    assert load_weights(model, path, strict=False, ignore_missing=("extra.",)).missing == ()


def test_the_mismatch_message_lists_names_sorted_whatever_the_order_of_the_tensors(tmp_path):
    """safetensors hands tensors back in an order that differs between processes; only five names of each kind
    are shown, so the message must not depend on that order."""
    from segcore.model.weights import apply_weights

    model = nn.ModuleDict({f"m{i}": nn.Conv2d(2, 2, 1) for i in range(7)})
    own = model.state_dict()
    names = list(own)  # m0.weight, m0.bias, ..., m6.bias
    theirs = {k: torch.zeros(3, 2, 1, 1) if k.endswith("weight") else own[k] for k in names[:8]}  # 4 of another shape
    theirs |= {f"z{i}.weight": torch.zeros(1) for i in range(7)} | {f"a{i}.weight": torch.zeros(1) for i in range(7)}
    messages = set()
    for order in (sorted(theirs), sorted(theirs, reverse=True), [*names[5:8], *sorted(theirs)[::3], *sorted(theirs)]):
        shuffled = {k: theirs[k] for k in dict.fromkeys(order)}
        with pytest.raises(ConfigError) as info:
            apply_weights(model, shuffled, source="w.safetensors")
        messages.add(str(info.value))
    assert len(messages) == 1
    msg = messages.pop()
    assert "4 of another shape (m0.weight is (3, 2, 1, 1) in the file, (2, 2, 1, 1) in the model; m1.weight is" in msg
    assert "6 missing from the file (m4.bias, m4.weight, m5.bias, m5.weight, m6.bias (+1 more))" in msg
    assert "14 the model does not have (a0.weight, a1.weight, a2.weight, a3.weight, a4.weight (+9 more))" in msg


def test_tied_weights_and_bf16_round_trip(tmp_path):
    emb = nn.Embedding(4, 3)
    head = nn.Linear(3, 4, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head}).to(torch.bfloat16)
    path = save_weights(model, tmp_path / "tied.safetensors")
    got = read_weights(path)
    assert got["emb.weight"].dtype == torch.bfloat16 and torch.equal(got["emb.weight"], got["head.weight"])


def test_written_files_and_folders_keep_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_weights(Tiny(), tmp_path / "w.safetensors")
        with atomic_dir(tmp_path / "ckpt") as folder:
            (folder / "x").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o755


def test_only_our_temp_names_are_cleaned(tmp_path):
    ours = [tmp_path / ".model.safetensors.k3j2ab_9.tmp", tmp_path / ".ckpt-00000004.tmp.a1b2c3d4"]
    ours[0].write_bytes(b"half")
    ours[1].mkdir()
    users = [tmp_path / ".notes.tmp", tmp_path / "draft.tmp", tmp_path / ".cache"]
    for p in users:
        p.write_text("mine")
    assert sorted(remove_stale_temps(tmp_path)) == sorted(ours)
    assert all(p.read_text() == "mine" for p in users)


def test_replacing_a_folder_keeps_files_segcore_did_not_write(tmp_path):
    with atomic_dir(tmp_path / "best") as folder:
        (folder / "state.json").write_text("old")
    (tmp_path / "best" / "notes.txt").write_text("mine")
    with atomic_dir(tmp_path / "best") as folder:
        (folder / "state.json").write_text("new")
    assert {p.name: p.read_text() for p in (tmp_path / "best").iterdir()} == {"state.json": "new", "notes.txt": "mine"}
