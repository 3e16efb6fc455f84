"""CALS (Liu et al., CVPR 2023): penalties, loss, multiplier updates, state and DDP sync."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from kernel_checks import check_gradient_handed_over
from tailwise import validation_disabled
from tailwise.functional import (
    CALS_PENALTIES,
    cals_constraints,
    cals_loss,
    cals_penalty,
    cals_validation_stats,
)
from tailwise.losses import CALSLoss
from tailwise.registry import LOSSES
from tailwise.train.distributed import shutdown_distributed

if TYPE_CHECKING:
    from conftest import EqCalls


def _logits(n: int = 12, c: int = 5, scale: float = 8.0) -> torch.Tensor:
    return torch.randn(n, c, dtype=torch.float64) * scale


# ----------------------------------------------------------------------------- penalties
@pytest.mark.parametrize("name", sorted(CALS_PENALTIES))
def test_penalty_derivative_is_autograd_derivative(name: str) -> None:
    lambd = torch.tensor([1e-6, 0.3, 1.0, 4.0], dtype=torch.float64)
    rho = torch.tensor([1.0, 2.0, 5.0, 10.0], dtype=torch.float64)
    h = torch.cat([torch.linspace(-3, 3, 25, dtype=torch.float64), torch.tensor([0.0, 1e-4, -1e-4])])
    h = h[:, None].repeat(1, 4)
    # Points where 1 - rho*h = 0 (the unselected branch of p2/p3) must not produce NaN gradients.
    h[-1] = 1 / rho
    h.requires_grad_(True)
    value, deriv = CALS_PENALTIES[name](h, lambd, rho)
    (grad,) = torch.autograd.grad(value.sum(), h)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(grad, deriv)
    assert not deriv.requires_grad


def test_penalty_formulas() -> None:
    h = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=torch.float64)
    lam, rho = 0.5, 2.0
    phr, dphr = CALS_PENALTIES["phr"](h, lam, rho)
    a = lam + rho * h
    torch.testing.assert_close(phr, torch.where(a >= 0, (a**2 - lam**2) / (2 * rho), torch.full_like(h, -(lam**2) / (2 * rho))))
    torch.testing.assert_close(dphr, a.clamp_min(0))
    p2, _ = CALS_PENALTIES["p2"](h, lam, rho)
    ref = [lam * x / (1 - rho * x) if x < 0 else lam * x + lam * rho * x**2 + rho**2 * x**3 / 6 for x in h.tolist()]
    torch.testing.assert_close(p2, torch.tensor(ref, dtype=torch.float64))
    p3, _ = CALS_PENALTIES["p3"](h, lam, rho)
    ref = [lam * x / (1 - rho * x) if x < 0 else lam * x + lam * rho * x**2 for x in h.tolist()]
    torch.testing.assert_close(p3, torch.tensor(ref, dtype=torch.float64))
    relu, drelu = CALS_PENALTIES["relu"](h, lam, rho)
    torch.testing.assert_close(relu, torch.tensor([0, 0, 0, 0.25, 1.0], dtype=torch.float64))
    torch.testing.assert_close(drelu, torch.tensor([0, 0, lam, lam, lam], dtype=torch.float64))


def test_constraints() -> None:
    z = torch.tensor([[5.0, 1.0, -20.0]], dtype=torch.float64)
    torch.testing.assert_close(cals_constraints(z, margin=10.0), torch.tensor([[-1.0, -0.6, 1.5]], dtype=torch.float64))
    torch.testing.assert_close(cals_constraints(z, margin=10.0, normalize=False), torch.tensor([[-10.0, -6.0, 15.0]], dtype=torch.float64))


# ----------------------------------------------------------------------------- loss
def test_penalty_is_mean_over_samples_and_classes() -> None:
    z = _logits()
    lam = torch.rand(5, dtype=torch.float64)
    rho = torch.rand(5, dtype=torch.float64) + 1
    total = 0.0
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            h = (float(z[i].max()) - float(z[i, j]) - 3.0) / 3.0
            a = float(lam[j]) + float(rho[j]) * h
            total += (a * a - float(lam[j]) ** 2) / (2 * float(rho[j])) if a >= 0 else -float(lam[j]) ** 2 / (2 * float(rho[j]))
    torch.testing.assert_close(cals_penalty(z, lam, rho, margin=3.0), torch.tensor(total / z.numel(), dtype=torch.float64))


def test_tiny_multipliers_give_cross_entropy() -> None:
    z, y = _logits(scale=0.5), torch.randint(5, (12,))
    ce = F.cross_entropy(z, y)
    # relu penalty with lambda = 0 is exactly CE; the default lambda_min = 1e-6 with all constraints
    # satisfied (small logits) adds only -lambda^2/(2 rho).
    torch.testing.assert_close(cals_loss(z, y, 0.0, 1.0, penalty="relu"), ce, rtol=0, atol=0)
    loss = CALSLoss(num_classes=5)
    torch.testing.assert_close(loss(z, y), ce, rtol=0, atol=1e-12)


@pytest.mark.parametrize("penalty", sorted(CALS_PENALTIES))
def test_gradcheck(penalty: str) -> None:
    z = _logits(6, 4, scale=6.0).requires_grad_(True)
    y = torch.randint(4, (6,))
    lam = torch.tensor([0.1, 0.5, 1.0, 2.0], dtype=torch.float64)
    rho = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    w = torch.rand(4, dtype=torch.float64) + 0.5
    with validation_disabled():
        assert torch.autograd.gradcheck(
            lambda x: cals_loss(x, y, lam, rho, margin=2.0, penalty=penalty, weight=w, normalize=penalty != "p2"), (z,)
        )


def test_module_equals_functional_and_reductions() -> None:
    z, y = _logits(), torch.randint(5, (12,))
    w = torch.rand(5, dtype=torch.float64) + 0.1
    loss = CALSLoss(num_classes=5, margin=4.0, penalty="p3", weight=w, reduction="none")
    loss.lambd.fill_(0.5)
    loss.rho.fill_(2.0)
    per = loss(z, y)
    torch.testing.assert_close(per, cals_loss(z, y, loss.lambd, loss.rho, 4.0, "p3", weight=w, reduction="none"))
    ce = F.cross_entropy(z, y, weight=w, reduction="none")
    pen = cals_penalty(z, loss.lambd, loss.rho, 4.0, "p3", reduction="none")
    torch.testing.assert_close(per, ce + pen)
    mean = cals_loss(z, y, 0.5, 2.0, 4.0, "p3", weight=w)
    torch.testing.assert_close(mean, F.cross_entropy(z, y, weight=w) + pen.mean())
    total = cals_loss(z, y, 0.5, 2.0, 4.0, "p3", reduction="sum")
    torch.testing.assert_close(total, F.cross_entropy(z, y, reduction="sum") + pen.sum())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("penalty", ["phr", "relu"])
def test_large_batch_matches_plain_autograd(ties: bool, penalty: str, reduction: str) -> None:
    # 1024 x 100 logits take the large-batch path (maximum with its index and one tie scan); ties in the
    # row maximum must share amax's gradient evenly, as plain autograd does.
    g = torch.Generator().manual_seed(3)
    z = torch.randn(1024, 100, dtype=torch.float64, generator=g) * 4
    if ties:
        z = z.round()  # many tied maxima
        z[:, 7] = z.amax(dim=1)
    y = torch.randint(100, (1024,), generator=g)
    lam = torch.rand(100, dtype=torch.float64, generator=g)
    rho = torch.rand(100, dtype=torch.float64, generator=g) + 0.5
    w = torch.rand(100, dtype=torch.float64, generator=g) + 0.5
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    fused = cals_loss(a, y, lam, rho, margin=3.0, penalty=penalty, weight=w, reduction=reduction)
    plain = F.cross_entropy(b, y, weight=w, reduction=reduction) + cals_penalty(b, lam, rho, 3.0, penalty, reduction=reduction)
    torch.testing.assert_close(fused, plain)
    upstream = torch.rand(1024, dtype=torch.float64, generator=g) if reduction == "none" else torch.tensor(0.7, dtype=torch.float64)
    fused.backward(upstream, retain_graph=True)
    plain.backward(upstream)
    torch.testing.assert_close(a.grad, b.grad)
    a.grad = None
    fused.backward(upstream)  # a second backward through the saved tensors gives the same gradient
    torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("upstream", [1.0, 0.7])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(
    ("shape", "dtype", "kernel"),
    [((1024, 100), torch.float64, "_CALSPhrMean"), ((7, 5), torch.float64, "_CALSPhrMean"),
     ((37, 6), torch.float32, "_CALSPhrMeanTransposed")],
)
def test_unweighted_phr_gradient_formed_ahead(
    shape: tuple[int, int], dtype: torch.dtype, kernel: str, ties: bool, reduction: str, upstream: float
) -> None:
    # phr without class weights and with a mean or sum forms the gradient in the forward; a unit
    # upstream gradient is handed on as the saved tensor itself, which autograd must neither alter
    # nor alias with .grad
    g = torch.Generator().manual_seed(6)
    n, c = shape
    z = (torch.randn(n, c, dtype=torch.float64, generator=g) * 4).to(dtype).double()
    if ties:
        z = z.round()
        z[:, 3] = z.amax(dim=1)
    y = torch.randint(c, (n,), generator=g)
    lam = torch.rand(c, dtype=torch.float64, generator=g)
    rho = torch.rand(c, dtype=torch.float64, generator=g) + 0.5
    tol = {} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    a = z.to(dtype, copy=True).requires_grad_(True)
    b = z.clone().requires_grad_(True)
    fused = cals_loss(a, y, lam, rho, margin=3.0, reduction=reduction)
    assert type(fused.grad_fn).__name__ == kernel + "Backward"
    plain = _plain_cals(b, y, lam, rho, None, reduction)
    torch.testing.assert_close(fused.double(), plain, **tol)
    with torch.no_grad():
        torch.testing.assert_close(cals_loss(a, y, lam, rho, margin=3.0, reduction=reduction).double(), plain, **tol)
    check_gradient_handed_over(fused, plain, a, b, upstream, **tol)


@pytest.mark.parametrize("activity", ["none", "one row", "all rows"])
@pytest.mark.parametrize(
    ("shape", "dtype", "kernel"),
    [((300, 40), torch.float64, "_CALSPhrMean"), ((300, 40), torch.float32, "_CALSPhrMean"),
     ((37, 6), torch.float32, "_CALSPhrMeanTransposed")],
)
def test_maxima_looked_for_only_with_an_active_constraint(
    shape: tuple[int, int], dtype: torch.dtype, kernel: str, activity: str, eq_calls: EqCalls
) -> None:
    """amax's share of the gradient is zero in a row without an active constraint (u = 0).

    With the official initial multipliers (lambda = 1e-6, rho = 1) a constraint is active where a
    distance exceeds the margin. Every row has tied maxima; the gradient equals autograd's (which
    splits amax's share among the ties) whether no row, one row or every row is active, and the mask
    of the maxima is built only when some row is.
    """
    g = torch.Generator().manual_seed(11)
    n, c = shape
    z = torch.rand(n, c, dtype=torch.float64, generator=g).to(dtype).double()  # distances below 1
    z[:, 2] = z.amax(dim=1)
    z[:, 4] = z[:, 2]  # two tied maxima in every row
    if activity == "one row":
        z[5, 0] = -20.0
    elif activity == "all rows":
        z[:, 1] = -20.0
    y = torch.randint(c, (n,), generator=g)
    y[5] = 0  # not one of the tied maxima
    lam = torch.full((c,), 1e-6, dtype=torch.float64)
    rho = torch.ones(c, dtype=torch.float64)
    a = z.to(dtype, copy=True).requires_grad_(True)
    with eq_calls:
        fused = cals_loss(a, y, lam, rho, margin=3.0)
        fused.backward()
    assert type(fused.grad_fn).__name__ == kernel + "Backward"
    assert (eq_calls.count > 0) == (activity != "none")
    b = z.clone().requires_grad_(True)
    _plain_cals(b, y, lam, rho, None, "mean").backward()
    tol = {} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(a.grad.double(), b.grad, **tol)
    if activity != "none":  # the tied maxima of an active row share its amax gradient evenly
        assert a.grad[5, 2] == a.grad[5, 4] and a.grad[5, 2] != 0


def test_unweighted_phr_gradient_through_two_consumers_and_double_backward() -> None:
    g = torch.Generator().manual_seed(7)
    z = torch.randn(8, 5, dtype=torch.float64, generator=g) * 3
    y = torch.randint(5, (8,), generator=g)
    lam = torch.rand(5, dtype=torch.float64, generator=g)
    rho = torch.rand(5, dtype=torch.float64, generator=g) + 0.5
    x = z.clone().requires_grad_(True)
    h = x * 2.0  # a non-leaf read by the loss and by another term
    (h.sum() + cals_loss(h, y, lam, rho, margin=3.0)).backward()
    x2 = z.clone().requires_grad_(True)
    h2 = x2 * 2.0
    (h2.sum() + _plain_cals(h2, y, lam, rho, None, "mean")).backward()
    torch.testing.assert_close(x.grad, x2.grad)
    with validation_disabled():
        assert torch.autograd.gradcheck(lambda t: cals_loss(t, y, lam, rho, margin=3.0), (z.clone().requires_grad_(True),))
        assert torch.autograd.gradgradcheck(
            lambda t: cals_loss(t, y, lam, rho, margin=3.0, reduction="sum"), (z.clone().requires_grad_(True),)
        )


def _plain_cals(z: torch.Tensor, y: torch.Tensor, lam: object, rho: object, w: object, reduction: str) -> torch.Tensor:
    """CE + CALS phr penalty (margin 3) through plain autograd operations."""
    ce = F.cross_entropy(z, y, weight=w, reduction="none" if reduction == "none" else reduction)
    pen = cals_penalty(z, lam, rho, 3.0, "phr", reduction=reduction)
    return ce + pen


@pytest.mark.parametrize("n", [37, 0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("scalar_multipliers", [False, True])
def test_small_float32_path_matches_plain_autograd(
    scalar_multipliers: bool, ties: bool, weighted: bool, reduction: str, n: int
) -> None:
    # float32 CPU logits with few classes take the transposed phr kernel; value and gradient must be
    # those of the plain expression (evaluated in float64 on the same float32 values)
    g = torch.Generator().manual_seed(4)
    z = (torch.randn(n, 6, dtype=torch.float64, generator=g) * 4).float().double()
    if ties:
        z = z.round()
        z[:, 2] = z.amax(dim=1)
    y = torch.randint(6, (n,), generator=g)
    if scalar_multipliers:
        lam, rho = 0.7, 1.5
    else:
        lam = torch.rand(6, dtype=torch.float64, generator=g)
        rho = torch.rand(6, dtype=torch.float64, generator=g) + 0.5
    w = torch.rand(6, dtype=torch.float64, generator=g) + 0.5 if weighted else None
    upstream = torch.rand(n, dtype=torch.float64, generator=g) if reduction == "none" else torch.tensor(1.3, dtype=torch.float64)
    a = z.float().requires_grad_(True)
    fast = cals_loss(a, y, lam, rho, margin=3.0, weight=w, reduction=reduction)
    ahead = w is None and reduction != "none" and n > 0  # the gradient is formed in the forward
    assert type(fast.grad_fn).__name__ == ("_CALSPhrMeanTransposed" if ahead else "_CALSPhrTransposed") + "Backward"
    b = z.clone().requires_grad_(True)
    plain = _plain_cals(b, y, lam, rho, w, reduction)
    torch.testing.assert_close(fast.double(), plain, rtol=1e-5, atol=1e-5, equal_nan=True)
    fast.backward(upstream.float())
    plain.backward(upstream)
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-5, atol=1e-6)


def test_small_float32_path_double_backward() -> None:
    g = torch.Generator().manual_seed(5)
    z = (torch.randn(9, 5, dtype=torch.float64, generator=g) * 3).float().double()
    y = torch.randint(5, (9,), generator=g)
    lam = torch.rand(5, dtype=torch.float64, generator=g)
    rho = torch.rand(5, dtype=torch.float64, generator=g) + 0.5
    a = z.float().requires_grad_(True)
    (grad_a,) = torch.autograd.grad(cals_loss(a, y, lam, rho, margin=3.0), a, create_graph=True)
    (hess_a,) = torch.autograd.grad(grad_a.square().sum(), a)
    b = z.clone().requires_grad_(True)
    (grad_b,) = torch.autograd.grad(_plain_cals(b, y, lam, rho, None, "mean"), b, create_graph=True)
    (hess_b,) = torch.autograd.grad(grad_b.square().sum(), b)
    torch.testing.assert_close(grad_a.double(), grad_b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hess_a.double(), hess_b, rtol=1e-4, atol=1e-6)


def test_module_sees_in_place_multiplier_changes() -> None:
    # the module caches the multipliers in the logits' dtype; an in-place update must invalidate it
    z, y = _logits().float(), torch.randint(5, (12,))
    loss = CALSLoss(num_classes=5)
    before = loss(z, y)
    loss.lambd.fill_(2.0)
    after = loss(z, y)
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, cals_loss(z, y, 2.0, loss.rho.float(), margin=loss.margin))
    loss.rho.fill_(3.0)
    torch.testing.assert_close(loss(z, y), cals_loss(z, y, 2.0, 3.0, margin=loss.margin))


def test_extreme_logits_are_finite() -> None:
    z = (torch.randn(8, 5) * 1e4).requires_grad_(True)
    y = torch.randint(5, (8,))
    loss = CALSLoss(num_classes=5)
    loss.lambd.fill_(10.0)
    out = loss(z, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()
    out_half = loss(z.detach().half(), y)
    assert out_half.dtype == torch.float32 and torch.isfinite(out_half)


# ----------------------------------------------------------------------------- multiplier updates
def _loop_lambda(val: torch.Tensor, lam: torch.Tensor, rho: torch.Tensor, margin: float) -> torch.Tensor:
    n, c = val.shape
    out = torch.zeros(c, dtype=torch.float64)
    for j in range(c):
        acc = 0.0
        for i in range(n):
            h = (float(val[i].max()) - float(val[i, j]) - margin) / margin
            acc += min(max(max(0.0, float(lam[j]) + float(rho[j]) * h), 1e-6), 1e6)
        out[j] = min(max(acc / n, 1e-6), 1e6)
    return out


def test_lambda_update_matches_loop_and_is_batch_invariant() -> None:
    val = _logits(40, 5, scale=10.0)
    loss = CALSLoss(num_classes=5, margin=3.0, rho_step=1)
    expected = _loop_lambda(val, loss.lambd.clone(), loss.rho.clone(), 3.0)
    loss.update_from_validation(val, None, epoch=0)
    torch.testing.assert_close(loss.lambd, expected)
    torch.testing.assert_close(loss.curr_constraints, cals_constraints(val, 3.0).mean(0))

    batched = CALSLoss(num_classes=5, margin=3.0, rho_step=1)
    batched.reset_update_lambd(0)
    for chunk in val.split(7):
        batched.update_lambd(chunk, 0)
    batched.set_lambd(0)
    batched.update_rho(0)
    torch.testing.assert_close(batched.lambd, loss.lambd, rtol=1e-14, atol=0)


def test_rho_schedule() -> None:
    c = 3
    loss = CALSLoss(num_classes=c, margin=1.0, rho_step=2)
    big = torch.tensor([[10.0, 0.0, -5.0]], dtype=torch.float64).repeat(4, 1)
    mean_h = cals_constraints(big, 1.0).mean(0)  # [-1, 9, 14]
    loss.update_from_validation(big, None, 0)  # (0+1) % 2 != 0: no change; prev recorded
    torch.testing.assert_close(loss.rho, torch.ones(c, dtype=torch.float64))
    assert bool(loss.has_prev)
    torch.testing.assert_close(loss.prev_constraints, mean_h)
    loss.update_from_validation(big, None, 1)  # grows where mean_h > 0.9 * max(prev, 0)
    torch.testing.assert_close(loss.rho, torch.tensor([1.0, 1.2, 1.2], dtype=torch.float64))
    for e in range(2, 40):
        loss.update_from_validation(big, None, e)
    torch.testing.assert_close(loss.rho, torch.tensor([1.0, 10.0, 10.0], dtype=torch.float64))  # clipped at rho_max

    never = CALSLoss(num_classes=c, margin=1.0, rho_step=-1)
    for e in range(5):
        never.update_from_validation(big, None, e)
    torch.testing.assert_close(never.rho, torch.ones(c, dtype=torch.float64))


def test_lambd_step() -> None:
    val = _logits(10, 4, scale=20.0)
    loss = CALSLoss(num_classes=4, margin=2.0, lambd_step=2)
    loss.update_from_validation(val, None, 0)
    torch.testing.assert_close(loss.lambd, torch.full((4,), 1e-6, dtype=torch.float64))
    loss.update_from_validation(val, None, 1)
    assert bool((loss.lambd > 1e-6).any())


def test_state_dict_round_trip() -> None:
    a = CALSLoss(num_classes=4, margin=2.0, rho_step=1, penalty="p2", normalize=False)
    for e in range(3):
        a.update_from_validation(_logits(15, 4, scale=5.0 * (e + 1)), None, e)
    b = CALSLoss(num_classes=4, margin=2.0, rho_step=1, penalty="p2", normalize=False)
    b.load_state_dict(a.state_dict())
    for name in ("lambd", "rho", "prev_constraints", "has_prev", "curr_constraints"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name))
    val = _logits(15, 4, scale=30.0)
    a.update_from_validation(val, None, 3)
    b.update_from_validation(val, None, 3)
    torch.testing.assert_close(b.lambd, a.lambd)
    torch.testing.assert_close(b.rho, a.rho)


def test_registry() -> None:
    loss = LOSSES.build("cals", {"margin": 5.0}, num_classes=7, class_counts=[1] * 7)
    assert isinstance(loss, CALSLoss) and loss.num_classes == 7 and loss.margin == 5.0
    assert loss.rho_step == 10 and loss.penalty == "phr" and loss.normalize


def test_bad_inputs() -> None:
    z, y = _logits(), torch.randint(5, (12,))
    with pytest.raises(ValueError, match="penalty must be one of"):
        CALSLoss(num_classes=5, penalty="l2")
    with pytest.raises(ValueError, match="margin must be a finite number > 0"):
        CALSLoss(num_classes=5, margin=0.0)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        CALSLoss(num_classes=0)
    with pytest.raises(ValueError, match="rho_max must be >= rho_min"):
        CALSLoss(num_classes=5, rho_min=5.0, rho_max=2.0)
    with pytest.raises(ValueError, match="lambd must be a scalar or a 1-D tensor with 5 entries"):
        cals_loss(z, y, torch.ones(3), 1.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        CALSLoss(num_classes=5)(z, torch.full((12,), 7))
    with pytest.raises(ValueError, match=r"logits must have shape \(N, 5\)"):
        CALSLoss(num_classes=5).update_from_validation(_logits(4, 3), None, 0)
    loss = CALSLoss(num_classes=5)
    loss.reset_update_lambd(0)
    with pytest.raises(ValueError, match="got 0 samples"):
        loss.set_lambd(0)
    with pytest.raises(ValueError, match="weight must be a 1-D tensor with 5 entries"):
        CALSLoss(num_classes=5, weight=[1.0, 2.0])
    assert math.isfinite(float(cals_validation_stats(z, 1e-6, 1.0)[0].sum()))


@pytest.mark.parametrize("bad", [-1, -100, 5])
@pytest.mark.parametrize(
    ("dtype", "penalty", "weighted", "reduction"),
    [(torch.float32, "phr", False, "mean"), (torch.float32, "phr", True, "none"), (torch.float32, "phr", False, "none"),
     (torch.float64, "phr", False, "sum"),
     (torch.float64, "phr", True, "mean"), (torch.float64, "p2", False, "mean")],
)
def test_cpu_checks_by_computation(dtype: torch.dtype, penalty: str, weighted: bool, reduction: str, bad: int) -> None:
    # on the CPU every kernel checks the labels by its own bounds-checked indexing and the logits by
    # the loss's finiteness: the messages are those of the checks in front
    z = _logits().to(dtype)
    w = torch.rand(5, dtype=torch.float64) + 0.5 if weighted else None
    module = CALSLoss(num_classes=5, penalty=penalty, weight=w, reduction=reduction)
    functional = partial(cals_loss, lambd=0.5, rho=2.0, penalty=penalty, weight=w, reduction=reduction)
    y = torch.arange(12) % 5  # every class present: the range message is [min(bad, 0), max(bad, 4)]
    y[4] = bad
    for loss in (module, functional):
        with pytest.raises(ValueError, match=rf"labels must lie in \[0, 4\] for 5 classes; got values in \[{min(bad, 0)}, {max(bad, 4)}\]"):
            loss(z, y)
        for value in (math.nan, math.inf):
            z_bad = z.clone()
            z_bad[3, 1] = value
            with pytest.raises(ValueError, match=r"logits must be finite; got 1 NaN/Inf value"):
                loss(z_bad, y.clamp(0, 4))
        with validation_disabled():  # unchecked: whatever the computation gives
            z_bad = z.clone()
            z_bad[3, 1] = math.nan
            assert not torch.isfinite(loss(z_bad, y.clamp(0, 4))).all()
    extreme = torch.full((3, 5), 1e30, dtype=dtype)  # finite logits whose loss may overflow: no error
    extreme[:, 0] = -1e30
    module(extreme, torch.tensor([0, 1, 2]))


# ----------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world: int, init_file: str, shards: list[list[torch.Tensor]], out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        loss = CALSLoss(num_classes=shards[0][0].shape[1], margin=2.0, rho_step=1)
        for epoch, per_rank in enumerate(shards):
            loss.update_from_validation(per_rank[rank], None, epoch)
        torch.save({"lambd": loss.lambd, "rho": loss.rho, "curr": loss.curr_constraints}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        shutdown_distributed()


def test_ddp_sync_gives_union_multipliers(tmp_path: Path) -> None:
    world, c = 2, 4
    # Unequal shards: the union mean differs from the mean of the per-rank means.
    shards = [[_logits(5, c, scale=4.0 * (e + 1)), _logits(11, c, scale=4.0 * (e + 1))] for e in range(3)]
    mp.spawn(_ddp_worker, args=(world, str(tmp_path / "init"), shards, str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    single = CALSLoss(num_classes=c, margin=2.0, rho_step=1)
    for epoch, per_rank in enumerate(shards):
        single.update_from_validation(torch.cat(per_rank), None, epoch)
    for res in results:
        torch.testing.assert_close(res["lambd"], single.lambd, rtol=1e-12, atol=0)
        torch.testing.assert_close(res["rho"], single.rho)
        torch.testing.assert_close(res["curr"], single.curr_constraints, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(results[0]["lambd"], results[1]["lambd"], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unweighted_phr_kernel_with_nan_logits_unchecked(dtype: torch.dtype) -> None:
    # with value checks off, NaN logits give a NaN loss (no indexing error from the maxima search)
    g = torch.Generator().manual_seed(22)
    z = torch.randn(300, 40, dtype=torch.float64, generator=g).to(dtype) * 3
    z[7, 2] = math.nan
    y = torch.randint(40, (300,), generator=g)
    a = z.clone().requires_grad_(True)
    with validation_disabled():
        loss = cals_loss(a, y, 0.5, 2.0, margin=1.0)
        assert type(loss.grad_fn).__name__ == "_CALSPhrMeanBackward"
        assert math.isnan(float(loss.detach()))
        loss.backward()
    assert torch.isfinite(a.grad[:7]).all() and torch.isnan(a.grad[7]).any()


def test_unweighted_phr_mean_over_changing_batch_sizes() -> None:
    # the prepared kernel keeps q / N for the last batch size: every size must get its own mean
    g = torch.Generator().manual_seed(23)
    for n in (50, 20, 20, 50, 1):
        z = torch.randn(n, 30, dtype=torch.float64, generator=g) * 3
        y = torch.randint(30, (n,), generator=g)
        a = z.clone().requires_grad_(True)
        b = z.clone().requires_grad_(True)
        fused = cals_loss(a, y, 0.5, 2.0, margin=3.0)
        assert type(fused.grad_fn).__name__ == "_CALSPhrMeanBackward"
        plain = _plain_cals(b, y, 0.5, 2.0, None, "mean")
        torch.testing.assert_close(fused, plain)
        fused.backward()
        plain.backward()
        torch.testing.assert_close(a.grad, b.grad)
