"""Request handlers: one module per Kafka API, registered in :mod:`.registry`.

Importing this package imports every module in it, so the registry (and
ApiVersions, derived from it) is complete; a new handler module needs no
other edit.
"""

import importlib
import pkgutil

from .registry import RequestContext, handles, lookup, served_versions

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["RequestContext", "handles", "lookup", "served_versions"]
