"""Per-class accuracy (recall of each class): ``acc_c = M[c, c] / sum_j M[c, j]``.

The per-class breakdown long-tail papers plot against the training count of each class (e.g. Cao et
al., NeurIPS 2019, Fig. 3). A class without test samples has no accuracy: NaN, not 0.
"""

from __future__ import annotations

from torch import Tensor

from tailwise.metrics._classification import (
    ConfusionMatrixState,
    confusion_counts,
    recall_from_confmat,
    to_predictions,
)

__all__ = ["PerClassAccuracy", "per_class_accuracy"]


def per_class_accuracy(preds: Tensor, target: Tensor, num_classes: int | None = None) -> Tensor:
    """Accuracy of each class on a batch.

    Args:
        preds: scores ``(N, C)`` (the argmax is the prediction) or integer class predictions ``(N,)``.
        target: integer labels ``(N,)`` in ``[0, C)``.
        num_classes: number of classes; required for ``(N,)`` predictions.

    Returns:
        ``(C,)`` float32 tensor; entry ``c`` is the fraction of class-``c`` samples predicted as ``c``,
        NaN when class ``c`` has no sample.

    Example:
        >>> import torch
        >>> per_class_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), num_classes=3)
        tensor([0.5000, 1.0000,    nan])
    """
    pred, tgt, c = to_predictions(preds, target, num_classes)
    return recall_from_confmat(confusion_counts(pred, tgt, c))


class PerClassAccuracy(ConfusionMatrixState):
    """Streaming per-class accuracy (the stateful twin of :func:`per_class_accuracy`).

    Args:
        num_classes: number of classes ``C``.
    """

    def compute(self) -> Tensor:
        """``(C,)`` float32 accuracies over everything seen since :meth:`reset`; NaN for unseen classes."""
        self.sync()
        return recall_from_confmat(self.confmat)
