"""tailwise.functional: see the modules of this package; every public name is re-exported here."""

from tailwise._exports import export_submodules

__all__ = export_submodules(__name__, __path__, globals())
