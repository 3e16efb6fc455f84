r"""LDAM loss: label-distribution-aware margins (Cao, Wei, Gaidon, Arechiga, Ma; NeurIPS 2019,
arXiv 1906.07413).

Each class gets a margin that shrinks with its training count,

.. math:: \Delta_c = \frac{C_m}{n_c^{1/4}}, \qquad C_m \text{ chosen so that } \max_c \Delta_c = m_{\max},

i.e. :math:`\Delta_c = m_{\max}\,(n_{\min}/n_c)^{1/4}`, and the margin of the true class is subtracted
from its logit before a scaled softmax cross-entropy:

.. math:: z'_{ij} = z_{ij} - \Delta_{y_i}[j = y_i], \qquad \ell_i = \mathrm{CE}(s\, z'_i, y_i).

With class weights the ``"mean"`` reduction is the weighted mean :math:`\sum_i w_{y_i}\ell_i /
\sum_i w_{y_i}` (``F.cross_entropy(..., weight=w)``), exactly as the official ``LDAMLoss`` (kaidic/LDAM-DRW,
``losses.py``). The logits are usually cosines from :class:`tailwise.models.NormedLinear`, hence the
scale :math:`s` (30 in the official code).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import (
    check_class_counts,
    check_logits_target,
    check_positive,
    check_reduction,
    check_weight,
    describe,
)
from tailwise.functional._fused import AdjustedCrossEntropyFn, adjusted_cross_entropy_fn
from tailwise.functional._prepared import PreparedLosses
from tailwise.functional.ce import _compute_logits

__all__ = ["ldam_loss", "ldam_margins"]

CountsLike = Sequence[float] | Tensor | np.ndarray

# prepared losses of repeated calls with the same tensor arguments (see tailwise.functional._prepared)
_PREPARED = PreparedLosses()


def ldam_margins(class_counts: CountsLike, max_margin: float = 0.5) -> Tensor:
    r"""Per-class LDAM margins :math:`\Delta_c = m_{\max}\, n_c^{-1/4} / \max_k n_k^{-1/4}` (float64).

    Args:
        class_counts: ``(C,)`` training counts; every class must have at least one sample (a zero count
            would give an infinite margin).
        max_margin: the margin :math:`m_{\max} \ge 0` of the rarest class (0.5 in the official code).

    Returns:
        float64 tensor of shape ``(C,)``; for CIFAR-10-LT (rho 100) ``[0.158, ..., 0.5]``.

    Raises:
        ValueError: zero, negative or non-finite counts, or a negative ``max_margin``.
    """
    counts = check_class_counts(class_counts)
    return _margins_from_counts(counts, check_positive("max_margin", max_margin, allow_zero=True))


def _margins_from_counts(counts: Tensor, max_margin: float) -> Tensor:
    """:func:`ldam_margins` of already validated float64 counts and ``max_margin``."""
    inv_quartic_root = torch.sqrt(counts).sqrt_().reciprocal_()  # 1 / n^(1/4), as 1.0 / sqrt(sqrt(n))
    return inv_quartic_root.mul_(inv_quartic_root.max().reciprocal_().mul_(max_margin))


def ldam_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike | None = None,
    *,
    margins: Tensor | Sequence[float] | None = None,
    max_margin: float = 0.5,
    scale: float = 30.0,
    weight: Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""LDAM loss :math:`\mathrm{CE}(s\,(z - \Delta_{y}\,\mathrm{onehot}(y)),\, y)`.

    Give either ``class_counts`` (margins from :func:`ldam_margins` with ``max_margin``) or precomputed
    ``margins``.

    Args:
        logits: ``(N, C)`` scores (cosines in ``[-1, 1]`` with the official cosine head).
        target: ``(N,)`` int64 labels.
        class_counts: ``(C,)`` training counts.
        margins: ``(C,)`` per-class margins, instead of ``class_counts``.
        max_margin: :math:`m_{\max}` (used with ``class_counts``).
        scale: :math:`s > 0` multiplying all logits after the margin (30 in the official code).
        weight: optional ``(C,)`` class weights (e.g. the DRW weights).
        reduction: ``"none" | "mean" | "sum"``; ``"mean"`` with weights is the weighted mean.

    Returns:
        The reduced loss (float32 for half/bfloat16 logits).

    Raises:
        ValueError: both or neither of ``class_counts`` / ``margins``; counts or margins of the wrong
            length; zero counts; bad logits, labels, ``scale`` or ``reduction``.
    """
    key = _PREPARED.key("ldam", logits, class_counts, margins, max_margin, scale, weight, reduction)
    fn = _PREPARED.get(key)
    check_logits_target(logits, target)
    if fn is not None:  # the same arguments as an earlier call: only the logits and labels are new
        z = _compute_logits(logits)
        return fn(z, target.long())
    check_reduction(reduction)
    num_classes = logits.shape[1]
    if (class_counts is None) == (margins is None):
        raise ValueError(
            "ldam_loss needs exactly one of class_counts or margins; got "
            f"class_counts={describe(class_counts)} and margins={describe(margins)}"
        )
    if margins is None:
        counts = check_class_counts(class_counts, num_classes=num_classes)
        margins = _margins_from_counts(counts, check_positive("max_margin", max_margin, allow_zero=True))
    else:
        margins = check_weight(margins, num_classes, name="margins")
    checked_scale = check_positive("scale", scale)
    checked_weight = check_weight(weight, num_classes)
    z = _compute_logits(logits)
    fn = ldam_fn(z, margins, checked_scale, checked_weight, reduction)
    _PREPARED.put(key, fn, (class_counts, margins, weight))
    return fn(z, target.long())


def ldam_fn(z: Tensor, margins: Tensor, scale: float, weight: Tensor | None, reduction: str) -> AdjustedCrossEntropyFn:
    r"""LDAM as a prepared ``fn(z, target)`` for compute logits like ``z`` (validated arguments).

    :math:`\mathrm{CE}(s\,z - s\,\Delta_y\,\mathrm{onehot}(y), y)`: the shifts :math:`-s\,\Delta_c` are
    cast to the compute dtype first, then scaled, as :math:`s\,z` is.
    """
    shift = margins.to(device=z.device, dtype=z.dtype) * -scale
    weight_z = None if weight is None else weight.to(device=z.device, dtype=z.dtype)
    return adjusted_cross_entropy_fn(z, scale=scale, class_shift=shift, weight=weight_z, reduction=reduction)
