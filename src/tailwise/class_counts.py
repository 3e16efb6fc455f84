"""Class-count helpers: counts from labels, priors and the standard re-weighting vectors.

Class priors enter every tailwise component one way: ``class_counts``, a 1-D tensor or sequence of
per-class training counts. The helpers below derive everything else from it, once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import check_class_counts, check_positive, describe

__all__ = [
    "class_counts_from_labels",
    "class_priors",
    "effective_number_weights",
    "inverse_frequency_weights",
    "normalize_to_num_classes",
]

CountsLike = Sequence[float] | Tensor | np.ndarray


def class_counts_from_labels(labels: Sequence[int] | Tensor | np.ndarray, num_classes: int | None = None) -> Tensor:
    """Count how many samples carry each label.

    Args:
        labels: 1-D integer labels in ``[0, num_classes)``.
        num_classes: number of classes; ``max(labels) + 1`` when omitted.

    Returns:
        int64 tensor of shape ``(num_classes,)``.
    """
    t = labels if isinstance(labels, Tensor) else torch.as_tensor(np.asarray(labels))
    if t.ndim != 1 or t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D sequence of integer class indices; got {describe(labels)}")
    t = t.to(torch.int64).cpu()
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"labels must be non-negative class indices; got minimum {int(t.min())}")
    inferred = int(t.max()) + 1 if t.numel() else 0
    if num_classes is None:
        num_classes = inferred
    elif inferred > num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}; got label {inferred - 1}")
    return torch.bincount(t, minlength=num_classes)


def class_priors(class_counts: CountsLike) -> Tensor:
    r"""Empirical class prior :math:`\pi_c = n_c / \sum_k n_k` (float64)."""
    counts = check_class_counts(class_counts, allow_zero=True)
    total = counts.sum()
    if total <= 0:
        raise ValueError(f"class_counts must not all be zero; got {counts.tolist()}")
    return counts / total


def normalize_to_num_classes(weights: Tensor) -> Tensor:
    r"""Rescale weights so they sum to the number of classes: :math:`w \leftarrow C\, w / \sum_c w_c`."""
    return weights / weights.sum() * weights.numel()


def effective_number_weights(class_counts: CountsLike, beta: float = 0.9999, *, normalize: bool = True) -> Tensor:
    r"""Class-balanced weights from the effective number of samples (Cui et al., CVPR 2019).

    .. math:: w_c = \frac{1 - \beta}{1 - \beta^{n_c}}, \qquad w \leftarrow C\, w / \textstyle\sum_k w_k

    This is the rescaling LDAM-DRW uses (weights sum to ``C``). ``beta = 0`` gives all ones.

    Args:
        class_counts: per-class training counts (all positive).
        beta: hyper-parameter in ``[0, 1)``; the LDAM-DRW default is 0.9999.
        normalize: rescale to sum ``C`` (the official convention); otherwise return the raw values.

    Returns:
        float64 tensor of shape ``(C,)``.
    """
    counts = check_class_counts(class_counts)
    if not 0.0 <= float(beta) < 1.0:
        raise ValueError(f"beta must lie in [0, 1); got {beta!r}")
    beta_t = torch.tensor(float(beta), dtype=torch.float64)
    weights = (1.0 - beta_t) / (1.0 - torch.pow(beta_t, counts))
    return normalize_to_num_classes(weights) if normalize else weights


def inverse_frequency_weights(class_counts: CountsLike, power: float = 1.0, *, normalize: bool = True) -> Tensor:
    r"""Inverse-frequency weights :math:`w_c \propto n_c^{-p}`, rescaled to sum ``C``.

    ``power = 1`` is plain inverse frequency; ``power = 0.5`` the square-root variant.
    """
    counts = check_class_counts(class_counts)
    check_positive("power", power, allow_zero=True)
    weights = counts.pow(-float(power))
    return normalize_to_num_classes(weights) if normalize else weights
