"""The local log of one partition and its recovery (Kafka's LocalLog and LogLoader).

A :class:`LocalLog` is the sequence of record batches this node stores for
one partition: offsets, the batch index, the log start, durability, reads,
truncation, retention and segment deletion.  It knows record batches and
offsets, never replication roles, producers or sockets (those are
:mod:`chronik.log.replica`, :mod:`chronik.log.producer_state` and the
callers of :class:`~chronik.log.partition.PartitionLog`).

On-disk layout (directory ``<data_dir>/<topic>-<partition>``)::

    <base_offset:020d>.wal   WAL segments (see :mod:`chronik.log.segment` and
                             :mod:`chronik.storage.wal`); one entry per record
                             batch, entry index = the batch's base offset,
                             payload = the batch exactly as served
    recovery-point           the WAL's recovery point: where its recovery
                             may start scanning (:mod:`chronik.storage.wal`)
    *.wal.tmp, *.wal.cleaned, *.wal.swap
                             transient WAL files: a segment being created,
                             a compaction's replacement being written, one
                             ready to swap in; on open the WAL deletes the
                             first two and completes the swap
    partition.json           {"format": 1, "topic", "partition", "topic_id",
                              "log_start_offset"}, replaced atomically

Invariants
----------
* Offsets are dense and increasing: a batch is appended at
  :attr:`LocalLog.log_end_offset` (its base offset) and moves the log end to
  its last offset + 1.
* ``durable_end`` is the end of the durable prefix: it advances when the WAL
  reports batches durable, before anyone waiting on them wakes.
* ``log_start_offset`` only grows (retention, DeleteRecords, a follower
  following its leader's, or restarting the log there); it is persisted in
  ``partition.json`` before the segments below it are deleted, so a crash in
  between reopens with the new log start.
* Only whole sealed segments are deleted, and only once every batch in them
  is below the log start (retention also keeps what is not yet below the
  high watermark the caller passes).

Recovery (:func:`load_local_log`, the LogLoader): the WAL first cuts its own
torn tail (:mod:`chronik.storage.wal`); then every stored batch header is
scanned in offset order to rebuild the batch index and handed to the
caller (who rebuilds the producer state and the leader-epoch cache from it).
A damaged ``partition.json`` is rewritten from the metadata image's topic id,
with the log start at the oldest stored batch.  A checksum failure below the
recovery point makes the partition unreadable (:class:`PartitionUnreadable`).

Compaction lands here: a cleaner (``chronik.log.cleaner``) writes a cleaned
copy of sealed segments and the local log swaps it in for the originals and
rebuilds the batch index of that range, under the same invariants.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..protocol import BatchHeader, ProtocolError, decode_records, parse_batch_header
from ..storage import Appended, CorruptEntryError, GroupCommitter, WriteAheadLog
from ..storage.files import read_file, replace_file_durably
from .segment import BatchIndex

log = logging.getLogger(__name__)

PARTITION_FILE = "partition.json"
_FORMAT = 1


class PartitionUnreadable(Exception):
    """The log's durable part is damaged (a checksum fails below the recovery point)."""


class OffsetOutOfRange(Exception):
    """A read or lookup at an offset outside [log start, log end]."""


@dataclass(frozen=True, slots=True)
class PartitionRecovery:
    batches: int
    log_start_offset: int
    log_end_offset: int
    truncated_bytes: int
    seconds: float


class LocalLog:
    """The stored batches of one partition: append, read by offset or time, cut, delete segments."""

    def __init__(self, wal: WriteAheadLog, directory: str, topic: str, partition: int, topic_id: str) -> None:
        self.wal = wal
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.topic_id = topic_id
        self.log_start_offset = 0
        self.log_end_offset = 0
        self.durable_end = 0
        self.index = BatchIndex()
        # Appended but not yet durable: (segment, end position, next offset).
        self._in_flight: deque[tuple[int, int, int]] = deque()
        self.on_durable: Callable[[], None] = lambda: None
        """Called each time :attr:`durable_end` advances (the partition moves its high watermark)."""
        self.deletions_paused = False
        """True while the log cleaner rewrites segments: no segment is deleted (retention and
        DeleteRecords move the log start; the next retention pass deletes what it left)."""

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"

    # -- appending -----------------------------------------------------------

    def append(self, batch: memoryview | bytes | bytearray, header: BatchHeader) -> Appended:
        """Queue ``batch`` (whose stored header is ``header``, starting at the log end) on the WAL.

        Never blocks; the batch must stay unchanged until durable.
        """
        appended = self.wal.append(header.base_offset, batch)
        location = appended.location
        self.index.append(header, location)
        self.log_end_offset = header.next_offset
        self._in_flight.append((location.segment, location.position + location.size, self.log_end_offset))
        return appended

    def _wal_durable(self, segment: int, end: int) -> None:
        in_flight = self._in_flight
        advanced = False
        while in_flight and (in_flight[0][0], in_flight[0][1]) <= (segment, end):
            self.durable_end = in_flight.popleft()[2]
            advanced = True
        if advanced:
            self.on_durable()

    # -- reading -------------------------------------------------------------

    def check_offset(self, offset: int) -> None:
        """:raises OffsetOutOfRange: ``offset`` is outside [log start, log end]."""
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRange(
                f"offset {offset} is outside [{self.log_start_offset}, {self.log_end_offset}] of {self.name}"
            )

    def read(self, offset: int, max_bytes: int, limit: int) -> list[memoryview]:
        """Whole batches below ``limit`` from the one containing ``offset``, about ``max_bytes``
        (the first one even if larger).  Payloads are views of read buffers, never copied."""
        if offset >= limit:
            return []
        index = self.index
        i = index.containing(offset)
        batches: list[memoryview] = []
        total = 0
        while i < len(index) and index.base(i) < limit:
            location = index.location(i)
            entries = self.wal.read(location.segment, location.position, max(max_bytes - total, 1))
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

    def bytes_available(self, offset: int, limit: int) -> int:
        """Stored bytes of the batches from ``offset`` up to ``limit``."""
        if offset >= limit or offset < self.log_start_offset:
            return 0
        return self.index.payload_bytes(self.index.containing(offset), self.index.starting_at(limit))

    def offset_for_timestamp(self, timestamp: int, limit: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record below ``limit`` with timestamp >= ``timestamp``, or None."""
        index = self.index
        i = index.reaching_timestamp(timestamp)
        while i < len(index) and index.base(i) < limit:
            if index.max_timestamp(i) >= timestamp:
                for record in self._records_of(i):
                    if record.timestamp >= timestamp and record.offset >= self.log_start_offset:
                        return record.offset, record.timestamp
            i += 1
        return None

    def max_timestamp(self, limit: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the record below ``limit`` with the largest timestamp (earliest such), or None."""
        index = self.index
        best = -1
        for i in range(len(index)):
            if index.base(i) >= limit:
                break
            if index.max_timestamp(i) > (index.max_timestamp(best) if best >= 0 else -2):
                best = i
        if best < 0:
            return None
        target = index.max_timestamp(best)
        for record in self._records_of(best):
            if record.timestamp == target:
                return record.offset, record.timestamp
        return index.last(best), target

    def _records_of(self, i: int) -> list[Any]:
        location = self.index.location(i)
        entries = self.wal.read(location.segment, location.position, location.size)
        return decode_records(entries[0].payload)

    def headers(self) -> Iterator[BatchHeader]:
        """The header of every stored batch, in offset order (reads the segments)."""
        for header, _ in self.batches():
            yield header

    def batches(self) -> Iterator[tuple[BatchHeader, memoryview]]:
        """The header and bytes of every stored batch, in offset order (reads the segments)."""
        for info in self.wal.segments():
            for entry in self.wal.iter_entries(info.base_index):
                yield parse_batch_header(entry.payload), entry.payload

    # -- cutting ---------------------------------------------------------------

    def truncate_to(self, offset: int) -> int | None:
        """Cut every batch that ends at or above ``offset`` (whole), durably; return how
        many offsets went, or None if no batch ends there.  Offsets at or below the
        log start are kept.  The WAL must be quiet (no appends in flight)."""
        index = self.index
        i = index.containing(offset)
        if i >= len(index):
            return None
        new_end = max(index.base(i), self.log_start_offset)
        dropped = self.log_end_offset - new_end
        self.wal.truncate(index.location(i))
        index.keep(0, i)
        self._in_flight.clear()
        self.log_end_offset = self.durable_end = new_end
        return dropped

    def restart_at(self, offset: int) -> int:
        """Empty the log so that the next batch goes at ``offset``; return how many
        offsets went.  The log start becomes ``offset`` if that is higher, persisted
        before any segment is deleted.  The WAL must be quiet.

        :raises ValueError: ``offset`` is negative, or not above the log end while batches are stored.
        """
        if offset < 0 or (offset <= self.log_end_offset and len(self.index)):
            raise ValueError(f"cannot restart {self.name} at {offset}, not above its end {self.log_end_offset}")
        dropped = max(0, self.log_end_offset - self.log_start_offset)
        if offset > self.log_start_offset:
            self.log_start_offset = offset
            self.write_partition_file()
        self.wal.restart_at(offset)
        self.index.keep(0, 0)
        self._in_flight.clear()
        self.log_end_offset = self.durable_end = offset
        return dropped

    # -- log start, retention, deletion ----------------------------------------

    def size_bytes(self) -> int:
        return sum(info.data_bytes for info in self.wal.segments())

    def advance_log_start(self, offset: int, limit: int) -> int:
        """Move the log start up to ``offset``; return the new start.

        :raises OffsetOutOfRange: ``offset`` is above ``limit`` (the high watermark).
        """
        if offset > limit:
            raise OffsetOutOfRange(f"offset {offset} is above the high watermark {limit}")
        if offset > self.log_start_offset:
            self.log_start_offset = offset
            self.write_partition_file()
            self._delete_segments_below(offset)
        return self.log_start_offset

    def apply_retention(self, now_ms: int, retention_ms: int, retention_bytes: int, limit: int) -> int:
        """Delete whole segments beyond the retention limits, below ``limit`` (the high
        watermark); return how many went.  See :meth:`PartitionLog.apply_retention`."""
        segments = self.wal.segments()
        deletable: list[int] = []  # next offset after each segment that may go, oldest first
        sizes = [info.data_bytes for info in segments]
        total = sum(sizes)
        for n, info in enumerate(segments):
            if info.data_bytes == 0:  # the empty active segment (recovered sealed ones have no last_index)
                break
            next_offset = self._next_offset_after_segment(info.base_index)
            if next_offset > limit:
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
        self.write_partition_file()
        return self._delete_segments_below(self.log_start_offset)

    def _next_offset_after_segment(self, base: int) -> int:
        segments = self.wal.segments()
        for info, following in zip(segments, segments[1:]):
            if info.base_index == base:
                return following.base_index
        return self.log_end_offset

    def _segment_max_timestamp(self, base: int) -> int:
        index = self.index
        return index.max_timestamp_between(index.starting_at(base),
                                           index.starting_at(self._next_offset_after_segment(base)))

    def _delete_segments_below(self, offset: int) -> int:
        """Delete sealed segments whose every batch is below ``offset`` (none while
        :attr:`deletions_paused`: the next retention pass does it)."""
        deleted = 0
        if self.deletions_paused:
            return 0
        segments = self.wal.segments()
        for info, following in zip(segments, segments[1:]):
            if following.base_index > offset:
                break
            self.wal.delete_segment(info.base_index)
            deleted += 1
        if deleted:
            self.index.keep(self.index.starting_at(self.wal.segments()[0].base_index), len(self.index))
        return deleted

    def write_partition_file(self, *, sync_dir: bool = True) -> None:
        """Replace ``partition.json`` atomically and durably (blocks: fsyncs).  ``sync_dir``
        False: the caller syncs the directory (see :func:`~chronik.storage.files.replace_file_durably`)."""
        data = json.dumps(
            {
                "format": _FORMAT,
                "topic": self.topic,
                "partition": self.partition,
                "topic_id": self.topic_id,
                "log_start_offset": self.log_start_offset,
            }
        ).encode()
        replace_file_durably(self.wal.backend, self.directory, PARTITION_FILE, data, sync_dir=sync_dir)

    async def aclose(self) -> None:
        """Flush and close the WAL.  Cancellation: as :meth:`WriteAheadLog.aclose`."""
        await self.wal.aclose()

    def delete_files(self) -> None:
        """Remove the (closed) log's directory and files."""
        backend = self.wal.backend
        for name in backend.list_dir(self.directory):
            backend.delete_file(f"{self.directory}/{name}")
        backend.remove_dir(self.directory)


def load_local_log(committer: GroupCommitter, directory: str, *, topic: str, partition: int, topic_id: str,
                   segment_bytes: int, observe: Callable[[BatchHeader, memoryview], None]) -> tuple[LocalLog, PartitionRecovery]:
    """Open (creating if needed) the local log in ``directory`` and rebuild its index (the LogLoader).

    ``observe`` is called with every stored batch header and its bytes, in offset order.

    :raises ValueError: the directory belongs to another topic id.
    :raises PartitionUnreadable: a stored batch fails its checks.
    """
    started = time.perf_counter()
    backend = committer.backend
    backend.make_dirs(directory)
    damaged = False
    try:
        meta = read_partition_file(backend, directory)
    except ValueError as exc:
        # Written atomically, so only disk damage gets here.  The metadata
        # image says which topic this is; the log start falls back to the
        # oldest stored batch (segments below it were already deleted).
        log.warning("%s; rewriting it from the metadata (topic id %s)", exc, topic_id)
        meta, damaged = None, True
    if meta is not None and meta.get("topic_id") != topic_id:
        raise ValueError(f"{directory} holds topic id {meta.get('topic_id')}, not {topic_id}")
    holder: list[LocalLog] = []
    # Without a partition file (a new partition) the WAL's first segment and
    # the partition file are renamed into the directory first, then it is
    # synced once for both, before the log is handed out.
    wal = WriteAheadLog.open(
        committer,
        directory,
        segment_bytes=segment_bytes,
        preallocate_bytes=min(segment_bytes, 8 << 20),
        on_durable=lambda segment, end: holder[0]._wal_durable(segment, end),
        sync_dir=meta is not None,
    )
    local = LocalLog(wal, directory, topic, partition, topic_id)
    holder.append(local)
    if meta is not None:
        local.log_start_offset = int(meta.get("log_start_offset", 0))
    try:
        for info in wal.segments():
            for entry in wal.iter_entries(info.base_index):
                header = parse_batch_header(entry.payload)
                local.index.append(header, entry.location)
                observe(header, entry.payload)
    except (CorruptEntryError, ProtocolError) as exc:
        wal.close_files()
        raise PartitionUnreadable(str(exc)) from exc
    if meta is None:
        if damaged and len(local.index):
            local.log_start_offset = local.index.base(0)
        try:
            local.write_partition_file(sync_dir=False)
            backend.sync_dir(directory)
        except OSError:  # e.g. no space left: nothing is in flight, close and let the caller retry
            wal.close_files()
            raise
    active_base = wal.segments()[-1].base_index
    local.log_end_offset = local.durable_end = max(local.index.next_offset or 0, active_base, local.log_start_offset)
    recovery = PartitionRecovery(
        len(local.index), local.log_start_offset, local.log_end_offset, wal.recovery.truncated_bytes,
        time.perf_counter() - started,
    )
    if wal.recovery.truncated:
        log.warning("%s-%d: recovery truncated the log tail (%s)", topic, partition, wal.recovery.reason)
    return local, recovery


def read_partition_file(backend: Any, directory: str) -> dict[str, Any] | None:
    """The contents of ``partition.json`` (None if absent).  :raises ValueError: damaged or unknown format."""
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


__all__ = ["LocalLog", "OffsetOutOfRange", "PARTITION_FILE", "PartitionRecovery", "PartitionUnreadable",
           "load_local_log", "read_partition_file"]
