"""MbLS (margin-based label smoothing, Liu et al. CVPR 2022)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest
import torch
import torch.nn.functional as F

from kernel_checks import check_double_backward, check_gradient_handed_over, check_value_messages
from tailwise import validation_disabled
from tailwise.functional import mbls_loss, mbls_margin_penalty
from tailwise.losses import MbLSLoss
from tailwise.registry import LOSSES

if TYPE_CHECKING:
    from conftest import EqCalls


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
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    loss, ce = mbls_loss(a, y), F.cross_entropy(b, y)
    torch.testing.assert_close(loss, ce, rtol=1e-15, atol=0)
    loss.backward()
    ce.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-14, atol=1e-16)
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


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_matches_plain_autograd_with_ties(reduction: str, weighted: bool) -> None:
    # rounded logits: tied maxima (Tensor.max's gradient goes to its returned index) and distances
    # exactly at the margin (relu's gradient is 0 there); the official composition is the reference.
    g = torch.Generator().manual_seed(5)
    z = (torch.randn(64, 7, dtype=torch.float64, generator=g) * 4).round()
    z[:8, 3] = z[:8].amax(dim=1)
    y = torch.randint(7, (64,), generator=g)
    w = torch.rand(7, dtype=torch.float64, generator=g) + 0.5 if weighted else None
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    fused = mbls_loss(a, y, margin=3.0, alpha=0.3, reduction=reduction, weight=w)
    kernel = "_MbLSLoss" if weighted or reduction == "none" else "_MbLSMean"
    assert type(fused.grad_fn).__name__ == kernel + "Backward"
    ce = F.cross_entropy(b, y, weight=w, reduction="none")
    pen = mbls_margin_penalty(b, 3.0)
    if reduction == "none":
        plain = ce + 0.3 * pen
    elif reduction == "sum":
        plain = ce.sum() + 0.3 * pen.sum()
    else:
        plain = ce.sum() / (w[y].sum() if weighted else len(y)) + 0.3 * pen.mean()
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


# ----------------------------------------------------------------------------- unweighted kernel
def _plain_mbls(z: torch.Tensor, y: torch.Tensor, margin: float, alpha: float, reduction: str) -> torch.Tensor:
    """The official composition, CE + alpha * relu(max - z - m).mean(), through plain autograd."""
    diff = z.max(dim=1, keepdim=True).values - z
    pen = F.relu(diff - margin).mean(dim=1)
    ce = F.cross_entropy(z, y, reduction="none")
    return ce.mean() + alpha * pen.mean() if reduction == "mean" else ce.sum() + alpha * pen.sum()


@pytest.mark.parametrize("upstream", [1.0, 0.7])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("activity", ["none", "some", "all rows"])
@pytest.mark.parametrize(
    ("shape", "dtype", "kernel"),
    [((300, 40), torch.float32, "_MbLSMean"), ((300, 40), torch.float64, "_MbLSMean"), ((5, 3), torch.float64, "_MbLSMean"),
     ((37, 6), torch.float32, "_MbLSMeanTransposed")],
)
def test_unweighted_kernel_matches_plain_autograd(
    shape: tuple[int, int], dtype: torch.dtype, kernel: str, activity: str, reduction: str, upstream: float, eq_calls: EqCalls
) -> None:
    """Value and gradient of the official composition (float64 on the same values), with the gradient
    formed in the forward: handed to autograd at a unit upstream gradient, formed again by a second
    backward through a retained graph, never aliased with an earlier .grad; the maxima are only looked
    for when some distance exceeds the margin."""
    g = torch.Generator().manual_seed(8)
    n, c = shape
    z = (torch.rand(n, c, dtype=torch.float64, generator=g) * 4).to(dtype).double()  # distances below 4
    if activity == "some":
        z[1, 0] = -30.0
        z[n - 1, c - 1] = -7.5
    elif activity == "all rows":
        z[:, 1] = -20.0
    z[2, :] = z[2].amax()  # a row of ties everywhere: Tensor.max takes the first
    y = torch.randint(c, (n,), generator=g)
    a = z.to(dtype, copy=True).requires_grad_(True)
    with eq_calls:
        fused = mbls_loss(a, y, margin=5.0, alpha=0.4, reduction=reduction)
    assert type(fused.grad_fn).__name__ == kernel + "Backward"
    b = z.clone().requires_grad_(True)
    plain = _plain_mbls(b, y, 5.0, 0.4, reduction)
    tol = {} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(fused.double(), plain, **tol)
    if kernel == "_MbLSMean":  # the mask of the maxima is only built with an active margin
        assert (eq_calls.count > 0) == (activity != "none")
    check_gradient_handed_over(fused, plain, a, b, upstream, **tol)
    with torch.no_grad():
        torch.testing.assert_close(mbls_loss(a, y, margin=5.0, alpha=0.4, reduction=reduction).double(), plain, **tol)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_checks_by_computation(dtype: torch.dtype, weighted: bool) -> None:
    # on the CPU both kernels check the labels by their bounds-checked indexing and the logits by the
    # loss's finiteness: the messages are those of the checks in front
    z, y = _data(12, 5)
    z = z.to(dtype)
    w = torch.rand(5, dtype=torch.float64) + 0.5 if weighted else None
    module = MbLSLoss(margin=2.0, weight=w)
    for loss in (module, lambda zz, yy: mbls_loss(zz, yy, margin=2.0, weight=w), MbLSLoss(alpha=0.0, weight=w)):
        check_value_messages(loss, z, y, (5, -1, -100))
        with validation_disabled():  # unchecked: whatever the computation gives, no indexing error
            z_bad = z.clone().requires_grad_(True)
            with torch.no_grad():
                z_bad[3, 1] = math.nan
            out = loss(z_bad, y)
            assert math.isnan(float(out.detach()))
            out.backward()
            assert torch.isfinite(z_bad.grad[4:]).all()


def test_module_state_follows_batch_size_and_dtype() -> None:
    # the module's scratch buffer and column codes follow the logits' batch size, dtype and classes
    g = torch.Generator().manual_seed(9)
    module = MbLSLoss(margin=1.0, alpha=0.3)
    for n, c, dtype in ((50, 20, torch.float32), (20, 20, torch.float32), (50, 20, torch.float64), (70, 9, torch.float32), (50, 20, torch.float32)):
        z = torch.randn(n, c, dtype=torch.float64, generator=g) * 3
        y = torch.randint(c, (n,), generator=g)
        a = z.to(dtype).requires_grad_(True)
        b = z.to(dtype).double().requires_grad_(True)
        fused = module(a, y)
        plain = _plain_mbls(b, y, 1.0, 0.3, "mean")
        tol = {} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
        torch.testing.assert_close(fused.double(), plain, **tol)
        fused.backward()
        plain.backward()
        torch.testing.assert_close(a.grad.double(), b.grad, **tol)


@pytest.mark.parametrize(("shape", "dtype"), [((37, 6), torch.float32), ((30, 20), torch.float64)])
def test_unweighted_kernels_double_backward(shape: tuple[int, int], dtype: torch.dtype) -> None:
    # create_graph=True differentiates the plain expression: second derivatives equal the composition's
    g = torch.Generator().manual_seed(10)
    z = torch.randn(*shape, dtype=torch.float64, generator=g).to(dtype) * 4
    y = torch.randint(shape[1], (shape[0],), generator=g)
    v = torch.randn(*shape, dtype=dtype, generator=g)
    check_double_backward(lambda t: mbls_loss(t, y, margin=2.0, alpha=0.5), lambda t: _plain_mbls(t, y, 2.0, 0.5, "mean"), z, v, rtol=1e-5, atol=1e-6)
