"""Long-tailed subsets of a balanced training set (CIFAR-LT and friends).

Two conventions from the official codes are reproduced exactly:

* **LDAM** (``kaidic/LDAM-DRW`` ``imbalance_cifar.py``, shared by VS-Loss, Prior-LT and ABSGD):
  ``n_i = int(n_max * (1/rho) ** (i / (C - 1)))`` with class 0 the head (``n_max`` = 5000 for
  CIFAR-10, 500 for CIFAR-100); the subset keeps, for each class in label order, the first ``n_i``
  of that class's indices after a shuffle drawn from a legacy ``np.random.RandomState(seed)``
  (the official code seeds the global numpy RNG with 0 and shuffles class after class; a local
  ``RandomState`` gives the same permutations without touching the global state).
* **CDB** (``hitachi-rd-cv/CDB-loss`` ``data_preprocessing.py``): the last ``val_per_class`` images of
  each class (file order) are held out for validation first (see
  :func:`tailwise.data.splits.per_class_tail_split`), so ``n_max`` = 475 for CIFAR-100; the subset keeps
  the *first* ``n_i`` images of each class in file order, no shuffle.

Both return indices grouped class by class (class 0 first), the order the official datasets store.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tailwise._validation import check_in_choices, check_int, describe

__all__ = ["LT_CONVENTIONS", "LT_PROFILES", "long_tail_counts", "long_tail_subsample"]

LT_PROFILES = ("exp", "step")
LT_CONVENTIONS = ("ldam", "cdb")




def long_tail_counts(n_max: int, num_classes: int, rho: float, profile: str = "exp") -> list[int]:
    """Per-class counts of a long-tailed training set, class 0 the head.

    ``exp``: ``n_i = int(n_max * (1/rho) ** (i / (C - 1)))`` for ``i = 0..C-1`` (the LDAM-DRW
    ``get_img_num_per_cls`` convention; ``int`` truncates). ``step``: the first ``C // 2`` classes get
    ``n_max`` and the rest ``int(n_max / rho)``.

    Args:
        n_max: count of the head class (5000 for CIFAR-10-LT, 500 for CIFAR-100-LT, 475 for CDB).
        num_classes: number of classes ``C`` (at least 1).
        rho: imbalance ratio ``n_max / n_min`` (at least 1; 1 gives a balanced set).
        profile: ``"exp"`` or ``"step"``.

    Returns:
        A list of ``C`` integer counts. CIFAR-10-LT with ``rho=100``:
        ``[5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]``.

    Raises:
        ValueError: ``rho < 1``, a non-positive ``n_max`` / ``num_classes`` or an unknown profile.
    """
    n_max = check_int("n_max", n_max)
    num_classes = check_int("num_classes", num_classes)
    check_in_choices("profile", profile, LT_PROFILES)
    if isinstance(rho, bool) or not isinstance(rho, (int, float, np.integer, np.floating)):
        raise TypeError(f"rho must be a number >= 1; got {describe(rho)}")
    if not np.isfinite(float(rho)) or float(rho) < 1:
        raise ValueError(f"rho must be a finite imbalance ratio >= 1 (n_max / n_min); got {rho!r}")
    imb = 1.0 / float(rho)
    if profile == "exp":
        if num_classes == 1:
            return [n_max]
        return [int(n_max * (imb ** (i / (num_classes - 1.0)))) for i in range(num_classes)]
    half = num_classes // 2
    return [n_max] * half + [int(n_max * imb)] * (num_classes - half)


def long_tail_subsample(
    labels: Sequence[int] | Tensor | np.ndarray,
    counts: Sequence[int],
    seed: int = 0,
    convention: str = "ldam",
) -> Tensor:
    """Indices of a long-tailed subset keeping ``counts[c]`` samples of class ``c``.

    Args:
        labels: 1-D integer labels of the (balanced) source training set, in file order.
        counts: per-class number to keep (e.g. from :func:`long_tail_counts`); class ``c`` must have at
            least ``counts[c]`` samples.
        seed: seed of the ``np.random.RandomState`` that shuffles each class (``"ldam"`` only; the
            official code uses 0).
        convention: ``"ldam"`` (per-class seeded shuffle, class by class in label order, then the first
            ``n_i``) or ``"cdb"`` (the first ``n_i`` of each class in file order). For the full CDB
            protocol hold out the validation split first with
            :func:`tailwise.data.splits.per_class_tail_split`.

    Returns:
        ``int64`` tensor of positions into ``labels``, grouped by class (class 0 first).

    Raises:
        ValueError: wrong ``counts`` length, negative counts, a class with fewer samples than asked,
            an unknown convention.
    """
    check_in_choices("convention", convention, LT_CONVENTIONS)
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.size == 0):
        raise ValueError(f"labels must be a 1-D sequence of integer labels; got {describe(labels)}")
    counts_list = [int(c) for c in counts]
    if any(c < 0 for c in counts_list):
        raise ValueError(f"counts must be non-negative; got {counts_list}")
    num_classes = len(counts_list)
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}] to match counts of length {num_classes}; "
            f"got values in [{int(y.min())}, {int(y.max())}]"
        )
    rng = np.random.RandomState(int(seed)) if convention == "ldam" else None
    chosen: list[np.ndarray] = []
    for c, n_c in enumerate(counts_list):
        idx = np.where(y == c)[0]
        if idx.size < n_c:
            raise ValueError(f"counts[{c}] = {n_c} exceeds the {idx.size} samples of class {c} in labels")
        if rng is not None:
            rng.shuffle(idx)
        chosen.append(idx[:n_c])
    out = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    return torch.as_tensor(out.astype(np.int64))
