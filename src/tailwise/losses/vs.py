"""VS loss modules (Kini et al., NeurIPS 2021) and the LA / CDT special cases."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from tailwise._validation import check_class_counts
from tailwise.functional.vs import vs_adjustments
from tailwise.losses._affine import AffineAdjustedLoss
from tailwise.registry import LOSSES

__all__ = ["CDTLoss", "LogitAdjustedLoss", "VSLoss"]

CountsLike = Sequence[float] | Tensor | np.ndarray


@LOSSES.register("vs")
class VSLoss(AffineAdjustedLoss):
    r"""Vector-scaling loss :math:`\mathrm{CE}(\Delta \odot z + \iota, y)`.

    .. math:: \Delta_c = (n_c/n_{\max})^{\gamma}, \qquad \iota_c = \tau \log \pi_c

    The adjustments are buffers (``delta``, ``iota``, float64) computed once from ``class_counts``,
    ``gamma`` and ``tau`` at construction (the loss follows the buffers, which ``load_state_dict`` and
    in-place edits may change); see :func:`tailwise.functional.vs_loss`.

    Args:
        class_counts: ``(C,)`` training counts (all positive).
        gamma: multiplicative exponent :math:`\gamma \ge 0` (README example 0.2 for CIFAR-10-LT).
        tau: additive temperature :math:`\tau` (README example 1.2).
        weight: optional ``(C,)`` class weights (settable per epoch with ``set_weight``).
        reduction: ``"none" | "mean" | "sum"``.
    """

    class_counts: Tensor
    delta: Tensor
    iota: Tensor
    _multiplier_buffer = "delta"
    _offset_buffer = "iota"

    def __init__(
        self,
        class_counts: CountsLike,
        gamma: float = 0.2,
        tau: float = 1.2,
        weight: Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
    ) -> None:
        counts = check_class_counts(class_counts)
        delta, iota = vs_adjustments(counts, gamma, tau)
        super().__init__(counts.numel(), None, reduction)
        self.gamma = float(gamma)
        self.tau = float(tau)
        self.register_buffer("class_counts", counts)
        self.register_buffer("delta", delta)
        self.register_buffer("iota", iota)
        self.set_weight(weight)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, gamma={self.gamma}, tau={self.tau}, " + super().extra_repr()


@LOSSES.register("la")
class LogitAdjustedLoss(VSLoss):
    r"""Logit-adjusted loss (Menon et al., ICLR 2021): :math:`\mathrm{CE}(z + \tau\log\pi, y)`, VS with
    :math:`\gamma = 0`.

    Args:
        class_counts: ``(C,)`` training counts.
        tau: temperature (1.0 in Menon et al. and in the VS code's ``--loss_type LA``).
        weight: optional ``(C,)`` class weights.
        reduction: ``"none" | "mean" | "sum"``.
    """

    def __init__(
        self,
        class_counts: CountsLike,
        tau: float = 1.0,
        weight: Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(class_counts, gamma=0.0, tau=tau, weight=weight, reduction=reduction)


@LOSSES.register("cdt")
class CDTLoss(VSLoss):
    r"""Class-dependent temperature loss (Ye et al., 2020): :math:`\mathrm{CE}((n/n_{\max})^{\gamma}\odot z, y)`,
    VS with :math:`\tau = 0`.

    Args:
        class_counts: ``(C,)`` training counts.
        gamma: exponent (0.3, the VS code's default).
        weight: optional ``(C,)`` class weights.
        reduction: ``"none" | "mean" | "sum"``.
    """

    def __init__(
        self,
        class_counts: CountsLike,
        gamma: float = 0.3,
        weight: Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(class_counts, gamma=gamma, tau=0.0, weight=weight, reduction=reduction)
