"""Fixtures shared by core's tests (tests/) and the plugins' tests (plugins/*/tests): the registry, built once per
session and never at import time.

- ``registry``: every installed plugin (autoload), what a plugin's tests need (its own components and those of the
  plugins it depends on). tests/conftest.py overrides it with core's built-ins alone; tests/integration/ puts it back.
- ``@pytest.mark.entries(Stage)`` parametrizes a test's ``entry`` argument over every installed component of that
  stage (contract tests: third-party plugins included); ``where=`` filters them.
"""

from __future__ import annotations

import functools

import pytest

from segcore import Registry, get_plugin_manager, load_registry


@functools.cache
def installed_registry() -> Registry:
    """Core's built-ins and every installed plugin, loaded once."""
    return load_registry(get_plugin_manager())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "entries(stage, where=None): parametrize `entry` over every installed component "
                                       "of the stage")  # fmt: skip


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("entries")
    if marker is None or "entry" not in metafunc.fixturenames:
        return
    (stage,) = marker.args
    where = marker.kwargs.get("where") or (lambda e: True)
    entries = [e for e in installed_registry().entries(stage) if where(e)]
    metafunc.parametrize("entry", entries, ids=[f"{e.name}[{e.plugin.name}]" for e in entries])


@pytest.fixture(scope="session")
def registry() -> Registry:
    """Every installed plugin (core's built-ins included); none of them may have failed to load."""
    reg = installed_registry()
    assert not reg.problems, reg.problems
    return reg
