"""Label-smoothing module, twin of :func:`tailwise.functional.label_smoothing_loss`."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from tailwise._validation import check_probability
from tailwise.functional.label_smoothing import label_smoothing_loss
from tailwise.losses._weighted import ClassWeightedLoss
from tailwise.registry import LOSSES

__all__ = ["LabelSmoothingLoss"]


@LOSSES.register("label_smoothing")
class LabelSmoothingLoss(ClassWeightedLoss):
    r"""Cross-entropy against :math:`(1-\epsilon)\,\mathrm{onehot}(y) + \epsilon/C` (Szegedy et al., 2016).

    Args:
        smoothing: :math:`\epsilon \in [0, 1]`.
        weight: optional ``(C,)`` class weights (settable per epoch with ``set_weight``).
        reduction: ``"none" | "mean" | "sum"``.
        num_classes: number of classes, used to check weights given through ``set_weight``.
    """

    def __init__(
        self,
        smoothing: float = 0.1,
        weight: Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
        num_classes: int | None = None,
    ) -> None:
        super().__init__(num_classes, weight, reduction)
        self.smoothing = check_probability("smoothing", smoothing)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Smoothed cross-entropy of ``logits`` ``(N, C)`` against ``target`` ``(N,)``."""
        return label_smoothing_loss(logits, target, self.smoothing, self.weight, self.reduction)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}, " + super().extra_repr()
