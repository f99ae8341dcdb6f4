"""Folders written by segcore 0.1 (tests/data/layout-0.1, made by the code of that time: `fcn` and `ce` were then
segcore-plugin-classic's) still load and give the same numbers, with core's built-ins alone.

The fixture: ``run/`` (a 60-step training run of ``tiny.toml``: timm's test_resnet + the FCN head on the shapes
dataset), ``model/`` (that run saved as a model folder; its config.json says the decoder came from plugin "classic"),
and ``expected_logits.safetensors`` (an input batch and the logits the old code gave for it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import segcore
from segcore import Decoder, Loss
from segcore.pipeline import load_pipeline, run_pipeline

DATA = Path(__file__).parent / "data" / "layout-0.1"


def test_the_registry_is_core_alone(registry):
    assert {p.dist for p in registry.plugins} == {"segcore"}
    assert registry.get(Decoder, "fcn").plugin.dist == "segcore"
    assert "segcore-plugin-classic" in registry.get(Decoder, "fcn").formerly  # what lets the old folders load
    assert registry.get(Loss, "ce").plugin.dist == "segcore"


def test_model_folder_names_classic_and_loads_with_the_builtin(registry):
    config = json.loads((DATA / "model" / "config.json").read_text())
    assert {"plugin": "classic", "distribution": "segcore-plugin-classic", "version": "0.1.0",
            "provides": ["decoder fcn"]} in config["plugins"]  # fmt: skip
    model = segcore.from_pretrained(DATA / "model", registry=registry)
    expected = load_file(DATA / "expected_logits.safetensors")
    with torch.no_grad():
        logits = model(expected["input"]).logits
    torch.testing.assert_close(logits, expected["logits"])
    assert model.meta.class_names[1] == "disc"


def test_a_component_from_another_distribution_is_still_refused(registry, tmp_path):
    """The moved-components rule is "formerly", not "anything goes": a folder saying another distribution gave
    fcn is refused as before."""
    folder = tmp_path / "model"
    folder.mkdir()
    for f in (DATA / "model").iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    for rec in config["plugins"]:
        if rec["plugin"] == "classic":
            rec.update(plugin="someone", distribution="segcore-plugin-someone")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(segcore.ConfigError, match=re.escape("decoder fcn comes from segcore here")):
        segcore.from_pretrained(folder, registry=registry)


def test_run_folder_evaluates_to_its_stored_metrics(registry, tmp_path):
    text = (DATA / "run" / "pipeline.toml").read_text()
    text = text.replace('task = "train"', f'task = "evaluate"\ncheckpoint = {str(DATA / "run")!r}')
    text = text.replace('out_dir = "run"', f'out_dir = {str(tmp_path / "out")!r}')
    assert 'task = "evaluate"' in text
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    cfg = load_pipeline(path, registry=registry)
    result = run_pipeline(cfg, registry, progress=False)
    stored = json.loads((DATA / "run" / "metrics.json").read_text())["val"]
    for key in ("mIoU", "aAcc", "fwIoU"):
        assert result.metrics[key] == pytest.approx(stored[key], abs=1e-6), key
