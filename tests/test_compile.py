"""Losses under ``torch.compile``: one graph (``fullgraph=True``), the eager value and gradient, checks kept.

Traced calls run each loss's plain PyTorch expression (the fused eager kernels keep Python-side
state and branch on values, which a graph cannot hold). The ``aot_eager`` backend traces forward and
backward like inductor without generating code, so these tests stay fast; one test compiles CALS
with inductor when a C++ compiler is present.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import tailwise.functional as TF
from tailwise._validation import validation_disabled
from tailwise.registry import LOSSES
from tailwise.train.trainer import load_components

load_components()

C_FEW, C_MANY = 10, 64
COUNTS = {c: torch.linspace(500, 5, c).round() for c in (C_FEW, C_MANY)}



def _registered_logit_losses() -> list[str]:
    """One name per registered loss called as ``loss(logits, target)`` (not those given the model or
    worst-case logits)."""
    by_factory: dict[int, str] = {}
    for name in sorted(LOSSES.names(), key=len):  # the shortest of a loss's names
        factory = LOSSES.get(name)
        if not getattr(factory, "needs_model", False) and not getattr(factory, "needs_worst", False):
            by_factory.setdefault(id(factory), name)
    return sorted(by_factory.values())


# (name, params): every registered loss called as loss(logits, target) with its defaults, and settings
# that reach the other eager paths
MODULES = [(name, {}) for name in _registered_logit_losses()] + [
    ("alpha", {"alpha": 3.0}),
    ("ce", {"label_smoothing": 0.1}),
    ("focal", {"gamma": 0.5}),
    ("class_balanced", {"loss_type": "focal"}),
    ("logit_clip", {"mode": "official"}),
    ("logit_clip", {"p": 3.0}),
    ("mbls", {"margin": 1.0}),
    ("cals", {"margin": 1.0}),
    ("cals", {"margin": 1.0, "penalty": "p2"}),
    ("absgd", {"lam": -2.0}),
]

# (N, C): few classes (the transposed layout in eager mode) and > 2**15 logits (the fused kernels)
SHAPES = [(64, C_FEW), (520, C_MANY)]


def _compiled(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    torch._dynamo.reset()
    return torch.compile(fn, backend="aot_eager", fullgraph=True)


def _inputs(n: int, c: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    z = (torch.randn(n, c, dtype=dtype) * 2).requires_grad_()
    return z, torch.randint(0, c, (n,))


def _value_and_grad(fn: Callable[[Tensor, Tensor], Tensor], z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    (grad,) = torch.autograd.grad(loss := fn(z, y), z)
    return loss.detach(), grad


def _assert_close_results(got: tuple[Tensor, Tensor], expected: tuple[Tensor, Tensor]) -> None:
    """A compiled ``(value, gradient)`` against the eager one (float32 rounding of fused kernels)."""
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-4, atol=1e-6)


def _assert_same(fn: Callable[[Tensor, Tensor], Tensor], z: Tensor, y: Tensor) -> None:
    _assert_close_results(_value_and_grad(_compiled(fn), z, y), _value_and_grad(fn, z, y))


def _check_kernel(value: Tensor, expected: Tensor, z: Tensor, upstream: float) -> None:
    """A forward-gradient kernel's value and gradient (upstream ``upstream``) equal the reference's,
    and a second backward through it raises."""
    torch.testing.assert_close(value, expected)
    (grad,) = torch.autograd.grad(value * upstream, z, create_graph=True)
    torch.testing.assert_close(grad, torch.autograd.grad(expected * upstream, z)[0])
    with pytest.raises(RuntimeError, match=r"once_differentiable|does not require grad"):
        torch.autograd.grad(grad.sum(), z)


def _module(name: str, params: dict, c: int) -> torch.nn.Module:
    return LOSSES.build(name, dict(params), class_counts=COUNTS[c], num_classes=c)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize(("name", "params"), MODULES, ids=lambda v: v if isinstance(v, str) else str(v or ""))
def test_module_one_graph_same_value_and_gradient(name: str, params: dict, shape: tuple[int, int]) -> None:
    """Two copies (a loss may update its state on every call): values, gradients and states agree."""
    eager, traced = _module(name, params, shape[1]), _module(name, params, shape[1])
    z, y = _inputs(*shape)
    _assert_close_results(_value_and_grad(_compiled(traced), z, y), _value_and_grad(eager, z, y))
    for key, tensor in eager.state_dict().items():
        torch.testing.assert_close(traced.state_dict()[key], tensor, rtol=1e-5, atol=1e-6, msg=key)


def _functionals(c: int) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    counts = COUNTS[c]
    lam, rho = torch.full((c,), 0.5), torch.ones(c)
    weight = torch.rand(c) + 0.5
    return {
        "cross_entropy": lambda z, y: TF.cross_entropy(z, y, weight=weight),
        "label_smoothing_loss": lambda z, y: TF.label_smoothing_loss(z, y, 0.1),
        "ldam_loss": lambda z, y: TF.ldam_loss(z, y, counts),
        "vs_loss": lambda z, y: TF.vs_loss(z, y, counts),
        "logit_adjusted_loss": lambda z, y: TF.logit_adjusted_loss(z, y, counts),
        "cdt_loss": lambda z, y: TF.cdt_loss(z, y, counts),
        "bayias_loss": lambda z, y: TF.bayias_loss(z, y, counts),
        "weighted_cross_entropy": lambda z, y: TF.weighted_cross_entropy(z, y, counts),
        "class_balanced_loss": lambda z, y: TF.class_balanced_loss(z, y, counts, loss_type="focal"),
        "cdb_loss": lambda z, y: TF.cdb_loss(z, y, weight),
        "focal_loss": lambda z, y: TF.focal_loss(z, y, 2.0, weight=weight),
        "alpha_loss": lambda z, y: TF.alpha_loss(z, y, 2.0),
        "logit_clip_loss": lambda z, y: TF.logit_clip_loss(z, y, 0.5),
        "clip_logits + cross_entropy": lambda z, y: TF.cross_entropy(TF.clip_logits(z, 0.5), y),
        "mbls_loss": lambda z, y: TF.mbls_loss(z, y, margin=1.0),
        "cals_loss": lambda z, y: TF.cals_loss(z, y, lam, rho, margin=1.0),
        "cals_loss sum": lambda z, y: TF.cals_loss(z, y, lam, rho, margin=1.0, reduction="sum"),
        "cals_loss weighted": lambda z, y: TF.cals_loss(z, y, lam, rho, margin=1.0, weight=weight),
        "cals_loss p3 none": lambda z, y: TF.cals_loss(z, y, lam, rho, 1.0, "p3", reduction="none").sum(),
        "cals_penalty": lambda z, y: TF.cals_penalty(z, lam, rho, margin=1.0),
        "cross_entropy soft": lambda z, y: TF.cross_entropy(z, torch.softmax(z.detach() * 0.5, 1), label_smoothing=0.1),
        "cross_entropy none": lambda z, y: TF.cross_entropy(z, y, weight=weight, reduction="none").sum(),
        "alpha_loss soft": lambda z, y: TF.alpha_loss(z, torch.softmax(z.detach() * 0.5, 1), 2.0),
        "alpha_loss inf": lambda z, y: TF.alpha_loss(z, y, float("inf")),
        "focal_loss ldam_repo": lambda z, y: TF.focal_loss(z, y, 1.0, variant="ldam_repo"),
        "logit_clip_loss p=inf": lambda z, y: TF.logit_clip_loss(z, y, 0.5, p=float("inf")),
        "logit_clip_loss weighted none": lambda z, y: TF.logit_clip_loss(z, y, 0.5, weight=weight, reduction="none").sum(),
        "ldam_loss none": lambda z, y: TF.ldam_loss(z, y, margins=weight, reduction="none").sum(),
        "mbls_loss weighted": lambda z, y: TF.mbls_loss(z, y, margin=1.0, weight=weight),
    }


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(_functionals(C_FEW)))
def test_functional_one_graph_same_value_and_gradient(name: str, shape: tuple[int, int]) -> None:
    _assert_same(_functionals(shape[1])[name], *_inputs(*shape))


@pytest.mark.parametrize(
    ("name", "kernel"),
    [
        ("ce", "ce._CrossEntropyTraced"),
        ("vs", "_fused._AdjustedCrossEntropyTraced"),
        ("cals", "cals._CALSPhrMeanTraced"),
        ("mbls", "mbls._MbLSMeanTraced"),
        ("logit_clip", "logit_clip._ClipCrossEntropyTraced"),
    ],
)
def test_evaluation_calls_skip_the_gradient(name: str, kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``no_grad``, and for logits without a gradient, a traced call runs the plain expression:
    with the forward-gradient kernel made to fail, evaluation still compiles and a training call fails."""
    import importlib

    module_name, cls_name = kernel.split(".")
    cls = getattr(importlib.import_module(f"tailwise.functional.{module_name}"), cls_name)
    loss = _module(name, {"margin": 1.0} if name in ("cals", "mbls") else {}, C_MANY)
    z, y = _inputs(64, C_MANY)
    expected = loss(z, y).detach()

    def unavailable(*args: object) -> Tensor:
        raise NotImplementedError("the forward-gradient kernel ran")

    monkeypatch.setattr(cls, "forward", staticmethod(unavailable))
    compiled = _compiled(loss)
    with torch.no_grad():
        torch.testing.assert_close(compiled(z, y), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled(z.detach(), y), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="the forward-gradient kernel ran"):
        compiled(z, y)


@pytest.mark.parametrize(
    ("name", "params"),
    [("ce", {"label_smoothing": 0.1}), ("ldam", {}), ("cals", {"margin": 1.0}), ("mbls", {"margin": 1.0}),
     ("logit_clip", {}), ("alpha", {"alpha": 3.0}), ("focal", {})],
)
def test_symbolic_batch_sizes(name: str, params: dict) -> None:
    """``dynamic=True`` (symbolic batch size, as after a smaller last batch): one graph for every size."""
    eager, traced = _module(name, params, C_MANY), _module(name, params, C_MANY)
    torch._dynamo.reset()
    compiled = torch.compile(traced, backend="aot_eager", fullgraph=True, dynamic=True)
    for n in (64, 40, 17):
        z, y = _inputs(n, C_MANY)
        _assert_close_results(_value_and_grad(compiled, z, y), _value_and_grad(eager, z, y))


@pytest.mark.parametrize("name", ["linf_crossentropy", "linf_hinge", "linf_mixture"])
def test_linf_objectives_one_graph(name: str) -> None:
    loss = LOSSES.build(name, {}, num_classes=C_FEW)
    outputs, worst = torch.randn(32, C_FEW, requires_grad=True), torch.randn(32, C_FEW, requires_grad=True)
    y = torch.randint(0, C_FEW, (32,))
    expected = torch.autograd.grad(loss(outputs, worst, y), (outputs, worst), allow_unused=True)
    got = torch.autograd.grad(_compiled(loss)(outputs, worst, y), (outputs, worst), allow_unused=True)
    for a, b in zip(got, expected, strict=True):
        assert (a is None) == (b is None)
        if b is not None:
            torch.testing.assert_close(a, b)


def test_float64_and_half_logits() -> None:
    module = _module("cals", {"margin": 1.0}, C_FEW)
    _assert_same(module, *_inputs(32, C_FEW, torch.float64))
    z = torch.randn(32, C_FEW).half().requires_grad_()
    y = torch.randint(0, C_FEW, (32,))
    torch.testing.assert_close(_compiled(module)(z, y), module(z, y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["ldam", "cals", "logit_clip", "alpha", "mbls"])
def test_bad_values_raise_inside_the_graph(name: str) -> None:
    module = _compiled(_module(name, {}, C_FEW))
    z, y = _inputs(16, C_FEW)
    bad_z = z.detach().clone()
    bad_z[3, 1] = float("nan")
    with pytest.raises(RuntimeError, match="logits must be finite"):
        module(bad_z, y)
    for label in (-1, C_FEW):
        bad_y = y.clone()
        bad_y[5] = label
        with pytest.raises(RuntimeError, match=rf"target labels must lie in \[0, {C_FEW - 1}\]"):
            module(z, bad_y)


def test_functional_class_counts_checked_inside_the_graph() -> None:
    z, y = _inputs(16, C_FEW)
    fn = _compiled(lambda z, y, counts: TF.vs_loss(z, y, counts))
    fn(z, y, COUNTS[C_FEW])
    bad = COUNTS[C_FEW].clone()
    bad[2] = -1.0
    with pytest.raises(RuntimeError, match="class_counts must be"):
        fn(z, y, bad)


def test_bad_arguments_raise_while_tracing() -> None:
    """The usual exception and message (with ``fullgraph=True`` the compiler wraps it in its own)."""
    z, y = _inputs(16, C_FEW)
    torch._dynamo.reset()
    with pytest.raises(ValueError, match=r"target must have shape \(16,\)"):
        torch.compile(TF.cross_entropy, backend="aot_eager")(z, y[:8])
    with pytest.raises(ValueError, match="margin must be a finite number > 0"):
        torch.compile(lambda z, y: TF.cals_loss(z, y, 1e-6, 1.0, margin=-1.0), backend="aot_eager")(z, y)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="target must have shape"):
        _compiled(TF.cross_entropy)(z, y[:8])


@pytest.mark.parametrize("name", ["cals", "mbls"])
def test_value_checks_off_leave_no_asserts(name: str) -> None:
    module = _compiled(_module(name, {"margin": 1.0}, C_FEW))
    z, y = _inputs(16, C_FEW)
    bad_z = z.detach().clone()
    bad_z[0, 0] = float("nan")
    with validation_disabled():
        assert torch.isnan(module(bad_z, y))


def test_training_step_compiles_as_one_graph() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, C_MANY))
    loss_fn = _module("cals", {"margin": 1.0}, C_MANY)
    x, y = torch.randn(128, 20), torch.randint(0, C_MANY, (128,))

    def step(x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(model(x), y)

    eager = torch.autograd.grad(step(x, y), list(model.parameters()))
    compiled = torch.autograd.grad(_compiled(step)(x, y), list(model.parameters()))
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _inductor_unavailable() -> str | None:
    """Why inductor cannot build CPU kernels here (no C++ compiler, no headers), or ``None``."""
    if shutil.which("g++") is None and shutil.which("gcc") is None:
        return "no C++ compiler"
    torch._dynamo.reset()
    try:
        torch.compile(lambda x: x.exp() + 1)(torch.ones(3))
    except Exception as err:  # the environment, not tailwise: a build failure of a trivial kernel
        return f"inductor cannot build a trivial kernel here: {type(err).__name__}"
    return None


def test_cals_with_inductor() -> None:
    reason = _inductor_unavailable()
    if reason is not None:
        pytest.skip(reason)
    module = _module("cals", {"margin": 1.0}, C_MANY)
    z, y = _inputs(128, C_MANY)
    expected = _value_and_grad(module, z, y)
    torch._dynamo.reset()
    _assert_close_results(_value_and_grad(torch.compile(module, fullgraph=True), z, y), expected)


def test_cals_traced_kernel_splits_tied_maxima_like_amax() -> None:
    module = _module("cals", {"margin": 1.0}, C_MANY)
    z = torch.randn(64, C_MANY)
    z[::3, 5] = z[::3, 9] = z.detach().amax(dim=1)[::3] + 1.0  # every third row: two tied maxima
    _assert_same(module, z.requires_grad_(), torch.randint(0, C_MANY, (64,)))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cals_traced_kernel_equals_reference_and_is_differentiable_once(reduction: str) -> None:
    from tailwise.functional.cals import _cals_reference, _CALSPhrMeanTraced, _phr_constants

    c = 12
    z = torch.randn(20, c, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, c, (20,))
    lam, rho = torch.rand(c, dtype=torch.float64), torch.rand(c, dtype=torch.float64) + 0.5
    consts = _phr_constants(lam, rho, 1.0, True, c)
    value = _CALSPhrMeanTraced.apply(z, y, *consts, reduction)
    expected = _cals_reference(z, y, lam, rho, 1.0, "phr", True, reduction, None)
    _check_kernel(value, expected, z, 3.0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mbls_traced_kernel_equals_reference_and_is_differentiable_once(reduction: str) -> None:
    from tailwise.functional.mbls import _mbls_reference, _MbLSMeanTraced

    z = torch.randn(20, 12, dtype=torch.float64) * 3
    z[::4, 2] = z[::4, 7] = z.amax(dim=1)[::4] + 1.0  # tied maxima: Tensor.max's gradient goes to one
    z.requires_grad_()
    y = torch.randint(0, 12, (20,))
    value = _MbLSMeanTraced.apply(z, y, 1.0, 0.3, reduction)
    expected = _mbls_reference(z, y, 1.0, 0.3, reduction, None)
    _check_kernel(value, expected, z, 2.0)


@pytest.mark.parametrize("mode", ["continuous", "official"])
@pytest.mark.parametrize("tau", [0.05, 0.5, 3.0])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_logit_clip_traced_kernel_equals_reference(mode: str, tau: float, reduction: str) -> None:
    """Clipped, unclipped, zero rows and a row exactly at the bound (gradient through the norm)."""
    import torch.nn.functional as F

    from tailwise.functional.logit_clip import _clip_reference, _ClipCrossEntropyTraced

    z = torch.randn(24, 7, dtype=torch.float64) * torch.logspace(-2, 2, 24, dtype=torch.float64)[:, None]
    z[0] = 0.0
    z[1] *= (1.0 / tau) / torch.linalg.vector_norm(z[1])  # norm exactly 1/tau (up to rounding)
    z.requires_grad_()
    y = torch.randint(0, 7, (24,))
    value = _ClipCrossEntropyTraced.apply(z, y, tau, mode == "official", reduction)
    expected = F.cross_entropy(_clip_reference(z, tau, 2.0, mode), y, reduction=reduction)
    _check_kernel(value, expected, z, 2.0)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("adjustment", ["ldam", "vs", "la", "none"])
def test_adjusted_traced_kernel_equals_reference(adjustment: str, weighted: bool, reduction: str) -> None:
    from tailwise.functional._fused import _AdjustedCrossEntropyTraced, _reference

    c = 9
    z = torch.randn(25, c, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, c, (25,))
    vec = torch.rand(c, dtype=torch.float64) + 0.5
    scale, multiplier, offset, shift = {
        "ldam": (30.0, None, None, -vec.index_select(0, y)),
        "vs": (None, vec, torch.randn(c, dtype=torch.float64), None),
        "la": (None, None, torch.randn(c, dtype=torch.float64), None),
        "none": (None, None, None, None),
    }[adjustment]
    weight = torch.rand(c, dtype=torch.float64) + 0.1 if weighted else None
    args = (scale, multiplier, offset, shift, weight, reduction)
    value = _AdjustedCrossEntropyTraced.apply(z, y, *args)
    expected = _reference(z, y, *args)
    _check_kernel(value, expected, z, 1.5)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(("eps", "weighted"), [(0.0, False), (0.0, True), (0.1, False), (1.0, False)])
def test_cross_entropy_traced_kernel_equals_torch(eps: float, weighted: bool, reduction: str) -> None:
    import torch.nn.functional as F

    from tailwise.functional.ce import _CrossEntropyTraced

    c = 9
    z = (torch.randn(25, c, dtype=torch.float64) * 4).requires_grad_()
    y = torch.randint(0, c, (25,))
    weight = torch.rand(c, dtype=torch.float64) + 0.1 if weighted else None
    value = _CrossEntropyTraced.apply(z, y, eps, weight, reduction)
    expected = F.cross_entropy(z, y, weight=weight, reduction=reduction, label_smoothing=eps)
    _check_kernel(value, expected, z, 1.5)


def test_mbls_compiled_with_tied_maxima_equals_eager() -> None:
    module = _module("mbls", {"margin": 1.0}, C_MANY)
    z = torch.randn(64, C_MANY) * 2
    z[::3, 5] = z[::3, 9] = z.amax(dim=1)[::3] + 1.0
    _assert_same(module, z.requires_grad_(), torch.randint(0, C_MANY, (64,)))


def test_compiled_module_follows_its_changed_buffers() -> None:
    """The multipliers are graph inputs: an update between calls is read without recompiling."""
    eager = _module("cals", {"margin": 1.0}, C_MANY)
    compiled = _compiled(eager)
    z, y = _inputs(64, C_MANY)
    _value_and_grad(compiled, z, y)
    with torch.no_grad():
        eager.lambd.uniform_(0.0, 2.0)
        eager.rho.fill_(3.0)
    _assert_close_results(_value_and_grad(compiled, z, y), _value_and_grad(eager, z, y))


def test_materialized_leaves_eager_vectors_alone() -> None:
    from tailwise.functional._fused import materialized

    a, b = torch.ones(3), torch.zeros(3)
    assert materialized(a, None, b) == (a, None, b)
    out = _compiled(lambda a, b: materialized(a * 2, None, b + 1))(a, b)
    assert out[1] is None
    torch.testing.assert_close(out[0], a * 2)
    torch.testing.assert_close(out[2], b + 1)
