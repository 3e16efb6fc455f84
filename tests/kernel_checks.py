"""Checks shared by the tests of the fused kernels that form their gradient in the forward."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch


def check_gradient_handed_over(
    fused: torch.Tensor, plain: torch.Tensor, a: torch.Tensor, b: torch.Tensor, upstream: float, **tol: Any
) -> None:
    """``fused`` (of leaf ``a``) and ``plain`` (of the float64 leaf ``b``) give the same gradients.

    A first backward through a retained graph, then a second one after ``a.grad`` was changed in place
    (as an optimiser does): the gradient the kernel formed ahead is handed to autograd at most once, so
    the second backward must form it again, equal and not aliased with the first ``.grad``.
    """
    up = torch.tensor(upstream, dtype=torch.float64)
    fused.backward(up.to(fused.dtype), retain_graph=True)
    plain.backward(up)
    torch.testing.assert_close(a.grad.double(), b.grad, **tol)
    first = a.grad
    first.mul_(-5.0)
    a.grad = None
    fused.backward(up.to(fused.dtype))
    torch.testing.assert_close(a.grad.double(), b.grad, **tol)
    assert a.grad.data_ptr() != first.data_ptr()


def check_value_messages(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z: torch.Tensor, y: torch.Tensor, bad_labels: tuple[int, ...]) -> None:
    """``loss`` refuses each of ``bad_labels`` at sample 4 and a NaN or infinite logit of sample 3.

    The bad logit is in a class other than the sample's label (where a cross-entropy can stay finite).
    The messages are those of the checks in front (``check_label_range``, ``check_finite``), whether
    the loss checks in front or by its computation.
    """
    c = z.shape[1]
    for bad_label in bad_labels:
        bad = y.clone()
        bad[4] = bad_label
        with pytest.raises(ValueError, match=rf"labels must lie in \[0, {c - 1}\] for {c} classes"):
            loss(z, bad)
    for value in (math.nan, math.inf, -math.inf):
        z_bad = z.clone()
        z_bad[3, (int(y[3]) + 1) % c] = value
        with pytest.raises(ValueError, match=r"logits must be finite; got 1 NaN/Inf value"):
            loss(z_bad, y)


def check_double_backward(
    fused: Callable[[torch.Tensor], torch.Tensor], plain: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, v: torch.Tensor, **tol: Any
) -> None:
    """First derivatives of ``fused`` and ``plain`` at ``z``, and their products with ``v`` differentiated
    again (``create_graph=True``), agree."""
    results = []
    for fn in (fused, plain):
        leaf = z.clone().requires_grad_(True)
        (first,) = torch.autograd.grad(fn(leaf), leaf, create_graph=True)
        (second,) = torch.autograd.grad((first * v).sum(), leaf)
        results.append((first.detach(), second))
    torch.testing.assert_close(results[0][0], results[1][0], **tol)
    torch.testing.assert_close(results[0][1], results[1][1], **tol)
