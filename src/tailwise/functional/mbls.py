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

from tailwise._validation import (
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
    cached_vector,
    forms_gradient,
    hand_over_gradient,
    log_softmax_rows,
    loss_coefficients,
    softmax_gradient_,
    softmax_like,
)
from tailwise.functional._maxima import add_at_first_maximum, maxima_codes
from tailwise.functional._reduce import reduce_loss
from tailwise.functional._workspace import Workspace, give_back_scratch, take_scratch

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
    """:func:`mbls_loss` with an optional ``cache`` of a module: its weight cast to the logits' dtype and
    the state of the unweighted kernel (:class:`_MbLSMeanState`).

    Without class weights and with a ``"mean"`` or ``"sum"`` reduction the loss runs
    :class:`_MbLSMean` (gradient formed in the forward; :class:`_MbLSMeanTransposed` for float32 CPU
    logits with fewer than 16 classes), otherwise :class:`_MbLSLoss`. On the CPU the
    labels' range and the logits' finiteness are checked by the computation (see
    :func:`tailwise._validation.checked_by_computation`); elsewhere the checks come first. Under
    ``torch.compile`` the same cases run :class:`_MbLSMeanTraced` and the rest the plain expression
    (:func:`_mbls_reference`), for the compiler to fuse.
    """
    alpha = check_positive("alpha", alpha, allow_zero=True)
    on_cpu = isinstance(logits, Tensor) and logits.is_cpu
    # an infinite logit makes the margin term infinite; without it (alpha = 0) the cross-entropy alone
    # can stay finite, so the logits are then checked in front
    check_logits_target(logits, target, label_range=not on_cpu, finite=not on_cpu or alpha == 0)
    check_reduction(reduction)
    weight = check_weight(weight, logits.shape[1])
    margin = check_positive("margin", margin, allow_zero=True)
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    labels = target if target.dtype == torch.int64 else target.long()
    if compiling():  # expressions for the compiler to fuse
        if weight is None and reduction != "none" and forms_gradient(z):
            return _MbLSMeanTraced.apply(z, labels, margin, alpha, reduction)
        w = None if weight is None else weight.to(device=z.device, dtype=z.dtype)
        return _mbls_reference(z, labels, margin, alpha, reduction, w)
    if weight is None and reduction != "none" and z.shape[0] > 0 and _transposed(z):

        def fn(z: Tensor, target: Tensor) -> Tensor:
            return _MbLSMeanTransposed.apply(z, target, margin, alpha, reduction, torch.is_grad_enabled())

    elif weight is None and reduction != "none" and z.shape[0] > 0:
        state = _mean_state(cache, z)

        def fn(z: Tensor, target: Tensor) -> Tensor:
            return _MbLSMean.apply(z, target, margin, alpha, reduction, torch.is_grad_enabled(), state)

    else:
        w = cached_vector(cache, "weight", weight, z)

        def fn(z: Tensor, target: Tensor) -> Tensor:
            return _MbLSLoss.apply(z, target, margin, alpha, reduction, w)

    if on_cpu:
        return checked_by_computation(fn, z, labels, logits, finite=alpha != 0)
    return fn(z, labels)


class _MbLSMeanTraced(GradientInForward):
    r""":class:`_MbLSMean` for calls traced by ``torch.compile``: the gradient formed in the forward.

    With :math:`d = \max_k z_k - z`, :math:`a = [d > m]` and :math:`k = \alpha / C`, the gradient of
    the per-sample loss is :math:`\operatorname{softmax}(z) - e_y - k a + k \bigl(\sum_j a_j\bigr)
    e_{\arg\max}` (``Tensor.max``'s index, the first maximum), formed in the forward (see
    :class:`GradientInForward`).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: Tensor, target: Tensor, margin: float, alpha: float, reduction: str
    ) -> Tensor:
        n, c = z.shape
        rows = target.unsqueeze(1)
        zmax = z.amax(dim=1, keepdim=True)
        t = z - zmax  # -d
        # Tensor.max's index, the first maximum, as a vectorisable minimum of column indices
        columns = torch.arange(c, device=z.device, dtype=z.dtype)
        first_max = torch.where(t == 0, columns, c).amin(dim=1, keepdim=True)  # (NaN rows: none)
        e = torch.exp(t)
        s = e.sum(dim=1, keepdim=True)
        excess = torch.relu(-t - margin)  # [d - m]_+
        loss = (s.log() - t.gather(1, rows)).sum() + (alpha / c) * excess.sum()
        k_active = (excess > 0).to(z.dtype) * (alpha / c)
        grad = (e / s - k_active).scatter_add(1, rows, torch.full_like(s, -1.0))
        grad = grad + (columns == first_max).to(z.dtype) * k_active.sum(dim=1, keepdim=True)
        if reduction == "mean":
            loss, grad = loss / n, grad / n
        ctx.save_for_backward(grad)
        return loss


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


class _MbLSMeanState:
    """What calls of :class:`_MbLSMean` on logits of one dtype, device and class count reuse.

    The column codes of :func:`~tailwise.functional._maxima.maxima_codes` and, for a module on the CPU,
    a :class:`~tailwise.functional._workspace.Workspace` holding the ``(N, C)`` scratch buffer.
    """

    __slots__ = ("codes", "workspace")

    def __init__(self, like: Tensor, reuse: bool) -> None:
        self.codes = maxima_codes(like)
        self.workspace = Workspace() if reuse and like.is_cpu else None


def _mean_state(cache: dict | None, z: Tensor) -> _MbLSMeanState:
    """The :class:`_MbLSMeanState` for ``z``, kept in a module's ``cache`` (fresh, without reuse, for ``None``)."""
    if cache is None:
        return _MbLSMeanState(z, reuse=False)
    key = (z.dtype, z.device, z.shape[1])
    hit = cache.get("mean_kernel")
    if hit is None or hit[0] != key:
        hit = cache["mean_kernel"] = (key, _MbLSMeanState(z, reuse=True))
    return hit[1]


class _MbLSMean(torch.autograd.Function):
    r"""MbLS without class weights and with a ``"mean"`` or ``"sum"`` reduction, gradient formed ahead.

    With :math:`t = z - \max_k z_k = -d` (formed once), :math:`r = \min(t + m, 0) = -[d - m]_+`
    (exactly the official ``relu(d - m)``, negated), :math:`a = [d > m] = -\operatorname{sign}(r)` and
    :math:`j^*` the index ``Tensor.max`` returns (the first maximum), the loss is
    :math:`c\,(\sum_i \mathrm{CE}_i - \frac{\alpha}{C}\sum_{ij} r_{ij})` and its gradient for a unit
    upstream gradient

    .. math:: c\,\Bigl(\operatorname{softmax}(z) - e_y - \frac{\alpha}{C}\bigl(a
        - [l = j^*] \textstyle\sum_j a_{j}\bigr)\Bigr),

    with :math:`c = 1/N` for the mean and 1 for the sum. The softmax comes from :math:`e = \exp(t)`
    (:math:`\mathrm{CE} = \log\sum_j e_j - t_y`), scaled in place into the gradient, which the
    backward returns (times the upstream gradient when it is not 1) without a copy; a second backward
    through a retained graph forms it again. When no distance exceeds the margin (the penalty is 0, a
    CPU test), :math:`a = 0` and the maximum is not looked for; otherwise one product with column codes
    finds every row's single maximum (``Tensor.max``'s indices under ties, see
    :mod:`tailwise.functional._maxima`). :math:`r` lives in a scratch buffer reused across a module's
    calls on the CPU, so a call allocates only the gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        target: Tensor,
        margin: float,
        alpha: float,
        reduction: str,
        grad_enabled: bool,
        state: _MbLSMeanState,
    ) -> Tensor:
        with_grad = grad_enabled and ctx.needs_input_grad[0]
        loss, ctx.grad = _mbls_mean_terms(z, target, margin, alpha, reduction, with_grad, state)
        ctx.save_for_backward(z, target)
        ctx.options = (margin, alpha, reduction, state)
        return loss

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, target = ctx.saved_tensors
        margin, alpha, reduction, state = ctx.options
        nones = (None,) * 6
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain expression
            loss = _mbls_reference(z, target, margin, alpha, reduction, None)
            (grad_z,) = torch.autograd.grad(loss, z, grad, create_graph=True)
            return (grad_z, *nones)
        g = hand_over_gradient(ctx, grad, lambda: _mbls_mean_terms(z.detach(), target, margin, alpha, reduction, True, state)[1])
        return (g, *nones)


def _mbls_mean_terms(
    z: Tensor, target: Tensor, margin: float, alpha: float, reduction: str, with_grad: bool, state: _MbLSMeanState
) -> tuple[Tensor, Tensor | None]:
    """The loss of :class:`_MbLSMean` and, when ``with_grad``, its gradient for a unit upstream gradient."""
    n, c = z.shape
    rows = target.unsqueeze(1)
    zmax = z.amax(dim=1, keepdim=True)
    e = torch.sub(z, zmax)  # t = -d <= 0, exactly 0 at the maxima
    t_y = e.gather(1, rows)  # the labels index first (bounds-checked on the CPU)
    penalised = alpha != 0
    if penalised:
        buf, storage = take_scratch(state.workspace, (n, c), z)
        r = torch.add(e, margin, out=buf).clamp_max_(0)  # -relu(d - m)
        neg_penalty = r.sum()
    e.exp_()  # exp(z - max z), each row's largest entry 1
    s = e.sum(dim=1, keepdim=True)
    loss = torch.sub(s.log(), t_y).sum()  # sum_i -log softmax(z_i)_{y_i}
    if penalised:
        loss.sub_(neg_penalty, alpha=alpha / c)
    if reduction == "mean":
        loss.mul_(1.0 / n)
    grad = None
    if with_grad:
        scale = 1.0 / n if reduction == "mean" else 1.0
        grad = softmax_gradient_(e, s, rows, scale)  # (softmax - e_y) / N
        # the margin term: -k a, and Tensor.max's gradient k sum_j a_j at the first maximum; with no
        # distance beyond the margin (a zero penalty, read on the CPU) a = 0 and nothing is added
        if penalised and (not z.is_cpu or float(neg_penalty) != 0.0):
            k = alpha / c * scale
            neg_active = r.sign_()  # -a: -1 where d > m, 0 elsewhere
            grad.add_(neg_active, alpha=k)
            share = neg_active.sum(dim=1).mul_(-k)
            add_at_first_maximum(grad, z, zmax, share, buf, state.codes)
    if penalised:
        give_back_scratch(state.workspace, storage)
    return loss, grad


class _MbLSMeanTransposed(torch.autograd.Function):
    r""":class:`_MbLSMean` for float32 CPU logits with fewer than 16 classes, in the ``(C, N)`` layout.

    The log-softmax runs along dim 0 of the transposed logits, vectorised over the samples (see
    :mod:`tailwise.functional._fused`), and its buffer becomes :math:`G^\top`, the gradient for a unit
    upstream gradient; the backward is one product by the upstream gradient and the reduction's scale.
    The two reductions (the labels' log-probabilities and the penalty) are read as CPU scalars and the
    loss is formed from them in double precision, in fewer operations than on tensors. ``Tensor.max``'s
    share goes to its returned index, taken only when some distance exceeds the margin.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: Tensor, target: Tensor, margin: float, alpha: float, reduction: str, grad_enabled: bool
    ) -> Tensor:
        n, c = z.shape
        zt = z.t()
        buf = torch.log_softmax(zt, 0)
        rows = target.unsqueeze(0)
        log_p_sum = float(buf.gather(0, rows).sum())  # the labels index first (bounds-checked)
        zmax = zt.amax(dim=0, keepdim=True)
        r = torch.sub(zt, zmax).add_(margin).clamp_max_(0)  # -relu(d - m), (C, N)
        neg_penalty = float(r.sum())
        scale = 1.0 / n if reduction == "mean" else 1.0
        k = alpha / c
        value = (-log_p_sum - k * neg_penalty) * scale
        if grad_enabled and ctx.needs_input_grad[0]:  # (under no_grad the flag is still set)
            grad_t = buf.exp_().scatter_(0, rows, -1.0, reduce="add")  # softmax - e_y
            if alpha != 0 and neg_penalty != 0.0:  # some distance exceeds the margin
                neg_active = r.sign_()  # -a
                grad_t.add_(neg_active, alpha=k)
                share = neg_active.sum(dim=0, keepdim=True).mul_(-k)
                grad_t.scatter_add_(0, zt.max(dim=0, keepdim=True).indices, share)  # Tensor.max's index
            ctx.save_for_backward(grad_t, z, target)
            ctx.scale = scale
        ctx.options = (margin, alpha, reduction)
        return torch.scalar_tensor(value, dtype=z.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad_t, z, target = ctx.saved_tensors
        nones = (None,) * 5
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain expression
            margin, alpha, reduction = ctx.options
            loss = _mbls_reference(z, target, margin, alpha, reduction, None)
            (grad_z,) = torch.autograd.grad(loss, z, grad, create_graph=True)
            return (grad_z, *nones)
        return (grad_t.t().mul(float(grad) * ctx.scale), *nones)
