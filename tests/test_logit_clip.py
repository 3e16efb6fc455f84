"""LogitClip: clip_logits (continuous / official) and the LogitClipLoss wrapper."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tailwise import validation_disabled
from tailwise.functional import alpha_loss, clip_logits
from tailwise.losses import AlphaLoss, CALSLoss, LogitClipLoss, MbLSLoss
from tailwise.registry import LOSSES


def _rows_with_norms(norms: list[float], c: int = 6, p: float = 2) -> torch.Tensor:
    z = torch.randn(len(norms), c, dtype=torch.float64)
    z = z / torch.linalg.vector_norm(z, ord=p, dim=1, keepdim=True)
    return z * torch.tensor(norms, dtype=torch.float64).unsqueeze(1)


@pytest.mark.parametrize("p", [1, 2, 3, math.inf])
def test_continuous_clamps_norm_to_bound(p: float) -> None:
    tau = 0.5  # bound 1/tau = 2
    z = _rows_with_norms([0.1, 1.0, 1.99, 2.5, 10.0, 1e3], p=p)
    out = clip_logits(z, tau, p=p)
    norms_in = torch.linalg.vector_norm(z, ord=p, dim=1)
    norms_out = torch.linalg.vector_norm(out, ord=p, dim=1)
    small = norms_in <= 2
    torch.testing.assert_close(out[small], z[small], rtol=0, atol=0)
    torch.testing.assert_close(norms_out[~small], torch.full_like(norms_out[~small], 2.0))
    # Direction is kept.
    cos = F.cosine_similarity(out, z, dim=1)
    torch.testing.assert_close(cos, torch.ones_like(cos))


def test_huge_bound_is_identity() -> None:
    z = torch.randn(8, 5, dtype=torch.float64) * 100
    torch.testing.assert_close(clip_logits(z, tau=1e-12), z, rtol=0, atol=0)
    loss = LogitClipLoss(nn.CrossEntropyLoss(), tau=1e-12)
    y = torch.randint(5, (8,))
    torch.testing.assert_close(loss(z, y), F.cross_entropy(z, y))


def test_official_rule_threshold_tau_target_inverse() -> None:
    tau = 1.5
    z = _rows_with_norms([1.49, 1.51, 0.9, 7.0])
    out = clip_logits(z, tau, mode="official")
    norms = torch.linalg.vector_norm(out, dim=1)
    torch.testing.assert_close(out[[0, 2]], z[[0, 2]], rtol=0, atol=0)  # below tau: kept
    torch.testing.assert_close(norms[[1, 3]], torch.full((2,), 1 / tau, dtype=torch.float64), rtol=1e-6, atol=0)
    # The continuous clamp instead keeps every row of norm <= 1/tau = 0.667 only.
    cont = torch.linalg.vector_norm(clip_logits(z, tau), dim=1)
    torch.testing.assert_close(cont, torch.full((4,), 1 / tau, dtype=torch.float64))


def test_official_scales_up_for_small_tau() -> None:
    z = _rows_with_norms([1.0], p=1)
    out = clip_logits(z, 0.5, p=1, mode="official")  # norm in (0.5, 2): scaled up to 2
    torch.testing.assert_close(torch.linalg.vector_norm(out, ord=1, dim=1), torch.tensor([2.0], dtype=torch.float64), rtol=1e-6, atol=0)


def test_modes_agree_at_tau_one() -> None:
    z = torch.randn(16, 10, dtype=torch.float64) * torch.logspace(-2, 2, 16, dtype=torch.float64).unsqueeze(1)
    torch.testing.assert_close(clip_logits(z, 1.0, mode="official"), clip_logits(z, 1.0), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("mode", ["continuous", "official"])
@pytest.mark.parametrize("p", [1, 2, math.inf])
def test_gradcheck(mode: str, p: float) -> None:
    z = _rows_with_norms([0.2, 0.6, 3.0, 9.0], c=5, p=p).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3])
    loss = LogitClipLoss(F.cross_entropy, tau=0.8, p=p, mode=mode)
    with validation_disabled():
        assert torch.autograd.gradcheck(lambda x: loss(x, y), (z,))


def test_zero_rows_have_finite_gradients() -> None:
    z = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    for mode in ("continuous", "official"):
        out = clip_logits(z, 0.5, mode=mode)
        (grad,) = torch.autograd.grad(F.cross_entropy(out, torch.tensor([0, 1, 2])), z)
        assert torch.isfinite(grad).all()


def test_extreme_logits_stay_finite() -> None:
    z = (torch.randn(16, 10) * 1e4).requires_grad_(True)
    y = torch.randint(10, (16,))
    for base in (nn.CrossEntropyLoss(), AlphaLoss(alpha=3.0), MbLSLoss()):
        z.grad = None
        loss = LogitClipLoss(base, tau=1.0)(z, y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_half_input_keeps_dtype() -> None:
    z = (torch.randn(4, 6) * 50).half()
    out = clip_logits(z, 1.0)
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()


def test_module_equals_functional_with_any_base() -> None:
    z = torch.randn(12, 7, dtype=torch.float64) * 5
    y = torch.randint(7, (12,))
    clipped = clip_logits(z, 0.7, p=2)
    torch.testing.assert_close(LogitClipLoss(F.cross_entropy, tau=0.7)(z, y), F.cross_entropy(clipped, y))
    torch.testing.assert_close(LogitClipLoss(AlphaLoss(alpha=2.0), tau=0.7)(z, y), alpha_loss(clipped, y, 2.0))
    # Extra arguments reach the base.
    torch.testing.assert_close(
        LogitClipLoss(F.cross_entropy, tau=0.7)(z, y, reduction="none"), F.cross_entropy(clipped, y, reduction="none")
    )


def test_stateful_base_is_a_submodule_and_hooks_are_forwarded() -> None:
    cals = CALSLoss(num_classes=4, margin=1.0)
    wrapped = LogitClipLoss(cals, tau=0.05, p=2)  # bound 20
    assert "base_loss.lambd" in wrapped.state_dict()
    val = torch.randn(30, 4, dtype=torch.float64) * 100
    wrapped.update_from_validation(val, torch.zeros(30, dtype=torch.long), epoch=0)
    reference = CALSLoss(num_classes=4, margin=1.0)
    reference.update_from_validation(clip_logits(val, 0.05), None, epoch=0)
    torch.testing.assert_close(cals.lambd, reference.lambd)
    wrapped.set_epoch(3)  # base has no set_epoch: no-op
    alpha = AlphaLoss(alpha=2.0)
    LogitClipLoss(alpha, tau=1.0).set_weight(torch.ones(4))
    assert alpha.weight is not None
    with pytest.raises(TypeError, match="has no set_weight"):
        LogitClipLoss(F.cross_entropy, tau=1.0).set_weight(torch.ones(4))


def test_state_dict_round_trip() -> None:
    a = LogitClipLoss(CALSLoss(num_classes=3), tau=0.5)
    a.base.update_from_validation(torch.randn(10, 3, dtype=torch.float64) * 50, None, 0)
    b = LogitClipLoss(CALSLoss(num_classes=3), tau=0.5)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.base.lambd, a.base.lambd)


def test_registry_builds_base_with_context() -> None:
    loss = LOSSES.build("logit_clip", {"base": "alpha", "base_params": {"alpha": 2.0}, "tau": 0.5, "p": 1})
    assert isinstance(loss, LogitClipLoss) and isinstance(loss.base, AlphaLoss)
    assert loss.base.alpha == 2.0 and loss.tau == 0.5 and loss.p == 1.0
    cals = LOSSES.build("logit_clip", {"base": "cals", "mode": "official"}, num_classes=5, class_counts=[1, 2, 3, 4, 5])
    assert isinstance(cals.base, CALSLoss) and cals.base.num_classes == 5 and cals.mode == "official"
    with pytest.raises(ValueError, match="unknown loss"):
        LOSSES.build("logit_clip", {"base": "no_such_loss"})
    with pytest.raises(ValueError, match="unknown parameter"):
        LOSSES.build("logit_clip", {"base": "alpha", "base_params": {"bogus": 1}})


@pytest.mark.skipif("ce" not in LOSSES, reason="the 'ce' loss is not registered in this tree")
def test_registry_default_base_is_ce() -> None:
    loss = LOSSES.build("logit_clip", {"tau": 1.0}, num_classes=4)
    z = torch.randn(6, 4, dtype=torch.float64) * 10
    y = torch.randint(4, (6,))
    torch.testing.assert_close(loss(z, y), F.cross_entropy(clip_logits(z, 1.0), y))


def test_bad_inputs() -> None:
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        clip_logits(z, 0.0)
    with pytest.raises(ValueError, match="p must be >= 1"):
        clip_logits(z, 1.0, p=0.5)
    with pytest.raises(TypeError, match="p must be a number"):
        clip_logits(z, 1.0, p="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode must be one of"):
        clip_logits(z, 1.0, mode="paper")
    with pytest.raises(TypeError, match="floating-point"):
        clip_logits(torch.ones(3, 4, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        clip_logits(torch.randn(4), 1.0)
    with pytest.raises(TypeError, match="base_loss must be"):
        LogitClipLoss("ce", tau=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="another loss"):
        LOSSES.build("logit_clip", {"base": "logit_clip"})
