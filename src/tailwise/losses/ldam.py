"""LDAM loss module (Cao et al., NeurIPS 2019), twin of :func:`tailwise.functional.ldam_loss`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from tailwise._validation import (
    check_class_counts,
    check_logits_target,
    check_positive,
    check_reduction,
    check_weight,
    validation_enabled,
)
from tailwise.functional.ldam import _ldam_checked, ldam_margins
from tailwise.losses._weighted import ClassWeightedLoss
from tailwise.registry import LOSSES

__all__ = ["LDAMLoss"]


@LOSSES.register("ldam")
class LDAMLoss(ClassWeightedLoss):
    r"""Label-distribution-aware margin loss.

    .. math:: \ell_i = \mathrm{CE}\big(s\,(z_i - \Delta_{y_i}\,\mathrm{onehot}(y_i)),\, y_i\big), \qquad
       \Delta_c = m_{\max}\,(n_{\min}/n_c)^{1/4}

    The margins are a buffer (``margins``, float64) computed once from ``class_counts``. LDAM-DRW pairs
    this loss with the cosine head :class:`tailwise.models.NormedLinear` and with the deferred
    re-weighting schedule :class:`tailwise.schedules.DeferredReweighting`, whose per-epoch weights arrive
    through :meth:`set_weight`.

    Args:
        class_counts: ``(C,)`` training counts; a zero count is an error (its margin would be infinite).
        max_margin: margin of the rarest class (0.5 in the official code).
        scale: :math:`s`, multiplying all logits after the margin (30 in the official code).
        weight: optional ``(C,)`` class weights (weighted-mean reduction, as the official code).
        reduction: ``"none" | "mean" | "sum"``.

    Example:
        >>> import torch
        >>> loss = LDAMLoss([5000, 500, 50])
        >>> value = loss(torch.rand(4, 3) * 2 - 1, torch.tensor([0, 1, 2, 2]))
    """

    class_counts: Tensor
    margins: Tensor

    def __init__(
        self,
        class_counts: Sequence[float] | Tensor | np.ndarray,
        max_margin: float = 0.5,
        scale: float = 30.0,
        weight: Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
    ) -> None:
        counts = check_class_counts(class_counts)
        margins = ldam_margins(counts, max_margin)
        super().__init__(counts.numel(), None, reduction)
        self.max_margin = float(max_margin)
        self.scale = check_positive("scale", scale)
        self.register_buffer("class_counts", counts)
        self.register_buffer("margins", margins)
        self.set_weight(weight)
        self._cache: dict = {}  # per-class vectors cast to the logits' dtype (see cached_vector)
        self._margins_checked: tuple | None = None

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """LDAM loss of ``logits`` ``(N, C)`` against ``target`` ``(N,)``."""
        self._check_num_classes(logits)
        # ldam_loss(logits, target, margins=self.margins, scale=self.scale, weight=self.weight, ...)
        # with the same checks in the same order; the margins buffer is value-checked once per change.
        check_logits_target(logits, target)
        check_reduction(self.reduction)
        num_classes = logits.shape[1]
        margins = self._checked_margins(num_classes)
        scale = check_positive("scale", self.scale)
        weight = check_weight(self.weight, num_classes)
        return _ldam_checked(logits, target, margins, scale, weight, self.reduction, self._cache)

    def _checked_margins(self, num_classes: int) -> Tensor:
        """The ``margins`` buffer after ``check_weight(margins, C, name="margins")``.

        The check is repeated only when the buffer changed (another tensor or an in-place write) or when
        value checks were off at the last check and are on now.
        """
        margins = self.margins
        state = (margins._version, num_classes)
        seen = self._margins_checked
        if seen is None or seen[0] is not margins or seen[1] != state or (not seen[2] and validation_enabled()):
            check_weight(margins, num_classes, name="margins")
            self._margins_checked = (margins, state, validation_enabled())
        return margins

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, max_margin={self.max_margin}, scale={self.scale}, " + super().extra_repr()
