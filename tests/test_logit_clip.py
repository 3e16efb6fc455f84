"""LogitClip: clip_logits (continuous / official) and the LogitClipLoss wrapper."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tailwise.functional as TF
import tailwise.functional.logit_clip as logit_clip_module
from tailwise import validation_disabled
from tailwise.functional import alpha_loss, clip_logits
from tailwise.functional.logit_clip import _clip_reference
from tailwise.losses import AlphaLoss, CALSLoss, CrossEntropyLoss, LogitClipLoss, MbLSLoss
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


# --------------------------------------------------------------------------- fused kernels
P_VALUES = [1, 2, 3.5, math.inf]
MODES = ["continuous", "official"]
BOUND_TAU = 0.5  # continuous bound 1/tau = 2
THRESHOLD_TAU = 2.0 + 1e-7  # official: a row of norm 2 has norm + 1e-7 == tau, exactly at the threshold


def _mixed_rows(p: float, dtype: torch.dtype = torch.float64, c: int = 6) -> torch.Tensor:
    """Rows below and above the bound 2, two rows exactly of norm 2, a zero row; tied maxima for p = inf."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(9, c, generator=g, dtype=torch.float64)
    z = z / torch.linalg.vector_norm(z, ord=p, dim=1, keepdim=True)
    z = z * torch.tensor([0.3, 1.0, 1.9, 2.1, 3.0, 50.0, 1.0, 1.0, 1.0], dtype=torch.float64).unsqueeze(1)
    z[6] = 0.0
    z[7] = 0.0
    z[7, 2] = -2.0  # norm 2 for every p
    z[8] = 0.0
    if p == math.inf:
        z[8, :3] = torch.tensor([2.0, -2.0, 1.0])  # at the bound, two tied maxima
    elif p == 2:
        z[8, :4] = 1.0
    elif p == 1:
        z[8, :4] = 0.5
    else:
        z[8, 0] = 2.0
    z = z.to(dtype)
    norms = torch.linalg.vector_norm(z, ord=p, dim=1)
    assert norms[7] == 2 and norms[8] == 2  # the rows at the bound are exactly at it
    return z


def _value_and_grad(fn, z: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = z.detach().clone().requires_grad_(True)
    out = fn(x)
    (grad,) = torch.autograd.grad(out, x, upstream)
    return out.detach(), grad


@pytest.mark.parametrize("tau", [BOUND_TAU, THRESHOLD_TAU, 1.0])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("p", P_VALUES)
def test_fused_clip_matches_autograd_reference(p: float, mode: str, tau: float) -> None:
    z = _mixed_rows(p)
    upstream = torch.randn(z.shape, dtype=z.dtype, generator=torch.Generator().manual_seed(2))
    x = z.clone().requires_grad_(True)
    assert type(clip_logits(x, tau, p=p, mode=mode).grad_fn).__name__ == "_ClipLogitsBackward"
    out, grad = _value_and_grad(lambda x: clip_logits(x, tau, p=p, mode=mode), z, upstream)
    ref, ref_grad = _value_and_grad(lambda x: _clip_reference(x, tau, p, mode), z, upstream)
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    assert torch.isfinite(grad).all()
    if mode == "continuous" and tau == BOUND_TAU:
        # The rows exactly at the bound keep their values but the gradient flows through the norm.
        torch.testing.assert_close(out[7:], z[7:], rtol=0, atol=0)
        assert not torch.allclose(ref_grad[7:], upstream[7:])
    if mode == "official" and tau == THRESHOLD_TAU:
        # At the threshold (norm + 1e-7 == tau) the rows are kept, gradient included.
        torch.testing.assert_close(grad[7], upstream[7], rtol=0, atol=0)


def test_fused_inf_norm_shares_the_gradient_among_ties() -> None:
    z = torch.tensor([[3.0, -3.0, 1.0, 0.5]], dtype=torch.float64)
    upstream = torch.tensor([[0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    _, grad = _value_and_grad(lambda x: clip_logits(x, 1.0, p=math.inf), z, upstream)
    _, ref_grad = _value_and_grad(lambda x: _clip_reference(x, 1.0, math.inf, "continuous"), z, upstream)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-15)
    # d/dz of z_2 / max|z|: -z_2 / n^2 * sgn(z_j) / 2 on each of the two tied maxima
    torch.testing.assert_close(grad[0, :2], torch.tensor([-1 / 18, 1 / 18], dtype=torch.float64))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("p", P_VALUES)
def test_fused_clip_gradcheck_and_gradgradcheck(p: float, mode: str) -> None:
    z = _rows_with_norms([0.2, 0.6, 3.0, 9.0], c=5, p=p).requires_grad_(True)
    fn = lambda x: clip_logits(x, 0.8, p=p, mode=mode)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (z,))
    assert torch.autograd.gradgradcheck(fn, (z,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
def test_fused_clip_half_input(dtype: torch.dtype, mode: str) -> None:
    z = (torch.randn(16, 7, generator=torch.Generator().manual_seed(3)) * 3).to(dtype)
    z[0] = 0
    upstream = torch.randn(16, 7, generator=torch.Generator().manual_seed(4)).to(dtype)
    out, grad = _value_and_grad(lambda x: clip_logits(x, 0.5, mode=mode), z, upstream)
    ref, ref_grad = _value_and_grad(lambda x: _clip_reference(x.float(), 0.5, 2.0, mode).to(dtype), z, upstream)
    assert out.dtype == dtype and grad.dtype == dtype
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad, ref_grad)


def test_fused_clip_without_grad_matches() -> None:
    z = _mixed_rows(2)
    with torch.no_grad():
        for mode in MODES:
            torch.testing.assert_close(clip_logits(z, 0.5, mode=mode), _clip_reference(z, 0.5, 2.0, mode), rtol=1e-13, atol=0)


# The two computations of the clipped cross-entropy: the fused function, and the native composition
# that small inputs take (forced here in both directions, whatever the size).
# "fused_logsoftmax" forces the fused function's log-softmax variant (kept on other devices than the
# CPU) where it would keep the softmax.
CLIP_CE_PATHS = {
    "fused": "_ClipCrossEntropyBackward",
    "fused_logsoftmax": "_ClipCrossEntropyBackward",
    "composite": "NllLossBackward0",
}


def _force_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """Make the clipped cross-entropy take ``path`` (a key of ``CLIP_CE_PATHS``) whatever the input."""
    monkeypatch.setattr(logit_clip_module, "_composite_path", lambda z: path == "composite")
    if path == "fused_logsoftmax":
        monkeypatch.setattr(logit_clip_module, "_softmax_in_forward", lambda z: False)


@pytest.mark.parametrize("path", sorted(CLIP_CE_PATHS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("dtype", "c"), [(torch.float64, 6), (torch.float32, 6), (torch.float32, 20)])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("p", P_VALUES)
def test_fused_clip_cross_entropy_matches_reference(
    p: float, mode: str, dtype: torch.dtype, c: int, weighted: bool, reduction: str, path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _force_path(monkeypatch, path)
    z = _mixed_rows(p, dtype, c)
    y = torch.randint(c, (z.shape[0],), generator=torch.Generator().manual_seed(5))
    weight = torch.rand(c, generator=torch.Generator().manual_seed(6), dtype=torch.float64) + 0.5 if weighted else None
    loss_fn = LogitClipLoss(CrossEntropyLoss(weight=weight, reduction=reduction), tau=BOUND_TAU, p=p, mode=mode)
    upstream = torch.rand(z.shape[0], dtype=dtype) if reduction == "none" else torch.tensor(1.7, dtype=dtype)
    x = z.clone().requires_grad_(True)
    assert type(loss_fn(x, y).grad_fn).__name__ == CLIP_CE_PATHS[path]
    loss, grad = _value_and_grad(lambda x: loss_fn(x, y), z, upstream)
    w = None if weight is None else weight.to(dtype)
    ref, ref_grad = _value_and_grad(
        lambda x: F.cross_entropy(_clip_reference(x, BOUND_TAU, p, mode), y, weight=w, reduction=reduction), z, upstream
    )
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(loss, ref, **tol)
    torch.testing.assert_close(grad, ref_grad, **tol)


@pytest.mark.parametrize("path", sorted(CLIP_CE_PATHS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("p", P_VALUES)
def test_fused_clip_cross_entropy_gradcheck_and_gradgradcheck(
    p: float, mode: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _force_path(monkeypatch, path)
    z = _rows_with_norms([0.2, 0.6, 3.0, 9.0], c=5, p=p).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3])
    loss = LogitClipLoss(CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0])), tau=0.8, p=p, mode=mode)
    assert torch.autograd.gradcheck(lambda x: loss(x, y), (z,))
    assert torch.autograd.gradgradcheck(lambda x: loss(x, y), (z,))


def test_fused_cross_entropy_keeps_the_checks_and_other_paths() -> None:
    loss = LogitClipLoss(CrossEntropyLoss(), tau=0.5)
    z = torch.randn(4, 3, dtype=torch.float64) * 5
    y = torch.tensor([0, 1, 2, 0])
    bad = z.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="logits must be finite"):
        loss(bad, y)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        loss(z, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="shape"):
        loss(z[0], y)
    with pytest.raises(TypeError, match="floating-point"):
        loss(torch.ones(4, 3, dtype=torch.long), y)
    # Composed paths: soft targets, label smoothing, half logits, an extra argument.
    soft = torch.softmax(torch.randn(4, 3, dtype=torch.float64), 1)
    clipped = _clip_reference(z, 0.5, 2.0, "continuous")
    torch.testing.assert_close(loss(z, soft), F.cross_entropy(clipped, soft))
    smoothed = LogitClipLoss(CrossEntropyLoss(label_smoothing=0.1), tau=0.5)
    torch.testing.assert_close(smoothed(z, y), F.cross_entropy(clipped, y, label_smoothing=0.1))
    assert loss(z.half(), y).dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(loss(z, y), F.cross_entropy(clipped, y))


@pytest.mark.parametrize("path", ["fused", "fused_logsoftmax"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("p", [2.0, math.inf])
def test_fused_clip_cross_entropy_retained_graph_gives_the_same_gradient_twice(
    p: float, dtype: torch.dtype, weighted: bool, reduction: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The softmax buffer handed to autograd is formed again for a second backward through the graph.

    The first gradient, changed in place in ``.grad``, must not leak into the second.
    """
    _force_path(monkeypatch, path)
    c = 20
    z = _mixed_rows(p, dtype, c).requires_grad_(True)
    y = torch.randint(c, (z.shape[0],), generator=torch.Generator().manual_seed(2))
    weight = torch.rand(c, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5 if weighted else None
    loss = LogitClipLoss(CrossEntropyLoss(weight=weight, reduction=reduction), tau=BOUND_TAU, p=p)(z, y)
    assert type(loss.grad_fn).__name__ == CLIP_CE_PATHS[path]
    upstream = torch.rand(loss.shape, dtype=dtype, generator=None) + 0.5
    loss.backward(upstream, retain_graph=True)
    assert z.grad is not None
    first = z.grad.clone()
    z.grad.mul_(3.0).add_(1.0)
    z.grad = None
    loss.backward(upstream)
    assert z.grad is not None
    torch.testing.assert_close(z.grad, first, rtol=0, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_clip_cross_entropy_underflowing_label_probability(
    dtype: torch.dtype, reduction: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a loose bound (1/tau = 1e4) a label logit 400 (float32) or 2500 (float64) below its row's
    maximum has softmax probability 0: the loss of that row is recomputed exactly, not ``inf``."""
    _force_path(monkeypatch, "fused")
    gap = 400.0 if dtype == torch.float32 else 2500.0
    z = torch.zeros(4, 20, dtype=dtype)
    y = torch.tensor([0, 3, 5, 7])
    z[1, 3] = -gap
    z[2, 0] = gap
    z.requires_grad_(True)
    loss = LogitClipLoss(CrossEntropyLoss(reduction=reduction), tau=1e-4)(z, y)
    assert type(loss.grad_fn).__name__ == "_ClipCrossEntropyBackward"
    ref = F.cross_entropy(_clip_reference(z, 1e-4, 2.0, "continuous"), y, reduction=reduction)
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, ref)
    (grad,) = torch.autograd.grad(loss.sum(), z)
    (ref_grad,) = torch.autograd.grad(ref.sum(), z)
    torch.testing.assert_close(grad, ref_grad)


def test_fused_clip_cross_entropy_batch_sizes_share_the_workspace(monkeypatch: pytest.MonkeyPatch) -> None:
    """One prepared loss called with growing and shrinking batches keeps giving the reference gradient."""
    _force_path(monkeypatch, "fused")
    loss_fn = LogitClipLoss(CrossEntropyLoss(), tau=BOUND_TAU)
    gen = torch.Generator().manual_seed(4)
    for n in (5, 40, 3, 40, 17):
        z = (torch.randn(n, 20, generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
        y = torch.randint(20, (n,), generator=gen)
        (grad,) = torch.autograd.grad(loss_fn(z, y), z)
        (ref_grad,) = torch.autograd.grad(F.cross_entropy(_clip_reference(z, BOUND_TAU, 2.0, "continuous"), y), z)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize(
    ("dtype", "c", "tau", "path"),
    [
        (torch.float32, 6, 0.5, "composite"),  # transposed composition (few classes)
        (torch.float32, 20, 0.5, "fused"),
        (torch.float64, 6, 0.5, "fused"),
        (torch.float64, 6, 0.5, "fused_logsoftmax"),
        (torch.float32, 20, 1e13, "fused"),  # a bound below 1e-12: plain composition
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_non_finite_logits_are_refused_on_every_path(
    mode: str, dtype: torch.dtype, c: int, tau: float, path: str, reduction: str, value: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One NaN or Inf logit: module and functional raise the finiteness message (checked after the
    loss on the CPU); with the checks off they return the non-finite loss, as the composition does."""
    if path != "composite":
        _force_path(monkeypatch, path)
    z = torch.randn(5, c, dtype=dtype, generator=torch.Generator().manual_seed(1)) * 3
    z[3, 1] = value
    y = torch.arange(5) % c
    module = LogitClipLoss(CrossEntropyLoss(reduction=reduction), tau=tau, mode=mode)
    for call in (lambda: module(z, y), lambda: TF.logit_clip_loss(z, y, tau, 2, mode, None, reduction)):
        with pytest.raises(ValueError, match="logits must be finite"):
            call()
        with validation_disabled():
            assert not torch.isfinite(call()).all()
    good = z.clone()
    good[3, 1] = 0.0
    assert torch.isfinite(module(good, y)).all()


def test_module_settings_are_checked_when_set() -> None:
    loss = LogitClipLoss(F.cross_entropy, tau=1.0)
    loss.tau, loss.p, loss.mode = 2, 1, "official"
    assert (loss.tau, loss.p, loss.mode) == (2.0, 1.0, "official")
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        loss.tau = 0.0
    with pytest.raises(ValueError, match="p must be >= 1"):
        loss.p = 0.5
    with pytest.raises(ValueError, match="mode must be one of"):
        loss.mode = "paper"


# ----------------------------------------------------------------------------- functional twin
@pytest.mark.parametrize("path", sorted(CLIP_CE_PATHS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(("dtype", "c"), [(torch.float64, 6), (torch.float32, 6)])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("p", [2.0, math.inf])
def test_logit_clip_loss_equals_module_and_composition(
    p: float, mode: str, dtype: torch.dtype, c: int, weighted: bool, reduction: str, path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _force_path(monkeypatch, path)
    logit_clip_module._PREPARED.clear()
    z = _mixed_rows(p, dtype, c)
    y = torch.randint(c, (z.shape[0],), generator=torch.Generator().manual_seed(8))
    weight = torch.rand(c, generator=torch.Generator().manual_seed(9), dtype=torch.float64) + 0.5 if weighted else None
    upstream = torch.rand(z.shape[0], dtype=dtype) if reduction == "none" else torch.tensor(0.9, dtype=dtype)
    w = None if weight is None else weight.to(dtype)
    functional = _value_and_grad(lambda x: TF.logit_clip_loss(x, y, BOUND_TAU, p, mode, weight, reduction), z, upstream)
    module = LogitClipLoss(CrossEntropyLoss(weight=weight, reduction=reduction), tau=BOUND_TAU, p=p, mode=mode)
    twin = _value_and_grad(lambda x: module(x, y), z, upstream)
    composed = _value_and_grad(
        lambda x: F.cross_entropy(_clip_reference(x, BOUND_TAU, p, mode), y, weight=w, reduction=reduction), z, upstream
    )
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    for got in (functional, twin):
        torch.testing.assert_close(got[0], composed[0], **tol)
        torch.testing.assert_close(got[1], composed[1], **tol)
    # a second call reuses the prepared loss and still follows an in-place change of the weight
    if weight is not None:
        weight.mul_(2.0)
        again = TF.logit_clip_loss(z, y, BOUND_TAU, p, mode, weight, reduction)
        ref = F.cross_entropy(_clip_reference(z, BOUND_TAU, p, mode), y, weight=weight.to(dtype), reduction=reduction)
        torch.testing.assert_close(again, ref, **tol)


def test_logit_clip_loss_gradcheck_fallback_and_errors() -> None:
    z = _rows_with_norms([0.2, 0.6, 3.0, 9.0], c=5, p=2.0).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3])
    w = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: TF.logit_clip_loss(x, y, 0.8, weight=w), (z,))
    assert torch.autograd.gradgradcheck(lambda x: TF.logit_clip_loss(x, y, 0.8, weight=w), (z,))
    # an extreme tau is outside the fused kernel's range: the plain composition gives the loss
    big = 1e13
    torch.testing.assert_close(
        TF.logit_clip_loss(z, y, big), F.cross_entropy(_clip_reference(z, big, 2.0, "continuous"), y)
    )
    assert TF.logit_clip_loss(z.detach().half(), y).dtype == torch.float32
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        TF.logit_clip_loss(z, y, 0.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        TF.logit_clip_loss(z, y, mode="clamp")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        TF.logit_clip_loss(z, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="weight must be a 1-D tensor with 5 entries"):
        TF.logit_clip_loss(z, y, weight=torch.ones(4))
