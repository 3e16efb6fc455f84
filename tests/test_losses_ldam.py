"""LDAM loss: margins, special cases, reductions, gradients, module twin, state, bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tailwise.functional import cross_entropy, ldam_loss, ldam_margins
from tailwise.losses import LDAMLoss
from tailwise.registry import LOSSES

CIFAR10_LT100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
COUNTS = [400, 100, 25, 4]


def _batch(n: int = 16, c: int = 4, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(6)
    return torch.rand(n, c, generator=g, dtype=dtype) * 2 - 1, torch.randint(0, c, (n,), generator=g)


def test_margins() -> None:
    m = ldam_margins(CIFAR10_LT100)
    expected = [0.1581, 0.1797, 0.2042, 0.2321, 0.2638, 0.2998, 0.3407, 0.3872, 0.4405, 0.5]
    torch.testing.assert_close(m, torch.tensor(expected, dtype=torch.float64), atol=1e-4, rtol=0)
    n = torch.tensor(COUNTS, dtype=torch.float64)
    torch.testing.assert_close(ldam_margins(COUNTS, 0.3), 0.3 * (n.min() / n) ** 0.25)
    assert float(ldam_margins(COUNTS, 0.3).max()) == pytest.approx(0.3)
    assert torch.equal(ldam_margins(COUNTS, 0.0), torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_zero_margin_unit_scale_is_cross_entropy(reduction: str, weighted: bool) -> None:
    z, y = _batch()
    w = torch.tensor([0.1, 0.4, 1.0, 2.5], dtype=torch.float64) if weighted else None
    out = ldam_loss(z, y, COUNTS, max_margin=0.0, scale=1.0, weight=w, reduction=reduction)
    torch.testing.assert_close(out, cross_entropy(z, y, w, reduction), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_slow_loop(reduction: str, weighted: bool) -> None:
    z, y = _batch()
    w = torch.tensor([0.1, 0.4, 1.0, 2.5], dtype=torch.float64) if weighted else None
    m = ldam_margins(COUNTS, 0.5)
    per, den = [], 0.0
    for i in range(len(y)):
        zi = z[i].clone()
        zi[y[i]] -= m[y[i]]
        wi = 1.0 if w is None else float(w[y[i]])
        per.append(-torch.log_softmax(30.0 * zi, 0)[y[i]] * wi)
        den += wi
    per_t = torch.stack(per)
    ref = {"none": per_t, "sum": per_t.sum(), "mean": per_t.sum() / den}[reduction]
    out = ldam_loss(z, y, COUNTS, weight=w, reduction=reduction)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ldam_loss(z, y, margins=m, weight=w, reduction=reduction), out)
    torch.testing.assert_close(LDAMLoss(COUNTS, weight=w, reduction=reduction)(z, y), out)


def test_gradcheck() -> None:
    z, y = _batch(6)
    w = torch.tensor([0.1, 0.4, 1.0, 2.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda t: ldam_loss(t, y, COUNTS, scale=5.0, weight=w), (z.clone().requires_grad_(),)
    )


def test_module_buffers_set_weight_and_state_dict() -> None:
    z, y = _batch()
    loss = LDAMLoss(COUNTS, max_margin=0.4, scale=16.0)
    torch.testing.assert_close(loss.margins, ldam_margins(COUNTS, 0.4))
    assert {"class_counts", "margins"} <= set(loss.state_dict())
    w = torch.tensor([0.5, 0.7, 1.1, 1.7], dtype=torch.float64)
    loss.set_weight(w)
    torch.testing.assert_close(loss(z, y), ldam_loss(z, y, COUNTS, max_margin=0.4, scale=16.0, weight=w))
    fresh = LDAMLoss(COUNTS, max_margin=0.4, scale=16.0)
    fresh.load_state_dict(loss.state_dict())  # a checkpoint written after the DRW switch
    torch.testing.assert_close(fresh(z, y), loss(z, y))
    loss.set_weight(None)
    torch.testing.assert_close(loss(z, y), ldam_loss(z, y, COUNTS, max_margin=0.4, scale=16.0))
    fresh.load_state_dict(loss.state_dict())
    assert fresh.weight is None


def test_registry() -> None:
    loss = LOSSES.build("ldam", {"max_margin": 0.3}, class_counts=COUNTS, num_classes=4)
    assert isinstance(loss, LDAMLoss)
    assert loss.scale == 30.0 and loss.max_margin == 0.3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_input_is_float32_accurate(dtype: torch.dtype) -> None:
    z, y = _batch(64, dtype=torch.float32)
    zl = z.to(dtype)
    out = ldam_loss(zl, y, COUNTS)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ldam_loss(zl.double(), y, COUNTS).float(), rtol=1e-6, atol=1e-5)


def test_bad_inputs() -> None:
    z, y = _batch()
    with pytest.raises(ValueError, match=r"class_counts must be positive for every class; got zero counts for classes \[2\]"):
        LDAMLoss([10, 5, 0, 1])
    with pytest.raises(ValueError, match="class_counts must be positive for every class"):
        ldam_margins([3, 0])
    with pytest.raises(ValueError, match=r"class_counts must have one entry per class \(4\); got 3 entries"):
        ldam_loss(z, y, [10, 5, 1])
    with pytest.raises(ValueError, match=r"logits must have 3 columns, one per class of class_counts; got shape \(16, 4\)"):
        LDAMLoss([10, 5, 1])(z, y)
    with pytest.raises(ValueError, match="class_counts must be non-negative"):
        LDAMLoss([10, -5, 1, 1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        ldam_loss(z, torch.full_like(y, 4), COUNTS)
    with pytest.raises(ValueError, match="logits must be finite"):
        ldam_loss(torch.full_like(z, float("nan")), y, COUNTS)
    with pytest.raises(ValueError, match="reduction must be one of"):
        LDAMLoss(COUNTS, reduction="weighted")
    with pytest.raises(ValueError, match="exactly one of class_counts or margins"):
        ldam_loss(z, y)
    with pytest.raises(ValueError, match="exactly one of class_counts or margins"):
        ldam_loss(z, y, COUNTS, margins=torch.zeros(4))
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        ldam_loss(z, y, COUNTS, scale=0.0)
    with pytest.raises(ValueError, match="max_margin must be a finite number >= 0"):
        ldam_margins(COUNTS, -0.1)
    with pytest.raises(ValueError, match="weight must be a 1-D tensor with 4 entries"):
        LDAMLoss(COUNTS).set_weight(torch.ones(5))


def test_matches_plain_formula_in_float32() -> None:
    z, y = _batch(32, dtype=torch.float32)
    m = ldam_margins(COUNTS).float()
    ref = F.cross_entropy(30 * (z - F.one_hot(y, 4) * m), y)
    torch.testing.assert_close(ldam_loss(z, y, COUNTS), ref)
