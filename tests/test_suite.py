"""The suite's own set-up (the root conftest.py): no test's outcome depends on which tests ran before it."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def drawn_at_setup() -> torch.Tensor:
    return torch.rand(3)


def _seed_0_draw(n: int) -> torch.Tensor:
    return torch.rand(n, generator=torch.Generator().manual_seed(0))


def test_a_test_starts_from_seed_0():
    assert torch.equal(torch.rand(4), _seed_0_draw(4))


def test_a_module_fixture_starts_from_seed_0_wherever_the_generator_was(request):
    torch.rand(5)  # the generator moves on, as an earlier test in the worker would have moved it
    state = torch.get_rng_state()
    assert torch.equal(request.getfixturevalue("drawn_at_setup"), _seed_0_draw(3))
    assert torch.equal(torch.get_rng_state(), state)  # building it left this test's generator where it was
