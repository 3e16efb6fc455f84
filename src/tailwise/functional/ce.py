r"""Cross-entropy, the baseline every long-tail loss is compared with.

.. math:: \ell(z, y) = -\log \frac{e^{z_y}}{\sum_c e^{z_c}}

A thin, validated wrapper over :func:`torch.nn.functional.cross_entropy` that keeps PyTorch's
semantics exactly (class ``weight`` with the weighted mean :math:`\sum_i w_{y_i}\ell_i/\sum_i w_{y_i}`,
soft targets, label smoothing) and computes in float32 when the logits are half or bfloat16. On the
CPU, label smoothing of class indices without class weights and with a ``"mean"`` or ``"sum"``
reduction runs fused kernels (:class:`_SmoothedCrossEntropy` and its transposed twin for few classes)
with PyTorch's values and gradients, computed without its separate log-softmax and smoothing term.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tailwise._validation import (
    check_logits_target,
    check_probability,
    check_reduction,
    check_weight,
    checked_by_computation,
    compiling,
    validation_enabled,
)
from tailwise.functional._fused import (
    GradientInForward,
    _transposed,
    forms_gradient,
    hand_over_gradient,
    reduce_with_gradient,
)

__all__ = ["cross_entropy"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _compute_logits(logits: Tensor) -> Tensor:
    """Upcast half/bfloat16 logits to float32 (logs and exponentials run in float32 or wider)."""
    return logits.float() if logits.dtype in _LOW_PRECISION else logits


def _vector_like(vec: Tensor | Sequence[float] | None, like: Tensor) -> Tensor | None:
    """A per-class vector on ``like``'s device and dtype (``None`` stays ``None``)."""
    if vec is None:
        return None
    if not isinstance(vec, Tensor):
        vec = torch.as_tensor(vec, dtype=torch.float64)
    return vec.to(device=like.device, dtype=like.dtype)


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Softmax cross-entropy with PyTorch's semantics and tailwise's input checks.

    .. math:: \ell_i = -\sum_c q_{ic} \log \operatorname{softmax}(z_i)_c

    with :math:`q_i` the one-hot label (or the given soft target), mixed with the uniform distribution
    by ``label_smoothing`` (Szegedy et al., CVPR 2016): :math:`q \leftarrow (1-\epsilon) q + \epsilon/C`.

    Args:
        logits: ``(N, C)`` unnormalised scores.
        target: ``(N,)`` int64 class indices, or ``(N, C)`` class probabilities (soft targets).
        weight: optional ``(C,)`` per-class weights (``nn.CrossEntropyLoss``'s ``weight``).
        reduction: ``"none" | "mean" | "sum"``. With ``weight`` and hard labels ``"mean"`` is the
            weighted mean :math:`\sum_i w_{y_i}\ell_i / \sum_i w_{y_i}`; with soft targets it divides by
            ``N`` (PyTorch's convention).
        label_smoothing: :math:`\epsilon \in [0, 1]`.

    Returns:
        The reduced loss (float32 for half/bfloat16 logits, else the logits' dtype).

    Raises:
        TypeError: non-tensor inputs or a target of the wrong dtype.
        ValueError: bad shapes, labels out of range, non-finite logits, a bad ``reduction``,
            ``weight`` or ``label_smoothing``.
    """
    eps = check_probability("label_smoothing", label_smoothing)
    # unweighted smoothing of class indices on the CPU, reduced: a fused kernel that checks the labels'
    # range and the logits' finiteness by its computation (with the checks off, a label outside
    # [0, C), PyTorch's ignore_index -100 included, raises the indexing error)
    smoothed = (
        eps > 0.0
        and weight is None
        and reduction in ("mean", "sum")
        and isinstance(logits, Tensor)
        and logits.is_cpu
        and isinstance(target, Tensor)
        and not target.is_floating_point()
        and not compiling()
    )
    check_logits_target(logits, target, allow_soft=True, label_range=not smoothed, finite=not smoothed)
    check_reduction(reduction)
    weight = check_weight(weight, logits.shape[1])
    z = _compute_logits(logits)
    if smoothed and z.shape[0] > 0:
        kernel = _SmoothedCrossEntropyTransposed if _transposed(z) else _SmoothedCrossEntropy

        def fn(z: Tensor, target: Tensor) -> Tensor:
            return kernel.apply(z, target, eps, reduction, torch.is_grad_enabled())

        return checked_by_computation(fn, z, target.long(), logits)
    if smoothed:  # an empty batch: the label and logit checks were left to the kernel
        check_logits_target(logits, target, allow_soft=True)
    if target.is_floating_point():
        target = target.to(z.dtype)
    else:
        target = target.long()
        if compiling() and reduction != "none" and forms_gradient(z) and (eps == 0.0 or weight is None):
            return _CrossEntropyTraced.apply(z, target, eps, _vector_like(weight, z), reduction)
        if _transposed(z) and (eps == 0.0 or validation_enabled()):
            return _few_classes_cross_entropy(z, target, _vector_like(weight, z), reduction, eps)
    return F.cross_entropy(z, target, weight=_vector_like(weight, z), reduction=reduction, label_smoothing=eps)


class _CrossEntropyTraced(GradientInForward):
    r"""Cross-entropy of class indices for calls traced by ``torch.compile``: the gradient formed in the forward.

    For a ``"mean"`` or ``"sum"``, with label smoothing :math:`\epsilon` (no class weights) or class
    weights (no smoothing). The per-sample loss is
    :math:`(1-\epsilon)(\log s - t_y) + \epsilon(\log s - \bar t)` with :math:`t = z - \max_k z_k`,
    :math:`s = \sum_j e^{t_j}` and :math:`\bar t` the row mean of :math:`t` (PyTorch's smoothing), and
    its gradient :math:`\operatorname{softmax}(z) - (1-\epsilon) e_y - \epsilon / C`, times
    :math:`w_y / \sum_i w_{y_i}` for a weighted mean (see :class:`GradientInForward`).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: Tensor, target: Tensor, eps: float, weight: Tensor | None, reduction: str
    ) -> Tensor:
        c = z.shape[1]
        index = target.unsqueeze(1)
        t = z - z.amax(dim=1, keepdim=True)
        e = torch.exp(t)
        s = e.sum(dim=1, keepdim=True)
        log_s = s.log()
        per_sample = log_s - t.gather(1, index)  # (N, 1)
        grad = e / s
        if eps > 0.0:
            per_sample = (1.0 - eps) * per_sample + eps * (log_s - t.mean(dim=1, keepdim=True))
            grad = grad - eps / c
        grad = grad.scatter_add(1, index, torch.full_like(s, eps - 1.0))
        loss, grad = reduce_with_gradient(per_sample, grad, target, weight, reduction)
        ctx.save_for_backward(grad)
        return loss


def _few_classes_cross_entropy(z: Tensor, target: Tensor, weight: Tensor | None, reduction: str, eps: float) -> Tensor:
    r"""``F.cross_entropy`` of float32 CPU logits with fewer than 16 classes and class-index labels.

    The log-softmax runs in the transposed ``(C, N)`` layout, vectorised over the samples (PyTorch's
    runs a scalar loop on rows this short; see :mod:`tailwise.functional._fused`). With label
    smoothing, PyTorch's formula: :math:`(1-\epsilon)\,\mathrm{NLL} + \frac{\epsilon}{C} S` with
    :math:`S_i = -\sum_c w_c \log p_{ic}`, reduced like the NLL (the weighted mean divides by
    :math:`\sum_i w_{y_i}`); the caller takes this path with smoothing only when the labels were
    checked to lie in range (no ``ignore_index`` sample).
    """
    log_p = torch.log_softmax(z.t(), 0)
    nll = F.nll_loss(log_p.t(), target, weight=weight, reduction=reduction)
    if eps == 0.0:
        return nll
    smooth = (log_p.sum(0) if weight is None else torch.mv(log_p.t(), weight)).neg()
    if reduction == "mean":
        smooth = smooth.mean() if weight is None else smooth.sum() / weight.index_select(0, target).sum()
    elif reduction == "sum":
        smooth = smooth.sum()
    return nll * (1.0 - eps) + smooth * (eps / z.shape[1])


class _SmoothedCrossEntropy(torch.autograd.Function):
    r"""Label-smoothed cross-entropy of class indices, unweighted ``"mean"`` or ``"sum"``, gradient formed ahead.

    With :math:`t = z - \max_k z_k`, :math:`e = \exp(t)` and :math:`s = \sum_c e_c`, the loss of a
    sample is :math:`-\sum_c q_c \log\operatorname{softmax}(z)_c = \log s - (1-\epsilon)\,t_y -
    \frac{\epsilon}{C}\sum_c t_c` (:math:`q = (1-\epsilon)\,e_y + \epsilon/C` sums to one) and its
    gradient :math:`\operatorname{softmax}(z) - (1-\epsilon)\,e_y - \epsilon/C`, times :math:`1/N` for
    the mean: PyTorch's ``label_smoothing`` without a separate log-softmax. The exponentials are
    turned in place into the gradient, which the backward returns (times the upstream gradient when it
    is not 1) without a copy; a second backward through a retained graph forms it again.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: Tensor, target: Tensor, eps: float, reduction: str, grad_enabled: bool
    ) -> Tensor:
        with_grad = grad_enabled and ctx.needs_input_grad[0]
        loss, ctx.grad = _smoothed_terms(z, target, eps, reduction, with_grad)
        ctx.save_for_backward(z, target)
        ctx.options = (eps, reduction)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, target = ctx.saved_tensors
        eps, reduction = ctx.options
        nones = (None,) * 4
        if torch.is_grad_enabled():  # create_graph=True: differentiate PyTorch's expression
            return (_smoothed_reference_grad(z, target, eps, reduction, grad), *nones)
        g = hand_over_gradient(ctx, grad, lambda: _smoothed_terms(z.detach(), target, eps, reduction, True)[1])
        return (g, *nones)


def _smoothed_terms(
    z: Tensor, target: Tensor, eps: float, reduction: str, with_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """The loss of :class:`_SmoothedCrossEntropy` and, when ``with_grad``, its gradient for a unit upstream gradient."""
    n, c = z.shape
    rows = target.unsqueeze(1)
    zmax = z.amax(dim=1, keepdim=True)
    e = torch.sub(z, zmax)  # t <= 0
    t_y = e.gather(1, rows)  # the labels index first (bounds-checked on the CPU)
    t_sum = e.sum(dim=1, keepdim=True)
    e.exp_()
    s = e.sum(dim=1, keepdim=True)
    loss = s.log().sub_(t_y, alpha=1.0 - eps).sub_(t_sum, alpha=eps / c).sum()
    scale = 1.0 / n if reduction == "mean" else 1.0
    if reduction == "mean":
        loss.mul_(scale)
    if not with_grad:
        return loss, None
    uniform = torch.full((), -eps / c * scale, dtype=z.dtype, device=z.device)
    grad = torch.addcmul(uniform, e, s.reciprocal_().mul_(scale), out=e)  # softmax / N - eps / (C N)
    grad.scatter_(1, rows, -(1.0 - eps) * scale, reduce="add")
    return loss, grad


def _smoothed_reference_grad(z: Tensor, target: Tensor, eps: float, reduction: str, grad: Tensor) -> Tensor:
    """The gradient of ``F.cross_entropy(..., label_smoothing=eps)`` with its graph (double backward)."""
    loss = F.cross_entropy(z, target, reduction=reduction, label_smoothing=eps)
    (grad_z,) = torch.autograd.grad(loss, z, grad, create_graph=True)
    return grad_z


class _SmoothedCrossEntropyTransposed(torch.autograd.Function):
    r""":class:`_SmoothedCrossEntropy` for float32 CPU logits with fewer than 16 classes, ``(C, N)`` layout.

    The log-softmax runs along dim 0 of the transposed logits, vectorised over the samples (see
    :mod:`tailwise.functional._fused`); the loss :math:`-\sum_i ((1-\epsilon)\log p_{iy_i} +
    \frac{\epsilon}{C}\sum_c \log p_{ic})` comes from two sums read as CPU scalars and combined in
    double precision, and the log-softmax buffer becomes :math:`G^\top`; the backward is one product
    by the upstream gradient and the reduction's scale.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: Tensor, target: Tensor, eps: float, reduction: str, grad_enabled: bool
    ) -> Tensor:
        n, c = z.shape
        buf = torch.log_softmax(z.t(), 0)
        rows = target.unsqueeze(0)
        log_p_y = float(buf.gather(0, rows).sum())  # the labels index first (bounds-checked)
        log_p_all = float(buf.sum())
        scale = 1.0 / n if reduction == "mean" else 1.0
        value = -((1.0 - eps) * log_p_y + eps / c * log_p_all) * scale
        if grad_enabled and ctx.needs_input_grad[0]:  # (under no_grad the flag is still set)
            grad_t = buf.exp_().scatter_(0, rows, eps - 1.0, reduce="add").sub_(eps / c)
            ctx.save_for_backward(grad_t, z, target)
            ctx.scale = scale
        ctx.options = (eps, reduction)
        return torch.scalar_tensor(value, dtype=z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad_t, z, target = ctx.saved_tensors
        nones = (None,) * 4
        if torch.is_grad_enabled():  # create_graph=True: differentiate PyTorch's expression
            eps, reduction = ctx.options
            return (_smoothed_reference_grad(z, target, eps, reduction, grad), *nones)
        return (grad_t.t().mul(float(grad) * ctx.scale), *nones)
