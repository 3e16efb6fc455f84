r"""MbLS: margin-based label smoothing (Liu et al., CVPR 2022).

Bingyuan Liu, Ismail Ben Ayed, Adrian Galdran, Jose Dolz, "The Devil is in the Margin: Margin-based
Label Smoothing for Network Calibration", CVPR 2022 (arXiv 2111.15430). Official code
``by-liu/MbLS`` (``LogitMarginL1``), also shipped as the ``logit_margin`` baseline of CALS.

.. math::

    L = \mathrm{CE}(z, y) + \alpha\,\frac{1}{NC}\sum_{i,j}\bigl[\max_k z_{ik} - z_{ij} - m\bigr]_+ .

The penalty leaves logit distances below the margin :math:`m` free and pulls larger ones back: a
label-smoothing-like regulariser whose strength does not push all logits to be equal.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tailwise._validation import check_logits_target, check_positive, check_reduction, check_weight
from tailwise.functional._fused import cached_vector, log_softmax_rows, loss_coefficients, softmax_like
from tailwise.functional._reduce import reduce_loss

__all__ = ["mbls_loss", "mbls_margin_penalty"]


def mbls_margin_penalty(logits: Tensor, margin: float = 10.0) -> Tensor:
    r"""Per-sample margin penalty :math:`\frac1C\sum_j [\max_k z_{ik} - z_{ij} - m]_+`, shape ``[N]``.

    The maximum is ``Tensor.max`` (its gradient goes to one arg-max under ties), as in the official code.
    """
    margin = check_positive("margin", margin, allow_zero=True)
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    diff = z.max(dim=1, keepdim=True).values - z
    return F.relu(diff - margin).mean(dim=1)


def mbls_loss(
    logits: Tensor,
    target: Tensor,
    margin: float = 10.0,
    alpha: float = 0.1,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    r"""Margin-based label smoothing loss :math:`\mathrm{CE} + \alpha\cdot\mathrm{mean}_{ij}[d_{ij} - m]_+`.

    Per sample: :math:`\mathrm{CE}_i + \frac{\alpha}{C}\sum_j [d_{ij} - m]_+` with
    :math:`d_{ij} = \max_k z_{ik} - z_{ij}`, so ``'mean'`` gives the official
    ``CE_mean + alpha * relu(d - m).mean()``. A per-class ``weight`` weights the cross-entropy term
    (PyTorch's weighted mean); the margin term is always the plain mean.

    Args:
        logits: ``[N, C]`` logits.
        target: ``[N]`` int64 labels.
        margin: margin :math:`m \ge 0` (official default 10).
        alpha: weight :math:`\alpha \ge 0` of the margin term (official default 0.1); 0 gives CE.
        reduction: ``'none' | 'mean' | 'sum'``.
        weight: optional per-class weights of the cross-entropy term.
    """
    return _mbls(logits, target, margin, alpha, reduction, weight)


def _mbls(
    logits: Tensor,
    target: Tensor,
    margin: float,
    alpha: float,
    reduction: str,
    weight: Tensor | None,
    cache: dict | None = None,
) -> Tensor:
    """:func:`mbls_loss` with an optional ``cache``: a module's weight cast to the logits' dtype."""
    check_logits_target(logits, target)
    check_reduction(reduction)
    alpha = check_positive("alpha", alpha, allow_zero=True)
    weight = check_weight(weight, logits.shape[1])
    margin = check_positive("margin", margin, allow_zero=True)
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    return _MbLSLoss.apply(z, target.long(), margin, alpha, reduction, cached_vector(cache, "weight", weight, z))


def _mbls_reference(
    z: Tensor, target: Tensor, margin: float, alpha: float, reduction: str, weight: Tensor | None
) -> Tensor:
    """:func:`mbls_loss` through plain autograd operations (the official composition)."""
    ce = F.cross_entropy(z, target, reduction="none")
    sample_weight = None if weight is None else weight[target]
    pen = mbls_margin_penalty(z, margin)
    return reduce_loss(ce, reduction, sample_weight) + alpha * reduce_loss(pen, reduction)


class _MbLSLoss(torch.autograd.Function):
    r"""Fused MbLS loss with the analytic gradient.

    With :math:`c_i` the gradient reaching sample :math:`i`'s cross-entropy, :math:`k_i` the gradient
    reaching its penalty times :math:`\alpha/C`, :math:`a_{ij} = [\max_k z_{ik} - z_{ij} > m]` (the
    derivative of ``relu``, 0 at 0) and :math:`j^*_i` the index ``Tensor.max`` returns,

    .. math:: \frac{\partial L}{\partial z_{il}} = c_i(\operatorname{softmax}(z_i)_l - [l = y_i])
        - k_i a_{il} + [l = j^*_i]\, k_i \sum_j a_{ij},

    the last term being ``Tensor.max``'s gradient, which goes to the one returned index under ties as in
    the official code. The forward evaluates the same operations as :func:`mbls_margin_penalty` and
    keeps two ``(N, C)`` buffers (the log-softmax and the clipped distances) for the backward, instead of
    autograd's graph of five.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: Tensor, target: Tensor, margin: float, alpha: float, reduction: str, weight: Tensor | None
    ) -> Tensor:
        log_p = log_softmax_rows(z)
        ce = log_p.gather(1, target.unsqueeze(1)).squeeze(1).neg_()
        zmax, arg_max = z.max(dim=1, keepdim=True)
        d = torch.sub(zmax, z).sub_(margin).clamp_min_(0)  # relu(max_k z_k - z - m)
        pen = d.mean(dim=1)
        sample_weight = None if weight is None else weight.index_select(0, target)
        ctx.save_for_backward(z, log_p, target, d, arg_max, weight, sample_weight)
        ctx.options = (margin, alpha, reduction)
        return reduce_loss(ce, reduction, sample_weight) + alpha * reduce_loss(pen, reduction)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, log_p, target, d, arg_max, weight, sample_weight = ctx.saved_tensors
        margin, alpha, reduction = ctx.options
        nones = (None,) * 5
        if not ctx.needs_input_grad[0]:
            return (None, *nones)
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain expression
            with torch.enable_grad():
                loss = _mbls_reference(z, target, margin, alpha, reduction, weight)
                (grad_z,) = torch.autograd.grad(loss, z, grad, create_graph=True)
            return (grad_z, *nones)
        n, c = z.shape
        c_ce, c_pen = loss_coefficients(grad, reduction, n, sample_weight)
        grad_z = softmax_like(log_p, z)
        grad_z.mul_(c_ce)
        grad_z.scatter_add_(1, target.unsqueeze(1), c_ce.neg().expand(n, 1))
        if alpha != 0:
            k = c_pen * (alpha / c)
            active = torch.sign(d)  # 1 where the distance exceeds the margin, else 0 (d >= 0)
            grad_z.addcmul_(active, k, value=-1)
            grad_z.scatter_add_(1, arg_max, active.sum(dim=1, keepdim=True).mul_(k))
        return (grad_z, *nones)
