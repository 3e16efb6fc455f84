"""Input validation shared by every layer.

Each check raises a :class:`ValueError` or :class:`TypeError` whose message names the argument, what
was expected and what was received. Checks that would need a device synchronisation (finite values,
label range) can be switched off globally with :func:`set_validation` for tight training loops whose
inputs were validated once up front.

Under ``torch.compile`` (:func:`compiling`) the value checks become asserts inside the compiled graph
(``torch._assert_async``): they raise ``RuntimeError`` with the same argument name and expectation,
without the received values (reading those would split the graph); checks of shapes, dtypes and
arguments run while tracing, as in eager mode. On a GPU a failed assert is a device-side assert,
which ends the process (as PyTorch's own index checks do), so there only the labels' range is
asserted (an out-of-range label would index out of bounds): non-finite logits give a non-finite loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "REDUCTIONS",
    "check_class_counts",
    "check_finite",
    "check_in_choices",
    "check_int",
    "check_label_range",
    "check_logits_target",
    "check_positive",
    "check_probability",
    "check_real",
    "check_reduction",
    "check_weight",
    "compiling",
    "describe",
    "set_validation",
    "to_float64_tensor",
    "validation_disabled",
    "validation_enabled",
]

REDUCTIONS = ("none", "mean", "sum")

_VALUE_CHECKS = True


def compiling() -> bool:
    """Whether ``torch.compile`` is tracing the current call (losses then run their plain expression)."""
    return torch.compiler.is_compiling()


def _assert_in_graph(condition: Tensor, message: str) -> None:
    """Raise ``RuntimeError(message)`` when the 0-d boolean ``condition`` is false, inside a compiled graph."""
    torch._assert_async(condition, message)


def set_validation(enabled: bool) -> None:
    """Switch on or off the value checks that synchronise with the device (finite logits, label range).

    Shape, dtype and argument checks always run; only checks that read tensor values are affected.
    """
    global _VALUE_CHECKS
    _VALUE_CHECKS = bool(enabled)


def validation_enabled() -> bool:
    """Whether value checks (finite logits, label range) are on."""
    return _VALUE_CHECKS


@contextmanager
def validation_disabled() -> Iterator[None]:
    """Context manager that turns value checks off inside its block."""
    previous = _VALUE_CHECKS
    set_validation(False)
    try:
        yield
    finally:
        set_validation(previous)


def describe(value: Any) -> str:
    """A short description of a received value for error messages."""
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_in_choices(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")
    return value


def check_reduction(reduction: str) -> str:
    """Validate a ``reduction`` argument (``'none' | 'mean' | 'sum'``)."""
    return check_in_choices("reduction", reduction, REDUCTIONS)


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number; got {describe(value)}")
    v = float(value)
    ok = (v >= 0 if allow_zero else v > 0) and v < math.inf  # NaN fails the first comparison
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")
    return v


def check_real(name: str, value: float) -> float:
    """Raise unless ``value`` is a finite real number (any sign); return it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number; got {describe(value)}")
    if not -math.inf < float(value) < math.inf:  # comparisons only: also for symbolic numbers while tracing
        raise ValueError(f"{name} must be finite; got {value!r}")
    return float(value)


def check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Raise unless ``value`` is an integer (not a bool) of at least ``minimum``; return it as ``int``.

    Raises:
        TypeError: ``value`` is not an integer.
        ValueError: ``value`` is smaller than ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}; got {describe(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_probability(name: str, value: float, *, closed: bool = True) -> float:
    """Raise ``ValueError`` unless ``value`` lies in [0, 1] (or (0, 1) when ``closed`` is False)."""
    v = float(value)
    ok = (0.0 <= v <= 1.0) if closed else (0.0 < v < 1.0)
    if not ok:
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"{name} must lie in {interval}; got {value!r}")
    return v


_LOW_PRECISION = (torch.float16, torch.bfloat16)
_FULL_PRECISION = (torch.float32, torch.float64)
_LABEL_DTYPES = frozenset((torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8))
_SUM_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _all_finite(tensor: Tensor) -> bool:
    """Whether every element of the floating-point ``tensor`` is finite.

    Fast path: one reduction. A NaN or an Inf makes the sum NaN or Inf, so a finite sum proves every
    element finite (half/bfloat16 are summed in float32). A non-finite sum may also come from finite
    values whose sum overflows, so only then the exact element-wise check decides.
    """
    x = tensor.detach()
    if x.dtype in _SUM_DTYPES:
        total = x.sum(dtype=torch.float32) if x.dtype in _LOW_PRECISION else x.sum()
        if math.isfinite(float(total)):
            return True
    return bool(torch.isfinite(x).all())


def check_finite(name: str, tensor: Tensor) -> Tensor:
    """Raise ``ValueError`` if ``tensor`` holds NaN or Inf (skipped when value checks are off)."""
    if compiling():  # on the CPU only: elsewhere a failed assert is a fatal device-side assert
        if _VALUE_CHECKS and tensor.is_floating_point() and tensor.device.type == "cpu":
            _assert_in_graph(torch.isfinite(tensor.detach()).all(), f"{name} must be finite; got NaN/Inf value(s)")
        return tensor
    if _VALUE_CHECKS and tensor.is_floating_point() and not _all_finite(tensor):
        n_bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} must be finite; got {n_bad} NaN/Inf value(s) in a {describe(tensor)}")
    return tensor


def to_float64_tensor(name: str, value: Sequence[float] | np.ndarray) -> Tensor:
    """Convert a sequence or array of numbers to a float64 tensor, raising ``TypeError`` (naming ``name``) otherwise."""
    try:
        return torch.as_tensor(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a 1-D sequence of numbers; got {describe(value)}") from err


def check_class_counts(
    class_counts: Sequence[float] | Tensor | np.ndarray,
    *,
    name: str = "class_counts",
    num_classes: int | None = None,
    allow_zero: bool = False,
) -> Tensor:
    """Validate per-class training counts and return them as a float64 1-D tensor.

    Args:
        class_counts: 1-D sequence, array or tensor of per-class counts (class ``c`` at index ``c``).
        name: argument name used in error messages.
        num_classes: expected length, when known.
        allow_zero: accept zero counts (a class absent from the training set).

    Raises:
        TypeError: not a sequence of numbers.
        ValueError: wrong shape or length, negative, zero (unless allowed), NaN or Inf counts.
    """
    return _check_class_counts_range(class_counts, name=name, num_classes=num_classes, allow_zero=allow_zero)[0]


def _check_class_counts_range(
    class_counts: Sequence[float] | Tensor | np.ndarray,
    *,
    name: str = "class_counts",
    num_classes: int | None = None,
    allow_zero: bool = False,
) -> tuple[Tensor, float | Tensor, float | Tensor]:
    """:func:`check_class_counts`, also returning the smallest and the largest count.

    The extremes are Python floats, or 0-d tensors under ``torch.compile``.
    """
    if isinstance(class_counts, Tensor):
        counts = class_counts.detach().to(device="cpu", dtype=torch.float64)
    else:
        counts = to_float64_tensor(name, class_counts)
    if counts.ndim != 1 or counts.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of counts; got shape {tuple(counts.shape)}")
    if num_classes is not None and counts.numel() != num_classes:
        raise ValueError(f"{name} must have one entry per class ({num_classes}); got {counts.numel()} entries")
    if compiling():  # the value checks inside the graph; the extremes stay tensors
        _assert_in_graph(torch.isfinite(counts).all(), f"{name} must be finite")
        if allow_zero:
            _assert_in_graph((counts >= 0).all(), f"{name} must be non-negative")
        else:
            _assert_in_graph((counts > 0).all(), f"{name} must be positive for every class")
        lo_t, hi_t = torch.aminmax(counts)
        return counts, lo_t, hi_t
    # Fast path: one reduction. Finite, positive (or non-negative) counts have a finite maximum and a
    # minimum > 0 (>= 0); a NaN makes both NaN and fails the comparisons. Otherwise the checks below
    # find the first problem and raise its message.
    lo_t, hi_t = torch.aminmax(counts)
    lo, hi = float(lo_t), float(hi_t)
    if hi < math.inf and (lo > 0 or (allow_zero and lo >= 0)):
        return counts, lo, hi
    if not bool(torch.isfinite(counts).all()):
        raise ValueError(f"{name} must be finite; got {counts.tolist()}")
    if bool((counts < 0).any()):
        bad = [int(i) for i in torch.nonzero(counts < 0).flatten()]
        raise ValueError(f"{name} must be non-negative; got negative counts for classes {bad}")
    if not allow_zero and bool((counts == 0).any()):
        bad = [int(i) for i in torch.nonzero(counts == 0).flatten()]
        raise ValueError(
            f"{name} must be positive for every class; got zero counts for classes {bad} "
            "(drop the empty classes or pass counts of at least 1)"
        )
    return counts, lo, hi


def check_weight(weight: Tensor | Sequence[float] | None, num_classes: int, *, name: str = "weight") -> Tensor | None:
    """Validate an optional per-class weight vector of length ``num_classes``."""
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        weight = torch.as_tensor(np.asarray(weight, dtype=np.float64))
    if weight.ndim != 1 or weight.numel() != num_classes:
        raise ValueError(f"{name} must be a 1-D tensor with {num_classes} entries (one per class); got {describe(weight)}")
    check_finite(name, weight)
    return weight


def check_label_range(target: Tensor, num_classes: int, name: str = "target") -> None:
    """Raise ``ValueError`` unless every integer label of ``target`` lies in ``[0, num_classes)``."""
    if target.numel() == 0:
        return
    if compiling():
        _assert_in_graph(
            ((target >= 0) & (target < num_classes)).all(),
            f"{name} labels must lie in [0, {num_classes - 1}] for {num_classes} classes",
        )
        return
    lo_t, hi_t = torch.aminmax(target)
    lo, hi = int(lo_t), int(hi_t)
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"{name} labels must lie in [0, {num_classes - 1}] for {num_classes} classes; got values in [{lo}, {hi}]"
        )


def check_logits_target(
    logits: Tensor,
    target: Tensor,
    *,
    allow_soft: bool = False,
    logits_name: str = "logits",
    target_name: str = "target",
    label_range: bool = True,
    finite: bool = True,
) -> bool:
    """Validate ``(logits[N, C], target[N])`` (or soft ``target[N, C]`` when ``allow_soft``).

    ``label_range=False`` leaves the range of integer labels to the caller (a CPU computation whose
    indexing raises ``IndexError`` on a label outside ``[0, C)`` and then calls
    :func:`check_label_range` for the message). ``finite=False`` leaves the finiteness of the
    logits to the caller (see :func:`checked_by_computation`).

    Returns:
        ``True`` when ``target`` is a soft (probability) target, ``False`` for class indices.

    Raises:
        TypeError: a non-tensor input or an integer target of the wrong dtype.
        ValueError: wrong rank or shape, labels outside ``[0, C)``, non-finite logits.
    """
    if not isinstance(logits, Tensor):
        raise TypeError(f"{logits_name} must be a torch.Tensor; got {describe(logits)}")
    if not isinstance(target, Tensor):
        raise TypeError(f"{target_name} must be a torch.Tensor; got {describe(target)}")
    if logits.ndim != 2:
        raise ValueError(f"{logits_name} must have shape (N, C); got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"{logits_name} must be a floating-point tensor; got dtype {logits.dtype}")
    n, c = logits.shape
    traced = compiling()
    target_dtype = target.dtype
    soft = target_dtype.is_floating_point
    if soft:
        if not allow_soft:
            raise TypeError(f"{target_name} must hold int64 class indices of shape ({n},); got {describe(target)}")
        if target.shape != logits.shape:
            raise ValueError(
                f"soft {target_name} must have the shape of {logits_name} {tuple(logits.shape)}; "
                f"got shape {tuple(target.shape)}"
            )
    else:
        if target_dtype not in _LABEL_DTYPES:
            raise TypeError(f"{target_name} must hold integer class indices; got dtype {target.dtype}")
        if target.ndim != 1 or target.shape[0] != n:
            raise ValueError(f"{target_name} must have shape ({n},) to match {logits_name} {tuple(logits.shape)}; got shape {tuple(target.shape)}")
        if traced:
            if _VALUE_CHECKS:
                check_label_range(target, c, target_name)
        elif _VALUE_CHECKS and n > 0 and label_range:  # check_label_range, inline
            lo_t, hi_t = torch.aminmax(target)
            lo, hi = int(lo_t), int(hi_t)
            if lo < 0 or hi >= c:
                check_label_range(target, c, target_name)
    if traced:
        check_finite(logits_name, logits)
    elif _VALUE_CHECKS and finite:
        # check_finite(logits_name, logits), its common case inline
        x = logits.detach()
        if x.dtype in _FULL_PRECISION and math.isfinite(float(x.sum())):
            return soft
        check_finite(logits_name, logits)
    return soft


def checked_by_computation(
    fn: Callable[[Tensor, Tensor], Tensor],
    z: Tensor,
    target: Tensor,
    logits: Tensor,
    logits_name: str = "logits",
    target_name: str = "target",
    *,
    finite: bool = True,
) -> Tensor:
    """``fn(z, target)`` for a CPU loss that checks its inputs' values by computing.

    The value checks of :func:`check_logits_target` (called with ``label_range=False`` and, when
    ``finite``, ``finite=False``) done by the computation instead of extra passes: ``fn`` must index by
    the labels with bounds checks before anything else (CPU indexing raises outside ``[0, C)``; the
    handler gives the range message). With ``finite`` the loss must be finite whenever the logits are,
    so only a non-finite loss leads to a scan of ``logits`` (which raises the usual message when they
    hold NaN or Inf; a non-finite loss of finite logits is returned, as it would be with the checks in
    front); ``finite=False`` leaves the logits to the checks in front. Under ``torch.compile`` the
    checks in front are complete (see :func:`check_logits_target`) and ``fn`` runs alone.
    """
    if compiling():
        return fn(z, target)
    try:
        loss = fn(z, target)
    except (IndexError, RuntimeError):
        if _VALUE_CHECKS:
            check_label_range(target, z.shape[1], target_name)
        raise
    if finite and _VALUE_CHECKS and not math.isfinite(float(loss.detach().sum() if loss.ndim else loss.detach())):
        check_finite(logits_name, logits)
    return loss
