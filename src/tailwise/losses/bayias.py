"""Bayias-compensated loss module (Xu et al., NeurIPS 2021), twin of :func:`tailwise.functional.bayias_loss`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from tailwise._validation import check_class_counts
from tailwise.functional.bayias import bayias_offset
from tailwise.losses._affine import AffineAdjustedLoss
from tailwise.registry import LOSSES

__all__ = ["BayiasLoss"]

CountsLike = Sequence[float] | Tensor | np.ndarray


@LOSSES.register("bayias")
class BayiasLoss(AffineAdjustedLoss):
    r"""Bayias-compensated cross-entropy :math:`\mathrm{CE}(z + \log\pi^{\text{train}} - \log\pi^{\text{target}}, y)`.

    The offset is a buffer (``offset``, float64) computed once. With the default uniform target prior
    this is the logit-adjusted loss with :math:`\tau = 1`. In the official recipe it is combined with
    :class:`tailwise.transforms.UniMix` (build it with ``reduction="none"`` and use
    :func:`tailwise.transforms.mixed_loss`).

    Args:
        class_counts: ``(C,)`` training counts (all positive).
        target_prior: ``(C,)`` target (inference) label distribution, probabilities or counts;
            ``None`` is uniform.
        weight: optional ``(C,)`` class weights (settable with ``set_weight``).
        reduction: ``"none" | "mean" | "sum"``.
    """

    class_counts: Tensor
    offset: Tensor
    _offset_buffer = "offset"

    def __init__(
        self,
        class_counts: CountsLike,
        target_prior: CountsLike | None = None,
        weight: Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
    ) -> None:
        counts = check_class_counts(class_counts)
        offset = bayias_offset(counts, target_prior)
        super().__init__(counts.numel(), None, reduction)
        self.register_buffer("class_counts", counts)
        self.register_buffer("offset", offset)
        self.set_weight(weight)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, " + super().extra_repr()
