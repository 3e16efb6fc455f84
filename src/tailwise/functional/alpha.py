r"""alpha-loss: a tunable loss between log-loss, exponential loss and the soft 0-1 loss.

Tyler Sypherd, Mario Diaz, John Kevin Cava, Gautam Dasarathy, Peter Kairouz, Lalitha Sankar,
"A Tunable Loss Function for Robust Classification: Calibration, Landscape, and Generalization",
IEEE Transactions on Information Theory 68(9), 2022 (arXiv 1906.02314).

For a predicted distribution :math:`\hat p = \mathrm{softmax}(z)` and label :math:`y`,

.. math::

    \ell^\alpha(y, \hat p) = \frac{\alpha}{\alpha - 1}\bigl(1 - \hat p_y^{\,1 - 1/\alpha}\bigr),
    \qquad \alpha \in (0, 1) \cup (1, \infty),

with the limits :math:`-\log \hat p_y` (log-loss) at :math:`\alpha = 1` and :math:`1 - \hat p_y` at
:math:`\alpha = \infty`; :math:`\alpha = 1/2` gives :math:`\hat p_y^{-1} - 1` (the exponential loss in
the binary margin form). :math:`\alpha > 1` is robust to label noise, :math:`\alpha < 1` emphasises
hard (e.g. minority-class) samples.

For integer labels (without the ``official_*`` options) the loss runs as one autograd node,
:class:`_AlphaLoss`, with the analytic gradient. With :math:`\varepsilon = 1 - 1/\alpha`,
:math:`\ell_i = -\operatorname{expm1}(\varepsilon \log\hat p_{i y_i})/\varepsilon` and :math:`c_i` the
gradient reaching :math:`\ell_i` (the upstream gradient times :math:`w_{y_i}`, divided by
:math:`\sum_k w_{y_k}`, or by :math:`N` without weights, for ``'mean'``),

.. math::

    \frac{\partial \ell_i}{\partial \log\hat p_{i y_i}} = -\hat p_{i y_i}^{\,\varepsilon},
    \qquad
    \frac{\partial L}{\partial z_{ij}} = s_i\bigl(\hat p_{ij} - [j = y_i]\bigr),
    \quad s_i = c_i\, e^{\varepsilon \log\hat p_{i y_i}},

since :math:`\partial \log\hat p_{iy}/\partial z_{ij} = [j = y] - \hat p_{ij}` (:math:`s_i = c_i` at
:math:`\alpha = 1`, :math:`s_i = c_i\hat p_{iy_i}` at :math:`\alpha = \infty`). The forward evaluates the
operations of the plain composition (``log_softmax``, ``gather``, ``expm1``, the reduction), so the
values agree with it; the backward needs one ``(N, C)`` buffer. Higher-order gradients
(``create_graph=True``) are taken through the plain composition.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tailwise._validation import check_logits_target, check_positive, check_reduction, check_weight, compiling, describe
from tailwise.functional._fused import _SMALL_C, cached_vector
from tailwise.functional._reduce import reduce_loss

__all__ = ["alpha_loss", "check_alpha"]

# The official code adds this constant to the softmax inside the log at alpha == 1.
_OFFICIAL_LOG_EPS = 1e-8

_LOW_PRECISION = (torch.float16, torch.bfloat16)

# 0-d CPU tensors of (value, dtype) used as operands by the fused kernel. A Python number operand costs
# a conversion (a small tensor, cast and copied) on every call; a 0-d tensor of the operand's dtype
# gives the same result without it.
_SCALARS: dict[tuple[float, torch.dtype], Tensor] = {}


def _scalar(value: float, dtype: torch.dtype) -> Tensor:
    """``value`` as a cached 0-d CPU tensor of ``dtype`` (never written to)."""
    key = (value, dtype)
    t = _SCALARS.get(key)
    if t is None:
        if len(_SCALARS) >= 64:
            _SCALARS.clear()
        t = _SCALARS[key] = torch.tensor(value, dtype=dtype)
    return t


def check_alpha(alpha: float) -> float:
    """Validate :math:`\\alpha \\in (0, \\infty]` and return it as a float."""
    if type(alpha) is float and 0.0 < alpha < math.inf:  # the common case, without the general checks
        return alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise TypeError(f"alpha must be a number in (0, inf]; got {describe(alpha)}")
    if float(alpha) == math.inf:
        return math.inf
    return check_positive("alpha", alpha)


def _alpha_terms(log_p: Tensor, alpha: float, official_numerics: bool) -> Tensor:
    r"""Element-wise :math:`\ell^\alpha` as a function of :math:`\log \hat p`.

    With :math:`\varepsilon = 1 - 1/\alpha = (\alpha - 1)/\alpha`,
    :math:`\ell = \frac{1}{\varepsilon}\bigl(1 - e^{\varepsilon \log \hat p}\bigr)
    = -\operatorname{expm1}(\varepsilon \log \hat p)/\varepsilon`, which stays accurate as
    :math:`\varepsilon \to 0` (:math:`\alpha \to 1`) and is bounded by :math:`1/\varepsilon` for
    :math:`\alpha > 1` however extreme the logits.
    """
    if alpha == 1.0:
        if official_numerics:
            return -torch.log(log_p.exp() + _OFFICIAL_LOG_EPS)
        return -log_p
    if alpha == math.inf:
        return -torch.expm1(log_p)
    if official_numerics:
        # The official script builds alpha and 1 as float32 tensors: alpha is rounded to float32, and the
        # exponent 1 - 1/alpha and the factor alpha/(alpha - 1) are computed in float32.
        a = np.float32(alpha)
        one = np.float32(1.0)
        exponent = float(one - one / a)
        factor = float(a / (a - one))
        return -torch.expm1(exponent * log_p) * factor
    eps = (alpha - 1.0) / alpha  # alpha - 1 is exact near 1, so eps keeps full relative precision
    return -torch.expm1(eps * log_p) / eps


def alpha_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float,
    reduction: str = "mean",
    weight: Tensor | None = None,
    official_sigmoid: bool = False,
    official_numerics: bool = False,
) -> Tensor:
    r"""alpha-loss of Sypherd et al. (IEEE TIT 2022) on logits.

    Per sample, with :math:`\log\hat p = \mathrm{log\_softmax}(z)` and
    :math:`\varepsilon = 1 - 1/\alpha`:

    .. math::

        \ell_i = \sum_k t_{ik}\,\frac{1 - \exp(\varepsilon \log \hat p_{ik})}{\varepsilon}
               = -\sum_k t_{ik}\,\frac{\operatorname{expm1}(\varepsilon \log \hat p_{ik})}{\varepsilon},

    for hard labels :math:`t_{ik} = [k = y_i]`. :math:`\alpha = 1` is exactly cross-entropy,
    :math:`\alpha = \infty` is :math:`1 - \hat p_y`. Computed from ``log_softmax``, so for
    :math:`\alpha \ge 1` the loss and its gradient stay finite for arbitrarily large logits. For
    :math:`\alpha < 1` the loss is unbounded (:math:`\alpha = 1/2` is :math:`1/\hat p_y - 1`) and
    overflows to ``inf`` once :math:`-\log\hat p_y \gtrsim 88\,|\varepsilon|^{-1}` in float32.

    Args:
        logits: ``[N, C]`` logits (half/bfloat16 are computed in float32).
        target: ``[N]`` int64 labels, or soft ``[N, C]`` probability targets.
        alpha: :math:`\alpha \in (0, \infty]` (``math.inf`` allowed).
        reduction: ``'none' | 'mean' | 'sum'``. The official code uses the batch mean.
        weight: optional per-class weights with PyTorch's semantics: hard labels use the weighted
            mean :math:`\sum_i w_{y_i}\ell_i / \sum_i w_{y_i}`; soft targets weight each class term,
            :math:`\sum_k w_k t_{ik}\ell_{ik}`, and ``'mean'`` divides by :math:`N`.
        official_sigmoid: apply ``torch.sigmoid`` to ``logits`` before the softmax, as the official
            CIFAR-10 models do (their last layer is a sigmoid, which caps :math:`\hat p_y` at
            :math:`e/(e + C - 1)`). Only for reproducing those experiments.
        official_numerics: reproduce the official script's arithmetic: :math:`\alpha` rounded to
            float32, the exponent and the factor :math:`\alpha/(\alpha-1)` computed in float32, and
            :math:`-\log(\hat p_y + 10^{-8})` at :math:`\alpha = 1`. Used by the golden tests.

    Returns:
        The reduced loss (a scalar), or the per-sample losses ``[N]`` for ``reduction='none'``.
    """
    return _alpha(logits, target, alpha, reduction, weight, official_sigmoid, official_numerics)


def _alpha(
    logits: Tensor,
    target: Tensor,
    alpha: float,
    reduction: str,
    weight: Tensor | None,
    official_sigmoid: bool = False,
    official_numerics: bool = False,
    cache: dict | None = None,
) -> Tensor:
    """:func:`alpha_loss` with an optional ``cache``: a module's weight cast to the logits' dtype.

    Integer labels without the ``official_*`` options take the fused :class:`_AlphaLoss`; soft targets,
    the official options, a ``weight`` that requires a gradient and calls traced by ``torch.compile``
    (for the compiler to fuse) take the plain composition.
    """
    soft = check_logits_target(logits, target, allow_soft=True)
    check_reduction(reduction)
    alpha = check_alpha(alpha)
    weight = check_weight(weight, logits.shape[1])
    z = logits.float() if logits.dtype in _LOW_PRECISION else logits
    w = None if weight is None else cached_vector(cache, "weight", weight, z)
    if soft or official_sigmoid or official_numerics or (w is not None and w.requires_grad) or compiling():
        return _alpha_composition(z, target, soft, alpha, reduction, w, official_sigmoid, official_numerics)
    return _AlphaLoss.apply(z, target if target.dtype == torch.int64 else target.long(), alpha, reduction, w)


def _alpha_composition(
    z: Tensor,
    target: Tensor,
    soft: bool,
    alpha: float,
    reduction: str,
    weight: Tensor | None,
    official_sigmoid: bool = False,
    official_numerics: bool = False,
) -> Tensor:
    """:func:`alpha_loss` of compute logits ``z`` through plain autograd operations.

    ``weight`` is already cast to ``z``'s dtype and device (or ``None``).
    """
    if official_sigmoid:
        z = torch.sigmoid(z)
    log_p = F.log_softmax(z, dim=1)
    if soft:
        t = target.to(log_p.dtype)
        if weight is not None:
            t = t * weight
        per_sample = (t * _alpha_terms(log_p, alpha, official_numerics)).sum(dim=1)
        return reduce_loss(per_sample, reduction)
    target = target.long()
    log_p_y = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
    per_sample = _alpha_terms(log_p_y, alpha, official_numerics)
    sample_weight = None if weight is None else weight[target]
    return reduce_loss(per_sample, reduction, sample_weight)


class _AlphaLoss(torch.autograd.Function):
    r"""Fused alpha-loss of integer labels with the analytic gradient (see the module docstring).

    Forward: :math:`\log\hat p = \mathrm{log\_softmax}(z)`, :math:`x_i = \varepsilon\log\hat p_{iy_i}`,
    :math:`\ell_i = -\operatorname{expm1}(x_i)/\varepsilon` (:math:`-\log\hat p_{iy_i}` at
    :math:`\alpha = 1`), reduced as :func:`tailwise.functional._reduce.reduce_loss` does. It keeps the
    log-softmax and the vector :math:`x` for the backward, which builds
    :math:`s_i(\hat p_{ij} - [j = y_i])` with :math:`s_i = c_i e^{x_i}` in one ``(N, C)`` buffer.

    For few classes in float32 on CPU the log-softmax is computed and kept transposed, ``(C, N)``
    (see :func:`tailwise.functional._fused.log_softmax_rows`), and so is the gradient, which is returned
    as an ``(N, C)`` view of its ``(C, N)`` buffer. :math:`x` and the sample weights :math:`w_{y_i}` keep
    the shape of the gather index, ``(1, N)`` or ``(N, 1)``, so that they broadcast along the classes of
    that buffer; only ``reduction='none'`` returns ``(N,)`` losses (fresh tensors, not views). The ``weight``
    gets no gradient (:func:`_alpha` takes the plain composition for a weight that requires one).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, z: Tensor, target: Tensor, alpha: float, reduction: str, weight: Tensor | None
    ) -> Tensor:
        # dim: the class dimension of buf, the log-softmax kept for the backward; (C, N) when transposed
        # (the test of tailwise.functional._fused._transposed, without building a torch.device)
        dim = 0 if z.shape[1] < _SMALL_C and z.dtype == torch.float32 and z.is_cpu else 1
        buf = torch.log_softmax(z.t() if dim == 0 else z, dim)
        index = target.unsqueeze(dim)
        x = buf.gather(dim, index)  # log p_y, shaped like index; a fresh tensor, free to overwrite
        none = reduction == "none"
        v = x.view(-1) if none else x  # 'none' returns (N,) losses, computed from this view: fresh tensors
        if alpha == 1.0:
            per_sample = v.neg()
            x = None
        elif alpha == math.inf:
            per_sample = torch.expm1(v).neg_()
        else:
            eps = (alpha - 1.0) / alpha
            x.mul_(_scalar(eps, x.dtype))
            per_sample = torch.expm1(v).div_(_scalar(-eps, x.dtype))  # == -expm1(x) / eps, bit for bit
        sample_weight = None
        if weight is not None:
            sample_weight = torch.take(weight, index)  # w_{y_i}, shaped like index
            per_sample.mul_(sample_weight.view(-1) if none else sample_weight)
        ctx.save_for_backward(z, buf, index, x, weight, sample_weight)
        ctx.options = (alpha, reduction, dim)
        if none:
            return per_sample
        if reduction == "sum":
            return per_sample.sum()
        if sample_weight is not None:
            return per_sample.sum() / sample_weight.sum()
        if not z.is_cpu:
            return per_sample.mean()
        # on CPU, Tensor.mean is this sum and division (with a Python count to convert)
        return per_sample.sum().div_(_scalar(float(z.shape[0]), buf.dtype))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        z, buf, index, x, weight, sample_weight = ctx.saved_tensors
        nones = (None,) * 4
        if not ctx.needs_input_grad[0]:
            return (None, *nones)
        alpha, reduction, dim = ctx.options
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain composition
            with torch.enable_grad():
                target = index.squeeze(dim)
                loss = _alpha_composition(z, target, False, alpha, reduction, weight)
                (grad_z,) = torch.autograd.grad(loss, z, grad, create_graph=True)
            return (grad_z, *nones)
        # c_i (the gradient reaching l_i), then s_i = c_i exp(x_i) (s_i = c_i at alpha = 1)
        if reduction == "none":
            coef = grad.unsqueeze(dim) if sample_weight is None else grad.unsqueeze(dim) * sample_weight
        elif sample_weight is None:
            coef = grad / _scalar(float(z.shape[0]), grad.dtype) if reduction == "mean" else grad
        else:
            coef = grad * sample_weight
            if reduction == "mean":
                coef = coef / sample_weight.sum()
        if x is not None:
            coef = torch.exp(x).mul_(coef)
        grad_z = torch.exp(buf)  # the softmax, laid out as buf
        grad_z.mul_(coef)
        neg = coef.neg()
        grad_z.scatter_add_(dim, index, neg if neg.dim() else neg.expand(index.shape))
        return (grad_z.t() if dim == 0 else grad_z, *nones)
