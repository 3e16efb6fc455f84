"""Adjusted cross-entropy kernels (``tailwise.functional._fused``) and the loss modules' cached constants.

Every computation path (transposed composite, plain composite, fused autograd Function) is forced and
identified from the autograd graph, then compared, value and gradient, with a slow float64 reference
that builds the adjusted logits ``t = a * z + b + v[y] * onehot(y)`` explicitly and reduces a manual
log-sum-exp with PyTorch's weighted-mean semantics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tailwise
import tailwise.functional._fused as fused
import tailwise.functional.ldam as functional_ldam
import tailwise.functional.vs as functional_vs
import tailwise.losses  # registers the losses in LOSSES
from tailwise.functional._fused import adjusted_cross_entropy_fn
from tailwise.functional.ldam import ldam_loss
from tailwise.functional.vs import _affine_cross_entropy
from tailwise.losses.bayias import BayiasLoss
from tailwise.losses.ldam import LDAMLoss
from tailwise.losses.vs import CDTLoss, LogitAdjustedLoss, VSLoss
from tailwise.registry import LOSSES

REDUCTIONS = ("none", "mean", "sum")

# adjustment combinations: which of scale / multiplier / offset / class_shift are given
ADJUSTMENTS: dict[str, tuple[str, ...]] = {
    "offset": ("offset",),  # LA, Bayias
    "multiplier+offset": ("multiplier", "offset"),  # VS
    "multiplier": ("multiplier",),  # CDT
    "scale+shift": ("scale", "class_shift"),  # LDAM
    "scale+offset": ("scale", "offset"),
    "scale": ("scale",),
    "multiplier+offset+shift": ("multiplier", "offset", "class_shift"),
    "none": (),
    "shift": ("class_shift",),
    "multiplier+shift": ("multiplier", "class_shift"),
    "scale+offset+shift": ("scale", "offset", "class_shift"),
}

# path name -> (dtype, number of classes, force the fused Function, expected path); "log-softmax"
# forces the fused Function's log-softmax variant (kept on other devices than the CPU)
PATHS: dict[str, tuple[torch.dtype, int, bool | str, str]] = {
    "transposed32": (torch.float32, 7, False, "transposed"),
    "composite64": (torch.float64, 7, False, "composite"),
    "composite32": (torch.float32, 20, False, "composite"),
    "fused64": (torch.float64, 7, True, "fused"),
    "fused32": (torch.float32, 20, True, "fused"),
    "fused64_logsoftmax": (torch.float64, 7, "log-softmax", "fused"),
    "fused32_logsoftmax": (torch.float32, 20, "log-softmax", "fused"),
}


@pytest.fixture(autouse=True)
def _restore_validation() -> Iterator[None]:
    """Leave the global value-check switch as each test found it."""
    previous = tailwise.validation_enabled()
    yield
    tailwise.set_validation(previous)


def _force_fused(monkeypatch: pytest.MonkeyPatch, force: bool | str = True) -> None:
    """Make every non-transposed input take the fused autograd Function.

    ``force="log-softmax"`` also makes it keep the log-softmax (its path on other devices than the
    CPU) instead of the softmax.
    """
    monkeypatch.setattr(fused, "_COMPOSITE_MAX_ELEMENTS", -1)
    if force == "log-softmax":
        monkeypatch.setattr(fused, "_softmax_in_forward", lambda z: False)


def _call(z: Tensor, target: Tensor, **kw: Any) -> Tensor:
    """``adjusted_cross_entropy(z, target, **kw)``: prepare for ``z`` and call once."""
    return adjusted_cross_entropy_fn(z, **kw)(z, target)


def _path_of(loss: Tensor) -> str:
    """Which computation path produced ``loss``, read from its autograd graph."""
    node = loss.grad_fn
    assert node is not None
    if "_AdjustedCrossEntropy" in node.name() or "BackwardCFunction" in type(node).__name__:
        return "fused"
    assert node.name() == "NllLossBackward0", node.name()
    below = node.next_functions[0][0].name()
    if below == "TBackward0":
        return "transposed"
    assert below == "LogSoftmaxBackward0", below
    return "composite"


def _tol(dtype: torch.dtype) -> dict[str, float]:
    """Tolerances against the float64 reference."""
    if dtype == torch.float32:
        return {"rtol": 1e-5, "atol": 1e-6}
    return {"rtol": 1e-10, "atol": 1e-12}


def _inputs(n: int, c: int, dtype: torch.dtype, gen: torch.Generator, spread: float = 1.0) -> tuple[Tensor, Tensor]:
    """Leaf logits ``(n, c)`` in ``dtype`` and int64 labels covering every class when ``n >= c``."""
    z = (torch.randn(n, c, generator=gen, dtype=torch.float64) * spread).to(dtype).requires_grad_(True)
    perm = torch.randperm(n, generator=gen)
    target = (torch.arange(n) % c)[perm]
    return z, target


def _adjustments(
    kinds: tuple[str, ...], c: int, dtype: torch.dtype, gen: torch.Generator, weighted: bool, scale: float = 2.5
) -> dict[str, Any]:
    """Keyword arguments of :func:`adjusted_cross_entropy_fn` for one adjustment combination."""
    kw: dict[str, Any] = {}
    if "scale" in kinds:
        kw["scale"] = scale
    if "multiplier" in kinds:
        kw["multiplier"] = (0.3 + torch.rand(c, generator=gen, dtype=torch.float64)).to(dtype)
    if "offset" in kinds:
        kw["offset"] = torch.randn(c, generator=gen, dtype=torch.float64).to(dtype)
    if "class_shift" in kinds:
        kw["class_shift"] = (-scale * 0.5 * torch.rand(c, generator=gen, dtype=torch.float64)).to(dtype)
    if weighted:
        kw["weight"] = (0.2 + 2.0 * torch.rand(c, generator=gen, dtype=torch.float64)).to(dtype)
    return kw


def reference_loss(
    z: Tensor,
    target: Tensor,
    *,
    scale: float | None = None,
    multiplier: Tensor | None = None,
    offset: Tensor | None = None,
    class_shift: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Slow float64 reference: explicit one-hot adjusted logits, manual log-sum-exp, weighted mean."""
    z = z.double()
    n, c = z.shape
    a = torch.ones(c, dtype=torch.float64)
    if scale is not None:
        a = a * scale
    if multiplier is not None:
        a = a * multiplier.double()
    b = torch.zeros(c, dtype=torch.float64) if offset is None else offset.double()
    v = torch.zeros(c, dtype=torch.float64) if class_shift is None else class_shift.double()
    onehot = F.one_hot(target, c).double()
    t = z * a + b + onehot * v[target].unsqueeze(1)
    m = t.detach().amax(1, keepdim=True)
    lse = m.squeeze(1) + torch.log(torch.exp(t - m).sum(1))
    w = torch.ones(n, dtype=torch.float64) if weight is None else weight.double()[target]
    per_sample = (lse - (t * onehot).sum(1)) * w
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.sum() / w.sum()  # 0 / 0 = NaN for an empty batch, as F.cross_entropy


def _upstream(shape: torch.Size, dtype: torch.dtype, gen: torch.Generator) -> Tensor:
    """A non-trivial upstream gradient of the loss' shape."""
    return (0.5 + torch.rand(shape, generator=gen, dtype=torch.float64)).to(dtype)


def _assert_matches_reference(
    loss: Tensor,
    z: Tensor,
    target: Tensor,
    kw: dict[str, Any],
    reduction: str,
    grad_tol: dict[str, float] | None = None,
) -> None:
    """``loss`` and its gradient w.r.t. ``z`` equal the float64 reference (NaN where it is NaN)."""
    z64 = z.detach().double().requires_grad_(True)
    ref = reference_loss(z64, target, reduction=reduction, **kw)
    assert loss.dtype == z.dtype
    assert loss.shape == ref.shape
    tol = _tol(z.dtype)
    torch.testing.assert_close(loss.detach().double(), ref.detach(), equal_nan=True, **tol)
    g = _upstream(loss.shape, z.dtype, torch.Generator().manual_seed(7))
    (grad,) = torch.autograd.grad(loss, z, g)
    (grad_ref,) = torch.autograd.grad(ref, z64, g.double())
    assert grad.shape == z.shape and grad.dtype == z.dtype
    torch.testing.assert_close(grad.double(), grad_ref, **(grad_tol or tol))


def test_reference_agrees_with_per_sample_loop() -> None:
    """The vectorised reference equals F.cross_entropy of adjusted logits built sample by sample."""
    gen = torch.Generator().manual_seed(0)
    z, target = _inputs(6, 4, torch.float64, gen)
    kw = _adjustments(("multiplier", "offset", "class_shift"), 4, torch.float64, gen, weighted=True)
    rows = []
    for i in range(6):
        row = kw["multiplier"] * z[i] + kw["offset"]
        y = int(target[i])
        rows.append(torch.cat([row[:y], row[y : y + 1] + kw["class_shift"][y], row[y + 1 :]]))
    t = torch.stack(rows)
    for reduction in REDUCTIONS:
        expected = F.cross_entropy(t, target, weight=kw["weight"], reduction=reduction)
        torch.testing.assert_close(
            reference_loss(z, target, reduction=reduction, **kw), expected, rtol=1e-12, atol=1e-12
        )


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("adjustment", list(ADJUSTMENTS))
@pytest.mark.parametrize("path", list(PATHS))
def test_loss_and_grad_match_reference(
    path: str, adjustment: str, reduction: str, weighted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each path, adjustment combination, reduction and weighting: value and dL/dz equal the reference."""
    dtype, c, force, expected_path = PATHS[path]
    if force:
        _force_fused(monkeypatch, force)
    gen = torch.Generator().manual_seed(1234)
    z, target = _inputs(11, c, dtype, gen)
    kw = _adjustments(ADJUSTMENTS[adjustment], c, dtype, gen, weighted)
    loss = _call(z, target, reduction=reduction, **kw)
    assert _path_of(loss) == expected_path
    _assert_matches_reference(loss, z, target, kw, reduction)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("adjustment", list(ADJUSTMENTS))
def test_fused_function_transposed_layout(adjustment: str, reduction: str, weighted: bool) -> None:
    """The fused Function's own (C, N) buffer layout (float32, C < 16, applied directly) matches the reference."""
    gen = torch.Generator().manual_seed(99)
    z, target = _inputs(10, 6, torch.float32, gen)
    kw = _adjustments(ADJUSTMENTS[adjustment], 6, torch.float32, gen, weighted)
    shift = None if "class_shift" not in kw else kw["class_shift"].index_select(0, target)
    loss = fused._AdjustedCrossEntropy.apply(
        z, target, kw.get("scale"), kw.get("multiplier"), kw.get("offset"), shift, kw.get("weight"), reduction
    )
    assert _path_of(loss) == "fused"
    _assert_matches_reference(loss, z, target, kw, reduction)


@pytest.mark.parametrize("adjustment", ["scale+shift", "multiplier+offset+shift"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("path", list(PATHS))
def test_empty_batch_behaves_like_cross_entropy(
    path: str, reduction: str, weighted: bool, adjustment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N = 0: shape (0,) for "none", 0 for "sum", NaN for "mean" (as F.cross_entropy); backward gives a (0, C) grad."""
    dtype, c, force, expected_path = PATHS[path]
    if force:
        _force_fused(monkeypatch, force)
    gen = torch.Generator().manual_seed(3)
    kw = _adjustments(ADJUSTMENTS[adjustment], c, dtype, gen, weighted)
    z = torch.zeros(0, c, dtype=dtype, requires_grad=True)
    target = torch.zeros(0, dtype=torch.long)
    loss = _call(z, target, reduction=reduction, **kw)
    expected = F.cross_entropy(z, target, weight=kw.get("weight"), reduction=reduction)
    assert _path_of(loss) == expected_path
    assert loss.shape == expected.shape and loss.dtype == expected.dtype
    torch.testing.assert_close(loss, expected, equal_nan=True, rtol=0, atol=0)
    if reduction == "mean":
        assert torch.isnan(loss)
    elif reduction == "sum":
        assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, z, torch.ones_like(loss))
    assert grad.shape == (0, c)
    _assert_matches_reference(_call(z, target, reduction=reduction, **kw), z, target, kw, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("adjustment", ["scale+shift", "multiplier+offset", "multiplier+offset+shift", "offset"])
@pytest.mark.parametrize("path", list(PATHS))
def test_single_sample(path: str, adjustment: str, reduction: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """N = 1 (weighted): value and gradient equal the reference."""
    dtype, c, force, expected_path = PATHS[path]
    if force:
        _force_fused(monkeypatch, force)
    gen = torch.Generator().manual_seed(5)
    z, _ = _inputs(1, c, dtype, gen)
    target = torch.tensor([c - 1])
    kw = _adjustments(ADJUSTMENTS[adjustment], c, dtype, gen, weighted=True)
    loss = _call(z, target, reduction=reduction, **kw)
    assert _path_of(loss) == expected_path
    _assert_matches_reference(loss, z, target, kw, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("adjustment", ["scale+shift", "multiplier+offset+shift", "none"])
@pytest.mark.parametrize(
    ("dtype", "force", "expected_path"),
    [(torch.float32, False, "transposed"), (torch.float64, False, "composite"), (torch.float64, True, "fused")],
    ids=["transposed32", "composite64", "fused64"],
)
def test_single_class(
    dtype: torch.dtype,
    force: bool,
    expected_path: str,
    adjustment: str,
    reduction: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """C = 1: the loss and its gradient are zero, exactly as F.cross_entropy of one class."""
    if force:
        _force_fused(monkeypatch, force)
    gen = torch.Generator().manual_seed(6)
    z, target = _inputs(5, 1, dtype, gen)
    kw = _adjustments(ADJUSTMENTS[adjustment], 1, dtype, gen, weighted=True)
    loss = _call(z, target, reduction=reduction, **kw)
    assert _path_of(loss) == expected_path
    expected = F.cross_entropy(z, target, weight=kw["weight"], reduction=reduction)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    (grad,) = torch.autograd.grad(loss, z, torch.ones_like(loss))
    assert torch.equal(grad, torch.zeros_like(z))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("adjustment", ["scale+shift", "multiplier+offset", "scale+offset+shift"])
@pytest.mark.parametrize("path", list(PATHS))
def test_large_logits_stay_finite(path: str, adjustment: str, reduction: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Logits of order 1e4 with scale 30 (adjusted logits ~1e5): finite loss and gradient equal to the reference."""
    dtype, c, force, expected_path = PATHS[path]
    if force:
        _force_fused(monkeypatch, force)
    gen = torch.Generator().manual_seed(8)
    z, target = _inputs(9, c, dtype, gen, spread=1e4)
    kw = _adjustments(ADJUSTMENTS[adjustment], c, dtype, gen, weighted=True, scale=30.0)
    loss = _call(z, target, reduction=reduction, **kw)
    assert _path_of(loss) == expected_path
    assert torch.isfinite(loss).all()
    (grad,) = torch.autograd.grad(loss, z, torch.ones_like(loss), retain_graph=True)
    assert torch.isfinite(grad).all()
    # float32 rounds t ~ 1e5 to ~1e-2, enough to move a softmax entry when two logits are close
    grad_tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else None
    _assert_matches_reference(loss, z, target, kw, reduction, grad_tol=grad_tol)


@pytest.mark.parametrize("path", list(PATHS))
def test_prepared_fn_accepts_any_batch_size(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One prepared fn, called with batch sizes other than that of ``like`` (incl. 0 and 1), stays exact."""
    dtype, c, force, expected_path = PATHS[path]
    if force:
        _force_fused(monkeypatch, force)
    gen = torch.Generator().manual_seed(9)
    like, _ = _inputs(5, c, dtype, gen)
    for kinds in (("multiplier", "offset", "class_shift"), ("scale", "class_shift")):
        kw = _adjustments(kinds, c, dtype, gen, weighted=True)
        for reduction in REDUCTIONS:
            fn = adjusted_cross_entropy_fn(like.detach(), reduction=reduction, **kw)
            for n in (3, 0, 1, 64):
                z, target = _inputs(n, c, dtype, gen)
                loss = fn(z, target)
                assert _path_of(loss) == expected_path
                _assert_matches_reference(loss, z, target, kw, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_prepared_fn_switches_path_at_threshold(reduction: str) -> None:
    """float64, C = 8: one prepared fn composes up to 2**15 logits, runs fused above and back again."""
    gen = torch.Generator().manual_seed(10)
    c = 8
    kw = _adjustments(("scale", "class_shift"), c, torch.float64, gen, weighted=True)
    fn = adjusted_cross_entropy_fn(torch.zeros(2, c, dtype=torch.float64), reduction=reduction, **kw)
    limit = fused._COMPOSITE_MAX_ELEMENTS
    assert limit == 2**15
    for n, expected_path in ((limit // c, "composite"), (limit // c + 1, "fused"), (3, "composite")):
        z, target = _inputs(n, c, torch.float64, gen)
        loss = fn(z, target)
        assert _path_of(loss) == expected_path, n
        _assert_matches_reference(loss, z, target, kw, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("adjustment", ["scale+shift", "multiplier+offset+shift"])
def test_float32_few_classes_large_batch_stays_transposed(adjustment: str, reduction: str) -> None:
    """float32, C = 10, N = 4096 (> 2**15 logits) still takes the transposed composite path."""
    gen = torch.Generator().manual_seed(11)
    z, target = _inputs(4096, 10, torch.float32, gen)
    assert z.numel() > fused._COMPOSITE_MAX_ELEMENTS
    kw = _adjustments(ADJUSTMENTS[adjustment], 10, torch.float32, gen, weighted=True)
    loss = _call(z, target, reduction=reduction, **kw)
    assert _path_of(loss) == "transposed"
    _assert_matches_reference(loss, z, target, kw, reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("adjustment", ["scale+shift", "multiplier+offset+shift"])
def test_float64_large_input_takes_fused_path(adjustment: str, reduction: str) -> None:
    """float64, C = 10, N = 4096 (> 2**15 logits) takes the fused Function and equals the reference."""
    gen = torch.Generator().manual_seed(12)
    z, target = _inputs(4096, 10, torch.float64, gen)
    kw = _adjustments(ADJUSTMENTS[adjustment], 10, torch.float64, gen, weighted=True)
    loss = _call(z, target, reduction=reduction, **kw)
    assert _path_of(loss) == "fused"
    _assert_matches_reference(loss, z, target, kw, reduction)


@pytest.mark.parametrize(
    ("c", "n", "expected_path"),
    [(15, 3000, "transposed"), (16, 4, "composite"), (16, 2048, "composite"), (16, 2049, "fused")],
)
def test_float32_class_and_size_boundaries(c: int, n: int, expected_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """float32: C = 15 is transposed at any size; C = 16 composes up to exactly 2**15 logits, fused above."""
    gen = torch.Generator().manual_seed(13)
    z, target = _inputs(n, c, torch.float32, gen)
    kw = _adjustments(("multiplier", "offset", "class_shift"), c, torch.float32, gen, weighted=True)
    loss = _call(z, target, **kw)
    assert _path_of(loss) == expected_path
    _assert_matches_reference(loss, z, target, kw, "mean")
    if expected_path == "transposed":  # the transposed choice does not depend on the size threshold
        _force_fused(monkeypatch)
        assert _path_of(_call(z, target, **kw)) == "transposed"


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("adjustment", ["scale+shift", "multiplier+offset+shift", "multiplier", "offset"])
@pytest.mark.parametrize("path", list(PATHS))
def test_create_graph_gradient_and_hvp_match_reference(
    path: str, adjustment: str, reduction: str, weighted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``create_graph=True`` the gradient and a Hessian-vector product equal those of the reference.

    (gradgradcheck alone cannot see a wrong double backward of the fused Function: it differentiates
    the create_graph gradient numerically, i.e. the same expression it checks.)
    """
    dtype, c, force, expected_path = PATHS[path]
    if force:
        _force_fused(monkeypatch, force)
    gen = torch.Generator().manual_seed(15)
    z, target = _inputs(7, c, dtype, gen)
    kw = _adjustments(ADJUSTMENTS[adjustment], c, dtype, gen, weighted)
    loss = _call(z, target, reduction=reduction, **kw)
    assert _path_of(loss) == expected_path
    g = _upstream(loss.shape, dtype, gen)
    u = torch.randn(z.shape, generator=gen, dtype=torch.float64).to(dtype)
    (grad,) = torch.autograd.grad(loss, z, g, create_graph=True)
    (hvp,) = torch.autograd.grad(grad, z, u)
    z64 = z.detach().double().requires_grad_(True)
    ref = reference_loss(z64, target, reduction=reduction, **kw)
    (grad_ref,) = torch.autograd.grad(ref, z64, g.double(), create_graph=True)
    (hvp_ref,) = torch.autograd.grad(grad_ref, z64, u.double())
    tol = _tol(dtype)
    torch.testing.assert_close(grad.detach().double(), grad_ref.detach(), **tol)
    torch.testing.assert_close(hvp.double(), hvp_ref, **tol)


GRADCHECK_PATHS: dict[str, tuple[int, int, bool | str, str]] = {
    "composite64": (5, 3, False, "composite"),
    "fused64": (5, 3, True, "fused"),
    "fused64_logsoftmax": (5, 3, "log-softmax", "fused"),
    "fused64_c17": (17, 2, True, "fused"),
}


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("adjustment", ["scale+shift", "multiplier+offset+shift", "none"])
@pytest.mark.parametrize("path", list(GRADCHECK_PATHS))
def test_gradcheck_and_gradgradcheck(
    path: str, adjustment: str, reduction: str, weighted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """float64 gradcheck and gradgradcheck of the plain composite and the (forced) fused path.

    The full Jacobians are compared for the richest combination (weighted multiplier, offset and shift);
    the other combinations use gradcheck's fast mode (random projections of the Jacobians).
    """
    fast_mode = not (weighted and adjustment == "multiplier+offset+shift")
    c, n, force, expected_path = GRADCHECK_PATHS[path]
    if force:
        _force_fused(monkeypatch, force)
    gen = torch.Generator().manual_seed(14)
    z, target = _inputs(n, c, torch.float64, gen)
    kw = _adjustments(ADJUSTMENTS[adjustment], c, torch.float64, gen, weighted)
    fn = adjusted_cross_entropy_fn(z.detach(), reduction=reduction, **kw)
    assert _path_of(fn(z, target)) == expected_path

    def loss_of(x: Tensor) -> Tensor:
        return fn(x, target)

    assert torch.autograd.gradcheck(loss_of, (z,), fast_mode=fast_mode)
    assert torch.autograd.gradgradcheck(loss_of, (z,), fast_mode=fast_mode)


# ---------------------------------------------------------------------------------------------------
# loss modules: cached constants follow the module's state
# ---------------------------------------------------------------------------------------------------

COUNTS = [500.0, 120.0, 40.0, 9.0, 3.0]
OTHER_COUNTS = [7.0, 60.0, 300.0, 25.0, 1000.0]
WEIGHT = [0.5, 1.0, 1.5, 2.0, 3.0]
OTHER_WEIGHT = [2.5, 0.3, 1.0, 4.0, 0.7]

KINDS: dict[str, tuple[type[nn.Module], dict[str, Any], tuple[str, ...]]] = {
    # registry name -> (class, extra constructor parameters, adjustable buffers)
    "ldam": (LDAMLoss, {"scale": 5.0}, ("margins",)),
    "vs": (VSLoss, {"gamma": 0.3, "tau": 1.2}, ("delta", "iota")),
    "la": (LogitAdjustedLoss, {"tau": 1.0}, ("iota",)),
    "cdt": (CDTLoss, {"gamma": 0.3}, ("delta",)),
    "bayias": (BayiasLoss, {"target_prior": [1.0, 2.0, 3.0, 2.0, 1.0]}, ("offset",)),
}


def _build(
    kind: str, counts: list[float] = COUNTS, weight: list[float] | None = WEIGHT, reduction: str = "mean"
) -> Any:
    """A loss module from the registry (checked to be the expected class)."""
    cls, params, _ = KINDS[kind]
    loss = LOSSES.build(kind, {**params, "weight": weight, "reduction": reduction}, class_counts=counts)
    assert type(loss) is cls
    return loss


def _reference_kwargs(loss: Any) -> dict[str, Any]:
    """The module's current state as keyword arguments of :func:`reference_loss`."""
    kw: dict[str, Any] = {"weight": loss.weight}
    if isinstance(loss, LDAMLoss):
        kw.update(scale=loss.scale, class_shift=-loss.scale * loss.margins.double())
    elif isinstance(loss, VSLoss):
        kw.update(multiplier=None if loss.gamma == 0.0 else loss.delta, offset=None if loss.tau == 0.0 else loss.iota)
    else:
        kw.update(offset=loss.offset)
    return kw


def _twin(loss: Any, logits: Tensor, target: Tensor) -> Tensor:
    """The functional twin of the module with the module's current state."""
    if isinstance(loss, LDAMLoss):
        return ldam_loss(
            logits, target, margins=loss.margins, scale=loss.scale, weight=loss.weight, reduction=loss.reduction
        )
    if isinstance(loss, VSLoss):
        multiplier = None if loss.gamma == 0.0 else loss.delta
        offset = None if loss.tau == 0.0 else loss.iota
        return _affine_cross_entropy(logits, target, multiplier, offset, loss.weight, loss.reduction)
    return _affine_cross_entropy(logits, target, None, loss.offset, loss.weight, loss.reduction)


def _mutations(kind: str) -> list[str]:
    """The state changes exercised for ``kind``."""
    common = [
        "unchanged",
        "set_weight",
        "set_weight_none",
        "inplace_weight",
        "setitem_weight",
        "load_state_dict",
        "load_state_dict_unweighted",
        "double",
        "float",
        "reduction_sum",
        "reduction_none",
    ]
    for buf in KINDS[kind][2]:
        common += [f"inplace:{buf}", f"setitem:{buf}", f"no_grad_copy:{buf}", f"reassign:{buf}"]
    if kind == "ldam":
        common.append("scale")
    return common


def _mutate(loss: Any, kind: str, mutation: str) -> torch.dtype:
    """Apply ``mutation`` to the module; return the logits dtype to call it with afterwards."""
    dtype = torch.float32
    if ":" in mutation:
        how, name = mutation.split(":")
        buf: Tensor = getattr(loss, name)
        factor = 0.5 if name == "delta" else 2.0
        if how == "inplace":
            buf.mul_(factor)
        elif how == "setitem":
            buf[1] = buf[1] * 3.0 + 0.25
        elif how == "no_grad_copy":
            with torch.no_grad():
                buf.copy_(buf.flip(0))
        else:
            setattr(loss, name, buf * factor)
    elif mutation == "set_weight":
        loss.set_weight(OTHER_WEIGHT)
    elif mutation == "set_weight_none":
        loss.set_weight(None)
    elif mutation == "inplace_weight":
        loss.weight.mul_(torch.tensor([4.0, 1.0, 0.5, 0.25, 2.0], dtype=torch.float64))
    elif mutation == "setitem_weight":
        loss.weight[0] = 10.0
    elif mutation == "load_state_dict":
        loss.load_state_dict(_build(kind, OTHER_COUNTS, OTHER_WEIGHT).state_dict())
    elif mutation == "load_state_dict_unweighted":
        loss.load_state_dict(_build(kind, OTHER_COUNTS, None).state_dict())
        assert loss.weight is None
    elif mutation == "double":
        loss.double()
        dtype = torch.float64
    elif mutation == "float":
        loss.float()
        assert all(b.dtype == torch.float32 for b in loss.buffers())
    elif mutation == "reduction_sum":
        loss.reduction = "sum"
    elif mutation == "reduction_none":
        loss.reduction = "none"
    elif mutation == "scale":
        loss.scale = 12.0
    else:
        assert mutation == "unchanged"
    return dtype


_MODULE_CASES = [(kind, m) for kind in KINDS for m in _mutations(kind)]


@pytest.mark.parametrize(("kind", "mutation"), _MODULE_CASES, ids=[f"{k}-{m}" for k, m in _MODULE_CASES])
def test_module_follows_state_changes(kind: str, mutation: str) -> None:
    """After a state change the module equals its functional twin and the reference (no stale constants)."""
    loss = _build(kind)
    gen = torch.Generator().manual_seed(20)
    logits, target = _inputs(12, 5, torch.float32, gen)
    before = loss(logits, target)  # fills the cache
    torch.testing.assert_close(before, _twin(loss, logits, target), rtol=1e-6, atol=1e-6)
    loss(logits[:4], target[:4])  # a second call with another batch size, from the cache

    dtype = _mutate(loss, kind, mutation)
    z = logits.detach().to(dtype).requires_grad_(True)
    after = loss(z, target)
    tol = _tol(dtype)
    torch.testing.assert_close(after, _twin(loss, z, target), **tol)
    _assert_matches_reference(after, z, target, _reference_kwargs(loss), loss.reduction)
    if mutation not in ("unchanged", "double", "float") and after.shape == before.shape:
        # the change is visible, so a stale cache would have failed the comparisons above
        assert not torch.allclose(after.double(), before.detach().double(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_module_large_batch_after_small(kind: str) -> None:
    """float64 logits: the cached constants serve a small (composite) and a large (fused) batch alike."""
    loss = _build(kind)
    gen = torch.Generator().manual_seed(21)
    for n, expected_path in ((12, "composite"), (7000, "fused"), (1, "composite")):
        z, target = _inputs(n, 5, torch.float64, gen)
        out = loss(z, target)
        assert _path_of(out) == expected_path
        torch.testing.assert_close(out, _twin(loss, z, target), rtol=1e-12, atol=1e-12)
        _assert_matches_reference(out, z, target, _reference_kwargs(loss), loss.reduction)


@pytest.mark.parametrize("kind", list(KINDS))
def test_module_reuses_constants_while_unchanged(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The prepared fn is built once per state/dtype: again after a buffer write, not on repeated calls."""
    builds: list[int] = []
    for module in (functional_ldam, functional_vs):
        original = module.adjusted_cross_entropy_fn

        def counting(*args: Any, _original: Callable[..., Any] = original, **kwargs: Any) -> Any:
            builds.append(1)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, "adjusted_cross_entropy_fn", counting)
    loss = _build(kind)
    gen = torch.Generator().manual_seed(22)
    z, target = _inputs(8, 5, torch.float32, gen)
    first = loss(z, target)
    second = loss(z, target)
    assert len(builds) == 1
    assert torch.equal(first, second)
    loss(z.double(), target)
    assert len(builds) == 2
    getattr(loss, KINDS[kind][2][0]).mul_(1.5)
    loss(z.double(), target)
    assert len(builds) == 3


@pytest.mark.parametrize("mutation", ["load_state_dict", "inplace"])
def test_vs_zero_gamma_follows_its_delta_buffer(mutation: str) -> None:
    """VSLoss "follows the buffers, which load_state_dict and in-place edits may change", also with gamma = 0."""
    loss = VSLoss(COUNTS, gamma=0.0, tau=1.0)
    gen = torch.Generator().manual_seed(24)
    z, target = _inputs(8, 5, torch.float32, gen)
    loss(z, target)
    if mutation == "load_state_dict":
        loss.load_state_dict(VSLoss(COUNTS, gamma=0.3, tau=1.0).state_dict())
    else:
        loss.delta.mul_(0.5)
    expected = _affine_cross_entropy(z, target, loss.delta, loss.iota, loss.weight, loss.reduction)
    torch.testing.assert_close(loss(z, target), expected)


# ---------------------------------------------------------------------------------------------------
# value checks (validation switch) and error messages
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prime", ["checked", "unchecked"])
@pytest.mark.parametrize("switch", ["context", "set_validation"])
def test_nan_margins_written_with_checks_off_raise_once_checks_on(switch: str, prime: str) -> None:
    """NaN margins pass silently while checks are off; the next call with checks on names ``margins``."""
    loss = _build("ldam")
    gen = torch.Generator().manual_seed(30)
    z, target = _inputs(8, 5, torch.float32, gen)
    if prime == "checked":
        loss(z, target)
    else:
        with tailwise.validation_disabled():
            loss(z, target)

    def write_and_call() -> None:
        loss.margins[1] = float("nan")
        assert torch.isnan(loss(z, target))
        assert torch.isnan(loss(z, target))  # the unchecked cache is reused while checks are off

    if switch == "context":
        with tailwise.validation_disabled():
            write_and_call()
    else:
        tailwise.set_validation(False)
        write_and_call()
        tailwise.set_validation(True)
    assert tailwise.validation_enabled()
    message = r"^margins must be finite; got 1 NaN/Inf value\(s\) in a tensor of shape \(5,\) and dtype torch\.float64$"
    with pytest.raises(ValueError, match=message):
        loss(z, target)
    with pytest.raises(ValueError, match=message):  # the functional twin raises the same
        ldam_loss(z, target, margins=loss.margins, scale=loss.scale, weight=loss.weight)
    with pytest.raises(ValueError, match=message):  # and keeps raising
        loss(z, target)


@pytest.mark.parametrize("kind", list(KINDS))
def test_nan_weight_written_with_checks_off_raises_once_checks_on(kind: str) -> None:
    """A NaN written into ``weight`` with checks off raises "weight must be finite" once checks are on."""
    loss = _build(kind)
    gen = torch.Generator().manual_seed(31)
    z, target = _inputs(8, 5, torch.float32, gen)
    loss(z, target)
    with tailwise.validation_disabled():
        loss.weight[2] = float("nan")
        assert torch.isnan(loss(z, target))
    with pytest.raises(ValueError, match=r"^weight must be finite; got 1 NaN/Inf value\(s\)"):
        loss(z, target)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", list(KINDS))
def test_validation_toggle_keeps_results(kind: str, dtype: torch.dtype) -> None:
    """Switching the value checks on and off between calls changes neither the loss nor its gradient."""
    loss = _build(kind)
    gen = torch.Generator().manual_seed(32)
    z, target = _inputs(10, 5, dtype, gen)
    results = []
    for enabled in (True, False, True, False, True):
        tailwise.set_validation(enabled)
        out = loss(z, target)
        (grad,) = torch.autograd.grad(out, z)
        results.append((out.detach(), grad))
    for out, grad in results[1:]:
        assert torch.equal(out, results[0][0])
        assert torch.equal(grad, results[0][1])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("label_too_large", r"target labels must lie in \[0, 4\] for 5 classes; got values in \[0, 5\]"),
        ("label_negative", r"target labels must lie in \[0, 4\] for 5 classes; got values in \[-1, 4\]"),
        ("nan_logits", r"logits must be finite; got 1 NaN/Inf value\(s\)"),
        ("inf_logits", r"logits must be finite; got 2 NaN/Inf value\(s\)"),
        ("wrong_classes", r"logits must have 5 columns, one per class of class_counts; got shape \(6, 6\)"),
    ],
)
@pytest.mark.parametrize("kind", list(KINDS))
def test_module_bad_input_messages(kind: str, case: str, message: str) -> None:
    """Bad logits or labels give the documented messages, also after the cache has been filled."""
    loss = _build(kind)
    gen = torch.Generator().manual_seed(33)
    z, target = _inputs(6, 5, torch.float32, gen)
    loss(z, target)
    z = z.detach().clone()
    if case == "label_too_large":
        target = target.clone()
        target[0] = 5
    elif case == "label_negative":
        target = target.clone()
        target[3] = -1
    elif case == "nan_logits":
        z[2, 1] = float("nan")
    elif case == "inf_logits":
        z[0, 0] = float("inf")
        z[4, 3] = -float("inf")
    else:
        z = torch.randn(6, 6)
    with pytest.raises(ValueError, match=message):
        loss(z, target)
    if case == "wrong_classes":  # a shape check: it runs with value checks off too
        with tailwise.validation_disabled(), pytest.raises(ValueError, match=message):
            loss(z, target)


@pytest.mark.parametrize("bad_label", [5, -1])
@pytest.mark.parametrize(
    ("dtype", "n", "expected_path"),
    [(torch.float32, 6, "transposed"), (torch.float64, 6, "composite"), (torch.float64, 7000, "fused")],
    ids=["transposed32", "composite64", "fused64"],
)
@pytest.mark.parametrize("kind", list(KINDS))
def test_module_label_range_on_every_path(
    kind: str, dtype: torch.dtype, n: int, expected_path: str, bad_label: int
) -> None:
    """Out-of-range labels raise the range message whichever path the batch takes (int64 and int32 labels)."""
    loss = _build(kind)
    gen = torch.Generator().manual_seed(34)
    z, target = _inputs(n, 5, dtype, gen)
    assert _path_of(loss(z, target)) == expected_path
    target = target.clone()
    target[n // 2] = bad_label
    lo, hi = min(bad_label, 0), max(bad_label, 4)
    message = rf"^target labels must lie in \[0, 4\] for 5 classes; got values in \[{lo}, {hi}\]$"
    for labels in (target, target.int()):
        with pytest.raises(ValueError, match=message):
            loss(z, labels)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("adjustment", ["scale+shift", "multiplier+offset", "multiplier+offset+shift", "none"])
@pytest.mark.parametrize("path", ["fused32", "fused64", "fused32_logsoftmax"])
def test_fused_retained_graph_gives_the_same_gradient_twice(
    path: str, adjustment: str, reduction: str, weighted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The softmax buffer handed to autograd as the gradient is formed again for a second backward.

    The first gradient, accumulated into ``.grad`` and then changed in place, must not leak into the
    second; the upstream gradient is not one, and each backward matches the reference.
    """
    dtype, c, force, _ = PATHS[path]
    _force_fused(monkeypatch, force)
    gen = torch.Generator().manual_seed(21)
    z, target = _inputs(13, c, dtype, gen)
    kw = _adjustments(ADJUSTMENTS[adjustment], c, dtype, gen, weighted)
    loss = _call(z, target, reduction=reduction, **kw)
    assert _path_of(loss) == "fused"
    g = _upstream(loss.shape, dtype, torch.Generator().manual_seed(3)) * 0.7
    loss.backward(g, retain_graph=True)
    assert z.grad is not None
    first = z.grad.clone()
    z.grad.mul_(5.0).add_(1.0)  # a consumer changing the accumulated gradient in place
    z.grad = None
    loss.backward(g)
    assert z.grad is not None
    torch.testing.assert_close(z.grad, first, rtol=0, atol=0)
    z64 = z.detach().double().requires_grad_(True)
    (grad_ref,) = torch.autograd.grad(reference_loss(z64, target, reduction=reduction, **kw), z64, g.double())
    torch.testing.assert_close(first.double(), grad_ref, **_tol(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_fused_underflowing_label_probability_is_exact(
    dtype: torch.dtype, reduction: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A label logit far below its row's maximum (softmax probability 0) still gives the exact loss.

    Rows 1 and 3 put the label 400 (float32) or 2500 (float64) below the maximum (at least 120 and
    750 after a multiplier of at least 0.3), where the label's softmax probability underflows to
    zero; their loss must be the log-softmax value, not ``inf``, recomputed for those rows only.
    """
    _force_fused(monkeypatch)
    recomputed: list[int] = []
    adjusted = fused._adjusted_logits

    def spy(z: Tensor, *args: Any) -> Tensor:
        recomputed.append(z.shape[0])
        return adjusted(z, *args)

    monkeypatch.setattr(fused, "_adjusted_logits", spy)
    gen = torch.Generator().manual_seed(5)
    z, target = _inputs(6, 20, dtype, gen)
    gap = 400.0 if dtype == torch.float32 else 2500.0
    with torch.no_grad():
        for i in (1, 3):
            z[i, int(target[i])] -= gap
    kw = _adjustments(("multiplier", "offset", "class_shift"), 20, dtype, gen, weighted=True)
    loss = _call(z, target, reduction=reduction, **kw)
    assert _path_of(loss) == "fused"
    assert recomputed == [2]
    assert torch.isfinite(loss).all()
    if reduction == "none":  # multiplier >= 0.3 and weight >= 0.2: at least 0.06 * gap
        assert float(loss[1].detach()) > 0.06 * gap
    _assert_matches_reference(loss, z, target, kw, reduction)


def test_label_log_probs_recomputes_only_underflowing_rows() -> None:
    """Normal probabilities are read as logs; rows below the smallest normal go to ``exact``."""
    z = torch.tensor([[0.0, 1.0, 2.0], [0.0, -120.0, 5.0], [3.0, 0.0, -300.0]])
    index = torch.tensor([[1], [1], [2]])
    p = torch.softmax(z, 1)
    seen: list[Tensor] = []

    def exact(rows: Tensor) -> Tensor:
        seen.append(rows.clone())
        return torch.log_softmax(z[rows].double(), 1).gather(1, index[rows]).squeeze(1).float()

    out = fused.label_log_probs(p, index, exact)
    assert len(seen) == 1 and seen[0].tolist() == [1, 2]
    expected = torch.log_softmax(z.double(), 1).gather(1, index).squeeze(1)
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)
    seen.clear()
    fused.label_log_probs(torch.softmax(z[:1], 1), index[:1], exact)
    assert not seen
