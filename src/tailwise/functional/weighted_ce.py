r"""Class-weighted cross-entropy: fixed per-class weights derived from the training counts.

Two weighting schemes, both rescaled so that :math:`\sum_c w_c = C`:

- ``"inverse_frequency"``: :math:`w_c \propto n_c^{-p}` (``p = 1`` plain, ``p = 0.5`` square root);
- ``"effective_number"``: :math:`w_c \propto (1-\beta)/(1-\beta^{n_c})` (Cui et al., CVPR 2019),
  the "CB RW" / "Reweight" rule of the LDAM-DRW code with :math:`\beta = 0.9999`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from tailwise._validation import check_class_counts, check_in_choices, check_logits_target
from tailwise.class_counts import effective_number_weights, inverse_frequency_weights
from tailwise.functional.ce import cross_entropy

__all__ = ["WEIGHTING_SCHEMES", "class_weights_from_counts", "weighted_cross_entropy"]

WEIGHTING_SCHEMES = ("inverse_frequency", "effective_number")

CountsLike = Sequence[float] | Tensor | np.ndarray


def class_weights_from_counts(
    class_counts: CountsLike,
    scheme: str = "inverse_frequency",
    beta: float = 0.9999,
    power: float = 1.0,
) -> Tensor:
    r"""Per-class weights from training counts, rescaled to sum ``C`` (float64).

    Args:
        class_counts: per-class training counts (all positive).
        scheme: ``"inverse_frequency"`` (:math:`n_c^{-p}`) or ``"effective_number"``
            (:math:`(1-\beta)/(1-\beta^{n_c})`).
        beta: effective-number hyper-parameter in ``[0, 1)`` (ignored by inverse frequency).
        power: inverse-frequency exponent ``p >= 0`` (ignored by the effective number).

    Returns:
        float64 tensor of shape ``(C,)`` summing to ``C``.
    """
    check_in_choices("scheme", scheme, WEIGHTING_SCHEMES)
    if scheme == "effective_number":
        return effective_number_weights(class_counts, beta)
    return inverse_frequency_weights(class_counts, power)


def weighted_cross_entropy(
    logits: Tensor,
    target: Tensor,
    class_counts: CountsLike,
    scheme: str = "inverse_frequency",
    beta: float = 0.9999,
    power: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Cross-entropy with class weights from :func:`class_weights_from_counts`.

    .. math:: \mathcal{L} = \frac{\sum_i w_{y_i}\, \mathrm{CE}(z_i, y_i)}{\sum_i w_{y_i}}
       \quad(\text{``mean''})

    Args:
        logits: ``(N, C)`` scores.
        target: ``(N,)`` int64 labels.
        class_counts: ``(C,)`` training counts.
        scheme: ``"inverse_frequency"`` or ``"effective_number"``.
        beta: effective-number :math:`\beta`.
        power: inverse-frequency exponent.
        reduction: ``"none" | "mean" | "sum"`` (PyTorch weighted-mean semantics).

    Returns:
        The reduced loss.
    """
    check_logits_target(logits, target)
    counts = check_class_counts(class_counts, num_classes=logits.shape[1])
    weight = class_weights_from_counts(counts, scheme, beta, power)
    return cross_entropy(logits, target, weight=weight, reduction=reduction)
