"""Susceptibility (Forouzesh et al., ICLR 2023): the probe, the tracker, zeta and model selection."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tailwise.functional import susceptibility_probe, susceptibility_zeta
from tailwise.metrics import SusceptibilityTracker, select_models


def _model(bn: bool = False) -> nn.Module:
    torch.manual_seed(1)
    layers: list[nn.Module] = [nn.Linear(8, 12)]
    if bn:
        layers.append(nn.BatchNorm1d(12))
    layers += [nn.ReLU(), nn.Linear(12, 5)]
    return nn.Sequential(*layers).double()


def _trained_optimizer(model: nn.Module, lr: float = 0.1) -> torch.optim.Optimizer:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):  # build momentum history
        opt.zero_grad()
        F.cross_entropy(model(torch.randn(16, 8, dtype=torch.float64)), torch.randint(5, (16,))).backward()
        opt.step()
    opt.zero_grad()
    return opt


def _snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    return copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        elif isinstance(a[k], dict):
            _assert_same(a[k], b[k])
        elif isinstance(a[k], list):
            assert len(a[k]) == len(b[k])
            for x, y in zip(a[k], b[k]):
                if isinstance(x, dict):
                    _assert_same(x, y)
                else:
                    assert x == y
        else:
            assert a[k] == b[k], k


def test_probe_matches_manual_step_and_leaves_model_untouched() -> None:
    model = _model(bn=True)
    opt = _trained_optimizer(model)
    x = torch.randn(32, 8, dtype=torch.float64)
    y = torch.randint(5, (32,))
    model_state, opt_state = _snapshot(model, opt)

    # Manual reference on explicit copies: train mode, one step of the training optimiser.
    ref_model = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # load_state_dict shares the buffers
    ref_model.train()
    before = F.cross_entropy(ref_model(x), y)
    before.backward()
    ref_opt.step()
    with torch.no_grad():
        after = F.cross_entropy(ref_model(x), y)

    model.eval()  # the probe must not change the caller's mode either
    b, a = susceptibility_probe(model, opt, x, 5, labels=y)
    assert b == pytest.approx(float(before.detach()), rel=1e-12) and a == pytest.approx(float(after), rel=1e-12)
    assert b > a
    assert not model.training
    _assert_same(model.state_dict(), model_state)  # BN running stats included
    _assert_same(opt.state_dict(), opt_state)


def test_probe_with_lr_scheduler_does_not_step_the_real_optimizer() -> None:
    model = _model()
    opt = _trained_optimizer(model)
    torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)  # patches opt.step
    model_state, opt_state = _snapshot(model, opt)
    susceptibility_probe(model, opt, torch.randn(16, 8, dtype=torch.float64), 5, generator=torch.Generator().manual_seed(0))
    _assert_same(model.state_dict(), model_state)
    _assert_same(opt.state_dict(), opt_state)


def test_fresh_sgd_and_eval_mode_options() -> None:
    model = _model(bn=True)
    opt = _trained_optimizer(model, lr=0.05)
    x = torch.randn(32, 8, dtype=torch.float64)
    y = torch.randint(5, (32,))
    ref = copy.deepcopy(model).eval()
    before = F.cross_entropy(ref(x), y)
    before.backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.05 * p.grad  # plain SGD: no momentum, no weight decay
        after = F.cross_entropy(ref(x), y)
    b, a = susceptibility_probe(model, opt, x, 5, labels=y, train_mode=False, use_optimizer_state=False)
    assert b == pytest.approx(float(before.detach()), rel=1e-12) and a == pytest.approx(float(after), rel=1e-12)
    b2, a2 = susceptibility_probe(model, opt, x, 5, labels=y, use_optimizer_state=True)
    assert (b2, a2) != (b, a)  # train mode + momentum differ


def test_generator_reproducibility() -> None:
    model = _model()
    opt = _trained_optimizer(model)
    x = torch.randn(20, 8, dtype=torch.float64)
    r1 = susceptibility_probe(model, opt, x, 5, generator=torch.Generator().manual_seed(3))
    r2 = susceptibility_probe(model, opt, x, 5, generator=torch.Generator().manual_seed(3))
    assert r1 == r2


def test_zeta_aggregations() -> None:
    before = [5.0, 4.0, 3.5, 3.0, 2.0]
    after = [4.0, 3.0, 3.0, 2.0, 1.0]  # r = 1, 1, 0.5, 1, 1
    epochs, zeta = susceptibility_zeta(before, after)
    assert epochs.tolist() == [0, 1, 2, 3, 4]
    torch.testing.assert_close(zeta, torch.tensor([1.0, 1.0, 2.5 / 3, 3.5 / 4, 4.5 / 5], dtype=torch.float64))
    epochs, zeta = susceptibility_zeta(before, after, "notebook")
    r = [1.0, 1.0, 0.5, 1.0, 1.0]
    assert epochs.tolist() == [1, 2, 3, 4]
    torch.testing.assert_close(zeta, torch.tensor([sum(r[1:t]) / t for t in range(1, 5)], dtype=torch.float64))
    assert susceptibility_zeta([], [])[1].numel() == 0
    assert susceptibility_zeta([], [], "notebook")[1].numel() == 0


def test_tracker_steps_and_state_dict() -> None:
    model = _model()
    opt = _trained_optimizer(model)
    pool = torch.randn(300, 8, dtype=torch.float64)
    tracker = SusceptibilityTracker(num_classes=5, batch_size=64)
    g = torch.Generator().manual_seed(0)
    rs = [tracker.step(model, opt, pool, g) for _ in range(3)]
    torch.testing.assert_close(tracker.r, torch.tensor(rs, dtype=torch.float64))
    torch.testing.assert_close(tracker.zeta, torch.cumsum(tracker.r, 0) / torch.arange(1, 4, dtype=torch.float64))
    assert tracker.current() == pytest.approx(float(tracker.zeta[-1]))

    restored = SusceptibilityTracker(num_classes=5, batch_size=64, aggregation="notebook")
    restored.load_state_dict(tracker.state_dict())
    assert restored.aggregation == "running_mean"
    torch.testing.assert_close(restored.zeta, tracker.zeta)
    restored.record(2.0, 1.0)
    assert len(restored.loss_before) == 4
    restored.reset()
    assert restored.zeta.numel() == 0


def test_select_models() -> None:
    runs = [
        {"name": "a", "train_accuracy": 0.9, "zeta": 0.1},  # high accuracy, low zeta: selected
        {"name": "b", "train_accuracy": 0.95, "zeta": 0.8},  # memorising
        {"name": "c", "train_accuracy": 0.5, "zeta": 0.05},  # under-fitting
        {"name": "d", "train_accuracy": 0.85, "zeta": 0.2},  # selected
    ]
    assert select_models(runs) == [0, 3]
    with pytest.raises(ValueError, match="must have the key 'zeta'"):
        select_models([{"train_accuracy": 0.5}])
    with pytest.raises(ValueError, match="at least one candidate"):
        select_models([])


def test_bad_inputs() -> None:
    model = _model()
    opt = _trained_optimizer(model)
    x = torch.randn(4, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        susceptibility_probe(model, opt, x, 0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        susceptibility_probe(model, opt, x, 5, labels=torch.tensor([0, 1, 2, 9]))
    with pytest.raises(ValueError, match=r"labels must be an integer tensor of shape \(4,\)"):
        susceptibility_probe(model, opt, x, 5, labels=torch.tensor([0, 1]))
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer"):
        susceptibility_probe(model, None, x, 5)  # type: ignore[arg-type]
    other = torch.optim.SGD(_model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="not parameters of model"):
        susceptibility_probe(model, other, x, 5)
    with pytest.raises(ValueError, match="aggregation must be one of"):
        SusceptibilityTracker(num_classes=5, aggregation="mean")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        SusceptibilityTracker(num_classes=5, batch_size=0)
    with pytest.raises(ValueError, match="missing key"):
        SusceptibilityTracker(num_classes=5).load_state_dict({"loss_before": []})
