"""Shared input handling and confusion-matrix state of the classification metrics.

Every classwise metric (per-class, balanced and shot-group accuracy, the classification report) is a
function of the confusion matrix ``M[i, j] = #{n : target_n = i, prediction_n = j}`` (rows are true
classes, columns predictions, as in scikit-learn). They accumulate that one ``(C, C)`` integer state,
which sums exactly over batches and over ranks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tailwise._validation import check_int, check_logits_target, describe, validation_enabled
from tailwise.metrics._base import Metric

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)



def to_predictions(preds: Tensor, target: Tensor, num_classes: int | None = None) -> tuple[Tensor, Tensor, int]:
    """Validate ``(preds, target)`` and return ``(predicted labels (N,), target (N,) int64, C)``.

    Args:
        preds: scores ``(N, C)`` (logits or probabilities; the argmax is the prediction) or integer
            class predictions ``(N,)``.
        target: integer labels ``(N,)``.
        num_classes: number of classes; required for ``(N,)`` predictions, checked against ``C`` for
            scores.

    Raises:
        TypeError: non-tensor inputs, float predictions of shape ``(N,)``, non-integer targets.
        ValueError: shape mismatches, ``C`` different from ``num_classes``, labels or predictions
            outside ``[0, C)`` (value checks can be disabled with ``tailwise._validation.set_validation``).
    """
    if not isinstance(preds, Tensor):
        raise TypeError(f"preds must be a torch.Tensor of scores (N, C) or class predictions (N,); got {describe(preds)}")
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor of class indices (N,); got {describe(target)}")
    if preds.ndim == 2:
        c = preds.shape[1]
        if num_classes is not None and c != num_classes:
            raise ValueError(f"preds must have num_classes = {num_classes} columns; got shape {tuple(preds.shape)}")
        if c < 1:
            raise ValueError(f"preds must have at least one column (class); got shape {tuple(preds.shape)}")
        check_logits_target(preds, target, logits_name="preds", target_name="target")
        return preds.argmax(dim=1), target.long(), c
    if preds.ndim != 1:
        raise ValueError(f"preds must have shape (N, C) (scores) or (N,) (class predictions); got shape {tuple(preds.shape)}")
    if preds.dtype not in _INT_DTYPES:
        raise TypeError(f"preds of shape (N,) must hold integer class predictions; got dtype {preds.dtype}")
    if num_classes is None:
        raise ValueError("num_classes must be given when preds are class predictions of shape (N,); got None")
    if target.dtype not in _INT_DTYPES:
        raise TypeError(f"target must hold integer class indices; got dtype {target.dtype}")
    if target.shape != preds.shape:
        raise ValueError(f"target must have shape {tuple(preds.shape)} to match preds; got shape {tuple(target.shape)}")
    if validation_enabled() and preds.numel() > 0:
        for name, t in (("target", target), ("preds", preds)):
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= num_classes:
                raise ValueError(
                    f"{name} labels must lie in [0, {num_classes - 1}] for {num_classes} classes; got values in [{lo}, {hi}]"
                )
    return preds.long(), target.long(), num_classes


def confusion_counts(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """The ``(C, C)`` int64 confusion matrix of validated label vectors (rows true, columns predicted)."""
    flat = target.long() * num_classes + pred.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def recall_from_confmat(confmat: Tensor) -> Tensor:
    """Per-class recall ``M[c, c] / sum_j M[c, j]`` as float32; NaN for a class with no samples."""
    support = confmat.sum(dim=1)
    correct = confmat.diagonal()
    nan = torch.full_like(support, float("nan"), dtype=torch.float32)
    return torch.where(support > 0, correct.float() / support.clamp_min(1).float(), nan)


def accuracy_from_confmat(confmat: Tensor) -> Tensor:
    """Overall accuracy ``trace(M) / sum(M)`` as a float32 scalar; NaN when ``M`` is empty."""
    total = confmat.sum()
    value = confmat.diagonal().sum().float() / total.clamp_min(1).float()
    return torch.where(total > 0, value, torch.full_like(value, float("nan")))


def nanmean(values: Tensor) -> Tensor:
    """Mean of the non-NaN entries; NaN when there are none (no warning, unlike numpy)."""
    present = ~torch.isnan(values)
    count = present.sum()
    total = torch.where(present, values, torch.zeros_like(values)).sum()
    mean = total / count.clamp_min(1).to(values.dtype)
    return torch.where(count > 0, mean, torch.full_like(mean, float("nan")))


class ConfusionMatrixState(Metric):
    """Base of the classwise metrics: accumulates the ``(C, C)`` int64 state ``confmat``.

    ``update(preds, target)`` takes scores ``(N, C)`` or integer predictions ``(N,)`` with labels
    ``(N,)``. The state lives on the metric's device (move the metric with ``.to(device)``); inputs on
    another device are counted there and moved.
    """

    confmat: Tensor

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes)
        self.add_state("confmat", torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64), "sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of scores ``(N, C)`` or predictions ``(N,)`` with labels ``(N,)``."""
        pred, tgt, c = to_predictions(preds, target, self.num_classes)
        self.confmat += confusion_counts(pred, tgt, c).to(self.confmat.device)
