"""Class-count helpers and their validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tailwise import class_counts_from_labels, class_priors, effective_number_weights, inverse_frequency_weights

C10_LT100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_counts_from_labels() -> None:
    assert class_counts_from_labels([0, 2, 2, 1, 2]).tolist() == [1, 1, 3]
    assert class_counts_from_labels(torch.tensor([1, 1]), num_classes=4).tolist() == [0, 2, 0, 0]
    assert class_counts_from_labels(np.array([3], dtype=np.uint8)).tolist() == [0, 0, 0, 1]


def test_priors_sum_to_one() -> None:
    p = class_priors(C10_LT100)
    assert p.dtype == torch.float64
    assert float(p.sum()) == pytest.approx(1.0)
    assert float(p[0]) == pytest.approx(5000 / sum(C10_LT100))


def test_effective_number_matches_drw_weights() -> None:
    w = effective_number_weights(C10_LT100, beta=0.9999)
    expected = [0.0506, 0.0769, 0.1211, 0.1950, 0.3188, 0.5246, 0.8683, 1.4426, 2.4092, 3.9927]
    np.testing.assert_allclose(w.numpy(), expected, atol=1e-4)
    assert float(w.sum()) == pytest.approx(10.0)
    assert torch.equal(effective_number_weights(C10_LT100, beta=0.0), torch.ones(10, dtype=torch.float64))


def test_inverse_frequency() -> None:
    w = inverse_frequency_weights([1, 2, 4])
    np.testing.assert_allclose(w.numpy(), np.array([1, 0.5, 0.25]) / 1.75 * 3)
    w = inverse_frequency_weights([1, 4], power=0.5, normalize=False)
    np.testing.assert_allclose(w.numpy(), [1.0, 0.5])


def test_bad_counts() -> None:
    with pytest.raises(ValueError, match=r"class_counts must be positive for every class; got zero counts for classes \[1\]"):
        effective_number_weights([3, 0, 2])
    with pytest.raises(ValueError, match=r"class_counts must be non-negative; got negative counts for classes \[0\]"):
        effective_number_weights([-1, 2])
    with pytest.raises(ValueError, match=r"class_counts must be a non-empty 1-D sequence of counts; got shape \(2, 2\)"):
        effective_number_weights([[1, 2], [3, 4]])
    with pytest.raises(TypeError, match=r"class_counts must be a 1-D sequence of numbers"):
        effective_number_weights(["a", "b"])
    with pytest.raises(ValueError, match=r"beta must lie in \[0, 1\); got 1.0"):
        effective_number_weights([1, 2], beta=1.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\] for num_classes=2; got label 2"):
        class_counts_from_labels([0, 2], num_classes=2)
    with pytest.raises(ValueError, match=r"labels must be a 1-D sequence of integer class indices"):
        class_counts_from_labels(torch.tensor([0.5, 1.0]))
