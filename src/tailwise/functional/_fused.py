r"""Fused forward/backward kernels for the margin/prior cross-entropies (LDAM, VS, LA, CDT, Bayias).

All of them are a softmax cross-entropy of adjusted logits,

.. math:: t_{ij} = a_j\, z_{ij} + b_j + \delta_i\,[j = y_i], \qquad
   \ell_i = w_{y_i}\bigl(\log\textstyle\sum_j e^{t_{ij}} - t_{i y_i}\bigr),

with a scalar or per-class multiplier :math:`a` (LDAM's scale :math:`s`, VS's :math:`\Delta`), a
per-class offset :math:`b` (VS/LA's :math:`\iota`, Bayias' log-prior ratio) and a per-sample shift
:math:`\delta_i` of the true-class logit (LDAM's :math:`-s\,\Delta_{y_i}`). Through autograd this costs
an ``(N, C)`` pass per adjustment in each direction plus the temporaries of ``F.cross_entropy``'s
backward. :class:`_AdjustedCrossEntropy` builds :math:`t` in one fresh buffer, turns it into
:math:`\log\operatorname{softmax}(t)` in place, and back-propagates the analytic gradient

.. math:: \frac{\partial L}{\partial z_{ij}} = c_i\, a_j \bigl(\operatorname{softmax}(t_i)_j - [j = y_i]\bigr),

with :math:`c_i` the upstream gradient times :math:`w_{y_i}` (divided by :math:`\sum_k w_{y_k}`, or by
:math:`N` without weights, for the ``"mean"`` reduction): one ``(N, C)`` buffer per direction.

Higher-order gradients (``create_graph=True``) are taken through the plain autograd expression, so
double backward gives exactly what the unfused computation gives.

The fused function saves passes over the data but pays a Python backward, tens of microseconds per
call on a small CPU batch. :func:`adjusted_cross_entropy_fn` therefore composes native operations (C++
backward nodes) for inputs of at most ``2**15`` logits and for float32 CPU logits with fewer than 16
classes, building them in the transposed layout whose log-softmax is vectorised; the fused function
runs on larger inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from tailwise._validation import compiling
from tailwise.functional._reduce import reduce_loss

# PyTorch's CPU log-softmax over the last dimension takes a slow scalar path when a float32 row is
# shorter than one vector register (C < 16 here): ~10x slower at C = 10 than at C = 16. Along dim 0
# of a contiguous (C, N) tensor it vectorises over the samples instead, so for few classes the
# kernels below keep float32 logits transposed: (N, C) views of a contiguous (C, N) buffer. float64
# keeps the usual layout (its results stay those of F.cross_entropy to the last bit).
_SMALL_C = 16

# Up to this many logits, :func:`adjusted_cross_entropy_fn` composes native operations: their C++
# backward nodes cost less than the Python backward of the fused function, whose fewer (N, C)
# passes only pay off on larger inputs (measured in benchmarks/results/loss_overhead.md).
_COMPOSITE_MAX_ELEMENTS = 1 << 15


def _transposed(z: Tensor) -> bool:
    """Whether to compute the softmax of ``z`` transposed (float32 on CPU, fewer than 16 columns).

    Never under ``torch.compile``, whose generated kernels vectorise the rows themselves.
    """
    return z.shape[1] < _SMALL_C and z.dtype == torch.float32 and z.is_cpu and not compiling()


def forms_gradient(z: Tensor) -> bool:
    """Whether a traced call forms the gradient of the logits ``z`` in its forward.

    Only when autograd will ask for it (grad mode on and ``z`` requiring a gradient) and the batch has
    samples; evaluation calls run the plain expression instead, without the gradient's passes.
    """
    return torch.is_grad_enabled() and z.requires_grad and z.shape[0] > 0


def materialized(*vectors: Tensor | None) -> tuple[Tensor | None, ...]:
    """The per-class ``(C,)`` vectors (or ``None``), each computed once per call under ``torch.compile``.

    Inductor inlines an elementwise chain that produces a small vector into the loops that read it,
    so per-class constants derived in the graph (casts, reciprocals, square roots) would be recomputed
    for every element of an ``(N, C)`` loop: several times slower at ``C = 1000``. Stacking them
    writes them to one buffer first. Outside a traced call the vectors are returned as they are.
    """
    present = [v for v in vectors if v is not None]
    if not compiling() or not present or len({(v.dtype, v.device, v.shape) for v in present}) > 1:
        return vectors
    rows = iter(torch.stack(present).unbind(0))
    return tuple(None if v is None else next(rows) for v in vectors)


def log_softmax_rows(z: Tensor) -> Tensor:
    """``torch.log_softmax(z, 1)`` of ``(N, C)`` logits, differentiable; fast on CPU for few classes.

    For ``C < 16`` on CPU the result is a non-contiguous ``(N, C)`` view of a contiguous ``(C, N)``
    tensor (computed along its dim 0); the values equal ``torch.log_softmax(z, 1)`` up to rounding.
    """
    if _transposed(z):
        return torch.log_softmax(z.t().contiguous(), 0).t()
    return torch.log_softmax(z, 1)


def softmax_like(log_p: Tensor, z: Tensor) -> Tensor:
    """``exp(log_p)`` in a fresh tensor laid out like ``z`` (a gradient autograd need not copy)."""
    if log_p.stride() == z.stride():
        return torch.exp(log_p)
    return torch.exp(log_p, out=torch.empty_like(z, memory_format=torch.contiguous_format))


def loss_coefficients(
    grad: Tensor, reduction: str, n: int, sample_weight: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Gradients reaching each sample's cross-entropy and penalty terms of ``CE + penalty``.

    For ``reduce(CE_i, w_{y_i}) + reduce(pen_i)`` with the upstream gradient ``grad``: returns
    ``(c_ce, c_pen)``, each of shape ``(N, 1)`` or a scalar, with ``c_ce = grad * w_{y_i} / sum_k w_{y_k}``
    (``/ N`` unweighted) for ``"mean"`` and ``c_pen = grad / N``.
    """
    if reduction == "none":
        c_pen = grad.unsqueeze(1)
        return (c_pen if sample_weight is None else c_pen * sample_weight.unsqueeze(1)), c_pen
    c_pen = grad / n if reduction == "mean" else grad
    if sample_weight is None:
        return c_pen, c_pen
    c_ce = grad * sample_weight
    if reduction == "mean":
        c_ce = c_ce / sample_weight.sum()
    return c_ce.unsqueeze(1), c_pen


def _write_adjusted(
    t: Tensor,
    z: Tensor,
    index: Tensor,
    scale: float | None,
    multiplier: Tensor | None,
    offset: Tensor | None,
    shift: Tensor | None,
) -> Tensor:
    """Write the adjusted logits :math:`t` into the ``(N, C)`` buffer ``t`` (no autograd)."""
    if scale is not None:
        torch.mul(z, scale, out=t)
        if offset is not None:
            t.add_(offset)
    elif multiplier is not None:
        if offset is None:
            torch.mul(z, multiplier, out=t)
        else:
            torch.addcmul(offset, z, multiplier, out=t)
    elif offset is not None:
        torch.add(z, offset, out=t)
    else:
        t.copy_(z)
    if shift is not None:
        t.scatter_add_(1, index, shift.unsqueeze(1))
    return t


def _adjusted_logits(
    z: Tensor,
    index: Tensor,
    scale: float | None,
    multiplier: Tensor | None,
    offset: Tensor | None,
    shift: Tensor | None,
) -> Tensor:
    """The adjusted logits :math:`t` through autograd operations (the unfused reference)."""
    if scale is not None:
        t = z * scale
        if offset is not None:
            t = t + offset
    elif multiplier is not None:
        t = z * multiplier if offset is None else torch.addcmul(offset, z, multiplier)
    elif offset is not None:
        t = z + offset
    else:
        t = z.clone()
    if shift is not None:
        t.scatter_add_(1, index, shift.unsqueeze(1))  # t is a fresh tensor that no backward formula saves
    return t


class _AdjustedCrossEntropy(torch.autograd.Function):
    r"""Fused :math:`\mathrm{CE}(a \odot z + b + \delta\,\mathrm{onehot}(y), y)` (see the module docstring).

    On the CPU (the usual ``(N, C)`` layout) the forward turns :math:`t` into
    :math:`\operatorname{softmax}(t)` in place and takes the loss from the labels' log-probabilities
    (see :func:`label_log_probs`); the backward forms the gradient in that buffer and hands it to
    autograd, so no exponential and no further ``(N, C)`` buffer is needed (a second backward through
    a retained graph, which finds the buffer gone, computes the softmax again). Elsewhere, and in the
    transposed layout, the buffer holds :math:`\log\operatorname{softmax}(t)` (no host read for the
    underflow test on a GPU) and the backward exponentiates it into a fresh gradient.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        target: Tensor,
        scale: float | None,
        multiplier: Tensor | None,
        offset: Tensor | None,
        shift: Tensor | None,
        weight: Tensor | None,
        reduction: str,
    ) -> Tensor:
        index = target.unsqueeze(1)
        n, c = z.shape
        transposed = _transposed(z)
        ctx.save_for_backward(z, target, index, multiplier, offset, shift, weight)
        ctx.scale = scale
        ctx.reduction = reduction
        ctx.transposed = transposed
        # one fresh buffer holds t, then softmax(t) or log softmax(t) in place
        buf = z.new_empty((c, n) if transposed else (n, c))
        log_p = buf.t() if transposed else buf
        _write_adjusted(log_p, z, index, scale, multiplier, offset, shift)
        ctx.softmax_ahead = _softmax_in_forward(z)
        if ctx.softmax_ahead:
            ctx.probs = buf

            def exact(rows: Tensor) -> Tensor:
                t = _adjusted_logits(z[rows], index[rows], scale, multiplier, offset, None if shift is None else shift[rows])
                return torch.log_softmax(t, 1).gather(1, index[rows]).squeeze(1)

            return softmax_cross_entropy_(buf, target, index, weight, reduction, exact)
        torch.log_softmax(buf, 0 if transposed else 1, out=buf)
        ctx.probs = buf
        # the second half of F.cross_entropy: same reductions and weighted mean
        return F.nll_loss(log_p, target, weight=weight, reduction=reduction)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, target, index, multiplier, offset, shift, weight = ctx.saved_tensors
        nones = (None,) * 7
        if not ctx.needs_input_grad[0]:
            return (None, *nones)
        scale, reduction = ctx.scale, ctx.reduction
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain expression
            with torch.enable_grad():
                loss = _reference(z, target, scale, multiplier, offset, shift, weight, reduction)
                (grad_z,) = torch.autograd.grad(loss, z, grad, create_graph=True)
            return (grad_z, *nones)
        # c_i = upstream gradient * w_{y_i} (/ sum_k w_{y_k} or / N for "mean"), times the scale
        if weight is None:
            if reduction == "none":
                coef = grad.unsqueeze(1) if scale is None else grad.unsqueeze(1) * scale
            else:
                k = 1.0 if scale is None else scale
                if reduction == "mean":
                    n = z.shape[0]
                    k = k / n if n else math.nan  # an empty batch has a NaN mean, as in F.cross_entropy
                coef = grad * k
        else:
            sample_weight = weight.index_select(0, target)
            coef = grad * sample_weight
            if reduction == "mean":
                coef = coef / sample_weight.sum()
            if scale is not None:
                coef = coef * scale
            coef = coef.unsqueeze(1)
        if ctx.softmax_ahead:
            # the softmax buffer becomes the gradient, (softmax - e_y) c a, and belongs to autograd
            grad_z, ctx.probs = ctx.probs, None
            if grad_z is None:  # taken by an earlier backward (retain_graph=True): formed again
                grad_z = _write_adjusted(torch.empty_like(z), z, index, scale, multiplier, offset, shift)
                torch.softmax(grad_z, 1, out=grad_z)
            grad_z.scatter_add_(1, index, torch.full(index.shape, -1.0, dtype=z.dtype, device=z.device))
            if coef.ndim == 0 and multiplier is not None:
                return (grad_z.mul_(multiplier * coef), *nones)
            grad_z.mul_(coef)
            if multiplier is not None:
                grad_z.mul_(multiplier)
            return (grad_z, *nones)
        buf = ctx.probs
        grad_z = softmax_like(buf.t() if ctx.transposed else buf, z)
        grad_z.mul_(coef)
        grad_z.scatter_add_(1, index, coef.neg().expand(index.shape))
        if multiplier is not None:
            grad_z.mul_(multiplier)
        return (grad_z, *nones)


class GradientInForward(torch.autograd.Function):
    """Base of the functions for traced calls whose forward forms the gradient of the logits.

    A subclass's ``forward`` (logits first) computes the loss and its gradient :math:`G` for a unit
    upstream gradient from plain operations, which the compiler fuses, and saves :math:`G`; the
    backward scales it by the upstream gradient. Differentiable once: a second backward raises.
    """

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (g,) = ctx.saved_tensors
        return (g * grad, *(None,) * (len(ctx.needs_input_grad) - 1))


def reduce_with_gradient(
    per_sample: Tensor, grad: Tensor, target: Tensor, weight: Tensor | None, reduction: str
) -> tuple[Tensor, Tensor]:
    r"""The ``"mean"`` or ``"sum"`` of the ``(N, 1)`` losses and their ``(N, C)`` gradient, reduced alike.

    With class ``weight`` each sample counts :math:`w_{y_i}` and the mean divides by
    :math:`\sum_i w_{y_i}` (PyTorch's weighted mean); without, by :math:`N`.
    """
    if weight is None:
        loss = per_sample.sum()
        if reduction == "mean":
            loss, grad = loss / per_sample.shape[0], grad / per_sample.shape[0]
        return loss, grad
    coef = weight.index_select(0, target).unsqueeze(1)
    loss = (per_sample * coef).sum()
    if reduction == "mean":
        total = coef.sum()
        loss, coef = loss / total, coef / total
    return loss, grad * coef


class _AdjustedCrossEntropyTraced(GradientInForward):
    r""":class:`_AdjustedCrossEntropy` for calls traced by ``torch.compile``: the gradient formed in the forward.

    With per-sample coefficients :math:`c_i = w_{y_i}` (1 without weights), over
    :math:`\sum_k c_k` for the ``"mean"`` (:math:`N` without weights, PyTorch's weighted mean), the
    gradient is :math:`c_i\, a \odot (\operatorname{softmax}(t_i) - e_{y_i})` (see
    :class:`GradientInForward`).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z: Tensor,
        target: Tensor,
        scale: float | None,
        multiplier: Tensor | None,
        offset: Tensor | None,
        shift: Tensor | None,
        weight: Tensor | None,
        reduction: str,
    ) -> Tensor:
        index = target.unsqueeze(1)
        t = _adjusted_logits(z, index, scale, multiplier, offset, shift)
        t = t - t.amax(dim=1, keepdim=True)
        e = torch.exp(t)
        s = e.sum(dim=1, keepdim=True)
        per_sample = s.log() - t.gather(1, index)  # (N, 1)
        grad = (e / s).scatter_add(1, index, torch.full_like(s, -1.0))
        loss, grad = reduce_with_gradient(per_sample, grad, target, weight, reduction)
        if scale is not None:
            grad = grad * scale
        elif multiplier is not None:
            grad = grad * multiplier
        ctx.save_for_backward(grad)
        return loss


def _softmax_in_forward(z: Tensor) -> bool:
    """Whether :class:`_AdjustedCrossEntropy` keeps the softmax itself (CPU logits, ``(N, C)`` layout)."""
    return z.is_cpu and not _transposed(z)


def label_log_probs(p: Tensor, index: Tensor, exact: Callable[[Tensor], Tensor]) -> Tensor:
    r"""The labels' log-probabilities :math:`\log p_{i y_i}`, ``(N,)``, from softmax probabilities ``p``.

    A softmax probability that is a normal floating-point number carries a relative error of a few
    units in the last place, so its logarithm is within a few ``eps`` of the log-softmax. Below the
    smallest normal number (the label's logit far below the row's maximum: about 87 apart in
    float32) the probability loses precision and then underflows to 0, so the rows with such a
    probability are passed to ``exact(rows)`` (a 1-D index tensor), which returns their exact
    log-softmax at the labels. The test is one host read: CPU tensors only.

    Args:
        p: ``(N, C)`` softmax probabilities.
        index: ``(N, 1)`` int64 labels.
        exact: the exact log-probabilities of the given rows at their labels.
    """
    p_y = p.gather(1, index).squeeze(1)
    log_p_y = p_y.log()
    tiny = torch.finfo(p.dtype).tiny
    if p_y.numel() and float(p_y.min()) < tiny:
        rows = torch.nonzero(p_y < tiny).squeeze(1)
        log_p_y[rows] = exact(rows)
    return log_p_y


def softmax_cross_entropy_(
    buf: Tensor,
    target: Tensor,
    index: Tensor,
    weight: Tensor | None,
    reduction: str,
    exact: Callable[[Tensor], Tensor],
) -> Tensor:
    """``F.cross_entropy`` of the ``(N, C)`` CPU logits in ``buf``, which becomes their softmax in place.

    The loss comes from the labels' log-probabilities (:func:`label_log_probs`, ``exact`` recomputing
    the rows whose probability underflows), with PyTorch's weighted reductions; ``index`` is
    ``target.unsqueeze(1)``. The fused kernels then form their gradient in ``buf``.
    """
    torch.softmax(buf, 1, out=buf)
    log_p_y = label_log_probs(buf, index, exact)
    sample_weight = None if weight is None else weight.index_select(0, target)
    return reduce_loss(log_p_y.neg_(), reduction, sample_weight)


def softmax_gradient_(e: Tensor, s: Tensor, rows: Tensor, scale: float) -> Tensor:
    r"""Turn the shifted exponentials ``e`` (row sums ``s``) into :math:`c\,(\operatorname{softmax} - e_y)`, in place.

    The cross-entropy part of the gradient formed ahead by the fused kernels, for labels ``rows``
    (``[N, 1]``) and the reduction's coefficient :math:`c` (``scale``: :math:`1/N` for the mean, 1 for
    the sum). ``s`` is overwritten by its reciprocal. Returns ``e``.
    """
    r = s.reciprocal_()
    grad = e.mul_(r.mul_(scale) if scale != 1.0 else r)
    return grad.scatter_(1, rows, -scale, reduce="add")


def hand_over_gradient(ctx: Any, grad: Tensor, reform: Callable[[], Tensor]) -> Tensor:
    """The backward of a kernel that formed its gradient (for a unit upstream gradient) in the forward.

    The gradient kept in ``ctx.grad`` is handed to autograd without a copy at the usual unit upstream
    ``grad`` (scaled in place otherwise) and dropped from ``ctx``: it then belongs to autograd. A
    second backward through a retained graph finds it gone and forms it again with ``reform()``.
    """
    g = ctx.grad
    if g is None:
        g = reform()
    ctx.grad = None
    if grad.is_cpu and float(grad) == 1.0:  # the usual loss.backward()
        return g
    return g.mul_(grad)


def _reference(
    z: Tensor,
    target: Tensor,
    scale: float | None,
    multiplier: Tensor | None,
    offset: Tensor | None,
    shift: Tensor | None,
    weight: Tensor | None,
    reduction: str,
) -> Tensor:
    """The same loss through plain autograd operations (used for higher-order gradients)."""
    t = _adjusted_logits(z, target[:, None], scale, multiplier, offset, shift)
    return F.cross_entropy(t, target, weight=weight, reduction=reduction)


AdjustedCrossEntropyFn = Callable[[Tensor, Tensor], Tensor]
"""A prepared adjusted cross-entropy: ``fn(z, target) -> loss`` (see :func:`adjusted_cross_entropy_fn`)."""


def adjusted_cross_entropy_fn(
    like: Tensor,
    *,
    scale: float | None = None,
    multiplier: Tensor | None = None,
    offset: Tensor | None = None,
    class_shift: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> AdjustedCrossEntropyFn:
    r"""The adjusted cross-entropy as a function ``fn(z, target)``, its per-class tensors prepared once.

    Loss modules keep the returned function while their state is unchanged, so a call does no more
    Python work than the operations themselves. Two paths compute the same loss: inputs of at most
    ``2**15`` logits, and float32 CPU logits with fewer than 16 classes at any batch size, compose
    native differentiable operations (C++ backward nodes); larger inputs run the fused function with
    its analytic backward (:class:`_AdjustedCrossEntropy`). With few classes on the CPU (see
    :func:`log_softmax_rows`) the adjusted logits are built in the transposed ``(C, N)`` layout, where
    the log-softmax is vectorised over the samples; the true-class shifts are then the columns
    ``diag(v)[:, y]``, so that LDAM's ``s * z + shift`` is a single ``torch.add(cols, z.t(), alpha=s)``.

    Args:
        like: ``(N, C)`` compute logits (float32 or wider) with the dtype, device and number of classes
            of the logits ``fn`` will be called with (any batch size).
        scale: scalar multiplier :math:`a` (exclusive with ``multiplier``).
        multiplier: ``(C,)`` multiplier :math:`a` in ``like``'s dtype and device.
        offset: ``(C,)`` offset :math:`b` in ``like``'s dtype and device.
        class_shift: ``(C,)`` vector :math:`v` in ``like``'s dtype; the true-class logit of sample
            :math:`i` is shifted by :math:`\delta_i = v_{y_i}` after the multiplier and the offset.
        weight: ``(C,)`` class weights in ``like``'s dtype (weighted mean for ``"mean"``).
        reduction: ``"none" | "mean" | "sum"`` (already validated).

    The per-class tensors are constants: they are detached, so no gradient flows into them on any path.

    Under ``torch.compile`` ``fn`` is :class:`_AdjustedCrossEntropyTraced` for a ``"mean"`` or
    ``"sum"`` and the plain expression of :func:`_reference` otherwise; the compiler fuses either.

    Returns:
        ``fn(z, target)``: the loss of validated ``(N, C)`` logits ``z`` and ``(N,)`` int64 labels.
    """
    multiplier, offset, class_shift, weight = (
        None if t is None else t.detach() for t in (multiplier, offset, class_shift, weight)
    )
    if compiling():
        multiplier, offset, class_shift, weight = materialized(multiplier, offset, class_shift, weight)

        def traced_fn(z: Tensor, target: Tensor) -> Tensor:
            shift = None if class_shift is None else class_shift.index_select(0, target)
            if reduction == "none" or not forms_gradient(z):
                return _reference(z, target, scale, multiplier, offset, shift, weight, reduction)
            return _AdjustedCrossEntropyTraced.apply(z, target, scale, multiplier, offset, shift, weight, reduction)

        return traced_fn
    if _transposed(like):
        return _transposed_composite_fn(scale, multiplier, offset, class_shift, weight, reduction)

    def fn(z: Tensor, target: Tensor) -> Tensor:
        if z.numel() <= _COMPOSITE_MAX_ELEMENTS:
            t = _affine(z, scale, multiplier, offset)
            if class_shift is not None:
                index = target.unsqueeze(1)
                t = t.scatter_add(1, index, class_shift.index_select(0, target).unsqueeze(1))
            return F.nll_loss(torch.log_softmax(t, 1), target, weight=weight, reduction=reduction)
        shift = None if class_shift is None else class_shift.index_select(0, target)
        return _AdjustedCrossEntropy.apply(z, target, scale, multiplier, offset, shift, weight, reduction)

    return fn


def _transposed_composite_fn(
    scale: float | None,
    multiplier: Tensor | None,
    offset: Tensor | None,
    class_shift: Tensor | None,
    weight: Tensor | None,
    reduction: str,
) -> AdjustedCrossEntropyFn:
    """:func:`adjusted_cross_entropy_fn` for float32 CPU logits with few classes (the ``(C, N)`` layout)."""
    multiplier_col = None if multiplier is None else multiplier.unsqueeze(1)
    offset_col = None if offset is None else offset.unsqueeze(1)
    nll_loss, log_softmax = F.nll_loss, torch.log_softmax
    if class_shift is None:
        # An op on z.t() keeps its strides; the log-softmax copies t into the (C, N) layout. One
        # function per case: these run once per training step, where every Python call shows.
        if multiplier_col is not None and offset_col is not None:

            def vs_fn(z: Tensor, target: Tensor) -> Tensor:
                t = torch.addcmul(offset_col, z.t(), multiplier_col)
                return nll_loss(log_softmax(t, 0).t(), target, weight=weight, reduction=reduction)

            return vs_fn
        if scale is None and multiplier_col is None and offset_col is not None:

            def la_fn(z: Tensor, target: Tensor) -> Tensor:
                return nll_loss(log_softmax(z.t() + offset_col, 0).t(), target, weight=weight, reduction=reduction)

            return la_fn

        def fn(z: Tensor, target: Tensor) -> Tensor:
            t = _affine(z.t(), scale, multiplier_col, offset_col)
            return nll_loss(log_softmax(t, 0).t(), target, weight=weight, reduction=reduction)

        return fn
    table = torch.diag(class_shift)  # column y is v_y onehot(y)
    if multiplier is None and offset is None:
        alpha = 1.0 if scale is None else scale

        def shifted_fn(z: Tensor, target: Tensor) -> Tensor:
            t = torch.add(table.index_select(1, target), z.t(), alpha=alpha)  # (C, N), contiguous
            return nll_loss(log_softmax(t, 0).t(), target, weight=weight, reduction=reduction)

        return shifted_fn

    def affine_shifted_fn(z: Tensor, target: Tensor) -> Tensor:
        t = _affine(z.t(), scale, multiplier_col, offset_col) + table.index_select(1, target)
        return F.nll_loss(torch.log_softmax(t, 0).t(), target, weight=weight, reduction=reduction)

    return affine_shifted_fn


def _affine(zz: Tensor, scale: float | None, multiplier: Tensor | None, offset: Tensor | None) -> Tensor:
    """``a * zz + b`` through autograd operations (``zz`` itself when there is no adjustment)."""
    if scale is not None:
        t = zz * scale
        return t if offset is None else t + offset
    if multiplier is not None:
        return zz * multiplier if offset is None else torch.addcmul(offset, zz, multiplier)
    if offset is not None:
        return zz + offset
    return zz


def cached_vector(
    cache: dict[str, tuple[Any, ...]] | None,
    key: str,
    vec: Tensor | None,
    like: Tensor,
    scale: float | None = None,
) -> Tensor | None:
    """``vec`` cast to ``like``'s dtype and device (times ``scale`` when given), cached in ``cache``.

    Loss modules keep their per-class vectors as float64 buffers; casting them for every call is a
    few small kernels that dominate small batches. The cast is reused while the buffer is the same
    tensor object at the same version (in-place changes, ``load_state_dict``, ``.to()`` and
    reassignment all invalidate it) and the dtype, device and scale match. ``cache=None`` casts, and
    so does a call in inference mode (its cast, an inference tensor, could not be saved by autograd).
    """
    if vec is None:
        return None
    if vec.is_inference() or torch.is_inference_mode_enabled():
        cache = None  # no version counter, or a cast that autograd could not save: cast every call
    if cache is not None:
        hit = cache.get(key)
        if (
            hit is not None
            and hit[0] is vec
            and hit[1] == vec._version
            and hit[2] == like.dtype
            and hit[3] == like.device
            and hit[4] == scale
        ):
            return hit[5]
    out = vec.to(device=like.device, dtype=like.dtype)
    if scale is not None:
        out = out * scale
    if cache is not None:
        cache[key] = (vec, vec._version, like.dtype, like.device, scale, out)
    return out
