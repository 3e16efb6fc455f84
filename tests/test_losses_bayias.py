"""Bayias-compensated loss: prior offset, special cases, reductions, gradients, module twin, bad inputs."""

from __future__ import annotations

import pytest
import torch

from tailwise.functional import bayias_loss, bayias_offset, cross_entropy, logit_adjusted_loss
from tailwise.losses import BayiasLoss
from tailwise.registry import LOSSES

COUNTS = [800, 120, 30, 6]


def _batch(n: int = 16, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(8)
    return torch.randn(n, 4, generator=g, dtype=dtype), torch.randint(0, 4, (n,), generator=g)


def test_offset() -> None:
    n = torch.tensor(COUNTS, dtype=torch.float64)
    q = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(bayias_offset(COUNTS, q), (n / n.sum()).log() - (q / q.sum()).log())
    torch.testing.assert_close(bayias_offset(COUNTS), (n / n.sum()).log() - torch.log(torch.tensor(0.25)).double())


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_special_cases(reduction: str) -> None:
    z, y = _batch()
    w = torch.tensor([0.3, 0.9, 1.1, 1.7], dtype=torch.float64)
    # target prior == training prior: plain cross-entropy
    torch.testing.assert_close(
        bayias_loss(z, y, COUNTS, target_prior=COUNTS, weight=w, reduction=reduction), cross_entropy(z, y, w, reduction)
    )
    # uniform target prior: logit-adjusted loss with tau = 1
    torch.testing.assert_close(
        bayias_loss(z, y, COUNTS, weight=w, reduction=reduction),
        logit_adjusted_loss(z, y, COUNTS, tau=1.0, weight=w, reduction=reduction),
    )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_slow_loop_and_module(reduction: str) -> None:
    z, y = _batch()
    q = [5.0, 1.0, 1.0, 3.0]
    off = bayias_offset(COUNTS, q)
    w = torch.tensor([0.3, 0.9, 1.1, 1.7], dtype=torch.float64)
    per = torch.stack([-torch.log_softmax(z[i] + off, 0)[y[i]] * w[y[i]] for i in range(len(y))])
    ref = {"none": per, "sum": per.sum(), "mean": per.sum() / w[y].sum()}[reduction]
    out = bayias_loss(z, y, COUNTS, q, weight=w, reduction=reduction)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(BayiasLoss(COUNTS, q, weight=w, reduction=reduction)(z, y), out)


def test_gradcheck_state_dict_registry() -> None:
    z, y = _batch(6)
    assert torch.autograd.gradcheck(
        lambda t: bayias_loss(t, y, COUNTS, [1, 2, 3, 4]), (z.clone().requires_grad_(),)
    )
    saved = BayiasLoss(COUNTS, [1, 2, 3, 4], weight=[1.0, 2.0, 3.0, 4.0])
    fresh = LOSSES.build("bayias", {"target_prior": [1, 2, 3, 4]}, class_counts=COUNTS, num_classes=4)
    fresh.load_state_dict(saved.state_dict())
    torch.testing.assert_close(fresh(z, y), saved(z, y))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype: torch.dtype) -> None:
    z, y = _batch(64, torch.float32)
    zl = z.to(dtype)
    out = BayiasLoss(COUNTS)(zl, y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, bayias_loss(zl.double(), y, COUNTS).float(), rtol=1e-6, atol=1e-6)


def test_bad_inputs() -> None:
    z, y = _batch()
    with pytest.raises(ValueError, match=r"class_counts must be positive for every class; got zero counts for classes \[3\]"):
        BayiasLoss([5, 4, 3, 0])
    with pytest.raises(ValueError, match=r"target_prior must be positive for every class"):
        BayiasLoss(COUNTS, target_prior=[0.5, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"target_prior must have one entry per class \(4\); got 2 entries"):
        bayias_loss(z, y, COUNTS, target_prior=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"class_counts must have one entry per class \(4\); got 3 entries"):
        bayias_loss(z, y, [3, 2, 1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        BayiasLoss(COUNTS)(z, y + 4)
    with pytest.raises(ValueError, match="logits must be finite"):
        bayias_loss(torch.full_like(z, float("-inf")), y, COUNTS)
    with pytest.raises(ValueError, match="reduction must be one of"):
        BayiasLoss(COUNTS, reduction="mean_of_weighted")
