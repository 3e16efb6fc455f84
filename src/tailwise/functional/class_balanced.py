r"""Class-balanced loss (Cui, Jia, Lin, Song, Belongie; CVPR 2019, arXiv 1901.05555).

Each class is weighted by the inverse of its *effective number of samples*
:math:`E_{n_c} = (1 - \beta^{n_c}) / (1 - \beta)`:

.. math:: w_c = \frac{1 - \beta}{1 - \beta^{n_c}}, \qquad w \leftarrow C\, w / \textstyle\sum_k w_k,

and the weights enter a softmax cross-entropy (``loss_type="ce"``, the "CB RW" baseline of LDAM-DRW)
or a softmax focal loss (``loss_type="focal"``, "CB Focal"). ``beta = 0`` gives the unweighted loss;
``beta -> 1`` approaches inverse-frequency weighting.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from tailwise._validation import check_class_counts, check_in_choices, check_logits_target
from tailwise.class_counts import effective_number_weights
from tailwise.functional._prepared import PreparedLosses
from tailwise.functional.ce import cross_entropy
from tailwise.functional.focal import _focal

__all__ = ["CB_LOSS_TYPES", "class_balanced_loss"]

CB_LOSS_TYPES = ("ce", "focal")

_PREPARED = PreparedLosses()  # the functional API's losses with their effective-number weights
_FOCAL_PREPARED = PreparedLosses()  # its focal losses with those weights


def class_balanced_loss(
    logits: Tensor,
    target: Tensor,
    class_counts: Sequence[float] | Tensor | np.ndarray,
    beta: float = 0.9999,
    loss_type: str = "ce",
    gamma: float = 2.0,
    reduction: str = "mean",
    focal_variant: str = "standard",
) -> Tensor:
    r"""Class-balanced (effective-number weighted) cross-entropy or focal loss.

    Args:
        logits: ``(N, C)`` scores.
        target: ``(N,)`` int64 labels.
        class_counts: ``(C,)`` training counts (all positive).
        beta: :math:`\beta \in [0, 1)`; Cui et al. and LDAM-DRW use 0.9999 on CIFAR-LT.
        loss_type: ``"ce"`` or ``"focal"``.
        gamma: focal :math:`\gamma` (``loss_type="focal"`` only).
        reduction: ``"none" | "mean" | "sum"``; ``"mean"`` is the weighted mean (see
            :func:`tailwise.functional.focal_loss` for the ``"ldam_repo"`` focal variant's plain mean).
        focal_variant: ``"standard"`` or ``"ldam_repo"`` (see :func:`tailwise.functional.focal_loss`).

    Returns:
        The reduced loss.
    """
    key = _PREPARED.key("class_balanced", logits, class_counts, beta, loss_type, gamma, reduction, focal_variant)
    fn = _PREPARED.get(key)
    check_logits_target(logits, target, label_range=False, finite=False)  # types, shapes; the base loss checks values
    if fn is None:
        check_in_choices("loss_type", loss_type, CB_LOSS_TYPES)
        counts = check_class_counts(class_counts, num_classes=logits.shape[1])
        weight = effective_number_weights(counts, beta)

        def fn(logits: Tensor, target: Tensor) -> Tensor:
            return _weighted_base_loss(logits, target, weight, loss_type, gamma, reduction, focal_variant)

        _PREPARED.put(key, fn, (class_counts,))
    return fn(logits, target)


def _weighted_base_loss(
    logits: Tensor,
    target: Tensor,
    weight: Tensor,
    loss_type: str,
    gamma: float,
    reduction: str,
    focal_variant: str,
    prepared: PreparedLosses | None = None,
) -> Tensor:
    """The class-weighted base loss of the class-balanced loss: focal (``loss_type="focal"``) or cross-entropy.

    ``prepared`` holds the prepared focal loss (a module's own cache; the functional API's by default).
    """
    if loss_type == "focal":
        cache = _FOCAL_PREPARED if prepared is None else prepared
        return _focal(logits, target, gamma, weight, reduction, focal_variant, cache)
    return cross_entropy(logits, target, weight=weight, reduction=reduction)
