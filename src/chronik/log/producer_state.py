"""Idempotent-producer state of one partition: sequence checks and retry dedupe.

Sans-I/O.  Kafka's rules (``ProducerStateManager``), per producer id:

* a batch with ``producer_id < 0`` or ``base_sequence < 0`` is not idempotent
  and is never checked;
* an older epoch than the newest seen is fenced (INVALID_PRODUCER_EPOCH);
* a newer epoch starts over: its first batch must have sequence 0;
* within an epoch, a batch whose sequence range equals one of the last
  :data:`RETAINED_BATCHES` batches is a retry: it is not appended again and the
  client is told the original base offset;
* otherwise its first sequence must follow the last one (modulo 2**31), else
  OUT_OF_ORDER_SEQUENCE_NUMBER.
* a producer id the partition has no state for (new, or its batches were
  removed by retention) is accepted at any sequence, as Kafka does since
  KIP-360.

The table is rebuilt after a restart by :meth:`ProducerStateTable.observe`
on every stored batch header, in offset order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..protocol import BatchHeader, ErrorCode

RETAINED_BATCHES = 5
_SEQUENCE_MODULUS = 1 << 31


@dataclass(slots=True)
class _ProducerEntry:
    epoch: int
    last_sequence: int
    recent: deque[tuple[int, int, int]] = field(default_factory=lambda: deque(maxlen=RETAINED_BATCHES))
    """(first sequence, last sequence, base offset) of the newest batches."""


class SequenceError(Exception):
    """A batch the producer-state rules refuse; ``error`` is what the client is told."""

    def __init__(self, error: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error = error


def _last_sequence(header: BatchHeader) -> int:
    return (header.base_sequence + header.last_offset_delta) % _SEQUENCE_MODULUS


def is_idempotent(header: BatchHeader) -> bool:
    return header.producer_id >= 0 and header.base_sequence >= 0


class ProducerStateTable:
    """Per-producer-id epoch and sequence state of one partition."""

    def __init__(self) -> None:
        self._producers: dict[int, _ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self._producers)

    def check(self, header: BatchHeader) -> int | None:
        """Validate an idempotent batch before it is appended.

        Returns the original base offset if the batch is a retry of one already
        appended (do not append it again), else None.

        :raises SequenceError: fenced epoch or out-of-order sequence.
        """
        entry = self._producers.get(header.producer_id)
        if entry is None:
            return None
        if header.producer_epoch < entry.epoch:
            raise SequenceError(
                ErrorCode.INVALID_PRODUCER_EPOCH,
                f"producer {header.producer_id} epoch {header.producer_epoch} is older than {entry.epoch}",
            )
        if header.producer_epoch > entry.epoch:
            if header.base_sequence != 0:
                raise SequenceError(
                    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                    f"producer {header.producer_id} new epoch {header.producer_epoch} must start at sequence 0, "
                    f"got {header.base_sequence}",
                )
            return None
        last = _last_sequence(header)
        for first_seq, last_seq, base_offset in entry.recent:
            if first_seq == header.base_sequence and last_seq == last:
                return base_offset
        expected = (entry.last_sequence + 1) % _SEQUENCE_MODULUS
        if header.base_sequence != expected:
            raise SequenceError(
                ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                f"producer {header.producer_id} sent sequence {header.base_sequence}, expected {expected}",
            )
        return None

    def observe(self, header: BatchHeader) -> None:
        """Record an appended (or recovered) batch; ``header.base_offset`` is its offset."""
        if not is_idempotent(header):
            return
        entry = self._producers.get(header.producer_id)
        if entry is None or header.producer_epoch != entry.epoch:
            entry = self._producers[header.producer_id] = _ProducerEntry(header.producer_epoch, -1)
        entry.last_sequence = _last_sequence(header)
        entry.recent.append((header.base_sequence, entry.last_sequence, header.base_offset))
