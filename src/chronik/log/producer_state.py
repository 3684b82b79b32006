"""Producer state of one partition: sequence checks, retry dedupe, transactions.

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

Transactions (Kafka's ``ProducerStateManager`` and ``.txnindex``):

* a transactional data batch of a producer with no ongoing transaction here
  opens one whose *first offset* is the batch's base offset;
* a control batch (a commit or abort marker the transaction coordinator
  wrote) ends the producer's ongoing transaction; its epoch becomes the
  producer's epoch (a marker written after fencing carries the bumped epoch,
  so the zombie's later batches are refused as an older epoch), and the next
  batch of that newer epoch must start at sequence 0;
* each producer's *coordinator epoch* is that of the newest marker written
  for it here (-1: none yet; Kafka's ``ProducerStateEntry.coordinatorEpoch``).
  A marker is appended (:meth:`ProducerStateTable.check_marker`) only if its
  coordinator epoch is at least that one, else TRANSACTION_COORDINATOR_FENCED:
  a deposed coordinator (an older epoch) cannot end a transaction the current
  one has already ended or will end.  Equal is accepted (the same coordinator
  writing again after a retry or for the next transaction).  A marker the
  table only observes (a follower copying the leader's, a rebuild) is not
  checked: it sets the epoch, as in Kafka, where only the appending leader
  refuses (the leader's checks keep a producer's coordinator epochs
  non-decreasing along a log, unless it expired in between).  A new producer
  epoch keeps the coordinator epoch, as in Kafka; an expired producer loses
  it, and so does a rebuild after retention deleted the segments holding its
  markers (Kafka would keep it in a producer-state snapshot);
* an abort marker that ends a transaction holding data here appends
  ``(producer id, first offset, marker offset)`` to :attr:`aborted`, in
  marker-offset order -- the aborted-transaction index Fetch answers from;
* a transaction that ended at a marker at or above the high watermark still
  pins the last stable offset (:meth:`last_stable_offset`) at its first
  offset until the marker is below it (Kafka's unreplicated transactions),
  so a read_committed reader never sees data whose marker it cannot see.

The table, the ongoing transactions, the coordinator epochs and the aborted
index are all rebuilt after a restart or a truncation by
:meth:`ProducerStateTable.observe` on every stored batch, in offset order
(nothing of it is stored separately -- there are no producer-state snapshots
-- so nothing stale is ever trusted; the coordinator epoch is read back from
each marker's value).

Expiry (Kafka's ``producer.id.expiration.ms``): :meth:`ProducerStateTable.expire`
forgets a producer with no ongoing transaction here once its newest batch's
max timestamp is that old.  A forgotten producer that returns is accepted at
any sequence, like a new one, and the cleaner no longer keeps its newest
batch.  A rebuild brings back the producers whose batches are still stored;
the next expiry pass forgets them again.  Retention and DeleteRecords drop the index entries
whose marker fell below the log start (:meth:`forget_aborted_below`).

Hook for compaction (the cleaner): it may drop an aborted transaction's data
batches (they are never served to read_committed readers) and, once none of
that data is left, its abort marker (Kafka waits ``delete.retention.ms``); it
must never drop a marker while data of its transaction remains before it, nor
touch anything at or above the last stable offset.  It keeps the batches
:meth:`ProducerStateTable.batches_to_keep` names (emptied if need be), so the
producers' epochs, sequences and coordinator epochs are unchanged by a swap
(Kafka keeps the coordinator epoch in its producer-state snapshots; with no
snapshots, each producer's newest marker is kept instead), and it removes an
abort marker only once no data of its transaction is left, so after a swap
only the index entries of the removed markers are dropped
(:meth:`forget_aborted_markers`); a rebuild from the stored batches gives the
same table.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from ..protocol import BatchHeader, ErrorCode

RETAINED_BATCHES = 5
_SEQUENCE_MODULUS = 1 << 31


@dataclass(slots=True)
class _ProducerEntry:
    epoch: int
    last_sequence: int
    recent: deque[tuple[int, int, int]] = field(default_factory=lambda: deque(maxlen=RETAINED_BATCHES))
    """(first sequence, last sequence, base offset) of the newest batches."""
    last_batch: int = -1
    """Base offset of the producer's newest batch, data or marker (the cleaner keeps it)."""
    last_timestamp: int = -1
    """The max timestamp of the producer's newest batch (data or marker), as Kafka's producer state keeps it."""
    coordinator_epoch: int = -1
    """The coordinator epoch of the producer's newest marker (-1: none)."""
    last_marker: int = -1
    """Base offset of the producer's newest marker (the cleaner keeps it: it carries the coordinator epoch)."""

    def renewed(self, epoch: int) -> "_ProducerEntry":
        """The entry of a new producer epoch: no sequences yet, the same coordinator epoch and newest marker."""
        return _ProducerEntry(epoch, -1, coordinator_epoch=self.coordinator_epoch, last_marker=self.last_marker)


class EndTxnMarker(NamedTuple):
    """What a control batch's record says (Kafka's ``EndTransactionMarker``)."""

    control_type: int  # 0 abort, 1 commit (ControlRecordType), or a newer type
    coordinator_epoch: int | None  # None for a type that is not a commit or abort


class ProducerDescription(NamedTuple):
    """One producer's state here, as DescribeProducers reports it."""

    producer_id: int
    epoch: int
    last_sequence: int
    last_timestamp: int
    coordinator_epoch: int  # -1: no marker seen for it
    txn_start_offset: int  # first offset of its ongoing transaction, -1: none


class AbortedTxn(NamedTuple):
    """One aborted transaction's span in this partition (Fetch's ``aborted_transactions`` entry)."""

    last_offset: int  # the abort marker's offset (the index is sorted on it)
    producer_id: int
    first_offset: int


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
        self.ongoing: dict[int, int] = {}
        """producer id -> first offset of its ongoing transaction in this partition."""
        self.aborted: list[AbortedTxn] = []
        """The aborted-transaction index, sorted on the marker offset."""
        self._completing: deque[tuple[int, int]] = deque()
        """(marker offset, first offset) of transactions ended by a marker not yet known below the high watermark."""

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

    def expire(self, now_ms: int, expiration_ms: int) -> int:
        """Forget every producer without an ongoing transaction here whose newest batch's
        max timestamp is ``expiration_ms`` or more before ``now_ms``; returns how many."""
        expired = [producer_id for producer_id, entry in self._producers.items()
                   if producer_id not in self.ongoing and now_ms - entry.last_timestamp >= expiration_ms]
        for producer_id in expired:
            del self._producers[producer_id]
        return len(expired)

    def producer_epoch(self, producer_id: int) -> int | None:
        entry = self._producers.get(producer_id)
        return None if entry is None else entry.epoch

    def check_marker(self, producer_id: int, coordinator_epoch: int) -> None:
        """Validate a marker the transaction coordinator is about to append for ``producer_id``.

        :raises SequenceError: TRANSACTION_COORDINATOR_FENCED, an older coordinator
            epoch than that of the producer's newest marker here.
        """
        entry = self._producers.get(producer_id)
        if entry is not None and coordinator_epoch < entry.coordinator_epoch:
            raise SequenceError(
                ErrorCode.TRANSACTION_COORDINATOR_FENCED,
                f"marker for producer {producer_id} from coordinator epoch {coordinator_epoch}, "
                f"older than {entry.coordinator_epoch}",
            )

    def observe(self, header: BatchHeader, marker: EndTxnMarker | None = None) -> None:
        """Record an appended (or recovered, or replicated) batch; ``header.base_offset`` is its offset.

        ``marker`` is what the record of a control batch says.  Nothing is checked here.
        """
        if header.is_control:
            self._observe_marker(header, marker)
            return
        if header.is_transactional and header.producer_id >= 0:
            self.ongoing.setdefault(header.producer_id, header.base_offset)
        if not is_idempotent(header):
            return
        entry = self._producers.get(header.producer_id)
        if entry is None:
            entry = self._producers[header.producer_id] = _ProducerEntry(header.producer_epoch, -1)
        elif header.producer_epoch != entry.epoch:
            entry = self._producers[header.producer_id] = entry.renewed(header.producer_epoch)
        entry.last_sequence = _last_sequence(header)
        entry.last_timestamp = header.max_timestamp
        entry.recent.append((header.base_sequence, entry.last_sequence, header.base_offset))
        entry.last_batch = header.base_offset

    def _observe_marker(self, header: BatchHeader, marker: EndTxnMarker | None) -> None:
        pid = header.producer_id
        entry = self._producers.get(pid)
        if entry is None:
            entry = self._producers[pid] = _ProducerEntry(header.producer_epoch, -1)
        elif header.producer_epoch > entry.epoch:
            entry = self._producers[pid] = entry.renewed(header.producer_epoch)
        entry.last_batch = header.base_offset
        entry.last_timestamp = header.max_timestamp
        if marker is not None and marker.coordinator_epoch is not None:
            entry.coordinator_epoch = marker.coordinator_epoch
            entry.last_marker = header.base_offset
        first = self.ongoing.pop(pid, None)
        if first is None:
            return
        self._completing.append((header.base_offset, first))
        if marker is not None and marker.control_type == 0:  # ControlRecordType.ABORT
            self.aborted.append(AbortedTxn(header.base_offset, pid, first))

    def last_stable_offset(self, high_watermark: int) -> int:
        """The offset below which every transaction is decided and its marker below ``high_watermark``."""
        completing = self._completing
        while completing and completing[0][0] < high_watermark:
            completing.popleft()
        lso = high_watermark
        if completing:
            lso = min(lso, min(first for _, first in completing))
        if self.ongoing:
            lso = min(lso, min(self.ongoing.values()))
        return lso

    def describe(self) -> list[ProducerDescription]:
        """Every producer's state here, by producer id."""
        return [ProducerDescription(pid, entry.epoch, entry.last_sequence, entry.last_timestamp,
                                    entry.coordinator_epoch, self.ongoing.get(pid, -1))
                for pid, entry in sorted(self._producers.items())]

    def first_unstable_producer(self) -> tuple[int, int] | None:
        """(producer id, first offset) of the oldest ongoing transaction here, or None."""
        if not self.ongoing:
            return None
        pid = min(self.ongoing, key=self.ongoing.__getitem__)
        return pid, self.ongoing[pid]

    def aborted_between(self, start: int, end: int) -> list[AbortedTxn]:
        """Aborted transactions overlapping ``[start, end)``: marker at or after ``start``, first offset below ``end``."""
        index = self.aborted
        i = bisect.bisect_left(index, (start,))
        return [txn for txn in index[i:] if txn.first_offset < end]

    def batches_to_keep(self) -> set[int]:
        """Base offsets of the batches compaction must keep (possibly emptied) so this table
        survives a rebuild: each producer's newest data batch (its sequence state),
        newest batch (a later marker carries its epoch; Kafka's ``isBatchLastRecordOfProducer``)
        and newest marker (its coordinator epoch)."""
        keep = set()
        for entry in self._producers.values():
            if entry.recent:
                keep.add(entry.recent[-1][2])
            if entry.last_batch >= 0:
                keep.add(entry.last_batch)
            if entry.last_marker >= 0:
                keep.add(entry.last_marker)
        return keep

    def forget_aborted_markers(self, markers: set[int]) -> None:
        """Drop the index entries of abort markers compaction removed (offsets ``markers``)."""
        if markers:
            self.aborted = [txn for txn in self.aborted if txn.last_offset not in markers]

    def forget_aborted_below(self, offset: int) -> None:
        """Drop index entries whose marker is below ``offset`` (data gone by retention or compaction)."""
        self.aborted = self.aborted[bisect.bisect_left(self.aborted, (offset,)):]
