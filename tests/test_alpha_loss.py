"""alpha-loss (Sypherd et al.): special cases, stability, gradients, module and registry."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from tailwise import validation_disabled
from tailwise.functional import alpha_loss
from tailwise.losses import AlphaLoss
from tailwise.registry import LOSSES


def _data(n: int = 10, c: int = 5, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, c, dtype=torch.float64) * scale, torch.randint(c, (n,))


def _loop_reference(z: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    p = torch.softmax(z, dim=1)
    vals = []
    for i in range(z.shape[0]):
        py = float(p[i, y[i]])
        if alpha == 1:
            vals.append(-math.log(py))
        elif alpha == math.inf:
            vals.append(1 - py)
        else:
            vals.append(alpha / (alpha - 1) * (1 - py ** (1 - 1 / alpha)))
    return torch.tensor(vals, dtype=torch.float64)


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.9, 1.0, 1.5, 2.0, 8.0, math.inf])
def test_matches_loop_reference(alpha: float) -> None:
    z, y = _data()
    torch.testing.assert_close(alpha_loss(z, y, alpha, reduction="none"), _loop_reference(z, y, alpha))


def test_alpha_one_is_cross_entropy() -> None:
    z, y = _data()
    w = torch.rand(5, dtype=torch.float64) + 0.1
    for red in ("none", "mean", "sum"):
        torch.testing.assert_close(alpha_loss(z, y, 1.0, reduction=red), F.cross_entropy(z, y, reduction=red))
        torch.testing.assert_close(
            alpha_loss(z, y, 1.0, reduction=red, weight=w), F.cross_entropy(z, y, weight=w, reduction=red)
        )
    soft = torch.softmax(torch.randn(10, 5, dtype=torch.float64), dim=1)
    torch.testing.assert_close(alpha_loss(z, soft, 1.0), F.cross_entropy(z, soft))
    torch.testing.assert_close(alpha_loss(z, soft, 1.0, weight=w), F.cross_entropy(z, soft, weight=w))


def test_alpha_infinity_and_half() -> None:
    z, y = _data()
    p_y = torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(alpha_loss(z, y, math.inf, reduction="none"), 1 - p_y)
    torch.testing.assert_close(alpha_loss(z, y, 0.5, reduction="none"), 1 / p_y - 1)


def test_binary_margin_form() -> None:
    z, y = _data(16, 2)
    margin = z.gather(1, y[:, None]).squeeze(1) - z.gather(1, (1 - y)[:, None]).squeeze(1)
    for alpha in (0.5, 0.9, 2.0, 8.0):
        ref = alpha / (alpha - 1) * (1 - torch.sigmoid(margin) ** (1 - 1 / alpha))
        torch.testing.assert_close(alpha_loss(z, y, alpha, reduction="none"), ref)
    torch.testing.assert_close(alpha_loss(z, y, 0.5, reduction="none"), torch.exp(-margin))


@pytest.mark.parametrize("delta", [1e-7, -1e-7, 1e-12, -1e-12])
def test_near_one_is_close_to_cross_entropy(delta: float) -> None:
    z, y = _data(scale=10.0)
    ce = F.cross_entropy(z, y, reduction="none")
    out = alpha_loss(z, y, 1.0 + delta, reduction="none")
    torch.testing.assert_close(out, ce, rtol=abs(delta) * 100, atol=0)
    # Float32 too: no catastrophic cancellation in 1 - p^(1 - 1/alpha).
    out32 = alpha_loss(z.float(), y, 1.0 + delta, reduction="none")
    torch.testing.assert_close(out32, ce.float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 1.5, 3.0, math.inf])
def test_extreme_logits_finite(alpha: float) -> None:
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0], [0.0, 0.0, 1e4]], requires_grad=True)
    y = torch.tensor([1, 1, 0])
    loss = alpha_loss(z, y, alpha)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    if alpha > 1:
        bound = 1.0 if alpha == math.inf else alpha / (alpha - 1)
        assert float(loss.detach()) <= bound + 1e-6  # bounded by alpha/(alpha-1)


@pytest.mark.parametrize("alpha", [0.5, 0.9, 1.0, 1.5, math.inf])
def test_gradcheck(alpha: float) -> None:
    z, y = _data(6, 4)
    z.requires_grad_(True)
    w = torch.rand(4, dtype=torch.float64) + 0.5
    soft = torch.softmax(torch.randn(6, 4, dtype=torch.float64), 1)
    with validation_disabled():  # the value checks only slow gradcheck down
        assert torch.autograd.gradcheck(lambda x: alpha_loss(x, y, alpha, weight=w), (z,))
        assert torch.autograd.gradcheck(lambda x: alpha_loss(x, soft, alpha, reduction="sum"), (z,))


def test_soft_one_hot_equals_hard_and_weights() -> None:
    z, y = _data()
    onehot = F.one_hot(y, 5).double()
    w = torch.rand(5, dtype=torch.float64) + 0.1
    for alpha in (0.7, 2.0):
        torch.testing.assert_close(alpha_loss(z, onehot, alpha, reduction="none"), alpha_loss(z, y, alpha, reduction="none"))
        per = alpha_loss(z, y, alpha, reduction="none")
        torch.testing.assert_close(alpha_loss(z, y, alpha, weight=w), (w[y] * per).sum() / w[y].sum())
        torch.testing.assert_close(alpha_loss(z, y, alpha, weight=w, reduction="none"), w[y] * per)
        # Soft targets: class terms weighted, mean over N.
        torch.testing.assert_close(alpha_loss(z, onehot, alpha, weight=w), (w[y] * per).mean())


def test_official_options() -> None:
    z, y = _data()
    s = torch.sigmoid(z)
    torch.testing.assert_close(alpha_loss(z, y, 2.0, official_sigmoid=True), alpha_loss(s, y, 2.0))
    for alpha in (0.9, 1.0, 1.5):  # alpha rounded to float32 moves the loss by ~1e-6 relative
        torch.testing.assert_close(alpha_loss(z, y, alpha, official_numerics=True), alpha_loss(z, y, alpha), rtol=1e-5, atol=1e-6)
    # At alpha = 1 the official +1e-8 inside the log.
    ref = -torch.log(torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1) + 1e-8).mean()
    torch.testing.assert_close(alpha_loss(z, y, 1.0, official_numerics=True), ref)


def test_half_input_is_computed_in_float32() -> None:
    z, y = _data()
    out = alpha_loss(z.half(), y, 2.0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, alpha_loss(z.half().double(), y, 2.0).float(), rtol=1e-5, atol=1e-6)


def test_module_equals_functional_and_registry() -> None:
    z, y = _data()
    w = torch.rand(5, dtype=torch.float64) + 0.1
    mod = AlphaLoss(alpha=1.5, weight=w, reduction="sum")
    torch.testing.assert_close(mod(z, y), alpha_loss(z, y, 1.5, reduction="sum", weight=w))
    built = LOSSES.build("alpha", {"alpha": 3.0, "official_sigmoid": True}, num_classes=5)
    assert isinstance(built, AlphaLoss)
    torch.testing.assert_close(built(z, y), alpha_loss(z, y, 3.0, official_sigmoid=True))
    mod.set_weight(None)
    torch.testing.assert_close(mod(z, y), alpha_loss(z, y, 1.5, reduction="sum"))


def test_state_dict_round_trip() -> None:
    a = AlphaLoss(alpha=2.0, weight=[1.0, 2.0, 3.0])
    b = AlphaLoss(alpha=2.0, weight=[0.0, 0.0, 0.0])
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.weight, a.weight)


def test_bad_inputs() -> None:
    z, y = _data()
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
            alpha_loss(z, y, bad)
    with pytest.raises(TypeError, match="alpha must be a number"):
        alpha_loss(z, y, "2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        alpha_loss(z, torch.full((10,), 5), 2.0)
    with pytest.raises(ValueError, match="logits must be finite"):
        alpha_loss(torch.full((2, 5), float("nan")), y[:2], 2.0)
    with pytest.raises(ValueError, match="weight must be a 1-D tensor with 5 entries"):
        alpha_loss(z, y, 2.0, weight=torch.ones(3))
    with pytest.raises(ValueError, match="reduction must be one of"):
        alpha_loss(z, y, 2.0, reduction="avg")
    with pytest.raises(ValueError, match="soft target must have the shape"):
        alpha_loss(z, torch.rand(10, 4, dtype=torch.float64), 2.0)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        AlphaLoss(alpha=-2.0)


# --------------------------------------------------------------------------- fused hard-label path
_ALPHAS = [0.5, 0.8, 1.0, 1.5, 3.0, math.inf]


def _composition(z: torch.Tensor, y: torch.Tensor, alpha: float, reduction: str, weight: torch.Tensor | None) -> torch.Tensor:
    """The plain autograd composition: log_softmax, gather, -expm1(eps log p_y)/eps, weighted reduction."""
    log_p_y = torch.log_softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    if alpha == 1:
        per = -log_p_y
    elif alpha == math.inf:
        per = -torch.expm1(log_p_y)
    else:
        eps = (alpha - 1) / alpha
        per = -torch.expm1(eps * log_p_y) / eps
    if weight is None:
        return {"none": per, "sum": per.sum(), "mean": per.mean()}[reduction]
    w = weight.to(z.dtype)[y]
    return {"none": w * per, "sum": (w * per).sum(), "mean": (w * per).sum() / w.sum()}[reduction]


def _value_and_grad(
    fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, upstream_seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(z)`` and its gradient for a fixed random upstream gradient (drawn in float64)."""
    x = z.detach().clone().requires_grad_(True)
    out = fn(x)
    g = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(upstream_seed)).to(out.dtype)
    (grad,) = torch.autograd.grad(out, x, g)
    return out.detach(), grad


def _extreme_logits(alpha: float) -> torch.Tensor:
    """Logits with huge gaps (1e4) for alpha >= 1; for alpha < 1 gaps of 300, where float64 stays finite."""
    s = 1e4 if alpha >= 1 else 300.0
    return torch.tensor([[s, -s, 0.0, 1.0], [-s, s, 3.0, 0.0], [0.0, 0.0, s, -s], [2.0, -1.0, 0.5, 0.0]], dtype=torch.float64)


@pytest.mark.parametrize("alpha", _ALPHAS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("extreme", [False, True])
def test_fused_matches_composition(alpha: float, reduction: str, weighted: bool, extreme: bool) -> None:
    if extreme:
        z, y = _extreme_logits(alpha), torch.tensor([1, 1, 0, 3])
    else:
        z, y = _data(12, 5, scale=4.0)
    w = torch.rand(z.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.2 if weighted else None
    out = alpha_loss(z.clone().requires_grad_(True), y, alpha, reduction=reduction, weight=w)
    assert type(out.grad_fn).__name__ == "_AlphaLossBackward"  # the fused node, not the composition
    val, grad = _value_and_grad(lambda x: alpha_loss(x, y, alpha, reduction=reduction, weight=w), z)
    ref_val, ref_grad = _value_and_grad(lambda x: _composition(x, y, alpha, reduction, w), z)
    assert torch.isfinite(val).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(val, ref_val, rtol=0, atol=0)  # the same operations: the same values
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("c", [5, 40])  # C < 16 in float32 takes the transposed layout
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, math.inf])
def test_fused_float32_matches_composition(c: int, alpha: float) -> None:
    z, y = _data(33, c)
    z32 = z.float()
    w = torch.rand(c) + 0.5
    for reduction, weight in (("mean", None), ("none", w), ("mean", w)):
        val, grad = _value_and_grad(lambda x, r=reduction, wt=weight: alpha_loss(x, y, alpha, reduction=r, weight=wt), z32)
        ref_val, ref_grad = _value_and_grad(lambda x, r=reduction, wt=weight: _composition(x, y, alpha, r, wt), z)
        assert val.dtype == grad.dtype == torch.float32
        torch.testing.assert_close(val, ref_val.float(), rtol=2e-6, atol=1e-6)
        torch.testing.assert_close(grad, ref_grad.float(), rtol=2e-6, atol=1e-7)
    leaf = z32.clone().requires_grad_(True)
    alpha_loss(leaf, y, alpha).backward()
    assert leaf.grad is not None and leaf.grad.is_contiguous()


@pytest.mark.parametrize("alpha", _ALPHAS)
def test_fused_gradcheck_and_gradgradcheck(alpha: float) -> None:
    z, y = _data(6, 4)
    z.requires_grad_(True)
    w = torch.rand(4, dtype=torch.float64) + 0.5
    with validation_disabled():
        for reduction in ("none", "mean", "sum"):
            for weight in (None, w):
                def fn(x: torch.Tensor, reduction: str = reduction, weight: torch.Tensor | None = weight) -> torch.Tensor:
                    return alpha_loss(x, y, alpha, reduction=reduction, weight=weight)

                assert torch.autograd.gradcheck(fn, (z,))
                assert torch.autograd.gradgradcheck(fn, (z,))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_fused_create_graph_matches_composition(alpha: float, reduction: str) -> None:
    z, y = _data(7, 4)
    w = torch.rand(4, dtype=torch.float64) + 0.5
    g = torch.randn(7, dtype=torch.float64) if reduction == "none" else torch.tensor(1.3, dtype=torch.float64)
    v = torch.randn(7, 4, dtype=torch.float64)
    results = []
    for fn in (lambda x: alpha_loss(x, y, alpha, reduction=reduction, weight=w), lambda x: _composition(x, y, alpha, reduction, w)):
        x = z.clone().requires_grad_(True)
        out = fn(x)
        (grad,) = torch.autograd.grad(out, x, g, create_graph=True)
        (hvp,) = torch.autograd.grad((grad * v).sum(), x)
        results.append((grad.detach(), hvp))
    (grad, hvp), (ref_grad, ref_hvp) = results
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(hvp, ref_hvp, rtol=1e-12, atol=1e-13)


def test_fused_half_input() -> None:
    z, y = _data(16, 6)
    zh = z.half()
    w = torch.rand(6, dtype=torch.float64) + 0.5
    for alpha in (0.8, 1.0, 3.0):
        leaf = zh.clone().requires_grad_(True)
        out = alpha_loss(leaf, y, alpha, weight=w)
        out.backward()
        assert out.dtype == torch.float32 and leaf.grad is not None and leaf.grad.dtype == torch.float16
        ref_leaf = zh.double().requires_grad_(True)
        ref_val = _composition(ref_leaf, y, alpha, "mean", w)
        ref_val.backward()
        ref_val, ref_grad = ref_val.detach(), ref_leaf.grad
        torch.testing.assert_close(out.detach(), ref_val.float(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(leaf.grad, ref_grad.half(), rtol=1e-3, atol=1e-4)


def test_fused_module_equals_functional_and_weight_cache() -> None:
    z, y = _data(20, 5)
    z32 = z.float()
    w = torch.rand(5, dtype=torch.float64) + 0.2
    mod = AlphaLoss(alpha=0.8, weight=w)
    for x in (z, z32, z):  # dtype changes invalidate the cached cast weight
        val, grad = _value_and_grad(lambda t: mod(t, y), x)
        ref_val, ref_grad = _value_and_grad(lambda t: alpha_loss(t, y, 0.8, weight=w), x)
        torch.testing.assert_close(val, ref_val, rtol=0, atol=0)
        torch.testing.assert_close(grad, ref_grad, rtol=0, atol=0)
    assert type(mod(z.clone().requires_grad_(True), y).grad_fn).__name__ == "_AlphaLossBackward"
    mod.weight.mul_(2.0)  # an in-place change of the buffer is seen
    mod.weight[0] = 10.0
    torch.testing.assert_close(mod(z, y), alpha_loss(z, y, 0.8, weight=mod.weight))
    mod.set_weight([1.0, 2.0, 3.0, 4.0, 5.0])
    torch.testing.assert_close(mod(z32, y), alpha_loss(z32, y, 0.8, weight=torch.arange(1.0, 6.0)))
    mod.set_weight(None)
    torch.testing.assert_close(mod(z, y), alpha_loss(z, y, 0.8))


def test_fused_targets_layout_and_inplace_output() -> None:
    z, y = _data(9, 4)
    ref = alpha_loss(z, y, 2.0, reduction="none")
    for dtype in (torch.int32, torch.uint8):
        torch.testing.assert_close(alpha_loss(z, y.to(dtype), 2.0, reduction="none"), ref, rtol=0, atol=0)
    # non-contiguous logits
    zt = z.t().contiguous().t()
    torch.testing.assert_close(alpha_loss(zt, y, 2.0, reduction="none"), ref, rtol=0, atol=0)
    # the 'none' output is a fresh tensor: in-place changes are allowed and differentiate correctly
    for alpha in (0.8, 1.0, math.inf):
        x = z.clone().requires_grad_(True)
        out = alpha_loss(x, y, alpha, reduction="none")
        out.mul_(3.0)
        out.sum().backward()
        x2 = z.clone().requires_grad_(True)
        (3.0 * _composition(x2, y, alpha, "none", None)).sum().backward()
        torch.testing.assert_close(x.grad, x2.grad)


def test_fused_weight_with_gradient_and_no_logit_gradient() -> None:
    z, y = _data(8, 3)
    w = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_(True)
    alpha_loss(z, y, 0.8, weight=w).backward()
    w2 = w.detach().clone().requires_grad_(True)
    _composition(z, y, 0.8, "mean", w2).backward()
    assert w.grad is not None
    torch.testing.assert_close(w.grad, w2.grad)
    # logits without requires_grad: a plain value
    out = alpha_loss(z, y, 0.8)
    assert out.grad_fn is None
    torch.testing.assert_close(out, _composition(z, y, 0.8, "mean", None))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_empty_batch(dtype: torch.dtype) -> None:
    z = torch.zeros(0, 4, dtype=dtype, requires_grad=True)
    y = torch.zeros(0, dtype=torch.int64)
    assert torch.isnan(alpha_loss(z, y, 0.8))
    assert alpha_loss(z, y, 0.8, reduction="sum").item() == 0.0
    out = alpha_loss(z, y, 0.8, reduction="none")
    assert out.shape == (0,)
    alpha_loss(z, y, 0.8, reduction="sum").backward()
    assert z.grad is not None and z.grad.shape == (0, 4)


def test_alpha_below_one_overflows_as_documented() -> None:
    # alpha = 1/2: 1/p_y - 1 = e^gap (two classes); float32 overflows once the gap exceeds ~88.7
    y = torch.tensor([0])
    assert torch.isinf(alpha_loss(torch.tensor([[0.0, 100.0]]), y, 0.5))
    finite = alpha_loss(torch.tensor([[0.0, 80.0]]), y, 0.5)
    torch.testing.assert_close(finite, torch.tensor(math.exp(80.0)), rtol=1e-5, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_cuda_matches_cpu() -> None:
    z, y = _data(64, 10)
    w = torch.rand(10, dtype=torch.float64) + 0.5
    for alpha in (0.8, 1.0, math.inf):
        for dtype in (torch.float32, torch.float64):
            val, grad = _value_and_grad(lambda x, a=alpha: alpha_loss(x, y.cuda(), a, weight=w.cuda()), z.to("cuda", dtype))
            ref_val, ref_grad = _value_and_grad(lambda x, a=alpha: _composition(x, y, a, "mean", w), z)
            torch.testing.assert_close(val.cpu().double(), ref_val, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(grad.cpu().double(), ref_grad, rtol=1e-5, atol=1e-6)
