"""LADC: tail-class feature calibration on synthetic Gaussian features."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tailwise.features import (
    LADC,
    calibrate_statistics,
    class_statistics,
    extract_features,
    fit_classifier,
    head_class_mask,
    related_head_classes,
    sample_calibrated_features,
    tukey_transform,
)

D = 8
COUNTS = [300, 200, 150, 3, 3]


def _true_means() -> torch.Tensor:
    eye = torch.eye(D, dtype=torch.float64) * 5
    head = eye[:3]
    tail = torch.stack([(head[0] + head[1]) / 2, (head[1] + head[2]) / 2])
    return torch.cat([head, tail])


def _features(seed: int, counts: list[int] = COUNTS) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mu = _true_means()
    xs, ys = [], []
    for c, n in enumerate(counts):
        xs.append(mu[c] + torch.randn(n, D, generator=g, dtype=torch.float64))
        ys.append(torch.full((n,), c))
    return torch.cat(xs), torch.cat(ys)


def test_class_statistics_match_torch() -> None:
    x, y = _features(0)
    means, covs, counts = class_statistics(x, y)
    assert counts.tolist() == COUNTS
    for c in range(5):
        torch.testing.assert_close(means[c], x[y == c].mean(0))
        torch.testing.assert_close(covs[c], torch.cov(x[y == c].T))
    _, var, _ = class_statistics(x, y, covariance="diag")
    torch.testing.assert_close(var, torch.diagonal(covs, dim1=1, dim2=2))


def test_head_mask_options() -> None:
    assert head_class_mask(COUNTS, 3).tolist() == [True, True, True, False, False]
    assert head_class_mask([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]).sum() == 4  # default 40%
    assert head_class_mask(COUNTS, [0, 2]).tolist() == [True, False, True, False, False]


def test_related_heads_are_the_true_neighbours() -> None:
    x, y = _features(1)
    means, _, counts = class_statistics(x, y)
    idx, w = related_head_classes(means, head_class_mask(counts, 3), k=2)
    assert sorted(idx[3].tolist()) == [0, 1] and sorted(idx[4].tolist()) == [1, 2]
    torch.testing.assert_close(w.sum(1), torch.ones(5, dtype=torch.float64))
    _, wu = related_head_classes(means, head_class_mask(counts, 3), k=2, weighting="uniform")
    assert torch.all(wu == 0.5)
    idx_e, _ = related_head_classes(means, head_class_mask(counts, 3), k=2, similarity="euclidean")
    assert sorted(idx_e[3].tolist()) == [0, 1]


def test_calibrated_tail_means_move_toward_truth() -> None:
    mu = _true_means()
    before, after = 0.0, 0.0
    for seed in range(10):
        x, y = _features(seed)
        means, covs, counts = class_statistics(x, y)
        mask = head_class_mask(counts, 3)
        idx, w = related_head_classes(means, mask, k=2)
        cal_means, cal_covs = calibrate_statistics(means, covs, idx, w, ~mask)
        before += float((means[3:] - mu[3:]).norm(dim=1).sum())
        after += float((cal_means[3:] - mu[3:]).norm(dim=1).sum())
        torch.testing.assert_close(cal_means[:3], means[:3])  # head classes untouched
        assert bool((torch.linalg.eigvalsh(cal_covs[3:]) > 0.19).all())  # + alpha I keeps them positive definite
    assert after < 0.7 * before


def test_calibration_formula() -> None:
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=torch.float64)
    covs = torch.stack([torch.eye(2) * s for s in (1.0, 2.0, 7.0)]).double()
    idx = torch.tensor([[1, 0], [0, 1], [0, 1]])
    w = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.25, 0.75]], dtype=torch.float64)
    tail = torch.tensor([False, False, True])
    m, c = calibrate_statistics(means, covs, idx, w, tail, alpha=0.1)
    torch.testing.assert_close(m[2], (means[2] + 0.25 * means[0] + 0.75 * means[1]) / 2)
    torch.testing.assert_close(c[2], (0.25 * covs[0] + 0.75 * covs[1]) + 0.1 * torch.eye(2, dtype=torch.float64))
    _, c_mix = calibrate_statistics(means, covs, idx, w, tail, alpha=0.0, mix_own_covariance=True)
    torch.testing.assert_close(c_mix[2], (covs[2] + 0.25 * covs[0] + 0.75 * covs[1]) / 2)


def test_sampling_balances_classes_and_is_seeded() -> None:
    x, y = _features(2)
    means, covs, counts = class_statistics(x, y)
    sx, sy = sample_calibrated_features(means, covs, counts, "max", torch.Generator().manual_seed(0))
    total = torch.bincount(torch.cat([y, sy]), minlength=5)
    assert total.tolist() == [300] * 5
    sx2, _ = sample_calibrated_features(means, covs, counts, "max", torch.Generator().manual_seed(0))
    torch.testing.assert_close(sx, sx2)
    _, sy_mean = sample_calibrated_features(means, covs, counts, "mean")
    assert torch.bincount(torch.cat([y, sy_mean]), minlength=5)[3:].tolist() == [131, 131]


def test_ladc_fit_end_to_end_and_state_dict() -> None:
    x, y = _features(3)
    backbone = nn.Identity()
    ladc = LADC(head_classes=3, epochs=15, lr=0.05)
    head = ladc.fit(backbone, x, y, generator=torch.Generator().manual_seed(0))
    assert isinstance(head, nn.Linear)
    xt, yt = _features(99, [100] * 5)
    acc = (ladc.predict(backbone, xt).argmax(1) == yt).double().mean()
    assert acc > 0.7
    tail_acc = (ladc.predict(backbone, xt[yt >= 3]).argmax(1) == yt[yt >= 3]).double().mean()
    assert tail_acc > 0.5
    restored = LADC(head_classes=3)
    restored.load_state_dict(ladc.state_dict())
    torch.testing.assert_close(restored(xt), ladc(xt))
    torch.testing.assert_close(restored.calibrated_means, ladc.calibrated_means)


def test_extract_features_batches_and_restores_mode() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5))
    model.train()
    x = torch.randn(10, 4)
    f = extract_features(model, x, batch_size=3)
    assert f.shape == (10, 3) and model.training
    model.eval()
    torch.testing.assert_close(f, model(x).detach())


def test_fit_classifier_learns_separable_data() -> None:
    x, y = _features(4, [50, 50, 50, 0, 0])  # the three well-separated head classes
    head = nn.Linear(D, 3).double()
    fit_classifier(x, y, head, epochs=10, lr=0.1, generator=torch.Generator().manual_seed(0))
    assert (head(x).argmax(1) == y).double().mean() > 0.9


def test_tukey_transform() -> None:
    torch.testing.assert_close(tukey_transform(torch.tensor([4.0, 9.0])), torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match="non-negative features"):
        tukey_transform(torch.tensor([-1.0]))


def test_bad_inputs() -> None:
    x, y = _features(0)
    with pytest.raises(ValueError, match="covariance must be one of"):
        class_statistics(x, y, covariance="sparse")
    with pytest.raises(ValueError, match="labels must be a"):
        class_statistics(x, y[:-1])
    with pytest.raises(ValueError, match="similarity must be one of"):
        LADC(similarity="dot")
    with pytest.raises(ValueError, match="head_classes must leave at least one head and one tail"):
        head_class_mask(COUNTS, 5)
    with pytest.raises(ValueError, match="target_count must be"):
        sample_calibrated_features(torch.zeros(2, 2), torch.zeros(2, 2, 2), torch.tensor([3, 1]), "median")
    with pytest.raises(RuntimeError, match="needs a fitted head"):
        LADC()(x)
