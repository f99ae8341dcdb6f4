"""Fixtures shared by core's tests (tests/) and the plugins' tests (plugins/*/tests): the registry, built once per
session and never at import time.

- ``registry``: every installed plugin (autoload), what a plugin's tests need (its own components and those of the
  plugins it depends on). tests/conftest.py overrides it with core's built-ins alone; tests/integration/ puts it back.
- The contract tests come from segcore.testing (a pytest plugin, loaded through its ``pytest11`` entry point):
  ``contract_tests(distribution=...)`` in each tests/test_contracts.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from _pytest.reports import TestReport
from filelock import FileLock

from segcore import Registry
from segcore.testing import installed_registry


@pytest.fixture(scope="session")
def registry() -> Registry:
    """Every installed plugin (core's built-ins included); none of them may have failed to load."""
    reg = installed_registry()
    assert not reg.problems, reg.problems
    return reg


@pytest.fixture(autouse=True)
def _torch_state():
    """Each test, core's and the plugins', starts from torch's seed 0 and leaves torch's thread count as it found it (a
    bench script a test runs in-process sets its own), so no outcome depends on which tests ran before in the worker."""
    import torch

    threads = torch.get_num_threads()
    torch.manual_seed(0)
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef):
    """A module- or session-scoped fixture (a model with random weights, a short training run) starts from torch's
    seed 0 too: it is built before the first test that asks for it, whichever test that is in the worker, so without
    this it would draw from wherever the tests before it left torch's generator. The generator is the test's again
    afterwards (a fixture fetched inside a test, ``request.getfixturevalue``, leaves the test's draws alone)."""
    if fixturedef.scope == "function":
        return (yield)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return (yield)


# -- modules that run in a process of their own ------------------------------------------------------------------------
# A test module with ``pytestmark = pytest.mark.isolated`` runs in one child pytest process (its selected tests, in one
# go, module fixtures shared); the results are reported here test by test. For libraries whose threads outlive their
# tests and crash later tests of the same process: with OpenVINO's runtime loaded (openvino 2025, torch 2.14), a later
# test's training run segfaults the whole session.

_CHILD = "SEGCORE_ISOLATED_CHILD"
_RESULTS: dict[Path, dict[str, tuple[str, str]]] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "isolated: the module runs in a child pytest process of its own")
    _share_the_cores()


# -- pytest -n N (pytest-xdist, README's test command) -----------------------------------------------------------------
# N worker processes share the machine's cores: each computes on cores/N threads (at least one), and so do the processes
# its tests start (segcore commands, torchrun), through OMP_NUM_THREADS. Without this, N workers each running torch's
# default of one thread per core oversubscribe the cores and OpenMP's spinning threads slow every one of them down.


def _share_the_cores() -> None:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return
    import torch

    from segcore.io import usable_cores

    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, usable_cores() // workers))  # yours, if you set it
    torch.set_num_threads(threads)  # the same count here and in the processes tests start (bitwise comparisons)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _isolated_results(item: pytest.Item) -> dict[str, tuple[str, str]]:
    """name -> (outcome, text) for the selected tests of *item*'s module, run in one child process. Under pytest -n N
    every worker collects them all and may be handed some: the first to get one runs the child, the others wait for
    its results (a file beside the workers' temp folders, under a lock), so the module runs once."""
    if item.path not in _RESULTS:
        run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
        if run is None:
            _RESULTS[item.path] = _run_isolated(item)
        else:
            # the workers' temp folders share a parent for the run (pytest-xdist's documented way to share data)
            shared = item.config._tmp_path_factory.getbasetemp().parent / f"isolated-{run}-{item.path.stem}.json"
            with FileLock(f"{shared}.lock"):
                if not shared.exists():
                    shared.write_text(json.dumps(_run_isolated(item)))
                _RESULTS[item.path] = {k: tuple(v) for k, v in json.loads(shared.read_text()).items()}
    return _RESULTS[item.path]


def _run_isolated(item: pytest.Item) -> dict[str, tuple[str, str]]:
    ids = [i.nodeid for i in item.session.items if i.path == item.path]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow or not slow",
                               f"--junitxml={report}", *ids], cwd=item.config.rootpath, capture_output=True,
                              text=True, env={**os.environ, _CHILD: "1"})  # fmt: skip
        results: dict[str, tuple[str, str]] = {}
        if report.exists():
            for case in ET.parse(report).iter("testcase"):
                bad = case.find("failure") if case.find("failure") is not None else case.find("error")
                skipped = case.find("skipped")
                if bad is not None:
                    results[case.get("name", "")] = ("failed", bad.text or bad.get("message", ""))
                elif skipped is not None:
                    results[case.get("name", "")] = ("skipped", skipped.get("message", ""))
                else:
                    results[case.get("name", "")] = ("passed", "")
        crash = f"the child process ended with {done.returncode}:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
        return {n: results.get(n, ("failed", crash)) for n in (i.name for i in item.session.items if i.path == item.path)}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if os.environ.get(_CHILD) or item.get_closest_marker("isolated") is None:
        return None
    outcome, text = _isolated_results(item)[item.name]
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for when in ("setup", "call", "teardown"):
        result = outcome if when == "call" else "passed"
        longrepr = None if result == "passed" else (
            (str(item.path), item.location[1] or 0, text) if result == "skipped" else f"[in the isolated child] {text}")
        item.ihook.pytest_runtest_logreport(report=TestReport(
            item.nodeid, item.location, dict.fromkeys(item.keywords, 1), result, longrepr, when, [], 0.0))  # fmt: skip
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
