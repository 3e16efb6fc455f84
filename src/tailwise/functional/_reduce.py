"""Reduction of per-sample losses with PyTorch's semantics."""

from __future__ import annotations

from torch import Tensor

from tailwise._validation import check_reduction


def reduce_loss(per_sample: Tensor, reduction: str, sample_weight: Tensor | None = None) -> Tensor:
    r"""Reduce per-sample losses ``l_i`` as ``nn.CrossEntropyLoss`` does.

    With per-sample weights ``w_i`` (usually ``weight[target_i]``), ``'none'`` returns ``w_i l_i``,
    ``'sum'`` returns :math:`\sum_i w_i l_i` and ``'mean'`` the weighted mean
    :math:`\sum_i w_i l_i / \sum_i w_i`. Without weights ``'mean'`` is the plain mean.
    """
    check_reduction(reduction)
    if sample_weight is not None:
        weighted = per_sample * sample_weight
        if reduction == "none":
            return weighted
        if reduction == "sum":
            return weighted.sum()
        return weighted.sum() / sample_weight.sum()
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.mean()
