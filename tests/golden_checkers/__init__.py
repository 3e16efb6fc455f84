"""Golden checkers, one module per method family.

Each module in this package defines ``CHECKERS: dict[str, Callable[[dict[str, np.ndarray]], None]]``
mapping a golden-file prefix (``ldam`` for ``ldam_3.npz``) to a function that recomputes the stored
outputs from the stored inputs through tailwise's public API and asserts agreement. A checker must
never read an output key back as its own answer.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

import numpy as np

Checker = Callable[[dict[str, np.ndarray]], None]


def all_checkers() -> dict[str, Checker]:
    """Collect ``CHECKERS`` from every module of this package."""
    found: dict[str, Checker] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for prefix, fn in getattr(module, "CHECKERS", {}).items():
            if prefix in found:
                raise RuntimeError(f"golden prefix {prefix!r} has two checkers")
            found[prefix] = fn
    return found
