"""Public names of a package, imported from its modules on first use (PEP 562).

A package's ``__init__`` lists its API without importing its modules, so that importing one
torch-free module of a package (a map file reader, the georeference) does not load torch for
the tools and environments that run without it.
"""
from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, exports: dict[str, str]):
    """(``__getattr__``, ``__all__``) for ``package`` whose name ``N`` lives in module ``exports[N]``
    (relative to the package)."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(exports)
