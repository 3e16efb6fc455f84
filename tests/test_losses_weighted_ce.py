"""Class-weighted cross-entropy: weights from counts, weighted-mean semantics, module twin, bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tailwise.class_counts import effective_number_weights
from tailwise.functional import class_weights_from_counts, weighted_cross_entropy
from tailwise.losses import WeightedCrossEntropyLoss
from tailwise.registry import LOSSES

COUNTS = [500, 200, 50, 10]


def _batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g)


def test_weights() -> None:
    n = torch.tensor(COUNTS, dtype=torch.float64)
    inv = class_weights_from_counts(COUNTS)
    torch.testing.assert_close(inv, (1 / n) / (1 / n).sum() * 4)
    sqrt = class_weights_from_counts(COUNTS, power=0.5)
    torch.testing.assert_close(sqrt, n.rsqrt() / n.rsqrt().sum() * 4)
    en = class_weights_from_counts(COUNTS, "effective_number", beta=0.99)
    torch.testing.assert_close(en, effective_number_weights(COUNTS, 0.99))
    assert float(en.sum()) == pytest.approx(4.0)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("scheme", ["inverse_frequency", "effective_number"])
def test_weighted_semantics_vs_slow_loop(reduction: str, scheme: str) -> None:
    z, y = _batch()
    w = class_weights_from_counts(COUNTS, scheme)
    out = weighted_cross_entropy(z, y, COUNTS, scheme=scheme, reduction=reduction)
    per = torch.stack([-torch.log_softmax(z[i], 0)[y[i]] * w[y[i]] for i in range(16)])
    ref = {"none": per, "sum": per.sum(), "mean": per.sum() / w[y].sum()}[reduction]
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    module = WeightedCrossEntropyLoss(COUNTS, scheme=scheme, reduction=reduction)
    torch.testing.assert_close(module(z, y), out)


def test_gradcheck_and_state_dict() -> None:
    z, y = _batch(6)
    assert torch.autograd.gradcheck(lambda t: weighted_cross_entropy(t, y, COUNTS), (z.requires_grad_(),))
    a = WeightedCrossEntropyLoss(COUNTS, scheme="effective_number", beta=0.9)
    b = WeightedCrossEntropyLoss([1, 1, 1, 1], scheme="effective_number", beta=0.9)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.class_weight, a.class_weight)


def test_low_precision_and_registry() -> None:
    z, y = _batch(64)
    out = weighted_cross_entropy(z.half(), y, COUNTS)
    assert out.dtype == torch.float32
    ref = F.cross_entropy(z.half().float(), y, weight=class_weights_from_counts(COUNTS).float())
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    loss = LOSSES.build("weighted_ce", {"scheme": "effective_number"}, class_counts=COUNTS, num_classes=4)
    assert isinstance(loss, WeightedCrossEntropyLoss)


def test_bad_inputs() -> None:
    z, y = _batch()
    with pytest.raises(ValueError, match="class_counts must be positive for every class; got zero counts for classes"):
        weighted_cross_entropy(z, y, [5, 0, 3, 2])
    with pytest.raises(ValueError, match=r"class_counts must have one entry per class \(4\); got 3 entries"):
        weighted_cross_entropy(z, y, [5, 4, 3])
    with pytest.raises(ValueError, match="scheme must be one of"):
        WeightedCrossEntropyLoss(COUNTS, scheme="sqrt")
    with pytest.raises(ValueError, match="reduction must be one of"):
        WeightedCrossEntropyLoss(COUNTS, reduction="batchmean")
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\)"):
        class_weights_from_counts(COUNTS, "effective_number", beta=1.0)
