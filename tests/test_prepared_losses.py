"""Prepared functional losses: reuse with the same arguments, and no stale constants after any change."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import tailwise
from tailwise.class_counts import effective_number_weights
from tailwise.functional import (
    bayias_loss,
    cals_loss,
    cals_penalty,
    class_balanced_loss,
    focal_loss,
    ldam_loss,
    logit_adjusted_loss,
    vs_loss,
)
from tailwise.functional._prepared import PreparedLosses
from tailwise.functional.focal import _focal_reference

COUNTS = [500.0, 120.0, 40.0, 9.0, 3.0]
C = len(COUNTS)


def _batch(n: int = 16, dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, generator=g, dtype=dtype) * 2, torch.randint(C, (n,), generator=g)


def _vs_reference(z: Tensor, y: Tensor, counts: Tensor, gamma: float, tau: float, weight: Tensor | None) -> Tensor:
    """VS loss written out in float64."""
    c = counts.double()
    t = (c / c.max()).pow(gamma) * z.double() + tau * torch.log(c / c.sum())
    return F.cross_entropy(t, y, weight=None if weight is None else weight.double())


def _ldam_reference(z: Tensor, y: Tensor, margins: Tensor, scale: float) -> Tensor:
    t = scale * (z.double() - F.one_hot(y, C) * margins.double())
    return F.cross_entropy(t, y)


def _bayias_reference(z: Tensor, y: Tensor, counts: Tensor, prior: Tensor | None) -> Tensor:
    c = counts.double()
    q = torch.full((C,), 1.0 / C, dtype=torch.float64) if prior is None else prior.double() / prior.double().sum()
    return F.cross_entropy(z.double() + torch.log(c / c.sum()) - torch.log(q), y)


def _cals_reference(z: Tensor, y: Tensor, lam: Tensor, rho: Tensor) -> Tensor:
    zd = z.double()
    return F.cross_entropy(zd, y) + cals_penalty(zd, lam.double(), rho.double(), 10.0).mean()


def _entries(module: object) -> int:
    return len(module._PREPARED._entries)  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _empty_caches() -> None:
    import tailwise.functional.bayias as bayias_module
    import tailwise.functional.cals as cals_module
    import tailwise.functional.ldam as ldam_module
    import tailwise.functional.vs as vs_module

    for module in (vs_module, ldam_module, bayias_module, cals_module):
        module._PREPARED.clear()


def test_same_tensor_arguments_reuse_one_prepared_loss() -> None:
    import tailwise.functional.vs as vs_module

    counts = torch.tensor(COUNTS)
    z, y = _batch()
    first = vs_loss(z, y, counts, 0.3, 1.1)
    assert _entries(vs_module) == 1
    z2, y2 = _batch(seed=1)
    second = vs_loss(z2, y2, counts, 0.3, 1.1)
    assert _entries(vs_module) == 1  # reused
    torch.testing.assert_close(first.double(), _vs_reference(z, y, counts, 0.3, 1.1, None))
    torch.testing.assert_close(second.double(), _vs_reference(z2, y2, counts, 0.3, 1.1, None))
    vs_loss(z, y, counts, 0.3, 1.2)  # another hyperparameter: another entry
    vs_loss(z.double(), y, counts, 0.3, 1.1)  # another dtype: another entry
    assert _entries(vs_module) == 3


@pytest.mark.parametrize(
    "change",
    ["in_place", "another_tensor", "weight_in_place", "weight_set"],
)
def test_changed_arguments_are_seen(change: str) -> None:
    counts = torch.tensor(COUNTS)
    weight = torch.ones(C)
    z, y = _batch()
    vs_loss(z, y, counts, 0.3, 1.1, weight=weight)
    if change == "in_place":
        counts.mul_(torch.tensor([1.0, 3.0, 1.0, 5.0, 1.0]))
    elif change == "another_tensor":
        counts = counts * torch.tensor([1.0, 3.0, 1.0, 5.0, 1.0])
    elif change == "weight_in_place":
        weight[2] = 4.0
    else:
        weight = torch.linspace(0.5, 2.0, C)
    out = vs_loss(z, y, counts, 0.3, 1.1, weight=weight)
    torch.testing.assert_close(out.double(), _vs_reference(z, y, counts, 0.3, 1.1, weight))


@pytest.mark.parametrize("counts_kind", ["list", "array"])
def test_unkeyable_arguments_prepare_every_call(counts_kind: str) -> None:
    import numpy as np

    import tailwise.functional.vs as vs_module

    counts = list(COUNTS) if counts_kind == "list" else np.array(COUNTS)
    z, y = _batch()
    out = logit_adjusted_loss(z, y, counts)
    assert _entries(vs_module) == 0
    counts[3] = 90.0  # a list or an array may change without a trace: nothing was kept
    out2 = logit_adjusted_loss(z, y, counts)
    torch.testing.assert_close(out.double(), _vs_reference(z, y, torch.tensor(COUNTS), 0.0, 1.0, None))
    torch.testing.assert_close(out2.double(), _vs_reference(z, y, torch.tensor(counts, dtype=torch.float64), 0.0, 1.0, None))


def test_every_functional_loss_follows_in_place_changes() -> None:
    z, y = _batch()
    counts = torch.tensor(COUNTS)
    margins = torch.linspace(0.1, 0.5, C)
    prior = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    lam, rho = torch.full((C,), 0.5), torch.full((C,), 2.0)
    cases: list[tuple[Callable[[], Tensor], Callable[[], Tensor], Tensor]] = [
        (lambda: ldam_loss(z, y, margins=margins), lambda: _ldam_reference(z, y, margins, 30.0), margins),
        (lambda: bayias_loss(z, y, counts, prior), lambda: _bayias_reference(z, y, counts, prior), prior),
        (lambda: bayias_loss(z, y, counts), lambda: _bayias_reference(z, y, counts, None), counts),
        (lambda: cals_loss(z, y, lam, rho), lambda: _cals_reference(z, y, lam, rho), lam),
        (lambda: focal_loss(z, y, weight=prior), lambda: _focal_reference(z.double(), y, 2.0, prior.double(), "mean", False), prior),
        (
            lambda: class_balanced_loss(z, y, counts, loss_type="focal"),
            lambda: _focal_reference(z.double(), y, 2.0, effective_number_weights(counts.numpy(), 0.9999).double(), "mean", False),
            counts,
        ),
    ]
    for loss, reference, state in cases:
        torch.testing.assert_close(loss().double(), reference(), rtol=1e-5, atol=1e-5)
        state.mul_(1.7)
        torch.testing.assert_close(loss().double(), reference(), rtol=1e-5, atol=1e-5)


def test_ldam_from_counts_follows_max_margin_and_scale() -> None:
    counts = torch.tensor(COUNTS)
    z, y = _batch()
    base = ldam_loss(z, y, counts)
    assert not torch.equal(base, ldam_loss(z, y, counts, max_margin=0.3))
    assert not torch.equal(base, ldam_loss(z, y, counts, scale=10.0))
    torch.testing.assert_close(ldam_loss(z, y, counts, max_margin=0.0, scale=1.0), F.cross_entropy(z, y))


def test_bad_arguments_still_raise_after_good_calls() -> None:
    counts = torch.tensor(COUNTS)
    z, y = _batch()
    vs_loss(z, y, counts, gamma=1)
    with pytest.raises(TypeError, match="gamma must be a number"):
        vs_loss(z, y, counts, gamma=True)  # True == 1, but the key tells the types apart
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        vs_loss(z, torch.full_like(y, 5), counts, gamma=1)  # a hit still checks the labels
    bad = z.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="logits must be finite"):
        vs_loss(bad, y, counts, gamma=1)
    with pytest.raises(ValueError, match="reduction must be one of"):
        ldam_loss(z, y, counts, reduction="avg")


def test_loss_prepared_with_checks_off_is_checked_once_they_are_on() -> None:
    z, y = _batch()
    weight = torch.ones(C)
    weight[1] = float("nan")
    with tailwise.validation_disabled():
        vs_loss(z, y, torch.tensor(COUNTS), weight=weight)  # not checked, not an error
        counts = torch.tensor(COUNTS)
        vs_loss(z, y, counts, weight=weight)
    with pytest.raises(ValueError, match="weight must be finite"):
        vs_loss(z, y, counts, weight=weight)


def test_cache_is_bounded_and_keeps_its_tensors() -> None:
    cache = PreparedLosses(maxsize=3)
    z = torch.zeros(2, C)
    tensors = [torch.ones(C) * i for i in range(5)]
    for i, t in enumerate(tensors):
        key = cache.key("x", z, t)
        cache.put(key, lambda a, b, i=i: torch.tensor(float(i)), (t,))
    assert len(cache._entries) == 3
    assert cache.get(cache.key("x", z, tensors[0])) is None  # the oldest went first
    assert float(cache.get(cache.key("x", z, tensors[4]))(z, z)) == 4.0
    assert all(any(t is s for s in entry[2]) for entry, t in zip(cache._entries.values(), tensors[2:]))
    assert cache.key("x", [[0.0]], tensors[0]) is None and cache.key("x", z, [1.0, 2.0]) is None


@pytest.mark.parametrize("name", ["vs", "la", "ldam", "bayias", "cals", "logit_clip", "alpha", "mbls", "ce", "focal", "class_balanced"])
def test_inference_mode_state_is_never_stale(name: str) -> None:
    # inference-mode tensors have no version counter: modules built under torch.inference_mode() and
    # functional calls with such tensors work, are not cached, and follow in-place changes
    import tailwise.losses  # noqa: F401  (registers the losses)
    from tailwise.registry import LOSSES

    z, y = _batch()
    with torch.inference_mode():
        loss = LOSSES.build(name, {}, class_counts=COUNTS, num_classes=C)
        first = loss(z, y)
    reference = LOSSES.build(name, {}, class_counts=COUNTS, num_classes=C)
    torch.testing.assert_close(loss(z, y), reference(z, y))
    torch.testing.assert_close(first, reference(z, y))
    buffers = [b for b in loss.buffers() if b is not None and b.is_floating_point() and b.numel() == C]
    if buffers:
        with torch.inference_mode():
            buffers[0].mul_(1.5)
        for b, r in zip(loss.buffers(), reference.buffers()):
            if b is not None and r is not None:
                with torch.no_grad():
                    r.copy_(b)
        torch.testing.assert_close(loss(z, y), reference(z, y))


def test_functional_inference_tensors_are_not_cached() -> None:
    import tailwise.functional.vs as vs_module

    z, y = _batch()
    with torch.inference_mode():
        counts = torch.tensor(COUNTS)
        out = vs_loss(z, y, counts, 0.3, 1.1)
        assert _entries(vs_module) == 0
        counts[4] = 50.0
        changed = vs_loss(z, y, counts, 0.3, 1.1)
    torch.testing.assert_close(out.double(), _vs_reference(z, y, torch.tensor(COUNTS), 0.3, 1.1, None))
    torch.testing.assert_close(changed.double(), _vs_reference(z, y, counts.clone(), 0.3, 1.1, None))


@pytest.mark.parametrize(
    "name", ["vs", "la", "cdt", "ldam", "bayias", "cals", "logit_clip", "alpha", "mbls", "ce", "focal", "class_balanced"]
)
def test_modules_pickle_after_use(name: str) -> None:
    # the prepared constants hold local functions: pickling drops them and the copy rebuilds its own
    import copy
    import pickle

    import tailwise.losses  # noqa: F401  (registers the losses)
    from tailwise.registry import LOSSES

    z, y = _batch()
    loss = LOSSES.build(name, {}, class_counts=COUNTS, num_classes=C)
    expected = loss(z, y)
    for clone in (pickle.loads(pickle.dumps(loss)), copy.deepcopy(loss)):
        torch.testing.assert_close(clone(z, y), expected)
    torch.testing.assert_close(loss(z, y), expected)


@pytest.mark.parametrize("shape", [(16, 5), (300, 40)])
@pytest.mark.parametrize(
    "name", ["vs", "la", "cdt", "ldam", "bayias", "cals", "logit_clip", "alpha", "mbls", "ce", "weighted_ce", "class_balanced", "label_smoothing", "focal"]
)
def test_a_module_first_called_in_inference_mode_trains_afterwards(name: str, shape: tuple[int, int]) -> None:
    # constants prepared (or buffers cast) during an inference-mode call are inference tensors, which
    # autograd refuses to save: a later training call must prepare its own
    import tailwise.losses  # noqa: F401  (registers the losses)
    from tailwise.registry import LOSSES

    n, c = shape
    g = torch.Generator().manual_seed(1)
    z = torch.randn(n, c, generator=g) * 3
    y = torch.randint(c, (n,), generator=g)
    counts = torch.logspace(0, -2, c).mul(500).round().clamp_min(1).tolist()
    loss = LOSSES.build(name, {}, class_counts=counts, num_classes=c)
    with torch.inference_mode():
        first = loss(z, y)
    leaf = z.clone().requires_grad_(True)
    value = loss(leaf, y)
    value.backward()
    torch.testing.assert_close(value.detach(), first)
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    with torch.inference_mode():  # and back
        torch.testing.assert_close(loss(z, y), first)
