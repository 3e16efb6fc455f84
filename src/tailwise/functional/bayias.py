r"""Bayias-compensated cross-entropy (Xu, Chai, Yuan; NeurIPS 2021, arXiv 2111.03874, "Towards
Calibrated Model for Long-Tailed Visual Recognition from Prior Perspective").

The training prior :math:`\pi^{\text{train}}_c = n_c/\sum_k n_k` biases the softmax; the loss compensates
by shifting the logits with the log ratio of the training and the target (inference) priors:

.. math:: \ell(z, y) = \mathrm{CE}\big(z + \log \pi^{\text{train}} - \log \pi^{\text{target}},\, y\big).

With a uniform target prior (the official ``train.py``) the second log is a constant and the loss is
the logit-adjusted loss with :math:`\tau = 1`. Only the training loss is adjusted; predictions use the
raw logits. The official ``Bayias_compensated_loss`` (XuZhengzhuo/Prior-LT, ``core.py``) returns
per-sample values and the loop takes their plain mean, which is ``reduction="mean"`` here when no
class weight is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import check_class_counts, check_logits_target
from tailwise.functional._prepared import PreparedLosses
from tailwise.functional.ce import _compute_logits
from tailwise.functional.vs import _log_priors, affine_fn

__all__ = ["bayias_loss", "bayias_offset"]

CountsLike = Sequence[float] | Tensor | np.ndarray

# prepared losses of repeated calls with the same tensor arguments (see tailwise.functional._prepared)
_PREPARED = PreparedLosses()


def bayias_offset(class_counts: CountsLike, target_prior: CountsLike | None = None) -> Tensor:
    r"""The logit offset :math:`\log \pi^{\text{train}} - \log \pi^{\text{target}}` (float64).

    Args:
        class_counts: ``(C,)`` training counts (all positive).
        target_prior: ``(C,)`` target (inference) label distribution, as probabilities or unnormalised
            counts (it is normalised to sum 1); ``None`` means uniform. Entries must be positive.

    Returns:
        float64 tensor of shape ``(C,)``.
    """
    counts = check_class_counts(class_counts)
    return _offset_from_counts(counts, target_prior)


def _offset_from_counts(counts: Tensor, target_prior: CountsLike | None) -> Tensor:
    """:func:`bayias_offset` of already validated float64 counts (the target prior is checked here)."""
    offset = _log_priors(counts)
    if target_prior is not None:
        q = check_class_counts(target_prior, name="target_prior", num_classes=counts.numel())
        offset = offset - torch.log(q / q.sum())
    else:
        offset = offset.add_(float(np.log(counts.numel())))
    return offset


def bayias_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    target_prior: CountsLike | None = None,
    weight: Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Bayias-compensated loss :math:`\mathrm{CE}(z + \log\pi^{\text{train}} - \log\pi^{\text{target}}, y)`.

    Args:
        logits: ``(N, C)`` scores.
        target: ``(N,)`` int64 labels.
        class_counts: ``(C,)`` training counts.
        target_prior: ``(C,)`` target label distribution (``None``: uniform, as in the official script).
        weight: optional ``(C,)`` class weights (PyTorch semantics).
        reduction: ``"none" | "mean" | "sum"``.

    Returns:
        The reduced loss (float32 for half/bfloat16 logits).
    """
    key = _PREPARED.key("bayias", logits, class_counts, target_prior, weight, reduction)
    fn = _PREPARED.get(key)
    check_logits_target(logits, target)
    z = _compute_logits(logits)
    if fn is None:
        counts = check_class_counts(class_counts, num_classes=logits.shape[1])
        offset = _offset_from_counts(counts, target_prior)
        fn = affine_fn(z, None, offset, weight, reduction)
        _PREPARED.put(key, fn, (class_counts, target_prior, weight))
    return fn(z, target.long())
