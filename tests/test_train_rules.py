"""Train rules as weight schedules: DRW, Reweight, None; state_dict round trips; bad inputs."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tailwise.class_counts import effective_number_weights
from tailwise.losses import LDAMLoss
from tailwise.registry import WEIGHT_SCHEDULES
from tailwise.schedules import DeferredReweighting, NoReweighting, Reweighting

CIFAR10_LT100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
DRW_C10_LT100 = [0.0506, 0.0769, 0.1211, 0.1950, 0.3188, 0.5246, 0.8683, 1.4426, 2.4092, 3.9927]


def test_drw_switches_at_the_switch_epoch() -> None:
    drw = DeferredReweighting(CIFAR10_LT100)
    for epoch in (0, 1, 159):
        assert torch.equal(drw.weight(epoch), torch.ones(10, dtype=torch.float64))
    for epoch in (160, 161, 199, 400):
        w = drw.weight(epoch)
        torch.testing.assert_close(w, torch.tensor(DRW_C10_LT100, dtype=torch.float64), atol=1e-4, rtol=0)
        assert float(w.sum()) == pytest.approx(10.0)
        torch.testing.assert_close(w, effective_number_weights(CIFAR10_LT100, 0.9999))
    custom = DeferredReweighting([10, 5, 1], beta=0.9, switch_epoch=3)
    assert torch.equal(custom.weight(2), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(custom.weight(3), effective_number_weights([10, 5, 1], 0.9))


def test_set_epoch_drives_weight_without_argument() -> None:
    drw = DeferredReweighting(CIFAR10_LT100, switch_epoch=5)
    drw.set_epoch(4)
    assert torch.equal(drw.weight(), torch.ones(10, dtype=torch.float64))
    drw.set_epoch(5)
    torch.testing.assert_close(drw.weight(), drw.weight(5))


def test_reweight_and_none_rules() -> None:
    rw = Reweighting(CIFAR10_LT100)
    for epoch in (0, 100, 200):
        torch.testing.assert_close(rw.weight(epoch), effective_number_weights(CIFAR10_LT100, 0.9999))
    assert NoReweighting().weight(0) is None
    assert NoReweighting().weight() is None


def test_returned_weights_are_copies() -> None:
    drw = DeferredReweighting([3, 2, 1], switch_epoch=0)
    w = drw.weight(0)
    w.zero_()
    assert float(drw.weight(0).sum()) == pytest.approx(3.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DeferredReweighting([30, 20, 1], beta=0.99, switch_epoch=7),
        lambda: Reweighting([30, 20, 1], beta=0.9),
        NoReweighting,
    ],
)
def test_state_dict_round_trip(make: Callable[[], Any]) -> None:
    saved = make()
    saved.set_epoch(9)
    state = saved.state_dict()
    fresh = type(saved)(*([[1, 1, 1]] if not isinstance(saved, NoReweighting) else []))
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert fresh.epoch == 9
    a, b = saved.weight(), fresh.weight()
    assert (a is None and b is None) or torch.equal(a, b)
    torch.save(state, io.BytesIO())  # serialisable


def test_registry_and_trainer_hook_with_a_loss() -> None:
    drw = WEIGHT_SCHEDULES.build("drw", {"switch_epoch": 2}, class_counts=CIFAR10_LT100, num_classes=10)
    assert isinstance(drw, DeferredReweighting) and drw.beta == 0.9999
    assert isinstance(WEIGHT_SCHEDULES.build("reweight", {}, class_counts=CIFAR10_LT100), Reweighting)
    assert isinstance(WEIGHT_SCHEDULES.build("none", {}, class_counts=CIFAR10_LT100), NoReweighting)
    loss = LDAMLoss(CIFAR10_LT100)
    for epoch in range(4):
        drw.set_epoch(epoch)
        loss.set_weight(drw.weight(epoch))
    torch.testing.assert_close(loss.weight, drw.weight(3))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"class_counts must be positive for every class; got zero counts for classes \[1\]"):
        DeferredReweighting([10, 0, 3])
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\); got 1.0"):
        DeferredReweighting([10, 3], beta=1.0)
    with pytest.raises(ValueError, match="switch_epoch must be a non-negative integer; got -1"):
        DeferredReweighting([10, 3], switch_epoch=-1)
    with pytest.raises(TypeError, match="epoch must be a non-negative integer"):
        Reweighting([10, 3]).weight(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epoch must be a non-negative integer; got -2"):
        DeferredReweighting([10, 3]).set_epoch(-2)
    with pytest.raises(ValueError, match=r"state for DeferredReweighting must have keys .*missing \['switch_epoch'\]"):
        DeferredReweighting([10, 3]).load_state_dict({"epoch": 1, "class_counts": [1, 2], "beta": 0.9})
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        NoReweighting().load_state_dict({"epoch": 1, "extra": 2})
