"""Base class of tailwise's stateful metrics (torchmetrics-style update / compute / reset / sync)."""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

Reduce = Literal["sum", "cat", "max", "min"]


class Metric(nn.Module):
    """Accumulating metric whose states are synchronised across processes.

    Subclasses declare their states with :meth:`add_state` in ``__init__`` and implement
    :meth:`update` and :meth:`compute`. ``compute`` reads the states after :meth:`sync` has combined
    them over all ranks of the default process group (``sum`` / ``max`` / ``min`` with all-reduce,
    ``cat`` with all-gather), so every rank returns the same value. States are saved by
    ``state_dict`` (they are persistent buffers) so an evaluation can be checkpointed.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "update" in cls.__dict__:
            update = cls.__dict__["update"]

            @functools.wraps(update)
            def wrapped(self: Metric, *args: Any, **kw: Any) -> None:
                self._restore_local()
                update(self, *args, **kw)

            cls.update = wrapped  # type: ignore[method-assign]

    def __init__(self) -> None:
        super().__init__()
        self._reductions: dict[str, Reduce] = {}
        self._defaults: dict[str, Tensor] = {}
        self._cat_lists: dict[str, list[Tensor]] = {}
        self._synced = False
        self._local: dict[str, Any] | None = None

    def _restore_local(self) -> None:
        """Put back this rank's own states after a :meth:`sync` (so later updates are not double-counted)."""
        if self._local is not None:
            for name, value in self._local.items():
                if self._reductions[name] == "cat":
                    self._cat_lists[name] = value
                else:
                    setattr(self, name, value)
            self._local = None
        self._synced = False

    def add_state(self, name: str, default: Tensor | None, reduce: Reduce = "sum") -> None:
        """Declare a state. ``cat`` states accumulate a list of tensors concatenated on ``compute``."""
        self._reductions[name] = reduce
        if reduce == "cat":
            self._cat_lists[name] = []
            return
        assert default is not None
        self._defaults[name] = default.clone()
        self.register_buffer(name, default.clone(), persistent=True)

    def append(self, name: str, value: Tensor) -> None:
        """Append a tensor to a ``cat`` state."""
        self._cat_lists[name].append(value.detach())

    def cat_state(self, name: str) -> Tensor:
        """The concatenated value of a ``cat`` state (an empty tensor when nothing was appended)."""
        items = self._cat_lists[name]
        return torch.cat(items) if items else torch.empty(0)

    def reset(self) -> None:
        """Return every state to its default."""
        for name, default in self._defaults.items():
            setattr(self, name, default.clone().to(getattr(self, name).device))
        for name in self._cat_lists:
            self._cat_lists[name] = []
        self._synced = False
        self._local = None

    def update(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Calling the metric updates it (use :meth:`compute` for the value)."""
        self.update(*args, **kwargs)

    def sync(self) -> None:
        """Combine the states across ranks in place (no-op without an initialised process group).

        Call it after the last :meth:`update` and before :meth:`compute`; repeated calls without a new
        update do nothing, and the next :meth:`update` first restores this rank's own states, so a state
        is never counted twice.
        """
        if self._synced:
            return
        self._synced = True
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        self._local = {
            name: (list(self._cat_lists[name]) if reduce == "cat" else getattr(self, name).clone())
            for name, reduce in self._reductions.items()
        }
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        for name, reduce in self._reductions.items():
            if reduce == "cat":
                local = self.cat_state(name)
                gathered: list[Any] = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, local.cpu())
                self._cat_lists[name] = [g.to(local.device) for g in gathered if g.numel()]
            else:
                value = getattr(self, name)
                dist.all_reduce(value, op=ops[reduce])
