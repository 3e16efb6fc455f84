"""Long-tail counts and subsampling (LDAM-DRW and CDB-loss conventions)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from golden_checkers.data import CHECKERS
from tailwise.data import long_tail_counts, long_tail_subsample, per_class_tail_split

GOLDEN = Path(os.environ.get("TAILWISE_GOLDENS", Path(__file__).resolve().parents[2] / "shared" / "goldens"))


def test_golden_lt_class_counts() -> None:
    path = GOLDEN / "lt_class_counts_1.npz"
    if not path.is_file():
        pytest.skip(f"golden file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        CHECKERS["lt_class_counts"]({k: z[k] for k in z.files})


def test_checker_rejects_wrong_counts() -> None:
    data = {"c10_exp_100": np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 51])}
    with pytest.raises(AssertionError):
        CHECKERS["lt_class_counts"](data)


def test_known_counts() -> None:
    assert long_tail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert long_tail_counts(5000, 10, 10) == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    assert sum(long_tail_counts(500, 100, 100)) == 10847
    assert sum(long_tail_counts(500, 100, 10)) == 19573
    assert sum(long_tail_counts(475, 100, 100)) == 10302
    assert long_tail_counts(5000, 10, 100, "step") == [5000] * 5 + [50] * 5
    assert long_tail_counts(100, 4, 1) == [100] * 4
    assert long_tail_counts(7, 1, 10) == [7]


def test_ldam_subsample_matches_seeded_shuffle() -> None:
    labels = np.tile(np.arange(10), 100)
    counts = long_tail_counts(100, 10, 10)
    idx = long_tail_subsample(labels, counts, seed=0)
    rng = np.random.RandomState(0)
    expected = []
    for c, n in enumerate(counts):
        pos = np.where(labels == c)[0]
        rng.shuffle(pos)
        expected.append(pos[:n])
    assert idx.tolist() == np.concatenate(expected).tolist()
    assert idx.dtype == torch.int64
    assert np.bincount(labels[idx.numpy()], minlength=10).tolist() == counts


def test_subsample_determinism_and_seed() -> None:
    labels = torch.arange(10).repeat(50)
    counts = long_tail_counts(50, 10, 20)
    a = long_tail_subsample(labels, counts, seed=3)
    b = long_tail_subsample(labels, counts, seed=3)
    c = long_tail_subsample(labels, counts, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.bincount(labels[c], minlength=10).tolist() == counts


def test_cdb_convention_file_order() -> None:
    labels = np.tile(np.arange(5), 20)  # 20 per class
    train_idx, val_idx = per_class_tail_split(labels, 5)
    assert np.bincount(labels[val_idx.numpy()]).tolist() == [5] * 5
    # the last 5 of each class in file order are held out
    assert val_idx[:5].tolist() == np.where(labels == 0)[0][-5:].tolist()
    rest = labels[train_idx.numpy()]
    counts = long_tail_counts(15, 5, 5)
    idx = long_tail_subsample(rest, counts, convention="cdb")
    assert idx[: counts[0]].tolist() == list(range(counts[0]))  # first n_0 of class 0, no shuffle
    assert np.bincount(rest[idx.numpy()], minlength=5).tolist() == counts


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"rho must be .*>= 1.*0\.5"):
        long_tail_counts(500, 10, 0.5)
    with pytest.raises(ValueError, match="profile must be one of"):
        long_tail_counts(500, 10, 10, profile="linear")
    with pytest.raises(ValueError, match="n_max"):
        long_tail_counts(0, 10, 10)
    with pytest.raises(ValueError, match="convention must be one of"):
        long_tail_subsample([0, 1], [1, 1], convention="random")
    with pytest.raises(ValueError, match=r"counts\[1\] = 3 exceeds the 1 samples of class 1"):
        long_tail_subsample([0, 0, 0, 1], [2, 3])
    with pytest.raises(ValueError, match="labels must lie in"):
        long_tail_subsample([0, 5], [1, 1])
