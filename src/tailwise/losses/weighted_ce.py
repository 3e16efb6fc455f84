"""Class-weighted cross-entropy module, twin of :func:`tailwise.functional.weighted_cross_entropy`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor, nn

from tailwise._validation import check_class_counts, check_reduction
from tailwise.functional.ce import cross_entropy
from tailwise.functional.weighted_ce import class_weights_from_counts
from tailwise.registry import LOSSES

__all__ = ["WeightedCrossEntropyLoss"]


@LOSSES.register("weighted_ce")
class WeightedCrossEntropyLoss(nn.Module):
    r"""Cross-entropy with fixed class weights derived from the training counts.

    .. math:: \mathcal{L} = \frac{\sum_i w_{y_i}\,\mathrm{CE}(z_i, y_i)}{\sum_i w_{y_i}}, \qquad
       w_c \propto n_c^{-p} \ \text{or}\ \frac{1-\beta}{1-\beta^{n_c}}, \quad \textstyle\sum_c w_c = C.

    The weights are fixed (buffer ``class_weight``); for weights that change with the epoch use
    :class:`tailwise.losses.CrossEntropyLoss` with a weight schedule (``drw``, ``reweight``).

    Args:
        class_counts: ``(C,)`` training counts (all positive).
        scheme: ``"inverse_frequency"`` or ``"effective_number"`` (Cui et al., CVPR 2019).
        beta: effective-number :math:`\beta` (0.9999 in LDAM-DRW's "Reweight" rule).
        power: inverse-frequency exponent ``p`` (``0.5``: square root).
        reduction: ``"none" | "mean" | "sum"``.
    """

    class_weight: Tensor

    def __init__(
        self,
        class_counts: Sequence[float] | Tensor | np.ndarray,
        scheme: str = "inverse_frequency",
        beta: float = 0.9999,
        power: float = 1.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        counts = check_class_counts(class_counts)
        self.reduction = check_reduction(reduction)
        self.scheme = scheme
        self.register_buffer("class_weight", class_weights_from_counts(counts, scheme, beta, power))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Weighted cross-entropy of ``logits`` ``(N, C)`` against ``target`` ``(N,)``."""
        return cross_entropy(logits, target, self.class_weight, self.reduction)

    def extra_repr(self) -> str:
        return f"num_classes={self.class_weight.numel()}, scheme={self.scheme!r}, reduction={self.reduction!r}"
