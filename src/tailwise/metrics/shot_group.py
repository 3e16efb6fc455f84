"""Many-shot / medium-shot / few-shot accuracy (the OLTR split of classes by training count).

Liu et al., "Large-Scale Long-Tailed Recognition in an Open World" (OLTR, CVPR 2019), §5 split the
classes by their number of **training** images: many-shot (more than 100), medium-shot (20 to 100) and
few-shot (fewer than 20). The OLTR code (``shot_acc``) tests ``count > many_threshold`` for many-shot,
then ``count < few_threshold`` for few-shot, and puts every other class (including counts of exactly
100 and exactly 20) in medium-shot. That is the default here (``inclusive=False``):

============  ======================  ==========================
group         ``inclusive=False``     ``inclusive=True``
============  ======================  ==========================
many-shot     ``n > many_threshold``  ``n >= many_threshold``
medium-shot   ``few <= n <= many``    ``few < n < many``
few-shot      ``n < few_threshold``   ``n <= few_threshold``
============  ======================  ==========================

The accuracy of a group is, like OLTR, the mean of the per-class accuracies of its classes
(``average="macro"``); ``average="micro"`` pools the group's test samples instead (the two agree on a
balanced test set). Classes without test samples are skipped; a group with no class, or none with test
samples, has accuracy NaN (never 0). The number of classes of each group is reported with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import check_class_counts, check_in_choices, check_positive
from tailwise.metrics._classification import (
    ConfusionMatrixState,
    confusion_counts,
    nanmean,
    recall_from_confmat,
    to_predictions,
)

__all__ = ["SHOT_GROUPS", "ShotGroupAccuracy", "ShotGroupResult", "shot_group_accuracy", "shot_groups"]

SHOT_GROUPS: tuple[str, str, str] = ("many", "medium", "few")
Average = Literal["macro", "micro"]
_AVERAGES = ("macro", "micro")


class ShotGroupResult(NamedTuple):
    """Accuracy of the many-, medium- and few-shot groups (float32 scalars, NaN for an empty group) and
    the number of classes in each group."""

    many: Tensor
    medium: Tensor
    few: Tensor
    num_many: int
    num_medium: int
    num_few: int


def _check_thresholds(many_threshold: float, few_threshold: float, inclusive: bool) -> tuple[float, float]:
    many = check_positive("many_threshold", many_threshold, allow_zero=True)
    few = check_positive("few_threshold", few_threshold, allow_zero=True)
    if not isinstance(inclusive, (bool, np.bool_)):
        raise TypeError(f"inclusive must be True or False; got {inclusive!r}")
    if few > many or (inclusive and few == many):
        bound = "<" if inclusive else "<="
        raise ValueError(
            f"few_threshold must be {bound} many_threshold (inclusive={bool(inclusive)}); "
            f"got few_threshold={few_threshold!r}, many_threshold={many_threshold!r}"
        )
    return many, few


def shot_groups(
    class_counts: Sequence[float] | Tensor | np.ndarray,
    many_threshold: float = 100,
    few_threshold: float = 20,
    inclusive: bool = False,
) -> Tensor:
    """Group index of every class from its training count: 0 many-shot, 1 medium-shot, 2 few-shot.

    Args:
        class_counts: per-class **training** counts ``(C,)`` (zeros allowed: such a class is few-shot).
        many_threshold: many-shot boundary (100 in OLTR).
        few_threshold: few-shot boundary (20 in OLTR).
        inclusive: ``False`` (OLTR): many ``n > many_threshold``, few ``n < few_threshold``, the
            boundaries themselves are medium. ``True``: many ``n >= many_threshold``, few
            ``n <= few_threshold``.

    Returns:
        ``(C,)`` int64 tensor with values in ``{0, 1, 2}`` (names in :data:`SHOT_GROUPS`).

    Example:
        >>> shot_groups([500, 100, 50, 20, 5])
        tensor([0, 1, 1, 1, 2])
    """
    counts = check_class_counts(class_counts, allow_zero=True)
    many, few = _check_thresholds(many_threshold, few_threshold, inclusive)
    if inclusive:
        is_many, is_few = counts >= many, counts <= few
    else:
        is_many, is_few = counts > many, counts < few
    groups = torch.ones(counts.shape, dtype=torch.int64)
    groups[is_few] = 2
    groups[is_many] = 0
    return groups


def group_accuracy_from_confmat(confmat: Tensor, groups: Tensor, average: Average = "macro") -> Tensor:
    """Accuracy of each of the three groups ``(3,)`` from a confusion matrix and a class-to-group map."""
    groups = groups.to(confmat.device)
    if average == "macro":
        recall = recall_from_confmat(confmat)
        return torch.stack([nanmean(recall[groups == g]) for g in range(3)])
    correct, support = confmat.diagonal(), confmat.sum(dim=1)
    out = []
    for g in range(3):
        member = groups == g
        n = support[member].sum()
        value = correct[member].sum().float() / n.clamp_min(1).float()
        out.append(torch.where(n > 0, value, torch.full_like(value, float("nan"))))
    return torch.stack(out)


def _result(values: Tensor, groups: Tensor) -> ShotGroupResult:
    sizes = torch.bincount(groups.cpu(), minlength=3).tolist()
    return ShotGroupResult(values[0], values[1], values[2], *sizes)


def shot_group_accuracy(
    preds: Tensor,
    target: Tensor,
    class_counts: Sequence[float] | Tensor | np.ndarray,
    many_threshold: float = 100,
    few_threshold: float = 20,
    inclusive: bool = False,
    average: Average = "macro",
) -> ShotGroupResult:
    """Many-, medium- and few-shot accuracy of a batch (OLTR convention by default).

    Args:
        preds: scores ``(N, C)`` (the argmax is the prediction) or integer class predictions ``(N,)``.
        target: integer labels ``(N,)`` in ``[0, C)``.
        class_counts: per-class **training** counts ``(C,)``; ``C`` is their length.
        many_threshold: many-shot boundary (100).
        few_threshold: few-shot boundary (20).
        inclusive: which side the boundaries belong to (see :func:`shot_groups`).
        average: ``"macro"`` (mean of the per-class accuracies in the group, OLTR) or ``"micro"`` (the
            group's correct test samples over its test samples).

    Returns:
        :class:`ShotGroupResult` with the three accuracies (NaN for an empty group) and group sizes.

    Example:
        >>> import torch
        >>> r = shot_group_accuracy(torch.tensor([0, 1, 0]), torch.tensor([0, 1, 1]), [500, 10])
        >>> r.many, r.medium, r.few, r.num_many, r.num_medium, r.num_few
        (tensor(1.), tensor(nan), tensor(0.5000), 1, 0, 1)
    """
    groups = shot_groups(class_counts, many_threshold, few_threshold, inclusive)
    check_in_choices("average", average, _AVERAGES)
    pred, tgt, c = to_predictions(preds, target, groups.numel())
    values = group_accuracy_from_confmat(confusion_counts(pred, tgt, c), groups, average)
    return _result(values, groups)


class ShotGroupAccuracy(ConfusionMatrixState):
    """Streaming many/medium/few-shot accuracy (the stateful twin of :func:`shot_group_accuracy`).

    Args:
        class_counts: per-class **training** counts ``(C,)`` (stored as a buffer ``class_counts``).
        many_threshold: many-shot boundary (100).
        few_threshold: few-shot boundary (20).
        inclusive: which side the boundaries belong to (``False``: OLTR, see :func:`shot_groups`).
        average: ``"macro"`` (OLTR) or ``"micro"``.

    Attributes:
        groups: ``(C,)`` int64 buffer, 0 many / 1 medium / 2 few.
    """

    class_counts: Tensor
    groups: Tensor

    def __init__(
        self,
        class_counts: Sequence[float] | Tensor | np.ndarray,
        many_threshold: float = 100,
        few_threshold: float = 20,
        inclusive: bool = False,
        average: Average = "macro",
    ) -> None:
        groups = shot_groups(class_counts, many_threshold, few_threshold, inclusive)
        super().__init__(groups.numel())
        self.many_threshold = float(many_threshold)
        self.few_threshold = float(few_threshold)
        self.inclusive = bool(inclusive)
        self.average = check_in_choices("average", average, _AVERAGES)
        self.register_buffer("class_counts", check_class_counts(class_counts, allow_zero=True))
        self.register_buffer("groups", groups, persistent=False)

    def compute(self) -> ShotGroupResult:
        """Group accuracies and sizes over everything seen since :meth:`reset`."""
        self.sync()
        return _result(group_accuracy_from_confmat(self.confmat, self.groups, self.average), self.groups)
