"""Top-1 accuracy: the fraction of samples whose predicted class equals the label.

.. math:: \\mathrm{acc} = \\frac{1}{N} \\sum_n [\\arg\\max_c s_{n,c} = y_n]

The prediction is the argmax of scores ``(N, C)`` (logits or probabilities give the same answer; ties go
to the lowest class index, as ``torch.argmax``), or integer predictions ``(N,)``. This is the "top-1"
of every long-tail paper's tables (e.g. Cao et al., NeurIPS 2019, Table 2 reports ``1 - acc``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tailwise._validation import check_int
from tailwise.metrics._base import Metric
from tailwise.metrics._classification import to_predictions

__all__ = ["Accuracy", "accuracy"]


def _correct_total(preds: Tensor, target: Tensor, num_classes: int | None) -> tuple[Tensor, Tensor]:
    pred, tgt, _ = to_predictions(preds, target, num_classes)
    return (pred == tgt).sum(), torch.tensor(tgt.numel(), dtype=torch.int64, device=tgt.device)


def _ratio(correct: Tensor, total: Tensor) -> Tensor:
    value = correct.float() / total.clamp_min(1).float()
    return torch.where(total > 0, value, torch.full_like(value, float("nan")))


def accuracy(preds: Tensor, target: Tensor, num_classes: int | None = None) -> Tensor:
    """Top-1 accuracy of a batch.

    Args:
        preds: scores ``(N, C)`` (logits or probabilities) or integer class predictions ``(N,)``.
        target: integer labels ``(N,)`` in ``[0, C)``.
        num_classes: number of classes; required for ``(N,)`` predictions (to check their range),
            optional for scores (checked against ``C``).

    Returns:
        A float32 scalar tensor in ``[0, 1]``; NaN when ``N = 0``.

    Raises:
        TypeError: non-tensor or wrongly typed inputs.
        ValueError: shape mismatch, labels or predictions out of range.

    Example:
        >>> import torch
        >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
        tensor(0.5000)
    """
    correct, total = _correct_total(preds, target, num_classes)
    return _ratio(correct, total)


class Accuracy(Metric):
    """Streaming top-1 accuracy (the stateful twin of :func:`accuracy`).

    States ``correct`` and ``total`` (int64 counts) are summed over batches and, in :meth:`compute`,
    over the ranks of the default process group.

    Args:
        num_classes: number of classes; required when updating with ``(N,)`` predictions.

    Example:
        >>> import torch
        >>> metric = Accuracy()
        >>> metric.update(torch.tensor([[2.0, 1.0]]), torch.tensor([0]))
        >>> metric.update(torch.tensor([[2.0, 1.0]]), torch.tensor([1]))
        >>> metric.compute()
        tensor(0.5000)
    """

    correct: Tensor
    total: Tensor

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes)
        self.add_state("correct", torch.zeros((), dtype=torch.int64), "sum")
        self.add_state("total", torch.zeros((), dtype=torch.int64), "sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of scores ``(N, C)`` or predictions ``(N,)`` with labels ``(N,)``."""
        correct, total = _correct_total(preds, target, self.num_classes)
        self.correct += correct.to(self.correct.device)
        self.total += total.to(self.total.device)

    def compute(self) -> Tensor:
        """Accuracy over everything seen since the last :meth:`reset` (NaN when nothing was seen)."""
        self.sync()
        return _ratio(self.correct, self.total)
