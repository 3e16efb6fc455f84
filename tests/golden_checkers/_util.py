"""Helpers shared by the golden checkers."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch


def t64(a: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
    """float64 tensor from a stored array."""
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=requires_grad)


def t32(a: np.ndarray, requires_grad: bool = False) -> torch.Tensor:
    """float32 tensor from a stored array."""
    return torch.tensor(np.asarray(a), dtype=torch.float32, requires_grad=requires_grad)


def long(a: np.ndarray) -> torch.Tensor:
    """int64 tensor from a stored array."""
    return torch.tensor(np.asarray(a), dtype=torch.int64)


def optional_weight(a: np.ndarray) -> np.ndarray | None:
    """A weight-like key of shape (0,) means None."""
    a = np.asarray(a)
    return None if a.size == 0 else a


def meta(data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Parsed ``meta_json`` (empty when absent)."""
    if "meta_json" not in data:
        return {}
    return json.loads(str(data["meta_json"]))


def close(actual: Any, expected: Any, rtol: float = 1e-10, atol: float = 1e-12, what: str = "") -> None:
    """Assert ``actual`` ≈ ``expected`` with numpy semantics and a labelled message."""
    if isinstance(actual, torch.Tensor):
        actual = actual.detach().cpu().numpy()
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol, err_msg=what)
