"""Cross-entropy module (the baseline), twin of :func:`tailwise.functional.cross_entropy`."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from tailwise._validation import check_probability
from tailwise.functional.ce import cross_entropy
from tailwise.losses._weighted import ClassWeightedLoss
from tailwise.registry import LOSSES

__all__ = ["CrossEntropyLoss"]


@LOSSES.register("ce")
class CrossEntropyLoss(ClassWeightedLoss):
    r"""Softmax cross-entropy :math:`-\log \operatorname{softmax}(z)_y` with PyTorch's semantics.

    Like ``torch.nn.CrossEntropyLoss`` (weighted mean with ``weight``, soft targets, label smoothing),
    with tailwise's input checks, float32 compute for half/bfloat16 logits, and the ``set_weight`` hook
    through which a weight schedule (DRW) sets the class weights each epoch.

    Args:
        weight: optional ``(C,)`` class weights.
        reduction: ``"none" | "mean" | "sum"``.
        label_smoothing: :math:`\epsilon \in [0, 1]`.
        num_classes: number of classes, used to check weights given later through ``set_weight``.

    Example:
        >>> import torch
        >>> loss = CrossEntropyLoss()
        >>> loss(torch.zeros(2, 3), torch.tensor([0, 2])).item()  # log 3
        1.0986...
    """

    def __init__(
        self,
        weight: Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(num_classes, weight, reduction)
        self.label_smoothing = check_probability("label_smoothing", label_smoothing)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Loss of ``logits`` ``(N, C)`` against ``target`` ``(N,)`` (or soft ``(N, C)``)."""
        return cross_entropy(logits, target, self.weight, self.reduction, self.label_smoothing)
