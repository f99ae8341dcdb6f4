"""segcore's contract tests for plugin authors: a pytest plugin (entry point ``pytest11``: ``segcore``).

The checks segcore runs on its own components, run on yours. In a plugin's tests::

    # tests/test_contracts.py
    from segcore.testing import contract_tests

    test_contracts = contract_tests(distribution="segcore-plugin-gain")

Every component the distribution registers (backbones, enhancers, decoders, attention, losses, datasets that need
no files) becomes one test per contract, with an id such as ``decoder:my_head:declared-channels-and-stride``. A
component is built from its ``tiny`` config (or its defaults) on small inputs; each contract checks one promise:

- backbones and enhancers return the maps their ``feature_info`` declares, decoders the channels and stride they
  declare (``out_channels``, ``stride``), at odd input sizes (strided convolutions round up); a decoder fills every
  attention slot it declares, and its upsampling places see maps at the input levels' sizes; an attention keeps its
  input's shape; a backbone whose constructor takes ``in_channels`` builds for 1 and 4 channels;
- gradients reach every parameter (and an attention's input);
- ``channels_last`` memory gives the same numbers, bf16 autocast the same shapes with finite values, a safetensors
  round trip (``save_model`` / ``load_model``, strict) the same outputs;
- ``torch.compile(fullgraph=True)`` traces it with no graph break and ``torch.export`` (height and width free)
  exports it, each with the eager numbers; these two are marked ``slow`` (deselect them with ``-m "not slow"``);
- a loss is a finite scalar, gives ignored pixels no gradient and uses the extra tensors it declares; a dataset's
  samples are uint8 (or uint16) images with masks of its declared classes.

A broken promise fails as `ContractViolation`: "decoder 'my_head' (plugin "my_head" from segcore-plugin-gain
0.1.0) breaks the contract 'declared channels and stride': ...". An exception raised inside the component is
reported the same way, with its traceback kept.

The plugin only adds the ``segcore_contracts`` marker, the ``segcore_case`` parametrisation of the tests that carry
it and two fixtures: ``segcore_registry``, and ``segcore_network`` (no network in the test: every DNS lookup and
internet-socket connect made through Python's socket module fails at once and is recorded, as is every
``time.sleep`` of the test's thread, so a test asserts that an offline load tried nothing or that an unreachable Hub
was probed once and not retried, where a wall-clock bound would only guess); a test run that uses none of them
loads neither torch nor segcore through it. Only the public tiers are imported (``segcore``), like any plugin.
"""

from __future__ import annotations

__all__ = ["CONTRACTS", "Case", "Contract", "ContractViolation", "NoNetwork", "check", "contract_cases",
           "contract_tests", "installed_registry"]  # fmt: skip

import dataclasses
import errno
import functools
import math
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

# -- what a contract is --------------------------------------------------------------------------------------------


class ContractViolation(AssertionError):
    """A component broke one of its stage's contracts; the message names the component, its plugin and the contract."""


@dataclasses.dataclass(frozen=True)
class Contract:
    """One promise of a stage: *run* checks it on a registry entry and raises `ContractViolation` if broken."""

    name: str
    run: Callable[[Any], None]
    slow: bool = False

    @property
    def key(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


@dataclasses.dataclass(frozen=True)
class Case:
    """A component and one contract of its stage: one test."""

    entry: Any
    contract: Contract

    @property
    def id(self) -> str:
        return f"{self.entry.stage.__name__.lower()}:{self.entry.name}:{self.contract.key}"


def _who(entry: Any) -> str:
    return f"{entry.stage.__name__.lower()} {entry.name!r} ({entry.plugin})"


def check(entry: Any, contract: Contract) -> None:
    """Run one contract on a registry entry; a broken one raises `ContractViolation` naming both."""
    import torch

    torch.manual_seed(0)
    prefix = f"{_who(entry)} breaks the contract '{contract.name}'"
    try:
        contract.run(entry)
    except ContractViolation as exc:
        raise ContractViolation(f"{prefix}: {exc}") from None
    except Exception as exc:  # the component's own exception: keep its traceback
        raise ContractViolation(f"{prefix}: {type(exc).__name__}: {exc}") from exc


def _expect(condition: bool, message: str) -> None:
    if not condition:  # not `assert`: python -O strips those
        raise ContractViolation(message)


# -- small inputs --------------------------------------------------------------------------------------------------

SIZES = ((64, 64), (97, 131))  # odd sizes: strided convolutions round up, every resize must target exact sizes
BACKBONE_SIZES = ((64, 64), (45, 71), (97, 131))
LEVELS = ((4, 4), (8, 8), (16, 16), (32, 32))  # (channels, stride) of the feature maps an enhancer or decoder gets
ATTENTION_CHANNELS = (8, 720)


def _ceil(size: Sequence[int], stride: int) -> tuple[int, int]:
    return math.ceil(size[0] / stride), math.ceil(size[1] / stride)


def _in_features():
    from segcore import FeatureInfo

    return tuple(FeatureInfo(c, s) for c, s in LEVELS)


def _features(size: Sequence[int], batch: int = 2) -> list:
    import torch

    return [torch.randn(batch, c, *_ceil(size, s)) for c, s in LEVELS]


def _identity_slots(slots: Iterable[str]):
    import torch

    from segcore import AttentionSlots

    return AttentionSlots({s: (lambda channels: torch.nn.Identity()) for s in slots})


class _Marker:
    """Builds the modules that stand in attention slots: identities that check and record what they see."""

    def __init__(self, slots: Iterable[str]) -> None:
        import torch

        from segcore import AttentionSlots

        self.seen: dict[str, list[tuple[int, ...]]] = {}
        marker = self

        class Slot(torch.nn.Module):
            def __init__(self, slot: str, channels: int) -> None:
                super().__init__()
                self.slot, self.channels = slot, channels
                marker.seen.setdefault(slot, [])

            def forward(self, x):
                _expect(x.shape[1] == self.channels,
                        f"slot {self.slot!r} was built for {self.channels} channels and got {x.shape[1]}")
                marker.seen[self.slot].append(tuple(x.shape))
                return x

        self.slots = AttentionSlots({s: functools.partial(Slot, s) for s in slots})


def _no_grad(module) -> list[str]:
    return [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]


# -- each stage: build it, feed it, read its output --------------------------------------------------------------


def _build(entry: Any, **wiring: Any):
    return entry.build(entry.tiny, **wiring)


def _module_and_inputs(entry: Any, size: Sequence[int] = (64, 64)):
    """The component built for the checks that treat every module alike, and its positional inputs."""
    import torch

    from segcore import Attention, Backbone, Decoder, Enhancer

    if entry.stage is Backbone:
        return _build(entry), (torch.randn(2, 3, *size),)
    if entry.stage in (Enhancer, Decoder):
        module = _build(entry, in_features=_in_features(), attention=_identity_slots(entry.cls.attention_slots))
        return module, (_features(size),)
    if entry.stage is Attention:
        return _build(entry, channels=8), (torch.randn(2, 8, 9, 13),)
    raise TypeError(f"no generic inputs for a {entry.stage.__name__}")


def _tensors(output: Any) -> list:
    import torch

    if isinstance(output, torch.Tensor):
        return [output]
    return [t for o in output for t in _tensors(o)]


def _close(actual: Any, expected: Any, what: str, rtol: float = 1e-4, atol: float = 1e-4) -> None:
    import torch

    got, want = _tensors(actual), _tensors(expected)
    _expect(len(got) == len(want), f"{what}: {len(got)} output tensors, eager gives {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        _expect(g.shape == w.shape, f"{what}: output {i} has shape {tuple(g.shape)}, eager {tuple(w.shape)}")
        try:
            torch.testing.assert_close(g.float(), w.float(), rtol=rtol, atol=atol)
        except AssertionError as exc:
            raise ContractViolation(f"{what}: output {i} differs from eager: {str(exc).splitlines()[-2:]}") from None


# -- contracts shared by the module stages ---------------------------------------------------------------------


def _channels_last(entry: Any) -> None:
    import torch

    module, inputs = _module_and_inputs(entry, (45, 71))
    module.eval()
    with torch.no_grad():
        expected = module(*inputs)
        module.to(memory_format=torch.channels_last)
        cl = [_map(lambda t: t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t, x) for x in inputs]
        actual = module(*cl)
    _close(actual, expected, "with channels_last weights and inputs", rtol=1e-3, atol=1e-4)


def _map(fn: Callable, x: Any) -> Any:
    import torch

    return fn(x) if isinstance(x, torch.Tensor) else type(x)(_map(fn, i) for i in x)


def _bf16(entry: Any) -> None:
    import torch

    module, inputs = _module_and_inputs(entry, (45, 71))
    module.eval()
    with torch.no_grad():
        expected = _tensors(module(*inputs))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            actual = _tensors(module(*inputs))
    _expect([t.shape for t in actual] == [t.shape for t in expected],
            f"under bf16 autocast the shapes are {[tuple(t.shape) for t in actual]}, "
            f"in fp32 {[tuple(t.shape) for t in expected]}")
    bad = [i for i, t in enumerate(actual) if not torch.isfinite(t).all()]
    _expect(not bad, f"under bf16 autocast output(s) {bad} have non-finite values")


def _safetensors(entry: Any) -> None:
    import safetensors.torch
    import torch

    module, inputs = _module_and_inputs(entry)
    module.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        safetensors.torch.save_model(module, str(path))
        torch.manual_seed(1)  # a fresh build starts from other random weights
        fresh, _ = _module_and_inputs(entry)
        missing, unexpected = safetensors.torch.load_model(fresh, str(path), strict=False)
        _expect(not missing and not unexpected,
                f"the saved weights do not load strictly into a fresh build: missing {missing}, unexpected {unexpected}")
    fresh.eval()
    with torch.no_grad():
        _close(fresh(*inputs), module(*inputs), "after a safetensors round trip", rtol=0, atol=0)


def _compile(entry: Any) -> None:
    import torch

    module, inputs = _module_and_inputs(entry)
    module.eval()
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")  # the graph, not inductor's kernels
    with torch.no_grad():
        _close(compiled(*inputs), module(*inputs), "torch.compile(fullgraph=True)")


def _export(entry: Any) -> None:
    import torch

    module, inputs = _module_and_inputs(entry)
    module.eval()
    free = {2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}  # height and width, as `segcore export` needs
    dynamic = tuple(_map(lambda t: free if t.ndim == 4 else None, x) for x in inputs)
    program = torch.export.export(module, inputs, dynamic_shapes=dynamic)
    with torch.no_grad():
        _close(program.module()(*inputs), module(*inputs), "torch.export")


def _gradients(entry: Any) -> None:
    module, inputs = _module_and_inputs(entry, (45, 71))
    inputs = _map(lambda t: t.requires_grad_(), inputs)  # a module without parameters still has a graph
    module.train()
    out = _tensors(module(*inputs))
    sum(t.float().mean() for t in out).backward()
    _expect(_no_grad(module) == [], f"parameters with no gradient after backward: {_no_grad(module)}")


def _common(slow: bool = True) -> list[Contract]:
    return [
        Contract("gradients reach every parameter", _gradients),
        Contract("channels_last gives the same numbers", _channels_last),
        Contract("bf16 autocast keeps shapes and finite values", _bf16),
        Contract("safetensors round trip", _safetensors),
        Contract("torch.compile fullgraph", _compile, slow=True),
        Contract("torch.export with free height and width", _export, slow=True),
    ]


# -- per stage -----------------------------------------------------------------------------------------------------


def _backbone_maps(entry: Any) -> None:
    import torch

    backbone = _build(entry)
    info = list(backbone.feature_info)
    for size in BACKBONE_SIZES:
        maps = backbone(torch.randn(2, 3, *size))
        _expect(len(maps) == len(info), f"at {size[0]}x{size[1]}: {len(maps)} maps, feature_info declares {len(info)}")
        for i, (m, fi) in enumerate(zip(maps, info)):
            want = (2, fi.channels, *_ceil(size, fi.stride))
            _expect(tuple(m.shape) == want, f"at {size[0]}x{size[1]}: map {i} is {tuple(m.shape)}, feature_info "
                                            f"declares {fi.channels} channels at stride {fi.stride}: {want}")


def _backbone_channels(entry: Any) -> None:
    import torch

    from segcore.contracts.stages import takes_wiring

    if not takes_wiring(entry.cls, "in_channels"):
        return  # RGB only: the model builder refuses another [model] in_channels, naming the backbone
    for channels in (1, 4):
        backbone = _build(entry, in_channels=channels)
        maps = backbone(torch.randn(2, channels, 64, 64))
        got, want = [m.shape[1] for m in maps], [i.channels for i in backbone.feature_info]
        _expect(got == want, f"in_channels={channels}: maps with channels {got}, feature_info declares {want}")


def _enhancer_maps(entry: Any) -> None:
    marker = _Marker(entry.cls.attention_slots)
    enhancer = _build(entry, in_features=_in_features(), attention=marker.slots)
    for size in SIZES:
        out = enhancer(_features(size))
        info = list(enhancer.feature_info)
        got = [(m.shape[1], tuple(m.shape[-2:])) for m in out]
        want = [(i.channels, _ceil(size, i.stride)) for i in info]
        _expect(got == want, f"at {size[0]}x{size[1]}: returns (channels, size) {got}, feature_info declares {want}")


def _decoder_shape(entry: Any) -> None:
    marker = _Marker(entry.cls.attention_slots)  # every slot filled: upsampling places included
    decoder = _build(entry, in_features=_in_features(), attention=marker.slots)
    for size in SIZES:
        out = decoder(_features(size))
        want = (2, decoder.out_channels, *_ceil(size, decoder.stride))
        _expect(tuple(out.shape) == want, f"at {size[0]}x{size[1]}: output {tuple(out.shape)}, declared out_channels "
                                          f"{decoder.out_channels} at stride {decoder.stride}: {want}")
        if "upsample" in entry.cls.attention_slots:
            sizes = {_ceil(size, s) for _, s in LEVELS}
            seen = [s[-2:] for s in marker.seen.get("upsample", [])]
            _expect(seen and all(tuple(s) in sizes for s in seen),
                    f"at {size[0]}x{size[1]}: its upsampling places saw maps of sizes {seen}, not the input levels' "
                    f"{sorted(sizes)} (resize to the exact target size before the place)")
            marker.seen["upsample"] = []


def _decoder_slots(entry: Any) -> None:
    calls = []

    def factory(slot):
        import torch

        def build(channels):
            calls.append(slot)
            return torch.nn.Identity()

        return build

    from segcore import AttentionSlots

    entry.build(entry.tiny, in_features=_in_features(),
                attention=AttentionSlots({s: factory(s) for s in entry.cls.attention_slots}))
    unused = sorted(set(entry.cls.attention_slots) - set(calls))
    _expect(not unused, f"declares attention_slots {tuple(entry.cls.attention_slots)} but never builds {unused}")


def _attention_shape(entry: Any) -> None:
    import torch

    for channels in ATTENTION_CHANNELS:
        attn = _build(entry, channels=channels)
        x = torch.randn(2, channels, 9, 13, requires_grad=True)
        y = attn(x)
        _expect(tuple(y.shape) == tuple(x.shape), f"at {channels} channels: input {tuple(x.shape)}, output {tuple(y.shape)}")
        y.square().mean().backward()
        _expect(x.grad is not None, f"at {channels} channels: no gradient reaches the input")
        _expect(_no_grad(attn) == [], f"at {channels} channels: parameters with no gradient: {_no_grad(attn)}")


def _loss(entry: Any) -> None:
    import torch

    from segcore import ModelOutput

    loss = _build(entry, num_classes=3, ignore_index=255)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :4] = 255
    # the extra tensors it declares, as a training-only head on a stride-1 decoder map would make them
    extras = {n: torch.nn.functional.normalize(torch.randn(2, 8, 8, 8), dim=1).requires_grad_() for n in entry.cls.extras}
    value = loss(logits, target, ModelOutput(logits, {}, extras))
    total = sum(value.values()) if isinstance(value, dict) else value
    _expect(total.ndim == 0 and bool(torch.isfinite(total)), f"returns {total!r}, not a finite scalar")
    total.backward()
    _expect(logits.grad[..., :4, :].abs().sum() == 0, "pixels labelled with the ignore index get a gradient")
    _expect(logits.grad[..., 4:, :].abs().sum() > 0, "labelled pixels get no gradient")
    unused = [n for n, t in extras.items() if t.grad is None or t.grad.abs().sum() == 0]
    _expect(not unused, f"declares extras {tuple(entry.cls.extras)} but takes no gradient through {unused}")


def _dataset(entry: Any) -> None:
    import torch

    for split in entry.cls.splits:
        ds = _build(entry, split=split)
        _expect(len(ds) > 0, f"split {split!r} is empty")
        sample = ds[0]
        image, mask = sample["image"], sample["mask"]
        _expect(image.dtype in (torch.uint8, torch.uint16) and image.ndim == 3,
                f"split {split!r}: image {image.dtype} {tuple(image.shape)}, not a uint8 or uint16 (C, H, W) tensor")
        _expect(tuple(mask.shape) == tuple(image.shape[1:]) and not mask.is_floating_point(),
                f"split {split!r}: mask {mask.dtype} {tuple(mask.shape)} for image {tuple(image.shape)}")
        labels = set(mask.unique().tolist()) - set(range(ds.meta.num_classes)) - {ds.meta.ignore_index}
        _expect(not labels, f"split {split!r}: mask values {sorted(labels)} outside its {ds.meta.num_classes} classes")
        _expect(len(ds.meta.palette) == ds.meta.num_classes,
                f"palette has {len(ds.meta.palette)} colours for {ds.meta.num_classes} classes")


def _contracts() -> dict[str, list[Contract]]:
    return {
        "backbone": [Contract("declared feature maps at odd sizes", _backbone_maps),
                     Contract("takes the in_channels it declares", _backbone_channels), *_common()],
        "enhancer": [Contract("declared feature maps at odd sizes", _enhancer_maps), *_common()],
        "decoder": [Contract("declared channels and stride at odd sizes", _decoder_shape),
                    Contract("fills every attention slot it declares", _decoder_slots), *_common()],
        "attention": [Contract("keeps the shape and passes gradients", _attention_shape), *_common()],
        "loss": [Contract("finite scalar that ignores the ignore index and uses its extras", _loss)],
        "dataset": [Contract("samples are uint8 images with masks of its classes", _dataset)],
    }


CONTRACTS = _contracts()  # stage name (lowercase) -> its contracts, in the order they run


# -- selecting components ------------------------------------------------------------------------------------------


@functools.cache
def installed_registry():
    """Core's built-ins and every installed plugin, loaded once per process (at collection, never at import)."""
    from segcore import get_plugin_manager, load_registry

    return load_registry(get_plugin_manager())


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _buildable(entry: Any) -> bool:
    """A dataset that needs files on disk (a required field and no ``tiny``) is left to its own tests."""
    import attrs

    return entry.tiny is not None or all(f.default is not attrs.NOTHING for f in attrs.fields(entry.config))


def contract_cases(distribution: str | None = None, *, plugin: str | None = None, registry: Any = None,
                   stages: Iterable[str] | None = None, contracts: Iterable[str] | None = None) -> list[Case]:
    """Every (component, contract) pair of the components that *distribution* (``"segcore-plugin-frm"``; ``"segcore"``
    for core's built-ins) or *plugin* (a plugin name) registers; both None: every installed component.

    *registry*: a `segcore.Registry` or a function that returns one (default: every installed plugin). *stages*
    (``"decoder"``, ...) and *contracts* (keys, e.g. ``"safetensors-round-trip"``) narrow the set.
    """
    from segcore import Attention, Backbone, Dataset, Decoder, Enhancer, Loss

    registry = registry() if callable(registry) else registry or installed_registry()
    wanted = {s.lower() for s in stages} if stages is not None else None
    mine = [e for stage in (Backbone, Enhancer, Decoder, Attention, Loss, Dataset) for e in registry.entries(stage)
            if (distribution is None or _norm(e.plugin.dist or "") == _norm(distribution))
            and (plugin is None or e.plugin.name == plugin)]  # fmt: skip
    if not mine and (distribution or plugin):
        known = sorted({e.plugin.dist or e.plugin.name for e in registry.entries()})
        problems = "".join(f"\n  {p}" for p in registry.problems)
        what = f"distribution {distribution!r}" if distribution else f"plugin {plugin!r}"
        raise pytest.UsageError(f"segcore.testing: no component registered by {what}; installed: {', '.join(known)}{problems}")
    entries = [e for e in mine if (wanted is None or e.stage.__name__.lower() in wanted)
               and (e.stage is not Dataset or _buildable(e))]  # fmt: skip
    keys = set(contracts) if contracts is not None else None
    return [Case(e, c) for e in entries for c in CONTRACTS[e.stage.__name__.lower()] if keys is None or c.key in keys]


def contract_tests(distribution: str | None = None, *, plugin: str | None = None, registry: Any = None,
                   stages: Iterable[str] | None = None, contracts: Iterable[str] | None = None) -> Callable[..., None]:
    """A test function that runs every contract on every component of *distribution* (see `contract_cases`);
    bind it to a ``test_*`` name in a test module. The components are looked up when pytest collects the module."""

    @pytest.mark.segcore_contracts(distribution=distribution, plugin=plugin, registry=registry, stages=stages,
                                   contracts=contracts)  # fmt: skip
    def test_contract(segcore_case: Case) -> None:
        check(segcore_case.entry, segcore_case.contract)

    return test_contract


# -- the pytest plugin ----------------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "segcore_contracts(distribution=None, plugin=None, registry=None, stages=None, "
                                       "contracts=None): run segcore's contract tests on the test's `segcore_case`")  # fmt: skip
    config.addinivalue_line("markers", "slow: takes more than a few seconds (segcore.testing: torch.compile, torch.export)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("segcore_contracts")
    if marker is None or "segcore_case" not in metafunc.fixturenames:
        return
    cases = contract_cases(*marker.args, **marker.kwargs)
    params = [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.contract.slow else []) for c in cases]
    metafunc.parametrize("segcore_case", params)


@pytest.fixture(scope="session")
def segcore_registry():
    """Every installed plugin's registry (the one `contract_tests` uses by default)."""
    return installed_registry()


class NoNetwork:
    """What a test tried (`segcore_network`): ``attempts``, ("getaddrinfo" | "connect", address) for each DNS lookup
    and internet (IPv4/IPv6) connect made through Python's socket module in any thread, each refused at once with
    OSError as on a machine without a network; and ``sleeps``, every time.sleep of the test's thread, which returns
    at once (a retry's back-off; other threads sleep as usual). Local sockets (AF_UNIX: multiprocessing) connect as
    usual; C libraries that open their own sockets are not seen."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, object]] = []
        self.sleeps: list[float] = []
        self._thread = threading.get_ident()
        self._sleep = time.sleep
        self._connect = socket.socket.connect

    def refuse(self, what: str, address: object) -> None:
        self.attempts.append((what, address))
        raise OSError(f"no network in this test ({what} {address})")

    def connect(self, sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            self.refuse("connect", address)
        self._connect(sock, address)

    def connect_ex(self, sock: socket.socket, address: object) -> int:
        try:
            self.connect(sock, address)
        except OSError as exc:
            return exc.errno or errno.ENETUNREACH
        return 0

    def sleep(self, seconds: float) -> None:
        if threading.get_ident() == self._thread:
            self.sleeps.append(seconds)
        else:
            self._sleep(seconds)


@pytest.fixture
def segcore_network(monkeypatch) -> NoNetwork:
    """No network in this test (`NoNetwork`): a test asserts what was tried (an offline load tries nothing; an
    unreachable Hub is probed once, never retried), which a wall-clock bound would only guess at."""
    net = NoNetwork()
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *a, **k: net.refuse("getaddrinfo", (host, port)))
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: net.refuse("connect", address))
    monkeypatch.setattr(socket.socket, "connect", lambda sock, address: net.connect(sock, address))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda sock, address: net.connect_ex(sock, address))
    monkeypatch.setattr(time, "sleep", net.sleep)
    return net
