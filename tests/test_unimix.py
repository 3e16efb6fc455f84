"""UniMix: deterministic core vs a slow loop, sampling distribution, generator determinism, bad inputs."""

from __future__ import annotations

import pytest
import torch

from tailwise.losses import BayiasLoss
from tailwise.registry import BATCH_TRANSFORMS
from tailwise.transforms import UniMix, mixed_loss, unimix, unimix_from_draws, unimix_probabilities, unimix_xi_star

COUNTS = [1000, 200, 40, 5]


def _batch(b: int = 12, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(9)
    return torch.randn(b, 3, 4, 4, generator=g, dtype=dtype), torch.randint(0, 4, (b,), generator=g)


def test_probabilities_and_xi_star() -> None:
    _, y = _batch()
    p = unimix_probabilities(y, COUNTS, tau=-0.5)
    raw = torch.tensor([COUNTS[int(c)] ** -0.5 for c in y], dtype=torch.float64)
    torch.testing.assert_close(p, raw / raw.sum())
    torch.testing.assert_close(unimix_probabilities(y, COUNTS, tau=0.0), torch.full((12,), 1 / 12, dtype=torch.float64))
    y_b = y.flip(0)
    xi = unimix_xi_star(y, y_b, COUNTS)
    for i in range(12):
        n_a, n_b = COUNTS[int(y[i])], COUNTS[int(y_b[i])]
        assert float(xi[i]) == pytest.approx(n_b / (n_a + n_b), rel=1e-15)


def test_from_draws_slow_loop() -> None:
    x, y = _batch()
    g = torch.Generator().manual_seed(1)
    partner = torch.randint(0, 12, (12,), generator=g)
    draws = torch.rand(12, generator=g, dtype=torch.float64)
    x_mix, y_a, y_b, lam = unimix_from_draws(x, y, COUNTS, partner, draws)
    assert torch.equal(y_a, y) and torch.equal(y_b, y[partner])
    for i in range(12):
        j = int(partner[i])
        n_i, n_j = COUNTS[int(y[i])], COUNTS[int(y[j])]
        lam_i = n_j / (n_i + n_j) + float(draws[i])
        if lam_i > 1:
            lam_i -= 1
        assert float(lam[i]) == pytest.approx(lam_i, rel=1e-14, abs=1e-15)
        torch.testing.assert_close(x_mix[i], lam_i * x[i] + (1 - lam_i) * x[j])
    zero = unimix_from_draws(x, y, COUNTS, partner, torch.zeros(12, dtype=torch.float64))[3]
    torch.testing.assert_close(zero, unimix_xi_star(y, y[partner], COUNTS))


def test_generator_determinism_and_global_rng_untouched() -> None:
    x, y = _batch(32)
    state = torch.get_rng_state()
    a = unimix(x, y, COUNTS, generator=torch.Generator().manual_seed(5))
    b = unimix(x, y, COUNTS, generator=torch.Generator().manual_seed(5))
    c = unimix(x, y, COUNTS, generator=torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), state)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[3], c[3])
    mix = UniMix(COUNTS)
    d = mix(x, y, generator=torch.Generator().manual_seed(5))
    for u, v in zip(a, d):
        assert torch.equal(u, v)


def test_partner_distribution_favours_the_tail() -> None:
    y = torch.tensor([0] * 50 + [3] * 50)
    x = torch.zeros(100, 2)
    g = torch.Generator().manual_seed(0)
    hits = 0
    for _ in range(40):
        hits += int((unimix(x, y, COUNTS, tau=-0.5, generator=g)[2] == 3).sum())
    expected = 5**-0.5 / (5**-0.5 + 1000**-0.5)
    assert hits / 4000 == pytest.approx(expected, abs=0.02)


@pytest.mark.parametrize("alpha", [0.8, 2.0])
def test_beta_draws_have_the_right_moments(alpha: float) -> None:
    # one class only: xi* = 1/2, so the Beta draw is recovered from lam = (1/2 + b) mod 1
    n = 20000
    y = torch.zeros(n, dtype=torch.int64)
    lam = unimix(torch.zeros(n, 1), y, [7, 3], alpha=alpha, generator=torch.Generator().manual_seed(2))[3].double()
    b = torch.where(lam <= 0.5, lam + 0.5, lam - 0.5)
    assert float(b.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(b.var()) == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.05)


def test_mixed_loss_slow_loop_and_check() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(8, 4, generator=g, dtype=torch.float64)
    y_a, y_b = torch.randint(0, 4, (8,), generator=g), torch.randint(0, 4, (8,), generator=g)
    lam = torch.rand(8, generator=g, dtype=torch.float64)
    crit = BayiasLoss(COUNTS, reduction="none")
    ref = sum(lam[i] * crit(logits[i : i + 1], y_a[i : i + 1])[0] + (1 - lam[i]) * crit(logits[i : i + 1], y_b[i : i + 1])[0] for i in range(8)) / 8
    torch.testing.assert_close(mixed_loss(crit, logits, y_a, y_b, lam), ref)
    with pytest.raises(ValueError, match=r"criterion must return per-sample losses of shape \(8,\)"):
        mixed_loss(BayiasLoss(COUNTS), logits, y_a, y_b, lam)
    z = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: mixed_loss(crit, t, y_a, y_b, lam), (z,))


def test_module_state_registry_and_low_precision() -> None:
    mix = BATCH_TRANSFORMS.build("unimix", {"alpha": 0.5, "tau": -0.1}, class_counts=COUNTS, num_classes=4)
    assert isinstance(mix, UniMix) and mix.alpha == 0.5 and mix.tau == -0.1
    mix.set_epoch(3)
    other = UniMix([1, 1, 1, 1])
    other.load_state_dict(mix.state_dict())
    assert torch.equal(other.class_counts, mix.class_counts)
    x, y = _batch(16, torch.float16)
    x_mix, _, _, lam = mix(x, y, generator=torch.Generator().manual_seed(0))
    assert x_mix.dtype == torch.float16 and lam.dtype == torch.float32
    x32 = unimix(x.float(), y, COUNTS, 0.5, -0.1, generator=torch.Generator().manual_seed(0))[0]
    torch.testing.assert_close(x_mix.float(), x32, rtol=2e-3, atol=2e-3)


def test_bad_inputs() -> None:
    x, y = _batch()
    p = torch.zeros(12, dtype=torch.int64)
    d = torch.zeros(12, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"class_counts must be positive for every class; got zero counts for classes \[1\]"):
        UniMix([5, 0, 3, 1])
    with pytest.raises(ValueError, match=r"y must lie in \[0, 2\] \(3 classes in class_counts\)"):
        unimix(x, y.clamp_min(1) + 1, [5, 3, 1])
    with pytest.raises(ValueError, match=r"partner_index must lie in \[0, 11\]"):
        unimix_from_draws(x, y, COUNTS, p + 12, d)
    with pytest.raises(ValueError, match=r"beta_draws must lie in \[0, 1\]"):
        unimix_from_draws(x, y, COUNTS, p, d + 2)
    with pytest.raises(ValueError, match=r"beta_draws must be a tensor of shape \(12,\)"):
        unimix_from_draws(x, y, COUNTS, p, d[:5])
    with pytest.raises(ValueError, match=r"y must have shape \(12,\)"):
        unimix(x, y[:5], COUNTS)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        UniMix(COUNTS, alpha=0.0)
    with pytest.raises(TypeError, match=r"x must be a floating-point torch\.Tensor"):
        unimix(y, y, COUNTS)
    with pytest.raises(TypeError, match="y must hold integer indices"):
        unimix(x, y.double(), COUNTS)
