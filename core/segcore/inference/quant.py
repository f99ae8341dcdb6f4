"""Lower precision for the fast path: a `SegModel` in bf16 (cast at its edges), and int8 through PT2E with torchao's
x86 inductor quantizer."""

from __future__ import annotations

__all__ = ["conv_names", "quantize_int8", "segmodel_to_bf16"]

import importlib.metadata
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from segcore.data.images import model_input, to_unit
from segcore.errors import SegcoreError
from segcore.model.build import SegModel


def _to_bf16(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (args[0].to(torch.bfloat16),) + tuple(args[1:])


def _output_fp32(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
    return output.float()


def segmodel_to_bf16(model: SegModel) -> None:
    """*model*'s backbone, enhancers, decoder and classifier in bf16 (weights and compute, no per-op casts), in
    place: the backbone's input is cast to bf16 and the classifier's output back to fp32, so the input normalisation
    and the final upsampling stay fp32."""
    for part in (model.backbone, model.enhancers, model.decoder, model.classifier):
        part.to(torch.bfloat16)
    model.backbone.register_forward_pre_hook(_to_bf16)
    model.classifier.register_forward_hook(_output_fp32)


def _separate_activations(graph_module: torch.fx.GraphModule) -> None:
    """Give every call of an ``nn.ReLU`` module its own source partition: one ReLU module used at several places
    (HRNet's ``fuse_act``, the blocks' ``relu``) otherwise forms one partition with several outputs, which the x86
    quantizer rejects ("Input partition has more than one output node")."""
    for node in graph_module.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op == "call_function" and stack:
            _, cls = list(stack.values())[-1]
            if cls is nn.ReLU or cls == "torch.nn.modules.activation.ReLU":
                node.meta["source_fn_stack"] = [(node.name, nn.ReLU)]


def conv_names(module: nn.Module) -> list[str]:
    """The qualified names of *module*'s convolutions, in registration order (the first is the stem's, the last
    usually the classifier): what ``quantize_int8(skip=...)`` takes."""
    return [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]


def _torchao_missing(exc: ImportError | AttributeError) -> str:
    """What to do when torchao's PT2E modules do not import. torchao absent: install it. A torchao module missing: a
    torchao older (or newer) than segcore's code. A torch name missing (ImportError from torch, or an AttributeError on
    a torch module): a torchao built for another torch, since each torchao release builds against one torch release."""
    name = (exc.name or "") if isinstance(exc, ImportError) else ""  # the module that failed; AttributeError's: none
    if isinstance(exc, ModuleNotFoundError) and name == "torchao":
        return 'int8 inference needs torchao (PT2E quantization): pip install "segcore[int8]"'
    try:
        have = f"torchao {importlib.metadata.version('torchao')}"
    except importlib.metadata.PackageNotFoundError:
        have = "torchao"
    if name.startswith("torchao."):
        return (f"int8 inference: {have} has no {name} ({exc}): segcore uses torchao's PT2E quantizer (torchao 0.16 "
                'and newer): pip install -U "segcore[int8]"')  # fmt: skip
    if isinstance(exc, AttributeError) or name == "torch" or name.startswith("torch."):
        return (f"int8 inference: {have} does not import with torch {torch.__version__} ({exc}): each torchao "
                "release is built for one torch release; install the one for this torch (the pairs: "
                "https://github.com/pytorch/ao/issues/2919; torch 2.10, segcore's oldest, takes torchao 0.16)")
    return f"int8 inference: {have} does not import ({type(exc).__name__}: {exc})"


def quantize_int8(module: nn.Module, example: Tensor, calibration: Sequence[Tensor], *, skip: Sequence[str] = (),
                  skip_first_last: bool = False) -> Any:  # fmt: skip
    """*module* (fp32, eval) quantized to int8 for *example*'s shape: torch.export, PT2E with torchao's
    X86InductorQuantizer (its default static per-tensor activation / per-channel weight config), observers run on
    the *calibration* images (each (C, H, W) in [0, 1], or uint8/uint16 scaled by the model's max_value, resized to the
    shape), then torch.compile (inductor, freezing), which lowers the int8 convolutions to oneDNN's with fused post-ops.

    The accuracy knobs (the weights are always per channel, the only kind the x86 quantizer's oneDNN convolutions
    take): *skip* (module names, as `conv_names` gives them, left in fp32), *skip_first_last* (the first and last
    convolution left in fp32)."""
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except (ImportError, AttributeError) as exc:  # AttributeError: torchao reaching for a torch name it lacks
        raise SegcoreError(_torchao_missing(exc)) from None
    if not calibration:
        raise SegcoreError("int8 inference needs calibration images (the training split's first few are used by "
                           "segcore run; give calibration=[...] in Python)")  # fmt: skip
    # functional ATen ops: an in-place residual add (timm's ``x += shortcut``) otherwise leaves the quantizer's
    # conv-add-relu partition without an output node
    graph = torch.export.export(module, (example,)).run_decompositions({}).module()
    _separate_activations(graph)
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    convs = conv_names(module)
    for name in [*skip, *([convs[0], convs[-1]] if skip_first_last and convs else [])]:
        quantizer.set_module_name_qconfig(name, None)  # left in fp32
    prepared = prepare_pt2e(graph, quantizer)
    size = example.shape[-2:]
    max_value = model_input(module)[1]
    for image in calibration:
        x = to_unit(image, max_value)
        x = torch.nn.functional.interpolate(x[None].to(example.device), size=tuple(size), mode="bilinear",
                                            align_corners=False)
        prepared(x.expand(example.shape[0], -1, -1, -1).contiguous(memory_format=torch.channels_last))
    return _Frozen(torch.compile(convert_pt2e(prepared)))


class _Frozen:
    """Calls a compiled int8 graph with inductor's freezing on (weights become constants, folded and prepacked for
    oneDNN's int8 convolutions). Set around the call, not as ``torch.compile(options={"freezing": True})``: with the
    option alone, inductor 2.14 fails on the quantized graph (``UnsupportedOperatorException:
    onednn.qconv_prepack``), while the plain fast path compiles fine with it."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled

    def __call__(self, *args: Any) -> Any:
        import torch._inductor.config

        with torch._inductor.config.patch(freezing=True):
            return self.compiled(*args)
