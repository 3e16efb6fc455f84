"""LDAM loss module (Cao et al., NeurIPS 2019), twin of :func:`tailwise.functional.ldam_loss`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import (
    check_class_counts,
    check_logits_target,
    check_positive,
    check_reduction,
    check_weight,
    checked_by_computation,
)
from tailwise.functional._fused import AdjustedCrossEntropyFn
from tailwise.functional._prepared import PreparedLosses
from tailwise.functional.ce import _LOW_PRECISION
from tailwise.functional.ldam import ldam_fn, ldam_margins
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

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """LDAM loss of ``logits`` ``(N, C)`` against ``target`` ``(N,)``."""
        n = self.num_classes
        if n is not None and isinstance(logits, Tensor) and logits.ndim == 2 and logits.shape[1] != n:
            self._check_num_classes(logits)
        # ldam_loss(logits, target, margins=self.margins, scale=self.scale, weight=self.weight, ...) with
        # the same checks; those of the module's own state run when it changes. On the CPU, the
        # labels' range is checked by the computation itself: every path first indexes the shifts by
        # the labels (index_select raises outside [0, C)), and checked_by_computation turns that
        # into the range message. Elsewhere an out-of-range index is a device-side assert, so the labels
        # are checked first.
        on_cpu = isinstance(logits, Tensor) and logits.is_cpu
        check_logits_target(logits, target, label_range=not on_cpu)
        z = logits.float() if logits.dtype in _LOW_PRECISION else logits
        buffers = self._buffers
        margins, weight, scale, reduction = buffers["margins"], buffers["weight"], self.scale, self.reduction
        key = PreparedLosses.key("ldam", z, margins, weight, scale, reduction)
        fn = self._prepared.get(key)
        if fn is None:
            fn = _checked_fn(z, margins, weight, scale, reduction)
            self._prepared.put(key, fn, (margins, weight))
        labels = target if target.dtype == torch.int64 else target.long()
        if not on_cpu:
            return fn(z, labels)
        return checked_by_computation(fn, z, labels, logits, finite=False)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, max_margin={self.max_margin}, scale={self.scale}, " + super().extra_repr()


def _checked_fn(
    z: Tensor, margins: Tensor, weight: Tensor | None, scale: float, reduction: str
) -> AdjustedCrossEntropyFn:
    """Check a module's state as :func:`tailwise.functional.ldam_loss` checks its arguments; prepare LDAM."""
    num_classes = z.shape[1]
    check_reduction(reduction)
    check_weight(margins, num_classes, name="margins")
    scale = check_positive("scale", scale)
    return ldam_fn(z, margins, scale, check_weight(weight, num_classes), reduction)
