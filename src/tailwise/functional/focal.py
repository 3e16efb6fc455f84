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

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tailwise._validation import (
    check_in_choices,
    check_logits_target,
    check_positive,
    check_reduction,
    check_weight,
)
from tailwise.functional._fused import log_softmax_rows
from tailwise.functional._reduce import reduce_loss
from tailwise.functional.ce import _compute_logits, _vector_like

__all__ = ["FOCAL_VARIANTS", "focal_loss"]

FOCAL_VARIANTS = ("standard", "ldam_repo")


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
    check_logits_target(logits, target)
    check_reduction(reduction)
    check_in_choices("variant", variant, FOCAL_VARIANTS)
    gamma = check_positive("gamma", gamma, allow_zero=True)
    weight = check_weight(weight, logits.shape[1])
    z = _compute_logits(logits)
    target = target.long()
    w = _vector_like(weight, z)
    if variant == "ldam_repo":
        weighted_ce = F.nll_loss(log_softmax_rows(z), target, weight=w, reduction="none")
        per_sample = _focal_factor(-weighted_ce, gamma) * weighted_ce
        return reduce_loss(per_sample, reduction)
    log_p = log_softmax_rows(z).gather(1, target[:, None]).squeeze(1)
    per_sample = -_focal_factor(log_p, gamma) * log_p
    return reduce_loss(per_sample, reduction, None if w is None else w[target])
