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

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .manager import LogManager
    from .partition import AppendInfo, OffsetOutOfRange, PartitionLog
    from .producer_state import ProducerStateTable, SequenceError

_LAZY_NAMES, __getattr__ = lazy_exports(__name__, globals(), {
    # module: the names it exports here, imported at the first use of one of them
    ".manager": ("LogManager",),
    ".partition": ("AppendInfo", "OffsetOutOfRange", "PartitionLog"),
    ".producer_state": ("ProducerStateTable", "SequenceError"),
})


__all__ = ["AppendInfo", "LogManager", "OffsetOutOfRange", "PartitionLog", "ProducerStateTable", "SequenceError"]
