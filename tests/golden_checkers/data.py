"""Golden checker for the data layer: ``lt_class_counts`` (CIFAR-LT per-class training counts).

Every key is recomputed from its name alone: ``c10_exp_100`` -> 10 classes, ``exp`` profile, rho 100,
LDAM convention with n_max 5000 (CIFAR-10) / 500 (CIFAR-100); ``cdb_c100_exp_50`` -> CDB convention:
25 images per class held out (last in file order) from a balanced 500-per-class set, then the first
``n_i`` of each class with n_max = what remains (475). The counts go through the public subsampling
functions on synthetic balanced labels, and the stored arrays are read only to compare.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from tailwise.data import long_tail_counts, long_tail_subsample, per_class_tail_split

_KEY = re.compile(r"^(?P<cdb>cdb_)?c(?P<c>\d+)_(?P<profile>[a-z]+)_(?P<rho>\d+(?:\.\d+)?)$")
_PER_CLASS = {10: 5000, 100: 500}  # balanced CIFAR training images per class
_CDB_VAL = 25


def _balanced_labels(num_classes: int, per_class: int) -> np.ndarray:
    """Interleaved labels 0, 1, ..., C-1, 0, 1, ... (a file order with every class spread out)."""
    return np.tile(np.arange(num_classes, dtype=np.int64), per_class)


def _counts_from_key(key: str) -> list[int]:
    m = _KEY.match(key)
    assert m is not None, f"lt_class_counts: cannot parse key {key!r}"
    c, profile, rho = int(m["c"]), m["profile"], float(m["rho"])
    per_class = _PER_CLASS.get(c, 500)
    labels = _balanced_labels(c, per_class)
    if m["cdb"]:
        train_idx, val_idx = per_class_tail_split(labels, _CDB_VAL)
        assert torch.equal(torch.bincount(torch.as_tensor(labels)[val_idx], minlength=c), torch.full((c,), _CDB_VAL))
        labels = labels[train_idx.numpy()]
        convention = "cdb"
    else:
        convention = "ldam"
    n_max = int(np.bincount(labels, minlength=c).max())
    counts = long_tail_counts(n_max, c, rho, profile)
    idx = long_tail_subsample(labels, counts, seed=0, convention=convention)
    realised = np.bincount(labels[idx.numpy()], minlength=c)
    assert realised.tolist() == counts, f"{key}: subsample gives {realised.tolist()} for counts {counts}"
    return counts


def check_lt_class_counts(data: dict[str, np.ndarray]) -> None:
    """Recompute each count array from its key name and compare exactly."""
    keys = [k for k in data if _KEY.match(k)]
    assert keys, f"lt_class_counts: no count keys in {sorted(data)}"
    for key in keys:
        got = _counts_from_key(key)
        np.testing.assert_array_equal(np.asarray(got, dtype=np.int64), np.asarray(data[key]).astype(np.int64),
                                      err_msg=f"lt_class_counts[{key!r}]")


CHECKERS = {"lt_class_counts": check_lt_class_counts}
