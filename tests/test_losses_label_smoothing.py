"""Label-smoothing loss: smoothed targets, special case, module twin, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kernel_checks import check_double_backward, check_gradient_handed_over, check_value_messages
from tailwise import validation_disabled
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


# ----------------------------------------------------------------------------- fused kernels
@pytest.mark.parametrize("upstream", [1.0, 0.7])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("eps", [0.1, 1.0])
@pytest.mark.parametrize(
    ("shape", "dtype", "kernel"),
    [((300, 40), torch.float32, "_SmoothedCrossEntropy"), ((300, 40), torch.float64, "_SmoothedCrossEntropy"),
     ((37, 6), torch.float32, "_SmoothedCrossEntropyTransposed"), ((37, 6), torch.float64, "_SmoothedCrossEntropy")],
)
def test_unweighted_kernels_match_torch(
    shape: tuple[int, int], dtype: torch.dtype, kernel: str, eps: float, reduction: str, upstream: float
) -> None:
    # unweighted smoothing of class indices on the CPU runs a fused kernel: value and gradient of
    # PyTorch's label_smoothing (in float64 on the same values), the gradient handed over at most once
    g = torch.Generator().manual_seed(12)
    z = (torch.randn(*shape, dtype=torch.float64, generator=g) * 5).to(dtype).double()
    y = torch.randint(shape[1], (shape[0],), generator=g)
    a = z.to(dtype, copy=True).requires_grad_(True)
    b = z.clone().requires_grad_(True)
    fused = label_smoothing_loss(a, y, eps, reduction=reduction)
    assert type(fused.grad_fn).__name__ == kernel + "Backward"
    plain = F.cross_entropy(b, y, label_smoothing=eps, reduction=reduction)
    tol = {} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(fused.double(), plain, **tol)
    check_gradient_handed_over(fused, plain, a, b, upstream, **tol)
    with torch.no_grad():
        torch.testing.assert_close(label_smoothing_loss(a, y, eps, reduction=reduction).double(), plain, **tol)


@pytest.mark.parametrize("shape", [(37, 6), (30, 20)])
def test_unweighted_kernels_double_backward(shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(13)
    z = torch.randn(*shape, generator=g) * 3
    y = torch.randint(shape[1], (shape[0],), generator=g)
    v = torch.randn(*shape, generator=g)
    check_double_backward(lambda t: label_smoothing_loss(t, y, 0.2), lambda t: F.cross_entropy(t, y, label_smoothing=0.2), z, v)


@pytest.mark.parametrize("shape", [(12, 5), (300, 40)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernels_check_by_computation(shape: tuple[int, int], dtype: torch.dtype) -> None:
    # the fused kernels check the labels by their bounds-checked indexing and the logits by the loss's
    # finiteness; the messages are those of the checks in front
    g = torch.Generator().manual_seed(14)
    n, c = shape
    z = (torch.randn(n, c, generator=g) * 3).to(dtype)
    y = torch.randint(c, (n,), generator=g)
    module = LabelSmoothingLoss(0.1)
    for loss in (module, lambda zz, yy: label_smoothing_loss(zz, yy, 0.1, reduction="sum")):
        check_value_messages(loss, z, y, (c, -1, -100))
    with validation_disabled():  # unchecked: the same kernel, whose indexing refuses any label outside [0, C)
        torch.testing.assert_close(label_smoothing_loss(z, y, 0.1).double(), F.cross_entropy(z.double(), y, label_smoothing=0.1))
        ignored = y.clone()
        ignored[4] = -100
        with pytest.raises((IndexError, RuntimeError), match="out of bounds"):
            label_smoothing_loss(z, ignored, 0.1)


def test_empty_batch_keeps_torch_semantics() -> None:
    z = torch.empty(0, 5)
    y = torch.empty(0, dtype=torch.int64)
    torch.testing.assert_close(label_smoothing_loss(z, y, 0.1, reduction="sum"), F.cross_entropy(z, y, label_smoothing=0.1, reduction="sum"))
    assert math.isnan(float(label_smoothing_loss(z, y, 0.1)))
