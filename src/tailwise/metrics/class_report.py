"""All the classification numbers of a long-tail evaluation from one pass and one confusion matrix.

Overall top-1 accuracy, balanced accuracy, per-class accuracy, many/medium/few-shot accuracy (OLTR
thresholds, see :mod:`tailwise.metrics.shot_group`) and top-k accuracy: the columns of the
tables of LDAM-DRW (Cao et al., NeurIPS 2019), OLTR (Liu et al., CVPR 2019) and their successors. Every
classwise number comes from the same ``(C, C)`` confusion-matrix state, so they are consistent with each
other and synchronise across ranks with one all-reduce.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import check_in_choices, check_int
from tailwise.metrics._classification import (
    ConfusionMatrixState,
    accuracy_from_confmat,
    confusion_counts,
    nanmean,
    recall_from_confmat,
    to_predictions,
)
from tailwise.metrics.shot_group import Average, group_accuracy_from_confmat, shot_groups
from tailwise.metrics.topk import top_k_correct

__all__ = ["ClassificationReport", "classification_report"]

ReportValue = float | int | list[float]


def _report(
    confmat: Tensor,
    groups: Tensor | None,
    average: Average,
    top_k: int | None,
    top_k_correct_count: Tensor | None,
) -> dict[str, ReportValue]:
    total = int(confmat.sum())
    out: dict[str, ReportValue] = {
        "accuracy": float(accuracy_from_confmat(confmat)),
        "balanced_accuracy": float(nanmean(recall_from_confmat(confmat))),
        "per_class_accuracy": [float(v) for v in recall_from_confmat(confmat).tolist()],
    }
    if groups is not None:
        values = group_accuracy_from_confmat(confmat, groups, average).tolist()
        sizes = torch.bincount(groups.cpu(), minlength=3).tolist()
        for name, value, size in zip(("many", "medium", "few"), values, sizes):
            out[f"{name}_accuracy"] = float(value)
            out[f"num_{name}_classes"] = int(size)
    if top_k is not None and top_k_correct_count is not None:
        out[f"top{top_k}_accuracy"] = int(top_k_correct_count) / total if total else math.nan
    out["num_samples"] = total
    return out


def _top_k_for(num_classes: int, top_k: int | None) -> int | None:
    """The top-k reported: ``top_k`` when ``num_classes > top_k``, else none."""
    if top_k is None:
        return None
    top_k = check_int("top_k", top_k)
    return top_k if num_classes > top_k else None


def classification_report(
    preds: Tensor,
    target: Tensor,
    num_classes: int | None = None,
    class_counts: Sequence[float] | Tensor | np.ndarray | None = None,
    top_k: int | None = 5,
    many_threshold: float = 100,
    few_threshold: float = 20,
    inclusive: bool = False,
    average: Average = "macro",
) -> dict[str, ReportValue]:
    """The classification numbers of one batch (see :class:`ClassificationReport` for the keys).

    Args:
        preds: scores ``(N, C)``; integer predictions ``(N,)`` are accepted when no top-k is reported
            (``top_k=None`` or ``C <= top_k``).
        target: integer labels ``(N,)`` in ``[0, C)``.
        num_classes: number of classes; required for ``(N,)`` predictions, else taken from
            ``class_counts`` or ``preds``.
        class_counts: per-class training counts; when given, the shot-group keys are reported.
        top_k: the ``k`` of the top-k accuracy (reported only when ``C > k``; ``None`` for none).
        many_threshold, few_threshold, inclusive, average: the shot-group options (see
            :func:`tailwise.metrics.shot_group_accuracy`).
    """
    if num_classes is None and class_counts is not None:
        num_classes = len(class_counts)
    if num_classes is None and isinstance(preds, Tensor) and preds.ndim == 2:
        num_classes = preds.shape[1]
    if num_classes is None:
        raise ValueError("num_classes must be given when preds are not scores of shape (N, C); got None")
    report = ClassificationReport(
        num_classes,
        class_counts,
        top_k=top_k,
        many_threshold=many_threshold,
        few_threshold=few_threshold,
        inclusive=inclusive,
        average=average,
    )
    report.update(preds, target)
    return report.compute()


class ClassificationReport(ConfusionMatrixState):
    """Overall, balanced, per-class, shot-group and top-k accuracy accumulated in one pass.

    ``compute()`` returns a dict with Python numbers (ready to log):

    - ``accuracy``: top-1 accuracy (NaN before any sample);
    - ``balanced_accuracy``: mean per-class accuracy over the classes present;
    - ``per_class_accuracy``: list of ``C`` floats (NaN for a class without test samples);
    - ``many_accuracy``, ``medium_accuracy``, ``few_accuracy`` and ``num_many_classes``,
      ``num_medium_classes``, ``num_few_classes``: only when ``class_counts`` is given (NaN for an
      empty group);
    - ``top{k}_accuracy`` (``top5_accuracy`` by default): only when ``num_classes > top_k``;
    - ``num_samples``: number of samples seen (over all ranks).

    Args:
        num_classes: number of classes ``C``.
        class_counts: per-class **training** counts ``(C,)`` defining the shot groups (optional).
        top_k: the ``k`` of the top-k accuracy (5); ``None`` switches it off.
        many_threshold: many-shot boundary (100).
        few_threshold: few-shot boundary (20).
        inclusive: which side the boundaries belong to (``False``: OLTR, many ``> 100``, few ``< 20``).
        average: shot-group averaging, ``"macro"`` (OLTR) or ``"micro"``.

    Example:
        >>> import torch
        >>> report = ClassificationReport(10, class_counts=[5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
        >>> report.update(torch.randn(64, 10), torch.randint(0, 10, (64,)))
        >>> sorted(report.compute())[:3]
        ['accuracy', 'balanced_accuracy', 'few_accuracy']
    """

    top_k_correct: Tensor
    groups: Tensor | None

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[float] | Tensor | np.ndarray | None = None,
        top_k: int | None = 5,
        many_threshold: float = 100,
        few_threshold: float = 20,
        inclusive: bool = False,
        average: Average = "macro",
    ) -> None:
        super().__init__(num_classes)
        self.average = check_in_choices("average", average, ("macro", "micro"))
        self.top_k = _top_k_for(self.num_classes, top_k)
        self.add_state("top_k_correct", torch.zeros((), dtype=torch.int64), "sum")
        groups = None
        if class_counts is not None:
            groups = shot_groups(class_counts, many_threshold, few_threshold, inclusive)
            if groups.numel() != self.num_classes:
                raise ValueError(
                    f"class_counts must have one entry per class ({self.num_classes}); got {groups.numel()} entries"
                )
        self.register_buffer("groups", groups, persistent=False)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of scores ``(N, C)`` (or predictions ``(N,)`` when no top-k is reported)."""
        if self.top_k is not None and (not isinstance(preds, Tensor) or preds.ndim != 2):
            got = tuple(preds.shape) if isinstance(preds, Tensor) else type(preds).__name__
            raise ValueError(
                f"preds must be scores of shape (N, {self.num_classes}) to report top{self.top_k}_accuracy "
                f"(pass top_k=None for class predictions); got shape {got}"
            )
        pred, tgt, c = to_predictions(preds, target, self.num_classes)
        self.confmat += confusion_counts(pred, tgt, c).to(self.confmat.device)
        if self.top_k is not None:
            self.top_k_correct += top_k_correct(preds, target, self.top_k).to(self.top_k_correct.device)

    def compute(self) -> dict[str, Any]:
        """The report over everything seen since :meth:`reset` (see the class docstring for the keys)."""
        self.sync()
        return _report(self.confmat, self.groups, self.average, self.top_k, self.top_k_correct)
