"""The partition log: record batches on the WAL, offsets, index, high watermark, retention.

Split along Kafka's lines: :mod:`.segment` (batch index over the WAL
segments), :mod:`.local` (the local log and its recovery), :mod:`.replica`
(high watermark, ISR rules, leader-epoch cache), :mod:`.producer_state`
(idempotent producers), composed by :class:`~.partition.PartitionLog`; the
set of logs is :class:`~.manager.LogManager`, high watermarks persist in
:mod:`.checkpoint`.

The names below load at their first use (PEP 562 ``__getattr__``), so the
log cleaner's child process (``python -m chronik.log.cleaner_process``,
which needs :mod:`.cleaner` only) does not import the manager and the
metadata layer under it as it starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .manager import LogManager
    from .partition import AppendInfo, OffsetOutOfRange, PartitionLog
    from .producer_state import ProducerStateTable, SequenceError

_LAZY = {
    # module: the names it exports here, imported at the first use of one of them
    ".manager": ("LogManager",),
    ".partition": ("AppendInfo", "OffsetOutOfRange", "PartitionLog"),
    ".producer_state": ("ProducerStateTable", "SequenceError"),
}
_LAZY_NAMES = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    """PEP 562: the names above, imported at first use (then cached in the module)."""
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = ["AppendInfo", "LogManager", "OffsetOutOfRange", "PartitionLog", "ProducerStateTable", "SequenceError"]
