"""The frozen encoder through core's mechanisms (BLOCKS.md 001.1, 001.5): after training steps the encoder is bitwise
unchanged with no optimizer or EMA state and the trainable count is the decoder's (adapters included) plus the
classifier's; a fine-tuning chain on the embedded `shapes` data starts bitwise from the first run except for the
classifier; timm's pretrained path loads offline from a Hugging Face cache and a missing cache fails fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch

from segcore import ConfigError
from segcore.pipeline import structure_pipeline
from segcore.pipeline import Trainer

# timm's test_resnet (a timm ResNet, 372,688 parameters): taps 32 @1/2, 32 @1/4, 48 @1/8, 192 @1/16, 96 @1/32
TINY_DECODER = {"name": "reverse_hrnet", "width": 4, "num_blocks": 1, "num_modules": [1, 1, 1]}


def pipeline(out: Path, *, iters: int = 3, **model) -> dict:
    return {
        "model": {"backbone": {"name": "timm", "model_name": "test_resnet", "out_indices": [0, 1, 2, 3, 4], "frozen": True},
                  "decoder": dict(TINY_DECODER), "dropout": 0.0, **model},  # fmt: skip
        "data": {"dataset": {"name": "shapes", "size": [48, 48], "num_train": 8, "num_val": 2}, "batch_size": 4},
        "loss": [{"name": "ce"}],
        "train": {"iters": iters, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "ema_decay": 0.5, "log_every": 1,
                  "plots": False, "checkpoint_every": iters},  # fmt: skip
        "run": {"out_dir": str(out), "device": "cpu"},
    }


def trainer(registry, raw: dict) -> Trainer:
    return Trainer.from_config(structure_pipeline(raw, registry=registry), registry, progress=False)


@pytest.fixture(scope="module")
def first_run(registry, tmp_path_factory):
    """Three SGD (momentum) steps with an EMA on shapes (5 classes); the encoder's state before them."""
    out = tmp_path_factory.mktemp("first") / "run"
    t = trainer(registry, pipeline(out))
    before = {k: v.clone() for k, v in t.model.backbone.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in t.model.decoder.state_dict().items()}
    t.fit()
    return t, before, decoder_before, out


def test_encoder_is_bitwise_unchanged_with_no_optimizer_or_ema_state(first_run):
    t, before, decoder_before, out = first_run
    after = t.model.backbone.state_dict()
    assert sorted(after) == sorted(before)
    assert any(k.endswith("running_mean") for k in after) and any(k.endswith("num_batches_tracked") for k in after)
    assert [k for k in before if not torch.equal(before[k], after[k])] == []  # parameters and BN buffers
    saved = safetensors.torch.load_file(str(out / "model.safetensors"))
    assert [k for k in before if not torch.equal(saved[f"backbone.{k}"], before[k])] == []
    # the decoder did train (so the steps were real)
    changed = [k for k, v in t.model.decoder.state_dict().items() if not torch.equal(v, decoder_before[k])]
    assert len(changed) > 0 and any(k.startswith("adapters.") for k in changed)

    encoder_ids = {id(p) for p in t.model.backbone.parameters()}
    in_optimizer = [p for g in t.optimizer.param_groups for p in g["params"]]
    assert not any(id(p) in encoder_ids for p in in_optimizer)
    assert not any(id(p) in encoder_ids for p in t.optimizer.state)
    assert all(not p.requires_grad and p.grad is None for p in t.model.backbone.parameters())
    assert t.ema.module.backbone is t.model.backbone  # one copy of weights that never change
    ckpt = next((out / "checkpoints").iterdir())
    state = safetensors.torch.load_file(str(ckpt / "train_state.safetensors"))
    ema = [k for k in state if k.startswith("ema.")]
    assert ema and not any(k.startswith("ema.backbone.") for k in ema)
    momentum = [k for k in state if k.startswith("optim.")]
    assert len(momentum) == len(in_optimizer) == len(list(t.model.decoder.parameters())) + 2  # + classifier w, b


def test_trainable_count_is_the_decoder_and_adapters_plus_classifier(first_run):
    """Decoder width 4 on test_resnet's taps 32/48/192/96 (strides 4-32): adapters 32*4 + 48*8 + 192*16 + 96*32 plus
    BN 2*(4+8+16+32) = 6,776; one module per stage with one BasicBlock per stream and the head, counted by hand
    (BasicBlock c: 18c^2 + 4c; fusion as BLOCKS.md 000.1 item 5), classifier 4*5 + 5."""
    t = first_run[0]
    block = lambda c: 18 * c * c + 4 * c  # noqa: E731
    stage4 = sum(map(block, (4, 8, 16, 32))) + (  # outputs 4, 8, 16 from 4 streams
        (8 * 4 + 8) + (16 * 4 + 8) + (32 * 4 + 8)                                     # to 4: three conv1x1 + BN
        + (9 * 4 * 8 + 16) + (16 * 8 + 16) + (32 * 8 + 16)                            # to 8
        + (9 * 4 * 4 + 8) + (9 * 4 * 16 + 32) + (9 * 8 * 16 + 32) + (32 * 16 + 32))   # to 16  # fmt: skip
    stage3 = sum(map(block, (4, 8, 16))) + (8 * 4 + 8) + (16 * 4 + 8) + (9 * 4 * 8 + 16) + (16 * 8 + 16)
    stage2 = sum(map(block, (4, 8))) + (8 * 4 + 8)
    decoder = 6_776 + stage4 + stage3 + stage2 + (4 * 4 + 8)
    trainable = sum(p.numel() for p in t.model.parameters() if p.requires_grad)
    assert sum(p.numel() for p in t.model.decoder.parameters()) == decoder
    assert trainable == decoder + 4 * 5 + 5
    assert sum(p.numel() for g in t.optimizer.param_groups for p in g["params"]) == trainable
    assert sum(p.numel() for p in t.model.backbone.parameters()) == 372_688  # all frozen


def test_chain_starts_bitwise_from_the_first_run_with_only_the_classifier_new(registry, first_run, tmp_path):
    """Mapillary -> Cityscapes in small: a second pipeline with 7 classes ([model] num_classes) starts from the first
    run's folder; every tensor but the classifier's is the first run's, bitwise; then it trains."""
    first = safetensors.torch.load_file(str(first_run[3] / "model.safetensors"))
    t = trainer(registry, pipeline(tmp_path / "second", iters=2, num_classes=7, init_from=str(first_run[3])))
    own = t.model.state_dict()
    assert sorted(own) == sorted(first)
    differ = sorted(k for k in own if own[k].shape != first[k].shape or not torch.equal(own[k], first[k]))
    assert differ == ["classifier.bias", "classifier.weight"]
    assert own["classifier.weight"].shape == (7, 4, 1, 1) and first["classifier.weight"].shape == (5, 4, 1, 1)
    assert torch.equal(own["classifier.bias"], torch.zeros(7))  # fresh: mmseg's init (normal 0.01, bias 0)
    t.fit()
    second = safetensors.torch.load_file(str(tmp_path / "second" / "model.safetensors"))
    assert second["classifier.weight"].shape == (7, 4, 1, 1)
    assert all(torch.equal(second[k], first[k]) for k in first if k.startswith("backbone."))  # still frozen


def test_chain_refuses_another_architecture(registry, first_run, tmp_path):
    raw = pipeline(tmp_path / "other", init_from=str(first_run[3]))
    raw["model"]["decoder"]["width"] = 8
    with pytest.raises(ConfigError, match="init_from"):
        trainer(registry, raw)


# -- timm's pretrained weights offline ------------------------------------------------------------------------------

_OFFLINE_SCRIPT = textwrap.dedent("""
    import json, socket, sys, time
    calls, sleeps = [], []
    real_getaddrinfo = socket.getaddrinfo
    def spy(*args, **kwargs):
        calls.append(args[0])
        return real_getaddrinfo(*args, **kwargs)
    socket.getaddrinfo = spy
    time.sleep = sleeps.append  # a retry's back-off, recorded and not slept
    import safetensors.torch, torch
    from segcore import ConfigError, build_model, get_plugin_manager, load_registry
    from segcore.pipeline import resolve_bases, structure_pipeline
    registry = load_registry(get_plugin_manager())

    def build(**backbone):
        raw = {"base": "early_fusion_w18", "model": {"backbone": backbone}, "data": {"dataset": {"name": "shapes"}}}
        cfg = structure_pipeline(resolve_bases(raw, registry=registry), registry=registry)
        try:
            return build_model(cfg.model, registry, num_classes=3)
        except ConfigError as exc:
            return str(exc)

    model = build()  # the preset: pretrained swsl weights
    file = safetensors.torch.load_file(sys.argv[1])
    own = {k.removeprefix("model."): v for k, v in model.backbone.state_dict().items()}
    mismatched = [k for k, v in own.items() if not torch.equal(v, file[k])]
    message = build(model_name="resnet50.fb_ssl_yfcc100m_ft_in1k")  # not in the cache
    print(json.dumps({"compared": len(own), "mismatched": mismatched, "unused": sorted(set(file) - set(own)),
                      "message": message, "dns": calls, "sleeps": sleeps}))
""")


def _fake_hub_cache(cache: Path) -> Path:
    """timm/resnet50.fb_swsl_ig1b_ft_in1k in huggingface_hub's cache layout (refs/main -> snapshots/<sha>/...), holding
    a resnet50 state dict whose every tensor is filled with its own index (not timm's init, so loading is visible)."""
    import timm

    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in timm.create_model("resnet50").state_dict().items()}
    tensors = {k: torch.full(s, 0.001 * (i + 1), dtype=d) if d.is_floating_point else torch.full(s, i, dtype=d)
               for i, (k, (s, d)) in enumerate(shapes.items())}  # fmt: skip
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--timm--resnet50.fb_swsl_ig1b_ft_in1k"
    snapshot = repo / "snapshots" / sha
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    (snapshot / "config.json").write_text(json.dumps({"architecture": "resnet50", "num_classes": 1000}))
    safetensors.torch.save_file(tensors, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


@pytest.mark.slow  # ~10 s: subprocesses on 2 idle AVX2 cores
def test_timm_weights_load_offline_from_the_hub_cache_and_a_missing_one_fails_fast(tmp_path):
    weights = _fake_hub_cache(tmp_path / "hub")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", _OFFLINE_SCRIPT, str(weights)], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["compared"] == 318 and result["mismatched"] == []  # every encoder tensor is the file's
    assert result["unused"] == ["fc.bias", "fc.weight"]  # the classifier, dropped by features_only
    msg = result["message"]
    assert "timm's weights 'timm/resnet50.fb_ssl_yfcc100m_ft_in1k' are not in the Hugging Face cache" in msg
    assert "(HF_HUB_OFFLINE is set)" in msg and "set pretrained = false" in msg
    # fast: no name lookup at all, and no retry (the Hub's retries start with a 1 s sleep after a failed connection)
    assert result["dns"] == [] and result["sleeps"] == [] and "Retrying" not in proc.stderr
