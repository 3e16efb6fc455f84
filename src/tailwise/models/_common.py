"""Argument checks shared by the reference models (integers and sizes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tailwise._validation import describe


def check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Raise unless ``value`` is an integer (not a bool) of at least ``minimum``; return it as ``int``.

    Raises:
        TypeError: ``value`` is not an integer.
        ValueError: ``value`` is smaller than ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_int_tuple(name: str, value: Any, length: int | None = None, *, minimum: int = 1) -> tuple[int, ...]:
    """Validate an integer or a sequence of integers (each ``>= minimum``) and return a tuple.

    A single integer is broadcast to ``length`` entries when ``length`` is given.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (check_int(name, value, minimum=minimum),) * (length or 1)
    if not isinstance(value, Sequence) or isinstance(value, str):
        expected = f"an integer or a sequence of {length} integers" if length else "an integer or a sequence of integers"
        raise TypeError(f"{name} must be {expected}; got {describe(value)}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must have {length} entries; got {len(value)} ({value!r})")
    return tuple(check_int(f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(value))
