"""The inference fast path (segcore.fastpath): BatchNorm folding, the banded bicubic resize, bf16, one compile for
any number of sizes, int8, the per-model cache, and segcore run / segcore.predict using it by default."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import segcore
from segcore.config import EvalConfig, resolve_bases, structure_pipeline
from segcore.inference.fast import (
    FastModel, MatmulResize, cached_fast_model, cubic_matrix, fold_batchnorm, optimize_for_inference,
)  # fmt: skip
from segcore.model.build import build_model
from segcore.contracts.stages import ModelOutput

# core's built-ins alone: timm's test_resnet and the FCN head on its stride-4 level (HRNet_L, with bicubic upsampling
# places, is tests/integration/test_fastpath_hrnet_l.py's)
TINY = {"model": {"backbone": {"name": "timm", "model_name": "test_resnet"},
                  "decoder": {"name": "fcn", "channels": 16, "in_index": 1}},
        "data": {"dataset": {"name": "shapes", "size": [64, 64], "num_train": 64, "num_val": 4}},
        "loss": [{"name": "ce"}]}  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """Small ops on 2 threads of a machine shared with other jobs wait on each other (OpenMP barriers): one thread
    runs these tiny models 10-100x faster there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(registry, num_classes: int = 5, **model):
    raw = copy.deepcopy(TINY)
    raw["model"].update(model)
    cfg = structure_pipeline(resolve_bases(raw, registry=registry), registry=registry)
    torch.manual_seed(0)
    return build_model(cfg.model, registry, num_classes=num_classes)


def randomize_bn(model: nn.Module) -> None:
    """Running statistics and affine parameters far from the identity, so that folding them changes the weights."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_conv_bn_pair_folds_to_the_closed_form():
    conv, bn = nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4, eps=1e-3)
    model = nn.Sequential(conv, bn).eval()
    randomize_bn(model)
    w, b = conv.weight.detach().clone(), conv.bias.detach().clone()
    x = torch.randn(2, 3, 9, 11)
    with torch.no_grad():
        before = model(x)
    assert fold_batchnorm(model, torch.randn(1, 3, 8, 8)) == 1
    assert isinstance(model[1], nn.Identity)
    scale = bn.weight / torch.sqrt(bn.running_var + 1e-3)
    torch.testing.assert_close(model[0].weight, w * scale.view(4, 1, 1, 1))
    torch.testing.assert_close(model[0].bias, (b - bn.running_mean) * scale + bn.bias)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)


class Shortcut(nn.Module):
    """conv -> BN, and the conv's output also added after: the BN must stay (folding would change the shortcut)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
        self.pre = nn.BatchNorm2d(3)  # reads the input, not a conv: stays too

    def forward(self, x):
        y = self.conv(self.pre(x))
        return self.bn(y) + y


def test_bn_whose_conv_output_is_read_elsewhere_is_not_folded():
    model = Shortcut().eval()
    randomize_bn(model)
    x = torch.randn(1, 3, 5, 5)
    with torch.no_grad():
        before = model(x)
    assert fold_batchnorm(model, x) == 0
    assert isinstance(model.bn, nn.BatchNorm2d) and isinstance(model.pre, nn.BatchNorm2d)
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_folded_model_equals_the_unfolded_one(registry):
    model = tiny(registry).eval()
    randomize_bn(model)
    total = count_bn(model)
    folded = copy.deepcopy(model)
    # every BN of the backbone and the head follows a conv whose output nothing else reads
    assert fold_batchnorm(folded, torch.rand(1, 3, 64, 64)) == total > 0
    assert count_bn(folded) == 0
    for size in ((97, 131), (64, 64)):
        x = torch.rand(2, 3, *size)
        with torch.no_grad():
            ref, out = model(x).logits, folded(x).logits
        assert out.shape == (2, 5, *size)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("sizes", [((5, 7), (17, 23)), ((12, 15), (97, 131)), ((23, 30), (360, 480)), ((9, 9), (4, 5)),
                                   ((1, 3), (5, 7))])  # fmt: skip
def test_matmul_resize_equals_pytorch_bicubic(align_corners, sizes):
    (h, w), size = sizes
    x = torch.randn(2, 6, h, w)
    ref = F.interpolate(x, size=size, mode="bicubic", align_corners=align_corners)
    out = MatmulResize(align_corners, block=8)(x.contiguous(memory_format=torch.channels_last), size)
    assert out.shape == (2, 6, *size) and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=5e-5)  # PyTorch computes the source positions in fp32


def test_matmul_resize_keeps_the_memory_format_of_its_input():
    """Like F.interpolate: an NCHW map stays NCHW (train.fast_resize with channels_last = false must not switch
    the rest of the network to channels_last), a channels_last map stays channels_last."""
    x = torch.randn(2, 6, 12, 15)
    nchw = MatmulResize(True)(x, (30, 41))
    assert nchw.is_contiguous() and not nchw.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(nchw, F.interpolate(x, size=(30, 41), mode="bicubic", align_corners=True),
                               rtol=1e-4, atol=5e-5)  # fmt: skip
    assert MatmulResize(True)(x.contiguous(memory_format=torch.channels_last), (30, 41)).is_contiguous(
        memory_format=torch.channels_last)


@pytest.mark.parametrize("align_corners", [True, False])
def test_matmul_resize_backward_equals_pytorch_bicubic_backward(align_corners):
    """train.fast_resize trains through MatmulResize: its gradient is PyTorch's bicubic one to float rounding."""
    x = torch.randn(2, 6, 23, 30, dtype=torch.float64)
    grad = torch.randn(2, 6, 90, 121, dtype=torch.float64)
    ref_x = x.clone().requires_grad_()
    F.interpolate(ref_x, size=(90, 121), mode="bicubic", align_corners=align_corners).backward(grad)
    fast_x = x.float().contiguous(memory_format=torch.channels_last).requires_grad_()
    MatmulResize(align_corners, block=8)(fast_x, (90, 121)).backward(grad.float())
    torch.testing.assert_close(fast_x.grad.double(), ref_x.grad, rtol=1e-4, atol=1e-4)


def test_a_model_trained_with_fast_resize_can_be_made_fast_and_exported_again():
    """train.fast_resize leaves MatmulResize in the trained model's bicubic places: making it fast again or preparing
    it for export finds and replaces them like PyTorch's."""
    from segcore.contracts.stages import Resize, Upsample
    from segcore.inference.resize import GraphResize, export_resizes, fast_resizes

    model = nn.Sequential(Upsample(Resize("bicubic", align_corners=True), nn.Identity()))
    assert fast_resizes(model) == 1 and fast_resizes(model) == 1
    assert isinstance(model[0].resize, MatmulResize) and model[0].resize.align_corners
    x = torch.randn(1, 3, 5, 7)
    expected = F.interpolate(x, size=(11, 13), mode="bicubic", align_corners=True)
    assert export_resizes(model) == 1 and isinstance(model[0].resize, GraphResize)
    torch.testing.assert_close(model[0](x, (11, 13)), expected, rtol=1e-4, atol=5e-5)


def test_cubic_matrix_rows_are_the_cubic_weights():
    # 2 -> 3 samples, align_corners: output 1 sits at input 0.5, t = 0.5, weights (A = -0.75)
    # w(-1) = w(2) = A(1.5^3) - 5A(1.5^2) + 8A(1.5) - 4A = -0.09375, w(0) = w(1) = 0.59375; taps -1 and 2 clamp to 0, 1
    m = cubic_matrix(2, 3, align_corners=True)
    np.testing.assert_allclose(m, [[1, 0], [0.5, 0.5], [0, 1]], atol=1e-12)
    m = cubic_matrix(4, 3, align_corners=True)  # output 1 at input 1.5
    np.testing.assert_allclose(m[1], [-0.09375, 0.59375, 0.59375, -0.09375], atol=1e-12)
    assert np.allclose(cubic_matrix(7, 19, align_corners=False).sum(1), 1.0)


def train_briefly(model: nn.Module, steps: int = 40) -> nn.Module:
    """A few Adam steps on segcore's shapes data, so that the logits are confident (argmax not decided by noise)."""
    from segcore.builtin.datasets import ShapesConfig, ShapesDataset

    data = ShapesDataset(ShapesConfig(size=(64, 64), num_train=64, num_val=4), split="train")
    images = torch.stack([data[i]["image"] for i in range(64)]).float() / 255
    masks = torch.stack([data[i]["mask"] for i in range(64)]).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, 64, (8,), generator=g)
        loss = F.cross_entropy(model(images[idx]).logits, masks[idx], ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_fast_path_bf16_agrees_with_fp32_eager_on_a_trained_model(registry):
    model = train_briefly(tiny(registry))
    from segcore.builtin.datasets import ShapesConfig, ShapesDataset

    val = ShapesDataset(ShapesConfig(size=(64, 64), num_train=64, num_val=4), split="val")
    x = torch.stack([val[i]["image"] for i in range(4)]).float() / 255
    fast = optimize_for_inference(model, precision="bf16")
    assert fast.folded == count_bn(model) and fast.dtype == torch.bfloat16
    assert {p.dtype for p in fast.module.backbone.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        ref = model(x).logits
        out = fast(x).logits
    assert out.dtype == torch.float32 and out.shape == ref.shape
    agreement = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    assert agreement >= 0.99, agreement
    # the original is untouched: still in eval mode (train_briefly left it there), unfolded, float32
    assert not model.training
    assert count_bn(model) > 0 and next(model.parameters()).dtype == torch.float32


def test_fast_path_leaves_out_training_heads_and_the_original_model(registry):
    model = tiny(registry, aux={"fcn": {"decoder": {"name": "fcn", "channels": 8}, "in_index": [2]}})
    model.train()
    fast = optimize_for_inference(model, precision="fp32")
    assert len(model.aux) == 1 and model.training  # unchanged
    assert len(fast.module.aux) == 0
    assert not any("aux" in name for name, _ in fast.named_parameters())


def test_mixed_sizes_compile_once(registry):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    model = tiny(registry).eval()
    fast = optimize_for_inference(model, precision="fp32", compile=True, backend="eager")
    before = counters["stats"]["unique_graphs"]
    for size in ((64, 96), (64, 96), (97, 131), (97, 131), (128, 128), (128, 128), (64, 96)):
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(fast(x).logits, model(x).logits, rtol=1e-4, atol=1e-6)
    # the first size seen twice is compiled; the other two run eagerly: one graph, no recompiles
    assert fast.compiles == 1 and fast.compile_error is None
    assert counters["stats"]["unique_graphs"] - before == 1


def test_a_failing_compile_falls_back_with_a_warning(registry):
    def broken(gm, example_inputs):
        raise RuntimeError("no C++ compiler")

    model = tiny(registry).eval()
    fast = optimize_for_inference(model, precision="fp32", compile=True, backend=broken)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        fast(x)
        with pytest.warns(UserWarning, match="torch.compile failed .*no C\\+\\+ compiler.*compile = false"):
            out = fast(x)  # the second call compiles
        torch.testing.assert_close(out.logits, model(x).logits, rtol=1e-4, atol=1e-6)
        fast(x)  # no second warning, no second compile
    assert fast.compiles == 1 and "no C++ compiler" in str(fast.compile_error)


def test_cached_fast_model_is_rebuilt_when_the_weights_change(registry):
    model = tiny(registry).eval()
    a = cached_fast_model(model, precision="fp32")
    assert cached_fast_model(model, precision="fp32") is a
    assert cached_fast_model(model, precision="bf16") is not a
    b = cached_fast_model(model, precision="fp32")
    with torch.no_grad():
        model.classifier.bias.add_(1.0)  # an optimizer step or load_state_dict does the same
    c = cached_fast_model(model, precision="fp32")
    assert c is not b
    torch.testing.assert_close(c.module.classifier.bias, model.classifier.bias)


def test_predict_uses_the_fast_path_by_default(registry, monkeypatch):
    import segcore.engine.predict as predict_module

    built = []
    real = predict_module.fast_model_for
    monkeypatch.setattr(predict_module, "fast_model_for", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    model = train_briefly(tiny(registry), steps=20)
    image = np.random.default_rng(0).integers(0, 256, (41, 59, 3), dtype=np.uint8)
    labels = segcore.predict(model, image, eval_cfg=EvalConfig(precision="fp32"))
    assert isinstance(built[-1], FastModel) and labels.shape == (41, 59)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        assert np.array_equal(labels, model(x).logits.argmax(1)[0].numpy())
    segcore.predict(model, image, eval_cfg=EvalConfig(fast=False))
    assert built[-1] is model


def test_fast_path_accepts_any_module():
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 1))

        def forward(self, x):
            return ModelOutput(self.net(x))

    model = Plain().eval()
    randomize_bn(model)
    fast = optimize_for_inference(model, precision="bf16")
    assert fast.autocast and fast.folded == 1
    x = torch.rand(1, 3, 20, 30)
    with torch.no_grad():
        torch.testing.assert_close(fast(x).logits, model(x).logits, rtol=0.05, atol=0.05)


@pytest.mark.slow
def test_inductor_compile_and_int8_on_a_small_model(registry):
    """inductor with freezing, and int8 (PT2E, x86 quantizer): one compile each for three sizes, outputs close."""
    pytest.importorskip("torchao")
    model = train_briefly(tiny(registry))
    calibration = [torch.rand(3, 64, 64) for _ in range(4)]
    for options in ({"compile": True}, {"int8": True, "calibration": calibration}):
        fast = optimize_for_inference(model, precision="fp32", **options)
        for size in ((64, 64), (64, 64), (64, 64), (97, 131), (128, 96)):
            x = torch.rand(1, 3, *size)
            with torch.no_grad():
                ref, out = model(x).logits, fast(x).logits
            assert (ref.argmax(1) == out.argmax(1)).float().mean() > 0.95
        assert fast.compiles == 1 and fast.compile_error is None


def test_int8_without_torchao_or_with_one_made_for_another_torch_says_which(monkeypatch):
    """torchao absent: install it; a torchao module missing: upgrade torchao; a torch name missing (ImportError from
    torch, or AttributeError: a torchao built for another torch): name both versions and where the pairs are, never
    'install' what is installed."""
    import builtins
    import importlib.metadata

    from segcore.errors import SegcoreError
    from segcore.inference.quant import quantize_int8

    args = (nn.Conv2d(3, 3, 1).eval(), torch.rand(1, 3, 8, 8), [torch.rand(3, 8, 8)])
    real_import, real_version = builtins.__import__, importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "0.18.0" if d == "torchao" else real_version(d))

    def message(error: Exception) -> str:
        def fake(name, *rest, **kw):
            if name.startswith("torchao"):
                raise error
            return real_import(name, *rest, **kw)

        with monkeypatch.context() as m:
            m.setattr(builtins, "__import__", fake)
            with pytest.raises(SegcoreError) as err:
                quantize_int8(*args)
        return str(err.value)

    # Python's errors for: torchao not installed; an older torchao; torchao 0.18 on torch 2.9; a torch attribute
    absent = message(ModuleNotFoundError("No module named 'torchao'", name="torchao"))
    assert re.search(r'needs torchao .*pip install "segcore\[int8\]"', absent) and "0.18.0" not in absent
    old = message(ModuleNotFoundError("No module named 'torchao.quantization.pt2e'", name="torchao.quantization.pt2e"))
    assert "torchao 0.18.0 has no torchao.quantization.pt2e" in old and 'pip install -U "segcore[int8]"' in old
    torch_version = re.escape(torch.__version__)
    mismatches = (ImportError("cannot import name 'ScalingType' from 'torch.nn.functional'",
                              name="torch.nn.functional"),
                  AttributeError("module 'torch._inductor' has no attribute 'config'"))  # fmt: skip
    for error in mismatches:
        mismatch = message(error)
        assert re.search(rf"torchao 0\.18\.0 does not import with torch {torch_version} \({re.escape(str(error))}\)",
                         mismatch), mismatch  # fmt: skip
        assert "pytorch/ao/issues/2919" in mismatch and "pip install" not in mismatch
