"""segcore.testing, the contract-test kit for plugin authors: a third-party plugin (written here, found through a
pip-less entry point) runs it in its own pytest session; a broken component fails naming itself and the contract;
the pytest plugin costs nothing to sessions that do not use it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from segcore import Attention, get_plugin_manager, hookimpl, load_registry
from segcore.testing import ContractViolation, check, contract_cases

pytest_plugins = ["pytester"]

TOY_PLUGIN = '''
"""A third-party plugin: a decoder that lies about its stride and a per-channel offset that keeps its contract."""
import attrs
import torch
from segcore import Attention, Decoder, hookimpl


@attrs.frozen
class CoarseConfig:
    channels: int = 8


class Coarse(Decoder):
    """Declares the finest level's stride but classifies the coarsest level: the contract catches it."""

    def __init__(self, cfg: CoarseConfig, *, in_features, attention) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_features[-1].channels, cfg.channels, 1)
        self.out_channels, self.stride = cfg.channels, in_features[0].stride

    def forward(self, features):
        return self.conv(features[-1])


@attrs.frozen
class OffsetConfig:
    init: float = 0.0


class Offset(Attention):
    def __init__(self, cfg: OffsetConfig, *, channels: int) -> None:
        super().__init__()
        self.offset = torch.nn.Parameter(torch.full((channels, 1, 1), cfg.init))

    def forward(self, x):
        return x + self.offset


@hookimpl
def segcore_register(registry):
    registry.add(Coarse, name="toy_coarse", config=CoarseConfig)
    registry.add(Offset, name="toy_offset", config=OffsetConfig)
'''


@pytest.mark.slow  # ~9 s: a pytester session on 2 idle AVX2 cores
def test_a_third_party_plugin_runs_the_kit_and_its_broken_component_is_named(pytester, monkeypatch):
    # the plugin as pip would leave it, without pip: a module and a dist-info folder with its entry point
    pytester.makepyfile(segcore_plugin_toy=TOY_PLUGIN)
    info = pytester.mkdir("segcore_plugin_toy-0.1.0.dist-info")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: segcore-plugin-toy\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[segcore]\ntoy = segcore_plugin_toy\n")
    pytester.makepyfile(test_toy=textwrap.dedent("""
        from segcore.testing import contract_tests

        test_toy_contracts = contract_tests(distribution="segcore-plugin-toy")
    """))
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the pytest11 entry point loads segcore.testing (no -p); its markers pass --strict-markers
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers", "-m", "not slow", "-rf")
    # toy_offset: shape + 4 shared contracts pass; toy_coarse: 5 of 6 pass, its declared stride does not
    result.assert_outcomes(passed=10, failed=1, deselected=4)
    result.stdout.fnmatch_lines([
        "E * segcore.testing.ContractViolation: decoder 'toy_coarse' (plugin \"toy\" from segcore-plugin-toy 0.1.0) "
        "breaks the contract 'declared channels and stride at odd sizes': at 64x64: output (2, 8, 2, 2), declared "
        "out_channels 8 at stride 4: (2, 8, 16, 16)",
        "FAILED test_toy.py::test_toy_contracts[[]decoder:toy_coarse:declared-channels-and-stride-at-odd-sizes[]]*",
    ])  # fmt: skip
    assert "toy_offset" not in "".join(line for line in result.outlines if line.startswith("FAILED"))


class _Shrink(Attention):
    """Pools 2x2: an attention must keep its input's shape."""

    def __init__(self, cfg, *, channels: int) -> None:
        super().__init__()

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 2)


class _ShrinkPlugin:
    @hookimpl
    def segcore_register(self, registry):
        import attrs

        registry.add(_Shrink, name="shrink", config=attrs.make_class("ShrinkConfig", {}, frozen=True))


def test_a_broken_attention_in_an_in_memory_registry_fails_naming_it_and_the_contract():
    pm = get_plugin_manager(autoload=False)
    pm.register(_ShrinkPlugin(), name="shrinker")
    registry = load_registry(pm)
    cases = contract_cases(plugin="shrinker", registry=registry, contracts=["keeps-the-shape-and-passes-gradients"])
    assert [c.id for c in cases] == ["attention:shrink:keeps-the-shape-and-passes-gradients"]
    with pytest.raises(ContractViolation, match=r"^attention 'shrink' \(plugin \"shrinker\"\) breaks the contract "
                                                r"'keeps the shape and passes gradients': at 8 channels: input "
                                                r"\(2, 8, 9, 13\), output \(2, 8, 4, 6\)$"):  # fmt: skip
        check(cases[0].entry, cases[0].contract)


def test_an_unknown_distribution_is_a_usage_error_naming_the_installed_ones(registry):
    with pytest.raises(pytest.UsageError, match=r"no component registered by distribution 'segcore-plugin-nope'; "
                                                r"installed: segcore"):  # fmt: skip
        contract_cases("segcore-plugin-nope", registry=registry)


def test_the_pytest_plugin_imports_neither_torch_nor_segcore_s_registry():
    """Loaded into every pytest session where segcore is installed (pytest11): it must cost nothing there."""
    code = "import sys, segcore.testing; print(sorted(m for m in ('torch', 'segcore.contracts') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_network_fixture_refuses_and_records_every_attempt_and_the_test_s_sleeps(segcore_network, monkeypatch):
    import http.client
    import socket
    import threading
    import time

    for proxy in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    with pytest.raises(OSError, match="no network in this test"):
        http.client.HTTPConnection("example.invalid", 80, timeout=30).request("GET", "/")
    with pytest.raises(OSError):
        socket.getaddrinfo("huggingface.co", 443)
    with socket.socket() as sock:
        with pytest.raises(OSError):
            sock.connect(("127.0.0.1", 9))
        assert sock.connect_ex(("127.0.0.1", 9)) != 0
    with socket.socket(socket.AF_UNIX) as local, pytest.raises(FileNotFoundError):  # local sockets are left alone
        local.connect("/nonexistent/segcore-test.sock")
    time.sleep(30)  # recorded, returns at once
    other = threading.Thread(target=time.sleep, args=(0.01,))  # another thread's sleep is not the test's
    other.start()
    other.join()
    assert segcore_network.attempts == [("connect", ("example.invalid", 80)), ("getaddrinfo", ("huggingface.co", 443)),
                                        ("connect", ("127.0.0.1", 9)), ("connect", ("127.0.0.1", 9))]  # fmt: skip
    assert segcore_network.sleeps == [30]
