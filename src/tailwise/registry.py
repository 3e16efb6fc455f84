"""Name registries through which the trainer and the command line find components.

A registry maps a name (``"ldam"``) to a factory (a class or function taking keyword arguments). The
component layers register themselves at import; nothing here knows about the trainer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

__all__ = [
    "BATCH_TRANSFORMS",
    "LOSSES",
    "MODELS",
    "SAMPLERS",
    "WEIGHT_SCHEDULES",
    "Registry",
]

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A named collection of factories with helpful errors for unknown names and arguments."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator registering ``factory`` under ``name`` (and optional aliases)."""

        def decorator(factory: T) -> T:
            for key in (name, *aliases):
                if key in self._items and self._items[key] is not factory:
                    raise ValueError(f"{self.kind} name {key!r} is already registered")
                self._items[key] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """Return the factory registered under ``name``."""
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; expected one of {sorted(self._items)}")
        return self._items[name]

    def build(self, name: str, params: Mapping[str, Any] | None = None, /, **context: Any) -> Any:
        """Instantiate ``name`` with user ``params`` plus the ``context`` arguments its signature accepts.

        Context arguments (``class_counts``, ``num_classes``, ``generator``, ...) are passed only where
        the factory takes a parameter of that name. Unknown user parameters are an error listing the
        accepted ones.
        """
        factory = self.get(name)
        params = dict(params or {})
        accepted = self.parameters(name)
        takes_kwargs = any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()
        )
        unknown = [k for k in params if k not in accepted and not takes_kwargs]
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for {self.kind} {name!r}; valid parameters: {sorted(accepted)}")
        kwargs = {k: v for k, v in context.items() if k in accepted and k not in params}
        kwargs.update(params)
        return factory(**kwargs)

    def parameters(self, name: str) -> list[str]:
        """Names of the keyword parameters ``name`` accepts."""
        sig = inspect.signature(self.get(name))
        return [
            p.name
            for p in sig.parameters.values()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and p.name != "self"
        ]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


LOSSES: Registry[Callable[..., Any]] = Registry("loss")
MODELS: Registry[Callable[..., Any]] = Registry("model")
SAMPLERS: Registry[Callable[..., Any]] = Registry("sampler")
WEIGHT_SCHEDULES: Registry[Callable[..., Any]] = Registry("weight schedule")
BATCH_TRANSFORMS: Registry[Callable[..., Any]] = Registry("batch transform")
