"""MbLS (margin-based label smoothing, Liu et al. CVPR 2022)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tailwise import validation_disabled
from tailwise.functional import mbls_loss, mbls_margin_penalty
from tailwise.losses import MbLSLoss
from tailwise.registry import LOSSES


def _data(n: int = 10, c: int = 6, scale: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, c, dtype=torch.float64) * scale, torch.randint(c, (n,))


def test_alpha_zero_is_cross_entropy() -> None:
    z, y = _data()
    for red in ("none", "mean", "sum"):
        torch.testing.assert_close(mbls_loss(z, y, alpha=0.0, reduction=red), F.cross_entropy(z, y, reduction=red))


def test_matches_loop_reference() -> None:
    z, y = _data()
    m, a = 5.0, 0.3
    total = 0.0
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            total += max(0.0, float(z[i].max()) - float(z[i, j]) - m)
    expected = F.cross_entropy(z, y) + a * total / z.numel()
    torch.testing.assert_close(mbls_loss(z, y, margin=m, alpha=a), expected)


def test_small_logits_have_no_margin_term() -> None:
    z, y = _data(scale=0.1)
    torch.testing.assert_close(mbls_loss(z, y), F.cross_entropy(z, y), rtol=0, atol=0)
    torch.testing.assert_close(mbls_margin_penalty(z), torch.zeros(10, dtype=torch.float64))


def test_reductions_and_weight() -> None:
    z, y = _data()
    w = torch.rand(6, dtype=torch.float64) + 0.1
    per = mbls_loss(z, y, reduction="none", weight=w)
    pen = mbls_margin_penalty(z, 10.0)
    torch.testing.assert_close(per, F.cross_entropy(z, y, weight=w, reduction="none") + 0.1 * pen)
    torch.testing.assert_close(mbls_loss(z, y, weight=w), F.cross_entropy(z, y, weight=w) + 0.1 * pen.mean())
    torch.testing.assert_close(mbls_loss(z, y, reduction="sum"), F.cross_entropy(z, y, reduction="sum") + 0.1 * pen.sum())


def test_gradcheck() -> None:
    z, y = _data(6, 4, scale=8.0)
    z.requires_grad_(True)
    with validation_disabled():
        assert torch.autograd.gradcheck(lambda x: mbls_loss(x, y, margin=2.0, alpha=0.5), (z,))


def test_extreme_logits_are_finite() -> None:
    z = (torch.randn(8, 5) * 1e4).requires_grad_(True)
    loss = mbls_loss(z, torch.randint(5, (8,)))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_module_equals_functional_and_registry() -> None:
    z, y = _data()
    mod = MbLSLoss(margin=3.0, alpha=0.2, weight=torch.ones(6, dtype=torch.float64) * 2)
    torch.testing.assert_close(mod(z, y), mbls_loss(z, y, 3.0, 0.2, weight=torch.ones(6, dtype=torch.float64) * 2))
    built = LOSSES.build("mbls", {"alpha": 0.05}, num_classes=6)
    assert isinstance(built, MbLSLoss) and built.margin == 10.0 and built.alpha == 0.05
    b = MbLSLoss(weight=torch.zeros(6, dtype=torch.float64))
    b.load_state_dict(mod.state_dict())
    torch.testing.assert_close(b.weight, mod.weight)


def test_bad_inputs() -> None:
    z, y = _data()
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        mbls_loss(z, y, alpha=-0.1)
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):
        MbLSLoss(margin=-1.0)
    with pytest.raises(ValueError, match=r"target must have shape \(10,\)"):
        mbls_loss(z, y[:5])
    with pytest.raises(TypeError, match="target must hold int64 class indices"):
        mbls_loss(z, torch.rand(10, 6, dtype=torch.float64))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_matches_plain_autograd_with_ties(reduction: str) -> None:
    # rounded logits: tied maxima (Tensor.max's gradient goes to its returned index) and distances
    # exactly at the margin (relu's gradient is 0 there); the official composition is the reference.
    g = torch.Generator().manual_seed(5)
    z = (torch.randn(64, 7, dtype=torch.float64, generator=g) * 4).round()
    z[:8, 3] = z[:8].amax(dim=1)
    y = torch.randint(7, (64,), generator=g)
    w = torch.rand(7, dtype=torch.float64, generator=g) + 0.5
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    fused = mbls_loss(a, y, margin=3.0, alpha=0.3, reduction=reduction, weight=w)
    ce = F.cross_entropy(b, y, weight=w, reduction="none")
    pen = mbls_margin_penalty(b, 3.0)
    if reduction == "none":
        plain = ce + 0.3 * pen
    elif reduction == "sum":
        plain = ce.sum() + 0.3 * pen.sum()
    else:
        plain = ce.sum() / w[y].sum() + 0.3 * pen.mean()
    torch.testing.assert_close(fused, plain)
    upstream = torch.rand_like(fused)
    fused.backward(upstream)
    plain.backward(upstream)
    torch.testing.assert_close(a.grad, b.grad)
    assert (z.sub(z.amax(dim=1, keepdim=True)).abs() == 3.0).any()  # the margin boundary is exercised


def test_gradgradcheck() -> None:
    z = (torch.randn(6, 4, dtype=torch.float64) * 5).requires_grad_(True)
    y = torch.randint(4, (6,))
    with validation_disabled():
        assert torch.autograd.gradgradcheck(lambda x: mbls_loss(x, y, margin=2.0, alpha=0.5), (z,))


def test_module_weight_cache_follows_set_weight() -> None:
    z, y = _data()
    mod = MbLSLoss(margin=3.0, weight=[1.0] * 6)
    first = mod(z.float(), y)
    mod.set_weight([2.0, 1.0, 1.0, 1.0, 1.0, 0.5])
    w = torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0, 0.5])
    torch.testing.assert_close(mod(z.float(), y), mbls_loss(z.float(), y, margin=3.0, weight=w))
    assert not torch.equal(first, mod(z.float(), y))
