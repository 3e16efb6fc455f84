"""Focal loss: standard form and the LDAM-repo variant, special cases, reductions, gradients, bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernel_checks import check_double_backward, check_value_messages
from tailwise.functional import cross_entropy, focal_loss
from tailwise.functional.focal import _focal_reference
from tailwise.losses import FocalLoss
from tailwise.registry import LOSSES

C = 5


def _batch(n: int = 14, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return 2 * torch.randn(n, C, generator=g, dtype=dtype), torch.randint(0, C, (n,), generator=g)


W = torch.tensor([0.2, 0.5, 1.0, 1.5, 1.8], dtype=torch.float64)


def _slow(z: torch.Tensor, y: torch.Tensor, gamma: float, w: torch.Tensor | None, reduction: str, variant: str) -> torch.Tensor:
    per, den = [], 0.0
    for i in range(len(y)):
        wi = 1.0 if w is None else w[y[i]]
        ce = -torch.log_softmax(z[i], 0)[y[i]]
        if variant == "standard":
            p = torch.softmax(z[i], 0)[y[i]]
            per.append(wi * (1 - p) ** gamma * ce)
            den += float(wi)
        else:
            l_i = wi * ce
            per.append((1 - torch.exp(-l_i)) ** gamma * l_i)
            den += 1.0
    per_t = torch.stack(per)
    return {"none": per_t, "sum": per_t.sum(), "mean": per_t.sum() / den}[reduction]


@pytest.mark.parametrize("variant", ["standard", "ldam_repo"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_slow_loop(variant: str, reduction: str, weighted: bool) -> None:
    z, y = _batch()
    w = W if weighted else None
    out = focal_loss(z, y, gamma=1.5, weight=w, reduction=reduction, variant=variant)
    torch.testing.assert_close(out, _slow(z, y, 1.5, w, reduction, variant), rtol=1e-12, atol=1e-12)
    module = FocalLoss(1.5, weight=w, reduction=reduction, variant=variant)
    torch.testing.assert_close(module(z, y), out)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gamma_zero_is_cross_entropy(reduction: str) -> None:
    z, y = _batch()
    torch.testing.assert_close(focal_loss(z, y, 0.0, W, reduction), cross_entropy(z, y, W, reduction))
    torch.testing.assert_close(focal_loss(z, y, 0.0, None, reduction, "ldam_repo"), cross_entropy(z, y, None, reduction))


def test_variants_agree_without_weights() -> None:
    z, y = _batch()
    for reduction in ("none", "mean", "sum"):
        torch.testing.assert_close(
            focal_loss(z, y, 2.0, reduction=reduction), focal_loss(z, y, 2.0, reduction=reduction, variant="ldam_repo")
        )


@pytest.mark.parametrize("variant", ["standard", "ldam_repo"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_gradcheck(variant: str, gamma: float) -> None:
    z, y = _batch(6)
    assert torch.autograd.gradcheck(
        lambda t: focal_loss(t, y, gamma, W, variant=variant), (z.clone().requires_grad_(),)
    )


def test_state_dict_and_registry() -> None:
    z, y = _batch()
    saved = FocalLoss(2.0, weight=W)
    fresh = LOSSES.build("focal", {"gamma": 2.0}, class_counts=[1] * C, num_classes=C)
    fresh.load_state_dict(saved.state_dict())
    torch.testing.assert_close(fresh(z, y), saved(z, y))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype: torch.dtype) -> None:
    z, y = _batch(64, torch.float32)
    zl = z.to(dtype)
    out = focal_loss(zl, y, 2.0)
    assert out.dtype == torch.float32
    p = torch.softmax(zl.float(), 1).gather(1, y[:, None]).squeeze(1)
    ref = ((1 - p) ** 2 * F.cross_entropy(zl.float(), y, reduction="none")).mean()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_bad_inputs() -> None:
    z, y = _batch()
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        focal_loss(z, y, gamma=-1.0)
    with pytest.raises(ValueError, match="variant must be one of"):
        FocalLoss(variant="torchvision")
    with pytest.raises(ValueError, match="reduction must be one of"):
        focal_loss(z, y, reduction="mean_weighted")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        focal_loss(z, y + C)
    with pytest.raises(ValueError, match="logits must be finite"):
        focal_loss(torch.full_like(z, float("nan")), y)


@pytest.mark.parametrize("variant", ["standard", "ldam_repo"])
@pytest.mark.parametrize("weighted", [False, True])
def test_few_classes_float32_matches_plain_formula(weighted: bool, variant: str) -> None:
    # float32 CPU logits with few classes use the transposed log-softmax; value and gradient are those
    # of the plain formula evaluated in float64
    g = torch.Generator().manual_seed(12)
    z = (torch.randn(200, 6, generator=g) * 3).double()
    y = torch.randint(6, (200,), generator=g)
    w = torch.rand(6, generator=g, dtype=torch.float64) + 0.5 if weighted else None
    a = z.float().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    out = focal_loss(a, y, gamma=2.0, weight=w, variant=variant)
    if variant == "standard":
        log_p = F.log_softmax(b, dim=1).gather(1, y[:, None]).squeeze(1)
        per = -((1 - log_p.exp()) ** 2) * log_p
        ref = per.mean() if w is None else (per * w[y]).sum() / w[y].sum()
    else:
        ce = F.cross_entropy(b, y, weight=w, reduction="none")
        ref = ((1 - torch.exp(-ce)) ** 2 * ce).mean()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    out.backward()
    ref.backward()
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- fused kernel
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("variant", ["standard", "ldam_repo"])
@pytest.mark.parametrize(("shape", "dtype"), [((37, 6), torch.float32), ((64, 40), torch.float32), ((64, 40), torch.float64)])
def test_fused_matches_plain_autograd(
    shape: tuple[int, int], dtype: torch.dtype, variant: str, weighted: bool, reduction: str, gamma: float
) -> None:
    # the fused kernel (transposed log-softmax for few float32 classes) against autograd of the
    # composition evaluated in float64 on the same values
    g = torch.Generator().manual_seed(15)
    n, c = shape
    z = (torch.randn(n, c, dtype=torch.float64, generator=g) * 4).to(dtype).double()
    y = torch.randint(c, (n,), generator=g)
    w = torch.rand(c, dtype=torch.float64, generator=g) + 0.5 if weighted else None
    a = z.to(dtype, copy=True).requires_grad_(True)
    b = z.clone().requires_grad_(True)
    fused = focal_loss(a, y, gamma=gamma, weight=w, reduction=reduction, variant=variant)
    assert type(fused.grad_fn).__name__ == "_FocalLossBackward"
    plain = _focal_reference(b, y, gamma, w, reduction, variant == "ldam_repo")
    tol = {} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(fused.double(), plain, **tol)
    upstream = torch.rand(n, dtype=torch.float64, generator=g) if reduction == "none" else torch.tensor(0.7, dtype=torch.float64)
    fused.backward(upstream.to(dtype), retain_graph=True)
    plain.backward(upstream)
    torch.testing.assert_close(a.grad.double(), b.grad, **tol)
    a.grad = None
    fused.backward(upstream.to(dtype))  # the saved tensors serve a second backward
    torch.testing.assert_close(a.grad.double(), b.grad, **tol)


@pytest.mark.parametrize("variant", ["standard", "ldam_repo"])
def test_certain_prediction_has_a_finite_gradient_below_gamma_one(variant: str) -> None:
    # a true-class probability of exactly 1: (1 - p)^gamma has an infinite derivative for gamma < 1,
    # times a zero log-probability; the limit of the product is 0, which the kernel returns
    z = torch.tensor([[200.0, 0.0, 0.0], [0.5, -0.2, 0.1]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 2])
    loss = focal_loss(z, y, gamma=0.5, variant=variant)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    torch.testing.assert_close(z.grad[0], torch.zeros(3, dtype=torch.float64))
    rest = z.detach()[1:].clone().requires_grad_(True)
    (_focal_reference(rest, y[1:], 0.5, None, "sum", variant == "ldam_repo") / 2).backward()
    torch.testing.assert_close(z.grad[1:], rest.grad)


def test_fused_double_backward() -> None:
    g = torch.Generator().manual_seed(16)
    z = torch.randn(30, 7, dtype=torch.float64, generator=g) * 3
    y = torch.randint(7, (30,), generator=g)
    v = torch.randn(30, 7, dtype=torch.float64, generator=g)
    check_double_backward(lambda t: focal_loss(t, y, gamma=2.0, weight=W.repeat(2)[:7]), lambda t: _focal_reference(t, y, 2.0, W.repeat(2)[:7], "mean", False), z, v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_checks_by_computation(dtype: torch.dtype) -> None:
    z, y = _batch(12, dtype)
    for loss in (FocalLoss(gamma=2.0), lambda zz, yy: focal_loss(zz, yy, gamma=1.0, weight=W, variant="ldam_repo")):
        check_value_messages(loss, z, y, (C, -1, -100))
