"""Malformed pipeline files: each gives its message (TOML path, bad value, choices, near match) and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from segcore import ConfigError, load_pipeline
from segcore.cli.main import main

pytest.importorskip("segcore_plugin_classic", reason="an integration test: the messages name classic's hrnetv2_head and se; needs segcore-plugin-classic (pip install -e plugins/classic)")
pytest.importorskip("segcore_plugin_datasets", reason="an integration test: examples/camvid.toml names the datasets plugin's camvid; needs segcore-plugin-datasets (pip install -e plugins/datasets)")

# (what to change in the base pipeline, fragments the message must hold)
CASES = {
    "toml_syntax": (
        lambda p: p.replace('name = "hrnetv2_head"', 'name = "hrnetv2_head'),
        ["not valid TOML", "line"],
    ),
    "unknown_top_level_key": (
        lambda p: p + "\n[trian]\nepochs = 3\n",
        ["(top level): unknown key 'trian' (did you mean 'train'?)", "allowed:"],
    ),
    "wrong_type": (
        lambda p: p + '\n[train]\nepochs = "ten"\n',
        ["train.epochs: expected an integer, got 'ten' (str)"],
    ),
    "bool_is_not_an_int": (
        lambda p: p + "\n[train]\nepochs = true\n",
        ["train.epochs: expected an integer, got True"],
    ),
    "unknown_component": (
        lambda p: p.replace('name = "hrnetv2_head"', 'name = "hrnetv2_haed"'),
        ["model.decoder: unknown decoder 'hrnetv2_haed' (did you mean 'hrnetv2_head'?); installed: ", "fcn, ", "hrnetv2_head"],
    ),
    "bad_choice": (
        lambda p: p + '\n[train]\noptimizer = "adam"\n',
        ["train.optimizer: must be one of 'sgd', 'adamw' (got 'adam')"],
    ),
    "missing_required_table": (
        lambda p: p.replace('[model.decoder]\nname = "hrnetv2_head"\n', ""),
        ["model.decoder: missing required key"],
    ),
    "missing_component_name": (
        lambda p: p.replace('[model.decoder]\nname = "hrnetv2_head"', "[model.decoder]\nchannels = 64"),
        ["model.decoder: missing key 'name': which decoder to use; installed: ", "hrnetv2_head"],
    ),
    "unknown_component_key": (
        lambda p: p.replace('name = "hrnetv2_head"', 'name = "hrnetv2_head"\nchanels = 64'),
        ["model.decoder: unknown key 'chanels' (did you mean 'channels'?); allowed: name, attention, in_channels, in_strides, channels, align_corners"],
    ),
    "validator": (
        lambda p: p + "\n[data]\nbatch_size = 0\n",
        ["'batch_size' must be > 0: 0"],
    ),
    "component_validator": (
        lambda p: p.replace('name = "hrnetv2_head"', 'name = "hrnetv2_head"\nchannels = -4'),
        ["'channels' must be > 0: -4"],
    ),
    "unknown_attention_slot": (
        lambda p: p + '\n[model.decoder.attention.after_fuson]\nname = "se"\n',
        ["model.decoder.attention: decoder 'hrnetv2_head' has no attention slot 'after_fuson' (did you mean 'after_fusion'?)"],
    ),
    "unknown_attention": (
        lambda p: p + '\n[model.decoder.attention.after_fusion]\nname = "sse"\n',
        ["model.decoder.attention.after_fusion: unknown attention 'sse' (did you mean 'se'?)"],
    ),
    "bad_attention_option": (
        lambda p: p + '\n[model.decoder.attention.after_fusion]\nname = "se"\nreduction = "high"\n',
        ["model.decoder.attention.after_fusion.reduction: expected an integer, got 'high'"],
    ),
    "unknown_timm_model": (
        lambda p: p.replace('"hrnet_w18_small"', '"hrnet_w18_smal"'),
        ["model_name: unknown timm model 'hrnet_w18_smal' (did you mean 'hrnet_w18_small"],
    ),
    "bad_loss_entry": (
        lambda p: p.replace('[[loss]]\nname = "ce"', '[[loss]]\nname = "ce"\nweight = -1.0'),
        ["'weight' must be >= 0.0: -1.0"],
    ),
    "bad_device": (
        lambda p: p.replace("[run]", '[run]\ndevice = "gpu"'),
        ["run.device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu'"],
    ),
    "missing_base": (
        lambda p: 'base = "no_such.toml"\n' + p,
        ["no_such.toml: no such pipeline file"],
    ),
    "unknown_preset": (
        lambda p: 'base = "hrnet_lx"\n' + p,
        ["base: unknown preset 'hrnet_lx'"],
    ),
    "channel_mismatch": (  # found when the stages are wired (check and run), not when the file is parsed
        lambda p: p.replace('name = "hrnetv2_head"', 'name = "hrnetv2_head"\nin_channels = [18, 36, 72, 144]'),
        [
            "channel mismatch: [model.decoder] ('hrnetv2_head') expects in_channels (18, 36, 72, 144), but "
            "[model.backbone] ('timm') gives 4 maps with channels (16, 32, 64, 128). "
            "Set [model.decoder] in_channels = [16, 32, 64, 128]"
        ],
    ),
    "stride_mismatch": (
        lambda p: p.replace('name = "hrnetv2_head"', 'name = "hrnetv2_head"\nin_strides = [4, 8, 16]'),
        [
            "stride mismatch: [model.decoder] ('hrnetv2_head') expects in_strides (4, 8, 16), but [model.backbone] "
            "('timm') gives 4 maps with strides (4, 8, 16, 32)"
        ],
    ),
    "decoder_rejects_its_input": (  # select reorders the levels coarsest first; the HRNetV2 head refuses that
        lambda p: p + '\n[[model.enhancers]]\nname = "select"\nlevels = [3, 0]\n',
        [
            "[model.decoder] decoder 'hrnetv2_head' (plugin \"classic\" from segcore-plugin-classic 0.1.0): "
            "hrnetv2_head needs levels finest first, got strides [32, 4] ([model.enhancers[0]] ('select') gives "
            "channels (128, 16) at strides (32, 4))"
        ],
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_malformed_pipeline_exits_2_with_message(case, base_pipeline, write_pipeline, capsys):
    edit, fragments = CASES[case]
    path = write_pipeline(edit(base_pipeline))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    for fragment in fragments:
        assert fragment in err, err
    assert "Traceback" not in err


def test_every_problem_is_listed_at_once(base_pipeline, write_pipeline, registry):
    text = base_pipeline.replace('name = "hrnetv2_head"', 'name = "hrnetv2_head"\nnorm = "bn"').replace("[run]", '[run]\ndevice = "gpu"') + (
        '\n[train]\noptimizer = "adam"\n[data]\nbatch_size = "8"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_pipeline(write_pipeline(text), registry=registry)
    lines = str(info.value).splitlines()
    assert lines[0].endswith("pipeline.toml: invalid pipeline config")
    assert len(lines) == 1 + 4, lines
    assert any(line.startswith("  model.decoder: unknown key 'norm'") for line in lines)
    assert any(line.startswith("  train.optimizer: must be one of") for line in lines)
    assert any(line.startswith("  data.batch_size: expected an integer, got '8'") for line in lines)
    assert any("run.device must be" in line for line in lines)


@pytest.mark.slow  # ~7 s: segcore processes on 2 idle AVX2 cores
def test_cli_process_exits_2_without_traceback(base_pipeline, write_pipeline):
    path = write_pipeline(base_pipeline.replace('"hrnetv2_head"', '"hrnetv2_haed"'))
    out = subprocess.run([sys.executable, "-m", "segcore", "check", str(path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "unknown decoder 'hrnetv2_haed'" in out.stderr and "Traceback" not in out.stderr


def test_missing_file_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: no such pipeline file" in capsys.readouterr().err


def test_base_file_is_merged_key_by_key(base_pipeline, write_pipeline, registry):
    write_pipeline(base_pipeline, name="base.toml")
    child = write_pipeline('base = "base.toml"\n[train]\nepochs = 3\n[model.decoder]\nchannels = 32\n')
    cfg = load_pipeline(child, registry=registry)
    assert cfg.train.epochs == 3
    assert cfg.model.decoder.name == "hrnetv2_head" and cfg.model.decoder.config.channels == 32
    assert cfg.model.backbone.config.model_name == "hrnet_w18_small"


@pytest.mark.parametrize("example", sorted(p.name for p in (Path(__file__).resolve().parents[2] / "examples").glob("*.toml")))
def test_every_example_pipeline_checks(example, capsys):
    path = Path(__file__).resolve().parents[2] / "examples" / example
    assert main(["check", str(path)]) == 0, capsys.readouterr().err
    assert "ok: every stage keeps its contract" in capsys.readouterr().out


def test_a_value_over_a_nested_table_of_the_base_is_a_config_error(write_pipeline, base_pipeline, capsys):
    """``[data] augment = 1`` over a base with ``[data.augment]`` (was a TypeError traceback in the merge)."""
    base = write_pipeline(base_pipeline + "\n[data.augment]\ncrop_size = [32, 32]\n", name="base.toml")
    path = write_pipeline('base = "base.toml"\n[data]\naugment = 1\n')
    assert base.parent == path.parent
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "data.augment: expected a table of keys, not a single value (got 1)" in err and "Traceback" not in err
