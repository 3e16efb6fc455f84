"""Randomized smoothing (Cohen et al.): count-level statistics, Monte-Carlo certify/predict, metrics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from tailwise.certify import (
    ABSTAIN,
    Smooth,
    average_certified_radius,
    certified_accuracy,
    certify_from_counts,
    lower_confidence_bound,
    max_certifiable_radius,
    plot_certified_accuracy,
    predict_from_counts,
    round_significant,
    warn_if_uncertifiable,
)

scipy_stats = pytest.importorskip("scipy.stats")


class Constant(nn.Module):
    """Always predicts ``label``."""

    def __init__(self, label: int, num_classes: int = 4) -> None:
        super().__init__()
        self.label, self.num_classes = label, num_classes
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.num_classes)
        out[:, self.label] = 1.0
        return out


class CoinFlip(nn.Module):
    """Class 0 or 1 by the sign of the (noisy) first coordinate: a fair coin around x = 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1)[:, :1]
        return torch.cat([s, -s, torch.full_like(s, -10.0)], dim=1)


def test_lower_confidence_bound_special_cases() -> None:
    assert lower_confidence_bound(0, 100, 0.001) == 0.0
    assert lower_confidence_bound(100, 100, 0.001) == pytest.approx(0.001 ** (1 / 100), rel=1e-12)
    assert lower_confidence_bound(700, 1000, 0.01) == pytest.approx(scipy_stats.beta.ppf(0.01, 700, 301), rel=1e-12)


def test_max_certifiable_radius() -> None:
    r = max_certifiable_radius(100_000, 0.001, 0.25)
    assert r == pytest.approx(0.25 * scipy_stats.norm.ppf(0.001 ** (1 / 100_000)), rel=1e-12)
    assert 0.95 < r < 0.96  # ≈ 3.81σ
    cert = certify_from_counts([0, 100, 0], [0, 100_000, 0], 100_000, 0.001, 0.25)
    assert cert.prediction == 1 and cert.radius == pytest.approx(r, rel=1e-12)


def test_certify_from_counts_abstains_and_breaks_ties_like_numpy() -> None:
    assert certify_from_counts([50, 50], [500, 500], 1000, 0.001, 0.5).prediction == ABSTAIN
    assert certify_from_counts([50, 50], [500, 500], 1000, 0.001, 0.5).radius == 0.0
    tie = certify_from_counts([10, 40, 40], [0, 990, 10], 1000, 0.001, 0.5)
    assert tie.prediction == 1 and tie.count == 990
    wrong_candidate = certify_from_counts([90, 10], [100, 900], 1000, 0.001, 0.5)
    assert wrong_candidate.prediction == ABSTAIN and wrong_candidate.count == 100


def test_predict_from_counts() -> None:
    assert predict_from_counts([3, 97, 0], 0.001).prediction == 1
    res = predict_from_counts([48, 52, 0], 0.001)
    assert res.prediction == ABSTAIN
    assert res.pvalue == pytest.approx(scipy_stats.binomtest(52, 100, 0.5).pvalue, rel=1e-12)
    assert predict_from_counts([0, 0, 0], 0.05).prediction == ABSTAIN


def test_constant_classifier_gets_max_radius() -> None:
    smooth = Smooth(Constant(2), num_classes=4, sigma=0.5)
    g = torch.Generator().manual_seed(0)
    label, radius = smooth.certify(torch.zeros(3, 2, 2), n0=10, n=500, alpha=0.01, batch_size=128, generator=g)
    assert label == 2
    assert radius == pytest.approx(max_certifiable_radius(500, 0.01, 0.5), rel=1e-12)
    assert smooth.predict(torch.zeros(3, 2, 2), n=50, alpha=0.01, batch_size=7, generator=g) == 2


def test_coin_flip_abstains() -> None:
    smooth = Smooth(CoinFlip(), num_classes=3, sigma=1.0)
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(4)
    assert smooth.certify(x, 100, 2000, 0.001, 256, generator=g) == (ABSTAIN, 0.0)
    assert smooth.predict(x, 2000, 0.001, 256, generator=g) == ABSTAIN


def test_counts_and_generator_determinism() -> None:
    smooth = Smooth(CoinFlip(), num_classes=3, sigma=1.0)
    x = torch.full((4,), 0.3)
    a = smooth.sample_counts(x, 1000, 300, torch.Generator().manual_seed(7))
    b = smooth.sample_counts(x, 1000, 300, torch.Generator().manual_seed(7))
    c = smooth.sample_counts(x, 1000, 300, torch.Generator().manual_seed(8))
    assert a.sum() == 1000 and a[2] == 0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # any batch size draws exactly n samples
    d = smooth.sample_counts(x, 1000, 1000, torch.Generator().manual_seed(7))
    assert d.sum() == 1000


def test_model_mode_is_restored() -> None:
    model = Constant(0)
    model.train()
    Smooth(model, 4, 0.25).sample_counts(torch.zeros(2), 10, 4)
    assert model.training


def test_certified_accuracy_and_acr() -> None:
    radii = np.array([0.0, 0.3, 0.6, 1.0, 0.8])
    preds = np.array([ABSTAIN, 1, 2, 0, 1])
    targets = np.array([0, 1, 2, 0, 0])
    acc = certified_accuracy(radii, preds, targets, at=[0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(acc, [3 / 5, 2 / 5, 1 / 5, 0.0])
    assert average_certified_radius(radii, preds, targets) == pytest.approx((0.3 + 0.6 + 1.0) / 5)
    assert average_certified_radius(radii, preds, correct=preds == targets) == pytest.approx(0.38)
    np.testing.assert_allclose(round_significant([0.953412, 1.23456e-3]), [0.953, 1.23e-3])


def test_radius_above_maximum_warns() -> None:
    r_max = max_certifiable_radius(1000, 0.001, 0.25)
    with pytest.warns(UserWarning, match="exceed the largest certifiable radius"):
        certified_accuracy([0.1], [0], [0], at=[0.5, 1.0], max_radius=r_max)
    with pytest.warns(UserWarning, match="exceeds the largest certifiable radius"):
        assert warn_if_uncertifiable(1.0, 1000, 0.001, 0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_uncertifiable(0.5, 1000, 0.001, 0.25)


def test_plot() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    ax = plot_certified_accuracy([0.1, 0.5, 0.0], [0, 1, ABSTAIN], [0, 1, 1], label="gaussian")
    assert ax.get_xlabel() == "radius (l2)"
    import matplotlib.pyplot as plt

    plt.close(ax.figure)


def test_bad_inputs() -> None:
    smooth = Smooth(Constant(0), 4, 0.25)
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1; got 0"):
        smooth.certify(x, 10, 100, 0.01, batch_size=0)
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
        smooth.predict(x, 10, 1.5, 10)
    with pytest.raises(TypeError, match="n must be an integer"):
        smooth.certify(x, 10, 100.0, 0.01, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        Smooth(Constant(0), 4, -1.0)
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        Smooth(Constant(0), 1, 0.5)
    with pytest.raises(ValueError, match=r"output must have shape \(batch, 3\)"):
        Smooth(Constant(0), 3, 0.5).sample_counts(x, 5, 5)
    with pytest.raises(ValueError, match="counts_selection must be non-negative"):
        certify_from_counts([-1, 3], [1, 3], 4, 0.01, 0.5)
    with pytest.raises(ValueError, match="counts_estimation must have the shape of counts_selection"):
        certify_from_counts([1, 3], [1, 3, 0], 4, 0.01, 0.5)
    with pytest.raises(ValueError, match="must sum to at most n"):
        certify_from_counts([1, 3], [10, 3], 4, 0.01, 0.5)
    with pytest.raises(ValueError, match="n_a must be at most n"):
        lower_confidence_bound(5, 4, 0.01)
    with pytest.raises(ValueError, match="counts must have at least 2 classes"):
        predict_from_counts([3], 0.01)
    with pytest.raises(ValueError, match="pass exactly one of targets or correct"):
        certified_accuracy([0.1], [0])
    with pytest.raises(ValueError, match="radii must have one entry per prediction"):
        certified_accuracy([0.1, 0.2], [0], [0])
    assert math.isfinite(max_certifiable_radius(10, 0.5, 1.0))
