"""Multiclass confusion matrix ``M[i, j] = #{n : y_n = i, prediction_n = j}`` (rows true, columns predicted).

The layout is scikit-learn's ``confusion_matrix``. Every classwise metric of tailwise (per-class,
balanced, many/medium/few-shot accuracy, the classification report) is computed from this matrix.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from tailwise._validation import check_in_choices
from tailwise.metrics._classification import ConfusionMatrixState, confusion_counts, to_predictions

__all__ = ["ConfusionMatrix", "confusion_matrix"]

Normalize = Literal["true", "pred", "all"]
_NORMALIZE = (None, "true", "pred", "all")


def _normalize(confmat: Tensor, normalize: Normalize | None) -> Tensor:
    if normalize is None:
        return confmat
    m = confmat.float()
    if normalize == "true":
        denom = m.sum(dim=1, keepdim=True)
    elif normalize == "pred":
        denom = m.sum(dim=0, keepdim=True)
    else:
        denom = m.sum()
    # An empty row / column / matrix has no rates: NaN, never a silent 0.
    return m / denom


def confusion_matrix(
    preds: Tensor, target: Tensor, num_classes: int | None = None, normalize: Normalize | None = None
) -> Tensor:
    """Confusion matrix of a batch.

    Args:
        preds: scores ``(N, C)`` (the argmax is the prediction) or integer class predictions ``(N,)``.
        target: integer labels ``(N,)`` in ``[0, C)``.
        num_classes: number of classes; required for ``(N,)`` predictions.
        normalize: ``None`` (counts), ``"true"`` (each row sums to 1: recall on the diagonal),
            ``"pred"`` (each column sums to 1: precision on the diagonal) or ``"all"`` (sums to 1). Rows or
            columns without samples give NaN.

    Returns:
        ``(C, C)`` int64 counts, or float32 rates when ``normalize`` is set.

    Example:
        >>> import torch
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), num_classes=2)
        tensor([[1, 1],
                [0, 1]])
    """
    check_in_choices("normalize", normalize, _NORMALIZE)
    pred, tgt, c = to_predictions(preds, target, num_classes)
    return _normalize(confusion_counts(pred, tgt, c), normalize)


class ConfusionMatrix(ConfusionMatrixState):
    """Streaming confusion matrix (the stateful twin of :func:`confusion_matrix`).

    Args:
        num_classes: number of classes ``C``.
        normalize: as in :func:`confusion_matrix`; applied in :meth:`compute` only (the state holds counts).
    """

    def __init__(self, num_classes: int, normalize: Normalize | None = None) -> None:
        super().__init__(num_classes)
        self.normalize = check_in_choices("normalize", normalize, _NORMALIZE)

    def compute(self) -> Tensor:
        """The accumulated ``(C, C)`` matrix (a copy; counts or rates as ``normalize`` says)."""
        self.sync()
        out = _normalize(self.confmat, self.normalize)
        return out.clone() if out is self.confmat else out


