"""CDB-W: class-difficulty-balanced weights and loss (functional and stateful module)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tailwise.functional import cdb_loss, cdb_tau, cdb_weights, class_accuracy_from_logits, class_difficulty
from tailwise.losses import CDBLoss
from tailwise.registry import LOSSES


def _batch(n: int = 16, c: int = 5, dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=dtype), torch.randint(0, c, (n,), generator=g)


def test_weights_formula_and_normalisation() -> None:
    acc = torch.tensor([0.9, 0.5, 0.2, 0.7], dtype=torch.float64)
    d = class_difficulty(acc)
    w = cdb_weights(d, tau=1.5)
    expected = d**1.5
    expected = expected / expected.sum() * 4
    torch.testing.assert_close(w, expected)
    assert math.isclose(float(w.sum()), 4.0)


def test_dynamic_tau_rules() -> None:
    acc = torch.tensor([0.9, 0.5, 0.2, 0.7], dtype=torch.float64)
    d = class_difficulty(acc)
    b = 0.9 / (0.2 + 0.01)
    assert math.isclose(float(cdb_tau(d, "cifar")), 1 / (1 + math.exp(-b)))
    assert math.isclose(float(cdb_tau(d, "imagenet")), 2 / (1 + math.exp(-(b - 1))))
    w = cdb_weights(d, "dynamic", "imagenet")
    expected = d ** cdb_tau(d, "imagenet")
    torch.testing.assert_close(w, expected / expected.sum() * 4)


def test_equal_difficulty_is_cross_entropy() -> None:
    logits, target = _batch()
    w = cdb_weights(torch.full((5,), 0.3, dtype=torch.float64))
    torch.testing.assert_close(w, torch.ones(5, dtype=torch.float64))
    for red in ("mean", "official_cifar", "official_imagenet"):
        torch.testing.assert_close(cdb_loss(logits, target, w, red), F.cross_entropy(logits, target))
    torch.testing.assert_close(cdb_loss(logits, target, w, "sum"), F.cross_entropy(logits, target, reduction="sum"))


def test_reductions_match_official_definitions() -> None:
    logits, target = _batch()
    w = cdb_weights(torch.tensor([0.1, 0.5, 0.9, 0.3, 0.6], dtype=torch.float64))
    ce = F.cross_entropy(logits, target, reduction="none")
    per = w[target] * ce
    torch.testing.assert_close(cdb_loss(logits, target, w, "none"), per)
    torch.testing.assert_close(cdb_loss(logits, target, w, "official_cifar"), per.mean())
    torch.testing.assert_close(cdb_loss(logits, target, w, "mean"), F.cross_entropy(logits, target, weight=w))


def test_zero_weight_modes() -> None:
    d = torch.tensor([0.0, 0.5, 0.25], dtype=torch.float64)
    w = cdb_weights(d, tau=1.0)
    assert float(w[0]) == 0.0
    w_eps = cdb_weights(d, tau=1.0, zero_weight="epsilon", epsilon=0.01)
    assert float(w_eps[0]) > 0
    with pytest.raises(ValueError, match="zero_weight='epsilon'"):
        cdb_weights(torch.zeros(3, dtype=torch.float64), tau=1.0)
    torch.testing.assert_close(cdb_weights(torch.zeros(3, dtype=torch.float64), zero_weight="epsilon"),
                               torch.ones(3, dtype=torch.float64))


def test_gradcheck() -> None:
    logits, target = _batch(n=6, c=4)
    logits.requires_grad_(True)
    w = cdb_weights(torch.tensor([0.1, 0.5, 0.9, 0.3], dtype=torch.float64))
    for red in ("mean", "official_cifar", "sum"):
        assert torch.autograd.gradcheck(lambda x, r=red: cdb_loss(x, target, w, r), (logits,))


def test_module_matches_functional_and_updates() -> None:
    logits, target = _batch(n=40, c=5)
    loss = CDBLoss(5, tau="dynamic", tau_rule="cifar")
    assert loss.reduction == "official_cifar"
    assert CDBLoss(5, tau_rule="imagenet").reduction == "mean"
    torch.testing.assert_close(loss.weight, torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(loss(logits, target), F.cross_entropy(logits, target))
    val_logits, val_target = _batch(n=200, c=5, seed=3)
    w = loss.update_from_validation(val_logits, val_target, epoch=0)
    acc, count = class_accuracy_from_logits(val_logits, val_target)
    assert int(count.sum()) == 200
    torch.testing.assert_close(loss.difficulty, 1 - acc)
    torch.testing.assert_close(w, cdb_weights(1 - acc, "dynamic", "cifar"))
    torch.testing.assert_close(loss(logits, target), cdb_loss(logits, target, w, "official_cifar"))


def test_missing_validation_class_keeps_difficulty() -> None:
    loss = CDBLoss(3, tau=1.0)
    logits = torch.tensor([[5.0, 0, 0], [0, 0, 5.0], [5.0, 0, 0]])
    target = torch.tensor([0, 0, 2])  # class 1 absent, class 0 half right, class 2 wrong
    loss.update_from_validation(logits, target, 0)
    torch.testing.assert_close(loss.difficulty, torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64))


def test_state_dict_roundtrip_and_set_weight() -> None:
    a = CDBLoss(4, tau=1.5)
    a.update_from_accuracy(torch.tensor([0.9, 0.4, 0.1, 0.6]))
    b = CDBLoss(4, tau=1.5)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.weight, a.weight)
    torch.testing.assert_close(b.difficulty, a.difficulty)
    b.set_weight([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(b.weight, torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    b.set_weight(None)
    torch.testing.assert_close(b.weight, a.weight)


def test_registry_builds() -> None:
    loss = LOSSES.build("cdb", {"tau": 1.0}, num_classes=7, class_counts=[1] * 7)
    assert isinstance(loss, CDBLoss) and loss.num_classes == 7


def test_half_precision_input() -> None:
    logits, target = _batch(dtype=torch.float32)
    w = cdb_weights(torch.tensor([0.1, 0.5, 0.9, 0.3, 0.6]))
    out = cdb_loss(logits.bfloat16(), target, w)
    assert out.dtype == torch.float32 and torch.isfinite(out)


def test_bad_inputs() -> None:
    logits, target = _batch()
    with pytest.raises(ValueError, match=r"class_accuracy must lie in \[0, 1\]"):
        class_difficulty([0.5, 1.2])
    with pytest.raises(ValueError, match="tau_rule must be one of"):
        cdb_weights([0.5, 0.2], tau_rule="places")
    with pytest.raises(ValueError, match="tau must be one of"):
        cdb_weights([0.5, 0.2], tau="auto")
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        cdb_weights([0.5, 0.2], tau=-1.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        cdb_loss(logits, target, torch.ones(5), "weighted")
    with pytest.raises(ValueError, match="weights must be a 1-D tensor with 5 entries"):
        cdb_loss(logits, target, torch.ones(4))
    with pytest.raises(ValueError, match="labels must lie in"):
        cdb_loss(logits, torch.full_like(target, 9), torch.ones(5))
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        CDBLoss(0)
    with pytest.raises(ValueError, match="class_accuracy must have shape"):
        CDBLoss(3).update_from_accuracy([0.1, 0.2])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "official_cifar"])
def test_few_classes_float32_matches_plain_formula(reduction: str) -> None:
    # float32 CPU logits with few classes use the transposed log-softmax
    g = torch.Generator().manual_seed(13)
    z = (torch.randn(150, 5, generator=g) * 3).double()
    y = torch.randint(5, (150,), generator=g)
    w = torch.rand(5, generator=g, dtype=torch.float64) + 0.5
    a = z.float().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    out = cdb_loss(a, y, w, reduction=reduction)
    ce = F.cross_entropy(b, y, reduction="none")
    ref = {
        "mean": (w[y] * ce).sum() / w[y].sum(),
        "sum": (w[y] * ce).sum(),
        "none": w[y] * ce,
        "official_cifar": (w[y] * ce).mean(),
    }[reduction]
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-5, atol=1e-6)
