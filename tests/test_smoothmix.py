"""SmoothMix and Gaussian-augmentation training objectives."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tailwise.certify import GaussianAugmentationLoss, SmoothMixLoss, smoothmix_train_step, smoothmix_warmup


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(1), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 5)).double()


def batch(seed: int = 0, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 2, 2, generator=g, dtype=torch.float64), torch.randint(0, 5, (n,), generator=g)


def test_generator_determinism() -> None:
    model = mlp()
    x, y = batch()
    loss_fn = SmoothMixLoss(0.25, num_noises=2, num_steps=3, alpha=0.5, mix_step=1)
    a, pa = loss_fn(model, x, y, generator=torch.Generator().manual_seed(3), return_parts=True)
    b, pb = loss_fn(model, x, y, generator=torch.Generator().manual_seed(3), return_parts=True)
    c = loss_fn(model, x, y, generator=torch.Generator().manual_seed(4))
    assert a.item() == b.item() and a.item() != c.item()
    torch.testing.assert_close(pa["noises"], pb["noises"])
    torch.testing.assert_close(pa["lam"], pb["lam"])
    assert pa["noises"].shape == (2, *x.shape) and (pa["lam"] >= 0).all() and (pa["lam"] < 0.5).all()
    # injecting the drawn noises and lambda reproduces the loss
    again = loss_fn(model, x, y, noises=pa["noises"], lam=pa["lam"])
    assert again.item() == a.item()


def test_structure_of_the_loss() -> None:
    model = mlp()
    x, y = batch(1)
    noises = 0.25 * torch.randn(2, *x.shape, dtype=torch.float64)
    lam = torch.full((6,), 0.25, dtype=torch.float64)
    loss_fn = SmoothMixLoss(0.25, num_noises=2, num_steps=2, alpha=0.5, mix_step=0, eta=5.0)
    loss, parts = loss_fn(model, x, y, noises=noises, lam=lam, warmup=1.0, return_parts=True)
    torch.testing.assert_close(parts["x_init"], x)  # mix_step = 0: the clean input
    assert (parts["x_adv"] >= 0).all() and (parts["x_adv"] <= 1).all()
    logits = model((x.unsqueeze(0) + noises).reshape(12, 3, 2, 2))
    torch.testing.assert_close(parts["loss_xent"], F.cross_entropy(logits, y.repeat(2), reduction="none"))
    avg = F.softmax(logits, 1).view(2, 6, 5).mean(0)
    torch.testing.assert_close(parts["clean_avg_softmax"], avg)
    torch.testing.assert_close(parts["mixed_targets"], 0.75 * avg + 0.25 / 5)
    torch.testing.assert_close(parts["mixed_inputs"], 0.75 * x + 0.25 * parts["x_adv"])
    expected = parts["loss_xent"].mean() + 5.0 * (parts["ind_correct"] * parts["loss_mixup"]).mean()
    torch.testing.assert_close(loss, expected)
    # warm-up factor 0 leaves only the cross-entropy
    loss0 = loss_fn(model, x, y, noises=noises, lam=lam, warmup=0.0)
    torch.testing.assert_close(loss0, parts["loss_xent"].mean())


def test_adversary_increases_smoothed_nll_and_respects_maxnorm() -> None:
    model = mlp()
    x, y = batch(2)
    noises = 0.1 * torch.randn(2, *x.shape, dtype=torch.float64)
    loss_fn = SmoothMixLoss(0.1, num_noises=2, num_steps=4, alpha=0.3, maxnorm=0.5)
    x_init, x_adv = loss_fn.attack(model, x, y, noises)

    def nll(inp: torch.Tensor) -> torch.Tensor:
        avg = sum(F.softmax(model(inp + n), 1) for n in noises) / 2
        return F.nll_loss(avg.log(), y, reduction="sum")

    assert nll(x_adv) > nll(x)
    assert ((x_adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-6).all()
    torch.testing.assert_close(x_init, x)
    assert all(p.requires_grad for p in model.parameters()) and model.training


def test_detach_target_changes_gradients_not_value() -> None:
    x, _ = batch(3)
    noises = 0.25 * torch.randn(2, *x.shape, dtype=torch.float64)
    lam = torch.rand(6, dtype=torch.float64) / 2
    grads, values = [], []
    for detach in (False, True):
        model = mlp()
        # make the confidence mask non-trivial: use the model's own clean predictions as labels
        y_hat = model(x).argmax(1)
        loss = SmoothMixLoss(0.25, num_steps=2, detach_target=detach)(model, x, y_hat, noises=noises, lam=lam)
        loss.backward()
        values.append(loss.detach())
        grads.append(model[1].weight.grad.clone())
    torch.testing.assert_close(values[0], values[1])
    assert not torch.allclose(grads[0], grads[1])


def test_gaussian_augmentation_loss() -> None:
    model = mlp()
    x, y = batch(4)
    noises = 0.5 * torch.randn(3, *x.shape, dtype=torch.float64)
    loss = GaussianAugmentationLoss(0.5, num_noises=3)(model, x, y, noises=noises)
    ref = F.cross_entropy(model((x.unsqueeze(0) + noises).reshape(18, 3, 2, 2)), y.repeat(3))
    torch.testing.assert_close(loss, ref)
    fn = GaussianAugmentationLoss(0.5)
    a = fn(model, x, y, generator=torch.Generator().manual_seed(0))
    b = fn(model, x, y, generator=torch.Generator().manual_seed(0))
    assert a.item() == b.item()


def test_warmup_state_and_train_step() -> None:
    assert smoothmix_warmup(0) == pytest.approx(0.1) and smoothmix_warmup(9) == 1.0 and smoothmix_warmup(3, 0) == 1.0
    loss_fn = SmoothMixLoss(0.25, num_noises=2, num_steps=1)
    loss_fn.set_epoch(4)
    assert loss_fn.warmup_factor == pytest.approx(0.5)
    other = SmoothMixLoss(0.25)
    other.load_state_dict(loss_fn.state_dict())
    assert other.warmup_factor == pytest.approx(0.5)

    model = mlp()
    steps = []
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.register_step_post_hook(lambda *_: steps.append(1))
    x, y = batch(5, n=8)
    value = smoothmix_train_step(loss_fn, model, opt, x, y, generator=torch.Generator().manual_seed(0))
    assert len(steps) == 2 and torch.isfinite(value)
    smoothmix_train_step(loss_fn, model, opt, x, y, per_chunk=False)
    assert len(steps) == 3


def test_bad_inputs() -> None:
    model = mlp()
    x, y = batch()
    loss_fn = SmoothMixLoss(0.25)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        loss_fn(model, x + 1.0, y)
    with pytest.raises(ValueError, match=r"noises must have shape \(m, 6, 3, 2, 2\)"):
        loss_fn(model, x, y, noises=torch.zeros(2, 6, 12, dtype=torch.float64))
    with pytest.raises(ValueError, match="noises must hold num_noises=2 draws"):
        loss_fn(model, x, y, noises=torch.zeros(3, *x.shape, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"lam must be a tensor of shape \(6,\)"):
        loss_fn(model, x, y, lam=torch.zeros(5))
    with pytest.raises(ValueError, match=r"y must be an int64 tensor of shape \(6,\)"):
        loss_fn(model, x, y[:3])
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        SmoothMixLoss(0.0)
    with pytest.raises(ValueError, match="num_noises must be an integer >= 1"):
        SmoothMixLoss(0.25, num_noises=0)
    with pytest.raises(ValueError, match="num_noises must be an integer >= 1"):
        GaussianAugmentationLoss(0.25, num_noises=0)
