"""ArrayDataset and the trainer-facing prepare_data pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tailwise.data import ArrayDataset, long_tail_counts, prepare_data


@pytest.fixture
def balanced_npz(tmp_path: Path) -> Path:
    """A balanced 10-class set, 60 per class, interleaved labels, tiny 3x4x4 images."""
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(10), 60)
    path = tmp_path / "toy.npz"
    np.savez(path, x_train=rng.integers(0, 256, (600, 4, 4, 3), dtype=np.uint8), y_train=y,
             x_test=rng.integers(0, 256, (50, 4, 4, 3), dtype=np.uint8), y_test=np.tile(np.arange(10), 5))
    return path


def test_array_dataset_basics() -> None:
    ds = ArrayDataset(torch.zeros(5, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1, 2, 2]), 4)
    assert len(ds) == 5 and ds.index.tolist() == [0, 1, 2, 3, 4]
    assert ds.class_counts().tolist() == [1, 2, 2, 0]
    sub = ds.subset([4, 1])
    assert sub.y.tolist() == [2, 1] and sub.index.tolist() == [4, 1] and sub.num_classes == 4
    assert ds.subset(torch.tensor([True, False, True, False, False])).index.tolist() == [0, 2]
    with pytest.raises(ValueError, match=r"y labels must lie in \[0, 1\] for 2 classes; got values in \[0, 2\]"):
        ArrayDataset(torch.zeros(3, 1, 2), torch.tensor([0, 1, 2]), 2)
    with pytest.raises(ValueError, match=r"y must have shape \(2,\)"):
        ArrayDataset(torch.zeros(2, 1, 2), torch.tensor([0, 1, 1]), 2)
    with pytest.raises(IndexError, match="indices must lie in"):
        ds.subset([7])


def test_plain_split(balanced_npz: Path) -> None:
    b = prepare_data("npz", path=balanced_npz, val_fraction=0.1, seed=0)
    assert len(b.train) == 540 and len(b.val) == 60 and len(b.test) == 50
    assert b.val.class_counts().tolist() == [6] * 10
    assert set(b.train.index.tolist()).isdisjoint(b.val.index.tolist())
    assert b.num_classes == 10 and b.input_shape == (3, 4, 4) and b.augment is True
    json.dumps(b.info)


def test_long_tail_then_val_then_noise(balanced_npz: Path) -> None:
    b = prepare_data("npz", path=balanced_npz, long_tail={"rho": 10}, val_fraction=0.1,
                     noise={"kind": "symmetric", "rate": 0.4, "seed": 3}, seed=1)
    counts = long_tail_counts(60, 10, 10)
    total = (b.train.clean_y.bincount(minlength=10) + b.val.clean_y.bincount(minlength=10)).tolist()
    assert total == counts
    assert bool((b.val.clean_y.bincount(minlength=10) >= 1).all())
    assert b.train.clean_y is not None and b.val.clean_y is not None
    info = json.loads(json.dumps(b.info))
    assert info["long_tail"]["counts"] == counts
    assert 0.2 < info["noise"]["realised_rate_train"] < 0.6
    t = torch.tensor(info["noise"]["transition_train"])
    torch.testing.assert_close(t.sum(1), torch.ones(10, dtype=t.dtype))
    assert info["sizes"] == {"train": len(b.train), "val": len(b.val), "test": 50}
    again = prepare_data("npz", path=balanced_npz, long_tail={"rho": 10}, val_fraction=0.1,
                         noise={"kind": "symmetric", "rate": 0.4, "seed": 3}, seed=1)
    assert torch.equal(again.train.y, b.train.y) and torch.equal(again.train.index, b.train.index)


def test_noise_val_false_keeps_val_clean(balanced_npz: Path) -> None:
    b = prepare_data("npz", path=balanced_npz, noise={"kind": "pair", "rate": 0.5, "noise_val": False})
    assert b.val.clean_y is None and b.train.clean_y is not None
    assert bool((b.train.y != b.train.clean_y).any())


def test_cdb_convention(balanced_npz: Path) -> None:
    b = prepare_data("npz", path=balanced_npz, long_tail={"rho": 5, "convention": "cdb", "val_per_class": 5})
    assert b.val.class_counts().tolist() == [5] * 10
    assert b.train.class_counts().tolist() == long_tail_counts(55, 10, 5)
    assert b.info["long_tail"]["n_max"] == 55


def test_mnist1d_bundle() -> None:
    b = prepare_data("mnist1d", num_samples=200, cache=False, val_per_class=2)
    assert b.input_shape == (1, 40) and b.val.class_counts().tolist() == [2] * 10
    assert b.augment is False


def test_bad_inputs(balanced_npz: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown long_tail key\(s\) \['ratio'\]; valid keys: \['profile', 'rho'"):
        prepare_data("npz", path=balanced_npz, long_tail={"ratio": 10})
    with pytest.raises(ValueError, match=r"unknown noise key\(s\) \['prob'\]; valid keys: \['kind', 'rate'"):
        prepare_data("npz", path=balanced_npz, noise={"kind": "symmetric", "prob": 0.1})
    with pytest.raises(ValueError, match=r"noise kind must be one of \[.*\]; got 'gaussian'"):
        prepare_data("npz", path=balanced_npz, noise={"kind": "gaussian", "rate": 0.1})
    with pytest.raises(ValueError, match="rho must be a finite imbalance ratio >= 1"):
        prepare_data("npz", path=balanced_npz, long_tail={"rho": 0.5})
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; expected one of"):
        prepare_data("imagenet")
