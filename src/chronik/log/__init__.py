"""The partition log: record batches on the WAL, offsets, index, high watermark, retention."""

from .manager import LogManager
from .partition import AppendInfo, OffsetOutOfRange, PartitionLog
from .producer_state import ProducerStateTable, SequenceError

__all__ = ["AppendInfo", "LogManager", "OffsetOutOfRange", "PartitionLog", "ProducerStateTable", "SequenceError"]
