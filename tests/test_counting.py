"""Counting conventions (segcore.counting, `segcore check --convention`): every rule on single modules with
hand-computed counts, then calibration against published numbers (BLOCKS.md 0.3, 000.3, 000.11)."""

from __future__ import annotations

import json

import attrs
import pytest
import torch
from torch import nn

from segcore import ConfigError, load_pipeline
from segcore.model.check import check_pipeline
from segcore.cli.main import main
from segcore.model.counting import CONVENTIONS, count


def _counts(make, *shape: int) -> dict[str, tuple[int, int]]:
    """{convention: (params, MACs)} of ``make()`` run once on zeros of *shape*, on the meta device."""
    with torch.device("meta"):
        module, x = make(), torch.zeros(*shape)
        return {name: attrs.astuple(count(module, x, convention=name)) for name in CONVENTIONS}


class MyConv(nn.Conv2d):
    """A subclass: both tools match exact types, so neither counts it."""


class LayerScale(nn.Module):
    """A custom module with an nn.Parameter: thop skips its parameters (unregistered type), mmcv and true count them."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class SelfMatmul(nn.Module):
    """(B, N, C) -> (B, N, N) = x @ x^T: a functional matmul (true counts it; thop and mmcv never see it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ x.transpose(-1, -2)


class TwiceAndUnused(nn.Module):
    """One conv run twice, one never run: thop adds the ops of both calls, the parameters once, and skips the
    parameters of the conv that never ran."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1, bias=False)
        self.unused = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv(x))


class Declared(nn.Module):
    """A plugin's module declaring its own thop2x rule: 1000 MACs per call; the rule covers its conv child too."""

    counting_rules = {"thop2x": lambda module, inputs, output: 1000}

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 4, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


# Input (1, 8, 10, 12) unless stated: 960 elements, 120 positions. A 3x3 conv 8->4 (padding 1) has 480 outputs,
# each 8 x 9 = 72 MACs: 34,560 MACs; 288 weights (+4 bias). thop2x doubles thop's MACs.
CASES = {
    # true: FlopCounterMode counts no bias adds; thop counts none either; mmcv adds 1 per output element (480)
    "conv": (lambda: nn.Conv2d(8, 4, 3, padding=1, bias=False), (1, 8, 10, 12),
             {"true": (288, 34560), "thop2x": (288, 69120), "mmcv": (288, 34560)}),
    "conv+bias": (lambda: nn.Conv2d(8, 4, 3, padding=1), (1, 8, 10, 12),
                  {"true": (292, 34560), "thop2x": (292, 69120), "mmcv": (292, 35040)}),
    # 2 groups: each output sees 4 input channels x 9 = 36: 480 x 36 = 17,280; 4 x 4 x 9 = 144 weights
    "conv groups=2": (lambda: nn.Conv2d(8, 4, 3, padding=1, groups=2, bias=False), (1, 8, 10, 12),
                      {"true": (144, 17280), "thop2x": (144, 34560), "mmcv": (144, 17280)}),
    # input (1, 8, 5, 6) -> (1, 4, 10, 12). thop: 480 outputs x 8 in x 4 taps = 15,360. mmcv: 30 input positions x
    # 4 taps x 8 in x 4 out = 3,840, bias 4 x 10 x 10 = 400 (mmcv multiplies the output height by itself). true: 3,840
    "conv transpose": (lambda: nn.ConvTranspose2d(8, 4, 2, stride=2), (1, 8, 5, 6),
                       {"true": (132, 3840), "thop2x": (132, 30720), "mmcv": (132, 4240)}),
    "conv subclass": (lambda: MyConv(8, 4, 3, padding=1, bias=False), (1, 8, 10, 12),
                      {"true": (288, 34560), "thop2x": (0, 0), "mmcv": (288, 0)}),
    # thop: 2 per element, x2 with affine = 4 x 960 = 3,840; mmcv: 1 per element, x2 with affine = 1,920
    "batchnorm": (lambda: nn.BatchNorm2d(8), (1, 8, 10, 12),
                  {"true": (16, 0), "thop2x": (16, 7680), "mmcv": (16, 1920)}),
    "batchnorm no affine": (lambda: nn.BatchNorm2d(8, affine=False), (1, 8, 10, 12),
                            {"true": (0, 0), "thop2x": (0, 3840), "mmcv": (0, 960)}),
    # thop has no GroupNorm rule: neither its ops nor its parameters
    "groupnorm": (lambda: nn.GroupNorm(2, 8), (1, 8, 10, 12),
                  {"true": (16, 0), "thop2x": (0, 0), "mmcv": (16, 1920)}),
    # (1, 5, 8): 40 elements; elementwise_affine doubles both
    "layernorm": (lambda: nn.LayerNorm(8), (1, 5, 8), {"true": (16, 0), "thop2x": (16, 320), "mmcv": (16, 80)}),
    "relu": (lambda: nn.ReLU(), (1, 8, 10, 12), {"true": (0, 0), "thop2x": (0, 0), "mmcv": (0, 960)}),
    "prelu": (lambda: nn.PReLU(), (1, 8, 10, 12), {"true": (1, 0), "thop2x": (1, 1920), "mmcv": (1, 960)}),
    # thop: per row of 8 features, 8 exp + 7 add + 8 div = 23; 120 rows = 2,760; mmcv has no softmax rule
    "softmax": (lambda: nn.Softmax(dim=1), (1, 8, 10, 12), {"true": (0, 0), "thop2x": (0, 5520), "mmcv": (0, 0)}),
    # pools: thop max 0, avg 1 per output (240); mmcv 1 per input element (960)
    "maxpool": (lambda: nn.MaxPool2d(2), (1, 8, 10, 12), {"true": (0, 0), "thop2x": (0, 0), "mmcv": (0, 960)}),
    "avgpool": (lambda: nn.AvgPool2d(2), (1, 8, 10, 12), {"true": (0, 0), "thop2x": (0, 480), "mmcv": (0, 960)}),
    # thop: (window 10 x 12 = 120, + 1 division) x 8 outputs = 968
    "adaptive avgpool": (lambda: nn.AdaptiveAvgPool2d(1), (1, 8, 10, 12),
                         {"true": (0, 0), "thop2x": (0, 1936), "mmcv": (0, 960)}),
    # upsampling (1, 8, 5, 6) -> 960 outputs: thop nearest 1, bilinear 11, bicubic 259 per output; mmcv 1 per output
    "upsample nearest": (lambda: nn.Upsample(scale_factor=2), (1, 8, 5, 6),
                         {"true": (0, 0), "thop2x": (0, 1920), "mmcv": (0, 960)}),
    "upsample bilinear": (lambda: nn.Upsample(scale_factor=2, mode="bilinear"), (1, 8, 5, 6),
                          {"true": (0, 0), "thop2x": (0, 21120), "mmcv": (0, 960)}),
    "upsample bicubic": (lambda: nn.Upsample(scale_factor=2, mode="bicubic"), (1, 8, 5, 6),
                         {"true": (0, 0), "thop2x": (0, 497280), "mmcv": (0, 960)}),
    # (1, 8, 6) -> (1, 8, 12): 96 outputs x 5
    "upsample linear": (lambda: nn.Upsample(scale_factor=2, mode="linear"), (1, 8, 6),
                        {"true": (0, 0), "thop2x": (0, 960), "mmcv": (0, 96)}),
    # thop has no trilinear rule (0, with a warning in thop); (1, 2, 3, 4, 5) -> 960 outputs
    "upsample trilinear": (lambda: nn.Upsample(scale_factor=2, mode="trilinear"), (1, 2, 3, 4, 5),
                           {"true": (0, 0), "thop2x": (0, 0), "mmcv": (0, 960)}),
    # a subclass of nn.Upsample: thop lists it, mmcv (exact types) does not
    "UpsamplingBilinear2d": (lambda: nn.UpsamplingBilinear2d(scale_factor=2), (1, 8, 5, 6),
                             {"true": (0, 0), "thop2x": (0, 21120), "mmcv": (0, 0)}),
    # (1, 3, 8) -> (1, 3, 4): 12 outputs x 8 = 96; 36 parameters
    "linear": (lambda: nn.Linear(8, 4), (1, 3, 8), {"true": (36, 96), "thop2x": (36, 192), "mmcv": (36, 96)}),
    # (1, 4, 6) @ (1, 6, 4): 16 outputs x 6 = 96
    "matmul": (SelfMatmul, (1, 4, 6), {"true": (0, 96), "thop2x": (0, 0), "mmcv": (0, 0)}),
    "custom parameter": (lambda: LayerScale(8), (1, 8, 10, 12), {"true": (8, 0), "thop2x": (0, 0), "mmcv": (8, 0)}),
    # conv 1x1 8->8 on 120 positions: 7,680 MACs per call, 64 weights; the unused conv has 72 parameters
    "run twice, one unused": (TwiceAndUnused, (1, 8, 10, 12),
                              {"true": (136, 15360), "thop2x": (64, 30720), "mmcv": (136, 15360)}),
    "declared rule": (Declared, (1, 8, 10, 12), {"true": (288, 34560), "thop2x": (288, 2000), "mmcv": (288, 34560)}),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rule_on_one_module(case):
    make, shape, expected = CASES[case]
    assert _counts(make, *shape) == expected


def test_ccsf_720_at_quarter_of_512x1024_is_0_520m_params_and_34_16g_thop2x():
    """BLOCKS 000.3: CCSF(720->720) on the fused 1/4 map of a 512x1024 input adds +0.520 M params and +34.16 G
    (2xMAC, thop). conv1x1 no bias: 720 x 720 weights, 720^2 MACs per position; BN(eps 1e-3, m 0.03): 2 x 720
    parameters, 4 ops per element (thop); ReLU: 0. 128 x 256 = 32,768 positions."""
    with torch.device("meta"):
        bn = nn.BatchNorm2d(720, eps=1e-3, momentum=0.03)
        ccsf = nn.Sequential(nn.Conv2d(720, 720, 1, bias=False), bn, nn.ReLU())
        got = count(ccsf, torch.zeros(1, 720, 128, 256), convention="thop2x")
    assert got.params == 720 * 720 + 2 * 720 == 519_840
    assert got.macs == 2 * (720 * 720 * 32_768 + 4 * 720 * 32_768) == 34_162_606_080
    assert (round(got.params / 1e6, 3), round(got.macs / 1e9, 2)) == (0.520, 34.16)


AUX = '\n[model.aux.fcn]\nin_index = [2]\n[model.aux.fcn.decoder]\nname = "fcn"\nchannels = 32\n'


def test_training_heads_have_own_rows_and_mmcv_counts_only_their_params(registry, write_pipeline, base_pipeline):
    """hrnet_w18_small level 2 is 64 channels at stride 16 (4x4 on the 64x64 input). The fcn head: conv3x3 64->32
    no bias (18,432 weights, 16 x 32 x 576 = 294,912 MACs) + BN(32) (64 params; thop 4 x 512 ops) + ReLU, then the
    1x1 classifier 32->5 with bias (165 params, 16 x 5 x 32 = 2,560 MACs). mmseg's get_flops never runs it."""
    cfg = load_pipeline(write_pipeline(base_pipeline + AUX), registry=registry)
    aux = {c: check_pipeline(cfg, registry, convention=c)[-1] for c in CONVENTIONS}
    assert {c: r.path for c, r in aux.items()} == dict.fromkeys(CONVENTIONS, "model.aux.fcn")
    assert {c: (r.params, r.macs) for c, r in aux.items()} == {
        "true": (18_661, 297_472), "thop2x": (18_661, 2 * (297_472 + 2_048)), "mmcv": (18_661, 0),
    }  # fmt: skip


def test_unknown_convention_is_a_config_error(registry, write_pipeline, base_pipeline):
    cfg = load_pipeline(write_pipeline(base_pipeline), registry=registry)
    message = r"unknown counting convention 'thop' \(did you mean 'thop2x'\?\); choose one of true, thop2x, mmcv"
    with pytest.raises(ConfigError, match=message):
        check_pipeline(cfg, registry, convention="thop")


def test_cli_json_has_rows_and_totals_that_add_up(write_pipeline, base_pipeline, capsys):
    path = write_pipeline(base_pipeline + AUX)
    assert main(["check", str(path), "--convention", "thop2x", "--json", "--input-size", "96x128"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["convention"]["name"] == "thop2x" and doc["convention"]["unit"] == "2xMAC"
    assert doc["input_size"] == [96, 128]
    rows = doc["rows"]
    assert [r["path"] for r in rows] == ["model.backbone", "model.decoder", "model.classifier", "model.aux.fcn"]
    assert [r["training_only"] for r in rows] == [False, False, False, True]
    for key in ("params", "macs"):
        assert doc["totals"]["total"][key] == sum(r[key] for r in rows)
        assert doc["totals"]["inference"][key] == sum(r[key] for r in rows[:3])
    assert rows[3]["params"] == 18_661 and doc["totals"]["inference"]["params"] < doc["totals"]["total"]["params"]


@pytest.mark.parametrize(("convention", "column"), [("true", "GMACs"), ("thop2x", "GFLOPs (2xMAC)"), ("mmcv", "GMACs")])
def test_cli_table_names_its_convention(write_pipeline, base_pipeline, capsys, convention, column):
    path = write_pipeline(base_pipeline)
    assert main(["check", str(path), "--convention", convention]) == 0
    title, head, *_ = capsys.readouterr().out.splitlines()
    assert title.startswith(f"input 1x3x64x64; convention {convention}: {CONVENTIONS[convention].summary}")
    assert head.split()[-len(column.split()):] == column.split()
