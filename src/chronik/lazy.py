"""Lazy exports for a package's ``__init__`` (PEP 562 module ``__getattr__``).

A package that re-exports names from heavy submodules can load them at first
use instead of at import, so a process that needs one light submodule (the
log cleaner's child process) does not pay for the rest.  The package keeps
plain imports of the same names under ``if TYPE_CHECKING:``, for type
checkers and import-linter; tests/test_lazy_exports.py checks that the two
lists agree.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, namespace: dict[str, Any],
                 table: Mapping[str, tuple[str, ...]]) -> tuple[dict[str, str], Callable[[str], Any]]:
    """``(name -> relative module, __getattr__)`` for ``package``, whose module dictionary is
    ``namespace``, from ``table`` (relative module, e.g. ``".manager"`` -> the names it exports).

    The ``__getattr__`` imports a name's module at the name's first use and caches the value
    in ``namespace`` (later uses never call it again); any other name raises AttributeError.
    """
    names = {name: module for module, exported in table.items() for name in exported}

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return names, __getattr__
