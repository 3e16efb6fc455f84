r"""MbLS loss module (Liu et al., CVPR 2022); see :func:`tailwise.functional.mbls_loss`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from tailwise._validation import check_positive, check_reduction, describe
from tailwise.functional.mbls import _mbls
from tailwise.registry import LOSSES

__all__ = ["MbLSLoss"]


@LOSSES.register("mbls", "logit_margin")
class MbLSLoss(nn.Module):
    r"""Margin-based label smoothing: :math:`\mathrm{CE} + \alpha\,\mathrm{mean}_{ij}[\max_k z_{ik} - z_{ij} - m]_+`.

    Liu, Ben Ayed, Galdran, Dolz, "The Devil is in the Margin: Margin-based Label Smoothing for Network
    Calibration", CVPR 2022. Defaults follow the official ``LogitMarginL1`` (and the CALS baseline
    config): ``margin=10``, ``alpha=0.1``.

    Args:
        margin: margin :math:`m \ge 0`.
        alpha: weight of the margin term (0 gives cross-entropy).
        weight: optional per-class weights of the cross-entropy term.
        reduction: ``'none' | 'mean' | 'sum'``.
    """

    weight: Tensor | None

    def __init__(
        self,
        margin: float = 10.0,
        alpha: float = 0.1,
        weight: Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.margin = check_positive("margin", margin, allow_zero=True)
        self.alpha = check_positive("alpha", alpha, allow_zero=True)
        self.reduction = check_reduction(reduction)
        self.register_buffer("weight", None)
        self.set_weight(weight)
        self._cache: dict = {}  # the weight cast to the logits' dtype (tailwise.functional._fused.cached_vector)

    def set_weight(self, weight: Tensor | Sequence[float] | None) -> None:
        """Replace the per-class weight of the cross-entropy term (``None`` removes it)."""
        if weight is None:
            self.weight = None
            return
        w = weight.detach().clone() if isinstance(weight, Tensor) else torch.as_tensor(np.asarray(weight, dtype=np.float64))
        if w.ndim != 1 or w.numel() == 0:
            raise ValueError(f"weight must be a non-empty 1-D tensor with one entry per class; got {describe(weight)}")
        self.weight = w

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """MbLS loss of ``logits`` against ``target``."""
        return _mbls(logits, target, self.margin, self.alpha, self.reduction, self.weight, self._cache)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, alpha={self.alpha}, reduction={self.reduction!r}"
