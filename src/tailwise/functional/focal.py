r"""Focal loss (Lin, Goyal, Girshick, He, Dollár; ICCV 2017, arXiv 1708.02002).

Standard (softmax) form, with :math:`p_{i} = \operatorname{softmax}(z_i)_{y_i}` the true-class
probability:

.. math:: \ell_i = -(1 - p_i)^{\gamma} \log p_i

``weight`` follows PyTorch's semantics: ``"none"`` returns :math:`w_{y_i}\ell_i` and ``"mean"`` the
weighted mean :math:`\sum_i w_{y_i}\ell_i / \sum_i w_{y_i}`.

The LDAM-DRW repository (Cao et al., NeurIPS 2019) ships a different variant, used for its "Focal" and
"CB Focal" baselines and selected here with ``variant="ldam_repo"``: the focal factor is computed from the
*weighted* cross-entropy :math:`l_i = w_{y_i}\,\mathrm{CE}_i`,

.. math:: \ell_i = (1 - e^{-l_i})^{\gamma}\, l_i, \qquad \mathcal{L} = \frac{1}{N}\sum_i \ell_i,

so that with class weights :math:`e^{-l_i}` is not the true-class probability and ``"mean"`` is a plain
mean (not divided by :math:`\sum_i w_{y_i}`). Without weights and with ``"none"``/``"sum"`` the two
variants agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tailwise._validation import (
    check_in_choices,
    check_logits_target,
    check_positive,
    check_reduction,
    check_weight,
    checked_by_computation,
)
from tailwise.functional._fused import _transposed, loss_coefficients
from tailwise.functional._prepared import PreparedLosses
from tailwise.functional._reduce import reduce_loss
from tailwise.functional.ce import _compute_logits, _vector_like

__all__ = ["FOCAL_VARIANTS", "focal_loss"]

FOCAL_VARIANTS = ("standard", "ldam_repo")

_PREPARED = PreparedLosses()


def _focal_factor(log_p: Tensor, gamma: float) -> Tensor:
    """:math:`(1 - e^{\\log p})^{\\gamma}`, computed with ``expm1`` for accuracy near ``p = 1``."""
    if gamma == 0.0:
        return torch.ones_like(log_p)
    return (-torch.expm1(log_p)).clamp_min(0.0).pow(gamma)


def focal_loss(
    logits: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    weight: Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
    variant: str = "standard",
) -> Tensor:
    r"""Softmax focal loss.

    Args:
        logits: ``(N, C)`` scores.
        target: ``(N,)`` int64 labels.
        gamma: focusing parameter :math:`\gamma \ge 0` (``0`` gives cross-entropy). Lin et al. use 2;
            the LDAM-DRW script hard-codes 1.
        weight: optional ``(C,)`` class weights.
        reduction: ``"none" | "mean" | "sum"``.
        variant: ``"standard"`` (true-class probability, PyTorch weighted mean) or ``"ldam_repo"``
            (the LDAM-DRW ``FocalLoss``: factor from the weighted CE, plain mean over the batch).

    Returns:
        The reduced loss (float32 for half/bfloat16 logits).

    Raises:
        ValueError: bad inputs, negative ``gamma``, unknown ``variant`` or ``reduction``.
    """
    return _focal(logits, target, gamma, weight, reduction, variant, _PREPARED)


def _focal(
    logits: Tensor,
    target: Tensor,
    gamma: float,
    weight: Tensor | Sequence[float] | None,
    reduction: str,
    variant: str,
    prepared: PreparedLosses,
) -> Tensor:
    """:func:`focal_loss` with the prepared-loss cache ``prepared`` (a module passes its own)."""
    key = prepared.key("focal", logits, gamma, weight, reduction, variant)
    fn = prepared.get(key)
    on_cpu = isinstance(logits, Tensor) and logits.is_cpu
    # the loss reads only the labels' log-probabilities, finite beside an infinite logit of another
    # class: the logits are checked in front, the labels' range by the computation on the CPU
    check_logits_target(logits, target, label_range=not on_cpu)
    z = _compute_logits(logits)
    if fn is None:
        fn = focal_fn(z, gamma, weight, reduction, variant)
        prepared.put(key, fn, (weight,))
    labels = target if target.dtype == torch.int64 else target.long()
    if on_cpu:
        return checked_by_computation(fn, z, labels, logits, finite=False)
    return fn(z, labels)


def focal_fn(
    like: Tensor, gamma: float, weight: Tensor | Sequence[float] | None, reduction: str, variant: str
) -> Callable[[Tensor, Tensor], Tensor]:
    """Check the focal arguments for compute logits like ``like``; the loss as a prepared ``fn(z, target)``.

    The checks (in :func:`focal_loss`'s order, after those of the logits and labels) and the cast of
    the class weights run here, once; ``fn`` takes validated compute logits with ``like``'s dtype,
    device and number of classes and int64 labels.
    """
    check_reduction(reduction)
    check_in_choices("variant", variant, FOCAL_VARIANTS)
    gamma = check_positive("gamma", gamma, allow_zero=True)
    w = _vector_like(check_weight(weight, like.shape[1]), like)
    ldam_repo = variant == "ldam_repo"

    def fn(z: Tensor, target: Tensor) -> Tensor:
        return _FocalLoss.apply(z, target, gamma, w, reduction, ldam_repo)

    return fn


def _focal_reference(
    z: Tensor, target: Tensor, gamma: float, weight: Tensor | None, reduction: str, ldam_repo: bool
) -> Tensor:
    """:func:`focal_loss` through plain autograd operations (the papers' composition)."""
    if ldam_repo:
        weighted_ce = F.nll_loss(torch.log_softmax(z, 1), target, weight=weight, reduction="none")
        return reduce_loss(_focal_factor(-weighted_ce, gamma) * weighted_ce, reduction)
    log_p = torch.log_softmax(z, 1).gather(1, target[:, None]).squeeze(1)
    per_sample = -_focal_factor(log_p, gamma) * log_p
    return reduce_loss(per_sample, reduction, None if weight is None else weight[target])


class _FocalLoss(torch.autograd.Function):
    r"""Fused softmax focal loss (both variants) with the analytic gradient.

    With :math:`q_i = a_i \log p_i` (:math:`a_i = w_{y_i}` for ``"ldam_repo"`` with class weights, so
    that :math:`-q_i` is the weighted cross-entropy; else 1), :math:`u_i = 1 - e^{q_i}` (``expm1``) and
    the per-sample loss :math:`\ell_i = -u_i^{\gamma} q_i`,

    .. math:: \frac{\partial \ell_i}{\partial z_i} = a_i c_i\,(\operatorname{softmax}(z_i) - e_{y_i}),
        \qquad c_i = u_i^{\gamma}\,(1 + \gamma\, e^{q_i} r_i), \quad r_i = -q_i / u_i,

    with :math:`r_i = 1` (its limit) where :math:`u_i = 0`: finite for every :math:`\gamma \ge 0`,
    also where autograd of :math:`u^{\gamma}` meets :math:`0^{\gamma - 1}` (:math:`\gamma < 1`, a
    true-class probability of exactly 1). The forward keeps the log-softmax (transposed for float32 CPU
    logits with fewer than 16 classes, see :mod:`tailwise.functional._fused`) and three per-sample
    vectors instead of autograd's graph of the composition.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        target: Tensor,
        gamma: float,
        weight: Tensor | None,
        reduction: str,
        ldam_repo: bool,
    ) -> Tensor:
        transposed = _transposed(z)
        if transposed:
            log_p = torch.log_softmax(z.t(), 0)
            lp = log_p.gather(0, target.unsqueeze(0)).squeeze(0)  # the labels index (bounds-checked)
        else:
            log_p = torch.log_softmax(z, 1)
            lp = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
        sample_weight = None if weight is None else weight.index_select(0, target)
        q = lp * sample_weight if ldam_repo and sample_weight is not None else lp
        u = torch.expm1(q).neg_()  # 1 - p, accurate near p = 1
        f = u.pow(gamma)
        ctx.save_for_backward(z, target, log_p, q, u, f, weight, sample_weight)
        ctx.options = (gamma, reduction, ldam_repo, transposed)
        return reduce_loss(f.mul(q).neg_(), reduction, None if ldam_repo else sample_weight)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, target, log_p, q, u, f, weight, sample_weight = ctx.saved_tensors
        gamma, reduction, ldam_repo, transposed = ctx.options
        nones = (None,) * 5
        if not ctx.needs_input_grad[0]:
            return (None, *nones)
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain expression
            loss = _focal_reference(z, target, gamma, weight, reduction, ldam_repo)
            (grad_z,) = torch.autograd.grad(loss, z, grad, create_graph=True)
            return (grad_z, *nones)
        k, _ = loss_coefficients(grad, reduction, z.shape[0], None if ldam_repo else sample_weight)
        c = q.neg().div_(u).masked_fill_(u == 0, 1.0)  # r
        c.mul_(q.exp()).mul_(gamma).add_(1.0).mul_(f)  # u^gamma (1 + gamma p r)
        if ldam_repo and sample_weight is not None:
            c.mul_(sample_weight)
        coef = c.unsqueeze(1).mul_(k)  # (N, 1)
        if transposed:
            row = coef.t()
            grad_t = log_p.exp().mul_(row)
            grad_t.scatter_add_(0, target.unsqueeze(0), row.neg())
            return (grad_t.t(), *nones)
        grad_z = log_p.exp().mul_(coef)
        grad_z.scatter_add_(1, target.unsqueeze(1), coef.neg())
        return (grad_z, *nones)
