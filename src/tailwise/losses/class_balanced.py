"""Class-balanced loss module, twin of :func:`tailwise.functional.class_balanced_loss`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor, nn

from tailwise._validation import check_class_counts, check_in_choices, check_positive, check_reduction
from tailwise.class_counts import effective_number_weights
from tailwise.functional._prepared import PreparedLosses
from tailwise.functional.class_balanced import CB_LOSS_TYPES, _weighted_base_loss
from tailwise.functional.focal import FOCAL_VARIANTS
from tailwise.registry import LOSSES

__all__ = ["ClassBalancedLoss"]


@LOSSES.register("class_balanced")
class ClassBalancedLoss(nn.Module):
    r"""Class-balanced loss (Cui et al., CVPR 2019): effective-number weights on CE or focal.

    .. math:: w_c = \frac{1-\beta}{1-\beta^{n_c}}, \quad w \leftarrow C\,w/\textstyle\sum_k w_k

    The weights are fixed at construction (buffer ``class_weight``).

    Args:
        class_counts: ``(C,)`` training counts (all positive).
        beta: :math:`\beta \in [0, 1)` (0.9999 on CIFAR-LT).
        loss_type: ``"ce"`` ("CB RW") or ``"focal"`` ("CB Focal").
        gamma: focal :math:`\gamma`.
        reduction: ``"none" | "mean" | "sum"``.
        focal_variant: ``"standard"`` or ``"ldam_repo"`` (see :func:`tailwise.functional.focal_loss`).
    """

    class_weight: Tensor

    def __init__(
        self,
        class_counts: Sequence[float] | Tensor | np.ndarray,
        beta: float = 0.9999,
        loss_type: str = "ce",
        gamma: float = 2.0,
        reduction: str = "mean",
        focal_variant: str = "standard",
    ) -> None:
        super().__init__()
        counts = check_class_counts(class_counts)
        self.beta = float(beta)
        self.loss_type = check_in_choices("loss_type", loss_type, CB_LOSS_TYPES)
        self.gamma = check_positive("gamma", gamma, allow_zero=True)
        self.reduction = check_reduction(reduction)
        self.focal_variant = check_in_choices("focal_variant", focal_variant, FOCAL_VARIANTS)
        self.register_buffer("class_weight", effective_number_weights(counts, beta))
        self._prepared = PreparedLosses(maxsize=1)  # the focal loss prepared with the current weights

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Class-balanced loss of ``logits`` ``(N, C)`` against ``target`` ``(N,)``."""
        return _weighted_base_loss(
            logits, target, self.class_weight, self.loss_type, self.gamma, self.reduction, self.focal_variant, self._prepared
        )

    def extra_repr(self) -> str:
        return f"beta={self.beta}, loss_type={self.loss_type!r}, gamma={self.gamma}, reduction={self.reduction!r}"
