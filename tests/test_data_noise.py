"""Synthetic label noise: rates, transition matrices, determinism, the fixed flip maps."""

from __future__ import annotations

import pytest
import torch

from tailwise.data import CIFAR100_COARSE, NOISE_KINDS, apply_noise, transition_matrix

LABELS10 = torch.arange(10).repeat(2000)
LABELS100 = torch.arange(100).repeat(200)


@pytest.mark.parametrize("kind", ["symmetric", "pair", "uniform"])
def test_rate_near_target_and_rows_sum_to_one(kind: str) -> None:
    out = apply_noise(kind, LABELS10, 0.3, 10, seed=0)
    target = 0.3 * 0.9 if kind == "uniform" else 0.3
    assert abs(out.noise_rate - target) < 0.015
    assert out.labels.dtype == torch.int64 and out.labels.shape == LABELS10.shape
    assert out.transition.shape == (10, 10)
    torch.testing.assert_close(out.transition.sum(1), torch.ones(10, dtype=torch.float64))
    assert out.noise_rate == pytest.approx(float((out.labels != LABELS10).double().mean()))


def test_symmetric_never_keeps_label_when_flipped() -> None:
    out = apply_noise("symmetric", LABELS10, 1.0, 10, seed=1)
    assert out.noise_rate == 1.0
    assert bool((out.labels != LABELS10).all())
    off_diag = out.transition[~torch.eye(10, dtype=torch.bool)]
    assert off_diag.min() > 0.08 and off_diag.max() < 0.15


def test_seeded_determinism() -> None:
    for kind in ("symmetric", "uniform", "pair", "asymmetric_cifar10"):
        a = apply_noise(kind, LABELS10, 0.4, 10, seed=5)
        b = apply_noise(kind, LABELS10, 0.4, 10, seed=5)
        c = apply_noise(kind, LABELS10, 0.4, 10, seed=6)
        assert torch.equal(a.labels, b.labels)
        assert not torch.equal(a.labels, c.labels)


def test_asymmetric_cifar10_map() -> None:
    out = apply_noise("asymmetric_cifar10", LABELS10, 1.0, 10, seed=0)
    expected = {0: 0, 1: 1, 2: 0, 3: 5, 4: 7, 5: 3, 6: 6, 7: 7, 8: 8, 9: 1}
    for c, d in expected.items():
        mask = LABELS10.eq(c)
        assert set(out.labels[mask].tolist()) == {d}
    assert out.noise_rate == pytest.approx(0.5)


def test_pair_and_transition_diagonal() -> None:
    out = apply_noise("pair", LABELS10, 0.2, 10, seed=0)
    t = out.transition
    assert bool(((t.diagonal() - 0.8).abs() < 0.03).all())
    assert bool(((t[torch.arange(10), (torch.arange(10) + 1) % 10] - 0.2).abs() < 0.03).all())


@pytest.mark.parametrize("grouping", ["superclass", "block"])
def test_cifar100_next_stays_in_group(grouping: str) -> None:
    out = apply_noise("cifar100_next", LABELS100, 1.0, 100, seed=0, grouping=grouping)
    coarse = torch.tensor(CIFAR100_COARSE)
    group = coarse if grouping == "superclass" else torch.arange(100) // 5
    assert bool((group[out.labels] == group[LABELS100]).all())
    assert out.noise_rate == 1.0
    assert sorted(torch.bincount(coarse, minlength=20).tolist()) == [5] * 20


def test_instance_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randint(0, 256, (LABELS10.numel(), 3, 4, 4), dtype=torch.uint8, generator=gen)
    a = apply_noise("instance", LABELS10, 0.3, 10, seed=0, features=feats)
    b = apply_noise("instance", LABELS10, 0.3, 10, seed=0, features=feats)
    assert torch.equal(a.labels, b.labels)
    assert abs(a.noise_rate - 0.3) < 0.03
    torch.testing.assert_close(a.transition.sum(1), torch.ones(10, dtype=torch.float64))


def test_transition_matrix_identity_for_absent_class() -> None:
    t = transition_matrix(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 3)
    torch.testing.assert_close(t, torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64))


def test_zero_rate_is_identity() -> None:
    for kind in NOISE_KINDS:
        labels = LABELS100 if kind == "cifar100_next" else LABELS10
        c = 100 if kind == "cifar100_next" else 10
        feats = torch.zeros(labels.numel(), 2) if kind == "instance" else None
        out = apply_noise(kind, labels, 0.0, c, seed=0, features=feats)
        assert torch.equal(out.labels, labels) and out.noise_rate == 0.0


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"kind must be one of \[.*'symmetric'.*\]; got 'gaussian'"):
        apply_noise("gaussian", LABELS10, 0.2, 10)
    with pytest.raises(ValueError, match=r"rate must lie in \[0, 1\]; got 1.5"):
        apply_noise("symmetric", LABELS10, 1.5, 10)
    with pytest.raises(ValueError, match="labels must lie in"):
        apply_noise("symmetric", torch.tensor([0, 10]), 0.2, 10)
    with pytest.raises(ValueError, match="needs num_classes=10; got num_classes=5"):
        apply_noise("asymmetric_cifar10", torch.tensor([0, 1]), 0.2, 5)
    with pytest.raises(ValueError, match="needs features"):
        apply_noise("instance", LABELS10, 0.2, 10)
    with pytest.raises(ValueError, match="grouping must be one of"):
        apply_noise("cifar100_next", LABELS100, 0.2, 100, grouping="random")
