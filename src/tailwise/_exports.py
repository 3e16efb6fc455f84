"""Re-export the public names of every module in a subpackage (one concept per file)."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any


def export_submodules(package_name: str, package_path: list[str], namespace: dict[str, Any]) -> list[str]:
    """Import each non-private submodule of a package and copy the names in its ``__all__``.

    Returns the combined ``__all__`` for the package.
    """
    names: list[str] = []
    for info in sorted(pkgutil.iter_modules(package_path), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package_name}.{info.name}")
        for name in getattr(module, "__all__", []):
            if name in namespace and namespace[name] is not getattr(module, name):
                raise ImportError(f"{package_name}: name {name!r} is exported by two modules")
            namespace[name] = getattr(module, name)
            names.append(name)
    return names
