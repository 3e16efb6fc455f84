r"""Stateful CDB-W loss: class weights from the per-epoch validation difficulty.

Sinha, Ohashi and Nakamura, ACCV 2020 (arXiv 2010.01824) / IJCV 2022 (arXiv 2207.14499). See
:mod:`tailwise.functional.cdb` for the math and the two official variants.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tailwise._validation import check_in_choices, check_weight, describe
from tailwise.functional.cdb import (
    CDB_REDUCTIONS,
    TAU_RULES,
    ZERO_WEIGHT_MODES,
    cdb_loss,
    cdb_weights,
    class_accuracy_from_logits,
    class_difficulty,
)
from tailwise.registry import LOSSES

__all__ = ["CDBLoss"]

_OFFICIAL_REDUCTION = {"cifar": "official_cifar", "imagenet": "mean"}


@LOSSES.register("cdb")
class CDBLoss(nn.Module):
    r"""CDB-W: cross-entropy weighted by :math:`w_c \propto (1 - A_c)^\tau`, updated every epoch.

    The difficulty :math:`d_c = 1 - A_c` is a buffer initialised to ones, so the weights of epoch 0
    are all 1 (as in the official code). After each validation pass the trainer calls
    :meth:`update_from_validation` with the validation logits and labels; the per-class accuracy gives
    the new difficulty and :func:`~tailwise.functional.cdb_weights` the new weights (buffer ``weight``).

    Args:
        num_classes: number of classes ``C``.
        tau: ``"dynamic"`` (official default) or a fixed exponent.
        tau_rule: ``"cifar"`` or ``"imagenet"``, the official dynamic-:math:`\tau` formula.
        reduction: ``"none" | "mean" | "sum" | "official_cifar" | "official_imagenet"`` (see
            :func:`~tailwise.functional.cdb_loss`). ``None`` (default) picks the official reduction of
            ``tau_rule``: the plain mean of :math:`w_{y_i}\mathrm{CE}_i` for ``"cifar"``, the weighted
            mean for ``"imagenet"``.
        zero_weight: ``"official"`` (a class at 100 % accuracy gets weight 0) or ``"epsilon"``
            (difficulty clamped at ``epsilon``).
        epsilon: clamp for ``zero_weight="epsilon"``.

    Classes with no validation sample keep their previous difficulty. Under DDP pass the validation
    logits gathered over all ranks (the trainer does) so every rank holds the same weights.
    """

    difficulty: Tensor
    weight: Tensor

    def __init__(
        self,
        num_classes: int,
        tau: str | float = "dynamic",
        tau_rule: str = "cifar",
        reduction: str | None = None,
        zero_weight: str = "official",
        epsilon: float = 0.01,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int; got {describe(num_classes)}")
        check_in_choices("tau_rule", tau_rule, TAU_RULES)
        check_in_choices("zero_weight", zero_weight, ZERO_WEIGHT_MODES)
        if reduction is None:
            reduction = _OFFICIAL_REDUCTION[tau_rule]
        check_in_choices("reduction", reduction, CDB_REDUCTIONS)
        self.num_classes = num_classes
        self.tau = tau
        self.tau_rule = tau_rule
        self.reduction = reduction
        self.zero_weight = zero_weight
        self.epsilon = epsilon
        # validate tau / epsilon once with the initial difficulty
        cdb_weights(torch.ones(num_classes, dtype=torch.float64), tau, tau_rule, zero_weight, epsilon)
        self.register_buffer("difficulty", torch.ones(num_classes, dtype=torch.float64))
        self.register_buffer("weight", torch.ones(num_classes, dtype=torch.float64))

    def update_from_accuracy(self, class_accuracy: Tensor | Sequence[float]) -> Tensor:
        r"""Set :math:`d = 1 - A` from any per-class accuracy source and recompute the weights.

        ``NaN`` entries (classes without a measurement) keep their previous difficulty. Returns the weights.
        """
        acc = torch.as_tensor(class_accuracy, dtype=torch.float64).detach().cpu()
        if acc.shape != (self.num_classes,):
            raise ValueError(f"class_accuracy must have shape ({self.num_classes},); got {describe(class_accuracy)}")
        known = ~torch.isnan(acc)
        d = self.difficulty.detach().cpu().clone()
        d[known] = class_difficulty(torch.where(known, acc, torch.zeros_like(acc)))[known]
        w = cdb_weights(d, self.tau, self.tau_rule, self.zero_weight, self.epsilon)
        self.difficulty.copy_(d.to(self.difficulty.device))
        self.weight.copy_(w.to(self.weight.device))
        return self.weight

    def update_from_validation(self, logits: Tensor, target: Tensor, epoch: int | None = None) -> Tensor:
        """Per-class accuracy on the validation split → difficulty → weights (trainer hook).

        Args:
            logits: validation logits ``(N, C)`` of the whole split.
            target: validation labels ``(N,)``.
            epoch: the epoch just finished (unused; the weights apply from the next forward).

        Returns:
            The new weights ``(C,)``.
        """
        acc, _ = class_accuracy_from_logits(logits, target, self.num_classes)
        return self.update_from_accuracy(acc)

    def set_weight(self, weight: Tensor | Sequence[float] | None) -> None:
        """Override the class weights (``None`` recomputes them from the stored difficulty)."""
        if weight is None:
            w = cdb_weights(self.difficulty.cpu(), self.tau, self.tau_rule, self.zero_weight, self.epsilon)
        else:
            w = check_weight(weight, self.num_classes)  # type: ignore[assignment]
        self.weight.copy_(torch.as_tensor(w, dtype=torch.float64).to(self.weight.device))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """CDB-weighted cross-entropy with the current weights."""
        return cdb_loss(logits, target, self.weight, self.reduction)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, tau={self.tau!r}, tau_rule={self.tau_rule!r}, reduction={self.reduction!r}"
