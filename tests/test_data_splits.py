"""Validation splits held out from the training data."""

from __future__ import annotations

import pytest
import torch

from tailwise.data import per_class_tail_split, train_val_split


def _check_partition(train: torch.Tensor, val: torch.Tensor, n: int) -> None:
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(n))


def test_stratified_fraction() -> None:
    labels = torch.arange(4).repeat_interleave(torch.tensor([100, 50, 10, 2]))
    train, val = train_val_split(labels, val_fraction=0.1, seed=0)
    _check_partition(train, val, labels.numel())
    assert torch.bincount(labels[val], minlength=4).tolist() == [10, 5, 1, 1]  # at least one per class


def test_val_per_class_keeps_a_training_sample() -> None:
    labels = torch.arange(3).repeat_interleave(torch.tensor([30, 10, 3]))
    train, val = train_val_split(labels, val_per_class=5, seed=1)
    _check_partition(train, val, labels.numel())
    assert torch.bincount(labels[val], minlength=3).tolist() == [5, 5, 2]
    assert torch.bincount(labels[train], minlength=3).min() >= 1


def test_unstratified_and_determinism() -> None:
    labels = torch.arange(5).repeat(20)
    a = train_val_split(labels, val_fraction=0.25, seed=7, stratified=False)
    b = train_val_split(labels, val_fraction=0.25, seed=7, stratified=False)
    c = train_val_split(labels, val_fraction=0.25, seed=8, stratified=False)
    assert torch.equal(a[1], b[1]) and a[1].numel() == 25
    assert not torch.equal(a[1], c[1])
    _check_partition(*a, 100)


def test_zero_fraction_gives_empty_val() -> None:
    train, val = train_val_split([0, 1, 1, 0], val_fraction=0.0)
    assert val.numel() == 0 and train.tolist() == [0, 1, 2, 3]


def test_per_class_tail_split_is_file_order() -> None:
    labels = [0, 1, 0, 1, 0, 1, 0]
    train, val = per_class_tail_split(labels, 1)
    assert train.tolist() == [0, 2, 4, 1, 3]
    assert val.tolist() == [6, 5]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="exactly one of val_fraction and val_per_class"):
        train_val_split([0, 1], val_fraction=0.1, val_per_class=1)
    with pytest.raises(ValueError, match="exactly one of val_fraction and val_per_class"):
        train_val_split([0, 1])
    with pytest.raises(ValueError, match=r"val_fraction must lie in \[0, 1\); got 1.5"):
        train_val_split([0, 1], val_fraction=1.5)
    with pytest.raises(ValueError, match="val_per_class needs stratified=True"):
        train_val_split([0, 1], val_per_class=1, stratified=False)
    with pytest.raises(ValueError, match="leaves no training sample for class 1"):
        per_class_tail_split([0, 0, 0, 1], 1)
