"""l_inf-distance net: model, certificates, objectives, schedule, and soundness against PGD."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tailwise.certify import certified_from_worst, linf_certify, margin_certified, pgd_attack
from tailwise.losses import (
    LinfCrossEntropyLoss,
    LinfHingeLoss,
    LinfMixtureLoss,
    linf_crossentropy,
    linf_hinge_loss,
    linf_mixture_loss,
    linf_schedule,
)
from tailwise.models import LinfDistMLP, worst_case_margin


def small_model(p: float = math.inf) -> LinfDistMLP:
    return LinfDistMLP(3, 12, [1, 2, 2], 3, p=p, generator=torch.Generator().manual_seed(0)).double()


def test_model_structure_and_names() -> None:
    model = small_model()
    names = set(dict(model.named_parameters()))
    assert names == {"scalar", "fc_dist.0.weight", "fc_dist.1.weight", "fc_dist.2.weight", "fc_dist.2.bias"}
    assert "fc_dist.0.mean_shift.running_mean" in model.state_dict()
    assert model.fc_dist[2].mean_shift is None
    model.set_p(8.0)
    assert all(layer.p == 8.0 for layer in model.fc_dist)
    x = torch.randn(5, 1, 2, 2, dtype=torch.float64)
    assert model(x).shape == (5, 3)


def test_lipschitz_at_p_inf() -> None:
    model = small_model().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 1, 2, 2, generator=g, dtype=torch.float64)
    delta = 0.3 * (2 * torch.rand(x.shape, generator=g, dtype=torch.float64) - 1)
    z = model(x) / model.scalar
    z2 = model(x + delta) / model.scalar
    assert ((z2 - z).abs().amax(1) <= delta.flatten(1).abs().amax(1) + 1e-12).all()


def test_ibp_is_at_least_as_tight_as_margin() -> None:
    model = small_model().eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(16, 1, 2, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=g)
    logits, worst_lip = model(x, y, 0.2)
    _, worst_ibp = model(x, y, 0.2, -10.0, 10.0)
    assert (worst_ibp <= worst_lip + 1e-12).all()
    assert (worst_lip.gather(1, y.view(-1, 1)) == 0).all()
    # margin certificate from logits with Lipschitz constant s agrees with the worst tensor
    torch.testing.assert_close(
        margin_certified(logits, y, 0.2, lipschitz=float(model.scalar.detach())), certified_from_worst(worst_lip, y)
    )


def test_worst_case_margin_formula() -> None:
    z = torch.tensor([[1.0, 0.5, -1.0]])
    worst = worst_case_margin(z - 0.1, z + 0.1, torch.tensor([0]), 0.1)
    torch.testing.assert_close(worst, torch.tensor([[0.0, (0.6 - 0.9) / 0.2, (-0.9 - 0.9) / 0.2]]))


def test_objectives_match_formulas() -> None:
    g = torch.Generator().manual_seed(3)
    out = torch.randn(6, 4, generator=g, dtype=torch.float64)
    worst = 1.5 * torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (6,), generator=g)
    worst = worst.scatter(1, y.view(-1, 1), 0.0)
    mix = LinfMixtureLoss(0.1, 0.0005)
    ref = worst.clamp(0, 1).amax(1).mean() + 0.1 * F.cross_entropy(out, y)
    torch.testing.assert_close(mix(out, worst, y), ref)
    torch.testing.assert_close(linf_mixture_loss(out, worst, y, 0.1), ref)
    lam = mix.update(0.37)
    assert lam == pytest.approx(0.1 * 0.005**0.37, rel=1e-12)
    hinge = 0.75 * worst.clamp(min=0).amax(1).mean() + 0.25 * worst.clamp(min=0).mean()
    torch.testing.assert_close(LinfHingeLoss(0.25)(out, worst, y), hinge)
    torch.testing.assert_close(linf_hinge_loss(out, worst, y, 0.25), hinge)
    ce = 0.7 * F.cross_entropy(worst, y) + 0.3 * F.cross_entropy(out, y)
    torch.testing.assert_close(LinfCrossEntropyLoss(0.3)(out, worst, y), ce)
    torch.testing.assert_close(linf_crossentropy(out, worst, y, 0.3), ce)
    # state round trip of the scheduled lambda
    other = LinfMixtureLoss(0.1, 0.0005)
    other.load_state_dict(mix.state_dict())
    assert other.lam == mix.lam


def test_objective_gradcheck() -> None:
    g = torch.Generator().manual_seed(4)
    out = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    worst = (0.3 + torch.rand(5, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    y = torch.randint(0, 3, (5,), generator=g)
    assert torch.autograd.gradcheck(lambda o, w: linf_mixture_loss(o, w, y, 0.2), (out, worst))
    assert torch.autograd.gradcheck(lambda o, w: linf_crossentropy(o, w, y, 0.4), (out, worst))


def test_schedule() -> None:
    sched = linf_schedule([0, 0, 2, 8, 10], 5, 0.3, p_start=8, p_end=1000, lr=(0.03, 0.006), lam0=0.1, lam_end=0.001)
    s0 = sched(0, 0)
    assert s0.p == 8.0 and s0.eps == 0.3 and s0.lrs == (0.03, 0.006) and s0.lam == 0.1
    mid = sched(5, 0)
    assert mid.ratio_p == pytest.approx(0.5)
    assert mid.p == pytest.approx(8 * (1000 / 8) ** 0.5)
    assert mid.lam == pytest.approx(0.1 * 0.01**0.5)
    assert mid.lrs[0] == pytest.approx(0.015)
    assert math.isinf(sched(8, 0).p) and sched(10, 0).lrs[0] == pytest.approx(0.0, abs=1e-15)
    ramp = linf_schedule([0, 4, 4, 8, 10], 5, 0.3)
    assert ramp(2, 0).eps == pytest.approx(0.15) and ramp(0, 0).eps == 0.0
    assert ramp(9, 0).p == math.inf and linf_schedule([0, 0, 0, 1, 2], 1, 0.1, p_end=50)(1, 0).p == 50
    model = small_model()
    params = [p for n, p in model.named_parameters() if n != "scalar"]
    opt = torch.optim.Adam([{"params": params}, {"params": [model.scalar]}], lr=1.0)
    loss = LinfMixtureLoss(0.1, 0.001)
    state = linf_schedule([0, 0, 2, 8, 10], 5, 0.3, lam0=0.1, lam_end=0.001).apply(5, 0, model, opt, loss)
    assert model.p == state.p and opt.param_groups[1]["lr"] == state.lrs[1] and loss.lam == pytest.approx(state.lam)


def test_certificates_never_certify_points_pgd_breaks() -> None:
    """Train a tiny l_inf-dist net on two overlapping blobs; a certified point is never broken by PGD."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        n, eps, steps = 64, 0.4, 200
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randn(n, 2, generator=g) * 0.6 + (2.0 * y.float() - 1).view(-1, 1) * torch.tensor([1.0, 0.5])
        model = LinfDistMLP(3, 16, 2, 2, generator=g)
        opt = torch.optim.Adam(
            [{"params": [p for k, p in model.named_parameters() if k != "scalar"]}, {"params": [model.scalar]}],
            lr=0.03,
            betas=(0.9, 0.99),
            eps=1e-10,
        )
        loss_fn = LinfMixtureLoss(0.1, 0.002)
        sched = linf_schedule([0, 0, 10, 100, steps], 1, eps, lam0=0.1, lam_end=0.002)
        for step in range(steps):
            sched.apply(step, 0, model, opt, loss_fn)
            model.train()
            out, worst = model(x, y, eps)
            loss = loss_fn(out, worst, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert math.isinf(model.p)
        correct, cert_ibp = linf_certify(model, x, y, eps, lower=-5.0, upper=5.0)
        _, cert_margin = linf_certify(model, x, y, eps, method="margin")
        model.eval()
        adv = pgd_attack(model, x, y, eps, steps=30, generator=g, lower=-5.0, upper=5.0)
        assert (adv - x).abs().max() <= eps + 1e-6
        with torch.no_grad():
            broken = model(adv).argmax(1) != y
    finally:
        torch.set_num_threads(threads)
    assert cert_ibp.sum() > n // 2, "the trained net should certify most points"
    assert not (cert_ibp & broken).any()
    assert not (cert_margin & broken).any()
    assert (cert_margin <= cert_ibp).all()
    assert (cert_ibp <= correct).all()


def test_pgd_respects_ball_and_domain() -> None:
    model = small_model().eval()
    g = torch.Generator().manual_seed(5)
    x = torch.rand(8, 1, 2, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=g)
    adv = pgd_attack(model, x, y, 0.1, steps=5, generator=g, lower=0.0, upper=1.0, loss="margin")
    assert (adv - x).abs().max() <= 0.1 + 1e-12 and adv.min() >= 0 and adv.max() <= 1
    again = pgd_attack(model, x, y, 0.1, steps=5, generator=torch.Generator().manual_seed(5), lower=0.0, upper=1.0)
    assert again.shape == x.shape


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="depth must be an integer >= 2"):
        LinfDistMLP(1, 4, 2, 2)
    model = small_model()
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 2, 2\)"):
        model(torch.randn(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
        model(torch.randn(2, 4, dtype=torch.float64), torch.tensor([0, 1]), -0.1)
    out, worst, y = torch.randn(3, 2), torch.randn(3, 2), torch.tensor([0, 1, 0])
    with pytest.raises(ValueError, match="worst must have the shape of outputs"):
        linf_mixture_loss(out, worst[:, :1], y, 0.1)
    with pytest.raises(ValueError, match=r"targets labels must lie in \[0, 1\]"):
        linf_hinge_loss(out, worst, torch.tensor([0, 2, 0]))
    with pytest.raises(ValueError, match="mix must lie in"):
        LinfHingeLoss(1.5)
    with pytest.raises(ValueError, match="epochs must be 5"):
        linf_schedule([0, 1, 2], 10, 0.1)
    with pytest.raises(ValueError, match="lam0 and lam_end must be given together"):
        linf_schedule([0, 0, 1, 2, 3], 10, 0.1, lam0=0.1)
    with pytest.raises(ValueError, match="method must be one of"):
        linf_certify(model, torch.randn(2, 4, dtype=torch.float64), torch.tensor([0, 1]), 0.1, method="crown")
