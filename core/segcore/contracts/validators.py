"""attrs validators for values that are read later (sizes, scales, fractions), so a config that would fail in
``segcore run`` fails in ``segcore check`` first, with the key and the bad value. Plugins may use them too."""

from __future__ import annotations

__all__ = ["each_positive", "fractions", "fractions_each", "non_empty", "positive_size"]

from typing import Any


def positive_size(_: Any, attribute: Any, value: Any) -> None:
    """An (H, W) pair of positive integers (or None)."""
    if value is not None and not all(v > 0 for v in value):
        raise ValueError(f"'{attribute.name}' must be [height, width] with both > 0, got {list(value)}")


def each_positive(_: Any, attribute: Any, value: Any) -> None:
    """Every number in a sequence > 0."""
    bad = [v for v in value if not v > 0]
    if bad:
        raise ValueError(f"'{attribute.name}' must hold numbers > 0, got {list(value)}")


def non_empty(_: Any, attribute: Any, value: Any) -> None:
    if not len(value):
        raise ValueError(f"'{attribute.name}' must hold at least one value, got []")


def fractions(_: Any, attribute: Any, value: Any) -> None:
    """Increasing fractions strictly between 0 and 1 (points inside a budget)."""
    if any(not 0 < v < 1 for v in value) or list(value) != sorted(set(value)):
        raise ValueError(
            f"'{attribute.name}' must hold increasing fractions of the budget between 0 and 1 (e.g. [0.6, 0.9]), "
            f"got {list(value)}"
        )


def fractions_each(_: Any, attribute: Any, value: Any) -> None:
    """Every number in [0, 1) (decay rates such as AdamW's betas)."""
    if any(not 0 <= v < 1 for v in value):
        raise ValueError(f"'{attribute.name}' must hold numbers in [0, 1), got {list(value)}")
