"""Prepared losses, reused across calls with the same arguments (functional API and loss modules).

A functional loss such as :func:`tailwise.functional.vs_loss` derives per-class constants from its
arguments (class counts to priors and margins, checks, casts to the logits' dtype) on every call; on a
small batch that costs as much as the loss itself. When the arguments are tensors, numbers, strings
or ``None``, the checked constants are kept as a prepared ``fn(z, target)`` under a key made of:

* each tensor argument's identity and version counter (an in-place change, or another tensor, misses);
* each number's type and value, and each string;
* the logits' dtype, device and number of classes;
* whether inference mode is on (constants made in inference mode are inference tensors, which autograd
  refuses to save, so they serve only calls in inference mode).

A list or an array argument, or an inference-mode tensor (which has no version counter), cannot be
keyed (it may change without a trace), so such calls prepare the loss every time, as do calls with
bad arguments, which raise before anything is stored. The cache
keeps its tensor arguments referenced, so their identities stay theirs; it holds a few entries and
drops the oldest. A value prepared while value checks were off is prepared again once they are on.
Writes through ``.data`` bypass the version counter, as they bypass autograd, and are not seen:
change tensors in place under ``torch.no_grad()``. Loss modules keep a one-entry cache keyed on their
buffers and settings, so their checks run again after any change of state (in-place writes,
``load_state_dict``, ``.to()``, ``set_weight``, reassigned attributes). A cache pickles empty.
Under ``torch.compile`` nothing is keyed: the traced call prepares its plain expression, which the
compiled graph then holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from tailwise._validation import validation_enabled

LossFn = Callable[[Tensor, Tensor], Tensor]

_KEYED_SCALARS = (bool, int, float, str)


class PreparedLosses:
    """A small cache of prepared loss functions (see the module docstring).

    Args:
        maxsize: entries kept; the oldest is dropped first.
    """

    def __init__(self, maxsize: int = 16) -> None:
        self.maxsize = maxsize
        self._entries: dict[tuple[Any, ...], tuple[bool, LossFn, tuple[Any, ...]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(name: str, logits: Any, *args: Any) -> tuple[Any, ...] | None:
        """The key of a call, or ``None`` when an argument cannot be keyed."""
        if not isinstance(logits, Tensor) or logits.ndim != 2 or torch.compiler.is_compiling():
            return None
        parts: list[Any] = [name, logits.dtype, logits.device, logits.shape[1], torch.is_inference_mode_enabled()]
        for arg in args:
            if isinstance(arg, Tensor):
                if arg.is_inference():  # no version counter: a change could not be seen
                    return None
                parts.append((id(arg), arg._version))
            elif arg is None:
                parts.append(None)
            elif isinstance(arg, _KEYED_SCALARS):
                parts.append((type(arg), arg))
            else:
                return None
        return tuple(parts)

    def get(self, key: tuple[Any, ...] | None) -> LossFn | None:
        """The prepared function stored under ``key`` (``None`` when absent or stale)."""
        if key is None:
            return None
        hit = self._entries.get(key)
        if hit is None or not (hit[0] or not validation_enabled()):
            return None
        return hit[1]

    def put(self, key: tuple[Any, ...] | None, fn: LossFn, args: tuple[Any, ...]) -> None:
        """Store ``fn`` under ``key`` (no-op for ``None``), keeping the call's tensor ``args`` referenced."""
        if key is None:
            return
        sources = tuple(a for a in args if isinstance(a, Tensor))
        with self._lock:
            if key not in self._entries and len(self._entries) >= self.maxsize:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = (validation_enabled(), fn, sources)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled empty: the entries hold local functions and the lock cannot be pickled."""
        return {"maxsize": self.maxsize}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["maxsize"])  # type: ignore[misc]

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()
