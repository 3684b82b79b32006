"""The partition log: record batches on a write-ahead log, with offsets and an index.

A :class:`PartitionLog` is one Kafka partition replica on this node.  It knows
record batches and offsets, never sockets.

On-disk layout (directory ``<data_dir>/<topic>-<partition>``)::

    <base_offset:020d>.wal   WAL segments (see :mod:`chronik.storage.wal`);
                             one entry per record batch, entry index = the
                             batch's base offset, payload = the batch exactly
                             as served (offsets stamped, otherwise as sent)
    recovery-point           the WAL's
    partition.json           {"format": 1, "topic", "partition", "topic_id",
                              "log_start_offset"}, replaced atomically

Invariants
----------
* Offsets are dense and increasing: each appended batch gets base offset =
  :attr:`log_end_offset`, written into its bytes 0-7 (outside the CRC) before
  the append; nothing else in the batch is changed, except the LogAppendTime
  stamp (timestamp type bit, maxTimestamp, CRC) on LogAppendTime topics.
* ``durable_end`` is the end of the durable prefix: it advances when the WAL
  reports batches durable (before any appender wakes).
* ``high_watermark`` never goes back; readers never see a batch at or above
  it.  On a single node (and for a partition with one replica) it is
  ``durable_end``.  The leader of a replicated partition (:meth:`lead`) holds
  it at the minimum of its own durable end and the log ends its in-sync
  followers reported (:meth:`record_follower_end`); a follower
  (:meth:`follow`) at the minimum of its durable end and the leader's high
  watermark.  After a restart it starts at the checkpointed high watermark
  (capped by the log end; cluster mode, :mod:`chronik.log.checkpoint`) or,
  on a single node, at the log end; :meth:`truncate_to` is the one thing
  that lowers it (never below what the ISR acknowledged: only a suffix the
  leader lacks is cut).
* A follower appends the leader's batches unchanged, at the leader's offsets
  (:meth:`append_replicated`), so every replica holds the same bytes at the
  same offsets.
* Leader epochs: a leader of a replicated partition stamps its leader epoch
  into every batch it appends (``partitionLeaderEpoch``, outside the CRC).
  The *epoch cache* lists ``(epoch, start offset)`` for each epoch that
  starts in the log, rebuilt from the batch headers on open; it answers
  OffsetForLeaderEpoch questions (:meth:`epoch_end`), which is how a
  follower finds the suffix it must cut (:meth:`truncate_to`) before it
  follows a new leader.  Batches stamped -1 (unreplicated, or written before
  epochs) are not in the cache.
* ``log_start_offset`` only grows (retention, DeleteRecords, a follower
  following its leader's, or restarting its log there with
  :meth:`restart_at`); it is persisted in ``partition.json`` before the
  segments below it are deleted.
* Compaction (:mod:`chronik.log.cleaner`) replaces sealed segments below the
  high watermark through the WAL's swap (:meth:`install_cleaned`): offsets
  are kept, so the index gets gaps (a read at a removed offset returns the
  next batch, as in Kafka).  While a cleaning is in progress
  (:meth:`begin_cleaning`) retention deletes nothing and truncation waits.
  The epoch cache and producer state are left as they were.
* The in-memory batch index (base, last offset, max timestamp, location) and
  the producer state are rebuilt on open by scanning the recovered WAL's
  batch headers; the WAL has already truncated a torn tail, so the index only
  covers CRC-checked entries.
"""

from __future__ import annotations

import bisect
import json
import logging
import time
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Any

import trio

from ..protocol import (
    BatchHeader,
    ProtocolError,
    assign_offsets,
    decode_records,
    parse_batch_header,
    set_log_append_time,
    set_partition_leader_epoch,
)
from ..storage import Appended, CorruptEntryError, EntryLocation, GroupCommitter, WriteAheadLog
from ..storage.files import read_file, replace_file_durably
from ..storage.wal import ENTRY_HEADER
from .producer_state import ProducerStateTable, SequenceError, is_idempotent

log = logging.getLogger(__name__)

PARTITION_FILE = "partition.json"
_FORMAT = 1


class PartitionUnreadable(Exception):
    """The log's durable part is damaged (a checksum fails below the recovery point)."""


class OffsetOutOfRange(Exception):
    """A read or lookup at an offset outside [log start, log end]."""


@dataclass(frozen=True, slots=True)
class AppendInfo:
    """Where a produced batch went.  ``appended`` is None for a deduplicated retry."""

    base_offset: int
    last_offset: int
    log_append_time: int  # -1 unless the topic uses LogAppendTime
    appended: Appended | None


@dataclass(frozen=True, slots=True)
class PartitionRecovery:
    batches: int
    log_start_offset: int
    log_end_offset: int
    truncated_bytes: int
    seconds: float


class PartitionLog:
    """One partition: append batches, read them back by offset, look up by time."""

    def __init__(self, wal: WriteAheadLog, directory: str, topic: str, partition: int, topic_id: str) -> None:
        self.wal = wal
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.topic_id = topic_id
        self.log_start_offset = 0
        self.log_end_offset = 0
        self.high_watermark = 0
        self.durable_end = 0
        self._isr_followers: frozenset[int] | None = None  # leading a replicated partition
        self._follower_ends: dict[int, int] = {}
        self._leader_high_watermark: int | None = None  # following
        self.leader_epoch: int | None = None  # stamped into appended batches while leading a replicated partition
        self._epochs: list[tuple[int, int]] = []  # the epoch cache: (epoch, start offset), both increasing
        self.producers = ProducerStateTable()
        # The batch index: parallel arrays in offset order.  Plain machine
        # integers, not objects: compact, and invisible to the garbage
        # collector (a million indexed batches must not slow every full GC).
        self._bases = array("q")
        self._lasts = array("q")
        self._max_timestamps = array("q")
        self._running_max_timestamp = array("q")
        self._segments = array("q")  # WAL location of each batch: segment base,
        self._positions = array("q")  # byte position,
        self._sizes = array("q")  # and entry size on disk
        # Appended but not yet durable: (segment, end position, next offset).
        self._in_flight: deque[tuple[int, int, int]] = deque()
        self._waiters: list[trio.Event] = []
        self._closed = False
        self.recovery: PartitionRecovery | None = None
        self._cleaning: trio.Event | None = None  # set when the cleaning in progress ends
        self._active_since: tuple[int, int] | None = None  # (active segment base, ms it was first seen non-empty)

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        committer: GroupCommitter,
        directory: str,
        *,
        topic: str,
        partition: int,
        topic_id: str,
        segment_bytes: int,
        high_watermark: int | None = None,
    ) -> "PartitionLog":
        """Open (creating if needed) the partition in ``directory`` and rebuild its index.

        ``high_watermark``: where to start the high watermark (cluster mode:
        the checkpointed one, see :mod:`chronik.log.checkpoint`), capped by the
        log end and raised to the log start; None starts it at the log end
        (a single node, where the durable end is the high watermark).

        Raises ``ValueError`` if the directory belongs to another topic id.
        """
        started = time.perf_counter()
        backend = committer.backend
        backend.make_dirs(directory)
        damaged = False
        try:
            meta = _read_partition_file(backend, directory)
        except ValueError as exc:
            # Written atomically, so only disk damage gets here.  The metadata
            # image says which topic this is; the log start falls back to the
            # oldest stored batch (segments below it were already deleted).
            log.warning("%s; rewriting it from the metadata (topic id %s)", exc, topic_id)
            meta, damaged = None, True
        if meta is not None and meta.get("topic_id") != topic_id:
            raise ValueError(f"{directory} holds topic id {meta.get('topic_id')}, not {topic_id}")
        holder: list[PartitionLog] = []
        wal = WriteAheadLog.open(
            committer,
            directory,
            segment_bytes=segment_bytes,
            preallocate_bytes=min(segment_bytes, 8 << 20),
            on_durable=lambda segment, end: holder[0]._on_durable(segment, end),
        )
        self = cls(wal, directory, topic, partition, topic_id)
        holder.append(self)
        if meta is not None:
            self.log_start_offset = int(meta.get("log_start_offset", 0))
        try:
            for info in wal.segments():
                for entry in wal.iter_entries(info.base_index):
                    header = parse_batch_header(entry.payload)
                    self._index(header, entry.location)
                    self.producers.observe(header)
        except (CorruptEntryError, ProtocolError) as exc:
            wal.close_files()
            raise PartitionUnreadable(str(exc)) from exc
        if meta is None:
            if damaged and self._bases:
                self.log_start_offset = self._bases[0]
            self._write_partition_file()
        active_base = wal.segments()[-1].base_index
        self.log_end_offset = max(self._lasts[-1] + 1 if self._lasts else 0, active_base, self.log_start_offset)
        self.high_watermark = self.durable_end = self.log_end_offset
        if high_watermark is not None:
            self.high_watermark = max(self.log_start_offset, min(high_watermark, self.log_end_offset))
        self.recovery = PartitionRecovery(
            len(self._bases), self.log_start_offset, self.log_end_offset, wal.recovery.truncated_bytes,
            time.perf_counter() - started,
        )
        if wal.recovery.truncated:
            log.warning("%s-%d: recovery truncated the log tail (%s)", topic, partition, wal.recovery.reason)
        return self

    def _index(self, header: BatchHeader, location: EntryLocation) -> None:
        epoch = header.partition_leader_epoch
        if epoch >= 0 and (not self._epochs or epoch > self._epochs[-1][0]):
            self._epochs.append((epoch, header.base_offset))
        self._bases.append(header.base_offset)
        self._lasts.append(header.last_offset)
        self._max_timestamps.append(header.max_timestamp)
        previous = self._running_max_timestamp[-1] if self._running_max_timestamp else -1
        self._running_max_timestamp.append(max(previous, header.max_timestamp))
        self._segments.append(location.segment)
        self._positions.append(location.position)
        self._sizes.append(location.size)

    # -- appending -----------------------------------------------------------

    def append_batch(self, batch: memoryview | bytearray, header: BatchHeader, *, log_append_time: int | None) -> AppendInfo:
        """Assign offsets to one validated batch and queue it on the WAL.

        ``batch`` is rewritten in place and must stay unchanged until durable.
        ``log_append_time`` (ms) stamps the batch LogAppendTime when given.
        Never blocks; wait with :meth:`wait_durable`.

        :raises SequenceError: the idempotent-producer rules refuse the batch.
        """
        if is_idempotent(header):
            original = self.producers.check(header)
            if original is not None:
                return AppendInfo(original, original + header.last_offset_delta, -1, None)
        base = self.log_end_offset
        assign_offsets(batch, base)
        if self.leader_epoch is not None:
            set_partition_leader_epoch(batch, self.leader_epoch)
        if log_append_time is not None:
            set_log_append_time(batch, log_append_time)
        stored = parse_batch_header(batch)
        appended = self.wal.append(base, batch)
        location = appended.location
        self._index(stored, location)
        self.producers.observe(stored)
        self.log_end_offset = stored.next_offset
        self._in_flight.append((location.segment, location.position + location.size, self.log_end_offset))
        return AppendInfo(base, stored.last_offset, -1 if log_append_time is None else log_append_time, appended)

    def append_replicated(self, batch: memoryview | bytes, *, gaps_below: int | None = None) -> AppendInfo:
        """Append a batch exactly as the leader stored it, at the leader's offsets (followers).

        ``gaps_below``: the leader's high watermark; a batch that starts below
        it may start after :attr:`log_end_offset` (the batches between were
        removed by the leader's log cleaner, which only cleans below its high
        watermark).  Never blocks; wait with :meth:`wait_durable`.

        :raises ProtocolError: not a whole record batch.
        :raises OffsetOutOfRange: the batch does not start at :attr:`log_end_offset`
            (or, within ``gaps_below``, starts before it).
        """
        header = parse_batch_header(batch)
        if header.size != len(batch):
            raise ProtocolError(f"replicated batch of {len(batch)} bytes says it has {header.size}")
        compacted_gap = gaps_below is not None and self.log_end_offset < header.base_offset < gaps_below
        if header.base_offset != self.log_end_offset and not compacted_gap:
            raise OffsetOutOfRange(
                f"replicated batch at offset {header.base_offset} does not follow the log end {self.log_end_offset}"
                f" of {self.topic}-{self.partition}"
            )
        appended = self.wal.append(header.base_offset, batch)
        location = appended.location
        self._index(header, location)
        self.producers.observe(header)
        self.log_end_offset = header.next_offset
        self._in_flight.append((location.segment, location.position + location.size, self.log_end_offset))
        return AppendInfo(header.base_offset, header.last_offset, -1, appended)

    def durable_settled(self, info: AppendInfo) -> bool:
        """Whether the group commit of an append has ended (durable or failed): then
        :meth:`wait_durable` returns or raises at once, without yielding.  Never blocks."""
        return info.appended is not None and info.appended.batch.done.is_set()

    async def wait_durable(self, info: AppendInfo) -> None:
        """Return once the batch is durable (and so below the high watermark).

        Cancellation: the append stays queued and becomes durable anyway.
        """
        if info.appended is not None:
            await self.wal.wait_durable(info.appended)
        elif self.high_watermark <= info.last_offset:
            await self.wal.flush()  # a retry of a batch still in flight

    async def wait_high_watermark(self, end: int) -> None:
        """Return once the high watermark is at least ``end`` (or the log closed, or,
        if it led when the wait began, once it no longer leads).

        Cancellation: safe; only the wait ends.
        """
        leading = self._isr_followers is not None
        while self.high_watermark < end and not self._closed and (not leading or self._isr_followers is not None):
            moved = trio.Event()
            self.register_waiter(moved)
            await moved.wait()
        await trio.lowlevel.checkpoint()

    def _on_durable(self, segment: int, end: int) -> None:
        in_flight = self._in_flight
        advanced = False
        while in_flight and (in_flight[0][0], in_flight[0][1]) <= (segment, end):
            self.durable_end = in_flight.popleft()[2]
            advanced = True
        if advanced:
            self._advance_high_watermark()
            self._wake_readers()  # also wakes the leader's parked follower fetches

    # -- replication: the high-watermark rules -------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def lead(self, isr_followers: frozenset[int], leader_epoch: int | None = None) -> None:
        """This node leads a replicated partition whose in-sync followers are ``isr_followers``.

        From now on the high watermark is the minimum of :attr:`durable_end`
        and the log ends those followers reported (an empty set: the durable
        end), and appended batches carry ``leader_epoch`` (when given).
        """
        if leader_epoch is not None:
            self.leader_epoch = leader_epoch
        self._isr_followers = frozenset(isr_followers)
        self._leader_high_watermark = None
        if self._advance_high_watermark():
            self._wake_readers()  # an ISR shrink can release acks=all writes

    def follow(self) -> None:
        """This node follows the partition: the high watermark comes from the leader (:meth:`follow_high_watermark`)."""
        leading = self._isr_followers is not None
        self._isr_followers = None
        self.leader_epoch = None
        self._follower_ends.clear()
        if self._leader_high_watermark is None:
            self._leader_high_watermark = self.high_watermark
        if leading:
            self._wake_readers()  # acks=all writes waiting here are answered NOT_LEADER_OR_FOLLOWER

    @property
    def last_epoch(self) -> int:
        """The leader epoch of the newest epoch-stamped batch (-1: none)."""
        return self._epochs[-1][0] if self._epochs else -1

    def epoch_end(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: ``(e, end)`` for the largest epoch ``e <= epoch``
        that starts in this log, ``end`` being where the next epoch starts (the
        log end for the newest).  ``(-1, start of the oldest epoch)`` when no
        such epoch is here (``(-1, log end)`` with no epochs at all)."""
        i = bisect.bisect_right(self._epochs, (epoch, 1 << 62))
        if i == 0:
            return -1, self._epochs[0][1] if self._epochs else self.log_end_offset
        end = self._epochs[i][1] if i < len(self._epochs) else self.log_end_offset
        return self._epochs[i - 1][0], end

    async def truncate_to(self, offset: int) -> int:
        """Cut every batch that ends at or above ``offset`` (a follower's divergent
        suffix); return the new log end.  A batch straddling ``offset`` goes whole.

        Waits for the appends in flight first (the WAL truncates only a quiet
        log), then truncates durably and rebuilds the producer state.  Offsets
        at or below the log start are kept.  Cancellation: shielded.
        """
        with trio.CancelScope(shield=True):
            await self.wait_cleaning_done()
            await self.wal.flush()
            i = bisect.bisect_right(self._lasts, offset - 1)  # first batch whose last offset >= offset
            if i >= len(self._bases) or self._closed:
                return self.log_end_offset
            new_end = max(self._bases[i], self.log_start_offset)
            dropped = self.log_end_offset - new_end
            self.wal.truncate(EntryLocation(self._segments[i], self._positions[i], self._sizes[i]))
            del self._bases[i:], self._lasts[i:], self._max_timestamps[i:], self._running_max_timestamp[i:]
            del self._segments[i:], self._positions[i:], self._sizes[i:]
            self._in_flight.clear()
            self.log_end_offset = self.durable_end = new_end
            self.high_watermark = min(self.high_watermark, self.log_end_offset)
            if self._leader_high_watermark is not None:
                self._leader_high_watermark = min(self._leader_high_watermark, self.log_end_offset)
            self._epochs = [(e, start) for e, start in self._epochs if start < self.log_end_offset]
            self.producers = ProducerStateTable()
            for info in self.wal.segments():
                for entry in self.wal.iter_entries(info.base_index):
                    self.producers.observe(parse_batch_header(entry.payload))
            log.info("%s-%d: truncated %d record offset(s), log end now %d", self.topic, self.partition, dropped,
                     self.log_end_offset)
            return self.log_end_offset

    async def restart_at(self, offset: int) -> None:
        """Empty the log; the next batch goes at ``offset`` (a follower whose log ends
        below its leader's log start: what it lacks is gone from the leader).

        The log start becomes ``offset`` if that is higher.  An empty log may
        also restart lower (but not below 0): the leader's log start can fall
        inside a batch, which the follower must then store whole, from its base
        offset, with the log start still inside it (as on the leader).  The new
        log start is persisted before any segment is deleted, so a crash in
        between reopens an empty log at the log start.  Waits for the appends
        in flight first.  Cancellation: shielded.

        :raises ValueError: ``offset`` is not above :attr:`log_end_offset` and the log holds batches.
        """
        with trio.CancelScope(shield=True):
            await self.wait_cleaning_done()
            await self.wal.flush()
            if self._closed:
                return
            if offset < 0 or (offset <= self.log_end_offset and len(self._bases)):
                raise ValueError(f"cannot restart {self.topic}-{self.partition} at {offset}, not above its end"
                                 f" {self.log_end_offset}")
            dropped = max(0, self.log_end_offset - self.log_start_offset)
            if offset > self.log_start_offset:
                self.log_start_offset = offset
                self._write_partition_file()
            self.wal.restart_at(offset)
            for column in (self._bases, self._lasts, self._max_timestamps, self._running_max_timestamp,
                           self._segments, self._positions, self._sizes):
                del column[:]
            self._in_flight.clear()
            self._epochs = []
            self.producers = ProducerStateTable()
            self.log_end_offset = self.durable_end = offset
            self.high_watermark = max(self.high_watermark, self.log_start_offset)
            if self._leader_high_watermark is not None:
                self._leader_high_watermark = max(self._leader_high_watermark, self.log_start_offset)
            log.info("%s-%d: log restarted at offset %d (log start %d); %d record offset(s) dropped",
                     self.topic, self.partition, offset, self.log_start_offset, dropped)
            self._wake_readers()

    @property
    def holds_batches(self) -> bool:
        """Whether any batch is stored (a log emptied by :meth:`restart_at` holds none)."""
        return len(self._bases) > 0

    def refresh_high_watermark(self) -> None:
        """Re-apply the high-watermark rule now (after a restart a log that is
        neither leading nor following takes its durable end at once)."""
        if self._advance_high_watermark():
            self._wake_readers()

    def record_follower_end(self, node_id: int, end: int) -> None:
        """(Leader) follower ``node_id`` has everything below ``end`` durable."""
        self._follower_ends[node_id] = end
        if self._advance_high_watermark():
            self._wake_readers()

    def follow_high_watermark(self, leader_high_watermark: int) -> None:
        """(Follower) the leader's high watermark, as its last fetch answer said."""
        self._leader_high_watermark = max(self._leader_high_watermark or 0, leader_high_watermark)
        if self._advance_high_watermark():
            self._wake_readers()

    def follower_end(self, node_id: int) -> int | None:
        return self._follower_ends.get(node_id)

    def _advance_high_watermark(self) -> bool:
        target = self.durable_end
        if self._isr_followers is not None:
            for node_id in self._isr_followers:
                target = min(target, self._follower_ends.get(node_id, 0))
        elif self._leader_high_watermark is not None:
            target = min(target, self._leader_high_watermark)
        if target > self.high_watermark:
            self.high_watermark = target
            return True
        return False

    # -- reading -------------------------------------------------------------

    def _check_offset(self, offset: int) -> None:
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRange(
                f"offset {offset} is outside [{self.log_start_offset}, {self.log_end_offset}] of {self.topic}-{self.partition}"
            )

    def read(self, offset: int, max_bytes: int, *, end: int | None = None) -> list[memoryview]:
        """Whole batches below the high watermark from the one containing ``offset``, about ``max_bytes``.

        ``end`` reads up to another limit instead (a follower's fetch reads up
        to :attr:`durable_end`).

        The first batch is returned even if it is larger than ``max_bytes`` (so
        a consumer always progresses); later ones only while they fit.
        Payloads are views of read buffers, never copied.

        :raises OffsetOutOfRange: outside [log start, log end].
        """
        self._check_offset(offset)
        limit = self.high_watermark if end is None else end
        if offset >= limit:
            return []
        i = bisect.bisect_left(self._lasts, offset)
        batches: list[memoryview] = []
        total = 0
        while i < len(self._bases) and self._bases[i] < limit:
            entries = self.wal.read(self._segments[i], self._positions[i], max(max_bytes - total, 1))
            if not entries:
                break
            for entry in entries:
                size = len(entry.payload)
                if batches and total + size > max_bytes:
                    return batches
                if entry.index >= limit:
                    return batches
                batches.append(entry.payload)
                total += size
                i += 1
            if total >= max_bytes:
                break
        return batches

    def bytes_available(self, offset: int) -> int:
        """Durable bytes from ``offset`` to the high watermark (for Fetch min_bytes)."""
        if offset >= self.high_watermark or offset < self.log_start_offset:
            return 0
        first = bisect.bisect_left(self._lasts, offset)
        end = bisect.bisect_left(self._bases, self.high_watermark)
        return sum(self._sizes[first:end]) - ENTRY_HEADER.size * (end - first)

    def register_waiter(self, event: trio.Event) -> None:
        """Set ``event`` the next time the high watermark advances (or the log closes)."""
        self._waiters.append(event)

    def _wake_readers(self) -> None:
        waiters, self._waiters = self._waiters, []
        for event in waiters:
            event.set()

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= ``timestamp``, or None."""
        i = bisect.bisect_left(self._running_max_timestamp, timestamp)
        while i < len(self._bases) and self._bases[i] < self.high_watermark:
            if self._max_timestamps[i] >= timestamp:
                for record in self._records_of(i):
                    if record.timestamp >= timestamp and record.offset >= self.log_start_offset:
                        return record.offset, record.timestamp
            i += 1
        return None

    def max_timestamp(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the record with the largest timestamp (earliest such), or None."""
        best = -1
        for i in range(len(self._bases)):
            if self._bases[i] >= self.high_watermark:
                break
            if self._max_timestamps[i] > (self._max_timestamps[best] if best >= 0 else -2):
                best = i
        if best < 0:
            return None
        target = self._max_timestamps[best]
        for record in self._records_of(best):
            if record.timestamp == target:
                return record.offset, record.timestamp
        return self._lasts[best], target

    def _records_of(self, i: int) -> list[Any]:
        entries = self.wal.read(self._segments[i], self._positions[i], self._sizes[i])
        return decode_records(entries[0].payload)

    # -- log start, retention, deletion ----------------------------------------

    def size_bytes(self) -> int:
        return sum(info.data_bytes for info in self.wal.segments())

    def advance_log_start(self, offset: int) -> int:
        """Move the log start offset up to ``offset`` (DeleteRecords); return the new start.

        :raises OffsetOutOfRange: ``offset`` is above the high watermark.
        """
        if offset > self.high_watermark:
            raise OffsetOutOfRange(f"offset {offset} is above the high watermark {self.high_watermark}")
        if offset > self.log_start_offset:
            self.log_start_offset = offset
            self._write_partition_file()
            self._delete_segments_below(offset)
        return self.log_start_offset

    def apply_retention(self, now_ms: int, retention_ms: int, retention_bytes: int) -> int:
        """Delete whole segments beyond the retention limits; return how many went.

        A segment goes when its newest timestamp is older than ``retention_ms``
        (-1: keep), or while the log is larger than ``retention_bytes`` (-1: no
        limit) without it.  The active segment is rolled first when everything
        in it has expired, so an idle topic's data also ages out.
        """
        segments = self.wal.segments()
        deletable: list[int] = []  # next offset after each segment that may go, oldest first
        sizes = [info.data_bytes for info in segments]
        total = sum(sizes)
        for n, info in enumerate(segments):
            if info.data_bytes == 0:  # the empty active segment (recovered sealed ones have no last_index)
                break
            next_offset = self._next_offset_after_segment(info.base_index)
            if next_offset > self.high_watermark:
                break
            expired = retention_ms >= 0 and self._segment_max_timestamp(info.base_index) < now_ms - retention_ms
            too_big = retention_bytes >= 0 and total - sizes[n] >= retention_bytes
            if not (expired or too_big):
                break
            deletable.append(next_offset)
            total -= sizes[n]
        if not deletable:
            return 0
        if len(deletable) == len(segments):
            if self.wal.stats().durable_end != self.wal.stats().write_end:
                deletable.pop()
            else:
                self.wal.roll()
        if not deletable:
            return 0
        self.log_start_offset = max(self.log_start_offset, deletable[-1])
        self._write_partition_file()
        return self._delete_segments_below(self.log_start_offset)

    def _next_offset_after_segment(self, base: int) -> int:
        segments = self.wal.segments()
        for info, following in zip(segments, segments[1:]):
            if info.base_index == base:
                return following.base_index
        return self.log_end_offset

    def _segment_max_timestamp(self, base: int) -> int:
        start = bisect.bisect_left(self._bases, base)
        end = bisect.bisect_left(self._bases, self._next_offset_after_segment(base))
        return max(self._max_timestamps[start:end], default=-1)

    def _delete_segments_below(self, offset: int) -> int:
        """Delete sealed segments whose every batch is below ``offset`` (none while
        a cleaning is in progress: the next retention pass does it)."""
        deleted = 0
        if self._cleaning is not None:
            return 0
        segments = self.wal.segments()
        for info, following in zip(segments, segments[1:]):
            if following.base_index > offset:
                break
            self.wal.delete_segment(info.base_index)
            deleted += 1
        if deleted:
            keep_from = bisect.bisect_left(self._bases, self.wal.segments()[0].base_index)
            del self._bases[:keep_from], self._lasts[:keep_from], self._max_timestamps[:keep_from]
            del self._running_max_timestamp[:keep_from], self._segments[:keep_from]
            del self._positions[:keep_from], self._sizes[:keep_from]
        return deleted

    # -- compaction hooks (used by chronik.log.cleaner) ------------------------

    def sealed_segments(self) -> list[tuple[int, int, int, int, int]]:
        """``(base, next offset, data bytes, first batch's max timestamp, max timestamp)``
        of each sealed segment from the oldest, up to the first one not wholly
        below the high watermark and the durable end."""
        spans = []
        limit = min(self.high_watermark, self.durable_end)
        segments = self.wal.segments()
        for info, following in zip(segments, segments[1:]):
            if following.base_index > limit:
                break
            start = bisect.bisect_left(self._bases, info.base_index)
            end = bisect.bisect_left(self._bases, following.base_index)
            if start == end:
                continue
            spans.append((info.base_index, following.base_index, info.data_bytes, self._max_timestamps[start],
                          max(self._max_timestamps[start:end])))
        return spans

    def begin_cleaning(self) -> bool:
        """Mark a cleaning in progress (False if one already is, or the log is closed)."""
        if self._cleaning is not None or self._closed:
            return False
        self._cleaning = trio.Event()
        return True

    def end_cleaning(self) -> None:
        """The cleaning ended (installed or given up); truncations waiting go ahead."""
        if self._cleaning is not None:
            self._cleaning.set()
            self._cleaning = None

    async def wait_cleaning_done(self) -> None:
        """Return once no cleaning is in progress.  Cancellation: only the wait ends."""
        while self._cleaning is not None:
            await self._cleaning.wait()

    def install_cleaned(self, replacement: Any, headers: list[BatchHeader]) -> None:
        """Serve reads from a committed replacement of segments (``WriteAheadLog.commit_replacement``
        done) whose entries are the batches ``headers``: switch the WAL over and
        re-index the replaced range.  Never blocks."""
        self.wal.switch_to_replacement(replacement)
        i = bisect.bisect_left(self._bases, replacement.first)
        j = bisect.bisect_left(self._bases, replacement.end)
        self._bases[i:j] = array("q", (h.base_offset for h in headers))
        self._lasts[i:j] = array("q", (h.last_offset for h in headers))
        self._max_timestamps[i:j] = array("q", (h.max_timestamp for h in headers))
        self._segments[i:j] = array("q", (replacement.first for _ in headers))
        self._positions[i:j] = array("q", (position for _, position, _ in replacement.entries))
        self._sizes[i:j] = array("q", (size for _, _, size in replacement.entries))
        running = self._running_max_timestamp[i - 1] if i else -1
        del self._running_max_timestamp[i:]
        for timestamp in self._max_timestamps[i:]:
            running = max(running, timestamp)
            self._running_max_timestamp.append(running)

    def roll_if_older(self, now_ms: int, max_age_ms: int) -> bool:
        """Roll the active segment once it has held data for ``max_age_ms`` (segment.ms,
        by the wall clock since this node first saw it non-empty, not by record
        timestamps, which producers choose) and nothing is in flight; True if rolled."""
        active = self.wal.segments()[-1]
        if active.data_bytes == 0:
            return False
        if self._active_since is None or self._active_since[0] != active.base_index:
            self._active_since = (active.base_index, now_ms)
            return False
        stats = self.wal.stats()
        if now_ms - self._active_since[1] < max_age_ms or stats.durable_end != stats.write_end:
            return False
        self.wal.roll()
        return True

    def _write_partition_file(self) -> None:
        data = json.dumps(
            {
                "format": _FORMAT,
                "topic": self.topic,
                "partition": self.partition,
                "topic_id": self.topic_id,
                "log_start_offset": self.log_start_offset,
            }
        ).encode()
        replace_file_durably(self.wal.backend, self.directory, PARTITION_FILE, data)

    async def aclose(self) -> None:
        """Flush and close; readers parked on this log are woken."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.wal.aclose()
        finally:
            self._wake_readers()

    async def delete(self) -> None:
        """Close the log and remove its directory and files (after a cleaning in progress)."""
        with trio.CancelScope(shield=True):
            await self.wait_cleaning_done()
        await self.aclose()
        backend = self.wal.backend
        for name in backend.list_dir(self.directory):
            backend.delete_file(f"{self.directory}/{name}")
        backend.remove_dir(self.directory)


def _read_partition_file(backend: Any, directory: str) -> dict[str, Any] | None:
    raw = read_file(backend, f"{directory}/{PARTITION_FILE}")
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{directory}/{PARTITION_FILE} is damaged: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError(f"{directory}/{PARTITION_FILE} has an unknown format")
    return meta


__all__ = ["AppendInfo", "OffsetOutOfRange", "PartitionLog", "PartitionRecovery", "PartitionUnreadable", "SequenceError"]
