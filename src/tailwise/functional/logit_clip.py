r"""LogitClip: clamp the p-norm of each logit vector (Wei et al., ICML 2023).

Hongxin Wei, Huiping Zhuang, Renchunzi Xie, Lei Feng, Gang Niu, Bo An, Yixuan Li, "Mitigating
Memorization of Noisy Labels by Clipping the Model Prediction", ICML 2023 (arXiv 2212.04055).

LogitClip bounds the norm of the logit vector before any loss is applied, which bounds the loss
and its gradient on (possibly mislabelled) samples the network is confident about.

Both clipping rules are a per-row rescaling :math:`\mathrm{clip}(z)_i = s(\lVert z_i\rVert_p)\, z_i`.
Through autograd the norm, the scale and the product cost several ``(N, C)`` passes, temporaries and
graph nodes in each direction. :class:`_ClipLogits` computes the scale once per row and
back-propagates the analytic gradient (:math:`g` the upstream gradient, :math:`n_i = \lVert z_i\rVert_p`)

.. math:: \frac{\partial L}{\partial z_i} = s(n_i)\, g_i
    + s'(n_i)\,\langle g_i, z_i\rangle\, \nabla_{z_i} \lVert z_i\rVert_p,

in one fresh ``(N, C)`` buffer, with :math:`\nabla \lVert z\rVert_p` as
``torch.linalg.vector_norm`` differentiates it (:math:`z/n` for :math:`p = 2`,
:math:`\operatorname{sgn}(z)` for :math:`p = 1`, :math:`\operatorname{sgn}(z)\,|z|^{p-1}/n^{p-1}`
for other finite :math:`p`, and for :math:`p = \infty` :math:`\operatorname{sgn}(z)` on the entries
of largest magnitude, shared evenly among ties). :class:`_ClipCrossEntropy` fuses the clipping with
the cross-entropy (used by :class:`tailwise.losses.LogitClipLoss` around tailwise's
:class:`~tailwise.losses.CrossEntropyLoss`). Both agree with autograd's differentiation of the plain
expressions (:func:`_clip_reference`) up to rounding, on rows exactly at the bound and zero rows
included. Higher-order gradients (``create_graph=True``) are taken through the plain expressions,
so double backward gives exactly what the unfused computation gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tailwise._validation import (
    check_finite,
    check_in_choices,
    check_logits_target,
    check_positive,
    check_reduction,
    check_weight,
    checked_by_computation,
    compiling,
    describe,
)
from tailwise.functional._fused import (
    GradientInForward,
    _softmax_in_forward,
    _transposed,
    forms_gradient,
    softmax_cross_entropy_,
)
from tailwise.functional._prepared import PreparedLosses
from tailwise.functional._workspace import Workspace

__all__ = ["LOGIT_CLIP_MODES", "clip_logits", "logit_clip_loss"]

LOGIT_CLIP_MODES = ("continuous", "official")

# prepared losses of repeated calls with the same settings (see tailwise.functional._prepared)
_PREPARED = PreparedLosses()

# The official code adds this constant to the norm before comparing and dividing.
_OFFICIAL_EPS = 1e-7

_LOW_PRECISION = (torch.float16, torch.bfloat16)

# Settings outside these ranges (a bound 1/tau below 1e-12, or an official threshold tau below
# 2e-7, where rescaled rows may have norms near zero) go through the plain composition: there the
# fused kernels' per-row coefficients such as 1/n could overflow where autograd's z/n does not.
_MAX_CONTINUOUS_TAU = 1e12
_MIN_OFFICIAL_TAU = 2e-7

# 0-d tensors of the constants, per (tau, dtype, device). A 0-d tensor operand costs less than a
# Python number in a small elementwise kernel (no wrapping and type promotion), which matters for
# small batches. The values are those PyTorch uses for a Python number operand (the number rounded
# to the logits' dtype), so the results are the same to the last bit.
_CONSTANTS: dict[tuple[float, torch.dtype, torch.device], tuple[Tensor, ...]] = {}
_MAX_CONSTANTS = 64


def _constants(tau: float, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    """``(1/tau, 1, tau, 1e-7)`` as 0-d tensors of ``dtype`` on ``device`` (cached)."""
    key = (tau, dtype, device)
    hit = _CONSTANTS.get(key)
    if hit is None:
        if len(_CONSTANTS) >= _MAX_CONSTANTS:
            _CONSTANTS.clear()
        values = (1.0 / tau, 1.0, tau, _OFFICIAL_EPS)
        hit = tuple(torch.tensor(v, dtype=dtype, device=device) for v in values)
        _CONSTANTS[key] = hit
    return hit


_BATCH_CONSTANTS: dict[tuple[int, torch.dtype, torch.device], tuple[Tensor, ...]] = {}


def _batch_constants(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
    """``(1/n, -1/n)`` as 0-d tensors and an ``(n, 1)`` column of ``-1`` (cached)."""
    key = (n, dtype, device)
    hit = _BATCH_CONSTANTS.get(key)
    if hit is None:
        if len(_BATCH_CONSTANTS) >= _MAX_CONSTANTS:
            _BATCH_CONSTANTS.clear()
        hit = (
            torch.tensor(1.0 / n, dtype=dtype, device=device),
            torch.tensor(-1.0 / n, dtype=dtype, device=device),
            torch.full((n, 1), -1.0, dtype=dtype, device=device),
        )
        _BATCH_CONSTANTS[key] = hit
    return hit


def _check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"p must be a number >= 1 (or math.inf); got {describe(p)}")
    p = float(p)
    if math.isnan(p) or p < 1:
        raise ValueError(f"p must be >= 1 (a norm order, or math.inf); got {p!r}")
    return p


def _clip_reference(z: Tensor, tau: float, p: float, mode: str) -> Tensor:
    """The clipping through plain autograd operations (the unfused reference, float32 or wider).

    Used for higher-order gradients and for extreme ``tau``; :class:`_ClipLogits` agrees with it in
    value and gradient up to rounding.
    """
    delta = 1.0 / tau
    norms = torch.linalg.vector_norm(z, ord=p, dim=1, keepdim=True)
    if mode == "official":
        n = norms + _OFFICIAL_EPS
        return torch.where(n > tau, z / n / tau, z)
    # min(1, delta / ||z||): rows at or below the bound (including zero rows) keep scale 1.
    scale = (delta / norms.clamp_min(torch.finfo(z.dtype).tiny)).clamp(max=1.0)
    return z * scale


def _row_norms(z: Tensor, p: float) -> Tensor:
    r"""``(N, 1)`` row norms :math:`\lVert z_i\rVert_p`, equal to ``torch.linalg.vector_norm``'s."""
    if p == math.inf:  # max |z| is exact, and abs + amax is several times faster than vector_norm
        return z.abs().amax(dim=1, keepdim=True)
    return torch.linalg.vector_norm(z, ord=p, dim=1, keepdim=True)


def _row_scales(
    z: Tensor, tau: float, p: float, official: bool, with_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    r"""Row norms :math:`n`, scales :math:`s(n)` and gradient coefficients :math:`w`, all ``(N, 1)``.

    With :math:`\rho(n)` the per-row factor of the norm's gradient,
    :math:`\nabla \lVert z\rVert_p = \rho(n)\, d` (:math:`1/n` for :math:`p = 2`, :math:`n^{1-p}`
    for other finite :math:`p \ne 1`, else 1; :math:`d` from :func:`_norm_direction`), the gradient
    of :math:`s(n)\, z` is :math:`s\,(g - w \langle g, z\rangle\, d)` with
    :math:`w = -s'(n)\,\rho(n)/s`:

    * ``continuous``: with :math:`\delta = 1/\tau` and :math:`r = 1/n`, :math:`s = \min(1, \delta r)`
      (computed as autograd's reference computes it). Where :math:`\delta r \le 1` (``torch.clamp``
      passes the gradient at the bound) :math:`s = \delta r`, :math:`s' = -\delta r^2` and
      :math:`w = r\rho`: :math:`r^2` for :math:`p = 2`, :math:`r` for :math:`p \in \{1, \infty\}`,
      :math:`r^p` otherwise; elsewhere :math:`w = 0`. (The reference's :math:`\max(n, \text{tiny})`
      only matters on rows that are left unchanged, here zero rows get :math:`r = \infty`, scale 1.)
    * ``official``: with :math:`m = n + 10^{-7}`, where :math:`m > \tau`, :math:`s = 1/(m\tau)`,
      :math:`s' = -s/m` and :math:`w = \rho/m`; elsewhere :math:`s = 1` and :math:`w = 0`.

    ``w`` is ``None`` unless ``with_grad``.
    """
    delta_t, one_t, tau_t, eps_t = _constants(tau, z.dtype, z.device)
    norms = _row_norms(z, p)
    if official:
        m = torch.add(norms, eps_t)
        keep = torch.le(m, tau_t)
        w = None
        if with_grad:
            w = torch.reciprocal(m)
            if p == 2:
                w.div_(norms)
            elif p != 1 and p != math.inf:
                w.div_(norms.pow(p - 1.0))
            w.masked_fill_(keep, 0.0)
        return norms, torch.mul(m, tau_t).reciprocal_().masked_fill_(keep, 1.0), w
    r = torch.reciprocal(norms)
    raw = torch.mul(r, delta_t)  # delta / n, as autograd's reference computes it
    if not with_grad:
        return norms, torch.clamp_max(raw, one_t), None
    if p == 2:
        w = torch.mul(r, r)
    else:
        w = r if p == 1 or p == math.inf else r.pow_(p)
    unchanged = torch.gt(raw, one_t)
    # min(1, delta / n) in place, and w = 0 on the rows left unchanged (also clears 1/0 on zero rows)
    return norms, raw.masked_fill_(unchanged, 1.0), w.masked_fill_(unchanged, 0.0)


def _norm_direction(z: Tensor, norms: Tensor | None, p: float, rows: Tensor) -> Tensor:
    r"""The direction :math:`d` with :math:`\nabla \lVert z_i\rVert_p = \rho(n_i)\, d_i` (see :func:`_row_scales`).

    :math:`z` for :math:`p = 2`, :math:`\operatorname{sgn}(z)` for :math:`p = 1`,
    :math:`\operatorname{sgn}(z)|z|^{p-1}` for other finite :math:`p`, and for :math:`p = \infty`
    :math:`\operatorname{sgn}(z)\,[|z| = n]`, the per-row coefficients ``rows`` being divided in place
    by the number of tied maxima :math:`\#\{j : |z_j| = n\}` (ties share the gradient evenly, as
    ``torch.linalg.vector_norm``'s backward does).
    """
    if p == 2:
        return z
    if p == 1:
        return z.sign()
    if p == math.inf:
        top = z.abs() == norms
        rows.div_(top.sum(dim=1, keepdim=True))
        return z.sign().mul_(top)
    return z.abs().pow_(p - 1.0).mul_(z.sign())


class _ClipLogits(torch.autograd.Function):
    r"""Fused :math:`z_i \mapsto s(\lVert z_i\rVert_p)\, z_i` with the analytic backward.

    The forward saves only ``(N, 1)`` row statistics besides the input. With :math:`s, w` from
    :func:`_row_scales` and :math:`d` from :func:`_norm_direction`, the backward is
    :math:`s_i\,(g_i - w_i \langle g_i, z_i\rangle\, d_i)`, written into one fresh buffer.
    """

    @staticmethod
    def forward(ctx: Any, z: Tensor, tau: float, p: float, official: bool) -> Tensor:  # type: ignore[override]
        norms, scale, w = _row_scales(z, tau, p, official, True)
        ctx.save_for_backward(z, scale, w, None if p == 1 or p == 2 else norms)
        ctx.options = (tau, p, official)
        return torch.mul(z, scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        z, scale, w, norms = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        tau, p, official = ctx.options
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain expression
            with torch.enable_grad():
                out = _clip_reference(z, tau, p, "official" if official else "continuous")
                (grad_z,) = torch.autograd.grad(out, z, grad, create_graph=True)
            return grad_z, None, None, None
        buf = torch.mul(grad, z)
        rows = buf.sum(dim=1, keepdim=True).mul_(w)  # w_i <g_i, z_i>
        direction = _norm_direction(z, norms, p, rows)
        torch.addcmul(grad, direction, rows, value=-1, out=buf)
        return buf.mul_(scale), None, None, None


class _ClipCrossEntropy(torch.autograd.Function):
    r"""Fused :math:`\mathrm{CE}(\mathrm{clip}(z), y)` with PyTorch's class weights and reductions.

    The forward writes the clipped logits :math:`s_i z_i` into one fresh buffer. With :math:`c_i`
    the upstream gradient times :math:`w_{y_i}` (divided by :math:`\sum_k w_{y_k}`, or by :math:`N`
    without weights, for ``"mean"``), the gradient on the clipped logits is :math:`c_i G_i` with
    :math:`G_i = \operatorname{softmax}_i - e_{y_i}`, and with :math:`s, w, d` as in
    :class:`_ClipLogits`

    .. math:: \frac{\partial L}{\partial z_i} = c_i s_i \bigl(G_i - w_i \langle G_i, z_i\rangle\, d_i\bigr).

    On the CPU, in the ``(N, C)`` layout, the buffer becomes :math:`\operatorname{softmax}` in place,
    the loss is read from the labels' log-probabilities
    (:func:`tailwise.functional._fused.label_log_probs`) and the backward forms the gradient in that
    buffer and hands it to autograd; the products :math:`G_i \odot z_i` go to a reused scratch buffer
    (``workspace``, see :mod:`tailwise.functional._workspace`). A second backward through a retained
    graph, which finds the buffer gone, computes the softmax again. Elsewhere, and in the transposed
    layout (few classes on the CPU, see :mod:`tailwise.functional._fused`), the buffer holds
    :math:`\log\operatorname{softmax}` and the backward exponentiates it into a fresh gradient (in
    place for the ``(N, C)`` layout).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        target: Tensor,
        tau: float,
        p: float,
        official: bool,
        weight: Tensor | None,
        reduction: str,
        workspace: Workspace | None,
    ) -> Tensor:
        norms, scale, w = _row_scales(z, tau, p, official, True)
        n, c = z.shape
        transposed = _transposed(z)
        ctx.save_for_backward(z, target, scale, w, None if p == 1 or p == 2 else norms, weight)
        ctx.options = (tau, p, official, reduction, transposed, workspace)
        buf = z.new_empty((c, n) if transposed else (n, c))
        log_p = buf.t() if transposed else buf
        torch.mul(z, scale, out=log_p)
        ctx.softmax_ahead = _softmax_in_forward(z)
        ctx.probs = buf
        if ctx.softmax_ahead:
            index = target.unsqueeze(1)

            def exact(rows: Tensor) -> Tensor:
                clipped = torch.mul(z[rows], scale[rows])
                return torch.log_softmax(clipped, 1).gather(1, index[rows]).squeeze(1)

            return softmax_cross_entropy_(buf, target, index, weight, reduction, exact)
        torch.log_softmax(buf, 0 if transposed else 1, out=buf)
        return F.nll_loss(log_p, target, weight=weight, reduction=reduction)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, target, scale, w, norms, weight = ctx.saved_tensors
        nones = (None,) * 7
        if not ctx.needs_input_grad[0]:
            return (None, *nones)
        tau, p, official, reduction, transposed, workspace = ctx.options
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain expression
            with torch.enable_grad():
                clipped = _clip_reference(z, tau, p, "official" if official else "continuous")
                loss = F.cross_entropy(clipped, target, weight=weight, reduction=reduction)
                (grad_z,) = torch.autograd.grad(loss, z, grad, create_graph=True)
            return (grad_z, *nones)
        index = target.unsqueeze(1)
        n = z.shape[0]
        inv_n, neg_inv_n, neg_ones = _batch_constants(n, z.dtype, z.device) if n else (None, None, None)
        # sign * c_i: the upstream gradient times w_{y_i} (/ sum_k w_{y_k} or / N for "mean"), (N, 1) or
        # (); negated (sign = -1) for the transposed layout, whose last step below yields -G + w<G, z>d.
        if weight is None:
            if reduction == "mean":
                coef = grad * (neg_inv_n if transposed else inv_n) if n else grad * math.nan  # NaN mean of nothing
            else:
                coef = grad.neg() if transposed else grad
                if reduction == "none":
                    coef = coef.unsqueeze(1)
        else:
            sample_weight = weight.index_select(0, target)
            coef = (grad.neg() if transposed else grad) * sample_weight
            if reduction == "mean":
                coef = coef / sample_weight.sum()
            coef = coef.unsqueeze(1)
        if ctx.softmax_ahead:
            # the softmax buffer becomes the gradient and belongs to autograd
            g, ctx.probs = ctx.probs, None
            if g is None:  # taken by an earlier backward (retain_graph=True): formed again
                g = torch.mul(z, scale)
                torch.softmax(g, 1, out=g)
        else:
            soft = torch.exp(ctx.probs)
            g = soft.t() if transposed else soft  # softmax, (N, C)
        if n:
            g.scatter_add_(1, index, neg_ones)  # G = softmax - e_y
        if workspace is not None and ctx.softmax_ahead:
            products, storage = workspace.take(tuple(z.shape), z)
            rows = torch.mul(g, z, out=products).sum(dim=1, keepdim=True).mul_(w)  # w_i <G_i, z_i>
            workspace.give_back(storage)
        else:
            rows = torch.mul(g, z).sum(dim=1, keepdim=True).mul_(w)
        direction = _norm_direction(z, norms, p, rows)
        row_scale = torch.mul(scale, coef)  # sign * c_i s_i
        if transposed:  # a fresh gradient in the logits' layout: (w <G, z> d - G) * (-c s)
            grad_z = torch.mul(direction, rows).sub_(g).mul_(row_scale)
        else:  # in place in the softmax buffer: G c s - d (w <G, z> c s)
            grad_z = g.mul_(row_scale).addcmul_(direction, rows.mul_(row_scale), value=-1)
        return (grad_z, *nones)


def clip_cross_entropy_fn(
    like: Tensor, tau: float, p: float, mode: str, weight: Tensor | None, reduction: str
) -> Callable[[Tensor, Tensor], Tensor] | None:
    """``F.cross_entropy(clip_logits(z, tau, p, mode), target, weight, reduction=reduction)``, fused,
    as a prepared ``fn(z, target)`` for logits like ``like`` (same dtype, device and classes; any batch size).

    Arguments already checked: float32/float64 ``(N, C)`` logits with ``C > 0``, int64 labels in
    range, ``weight`` in the logits' dtype and device. ``None`` where the settings are outside the
    fused kernel's range. Float32 CPU logits with fewer than 16 classes (any batch size) compose native
    operations in the transposed layout (:func:`_composite_fn`); the rest run the fused function
    (see :func:`_composite_path`). Calls traced by ``torch.compile`` run
    :class:`_ClipCrossEntropyTraced` (the 2-norm without class weights, mean or sum) or the
    composition in the usual layout.
    """
    official = mode == "official"
    if tau < _MIN_OFFICIAL_TAU if official else tau > _MAX_CONTINUOUS_TAU:
        return None
    if compiling():  # expressions for the compiler to fuse
        composite = _composite_fn(tau, p, official, weight, reduction, False)
        if p == 2 and weight is None and reduction != "none":

            def traced_fn(z: Tensor, target: Tensor) -> Tensor:
                if not forms_gradient(z):
                    return composite(z, target)
                return _ClipCrossEntropyTraced.apply(z, target, tau, official, reduction)

            return traced_fn
        return composite
    if _composite_path(like):
        return _composite_fn(tau, p, official, weight, reduction, _transposed(like))

    workspace = Workspace() if like.is_cpu else None

    def fn(z: Tensor, target: Tensor) -> Tensor:
        if z.requires_grad and torch.is_grad_enabled():
            return _ClipCrossEntropy.apply(z, target, tau, p, official, weight, reduction, workspace)
        clipped = torch.mul(z, _row_scales(z, tau, p, official, False)[1])
        return F.cross_entropy(clipped, target, weight=weight, reduction=reduction)

    return fn


class _ClipCrossEntropyTraced(GradientInForward):
    r"""The clipped cross-entropy (2-norm) for calls traced by ``torch.compile``: the gradient formed in the forward.

    A row with norm :math:`n = \lVert z\rVert_2` is scaled by :math:`\sigma = \delta / a` where it
    is clipped and by 1 elsewhere, with :math:`a = n`, :math:`\delta = 1/\tau` and clipping where
    :math:`n \ge \delta` (the continuous rule; at the bound the gradient passes through the norm, as
    in :func:`_composite_fn`), or :math:`a = n + 10^{-7}`, :math:`\delta = 1/\tau` and clipping where
    :math:`a > \tau` (the official rule). With :math:`g = \operatorname{softmax}(\sigma z) - e_y` the
    gradient is :math:`\sigma g - \frac{\sigma\,(g \cdot z)}{a\,n} z` on clipped rows and
    :math:`g` elsewhere, formed in the forward (see :class:`GradientInForward`).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: Tensor, target: Tensor, tau: float, official: bool, reduction: str
    ) -> Tensor:
        n = z.shape[0]
        rows = target.unsqueeze(1)
        norm = torch.linalg.vector_norm(z, ord=2, dim=1, keepdim=True)
        if official:
            a = norm + _OFFICIAL_EPS
            clipped = a > tau
        else:
            a = norm
            clipped = norm >= 1.0 / tau
        scale = torch.where(clipped, 1.0 / (a * tau), 1.0)
        x = z * scale
        t = x - x.amax(dim=1, keepdim=True)
        e = torch.exp(t)
        s = e.sum(dim=1, keepdim=True)
        loss = (s.log() - t.gather(1, rows)).sum()
        g = (e / s).scatter_add(1, rows, torch.full_like(s, -1.0))
        through_norm = torch.where(clipped, scale * (g * z).sum(dim=1, keepdim=True) / (a * norm), 0.0)
        grad = torch.where(clipped, scale * g - through_norm * z, g)
        if reduction == "mean":
            loss, grad = loss / n, grad / n
        ctx.save_for_backward(grad)
        return loss


def _composite_fn(
    tau: float, p: float, official: bool, weight: Tensor | None, reduction: str, transposed: bool
) -> Callable[[Tensor, Tensor], Tensor]:
    r"""The clipped cross-entropy from native differentiable operations, one function per clipping rule.

    The Python backward of :class:`_ClipCrossEntropy` costs more than a few native backward nodes on
    a small batch (see :mod:`tailwise.functional._fused`); these functions run once per training step,
    where every Python call shows. The clipping is
    :math:`z / \max(\lVert z\rVert, \delta) \cdot \delta`, which is :func:`_clip_reference`'s
    :math:`z \min(1, \delta/\lVert z\rVert)` (both pass the gradient through the norm at the bound and
    leave zero rows unchanged with a zero gradient through the norm); ``official`` is the reference's
    expression. ``transposed`` (float32 CPU logits with fewer than 16 classes): computed in the
    ``(C, N)`` layout.
    """
    nll_loss, log_softmax, vector_norm = F.nll_loss, torch.log_softmax, torch.linalg.vector_norm
    dim = 0 if transposed else 1
    if official:

        def official_fn(z: Tensor, target: Tensor) -> Tensor:
            zz = z.t() if transposed else z
            m = vector_norm(zz, ord=p, dim=dim, keepdim=True) + _OFFICIAL_EPS
            log_p = log_softmax(torch.where(m > tau, zz / m / tau, zz), dim)
            return nll_loss(log_p.t() if transposed else log_p, target, weight=weight, reduction=reduction)

        return official_fn
    if tau == 1.0:

        def unit_bound_fn(z: Tensor, target: Tensor) -> Tensor:
            zz = z.t() if transposed else z
            log_p = log_softmax(zz / vector_norm(zz, ord=p, dim=dim, keepdim=True).clamp_min(1.0), dim)
            return nll_loss(log_p.t() if transposed else log_p, target, weight=weight, reduction=reduction)

        return unit_bound_fn
    bound = 1.0 / tau

    def continuous_fn(z: Tensor, target: Tensor) -> Tensor:
        zz = z.t() if transposed else z
        log_p = log_softmax(zz / (vector_norm(zz, ord=p, dim=dim, keepdim=True).clamp_min(bound) * tau), dim)
        return nll_loss(log_p.t() if transposed else log_p, target, weight=weight, reduction=reduction)

    return continuous_fn


def _composite_path(z: Tensor) -> bool:
    """Whether :func:`clip_cross_entropy_fn` composes native operations for ``z``.

    Only in the transposed layout (float32 CPU logits with fewer than 16 classes): with 16 classes
    or more the fused function was faster at every batch size measured (256 x 100, 64 x 500,
    1024 x 16: 2.56-2.66x ``F.cross_entropy`` against 2.73-2.76x for the composition, interleaved
    calls). Tests force either path on any input; both give the reference's value and gradient.
    """
    return _transposed(z)


def _check_logits(logits: Tensor) -> None:
    """Raise unless ``logits`` is a floating-point ``(N, C)`` tensor (the messages of :func:`clip_logits`)."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor; got {describe(logits)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor; got dtype {logits.dtype}")
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C); got shape {tuple(logits.shape)}")


def _clip(logits: Tensor, tau: float, p: float, mode: str) -> Tensor:
    """:func:`clip_logits` after the argument checks (``logits`` from :func:`_check_logits`)."""
    dtype = logits.dtype
    z = logits.float() if dtype in _LOW_PRECISION else logits
    official = mode == "official"
    if z.shape[1] == 0 or (tau < _MIN_OFFICIAL_TAU if official else tau > _MAX_CONTINUOUS_TAU) or compiling():
        out = _clip_reference(z, tau, p, mode)
    elif z.requires_grad and torch.is_grad_enabled():
        out = _ClipLogits.apply(z, tau, p, official)
    else:
        out = torch.mul(z, _row_scales(z, tau, p, official, False)[1])
    return out if out.dtype == dtype else out.to(dtype)


def clip_logits(logits: Tensor, tau: float, p: float = 2, mode: str = "continuous") -> Tensor:
    r"""Clip the :math:`\ell_p` norm of every row of ``logits``.

    With :math:`\delta = 1/\tau`:

    * ``mode="continuous"`` (default, the paper's clamp):
      :math:`z \mapsto z \cdot \min\bigl(1, \delta / \lVert z\rVert_p\bigr)`, a continuous map that
      leaves rows of norm :math:`\le \delta` unchanged and projects the others onto the sphere of
      radius :math:`\delta`.
    * ``mode="official"`` (the released code, ``algorithms/clip.py``): with
      :math:`n = \lVert z\rVert_p + 10^{-7}`, rows with :math:`n > \tau` become :math:`z\,\delta/n`
      and the others are unchanged. The *threshold* is :math:`\tau` but the *target norm* is
      :math:`1/\tau`; they agree only at :math:`\tau = 1`. For :math:`\tau > 1` the map is
      discontinuous, and for :math:`\tau < 1` rows with norm in :math:`(\tau, 1/\tau)` are scaled
      *up*. Use it to reproduce the paper's numbers.

    Gradients flow through the norm (no stop-gradient), as in the official code. They are computed
    analytically (see the module docstring) and agree with autograd's differentiation of the
    expressions above up to rounding, at the bound and for zero rows included.

    Args:
        logits: ``[N, C]`` floating-point logits. Half/bfloat16 inputs are clipped in float32 and
            returned in their own dtype.
        tau: the temperature :math:`\tau > 0`; the bound on the norm is :math:`1/\tau`.
        p: norm order, ``>= 1`` or ``math.inf`` (the official code uses integers, default 2).
        mode: ``"continuous"`` or ``"official"``.

    Returns:
        The clipped logits, same shape and dtype as ``logits``.

    Raises:
        TypeError: ``logits`` is not a floating-point tensor.
        ValueError: bad ``tau``, ``p`` or ``mode``, or logits not of shape ``[N, C]``.
    """
    _check_logits(logits)
    tau = check_positive("tau", tau)
    p = _check_p(p)
    check_in_choices("mode", mode, LOGIT_CLIP_MODES)
    return _clip(logits, tau, p, mode)


def logit_clip_loss(
    logits: Tensor,
    target: Tensor,
    tau: float = 1.0,
    p: float = 2,
    mode: str = "continuous",
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Cross-entropy of norm-clipped logits, :math:`\mathrm{CE}(\mathrm{clip}_{\tau,p}(z), y)`, fused.

    The functional twin of ``LogitClipLoss(CrossEntropyLoss(weight=weight, reduction=reduction), tau,
    p, mode)``: the value and gradient of ``F.cross_entropy(clip_logits(logits, tau, p, mode), target,
    weight=weight, reduction=reduction)`` up to rounding, in one kernel (see :func:`clip_logits` for
    the two clipping rules). Repeated calls with the same settings and weight tensor reuse the
    checked constants (see :mod:`tailwise.functional._prepared`).

    Args:
        logits: ``[N, C]`` floating-point logits (half/bfloat16 are computed in float32).
        target: ``[N]`` integer class indices.
        tau: the temperature :math:`\tau > 0`; the bound on the norm is :math:`1/\tau`.
        p: norm order, ``>= 1`` or ``math.inf``.
        mode: ``"continuous"`` or ``"official"``.
        weight: optional ``[C]`` class weights of the cross-entropy (weighted mean for ``"mean"``).
        reduction: ``"none" | "mean" | "sum"``.

    Returns:
        The reduced loss (float32 for half/bfloat16 logits).
    """
    key = _PREPARED.key("logit_clip", logits, tau, p, mode, weight, reduction)
    fn = _PREPARED.get(key)
    # on the CPU the logits' finiteness is checked by the loss (clipping keeps finite rows finite and
    # makes a row with NaN or Inf NaN; see checked_by_computation), elsewhere in front
    on_cpu = isinstance(logits, Tensor) and logits.is_cpu
    check_logits_target(logits, target, finite=not on_cpu)
    z = logits.float() if logits.dtype in _LOW_PRECISION else logits
    if fn is None:
        tau = check_positive("tau", tau)
        p = _check_p(p)
        check_in_choices("mode", mode, LOGIT_CLIP_MODES)
        check_reduction(reduction)
        c = z.shape[1]
        w = check_weight(weight, c)
        w = None if w is None else w.to(device=z.device, dtype=z.dtype)
        fn = None if c == 0 else clip_cross_entropy_fn(z, tau, p, mode, w, reduction)
        if fn is None:  # settings outside the fused kernel's range, or no classes: compose
            if on_cpu:
                check_finite("logits", logits)
            return F.cross_entropy(_clip(z, tau, p, mode), target.long(), weight=w, reduction=reduction)
        _PREPARED.put(key, fn, (weight,))
    if on_cpu:
        return checked_by_computation(fn, z, target.long(), logits)
    return fn(z, target.long())
