"""l_inf-dist net training through the trainer: LinfDistObjective (linf_v2 / linf_v1) and its schedule hook."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tailwise.losses import LinfDistHingeObjective, LinfDistObjective, LinfHingeLoss, LinfMixtureLoss, linf_schedule
from tailwise.models import LinfDistMLP
from tailwise.registry import LOSSES, MODELS
from tailwise.train.config import config_from_dict
from tailwise.train.trainer import Trainer


def tiny_cfg(epochs: int = 1, schedule: tuple[int, ...] = (0, 0, 0, 1, 2), **loss: Any) -> Any:
    return config_from_dict({
        "data": {"name": "mnist1d", "options": {"num_samples": 400}, "val_fraction": 0.2},
        "model": {"name": "linf_dist_mlp", "depth": 3, "width": 16},
        "loss": {"name": "linf_v2", "eps_train": 0.1, "epochs": list(schedule), **loss},
        "optim": {"name": "adam", "lr": 0.03, "betas": [0.9, 0.99], "weight_decay": 0.0},
        "schedule": {"name": "constant", "warmup_epochs": 0},
        "train": {"epochs": epochs, "batch_size": 64, "eval_batch_size": 512, "progress": False, "plots": False,
                  "threads": 1},
    })


def small_net(dtype: torch.dtype = torch.float32) -> LinfDistMLP:
    return LinfDistMLP(3, 12, 6, 3, generator=torch.Generator().manual_seed(0)).to(dtype)


def test_registry_defaults_and_names() -> None:
    model = MODELS.build("linf_dist_mlp", {}, num_classes=10, input_dim=784, in_channels=1, input_shape=(1, 28, 28))
    assert len(model.fc_dist) == 5 and model.fc_dist[0].out_features == 1024
    v2 = LOSSES.build("linf_v2", {}, num_classes=10)
    assert isinstance(v2, LinfDistObjective) and isinstance(v2.criterion, LinfMixtureLoss)
    assert (v2.criterion.lam0, v2.criterion.lam_end, v2.epochs, v2.eps_train) == (0.05, 0.0002, (0, 0, 25, 400, 450), 0.45)
    v1 = LOSSES.build("linf_v1", {}, num_classes=10)
    assert isinstance(v1, LinfDistHingeObjective) and isinstance(v1.criterion, LinfHingeLoss)
    assert v1.criterion.mix == 0.25 and v1.epochs == (0, 0, 50, 350, 400)
    assert LOSSES.get("linf_dist") is LinfDistObjective
    assert LinfDistObjective.needs_model and not getattr(LinfDistObjective, "needs_worst", False)


def test_input_units() -> None:
    assert LinfDistObjective(eps_train=0.45, input_std=0.3081).eps_model == pytest.approx(0.45 / 0.3081)
    cifar = LinfDistObjective(eps_train=3 * 8 / 255, input_std=[0.2023, 0.1994, 0.2010], lam0=0.1, lam_end=0.0005)
    assert cifar.eps_model == pytest.approx(3 * 8 / 255 / 0.1994)


def test_forward_matches_model_and_criterion() -> None:
    net = small_net(torch.float64).train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=g)
    obj = LinfDistObjective(eps_train=0.2, lam0=0.1, lam_end=0.01)
    state = net.state_dict()
    value = obj(net, x, y)
    net.load_state_dict(state)  # undo the mean-shift running-average update
    out, worst = net(x, y, 0.2)
    torch.testing.assert_close(value, LinfMixtureLoss(0.1, 0.01)(out, worst, y))
    hinge = LinfDistHingeObjective(eps_train=0.2)
    net.load_state_dict(state)
    value = hinge(net, x, y)
    net.load_state_dict(state)
    out, worst = net(x, y, 0.2)
    torch.testing.assert_close(value, LinfHingeLoss(0.25)(out, worst, y))
    assert torch.autograd.gradcheck(lambda xx: obj(net, xx, y), (x.clone().requires_grad_(True),))


@pytest.mark.parametrize("objective", ["mixture", "hinge"])
def test_schedule_values_equal_linf_schedule(objective: str) -> None:
    kw = {"lam0": 0.1, "lam_end": 0.001} if objective == "mixture" else {"mix": 0.25}
    epochs = (0, 2, 2, 8, 10)
    obj = LinfDistObjective(objective, eps_train=0.3, input_std=0.3081, epochs=epochs, p_start=8, p_end=1000, **kw)
    net = small_net()
    params = [p for n, p in net.named_parameters() if n != "scalar"]
    opt = torch.optim.Adam([{"params": params, "lr": 0.03}, {"params": [net.scalar], "lr": 0.006}])
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    ref = linf_schedule(epochs, 5, 0.3 / 0.3081, p_start=8, p_end=1000, lr=(0.03, 0.006),
                        lam0=kw.get("lam0"), lam_end=kw.get("lam_end"))
    for epoch, step in [(0, 0), (0, 3), (1, 4), (2, 0), (4, 2), (7, 4), (8, 0), (9, 4)]:
        state = obj.on_train_step(epoch, step, 5, opt, net)
        want = ref(epoch, step)
        assert state == want
        assert net.p == want.p and all(layer.p == want.p for layer in net.fc_dist)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx(list(want.lrs))
        assert obj.eps == pytest.approx(max(want.eps, 0.3 / 0.3081 / 10))  # floored at the first ramp value
        if objective == "mixture":
            assert obj.criterion.lam == pytest.approx(want.lam)
    assert math.isinf(net.p)


def test_single_group_scalar_update_equals_two_groups() -> None:
    """Shrinking the scalar's update reproduces the official two-group Adam exactly."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 16, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6, 16), generator=g)
    nets, runs = [small_net(torch.float64), small_net(torch.float64)], []
    for k, net in enumerate(nets):
        obj = LinfDistObjective(eps_train=0.2, epochs=(0, 0, 1, 4, 7), lam0=0.5, lam_end=0.1)
        if k == 0:
            opt = torch.optim.Adam(net.parameters(), lr=0.03, betas=(0.9, 0.99))
        else:
            params = [p for n, p in net.named_parameters() if n != "scalar"]
            opt = torch.optim.Adam([{"params": params, "lr": 0.03}, {"params": [net.scalar], "lr": 0.006}], betas=(0.9, 0.99))
        for epoch in range(6):
            obj.on_train_step(epoch, 0, 1, opt, net)
            loss = obj(net, x[epoch], y[epoch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        obj.on_train_step(6, 0, 1, opt, net)  # applies the pending shrink of the last update
        runs.append(net.state_dict())
    assert runs[0]["scalar"].item() != 1.0
    for key in runs[1]:
        if key != "_extra_state":
            torch.testing.assert_close(runs[0][key], runs[1][key], rtol=1e-9, atol=1e-12)


def test_state_round_trip() -> None:
    net = small_net()
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    obj = LinfDistObjective(eps_train=0.3, epochs=(0, 1, 1, 3, 4), lam0=0.1, lam_end=0.001)
    obj.on_train_step(1, 2, 5, opt, net)
    net.scalar.data.fill_(1.5)
    obj.on_train_step(1, 3, 5, opt, net)
    fresh = LinfDistObjective(eps_train=0.3, epochs=(0, 1, 1, 3, 4), lam0=0.1, lam_end=0.001)
    fresh.load_state_dict(obj.state_dict())
    assert fresh.position == (1, 3, 5) and fresh.eps == obj.eps and fresh.base_lrs == [0.03]
    assert fresh.state == obj.state and fresh.criterion.lam == obj.criterion.lam
    torch.testing.assert_close(fresh._scalar_prev, obj._scalar_prev)
    # the model carries its p in its state dict (evaluation of best.pt at the trained p)
    other = small_net()
    other.load_state_dict(net.state_dict())
    assert other.p == net.p == obj.state.p


def test_one_epoch_through_trainer(tmp_path: Path) -> None:
    trainer = Trainer(tiny_cfg(epochs=1), run_dir=tmp_path / "run", log=None)
    summary = trainer.fit()
    steps = math.ceil(len(trainer.data.train) / 64)
    record = trainer.history[0]
    assert math.isfinite(record["train_loss"]) and record["skipped_steps"] == 0
    obj = trainer.loss
    assert obj.position == (0, steps - 1, steps)
    want = linf_schedule((0, 0, 0, 1, 2), steps, 0.1, lr=0.03, lam0=0.05, lam_end=0.0002)(0, steps - 1)
    assert trainer.model.p == want.p and record["lr"] == pytest.approx(want.lrs[0])
    assert obj.criterion.lam == pytest.approx(want.lam)
    assert 0.0 <= summary["test_best"]["accuracy"] <= 1.0


def test_resume_reproduces_uninterrupted_run(tmp_path: Path) -> None:
    full = Trainer(tiny_cfg(epochs=2), run_dir=tmp_path / "full", log=None)
    full.fit()
    first = Trainer(tiny_cfg(epochs=1), run_dir=tmp_path / "cut", log=None)
    first.fit()
    resumed = Trainer(tiny_cfg(epochs=2), run_dir=tmp_path / "cut", resume="auto", log=None)
    assert resumed.start_epoch == 1 and resumed.loss.position == first.loss.position
    resumed.fit()
    for key, value in full.model.state_dict().items():
        if key != "_extra_state":
            torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
    assert resumed.model.p == full.model.p


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="objective must be one of"):
        LinfDistObjective("margin")
    with pytest.raises(ValueError, match="mix applies to the hinge"):
        LinfDistObjective("mixture", mix=0.5)
    with pytest.raises(ValueError, match="lam0/lam_end apply to the mixture"):
        LinfDistObjective("hinge", lam0=0.1, lam_end=0.01)
    with pytest.raises(ValueError, match="eps_train"):
        LinfDistObjective(eps_train=0.0)
    with pytest.raises(ValueError, match="input_std"):
        LinfDistObjective(input_std=[])
    with pytest.raises(ValueError, match="epochs must"):
        LinfDistObjective(epochs=(0, 0, 5, 2, 10))
    mlp = MODELS.build("mlp", {}, num_classes=3, input_dim=6)
    with pytest.raises(TypeError, match="needs an l_inf-distance net"):
        LinfDistObjective()(mlp, torch.randn(4, 6), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="needs an l_inf-distance net"):
        LinfDistObjective().on_train_step(0, 0, 1, None, mlp)
    with pytest.raises(ValueError, match="y must be a tensor of shape"):
        LinfDistObjective()(small_net(), torch.randn(4, 6), torch.zeros(3, dtype=torch.long))
