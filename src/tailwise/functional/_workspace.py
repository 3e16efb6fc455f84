"""A reusable scratch buffer for the intermediate ``(N, C)`` tensors of the fused CPU kernels.

A fused loss on a large batch needs an ``(N, C)`` intermediate that never leaves the call (CALS'
distances to the row maximum, LogitClip's products of the gradient and the logits). Allocated fresh
on every call, a buffer of a few megabytes comes from the operating system each time the C allocator
has returned the previous one (glibc trims the top of its heap when more than about twice its mmap
threshold is free): the first touch of every page then faults, which costs as much as the arithmetic
on it. A :class:`Workspace` keeps one such buffer between calls, per prepared loss.

Only the CPU uses it (device allocators cache their blocks already). A buffer taken by one call is
not visible to another until it is given back, so concurrent calls (threads) each get their own; one
given back while another is kept replaces it only when larger. The memory held is that of the largest
intermediate asked for, released with the workspace (its prepared loss).
"""

from __future__ import annotations

import torch
from torch import Tensor


class Workspace:
    """One scratch buffer, taken and given back around each use."""

    def __init__(self) -> None:
        self._free: list[Tensor] = []

    def take(self, shape: tuple[int, int], like: Tensor) -> tuple[Tensor, Tensor]:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device, and its storage.

        Returns ``(tensor, storage)``: pass ``storage`` to :meth:`give_back` once ``tensor`` is no
        longer used (nothing that outlives the call may keep a view of it).
        """
        numel = shape[0] * shape[1]
        try:
            buf = self._free.pop()  # atomic: a concurrent caller finds the list empty
        except IndexError:
            buf = None
        if (
            buf is None
            or buf.numel() < numel
            or buf.dtype != like.dtype
            or buf.device != like.device
            or (buf.is_inference() and not torch.is_inference_mode_enabled())  # read-only outside inference mode
        ):
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buf[:numel].view(shape), buf

    def give_back(self, storage: Tensor) -> None:
        """Keep ``storage`` for the next call (the larger one, if another was given back meanwhile)."""
        if self._free and self._free[0].numel() >= storage.numel():
            return
        self._free[:] = [storage]

    def __getstate__(self) -> dict[str, object]:
        return {"_free": []}  # a copy or a pickle starts empty


def take_scratch(workspace: Workspace | None, shape: tuple[int, int], like: Tensor) -> tuple[Tensor, Tensor | None]:
    """:meth:`Workspace.take` from ``workspace``, or a fresh tensor (and ``None`` to give back) without one."""
    if workspace is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device), None
    return workspace.take(shape, like)


def give_back_scratch(workspace: Workspace | None, storage: Tensor | None) -> None:
    """Give back what :func:`take_scratch` took from ``workspace`` (nothing for a fresh tensor)."""
    if workspace is not None and storage is not None:
        workspace.give_back(storage)
