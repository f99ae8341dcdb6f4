"""Fixtures shared by core's tests (tests/) and the plugins' tests (plugins/*/tests): the registry, built once per
session and never at import time.

- ``registry``: every installed plugin (autoload), what a plugin's tests need (its own components and those of the
  plugins it depends on). tests/conftest.py overrides it with core's built-ins alone; tests/integration/ puts it back.
- The contract tests come from segcore.testing (a pytest plugin, loaded through its ``pytest11`` entry point):
  ``contract_tests(distribution=...)`` in each tests/test_contracts.py.
"""

from __future__ import annotations

import pytest

from segcore import Registry
from segcore.testing import installed_registry


@pytest.fixture(scope="session")
def registry() -> Registry:
    """Every installed plugin (core's built-ins included); none of them may have failed to load."""
    reg = installed_registry()
    assert not reg.problems, reg.problems
    return reg
