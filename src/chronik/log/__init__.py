"""The partition log: record batches on the WAL, offsets, index, high watermark, retention.

Split along Kafka's lines: :mod:`.segment` (batch index over the WAL
segments), :mod:`.local` (the local log and its recovery), :mod:`.replica`
(high watermark, ISR rules, leader-epoch cache), :mod:`.producer_state`
(idempotent producers), composed by :class:`~.partition.PartitionLog`; the
set of logs is :class:`~.manager.LogManager`, high watermarks persist in
:mod:`.checkpoint`.
"""

from .manager import LogManager
from .partition import AppendInfo, OffsetOutOfRange, PartitionLog
from .producer_state import ProducerStateTable, SequenceError

__all__ = ["AppendInfo", "LogManager", "OffsetOutOfRange", "PartitionLog", "ProducerStateTable", "SequenceError"]
