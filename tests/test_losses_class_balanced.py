"""Class-balanced loss (Cui et al.): effective-number weights on CE or focal."""

from __future__ import annotations

import pytest
import torch

from tailwise.class_counts import effective_number_weights
from tailwise.functional import class_balanced_loss, cross_entropy, focal_loss
from tailwise.losses import ClassBalancedLoss
from tailwise.registry import LOSSES

COUNTS = [1000, 300, 60, 8]


def _batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_ce_and_focal_forms(reduction: str) -> None:
    z, y = _batch()
    w = effective_number_weights(COUNTS, 0.999)
    out = class_balanced_loss(z, y, COUNTS, beta=0.999, reduction=reduction)
    per = torch.stack([-torch.log_softmax(z[i], 0)[y[i]] * w[y[i]] for i in range(16)])
    ref = {"none": per, "sum": per.sum(), "mean": per.sum() / w[y].sum()}[reduction]
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    foc = class_balanced_loss(z, y, COUNTS, beta=0.999, loss_type="focal", gamma=1.0, reduction=reduction)
    torch.testing.assert_close(foc, focal_loss(z, y, 1.0, w, reduction))
    module = ClassBalancedLoss(COUNTS, beta=0.999, loss_type="focal", gamma=1.0, reduction=reduction)
    torch.testing.assert_close(module(z, y), foc)


def test_beta_zero_is_plain_loss() -> None:
    z, y = _batch()
    torch.testing.assert_close(class_balanced_loss(z, y, COUNTS, beta=0.0), cross_entropy(z, y))


def test_gradcheck_state_dict_registry() -> None:
    z, y = _batch(6)
    assert torch.autograd.gradcheck(
        lambda t: class_balanced_loss(t, y, COUNTS, loss_type="focal"), (z.clone().requires_grad_(),)
    )
    a = ClassBalancedLoss(COUNTS)
    b = LOSSES.build("class_balanced", {"beta": 0.9}, class_counts=[1, 2, 3, 4], num_classes=4)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.class_weight, a.class_weight)
    out = class_balanced_loss(z.half(), y, COUNTS)
    assert out.dtype == torch.float32


def test_bad_inputs() -> None:
    z, y = _batch()
    with pytest.raises(ValueError, match="loss_type must be one of"):
        class_balanced_loss(z, y, COUNTS, loss_type="sigmoid")
    with pytest.raises(ValueError, match="class_counts must be positive for every class"):
        ClassBalancedLoss([10, 0, 3, 1])
    with pytest.raises(ValueError, match=r"class_counts must have one entry per class \(4\)"):
        class_balanced_loss(z, y, [10, 3, 1])
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\)"):
        ClassBalancedLoss(COUNTS, beta=1.5)
