"""Cross-entropy baseline: PyTorch semantics, reductions, gradients, module twin, bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tailwise
from tailwise.functional import cross_entropy
from tailwise.losses import CrossEntropyLoss
from tailwise.registry import LOSSES

C = 5


def _batch(n: int = 12, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, C, generator=g, dtype=dtype), torch.randint(0, C, (n,), generator=g)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_torch_and_slow_loop(reduction: str, weighted: bool) -> None:
    z, y = _batch()
    w = torch.linspace(0.5, 2.0, C, dtype=torch.float64) if weighted else None
    out = cross_entropy(z, y, weight=w, reduction=reduction)
    torch.testing.assert_close(out, F.cross_entropy(z, y, weight=w, reduction=reduction), rtol=1e-12, atol=1e-12)
    per = [-(torch.log_softmax(z[i], 0)[y[i]]) * (1.0 if w is None else w[y[i]]) for i in range(len(y))]
    den = sum(1.0 if w is None else float(w[y[i]]) for i in range(len(y)))
    ref = {"none": torch.stack(per), "sum": sum(per), "mean": sum(per) / den}[reduction]
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_soft_targets_and_label_smoothing() -> None:
    z, y = _batch()
    soft = torch.softmax(torch.randn(12, C, dtype=torch.float64), 1)
    torch.testing.assert_close(cross_entropy(z, soft), F.cross_entropy(z, soft))
    torch.testing.assert_close(cross_entropy(z, F.one_hot(y, C).double()), cross_entropy(z, y))
    eps = 0.2
    q = (1 - eps) * F.one_hot(y, C).double() + eps / C
    torch.testing.assert_close(cross_entropy(z, y, label_smoothing=eps), cross_entropy(z, q))


def test_gradcheck() -> None:
    z, y = _batch(6)
    w = torch.rand(C, dtype=torch.float64) + 0.1
    assert torch.autograd.gradcheck(lambda t: cross_entropy(t, y, weight=w), (z.requires_grad_(),))


def test_module_equals_functional_and_set_weight() -> None:
    z, y = _batch()
    w = torch.linspace(0.5, 2.0, C, dtype=torch.float64)
    module = CrossEntropyLoss(reduction="sum", label_smoothing=0.1)
    torch.testing.assert_close(module(z, y), cross_entropy(z, y, reduction="sum", label_smoothing=0.1))
    module.set_weight(w)
    torch.testing.assert_close(module(z, y), cross_entropy(z, y, w, "sum", 0.1))
    module.set_weight(None)
    assert module.weight is None


def test_state_dict_round_trip_with_and_without_weight() -> None:
    z, y = _batch()
    saved = CrossEntropyLoss(weight=[1.0, 2.0, 3.0, 4.0, 5.0])
    fresh = CrossEntropyLoss()
    fresh.load_state_dict(saved.state_dict())
    torch.testing.assert_close(fresh(z, y), saved(z, y))
    fresh.load_state_dict(CrossEntropyLoss().state_dict())
    assert fresh.weight is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_input_computes_in_float32(dtype: torch.dtype) -> None:
    z, y = _batch(64, torch.float32)
    zl = (z * 4).to(dtype)
    out = cross_entropy(zl, y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.cross_entropy(zl.float(), y), rtol=1e-6, atol=1e-6)


def test_registry_builds_ce() -> None:
    loss = LOSSES.build("ce", {"reduction": "none"}, class_counts=[5, 4, 3, 2, 1], num_classes=5)
    assert isinstance(loss, CrossEntropyLoss)
    with pytest.raises(ValueError, match="weight must be a 1-D tensor with 5 entries"):
        loss.set_weight([1.0, 2.0])


def test_bad_inputs() -> None:
    z, y = _batch()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        cross_entropy(z, torch.full((12,), 5))
    with pytest.raises(ValueError, match="logits must be finite"):
        cross_entropy(torch.full((12, C), float("nan")), y)
    with pytest.raises(ValueError, match="reduction must be one of"):
        cross_entropy(z, y, reduction="avg")
    with pytest.raises(ValueError, match="weight must be a 1-D tensor with 5 entries"):
        cross_entropy(z, y, weight=torch.ones(3))
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\]"):
        cross_entropy(z, y, label_smoothing=1.5)
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        cross_entropy(z, y.to(torch.bool))


@pytest.mark.parametrize("n", [0, 1, 300])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_few_classes_float32_path_equals_torch(weighted: bool, reduction: str, n: int) -> None:
    # float32 CPU logits with fewer than 16 classes take the transposed log-softmax; value and gradient
    # are F.cross_entropy's up to rounding (a NaN mean for an empty batch included)
    g = torch.Generator().manual_seed(11)
    z = torch.randn(n, 7, generator=g) * 4
    y = torch.randint(7, (n,), generator=g)
    w = torch.rand(7, generator=g) + 0.5 if weighted else None
    upstream = torch.rand(n, generator=g) if reduction == "none" else torch.tensor(1.4)
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    out = cross_entropy(a, y, weight=w, reduction=reduction)
    ref = F.cross_entropy(b, y, weight=w, reduction=reduction)
    assert type(out.grad_fn).__name__ == "NllLossBackward0" and type(out.grad_fn.next_functions[0][0]).__name__ == "TBackward0"
    torch.testing.assert_close(out, ref, equal_nan=True)
    out.backward(upstream)
    ref.backward(upstream)
    torch.testing.assert_close(a.grad, b.grad)
    # label smoothing: PyTorch's formula, value and gradient (module and functional)
    a.grad = b.grad = None
    smooth = CrossEntropyLoss(weight=w, reduction=reduction, label_smoothing=0.1)(a, y)
    smooth_ref = F.cross_entropy(b, y, weight=w, reduction=reduction, label_smoothing=0.1)
    torch.testing.assert_close(smooth, smooth_ref, equal_nan=True)
    smooth.backward(upstream)
    smooth_ref.backward(upstream)
    torch.testing.assert_close(a.grad, b.grad)
    with tailwise.validation_disabled():  # unchecked labels go through PyTorch (ignore_index semantics)
        torch.testing.assert_close(cross_entropy(z, y, weight=w, reduction=reduction, label_smoothing=0.1), smooth_ref.detach(), equal_nan=True)
