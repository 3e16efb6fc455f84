"""Label-smoothing loss: smoothed targets, special case, module twin, bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tailwise.functional import cross_entropy, label_smoothing_loss
from tailwise.losses import LabelSmoothingLoss
from tailwise.registry import LOSSES


def _batch(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randint(0, 6, (n,), generator=g)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_smoothed_target_slow_loop(reduction: str) -> None:
    z, y = _batch()
    eps = 0.3
    per = []
    for i in range(len(y)):
        q = torch.full((6,), eps / 6, dtype=torch.float64)
        q[y[i]] += 1 - eps
        per.append(-(q * torch.log_softmax(z[i], 0)).sum())
    per_t = torch.stack(per)
    ref = {"none": per_t, "mean": per_t.mean(), "sum": per_t.sum()}[reduction]
    torch.testing.assert_close(label_smoothing_loss(z, y, eps, reduction=reduction), ref, rtol=1e-12, atol=1e-12)


def test_special_case_and_module() -> None:
    z, y = _batch()
    torch.testing.assert_close(label_smoothing_loss(z, y, 0.0), cross_entropy(z, y))
    w = torch.rand(6, dtype=torch.float64) + 0.5
    module = LabelSmoothingLoss(0.2, weight=w)
    torch.testing.assert_close(module(z, y), F.cross_entropy(z, y, weight=w, label_smoothing=0.2))
    fresh = LabelSmoothingLoss(0.2)
    fresh.load_state_dict(module.state_dict())
    torch.testing.assert_close(fresh(z, y), module(z, y))
    assert isinstance(LOSSES.build("label_smoothing", {"smoothing": 0.1}, num_classes=6), LabelSmoothingLoss)


def test_gradcheck_and_low_precision() -> None:
    z, y = _batch(5)
    assert torch.autograd.gradcheck(lambda t: label_smoothing_loss(t, y, 0.1), (z.clone().requires_grad_(),))
    out = label_smoothing_loss(z.bfloat16(), y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.cross_entropy(z.bfloat16().float(), y, label_smoothing=0.1))


def test_bad_inputs() -> None:
    z, y = _batch()
    with pytest.raises(ValueError, match=r"smoothing must lie in \[0, 1\]"):
        label_smoothing_loss(z, y, -0.1)
    with pytest.raises(ValueError, match=r"smoothing must lie in \[0, 1\]"):
        LabelSmoothingLoss(2.0)
    with pytest.raises(ValueError, match="logits must be finite"):
        label_smoothing_loss(z.clone().fill_(float("inf")), y)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\]"):
        label_smoothing_loss(z, y - 1 - y.max())
