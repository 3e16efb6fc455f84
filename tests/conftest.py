"""Test configuration: make ``golden_checkers`` importable and keep runs deterministic."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA}")
    return SHARED_DATA


class EqCalls:
    """Counts ``torch.eq`` calls while entered (the fused kernels build the mask of the row maxima with it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        self._monkeypatch = monkeypatch
        self._eq = torch.eq

    def _counting(self, *args: object, **kwargs: object) -> torch.Tensor:
        self.count += 1
        return self._eq(*args, **kwargs)

    def __enter__(self) -> EqCalls:
        self._monkeypatch.setattr(torch, "eq", self._counting)
        return self

    def __exit__(self, *exc: object) -> None:
        self._monkeypatch.setattr(torch, "eq", self._eq)


@pytest.fixture
def eq_calls(monkeypatch: pytest.MonkeyPatch) -> EqCalls:
    """An :class:`EqCalls` counter, entered with ``with eq_calls:``."""
    return EqCalls(monkeypatch)
