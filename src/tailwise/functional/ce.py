r"""Cross-entropy, the baseline every long-tail loss is compared with.

.. math:: \ell(z, y) = -\log \frac{e^{z_y}}{\sum_c e^{z_c}}

A thin, validated wrapper over :func:`torch.nn.functional.cross_entropy` that keeps PyTorch's
semantics exactly (class ``weight`` with the weighted mean :math:`\sum_i w_{y_i}\ell_i/\sum_i w_{y_i}`,
soft targets, label smoothing) and computes in float32 when the logits are half or bfloat16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tailwise._validation import (
    check_logits_target,
    check_probability,
    check_reduction,
    check_weight,
    validation_enabled,
)
from tailwise.functional._fused import _transposed

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
    check_logits_target(logits, target, allow_soft=True)
    check_reduction(reduction)
    weight = check_weight(weight, logits.shape[1])
    eps = check_probability("label_smoothing", label_smoothing)
    z = _compute_logits(logits)
    if target.is_floating_point():
        target = target.to(z.dtype)
    else:
        target = target.long()
        if _transposed(z) and (eps == 0.0 or validation_enabled()):
            return _few_classes_cross_entropy(z, target, _vector_like(weight, z), reduction, eps)
    return F.cross_entropy(z, target, weight=_vector_like(weight, z), reduction=reduction, label_smoothing=eps)


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
