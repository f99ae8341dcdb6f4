"""The core seams, each exercised through a TOML pipeline: upsampling places and declared final resizes, training-only
heads with loss routing and extras, a backbone frozen for the whole run, init_from, configs that round-trip,
constructor checks at registration, timm maps of any layout, and export-safe outputs."""

from __future__ import annotations

import re
import textwrap
import tomllib

import attrs
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segcore import Attention, ConfigError, Decoder, Loss, Registry, RegistryError, Resize, Upsample, hookimpl
from segcore import get_plugin_manager, load_registry
from segcore.config import dump_pipeline, resolve_bases, structure_pipeline
from segcore.engine.criterion import Criterion
from segcore.model.build import build_model, inference_state_dict, init_from, without_training_heads

BACKBONE = """
[model.backbone]
name = "timm"
model_name = "resnet18"
out_indices = [1, 2, 3, 4]
"""
DATA = """
[data.dataset]
name = "shapes"
size = [64, 64]
num_train = 8
num_val = 4

[[loss]]
name = "ce"
"""


# -- a third-party plugin, written here, importing nothing but segcore -------------------------------------------


@attrs.frozen
class CountingConfig:
    pass


class Counting(Attention):
    """Identity that counts its calls and records the shapes it saw (to find the places it was put in)."""

    def __init__(self, cfg: CountingConfig, *, channels: int) -> None:
        super().__init__()
        self.channels, self.seen = channels, []

    def forward(self, x):
        self.seen.append(tuple(x.shape))
        return x


@attrs.frozen
class BicubicHeadConfig:
    channels: int = 8


class BicubicHead(Decoder):
    """Two levels, the coarse one brought to the fine one's size through an upsampling place; logits reach the
    input size bicubically with aligned corners."""

    attention_slots = ("upsample",)
    final_resize = Resize("bicubic", align_corners=True)

    def __init__(self, cfg: BicubicHeadConfig, *, in_features, attention) -> None:
        super().__init__()
        self.fine = nn.Conv2d(in_features[0].channels, cfg.channels, 1)
        self.coarse = nn.Conv2d(in_features[-1].channels, cfg.channels, 1)
        self.up = attention.upsample("upsample", cfg.channels, resize=Resize("bilinear"))
        self.out_channels, self.stride = cfg.channels, in_features[0].stride

    def forward(self, features):
        fine = self.fine(features[0])
        return fine + self.up(self.coarse(features[-1]), fine.shape[-2:])


@attrs.frozen
class EmbedConfig:
    dim: int = 6


class Embed(Decoder):
    """A training-only projection head: 1x1 conv, L2-normalised over channels."""

    def __init__(self, cfg: EmbedConfig, *, in_features, attention) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_features[0].channels, cfg.dim, 1)
        self.out_channels, self.stride = cfg.dim, in_features[0].stride

    def forward(self, features):
        return F.normalize(self.proj(features[0]), dim=1)


@attrs.frozen
class SpreadConfig:
    pass


class Spread(Loss):
    """A loss that needs the extra tensor "embedding": minus the mean pairwise distance of embeddings."""

    extras = ("embedding",)

    def __init__(self, cfg: SpreadConfig, *, num_classes: int, ignore_index: int) -> None:
        super().__init__()

    def forward(self, logits, target, output):
        e = output.extras["embedding"].flatten(2)
        return -(e[:, :, :, None] - e[:, :, None, :]).pow(2).sum(1).mean()


class ThirdParty:
    @hookimpl
    def segcore_register(self, registry: Registry) -> None:
        registry.add(Counting, name="counting", config=CountingConfig)
        registry.add(BicubicHead, name="bicubic_head", config=BicubicHeadConfig)
        registry.add(Embed, name="embed_test", config=EmbedConfig)
        registry.add(Spread, name="spread", config=SpreadConfig)


@pytest.fixture(scope="module")
def reg() -> Registry:
    pm = get_plugin_manager(autoload=False)  # core's built-ins and this module's plugin, nothing installed
    pm.register(ThirdParty(), name="third_party")
    registry = load_registry(pm)
    assert not registry.problems, registry.problems
    return registry


def pipeline(reg: Registry, text: str):
    return structure_pipeline(tomllib.loads(textwrap.dedent(text)), registry=reg)


# -- upsampling places and final resize -------------------------------------------------------------------------


def test_upsampling_place_and_final_logits_place_are_filled_from_toml(reg):
    cfg = pipeline(reg, BACKBONE + """
    [model.decoder]
    name = "bicubic_head"
    [model.decoder.attention.upsample]
    name = "counting"
    [model.attention.final_upsample]
    name = "counting"
    """ + DATA)
    model = build_model(cfg.model, reg, num_classes=3).eval()
    places = [m for m in model.modules() if isinstance(m, Counting)]
    assert [p.channels for p in places] == [8, 3]  # the decoder's place, then the logits' (class count)
    out = model(torch.rand(1, 3, 97, 131))
    assert out.logits.shape == (1, 3, 97, 131)
    # the decoder's place saw the coarse map brought exactly to the stride-4 map (ceil 97/4 = 25, 131/4 -> 33);
    # the logits place saw them at the input size
    assert places[0].seen == [(1, 8, 25, 33)] and places[1].seen == [(1, 3, 97, 131)]
    assert isinstance(model.final_upsample, Upsample)


def test_decoder_declared_final_resize_is_what_the_model_uses(reg):
    cfg = pipeline(reg, BACKBONE + '[model.decoder]\nname = "bicubic_head"\n' + DATA)
    model = build_model(cfg.model, reg, num_classes=3).eval()
    image = torch.rand(1, 3, 97, 131)
    x = (image - model.mean) / model.std
    small = model.classifier(model.decoder(model.backbone(x)))
    expected = F.interpolate(small, size=(97, 131), mode="bicubic", align_corners=True)
    torch.testing.assert_close(model(image).logits, expected)
    assert not torch.allclose(expected, F.interpolate(small, size=(97, 131), mode="bilinear", align_corners=False))


def test_unknown_model_slot_is_a_config_error(reg):
    with pytest.raises(ConfigError, match=r"\[model.attention\] has no slot 'final_upsamle' \(did you mean 'final_upsample'\?\)"):
        pipeline(reg, BACKBONE + '[model.decoder]\nname = "bicubic_head"\n[model.attention.final_upsamle]\nname = "counting"\n' + DATA)


# -- training-only heads, loss routing, extras -------------------------------------------------------------------

HEADS = BACKBONE + """
[model.decoder]
name = "bicubic_head"
[model.aux.fcn]
decoder = { name = "fcn", channels = 8 }
in_index = [2]
weight = 0.25
[model.aux.embedding]
source = "decoder"
output = "extra"
decoder = { name = "embed_test", dim = 6 }
[data.dataset]
name = "shapes"
[[loss]]
name = "ce"
heads = ["main"]
[[loss]]
name = "ce"
weight = 2.0
heads = ["fcn"]
[[loss]]
name = "spread"
heads = ["main"]
"""


def test_training_heads_reach_losses_as_routed_and_leave_no_trace_in_inference(reg):
    cfg = pipeline(reg, HEADS)
    model = build_model(cfg.model, reg, num_classes=3).train()
    out = model(torch.rand(2, 3, 97, 131))
    assert out.aux["fcn"].shape == (2, 3, 97, 131)
    assert out.extras["embedding"].shape == (2, 6, 25, 33)  # the decoder's stride-4 map, as the head made it
    norms = out.extras["embedding"].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))

    crit = Criterion(cfg.loss, cfg.model.aux, reg, num_classes=3, ignore_index=255)
    target = torch.randint(0, 3, (2, 97, 131))
    total, terms = crit(out, target)
    assert set(terms) == {"loss.ce", "loss.aux.fcn.ce", "loss.spread"}  # each loss only on its heads
    expected = terms["loss.ce"] + 0.25 * 2.0 * terms["loss.aux.fcn.ce"] + terms["loss.spread"]
    torch.testing.assert_close(total.detach(), expected)

    model.eval()
    eval_out = model(torch.rand(1, 3, 64, 64))
    assert eval_out.aux == {} and eval_out.extras == {}
    assert not any(k.startswith("aux.") for k in inference_state_dict(model))
    assert any(k.startswith("aux.embedding.") for k in model.state_dict())
    assert sum(p.numel() for p in without_training_heads(model).parameters()) < sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda t: t.replace('heads = ["fcn"]', 'heads = ["fnc"]'), "loss[1] ('ce').heads: 'fnc' is not a logits head; logits heads: main, fcn"),
        (lambda t: t.replace("[model.aux.embedding]", "[model.aux.emb]"),
         "loss[2] ('spread') needs the extra tensor 'embedding' but no [model.aux.embedding] head"),
        (lambda t: t.replace("[model.aux.embedding]", "[model.aux.emb]") + 'extras = { embedding = "emb" }\n', None),
    ],
)
def test_loss_routing_is_checked_when_the_pipeline_is_built(reg, edit, fragment):
    cfg = pipeline(reg, edit(HEADS))
    if fragment is None:  # the mapping names the head that makes it
        Criterion(cfg.loss, cfg.model.aux, reg, num_classes=3, ignore_index=255)
        return
    with pytest.raises(ConfigError) as err:
        Criterion(cfg.loss, cfg.model.aux, reg, num_classes=3, ignore_index=255)
    assert fragment in str(err.value)


def test_aux_weight_has_one_default(reg):
    from segcore.config.schema import AUX_WEIGHT

    cfg = pipeline(reg, HEADS.replace("weight = 0.25\n", ""))
    model = build_model(cfg.model, reg, num_classes=3)
    crit = Criterion(cfg.loss, cfg.model.aux, reg, num_classes=3, ignore_index=255)
    assert model.aux["fcn"].weight == crit.head_weights["fcn"] == AUX_WEIGHT == 0.4


# -- frozen backbone, init_from, through the trainer -------------------------------------------------------------


def _train(reg, text, out, **kw):
    from segcore.engine.trainer import Trainer

    cfg = pipeline(reg, text + f'\n[run]\nout_dir = "{out}"\n')
    trainer = Trainer.from_config(cfg, reg, progress=False, **kw)
    return trainer, trainer.fit()


SMALL = """
[model.backbone]
name = "timm"
model_name = "test_efficientnet"
out_indices = [1, 2, 3, 4]
{frozen}
[model.decoder]
name = "fcn"
channels = 8
[data.dataset]
name = "shapes"
size = [48, 48]
num_train = 8
num_val = 2
[data]
batch_size = 4
[[loss]]
name = "ce"
[train]
iters = 3
optimizer = "adamw"
lr = 0.01
ema_decay = 0.9
freeze_backbone = 1
[model]
num_classes = {classes}
{extra}
"""


def test_frozen_backbone_stays_bitwise_and_out_of_optimizer_and_ema(reg, tmp_path):
    from segcore.engine.trainer import Trainer

    cfg = pipeline(reg, SMALL.format(frozen="frozen = true", classes=5, extra="") + f'\n[run]\nout_dir = "{tmp_path}"\n')
    trainer = Trainer.from_config(cfg, reg, progress=False)
    before = {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}
    trainer.fit()  # 3 steps, past the freeze_backbone phase: a frozen = true backbone must not come back
    after = trainer.model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running statistics
    assert not any(p.requires_grad for p in trainer.model.backbone.parameters())
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in trainer.model.backbone.parameters()}
    assert all(id(p) not in trainer.optimizer.state for p in trainer.model.backbone.parameters())
    assert trainer.ema.module.backbone is trainer.model.backbone  # one copy
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for n, p in trainer.model.named_parameters() if not n.startswith("backbone."))
    from segcore.model.weights import read_weights

    stored = read_weights(sorted((tmp_path / "checkpoints").iterdir())[-1] / "train_state.safetensors")
    assert not any(k.startswith("ema.backbone.") for k in stored) and any(k.startswith("ema.decoder.") for k in stored)


def test_init_from_a_run_with_another_class_count(reg, tmp_path):
    _train(reg, SMALL.format(frozen="", classes=5, extra=""), tmp_path / "a")
    from segcore.engine.trainer import Trainer

    cfg = pipeline(reg, SMALL.format(frozen="", classes=7, extra=f'init_from = "{tmp_path / "a"}"')
                   + f'[run]\nout_dir = "{tmp_path / "b"}"\n')  # fmt: skip
    second = Trainer.from_config(cfg, reg, progress=False)
    from segcore.model.weights import read_weights

    theirs = read_weights(tmp_path / "a" / "model.safetensors")  # the first run's inference weights (its EMA)
    assert len(theirs) == len(second.model.state_dict())
    for k, v in second.model.state_dict().items():
        if k.startswith("classifier."):
            assert v.shape[0] == 7
        else:
            assert torch.equal(v.cpu(), theirs[k].cpu()), k


def test_init_from_another_architecture_lists_the_tensors(reg, tmp_path):
    _train(reg, SMALL.format(frozen="", classes=5, extra=""), tmp_path / "a")
    cfg = pipeline(reg, SMALL.format(frozen="", classes=5, extra="").replace("channels = 8", "channels = 16"))
    model = build_model(cfg.model, reg, num_classes=5)
    with pytest.raises(ConfigError) as err:
        init_from(model, str(tmp_path / "a"))
    assert "decoder.convs.0.0.weight is (8, 64, 3, 3) in the file, (16, 64, 3, 3) in the model" in str(err.value)
    with pytest.raises(ConfigError, match="neither a file nor a folder"):
        init_from(model, str(tmp_path / "nowhere"))


# -- round trip, presets --------------------------------------------------------------------------------------------


def test_resolved_pipelines_round_trip_through_toml(reg, tmp_path):
    cfg = pipeline(reg, HEADS + '[model.attention.final_upsample]\nname = "counting"\n[train]\nepochs = 2\n')
    text = dump_pipeline(cfg)
    assert structure_pipeline(tomllib.loads(text), registry=reg) == cfg
    assert "base" not in tomllib.loads(text)


def test_presets_may_have_a_base_and_are_checked_at_registration():
    reg = Registry()
    reg.add_preset("small", {"model": {"decoder": {"name": "fcn", "channels": 8}}})
    reg.add_preset("smaller", {"base": "small", "model": {"decoder": {"channels": 4}}})
    assert resolve_bases({"base": "smaller"}, registry=reg)["model"]["decoder"] == {"name": "fcn", "channels": 4}
    reg.add_preset("bad", {"modle": {}})  # sections are checked where the schema is known: when a pipeline uses it
    with pytest.raises(ConfigError, match="preset 'bad': unknown section 'modle' \\(did you mean 'model'\\?\\)"):
        resolve_bases({"base": "bad"}, registry=reg)
    with pytest.raises(RegistryError, match="model.decoder.channels is a object; presets hold only TOML values"):
        reg.add_preset("worse", {"model": {"decoder": {"channels": object()}}})


# -- registration checks ------------------------------------------------------------------------------------------


def test_a_constructor_that_cannot_take_the_wiring_is_refused_at_registration():
    class NoWiring(Decoder):
        def __init__(self, cfg) -> None:
            super().__init__()

    with pytest.raises(RegistryError, match=r"NoWiring\(cfg\) cannot be called as NoWiring\(cfg, \*, in_features, attention\)"):
        Registry().add(NoWiring, name="no_wiring", config=BicubicHeadConfig)


def test_a_plugin_bug_while_building_keeps_its_traceback(reg):
    class Buggy(Decoder):
        def __init__(self, cfg, *, in_features, attention) -> None:
            super().__init__()
            len(None)  # the plugin's own TypeError

    r = Registry()
    r.add(Buggy, name="buggy", config=BicubicHeadConfig)
    for e in reg.entries():
        if e.name == "timm":
            r._entries[e.stage]["timm"] = e
    cfg = attrs.evolve(pipeline(reg, BACKBONE + '[model.decoder]\nname = "bicubic_head"\n' + DATA).model)
    cfg = attrs.evolve(cfg, decoder=attrs.evolve(cfg.decoder, name="buggy"))
    with pytest.raises(TypeError, match="has no len"):
        build_model(cfg, r, num_classes=3)


# -- timm maps of any layout --------------------------------------------------------------------------------------


def test_timm_channels_last_maps_and_padding_only_where_needed(reg):
    import timm

    swin = pipeline(reg, '[model.backbone]\nname = "timm"\nmodel_name = "swin_tiny_patch4_window7_224"\n'
                    '[model.decoder]\nname = "bicubic_head"\n' + DATA).model  # fmt: skip
    backbone = build_model(swin, reg, num_classes=3).backbone
    maps = backbone(torch.rand(1, 3, 97, 131))
    assert [tuple(m.shape) for m in maps] == [(1, 96, 25, 33), (1, 192, 13, 17), (1, 384, 7, 9), (1, 768, 4, 5)]
    resnet = build_model(pipeline(reg, BACKBONE + '[model.decoder]\nname = "bicubic_head"\n' + DATA).model, reg, num_classes=3)
    raw = timm.create_model("resnet18", features_only=True, out_indices=(1, 2, 3, 4))
    raw.load_state_dict(resnet.backbone.model.state_dict())
    x = torch.rand(1, 3, 97, 131)
    for mine, theirs in zip(resnet.backbone(x), raw(x)):  # no padding: the borders are timm's own
        torch.testing.assert_close(mine, theirs)


# -- export-safe outputs --------------------------------------------------------------------------------------------


def _small_model(reg):
    # timm's ResNets pool with ceil_mode / avg-down shortcuts, whose sizes torch.export cannot prove for every
    # dynamic size (a guard of timm's, not ours); ConvNeXt's strided convolutions export for any size >= 64
    backbone = BACKBONE.replace("resnet18", "test_convnext").replace("[1, 2, 3, 4]", "[0, 1, 2, 3]")
    cfg = pipeline(reg, backbone + '[model.decoder]\nname = "bicubic_head"\n' + DATA)
    return build_model(cfg.model, reg, num_classes=3).eval()


@pytest.mark.slow  # ~6 s: torch.export on 2 idle AVX2 cores
def test_torch_export_with_dynamic_size(reg):
    from torch.export import Dim, export

    model = _small_model(reg)
    x = torch.rand(1, 3, 97, 131)
    dims = {"image": {2: Dim("h", min=64, max=1024), 3: Dim("w", min=64, max=1024)}}
    program = export(model, (x,), dynamic_shapes=dims)
    for size in ((97, 131), (128, 96)):
        y = torch.rand(1, 3, *size)
        out = program.module()(y)
        torch.testing.assert_close(out.logits, model(y).logits)


@pytest.mark.slow  # ~18 s: torch.compile on 2 idle AVX2 cores
def test_compile_fullgraph(reg):
    model = _small_model(reg)
    x = torch.rand(1, 3, 64, 80)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x).logits, model(x).logits)


# -- data and evaluation mechanisms recipes need -------------------------------------------------------------------


def test_random_split_draws_disjoint_seeded_train_and_val_from_one_split(reg):
    from segcore.data.datasets import build_split

    text = BACKBONE + '[model.decoder]\nname = "bicubic_head"\n' + DATA.replace("num_train = 8", "num_train = 20")
    table = '\n[data.random_split]\nsource = "train"\nval_fraction = 0.1\nseed = {seed}\n'
    draw = {}
    for seed in (0, 1):
        cfg = pipeline(reg, text + table.format(seed=seed))
        train, val = build_split(cfg.data, reg, "train"), build_split(cfg.data, reg, "val")
        assert (len(train), len(val)) == (18, 2)
        assert not set(train.indices) & set(val.indices) and set(train.indices) | set(val.indices) == set(range(20))
        assert train.meta == val.meta
        draw[seed] = val.indices
        again = build_split(pipeline(reg, text + table.format(seed=seed)).data, reg, "val")
        assert again.indices == val.indices and torch.equal(again[0]["mask"], val[0]["mask"])
    assert draw[0] != draw[1]


def test_eval_resize_infers_at_the_fixed_size_and_scores_at_the_image_size():
    from segcore.config.schema import EvalConfig
    from segcore.engine.inference import infer
    from segcore.contracts.stages import ModelOutput

    seen = []

    def model(x):
        seen.append(tuple(x.shape[-2:]))
        return ModelOutput(x[:, :2] * 10, {}, {})

    scores = infer(model, torch.rand(1, 3, 97, 131), EvalConfig(resize=(64, 128)))
    assert seen == [(64, 128)] and scores.shape == (1, 2, 97, 131)


def test_pretrained_timm_weights_not_in_the_cache_fail_fast_and_clearly(tmp_path, monkeypatch, segcore_network):
    from urllib.parse import urlparse

    from huggingface_hub import constants

    from segcore import TimmBackbone, TimmBackboneConfig

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ConfigError, match=r"timm's weights 'timm/resnet18\.a1_in1k' are not in the Hugging Face cache"):
        TimmBackbone(TimmBackboneConfig(model_name="resnet18", pretrained=True))
    assert segcore_network.attempts == [("connect", (urlparse(constants.ENDPOINT).hostname, 443))]  # one probe
    assert segcore_network.sleeps == []  # no retries


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda t: t + '[data]\nval_split = "vall"\n', "ShapesDataset has no split 'vall'; its splits: train, val"),
        (lambda t: t.replace('heads = ["fcn"]', 'heads = ["fnc"]'), "'fnc' is not a logits head"),
    ],
)
def test_check_catches_what_run_would_trip_on_before_its_first_step(reg, edit, fragment):
    from segcore.model.check import check_pipeline

    from segcore import SegcoreError

    with pytest.raises(SegcoreError, match=re.escape(fragment)):  # a user error: exit 2 from the CLI
        check_pipeline(pipeline(reg, edit(HEADS)), reg, input_size=(64, 64))


def test_an_attention_that_changes_the_shape_is_named_by_its_slot_and_plugin(reg):
    from segcore.model.check import check_pipeline

    class Halve(Attention):
        def __init__(self, cfg, *, channels):
            super().__init__()

        def forward(self, x):
            return x[:, : x.shape[1] // 2]

    from segcore import ContractError
    from segcore.contracts.registry import PluginInfo

    r = Registry()
    for e in reg.entries():
        r._entries[e.stage][e.name] = e
    with r.registering(PluginInfo("halver", "segcore-plugin-halver", "0.1")):
        r.add(Halve, name="halve", config=CountingConfig)
    cfg = pipeline(r, BACKBONE + '[model.decoder]\nname = "bicubic_head"\n[model.decoder.attention.upsample]\nname = "halve"\n' + DATA)
    with pytest.raises(ContractError, match=re.escape(
            "[model.decoder.attention.upsample] attention 'halve' (plugin \"halver\" from segcore-plugin-halver 0.1) "
            "changed the shape (1, 8, 16, 16) -> (1, 4, 16, 16)")):  # fmt: skip
        check_pipeline(cfg, r, input_size=(64, 64))


def test_a_warning_on_the_command_line_is_one_line_and_pytest_still_records_it(monkeypatch):
    import argparse
    import importlib
    import subprocess
    import sys
    import warnings

    script = textwrap.dedent("""
        import argparse, importlib, warnings
        cli = importlib.import_module("segcore.cli.main")
        def command(args):
            warnings.warn("the zoo entry is used, not ./x", UserWarning, stacklevel=2)
            warnings.warn("a kernel is slow", RuntimeWarning, stacklevel=2)
            return 0
        parser = argparse.ArgumentParser()
        parser.set_defaults(func=command)
        cli.make_parser = lambda: parser
        raise SystemExit(cli.main([]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "warning: the zoo entry is used, not ./x\nwarning (RuntimeWarning): a kernel is slow\n"

    cli = importlib.import_module("segcore.cli.main")
    parser = argparse.ArgumentParser()
    parser.set_defaults(func=lambda args: warnings.warn("the zoo entry is used", UserWarning, stacklevel=2) or 0)
    monkeypatch.setattr(cli, "make_parser", lambda: parser)
    before = warnings.formatwarning
    with pytest.warns(UserWarning, match="zoo entry"):  # a test recording warnings still sees them
        assert cli.main([]) == 0
    assert warnings.formatwarning is before  # and the caller's printing of warnings is left as it was
