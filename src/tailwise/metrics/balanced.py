"""Balanced accuracy: the mean over classes of the per-class accuracy (recall).

.. math:: \\mathrm{bacc} = \\frac{1}{|P|} \\sum_{c \\in P} \\frac{M_{cc}}{\\sum_j M_{cj}}

where ``P`` is the set of classes present in the targets (scikit-learn's ``balanced_accuracy_score``
with ``adjusted=False``). On a balanced test set it equals the top-1 accuracy; on an imbalanced one it
is the accuracy the test set would give if it were balanced (Brodersen et al., "The Balanced Accuracy
and Its Posterior Distribution", ICPR 2010).
"""

from __future__ import annotations

from torch import Tensor

from tailwise.metrics._classification import (
    ConfusionMatrixState,
    confusion_counts,
    nanmean,
    recall_from_confmat,
    to_predictions,
)

__all__ = ["BalancedAccuracy", "balanced_accuracy"]


def balanced_accuracy(preds: Tensor, target: Tensor, num_classes: int | None = None) -> Tensor:
    """Balanced accuracy of a batch: mean per-class accuracy over the classes present in ``target``.

    Args:
        preds: scores ``(N, C)`` (the argmax is the prediction) or integer class predictions ``(N,)``.
        target: integer labels ``(N,)`` in ``[0, C)``.
        num_classes: number of classes; required for ``(N,)`` predictions.

    Returns:
        A float32 scalar tensor; NaN when ``N = 0``.

    Example:
        >>> import torch
        >>> balanced_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), num_classes=3)
        tensor(0.7500)
    """
    pred, tgt, c = to_predictions(preds, target, num_classes)
    return nanmean(recall_from_confmat(confusion_counts(pred, tgt, c)))


class BalancedAccuracy(ConfusionMatrixState):
    """Streaming balanced accuracy (the stateful twin of :func:`balanced_accuracy`).

    Classes absent from every batch seen (and from every rank) are left out of the mean.

    Args:
        num_classes: number of classes ``C``.
    """

    def compute(self) -> Tensor:
        """Balanced accuracy over everything seen since :meth:`reset` (NaN when nothing was seen)."""
        self.sync()
        return nanmean(recall_from_confmat(self.confmat))
