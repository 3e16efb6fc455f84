"""VS loss and its LA / CDT special cases: adjustments, special cases, reductions, gradients, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from tailwise.functional import cdt_loss, cross_entropy, logit_adjusted_loss, vs_adjustments, vs_loss
from tailwise.losses import CDTLoss, LogitAdjustedLoss, VSLoss
from tailwise.registry import LOSSES

COUNTS = [600, 150, 40, 9]
W = torch.tensor([0.2, 0.6, 1.2, 2.0], dtype=torch.float64)


def _batch(n: int = 16, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(n, 4, generator=g, dtype=dtype), torch.randint(0, 4, (n,), generator=g)


def test_adjustments() -> None:
    delta, iota = vs_adjustments(COUNTS, gamma=0.3, tau=1.5)
    total = sum(COUNTS)
    for c, n in enumerate(COUNTS):
        assert float(delta[c]) == pytest.approx((n / 600) ** 0.3, rel=1e-14)
        assert float(iota[c]) == pytest.approx(1.5 * math.log(n / total), rel=1e-14)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_slow_loop(reduction: str, weighted: bool) -> None:
    z, y = _batch()
    w = W if weighted else None
    total = sum(COUNTS)
    per, den = [], 0.0
    for i in range(len(y)):
        adj = torch.stack([(COUNTS[c] / 600) ** 0.2 * z[i, c] + 1.2 * math.log(COUNTS[c] / total) for c in range(4)])
        wi = 1.0 if w is None else float(w[y[i]])
        per.append(-torch.log_softmax(adj, 0)[y[i]] * wi)
        den += wi
    per_t = torch.stack(per)
    ref = {"none": per_t, "sum": per_t.sum(), "mean": per_t.sum() / den}[reduction]
    out = vs_loss(z, y, COUNTS, gamma=0.2, tau=1.2, weight=w, reduction=reduction)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(VSLoss(COUNTS, 0.2, 1.2, weight=w, reduction=reduction)(z, y), out)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_special_cases(reduction: str) -> None:
    z, y = _batch()
    ce = cross_entropy(z, y, W, reduction)
    torch.testing.assert_close(vs_loss(z, y, COUNTS, gamma=0.0, tau=0.0, weight=W, reduction=reduction), ce)
    la = vs_loss(z, y, COUNTS, gamma=0.0, tau=0.7, weight=W, reduction=reduction)
    torch.testing.assert_close(logit_adjusted_loss(z, y, COUNTS, tau=0.7, weight=W, reduction=reduction), la)
    torch.testing.assert_close(LogitAdjustedLoss(COUNTS, tau=0.7, weight=W, reduction=reduction)(z, y), la)
    prior = torch.tensor(COUNTS, dtype=torch.float64) / sum(COUNTS)
    torch.testing.assert_close(la, cross_entropy(z + 0.7 * prior.log(), y, W, reduction))
    cdt = vs_loss(z, y, COUNTS, gamma=0.4, tau=0.0, weight=W, reduction=reduction)
    torch.testing.assert_close(cdt_loss(z, y, COUNTS, gamma=0.4, weight=W, reduction=reduction), cdt)
    torch.testing.assert_close(CDTLoss(COUNTS, gamma=0.4, weight=W, reduction=reduction)(z, y), cdt)


def test_gradcheck() -> None:
    z, y = _batch(6)
    assert torch.autograd.gradcheck(lambda t: vs_loss(t, y, COUNTS, weight=W), (z.clone().requires_grad_(),))


def test_state_dict_and_registry() -> None:
    z, y = _batch()
    saved = VSLoss(COUNTS, 0.3, 1.0, weight=W)
    fresh = LOSSES.build("vs", {"gamma": 0.3, "tau": 1.0}, class_counts=COUNTS, num_classes=4)
    fresh.load_state_dict(saved.state_dict())
    torch.testing.assert_close(fresh(z, y), saved(z, y))
    assert isinstance(LOSSES.build("la", {}, class_counts=COUNTS), LogitAdjustedLoss)
    cdt = LOSSES.build("cdt", {"gamma": 0.1}, class_counts=COUNTS)
    assert isinstance(cdt, CDTLoss) and cdt.tau == 0.0 and cdt.gamma == 0.1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype: torch.dtype) -> None:
    z, y = _batch(64, torch.float32)
    zl = z.to(dtype)
    out = VSLoss(COUNTS)(zl, y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, vs_loss(zl.double(), y, COUNTS).float(), rtol=1e-6, atol=1e-6)


def test_bad_inputs() -> None:
    z, y = _batch()
    with pytest.raises(ValueError, match=r"class_counts must be positive for every class; got zero counts for classes \[1\]"):
        VSLoss([5, 0, 2, 1])
    with pytest.raises(ValueError, match=r"class_counts must have one entry per class \(4\); got 5 entries"):
        vs_loss(z, y, [5, 4, 3, 2, 1])
    with pytest.raises(ValueError, match="logits must have 5 columns, one per class of class_counts"):
        VSLoss([5, 4, 3, 2, 1])(z, y)
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        VSLoss(COUNTS, gamma=-0.2)
    with pytest.raises(ValueError, match="tau must be finite"):
        LogitAdjustedLoss(COUNTS, tau=float("inf"))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        vs_loss(z, -torch.ones_like(y), COUNTS)
    with pytest.raises(ValueError, match="logits must be finite"):
        vs_loss(torch.full_like(z, float("nan")), y, COUNTS)
    with pytest.raises(ValueError, match="reduction must be one of"):
        vs_loss(z, y, COUNTS, reduction="avg")
