r"""alpha-loss module (Sypherd et al., IEEE TIT 2022); see :func:`tailwise.functional.alpha_loss`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from tailwise._validation import check_finite, check_reduction, describe
from tailwise.functional.alpha import _alpha, check_alpha
from tailwise.registry import LOSSES

__all__ = ["AlphaLoss"]


def _as_weight(weight: Tensor | Sequence[float] | None) -> Tensor | None:
    if weight is None:
        return None
    w = weight.detach().clone() if isinstance(weight, Tensor) else torch.as_tensor(np.asarray(weight, dtype=np.float64))
    if w.ndim != 1 or w.numel() == 0:
        raise ValueError(f"weight must be a non-empty 1-D tensor with one entry per class; got {describe(weight)}")
    check_finite("weight", w)
    return w


@LOSSES.register("alpha", "alpha_loss")
class AlphaLoss(nn.Module):
    r"""alpha-loss :math:`\frac{\alpha}{\alpha-1}\bigl(1 - \hat p_y^{1-1/\alpha}\bigr)` on logits.

    Sypherd et al., "A Tunable Loss Function for Robust Classification: Calibration, Landscape, and
    Generalization", IEEE TIT 2022. :math:`\alpha = 1` is cross-entropy, :math:`\alpha = 1/2` the
    exponential loss, :math:`\alpha = \infty` the soft 0-1 loss :math:`1 - \hat p_y`; the paper uses
    :math:`\alpha \in [1.1, 8]` against label noise and :math:`\alpha < 1` against class imbalance.

    Args:
        alpha: :math:`\alpha \in (0, \infty]` (default 1, log-loss).
        weight: optional per-class weights (a buffer; replace it with :meth:`set_weight`).
        reduction: ``'none' | 'mean' | 'sum'``.
        official_sigmoid: softmax of ``sigmoid(logits)``, as the official CIFAR-10 models do.
        official_numerics: the official script's float32 :math:`\alpha` and ``+1e-8`` in the log.
    """

    weight: Tensor | None

    def __init__(
        self,
        alpha: float = 1.0,
        weight: Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
        official_sigmoid: bool = False,
        official_numerics: bool = False,
    ) -> None:
        super().__init__()
        self.alpha = check_alpha(alpha)
        self.reduction = check_reduction(reduction)
        self.official_sigmoid = bool(official_sigmoid)
        self.official_numerics = bool(official_numerics)
        self.register_buffer("weight", _as_weight(weight))
        self._cache: dict = {}  # the weight cast to the logits' dtype (tailwise.functional._fused.cached_vector)

    def set_weight(self, weight: Tensor | Sequence[float] | None) -> None:
        """Replace the per-class weight (``None`` removes it); called by weight schedules."""
        w = _as_weight(weight)
        if w is not None and self.weight is not None:
            w = w.to(self.weight.device)
        self.weight = w

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """alpha-loss of ``logits`` against ``target`` (labels or soft targets)."""
        return _alpha(
            logits,
            target,
            self.alpha,
            self.reduction,
            self.weight,
            self.official_sigmoid,
            self.official_numerics,
            self._cache,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, reduction={self.reduction!r}, official_sigmoid={self.official_sigmoid}, "
            f"official_numerics={self.official_numerics}"
        )
