r"""CALS: class-adaptive label smoothing by an augmented Lagrangian (Liu et al., CVPR 2023).

Bingyuan Liu, Jérôme Rony, Adrian Galdran, Jose Dolz, Ismail Ben Ayed, "Class Adaptive Network
Calibration", CVPR 2023 (arXiv 2211.15088).

CALS constrains every logit distance :math:`d_{ij} = \max_k z_{ik} - z_{ij}` to stay below a margin
:math:`m` and enforces the constraints :math:`h_{ij} \le 0` with a class-wise augmented Lagrangian:

.. math::

    h_{ij} = \frac{d_{ij} - m}{m}\ (\texttt{normalize=True})\quad\text{or}\quad h_{ij} = d_{ij} - m,

    L = \mathrm{CE}(z, y) + \frac{1}{N C}\sum_{i,j} P(h_{ij}; \lambda_j, \rho_j),

where :math:`P` is a penalty-Lagrangian function with multiplier :math:`\lambda_j` and penalty
parameter :math:`\rho_j` per class (both constants during training; they are updated from the
validation set after every epoch, see :class:`tailwise.losses.CALSLoss`). The constraint is computed
for every column, the argmax column included (where :math:`h = -1` with normalisation), as the
official code does.

This module holds the pure tensor parts: the penalty functions (each returning its value and its
derivative with respect to :math:`h`), the constraints, the penalty, the loss and the validation
statistics the multiplier update needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    compiling,
)
from tailwise.functional._fused import (
    GradientInForward,
    _transposed,
    forms_gradient,
    hand_over_gradient,
    log_softmax_rows,
    loss_coefficients,
    materialized,
    softmax_gradient_,
    softmax_like,
)
from tailwise.functional._maxima import add_at_maxima, maxima_codes
from tailwise.functional._prepared import PreparedLosses
from tailwise.functional._reduce import reduce_loss
from tailwise.functional._workspace import Workspace, give_back_scratch, take_scratch
from tailwise.functional.ce import _compute_logits

__all__ = [
    "CALS_PENALTIES",
    "cals_constraints",
    "cals_loss",
    "cals_penalty",
    "cals_validation_stats",
    "p2_penalty",
    "p3_penalty",
    "phr_penalty",
    "relu_penalty",
]

PenaltyFn = Callable[[Tensor, Tensor | float, Tensor | float], tuple[Tensor, Tensor]]

# prepared losses of repeated calls with the same tensor arguments (see tailwise.functional._prepared)
_PREPARED = PreparedLosses()


def _as_like(value: Tensor | float, ref: Tensor) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(device=ref.device, dtype=ref.dtype)
    return torch.as_tensor(value, device=ref.device, dtype=ref.dtype)


def phr_penalty(h: Tensor, lambd: Tensor | float, rho: Tensor | float) -> tuple[Tensor, Tensor]:
    r"""Powell-Hestenes-Rockafellar penalty (the CALS default).

    .. math::

        P(h; \lambda, \rho) = \begin{cases}
            \frac{(\lambda + \rho h)^2 - \lambda^2}{2\rho} & \lambda + \rho h \ge 0 \\
            -\frac{\lambda^2}{2\rho} & \text{otherwise}\end{cases},
        \qquad P'(h) = \max(0, \lambda + \rho h).

    Args:
        h: constraint values, class on the last axis.
        lambd: multipliers :math:`\lambda` (broadcast over the last axis).
        rho: penalty parameters :math:`\rho > 0` (broadcast over the last axis).

    Returns:
        ``(value, derivative)``, both of the broadcast shape; ``value`` is differentiable in ``h``.
    """
    lam, r = _as_like(lambd, h), _as_like(rho, h)
    a = lam + r * h
    active = a >= 0
    value = torch.where(active, (a * a - lam * lam) / (2 * r), -lam * lam / (2 * r))
    return value, a.detach().clamp_min(0)


def _split(h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(h >= 0, h where h >= 0 else 0, h where h < 0 else 0)``; keeps both branches finite."""
    pos = h >= 0
    zero = torch.zeros_like(h)
    return pos, torch.where(pos, h, zero), torch.where(pos, zero, h)


def p2_penalty(h: Tensor, lambd: Tensor | float, rho: Tensor | float) -> tuple[Tensor, Tensor]:
    r"""The ``p2`` penalty of the official code.

    .. math::

        P(h) = \begin{cases} \lambda h + \lambda\rho h^2 + \tfrac16 \rho^2 h^3 & h \ge 0 \\
                              \frac{\lambda h}{1 - \rho h} & h < 0 \end{cases},\qquad
        P'(h) = \begin{cases} \lambda + 2\lambda\rho h + \tfrac12 \rho^2 h^2 & h \ge 0 \\
                              \frac{\lambda}{(1 - \rho h)^2} & h < 0 \end{cases}.

    Returns:
        ``(value, derivative)`` (see :func:`phr_penalty` for the arguments).
    """
    lam, r = _as_like(lambd, h), _as_like(rho, h)
    pos, hp, hn = _split(h)
    value = torch.where(pos, lam * hp + lam * r * hp**2 + r**2 * hp**3 / 6, lam * hn / (1 - r * hn))
    with torch.no_grad():
        grad = torch.where(pos, lam + 2 * lam * r * hp + r**2 * hp**2 / 2, lam / (1 - r * hn) ** 2)
    return value, grad


def p3_penalty(h: Tensor, lambd: Tensor | float, rho: Tensor | float) -> tuple[Tensor, Tensor]:
    r"""The ``p3`` penalty of the official code.

    .. math::

        P(h) = \begin{cases} \lambda h + \lambda\rho h^2 & h \ge 0 \\
                              \frac{\lambda h}{1 - \rho h} & h < 0 \end{cases},\qquad
        P'(h) = \begin{cases} \lambda + 2\lambda\rho h & h \ge 0 \\
                              \frac{\lambda}{(1 - \rho h)^2} & h < 0 \end{cases}.

    Returns:
        ``(value, derivative)`` (see :func:`phr_penalty` for the arguments).
    """
    lam, r = _as_like(lambd, h), _as_like(rho, h)
    pos, hp, hn = _split(h)
    value = torch.where(pos, lam * hp + lam * r * hp**2, lam * hn / (1 - r * hn))
    with torch.no_grad():
        grad = torch.where(pos, lam + 2 * lam * r * hp, lam / (1 - r * hn) ** 2)
    return value, grad


def relu_penalty(h: Tensor, lambd: Tensor | float, rho: Tensor | float) -> tuple[Tensor, Tensor]:
    r"""The ``relu`` penalty: :math:`P(h) = \lambda h` for :math:`h \ge 0`, else 0 (``rho`` unused).

    Returns:
        ``(value, derivative)`` with derivative :math:`\lambda\,[h \ge 0]`.
    """
    lam = _as_like(lambd, h)
    pos, hp, _ = _split(h)
    zero = torch.zeros_like(h)
    value = torch.where(pos, lam * hp, zero)
    with torch.no_grad():
        grad = torch.where(pos, lam.expand_as(h), zero)
    return value, grad


CALS_PENALTIES: dict[str, PenaltyFn] = {
    "phr": phr_penalty,
    "p2": p2_penalty,
    "p3": p3_penalty,
    "relu": relu_penalty,
}


def cals_constraints(logits: Tensor, margin: float = 10.0, normalize: bool = True) -> Tensor:
    r"""Margin constraints :math:`h_{ij} = (\max_k z_{ik} - z_{ij} - m)/m` (or without ``/m``).

    ``amax`` splits its gradient evenly among tied maxima, as in the official code.

    Args:
        logits: ``[N, C]`` logits.
        margin: the margin :math:`m > 0`.
        normalize: divide by :math:`m` (official default ``True``).

    Returns:
        ``[N, C]`` constraint values (the constraint is :math:`h \le 0`).
    """
    margin = check_positive("margin", margin)
    z = _compute_logits(logits)
    h = z.amax(dim=-1, keepdim=True) - z - margin
    return h / margin if normalize else h


def cals_penalty(
    logits: Tensor,
    lambd: Tensor | float,
    rho: Tensor | float,
    margin: float = 10.0,
    penalty: str = "phr",
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    r"""The CALS penalty term :math:`\frac{1}{NC}\sum_{ij} P(h_{ij}; \lambda_j, \rho_j)`.

    Args:
        logits: ``[N, C]`` logits.
        lambd: ``[C]`` multipliers (or a scalar).
        rho: ``[C]`` penalty parameters (or a scalar).
        margin: margin :math:`m`.
        penalty: ``'phr' | 'p2' | 'p3' | 'relu'``.
        normalize: :math:`h = (d - m)/m` instead of :math:`d - m`.
        reduction: ``'mean'`` (over samples *and* classes, the official rule), ``'sum'`` (over samples
            of the per-sample class mean) or ``'none'`` (per-sample class mean, ``[N]``).
    """
    check_in_choices("penalty", penalty, tuple(CALS_PENALTIES))
    check_reduction(reduction)
    h = cals_constraints(logits, margin, normalize)
    value, _ = CALS_PENALTIES[penalty](h, lambd, rho)
    return reduce_loss(value.mean(dim=-1), reduction)


def cals_loss(
    logits: Tensor,
    target: Tensor,
    lambd: Tensor | float,
    rho: Tensor | float,
    margin: float = 10.0,
    penalty: str = "phr",
    normalize: bool = True,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    r"""CALS training loss :math:`\mathrm{CE}(z, y) + \frac{1}{NC}\sum_{ij} P(h_{ij}; \lambda_j, \rho_j)`.

    Per sample the loss is :math:`\mathrm{CE}_i + \frac1C\sum_j P(h_{ij})`. A per-class ``weight``
    weights the cross-entropy term with PyTorch's weighted-mean semantics; the penalty term is always
    the plain mean (the official code has no class weights).

    Args:
        logits: ``[N, C]`` logits.
        target: ``[N]`` int64 labels.
        lambd: ``[C]`` multipliers :math:`\lambda_j` (constants: no gradient flows into them).
        rho: ``[C]`` penalty parameters :math:`\rho_j`.
        margin: margin :math:`m` (the official README commands use 10).
        penalty: ``'phr' | 'p2' | 'p3' | 'relu'``.
        normalize: :math:`h = (d - m)/m`.
        reduction: ``'none' | 'mean' | 'sum'``.
        weight: optional per-class weights of the cross-entropy term.
    """
    key = _PREPARED.key("cals", logits, lambd, rho, margin, penalty, normalize, reduction, weight)
    fn = _PREPARED.get(key)
    on_cpu = isinstance(logits, Tensor) and logits.is_cpu
    check_logits_target(logits, target, label_range=not on_cpu, finite=not on_cpu)
    z = _compute_logits(logits)
    if fn is None:
        fn = cals_fn(z, lambd, rho, margin, penalty, normalize, reduction, weight)
        _PREPARED.put(key, fn, (lambd, rho, weight))
    if on_cpu:  # every kernel indexes by the labels first, with bounds checks
        return checked_by_computation(fn, z, target.long(), logits)
    return fn(z, target.long())


def cals_fn(
    like: Tensor,
    lambd: Tensor | float,
    rho: Tensor | float,
    margin: float,
    penalty: str,
    normalize: bool,
    reduction: str,
    weight: Tensor | None,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Check the CALS arguments for compute logits like ``like``; the loss as a prepared ``fn(z, target)``.

    The checks (in :func:`cals_loss`'s order, after those of the logits and labels) and the casts of
    the per-class vectors run here, once; a loss module keeps ``fn`` while its state is unchanged.
    ``fn`` takes validated compute logits with ``like``'s dtype, device and number of classes (any
    batch size) and int64 labels. The ``phr`` penalty without class weights and with a ``"mean"`` or
    ``"sum"`` reduction forms its gradient in the forward (:class:`_CALSPhrMean`, and
    :class:`_CALSPhrMeanTransposed` for float32 CPU logits with fewer than 16 classes); other ``phr``
    settings on such logits, and empty batches there, run :class:`_CALSPhrTransposed`; the rest
    :class:`_CALSLoss`. On the CPU each kernel indexes by the labels first, with bounds checks (see
    :func:`tailwise._validation.checked_by_computation`). Under ``torch.compile`` ``fn`` is
    :class:`_CALSPhrMeanTraced` for the ``phr`` penalty without class weights and with a ``"mean"``
    or ``"sum"`` reduction, otherwise the plain expression (:func:`_cals_reference`); the compiler
    fuses either.
    """
    check_reduction(reduction)
    check_in_choices("penalty", penalty, tuple(CALS_PENALTIES))
    num_classes = like.shape[1]
    weight = check_weight(weight, num_classes)
    lambd = _check_vector("lambd", lambd, num_classes)
    rho = _check_vector("rho", rho, num_classes)
    margin = check_positive("margin", margin)
    normalize = bool(normalize)
    lam, r = _as_like(lambd, like), _as_like(rho, like)
    w = None if weight is None else weight.to(device=like.device, dtype=like.dtype)
    if compiling():  # expressions for the compiler to fuse
        if penalty == "phr" and w is None and reduction != "none":
            alpha, beta, q, k = _phr_constants(lam, r, margin, normalize, num_classes)
            alpha, beta, q = materialized(alpha, beta, q)

            def traced_mean_fn(z: Tensor, target: Tensor) -> Tensor:
                if not forms_gradient(z):
                    return _cals_reference(z, target, lam, r, margin, penalty, normalize, reduction, w)
                return _CALSPhrMeanTraced.apply(z, target, alpha, beta, q, k, reduction)

            return traced_mean_fn

        def plain_fn(z: Tensor, target: Tensor) -> Tensor:
            return _cals_reference(z, target, lam, r, margin, penalty, normalize, reduction, w)

        return plain_fn
    if penalty != "phr":

        def other_fn(z: Tensor, target: Tensor) -> Tensor:
            return _CALSLoss.apply(z, target, lam, r, None, margin, penalty, normalize, reduction, w)

        return other_fn
    consts = _phr_constants(lam, r, margin, normalize, num_classes)
    if _transposed(like):
        alpha, beta, q, k = consts
        columns = (alpha.reshape(-1, 1), beta.reshape(-1, 1), q.reshape(-1, 1), float(k))

        if w is None and reduction != "none":

            def transposed_mean_fn(z: Tensor, target: Tensor) -> Tensor:
                if z.shape[0] == 0:
                    return _CALSPhrTransposed.apply(z, target, lam, r, columns, margin, normalize, reduction, w)
                return _CALSPhrMeanTransposed.apply(
                    z, target, lam, r, columns, margin, normalize, reduction, torch.is_grad_enabled()
                )

            return transposed_mean_fn

        def transposed_fn(z: Tensor, target: Tensor) -> Tensor:
            return _CALSPhrTransposed.apply(z, target, lam, r, columns, margin, normalize, reduction, w)

        return transposed_fn

    if w is None and reduction != "none":
        mean_consts = _PhrMeanConstants(consts, like)

        def phr_mean_fn(z: Tensor, target: Tensor) -> Tensor:
            if z.shape[0] == 0:
                return _CALSLoss.apply(z, target, lam, r, consts, margin, penalty, normalize, reduction, w)
            return _CALSPhrMean.apply(
                z, target, lam, r, mean_consts, margin, normalize, reduction, torch.is_grad_enabled()
            )

        return phr_mean_fn

    def phr_fn(z: Tensor, target: Tensor) -> Tensor:
        return _CALSLoss.apply(z, target, lam, r, consts, margin, penalty, normalize, reduction, w)

    return phr_fn


def _phr_constants(lam: Tensor, r: Tensor, margin: float, normalize: bool, c: int) -> tuple[Tensor, ...]:
    r"""Per-class constants of the fused ``phr`` penalty.

    :math:`\lambda + \rho h = \alpha + \beta d` with :math:`d = \max_k z_k - z`, and the per-sample
    penalty :math:`\frac1C\sum_j (P'_j{}^2 - \lambda_j^2)/(2\rho_j) = \sum_j w_j P'_j{}^2 - k` with
    :math:`w_j = 1/(2\rho_j C)`. The kernels keep :math:`u = \sqrt{w}\,P' = \max(0, \sqrt{w}\alpha +
    \sqrt{w}\beta d)`, whose penalty is the plain sum of squares :math:`\lVert u\rVert^2 - k` (one
    reduction), and whose gradient reaching :math:`d_j` is :math:`q_j u_j` with
    :math:`q = 2\sqrt{w}\beta` (that is :math:`P'_j/(C m)`, :math:`P'_j/C` without normalisation).
    Returns ``(sqrt(w) alpha, sqrt(w) beta, q, k)``, each ``(C,)`` but ``k``.
    """
    if normalize:
        alpha, beta = lam - r, r / margin
    else:
        alpha, beta = lam - r * margin, r
    w = torch.reciprocal(r * (2 * c)).expand(c).contiguous()
    root_w = w.sqrt()
    k = torch.dot((lam * lam).expand(c), w)
    return alpha * root_w, beta * root_w, 2 * root_w * beta, k


def _cals_reference(
    z: Tensor,
    target: Tensor,
    lam: Tensor,
    r: Tensor,
    margin: float,
    penalty: str,
    normalize: bool,
    reduction: str,
    weight: Tensor | None,
) -> Tensor:
    """:func:`cals_loss` through plain autograd operations (used for higher-order gradients)."""
    ce = F.cross_entropy(z, target, reduction="none")
    sample_weight = None if weight is None else weight[target]
    pen = cals_penalty(z, lam, r, margin, penalty, normalize, reduction="none")
    return reduce_loss(ce, reduction, sample_weight) + reduce_loss(pen, reduction)


# Below this many logits the mask of the maxima (three small kernels) is cheaper than the tie scan.
_TIE_SCAN_MIN_SIZE = 1 << 16


def _reference_grad(z: Tensor, grad: Tensor, *args: Any) -> Tensor:
    """The gradient of :func:`_cals_reference` ``(z, *args)`` with a graph (for ``create_graph=True``)."""
    with torch.enable_grad():
        (grad_z,) = torch.autograd.grad(_cals_reference(z, *args), z, grad, create_graph=True)
    return grad_z


class _CALSLoss(torch.autograd.Function):
    r"""Fused CALS loss: :math:`\mathrm{CE}(z, y) + \frac1C\sum_j P(h_{ij})` with the analytic gradient.

    With :math:`c_i` the gradient reaching sample :math:`i`'s cross-entropy, :math:`k_i` the gradient
    reaching its penalty divided by :math:`C` (and by :math:`m` when normalising) and
    :math:`d_{ij} = \max_k z_{ik} - z_{ij}`, the backward is

    .. math:: \frac{\partial L}{\partial z_{il}} = c_i(\operatorname{softmax}(z_i)_l - [l = y_i])
        - k_i P'(h_{il}) + \frac{[d_{il} = 0]}{\#\{j: d_{ij} = 0\}}\, k_i \sum_j P'(h_{ij}),

    the last term being ``amax``'s gradient (shared evenly among tied maxima, as autograd does).

    For the default ``phr`` penalty the forward keeps two ``(N, C)`` buffers (the log-softmax, and
    :math:`d` turned in place into :math:`u = \sqrt{w}\,P'(h) = \max(0, \sqrt{w}(\lambda + \rho h))`
    with :math:`\lambda + \rho h = (\lambda - \rho) + (\rho/m)\, d` (:math:`m` for :math:`\rho/m`
    and :math:`\rho m` for :math:`\rho` without normalisation), in one ``addcmul``); the per-sample
    penalty :math:`\frac1C\sum_j (P'^2 - \lambda^2)/(2\rho) = \lVert u\rVert^2 - k` is one row norm
    (see :func:`_phr_constants`). It equals the operation by operation evaluation of
    :func:`cals_constraints` and :func:`phr_penalty` up to rounding. The other penalties evaluate
    :math:`h` and the penalty function as those functions do.

    On CPU, for large batches, the maximum comes with its index and ties are looked for once (one
    reduction and one host read); without ties ``amax``'s gradient is a scatter to that index,
    otherwise (and for small batches, and on other devices to avoid a synchronisation) it uses the
    mask of the maxima.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        target: Tensor,
        lam: Tensor,
        r: Tensor,
        consts: tuple[Tensor, ...] | None,
        margin: float,
        penalty: str,
        normalize: bool,
        reduction: str,
        weight: Tensor | None,
    ) -> Tensor:
        log_p = log_softmax_rows(z)
        ce = log_p.gather(1, target.unsqueeze(1)).squeeze(1).neg_()
        d, at_max, arg_max = _distance_to_max(z)
        if consts is not None:  # phr: u = sqrt(w) P'(h) in place in d, penalty ||u||^2 - k
            alpha, beta, _, k = consts
            deriv = torch.addcmul(alpha, d, beta, out=d).clamp_min_(0)
            pen = torch.linalg.vector_norm(deriv, dim=1).square_().sub_(k)
        else:
            h = d.sub_(margin)
            if normalize:
                h.div_(margin)
            value, deriv = CALS_PENALTIES[penalty](h, lam, r)
            pen = value.mean(dim=-1)
        sample_weight = None if weight is None else weight.index_select(0, target)
        ctx.save_for_backward(z, log_p, target, lam, r, deriv, weight, sample_weight, at_max, arg_max)
        ctx.options = (margin, penalty, normalize, reduction, None if consts is None else consts[2])
        return reduce_loss(ce, reduction, sample_weight) + reduce_loss(pen, reduction)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, log_p, target, lam, r, deriv, weight, sample_weight, at_max, arg_max = ctx.saved_tensors
        margin, penalty, normalize, reduction, q = ctx.options
        nones = (None,) * 9
        if not ctx.needs_input_grad[0]:
            return (None, *nones)
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain expression
            args = (target, lam, r, margin, penalty, normalize, reduction, weight)
            return (_reference_grad(z, grad, *args), *nones)
        n, c = z.shape
        # gradients reaching each sample's CE term (c_ce) and penalty term (c_pen), shape (N, 1) or ()
        c_ce, c_pen = loss_coefficients(grad, reduction, n, sample_weight)
        grad_z = softmax_like(log_p, z)
        grad_z.mul_(c_ce)
        grad_z.scatter_add_(1, target.unsqueeze(1), c_ce.neg().expand(n, 1))
        # the penalty through d: -g, and amax's share of sum_j g_ij at the maxima, where g is the
        # gradient reaching d: c_pen P'(h) / (C m) (/ C without normalisation); for phr c_pen q u
        if q is None:
            k = c_pen / (c * margin) if normalize else c_pen / c
            grad_z.addcmul_(deriv, k, value=-1)
            share = deriv.sum(dim=1, keepdim=True).mul_(k)
        elif c_pen.ndim == 0:
            coef = q * c_pen
            grad_z.addcmul_(deriv, coef, value=-1)
            share = torch.mv(deriv, coef).unsqueeze_(1)
        else:
            g_d = deriv.mul(q)  # deriv is saved: a second backward (retain_graph) reads it again
            grad_z.addcmul_(g_d, c_pen, value=-1)
            share = g_d.sum(dim=1, keepdim=True).mul_(c_pen)
        _add_at_max(grad_z, share, at_max, arg_max)
        return (grad_z, *nones)


def _distance_to_max(z: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``d = max_k z_k - z`` in a fresh ``(N, C)`` tensor, and where the maxima are.

    Returns ``(d, at_max, arg_max)`` with exactly one of the last two set: ``arg_max`` ``(N, 1)``
    when no row has tied maxima (found on CPU for large inputs: the maximum with its index, then one
    scan for a second zero of ``d``), otherwise the 0/1 mask ``at_max`` of the maxima in the logits'
    dtype (always for small inputs, and on other devices, where a tie scan would synchronise).
    """
    n, c = z.shape
    if z.device.type == "cpu" and n * c >= _TIE_SCAN_MIN_SIZE:
        zmax, arg_max = z.max(dim=1, keepdim=True)
        d = torch.sub(zmax, z)  # >= 0, and 0 exactly at the maxima
        if c > 1:  # is there a second zero in some row?
            d.scatter_(1, arg_max, 1.0)
            tied = bool((d.amin(dim=1) == 0).any())
            d.scatter_(1, arg_max, 0.0)
            if tied:
                return d, torch.eq(z, zmax, out=torch.empty_like(d)), None
        return d, None, arg_max
    zmax = z.amax(dim=-1, keepdim=True)
    d = torch.sub(zmax, z)
    return d, torch.eq(z, zmax, out=torch.empty_like(d)), None


def _add_at_max(grad: Tensor, share: Tensor, at_max: Tensor | None, arg_max: Tensor | None) -> None:
    """Add each row's ``share`` ``(N, 1)`` to ``grad`` at its maxima, split evenly among ties (``amax``)."""
    if arg_max is not None:
        grad.scatter_add_(1, arg_max, share)
    else:
        assert at_max is not None
        grad.addcmul_(at_max, share.div_(at_max.sum(dim=1, keepdim=True)))


class _CALSPhrMean(torch.autograd.Function):
    r"""CALS with the ``phr`` penalty, unweighted ``"mean"`` or ``"sum"`` reduction, gradient formed ahead.

    With one coefficient for both terms (:math:`c = g/N` for the mean, :math:`g` for the sum, where
    :math:`g` is the upstream gradient), the gradient is :math:`c\,G` with

    .. math:: G = \operatorname{softmax}(z) - e_y - q \odot u + \frac{[d = 0]}{\#\{d = 0\}} \sum_j q_j u_j

    (:math:`u`, :math:`q` of :func:`_phr_constants`). The softmax comes from the distances the
    penalty needs anyway: :math:`e = \exp(-d)` (the shifted exponentials of a stable log-softmax),
    :math:`s = \sum_j e_j`, :math:`\mathrm{CE} = d_y + \log s` and :math:`\operatorname{softmax} = e/s`,
    so no separate log-softmax is computed. The forward scales :math:`e` by :math:`1/(s N)` (the
    mean's :math:`1/N` folded in), adds the other terms in place and hands the buffer to the backward,
    which returns it (times :math:`g` when :math:`g \ne 1`) as the gradient, without a copy: the
    buffer then belongs to autograd. A second backward through a retained graph, which finds it gone,
    forms it again, identically. The loss is
    :math:`(\sum_i \mathrm{CE}_i + \lVert u\rVert_F^2 - N k)`, over :math:`N` for the mean.

    The last term (``amax``'s gradient) vanishes in every row without an active constraint
    (:math:`u = 0`, as in the first epoch with the official :math:`\lambda = 10^{-6}` while distances
    stay below the margin); on the CPU the mask of the maxima is only built when some row has one,
    and one product with column codes then finds the single maximum of each row (see
    :func:`~tailwise.functional._maxima.add_at_maxima`). :math:`u` and the mask live in a scratch
    buffer reused across calls (:mod:`tailwise.functional._workspace`), so a call allocates only the
    gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        target: Tensor,
        lam: Tensor,
        r: Tensor,
        consts: _PhrMeanConstants,
        margin: float,
        normalize: bool,
        reduction: str,
        grad_enabled: bool,
    ) -> Tensor:
        with_grad = grad_enabled and ctx.needs_input_grad[0]
        loss, ctx.grad = _phr_mean_terms(z, target, consts, reduction, with_grad)
        ctx.save_for_backward(z, target, lam, r)
        ctx.consts = consts
        ctx.options = (margin, normalize, reduction)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, target, lam, r = ctx.saved_tensors
        margin, normalize, reduction = ctx.options
        nones = (None,) * 8
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain expression
            args = (target, lam, r, margin, "phr", normalize, reduction, None)
            return (_reference_grad(z, grad, *args), *nones)
        consts = ctx.consts
        g = hand_over_gradient(ctx, grad, lambda: _phr_mean_terms(z.detach(), target, consts, reduction, True)[1])
        return (g, *nones)


class _PhrMeanConstants:
    """The constants of :class:`_CALSPhrMean` for one state of the multipliers, and what calls reuse.

    ``alpha``, ``beta`` and ``q`` are those of :func:`_phr_constants` and ``k`` its constant as a
    Python number; ``codes`` are the column codes of :func:`~tailwise.functional._maxima.maxima_codes`
    (``None`` where they do not apply); ``workspace`` holds the ``(N, C)`` scratch buffer on the CPU
    (``None`` elsewhere). ``q`` scaled by a mean's :math:`1/N` is kept for the last batch size.
    """

    __slots__ = ("_q_mean", "alpha", "beta", "codes", "k", "q", "workspace")

    def __init__(self, consts: tuple[Tensor, ...], like: Tensor) -> None:
        self.alpha, self.beta, self.q, k = consts
        self.k = float(k)
        self.codes = maxima_codes(like)
        self.workspace = Workspace() if like.is_cpu else None
        self._q_mean: tuple[int, Tensor] | None = None

    def q_scaled(self, n: int, reduction: str) -> Tensor:
        """``q / n`` for the mean of ``n`` samples, ``q`` for the sum."""
        if reduction != "mean":
            return self.q
        cached = self._q_mean
        if cached is None or cached[0] != n:
            cached = self._q_mean = (n, self.q / n)
        return cached[1]


def _phr_mean_terms(
    z: Tensor, target: Tensor, consts: _PhrMeanConstants, reduction: str, with_grad: bool
) -> tuple[Tensor, Tensor | None]:
    r"""The loss of :class:`_CALSPhrMean` and, when ``with_grad``, its gradient for a unit upstream gradient.

    The shifted logits :math:`t = z - \max_k z_k = -d` are formed once, in the buffer that becomes
    the exponentials and then the gradient; :math:`u = \max(0, \sqrt{w}\alpha - \sqrt{w}\beta\,t)`
    is read from them first, into the scratch buffer of ``consts.workspace`` (see
    :mod:`tailwise.functional._workspace`; a fresh one off the CPU), where the mask of the maxima
    later replaces it.
    """
    n, c = z.shape
    rows = target.unsqueeze(1)
    buf, storage = take_scratch(consts.workspace, (n, c), z)
    zmax = z.amax(dim=1, keepdim=True)
    e = torch.sub(z, zmax)  # t = -d <= 0, exactly 0 at the maxima
    t_y = e.gather(1, rows)  # the labels index first (bounds-checked on the CPU)
    u = torch.addcmul(consts.alpha, e, consts.beta, value=-1, out=buf).clamp_min_(0)  # sqrt(w) P'(h)
    e.exp_()  # exp(z - max z), each row's largest entry 1
    s = e.sum(dim=1, keepdim=True)
    u_flat = u.view(-1)
    loss = torch.dot(u_flat, u_flat).add_(torch.sub(s.log(), t_y).sum())  # ||u||^2 + sum_i CE_i
    loss.sub_(consts.k * n)
    if reduction == "mean":
        loss.mul_(1.0 / n)
    if with_grad:
        scale = 1.0 / n if reduction == "mean" else 1.0
        grad = softmax_gradient_(e, s, rows, scale)  # (softmax - e_y) / N
        q_scaled = consts.q_scaled(n, reduction)
        grad.addcmul_(u, q_scaled, value=-1)
        # amax's gradient: each row's share sum_j q_j u_j at its maxima, split evenly among ties. A
        # row without an active constraint (u = 0) has no share; when no row has one (a CPU test,
        # no device synchronisation) the maxima are not looked for.
        share = torch.mv(u, q_scaled)
        if not z.is_cpu or bool(share.any()):
            at_max = torch.eq(z, zmax, out=u)  # u is no longer needed: the mask, 0/1, takes its place
            add_at_maxima(grad, at_max, share, consts.codes)
    else:
        grad = None
    give_back_scratch(consts.workspace, storage)
    return loss, grad


class _CALSPhrMeanTraced(GradientInForward):
    r""":class:`_CALSPhrMean` for calls traced by ``torch.compile``: the gradient :math:`G` formed in the forward.

    The forward computes the loss and :math:`G` (see :class:`_CALSPhrMean`) from plain operations
    (see :class:`GradientInForward`); the compiler's backward of the plain expression would
    recompute the softmax and the penalty's terms.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: Tensor, target: Tensor, alpha: Tensor, beta: Tensor, q: Tensor, k: Tensor, reduction: str
    ) -> Tensor:
        n = z.shape[0]
        rows = target.unsqueeze(1)
        t = z - z.amax(dim=1, keepdim=True)  # -d
        u = torch.clamp(alpha - beta * t, min=0)  # sqrt(w) P'(h)
        e = torch.exp(t)
        s = e.sum(dim=1, keepdim=True)
        loss = (u * u).sum() + (s.log() - t.gather(1, rows)).sum() - k * n
        at_max = (t == 0).to(z.dtype)
        share = (u * q).sum(dim=1, keepdim=True) / at_max.sum(dim=1, keepdim=True)
        grad = (e / s - q * u + at_max * share).scatter_add(1, rows, torch.full_like(t[:, :1], -1.0))
        if reduction == "mean":
            loss, grad = loss / n, grad / n
        ctx.save_for_backward(grad)
        return loss


class _CALSPhrMeanTransposed(torch.autograd.Function):
    r""":class:`_CALSPhrMean` in the transposed ``(C, N)`` layout of :class:`_CALSPhrTransposed`.

    For float32 CPU logits with fewer than 16 classes, the ``phr`` penalty, no class weights and a
    ``"mean"`` or ``"sum"`` reduction: the forward forms :math:`G^\top` (the log-softmax buffer
    reused) and the backward is one product by the upstream gradient and the reduction's scale. The
    two reductions (the labels' log-probabilities and :math:`\lVert u\rVert^2`) are read as CPU
    scalars and the loss is formed from them in double precision, in fewer operations than on tensors;
    the mask of the maxima is kept in the logits' dtype (no casts in the sums and products).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        target: Tensor,
        lam: Tensor,
        r: Tensor,
        columns: tuple[Any, ...],
        margin: float,
        normalize: bool,
        reduction: str,
        grad_enabled: bool,
    ) -> Tensor:
        alpha, beta, q_col, k = columns
        n = z.shape[0]
        zt = z.t()
        buf = torch.log_softmax(zt, 0)
        rows = target.unsqueeze(0)
        log_p_sum = float(buf.gather(0, rows).sum())
        zmax = zt.amax(dim=0, keepdim=True)
        u = torch.addcmul(alpha, torch.sub(zmax, zt), beta).clamp_min_(0)  # sqrt(w) P'(h), (C, N)
        # the reductions are CPU scalars here: the loss is formed in double precision
        scale = 1.0 / n if reduction == "mean" else 1.0
        norm_u = float(torch.linalg.vector_norm(u))
        value = (norm_u**2 - log_p_sum - k * n) * scale
        if grad_enabled and ctx.needs_input_grad[0]:  # (under no_grad the flag is still set)
            grad_t = buf.exp_().scatter_(0, rows, -1.0, reduce="add")
            grad_t.addcmul_(u, q_col, value=-1)
            if norm_u != 0.0:  # some constraint is active: amax's share at the maxima (ties split it)
                share = torch.mm(q_col.t(), u)  # sum_j q_j u_j per sample, (1, N)
                at_max = torch.eq(zt, zmax, out=u)  # 0/1 in the logits' dtype, in u's place
                grad_t.addcmul_(at_max, share.div_(at_max.sum(dim=0, keepdim=True)))
            ctx.save_for_backward(grad_t, z, target, lam, r)
            ctx.scale = scale
        ctx.options = (margin, normalize, reduction)
        return torch.scalar_tensor(value, dtype=z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad_t, z, target, lam, r = ctx.saved_tensors
        nones = (None,) * 8
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain expression
            margin, normalize, reduction = ctx.options
            args = (target, lam, r, margin, "phr", normalize, reduction, None)
            return (_reference_grad(z, grad, *args), *nones)
        return (grad_t.t().mul(float(grad) * ctx.scale), *nones)


class _CALSPhrTransposed(torch.autograd.Function):
    r"""CALS with the ``phr`` penalty for float32 CPU logits with fewer than 16 classes.

    The computation of :class:`_CALSLoss` for ``phr`` in the transposed ``(C, N)`` layout, where the
    log-softmax is vectorised over the samples (see :mod:`tailwise.functional._fused`), with the
    fewest operations. With :math:`d = \max_k z_k - z`, :math:`P' = \max(0, \alpha + \beta d)` and
    the penalty weights :math:`w` of :func:`_phr_constants`, the kernel keeps
    :math:`u = \sqrt{w}\,P' = \max(0, \sqrt{w}\alpha + \sqrt{w}\beta d)`, so that the per-sample
    penalty is :math:`\sum_j u_j^2 - k`; the gradient is
    :math:`c\,(\operatorname{softmax} - e_y) - k_i q + \frac{[d = 0]}{\#\{d = 0\}} k_i \sum_j q_j` with
    :math:`q = 2 w \beta P' = 2 \sqrt{w} \beta u` (``amax``'s gradient split evenly among tied
    maxima, always through the mask of the maxima).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        target: Tensor,
        lam: Tensor,
        r: Tensor,
        columns: tuple[Any, ...],
        margin: float,
        normalize: bool,
        reduction: str,
        weight: Tensor | None,
    ) -> Tensor:
        alpha, beta, _, k = columns
        zt = z.t()
        log_p = torch.log_softmax(zt, 0)
        # the labels index first, with bounds checks (nll_loss would skip a label of -100)
        sample_weight = None if weight is None else weight.index_select(0, target)
        if weight is None:
            loss = reduce_loss(log_p.gather(0, target.unsqueeze(0)).squeeze(0).neg_(), reduction)
        else:
            loss = F.nll_loss(log_p.t(), target, weight=weight, reduction=reduction)
        zmax = zt.amax(dim=0, keepdim=True)
        u = torch.addcmul(alpha, torch.sub(zmax, zt), beta).clamp_min_(0)  # sqrt(w) P'(h), (C, N)
        n = zt.shape[1]
        squares = u.square()
        if reduction == "none":
            loss.add_(squares.sum(dim=0)).sub_(k)
        elif reduction == "mean":
            loss.add_(squares.sum(), alpha=1.0 / n if n else math.nan).sub_(k)
        else:
            loss.add_(squares.sum()).sub_(k * n)
        ctx.save_for_backward(z, log_p, target, lam, r, u, zmax, weight, sample_weight)
        ctx.options = (margin, normalize, reduction, columns[2])
        return loss

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, log_p, target, lam, r, u, zmax, weight, sample_weight = ctx.saved_tensors
        margin, normalize, reduction, q_col = ctx.options
        nones = (None,) * 8
        if not ctx.needs_input_grad[0]:
            return (None, *nones)
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain expression
            args = (target, lam, r, margin, "phr", normalize, reduction, weight)
            return (_reference_grad(z, grad, *args), *nones)
        zt = z.t()
        n = zt.shape[1]
        at_max = torch.eq(zt, zmax)
        if weight is None and reduction != "none":
            # one coefficient c for both terms: c (softmax - e_y - q + [d = 0] sum_j q_j / #{d = 0})
            grad_t = torch.exp(log_p).scatter_(0, target.unsqueeze(0), -1.0, reduce="add")
            q = u.mul(q_col)
            grad_t.sub_(q).addcmul_(at_max, q.sum(dim=0, keepdim=True).div_(at_max.sum(dim=0, keepdim=True)))
            c = grad if reduction == "sum" else grad / n if n else grad * math.nan
            return (grad_t.mul_(c).t(), *nones)
        c_ce, c_pen = loss_coefficients(grad, reduction, n, sample_weight)  # (N, 1) or ()
        if c_ce.ndim:
            c_ce = c_ce.t()
        if c_pen.ndim:
            c_pen = c_pen.t()
        grad_t = torch.exp(log_p).mul_(c_ce)
        grad_t.scatter_add_(0, target.unsqueeze(0), c_ce.neg().expand(1, n))
        q = u.mul(q_col).mul_(c_pen)  # k_i q: the gradient reaching d
        grad_t.sub_(q)
        grad_t.addcmul_(at_max, q.sum(dim=0, keepdim=True).div_(at_max.sum(dim=0, keepdim=True)))
        return (grad_t.t(), *nones)


def _check_vector(name: str, value: Tensor | float, num_classes: int) -> Tensor | float:
    """``value`` after the shape check, detached when it requires a gradient.

    A tensor that requires no gradient (a module's buffer) is returned as it is, so that caches keyed
    on its identity keep hitting.
    """
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape != (num_classes,):
        raise ValueError(f"{name} must be a scalar or a 1-D tensor with {num_classes} entries; got shape {tuple(value.shape)}")
    return value.detach() if isinstance(value, Tensor) and value.requires_grad else value


@torch.no_grad()
def cals_validation_stats(
    logits: Tensor,
    lambd: Tensor | float,
    rho: Tensor | float,
    margin: float = 10.0,
    penalty: str = "phr",
    normalize: bool = True,
    lambd_min: float = 1e-6,
    lambd_max: float = 1e6,
) -> tuple[Tensor, Tensor, int]:
    r"""Sufficient statistics of the CALS multiplier update over a set of validation logits.

    Returns ``(grad_sum, constraint_sum, count)`` with

    .. math::

        \texttt{grad\_sum}_j = \sum_i \mathrm{clip}\bigl(P'(h_{ij}; \lambda_j, \rho_j),
            \lambda_{\min}, \lambda_{\max}\bigr), \qquad
        \texttt{constraint\_sum}_j = \sum_i h_{ij}, \qquad \texttt{count} = N.

    The update :math:`\lambda_j \leftarrow \mathrm{clip}(\texttt{grad\_sum}_j/\texttt{count})` is a
    mean of per-sample terms evaluated at the *same* :math:`(\lambda, \rho)`, so splitting the
    validation set into batches (as the official trainer does) and adding their statistics gives the
    same result as one pass over the whole split, up to floating-point summation order.
    """
    check_in_choices("penalty", penalty, tuple(CALS_PENALTIES))
    h = cals_constraints(logits.detach(), margin, normalize)
    _, grad = CALS_PENALTIES[penalty](h, lambd, rho)
    grad = grad.clamp(min=lambd_min, max=lambd_max)
    return grad.sum(dim=0), h.sum(dim=0), int(h.shape[0])
