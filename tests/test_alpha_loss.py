"""alpha-loss (Sypherd et al.): special cases, stability, gradients, module and registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tailwise import validation_disabled
from tailwise.functional import alpha_loss
from tailwise.losses import AlphaLoss
from tailwise.registry import LOSSES


def _data(n: int = 10, c: int = 5, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, c, dtype=torch.float64) * scale, torch.randint(c, (n,))


def _loop_reference(z: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    p = torch.softmax(z, dim=1)
    vals = []
    for i in range(z.shape[0]):
        py = float(p[i, y[i]])
        if alpha == 1:
            vals.append(-math.log(py))
        elif alpha == math.inf:
            vals.append(1 - py)
        else:
            vals.append(alpha / (alpha - 1) * (1 - py ** (1 - 1 / alpha)))
    return torch.tensor(vals, dtype=torch.float64)


@pytest.mark.parametrize("alpha", [0.3, 0.5, 0.9, 1.0, 1.5, 2.0, 8.0, math.inf])
def test_matches_loop_reference(alpha: float) -> None:
    z, y = _data()
    torch.testing.assert_close(alpha_loss(z, y, alpha, reduction="none"), _loop_reference(z, y, alpha))


def test_alpha_one_is_cross_entropy() -> None:
    z, y = _data()
    w = torch.rand(5, dtype=torch.float64) + 0.1
    for red in ("none", "mean", "sum"):
        torch.testing.assert_close(alpha_loss(z, y, 1.0, reduction=red), F.cross_entropy(z, y, reduction=red))
        torch.testing.assert_close(
            alpha_loss(z, y, 1.0, reduction=red, weight=w), F.cross_entropy(z, y, weight=w, reduction=red)
        )
    soft = torch.softmax(torch.randn(10, 5, dtype=torch.float64), dim=1)
    torch.testing.assert_close(alpha_loss(z, soft, 1.0), F.cross_entropy(z, soft))
    torch.testing.assert_close(alpha_loss(z, soft, 1.0, weight=w), F.cross_entropy(z, soft, weight=w))


def test_alpha_infinity_and_half() -> None:
    z, y = _data()
    p_y = torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(alpha_loss(z, y, math.inf, reduction="none"), 1 - p_y)
    torch.testing.assert_close(alpha_loss(z, y, 0.5, reduction="none"), 1 / p_y - 1)


def test_binary_margin_form() -> None:
    z, y = _data(16, 2)
    margin = z.gather(1, y[:, None]).squeeze(1) - z.gather(1, (1 - y)[:, None]).squeeze(1)
    for alpha in (0.5, 0.9, 2.0, 8.0):
        ref = alpha / (alpha - 1) * (1 - torch.sigmoid(margin) ** (1 - 1 / alpha))
        torch.testing.assert_close(alpha_loss(z, y, alpha, reduction="none"), ref)
    torch.testing.assert_close(alpha_loss(z, y, 0.5, reduction="none"), torch.exp(-margin))


@pytest.mark.parametrize("delta", [1e-7, -1e-7, 1e-12, -1e-12])
def test_near_one_is_close_to_cross_entropy(delta: float) -> None:
    z, y = _data(scale=10.0)
    ce = F.cross_entropy(z, y, reduction="none")
    out = alpha_loss(z, y, 1.0 + delta, reduction="none")
    torch.testing.assert_close(out, ce, rtol=abs(delta) * 100, atol=0)
    # Float32 too: no catastrophic cancellation in 1 - p^(1 - 1/alpha).
    out32 = alpha_loss(z.float(), y, 1.0 + delta, reduction="none")
    torch.testing.assert_close(out32, ce.float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [1.0, 1.5, 3.0, math.inf])
def test_extreme_logits_finite(alpha: float) -> None:
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0], [0.0, 0.0, 1e4]], requires_grad=True)
    y = torch.tensor([1, 1, 0])
    loss = alpha_loss(z, y, alpha)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    if alpha > 1:
        bound = 1.0 if alpha == math.inf else alpha / (alpha - 1)
        assert float(loss.detach()) <= bound + 1e-6  # bounded by alpha/(alpha-1)


@pytest.mark.parametrize("alpha", [0.5, 0.9, 1.0, 1.5, math.inf])
def test_gradcheck(alpha: float) -> None:
    z, y = _data(6, 4)
    z.requires_grad_(True)
    w = torch.rand(4, dtype=torch.float64) + 0.5
    soft = torch.softmax(torch.randn(6, 4, dtype=torch.float64), 1)
    with validation_disabled():  # the value checks only slow gradcheck down
        assert torch.autograd.gradcheck(lambda x: alpha_loss(x, y, alpha, weight=w), (z,))
        assert torch.autograd.gradcheck(lambda x: alpha_loss(x, soft, alpha, reduction="sum"), (z,))


def test_soft_one_hot_equals_hard_and_weights() -> None:
    z, y = _data()
    onehot = F.one_hot(y, 5).double()
    w = torch.rand(5, dtype=torch.float64) + 0.1
    for alpha in (0.7, 2.0):
        torch.testing.assert_close(alpha_loss(z, onehot, alpha, reduction="none"), alpha_loss(z, y, alpha, reduction="none"))
        per = alpha_loss(z, y, alpha, reduction="none")
        torch.testing.assert_close(alpha_loss(z, y, alpha, weight=w), (w[y] * per).sum() / w[y].sum())
        torch.testing.assert_close(alpha_loss(z, y, alpha, weight=w, reduction="none"), w[y] * per)
        # Soft targets: class terms weighted, mean over N.
        torch.testing.assert_close(alpha_loss(z, onehot, alpha, weight=w), (w[y] * per).mean())


def test_official_options() -> None:
    z, y = _data()
    s = torch.sigmoid(z)
    torch.testing.assert_close(alpha_loss(z, y, 2.0, official_sigmoid=True), alpha_loss(s, y, 2.0))
    for alpha in (0.9, 1.0, 1.5):  # alpha rounded to float32 moves the loss by ~1e-6 relative
        torch.testing.assert_close(alpha_loss(z, y, alpha, official_numerics=True), alpha_loss(z, y, alpha), rtol=1e-5, atol=1e-6)
    # At alpha = 1 the official +1e-8 inside the log.
    ref = -torch.log(torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1) + 1e-8).mean()
    torch.testing.assert_close(alpha_loss(z, y, 1.0, official_numerics=True), ref)


def test_half_input_is_computed_in_float32() -> None:
    z, y = _data()
    out = alpha_loss(z.half(), y, 2.0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, alpha_loss(z.half().double(), y, 2.0).float(), rtol=1e-5, atol=1e-6)


def test_module_equals_functional_and_registry() -> None:
    z, y = _data()
    w = torch.rand(5, dtype=torch.float64) + 0.1
    mod = AlphaLoss(alpha=1.5, weight=w, reduction="sum")
    torch.testing.assert_close(mod(z, y), alpha_loss(z, y, 1.5, reduction="sum", weight=w))
    built = LOSSES.build("alpha", {"alpha": 3.0, "official_sigmoid": True}, num_classes=5)
    assert isinstance(built, AlphaLoss)
    torch.testing.assert_close(built(z, y), alpha_loss(z, y, 3.0, official_sigmoid=True))
    mod.set_weight(None)
    torch.testing.assert_close(mod(z, y), alpha_loss(z, y, 1.5, reduction="sum"))


def test_state_dict_round_trip() -> None:
    a = AlphaLoss(alpha=2.0, weight=[1.0, 2.0, 3.0])
    b = AlphaLoss(alpha=2.0, weight=[0.0, 0.0, 0.0])
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.weight, a.weight)


def test_bad_inputs() -> None:
    z, y = _data()
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
            alpha_loss(z, y, bad)
    with pytest.raises(TypeError, match="alpha must be a number"):
        alpha_loss(z, y, "2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        alpha_loss(z, torch.full((10,), 5), 2.0)
    with pytest.raises(ValueError, match="logits must be finite"):
        alpha_loss(torch.full((2, 5), float("nan")), y[:2], 2.0)
    with pytest.raises(ValueError, match="weight must be a 1-D tensor with 5 entries"):
        alpha_loss(z, y, 2.0, weight=torch.ones(3))
    with pytest.raises(ValueError, match="reduction must be one of"):
        alpha_loss(z, y, 2.0, reduction="avg")
    with pytest.raises(ValueError, match="soft target must have the shape"):
        alpha_loss(z, torch.rand(10, 4, dtype=torch.float64), 2.0)
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        AlphaLoss(alpha=-2.0)
