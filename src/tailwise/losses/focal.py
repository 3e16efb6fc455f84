"""Focal loss module, twin of :func:`tailwise.functional.focal_loss`."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from tailwise._validation import check_in_choices, check_positive
from tailwise.functional.focal import FOCAL_VARIANTS, _focal
from tailwise.losses._weighted import ClassWeightedLoss
from tailwise.registry import LOSSES

__all__ = ["FocalLoss"]


@LOSSES.register("focal")
class FocalLoss(ClassWeightedLoss):
    r"""Softmax focal loss (Lin et al., ICCV 2017): :math:`-(1-p_y)^{\gamma}\log p_y`.

    ``variant="ldam_repo"`` reproduces the ``FocalLoss`` of the LDAM-DRW code (focal factor from the
    weighted CE :math:`e^{-w_y \mathrm{CE}}`, plain mean over the batch); see
    :func:`tailwise.functional.focal_loss`.

    Args:
        gamma: focusing parameter :math:`\gamma \ge 0` (2 in Lin et al.; 1 in the LDAM-DRW script).
        weight: optional ``(C,)`` class weights (settable per epoch with ``set_weight``).
        reduction: ``"none" | "mean" | "sum"``.
        variant: ``"standard"`` or ``"ldam_repo"``.
        num_classes: number of classes, used to check weights given through ``set_weight``.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        weight: Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
        variant: str = "standard",
        num_classes: int | None = None,
    ) -> None:
        super().__init__(num_classes, weight, reduction)
        self.gamma = check_positive("gamma", gamma, allow_zero=True)
        self.variant = check_in_choices("variant", variant, FOCAL_VARIANTS)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Focal loss of ``logits`` ``(N, C)`` against ``target`` ``(N,)``."""
        return _focal(logits, target, self.gamma, self.weight, self.reduction, self.variant, self._prepared)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, variant={self.variant!r}, " + super().extra_repr()
