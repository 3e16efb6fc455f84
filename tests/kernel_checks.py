"""Checks shared by the tests of the fused kernels that form their gradient in the forward."""

from __future__ import annotations

from typing import Any

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
