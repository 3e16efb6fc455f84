"""l_p-distance primitives and layers: brute-force references, gradients, memory, bounds, bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tailwise.layers import (
    LpDistConv2d,
    LpDistLinear,
    MeanShift,
    bound_inf_dist,
    interval_lp_distance,
    lp_distance,
    set_lp_dist_chunk_elements,
)


def brute(x: torch.Tensor, w: torch.Tensor, p: float, groups: int) -> torch.Tensor:
    """Broadcast reference: (B, G, 1, CIg, HW) − (G, COg, CIg, 1), norm over CIg."""
    b, _, hw = x.shape
    co, cig = w.shape
    d = x.view(b, groups, 1, cig, hw) - w.view(groups, co // groups, cig, 1)
    return torch.linalg.vector_norm(d, ord=p, dim=3).reshape(b, co, hw)


CASES = [(math.inf, 1, 1), (math.inf, 2, 3), (math.inf, 4, 2), (8.0, 1, 1), (2.5, 2, 3), (1.0, 1, 2), (2.0, 1, 1)]


@pytest.mark.parametrize(("p", "groups", "hw"), CASES)
def test_matches_brute_force_values_and_grads(p: float, groups: int, hw: int) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 8, hw, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(12, 8 // groups, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(3, 12, hw, generator=g, dtype=torch.float64)
    y = lp_distance(x, w, p, groups)
    gx, gw = torch.autograd.grad((y * up).sum(), [x, w])
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    y2 = brute(x2, w2, p, groups)
    gx2, gw2 = torch.autograd.grad((y2 * up).sum(), [x2, w2])
    torch.testing.assert_close(y, y2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx2, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gw, gw2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("p", "groups"), [(math.inf, 1), (math.inf, 2), (8.0, 1), (3.5, 2)])
def test_gradcheck(p: float, groups: int) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 2, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4 // groups, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: lp_distance(a, b, p, groups), (x, w))


def test_chunking_does_not_change_results() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, 5, generator=g, requires_grad=True)
    w = torch.randn(10, 3, generator=g, requires_grad=True)
    ref = [lp_distance(x, w, p, 2) for p in (math.inf, 6.0)]
    ref_grads = [torch.autograd.grad(r.sum(), [x, w]) for r in ref]
    old = set_lp_dist_chunk_elements(1)
    try:
        out = [lp_distance(x, w, p, 2) for p in (math.inf, 6.0)]
        grads = [torch.autograd.grad(o.sum(), [x, w]) for o in out]
    finally:
        set_lp_dist_chunk_elements(old)
    for a, b in zip(ref + [t for gs in ref_grads for t in gs], out + [t for gs in grads for t in gs]):
        torch.testing.assert_close(a, b)


def test_chunk_budget_setting() -> None:
    from tailwise.layers import lp_dist as module

    old = set_lp_dist_chunk_elements(None)
    try:
        # per-device defaults: 2^16 elements on the CPU (cache-sized), 2^24 elsewhere
        assert module._chunk(4, 64, 1, 1000, torch.device("cpu")) == (1 << 16) // 256
        assert module._chunk(4, 64, 1, 1000, torch.device("meta")) == 1000
        assert set_lp_dist_chunk_elements(512) is None
        assert module._chunk(4, 64, 1, 1000, torch.device("meta")) == 2
        assert module._chunk(4, 1024, 1, 1000, torch.device("cpu")) == 1  # at least one output per chunk
        for bad in (0, -3, True, 2.5, "8"):
            with pytest.raises(ValueError, match="n must be a positive integer or None; got"):
                set_lp_dist_chunk_elements(bad)  # type: ignore[arg-type]
    finally:
        set_lp_dist_chunk_elements(old)


def test_large_p_is_finite_and_close_to_inf() -> None:
    g = torch.Generator().manual_seed(4)
    x = 200 * torch.randn(4, 16, 1, generator=g)  # |x − w| ~ 100s: |d|^1000 overflows without rescaling
    w = 200 * torch.randn(5, 16, generator=g)
    x.requires_grad_(True)
    y = lp_distance(x, w, 1000.0)
    (gx,) = torch.autograd.grad(y.sum(), [x])
    assert torch.isfinite(y).all() and torch.isfinite(gx).all()
    y_inf = lp_distance(x.detach(), w, math.inf)
    assert (y >= y_inf * (1 - 1e-6)).all()
    assert (y <= y_inf * 16 ** (1 / 1000) * (1 + 1e-6)).all()
    assert not torch.isfinite(torch.cdist(x.detach()[..., 0].double(), w.double(), p=1000.0)).all()


def test_identical_point_gives_zero_not_nan() -> None:
    w = torch.randn(3, 4, dtype=torch.float64)
    x = w[1].view(1, 4, 1).clone().requires_grad_(True)
    for p in (math.inf, 4.0):
        y = lp_distance(x, w, p)
        (gx,) = torch.autograd.grad(y.sum(), [x])
        assert y[0, 1, 0] == 0 and torch.isfinite(gx).all()


def test_pinf_saved_tensors_are_linear_in_output() -> None:
    b, ci, hw, co = 4, 64, 3, 32
    x = torch.randn(b, ci, hw, requires_grad=True)
    w = torch.randn(co, ci, requires_grad=True)
    y = lp_distance(x, w, math.inf)
    saved = y.grad_fn.saved_tensors
    total = sum(t.numel() for t in saved)
    assert total <= b * ci * hw + co * ci + b * co * hw
    assert max(t.numel() for t in saved) < b * co * ci * hw // 8


def test_finite_p_saved_tensors_are_linear_in_output() -> None:
    b, ci, hw, co = 4, 64, 3, 32
    x = torch.randn(b, ci, hw, requires_grad=True)
    w = torch.randn(co, ci, requires_grad=True)
    y = lp_distance(x, w, 8.0)
    assert sum(t.numel() for t in y.grad_fn.saved_tensors) <= b * ci * hw + co * ci + b * co * hw


@pytest.mark.parametrize("p", [math.inf, 3.0])
def test_interval_bounds_are_exact_and_sound(p: float) -> None:
    g = torch.Generator().manual_seed(5)
    centre = torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    radius = 0.3 * torch.rand(3, 6, 2, generator=g, dtype=torch.float64)
    lo, up = centre - radius, centre + radius
    w = torch.randn(4, 6, generator=g, dtype=torch.float64)
    w[0] = centre[0, :, 0]  # a weight inside the box of sample 0, position 0
    y_lo, y_up = interval_lp_distance(lo, up, w, p)
    assert y_lo[0, 0, 0] == 0
    samples = lo + (up - lo) * torch.rand(200, *lo.shape, generator=g, dtype=torch.float64)
    ys = torch.stack([lp_distance(s, w, p) for s in samples])
    assert (ys >= y_lo - 1e-12).all() and (ys <= y_up + 1e-12).all()
    # the extreme points attain the bounds: nearest / farthest corners per coordinate
    far = torch.where((w.view(1, 4, 6, 1) - lo.unsqueeze(1)).abs() > (up.unsqueeze(1) - w.view(1, 4, 6, 1)).abs(), lo.unsqueeze(1), up.unsqueeze(1))
    far_d = torch.linalg.vector_norm(far - w.view(1, 4, 6, 1), ord=p, dim=2)
    torch.testing.assert_close(y_up, far_d)
    if math.isinf(p):
        torch.testing.assert_close(bound_inf_dist(lo, up, w), (y_lo, y_up))


def test_mean_shift_train_eval() -> None:
    ms = MeanShift(3)
    y = torch.randn(5, 3, 4)
    out, lo, up = ms(y, y - 1, y + 1)
    mean = y.mean(dim=(0, 2))
    torch.testing.assert_close(out, y - mean.view(1, 3, 1))
    torch.testing.assert_close(up - lo, torch.full_like(y, 2.0))
    torch.testing.assert_close(ms.running_mean, 0.1 * mean)
    ms.eval()
    out_eval, _, _ = ms(y)
    torch.testing.assert_close(out_eval, y - 0.1 * mean.view(1, 3, 1))
    state = ms.state_dict()
    ms2 = MeanShift(3)
    ms2.load_state_dict(state)
    torch.testing.assert_close(ms2.running_mean, ms.running_mean)


def test_linear_layer_identity_init_and_forward() -> None:
    layer = LpDistLinear(4, 6, bias=True, mean_shift=True, identity_val=10.0, generator=torch.Generator().manual_seed(0))
    for i in range(6):
        assert layer.weight[i, i % 4] == -10.0
    assert not (LpDistLinear(6, 4, identity_val=10.0).weight == -10.0).any()  # in > out: no identity
    x = torch.randn(5, 4)
    layer.train()
    y = layer(x)
    d = brute(x.unsqueeze(-1), layer.weight.detach(), math.inf, 1)[..., 0]
    torch.testing.assert_close(y, d - d.mean(0) + layer.bias)
    layer.eval()
    y_eval, lo, up = layer(x, x - 0.1, x + 0.1)
    assert (lo <= y_eval).all() and (y_eval <= up).all()
    assert (up - lo <= 0.2 + 1e-6).all()


def test_conv_layer_matches_unfold_reference_with_zero_padding() -> None:
    g = torch.Generator().manual_seed(6)
    layer = LpDistConv2d(2, 4, kernel_size=3, padding=1, stride=2, mean_shift=False, identity_val=10.0, generator=g)
    w4 = layer.weight.detach().view(4, 2, 3, 3)
    for i in range(4):
        assert w4[i, i % 2, 1, 1] == -10.0
    x = torch.randn(2, 2, 5, 5, generator=g)
    y = layer(x)
    assert y.shape == (2, 4, 3, 3)
    xp = F.pad(x, (1, 1, 1, 1))
    for oi in range(3):
        for oj in range(3):
            patch = xp[:, :, 2 * oi : 2 * oi + 3, 2 * oj : 2 * oj + 3].reshape(2, 1, -1)
            ref = (patch - layer.weight.detach().unsqueeze(0)).abs().amax(-1)
            torch.testing.assert_close(y[:, :, oi, oj], ref)
    layer.eval()
    _, lo, up = layer(x, x - 0.05, x + 0.05)
    assert (lo <= y + 1e-6).all() and (y <= up + 1e-6).all()


def test_set_p() -> None:
    layer = LpDistLinear(3, 3)
    layer.set_p(8)
    assert layer.p == 8.0
    layer.set_p(math.inf)
    assert math.isinf(layer.p)


def test_bad_inputs() -> None:
    x = torch.randn(2, 6, 1)
    w = torch.randn(4, 6)
    with pytest.raises(ValueError, match="p must be >= 1"):
        lp_distance(x, w, 0.5)
    with pytest.raises(TypeError, match="p must be a number"):
        lp_distance(x, w, "inf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"x must have shape \(B, CI, HW\)"):
        lp_distance(torch.randn(2, 6), w)
    with pytest.raises(ValueError, match="channels; got CI = 6"):
        lp_distance(x, torch.randn(4, 4), math.inf, 2)
    with pytest.raises(ValueError, match="divisible by groups"):
        lp_distance(x, torch.randn(3, 3), math.inf, 2)
    with pytest.raises(ValueError, match="upper must have the shape of lower"):
        interval_lp_distance(x, x[:1], w)
    with pytest.raises(ValueError, match="interval bounds need p = inf"):
        LpDistLinear(6, 4, p=8.0)(x[..., 0], x[..., 0], x[..., 0])
    with pytest.raises(ValueError, match=r"x must have shape \(B, 5\)"):
        LpDistLinear(5, 4)(torch.randn(2, 6))
    with pytest.raises(ValueError, match="must be divisible by groups"):
        LpDistLinear(5, 4, groups=2)
