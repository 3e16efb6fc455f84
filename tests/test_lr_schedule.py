"""Learning-rate factors: LDAM-DRW warm-up and x0.01 steps, cosine."""

from __future__ import annotations

import math

import pytest

from tailwise.train.lr_schedule import lr_factor


def test_ldam_drw_schedule() -> None:
    kw = dict(epochs=200, name="multistep", warmup_epochs=5, milestones=[160, 180], gamma=0.01)
    assert [lr_factor(e, **kw) for e in range(6)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    assert lr_factor(159, **kw) == 1.0
    assert lr_factor(160, **kw) == pytest.approx(0.01)
    assert lr_factor(179, **kw) == pytest.approx(0.01)
    assert lr_factor(180, **kw) == pytest.approx(1e-4)


def test_cosine_and_constant() -> None:
    assert lr_factor(0, epochs=10, name="cosine") == 1.0
    assert lr_factor(5, epochs=10, name="cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(10, epochs=10, name="cosine", min_factor=0.1) == pytest.approx(0.1)
    assert lr_factor(7, epochs=10, name="constant") == 1.0


def test_unknown_schedule() -> None:
    with pytest.raises(ValueError, match=r"schedule.name must be one of \['multistep', 'cosine', 'constant'\]; got 'step'"):
        lr_factor(0, epochs=10, name="step")
