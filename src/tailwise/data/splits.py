"""Validation splits held out from the training data (the test set is never used for selection).

:func:`train_val_split` draws a seeded (optionally stratified) random split; for long-tailed data a
per-class fraction keeps at least one validation sample in every class that has two or more.
:func:`per_class_tail_split` is the CDB-loss convention: the last ``k`` samples of each class in file
order become the validation set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import describe

__all__ = ["per_class_tail_split", "train_val_split"]


def _labels_numpy(labels: Sequence[int] | Tensor | np.ndarray) -> np.ndarray:
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise ValueError(f"labels must be a 1-D sequence of integer labels; got {describe(labels)}")
    if y.size and int(y.min()) < 0:
        raise ValueError(f"labels must be non-negative class indices; got minimum {int(y.min())}")
    return y.astype(np.int64)


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
    return int(value)


def train_val_split(
    labels: Sequence[int] | Tensor | np.ndarray,
    val_fraction: float | None = None,
    val_per_class: int | None = None,
    seed: int = 0,
    stratified: bool = True,
) -> tuple[Tensor, Tensor]:
    """Split training positions into a training part and a held-out validation part.

    Give exactly one of ``val_fraction`` and ``val_per_class``.

    * Stratified with ``val_fraction``: class ``c`` (``n_c`` samples) gives ``round(val_fraction * n_c)``
      samples, at least 1 when ``val_fraction > 0`` and ``n_c >= 2``, and never all of its samples.
    * Stratified with ``val_per_class``: ``min(val_per_class, n_c - 1)`` per class (a class keeps at least
      one training sample).
    * Not stratified: ``round(val_fraction * N)`` samples drawn uniformly (``val_per_class`` needs
      ``stratified=True``).

    Args:
        labels: 1-D integer labels of the training set.
        val_fraction: fraction in ``[0, 1)`` to hold out.
        val_per_class: number per class to hold out.
        seed: seed of the ``torch.Generator`` that draws the split.
        stratified: split class by class.

    Returns:
        ``(train_idx, val_idx)``: sorted, disjoint ``int64`` tensors of positions covering ``labels``.

    Raises:
        ValueError: both or neither of ``val_fraction`` / ``val_per_class``, a fraction outside
            ``[0, 1)``, a negative count, ``val_per_class`` without stratification, bad labels.
    """
    y = _labels_numpy(labels)
    if (val_fraction is None) == (val_per_class is None):
        raise ValueError(
            "give exactly one of val_fraction and val_per_class; got "
            f"val_fraction={val_fraction!r}, val_per_class={val_per_class!r}"
        )
    if val_fraction is not None:
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float, np.floating)):
            raise TypeError(f"val_fraction must be a number in [0, 1); got {describe(val_fraction)}")
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1); got {val_fraction!r}")
        val_fraction = float(val_fraction)
    if val_per_class is not None:
        val_per_class = _check_count("val_per_class", val_per_class)
        if not stratified:
            raise ValueError("val_per_class needs stratified=True; got stratified=False")
    gen = torch.Generator().manual_seed(int(seed))
    n = y.size
    is_val = np.zeros(n, dtype=bool)
    if not stratified:
        k = round(float(val_fraction) * n)
        perm = torch.randperm(n, generator=gen).numpy()
        is_val[perm[:k]] = True
    else:
        for c in np.unique(y):
            idx = np.where(y == c)[0]
            n_c = idx.size
            if val_per_class is not None:
                k = min(val_per_class, n_c - 1)
            else:
                k = round(float(val_fraction) * n_c)
                if val_fraction > 0 and n_c >= 2:
                    k = max(k, 1)
                k = min(k, n_c - 1)
            k = max(k, 0)
            perm = torch.randperm(n_c, generator=gen).numpy()
            is_val[idx[perm[:k]]] = True
    train_idx = torch.as_tensor(np.nonzero(~is_val)[0].astype(np.int64))
    val_idx = torch.as_tensor(np.nonzero(is_val)[0].astype(np.int64))
    return train_idx, val_idx


def per_class_tail_split(labels: Sequence[int] | Tensor | np.ndarray, val_per_class: int = 25) -> tuple[Tensor, Tensor]:
    """Hold out the last ``val_per_class`` samples of every class, in file order (CDB-loss convention).

    This is the CDB-loss CIFAR-LT ``sep_train_val``: for each class in label order its positions are
    listed in file order; all but the last ``val_per_class`` go to training, the last ones to validation.

    Args:
        labels: 1-D integer labels in file order.
        val_per_class: number of validation samples per class (CDB uses 25).

    Returns:
        ``(train_idx, val_idx)`` as ``int64`` tensors grouped class by class (file order within a class).

    Raises:
        ValueError: a class has no more than ``val_per_class`` samples, or bad arguments.
    """
    y = _labels_numpy(labels)
    k = _check_count("val_per_class", val_per_class)
    train_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for c in np.unique(y):
        idx = np.where(y == c)[0]
        if idx.size <= k:
            raise ValueError(
                f"val_per_class = {k} leaves no training sample for class {int(c)}, which has {idx.size} samples"
            )
        train_parts.append(idx[: idx.size - k])
        val_parts.append(idx[idx.size - k :])
    empty = np.zeros(0, dtype=np.int64)
    train_idx = np.concatenate(train_parts) if train_parts else empty
    val_idx = np.concatenate(val_parts) if val_parts else empty
    return torch.as_tensor(train_idx.astype(np.int64)), torch.as_tensor(val_idx.astype(np.int64))
