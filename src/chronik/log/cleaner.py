"""Log compaction: rewrite sealed segments so only the latest record per key remains.

The semantics are Kafka's ``LogCleaner``/``Cleaner``; scheduling lives in
:mod:`chronik.log.cleaner_manager`.  One *pass* over a partition:

1. **Offset map.**  Over the *dirty* section (sealed segments from the first
   dirty offset -- where the previous pass ended -- up to the cleanable end)
   map each key to the offset of its latest record.  The map's estimated size
   is bounded (``log.cleaner.dedupe.buffer.size``): when it fills, the pass
   ends after the segment that filled it and the rest waits for the next pass.
2. **Rewrite.**  Every sealed segment from the log start up to where the map
   ends is rewritten, in groups of consecutive segments whose sizes add up to
   at most ``segment.bytes`` (so small cleaned segments merge, as in Kafka).
   A record is kept when no later record of its key is in the map; a record
   without a key is dropped (a compacted topic refuses them, older data may
   hold some); a tombstone (null value) is kept until the *delete horizon* of
   its batch passed.  As in Kafka (KIP-534), the first pass that keeps a
   tombstone stamps its batch with a delete horizon, now + ``delete.retention.ms``
   (attribute bit 6, baseTimestamp = horizon, record timestamps unchanged);
   a later pass after the horizon drops the tombstones.
3. **Batches.**  A batch whose records are all kept (and needs no horizon) is
   copied byte for byte.  Otherwise it is rebuilt with
   :func:`~chronik.protocol.rebuild_batch`: the same base and last offset
   (offsets are never renumbered, so gaps appear), the same producer fields,
   leader epoch and codec (recompressed), a new recordsCount, maxTimestamp
   and CRC-32C.  A batch with nothing left goes, unless it is a producer's
   newest (data) batch or newest marker (:meth:`ProducerStateTable.batches_to_keep`):
   that one stays, emptied if need be, so idempotence, epochs and coordinator
   epochs survive (Kafka's ``isBatchLastRecordOfProducer``; Kafka keeps the
   coordinator epoch in producer-state snapshots, which Chronik has not).
   Transactions (Kafka's ``CleanedTransactionMetadata``, :class:`TxnTracker`):
   the cleanable section ends at the last stable offset (see
   :meth:`PartitionLog.sealed_segments`), so every transaction in it is
   decided.  The data batches of aborted transactions (known from the
   aborted-transaction index) are neither mapped nor kept.  A commit or abort
   marker stays while a batch of its transaction was seen before it in this
   pass (data of it may remain); otherwise it is stamped with a delete horizon
   like a tombstone, and dropped by a pass after the horizon.  The offsets of
   the dropped abort markers are returned (``markers_removed``) so the caller
   drops their index entries.
4. **Swap.**  Each group is written as a replacement through the WAL
   (``.cleaned`` -> ``.swap`` -> replace, see :mod:`chronik.storage.wal`):
   durable before the old segments go, completed by recovery after a crash.

:func:`clean_segments` does steps 1-4 up to durable swap files, over any
way of reading segments and writing replacements: the broker runs it in a
child process (:mod:`chronik.log.cleaner_process`) on the segment files, and
:func:`clean_partition` runs it in the calling thread on a
:class:`~chronik.storage.wal.WriteAheadLog` (the in-memory backends, tests,
benchmarks), pausing (``time.sleep(0)``, which releases the GIL) every
millisecond of work (:class:`Pacer`) so an event loop thread is never kept
waiting for long.  Either way the bytes read and written are paced by a
:class:`Throttler` (``log.cleaner.io.max.bytes.per.second``).
:func:`commit` then finishes the swaps on disk.  None of
this changes the :class:`~chronik.log.partition.PartitionLog`: the caller
installs the result on the event loop (:meth:`PartitionLog.install_cleaned`).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import le

from ..protocol import (
    BatchHeader,
    ControlRecordType,
    RecordScan,
    control_record_type,
    decode_records,
    parse_batch_header,
    rebuild_batch,
    records_data,
    scan_records,
)
from ..storage.wal import Replacement, WriteAheadLog
from .segment import BatchRows

MAP_ENTRY_OVERHEAD = 80
"""Bytes an offset-map entry is counted as, besides its key (a Python dict entry, int and bytes object)."""


@dataclass(frozen=True, slots=True)
class Span:
    """A sealed segment as the cleaner sees it (see :meth:`PartitionLog.sealed_segments`)."""

    base: int
    next_offset: int
    data_bytes: int
    first_timestamp: int
    max_timestamp: int


@dataclass(slots=True)
class PassStats:
    """What one cleaning pass did."""

    bytes_read: int = 0
    bytes_written: int = 0
    batches_read: int = 0
    batches_written: int = 0
    records_read: int = 0
    records_kept: int = 0
    tombstones_removed: int = 0
    aborted_removed: int = 0  # records of aborted transactions removed
    markers_removed: list[int] = field(default_factory=list)  # offsets of the control batches removed
    keys: int = 0
    segments_before: int = 0
    segments_after: int = 0
    map_seconds: float = 0.0
    seconds: float = 0.0
    first_offset: int = 0
    end_offset: int = 0  # the pass cleaned [first_offset, end_offset); the next dirty section starts here
    error: Exception | None = None  # what stopped the pass early (the replacements before it are committed)
    replacements: list[tuple[Replacement, BatchRows]] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Bytes written / bytes read (1.0 when nothing was read)."""
        return self.bytes_written / self.bytes_read if self.bytes_read else 1.0


class Throttler:
    """Paces a pass's I/O: called with the bytes of each batch read and written, it
    sleeps as needed so they average at most ``bytes_per_second`` (Kafka's
    ``log.cleaner.io.max.bytes.per.second``; ``sys.float_info.max``, Kafka's
    default, means no limit).

    It sleeps whenever the bytes since the start of the current period are
    more than :attr:`MIN_SLEEP` seconds ahead of the rate, so the I/O comes in
    steps of at most about ``MIN_SLEEP * bytes_per_second`` bytes rather than
    bursts.  A period lasts :attr:`PERIOD` seconds: time the pass lost to other
    work (a busy CPU) is not made up for by a burst later.
    """

    MIN_SLEEP = 0.01
    PERIOD = 1.0

    __slots__ = ("bytes_per_second", "_clock", "_sleep", "_start", "_bytes")

    def __init__(self, bytes_per_second: float = sys.float_info.max, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if not bytes_per_second > 0:
            raise ValueError(f"an I/O rate must be positive, not {bytes_per_second}")
        self.bytes_per_second = bytes_per_second
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self._bytes = 0

    def __call__(self, nbytes: int = 0) -> None:
        if self.bytes_per_second >= sys.float_info.max:
            return
        self._bytes += nbytes
        elapsed = self._clock() - self._start
        ahead = self._bytes / self.bytes_per_second - elapsed
        if ahead >= self.MIN_SLEEP:
            self._sleep(ahead)
            elapsed += ahead
        if elapsed >= self.PERIOD:
            self._start = self._clock()
            self._bytes = 0


PAUSE_EVERY_SECONDS = 0.001
"""CPU time the cleaner's thread works between two voluntary releases of the GIL."""


class Pacer(Throttler):
    """A :class:`Throttler` for a pass run in a thread of the broker: besides pacing
    the I/O, every :data:`PAUSE_EVERY_SECONDS` it sleeps 0 s, which releases the
    GIL, so the event loop thread waits at most about that long for it (rather
    than the interpreter's 5 ms switch interval)."""

    __slots__ = ("_next",)

    def __init__(self, bytes_per_second: float = sys.float_info.max) -> None:
        super().__init__(bytes_per_second)
        self._next = time.perf_counter() + PAUSE_EVERY_SECONDS

    def __call__(self, nbytes: int = 0) -> None:
        super().__call__(nbytes)
        now = time.perf_counter()
        if now >= self._next:
            time.sleep(0)
            self._next = time.perf_counter() + PAUSE_EVERY_SECONDS


def tasks_waiting_for_a_cpu() -> Callable[[], bool]:
    """A test, cheap enough to run every millisecond (~1 us), of whether some task is
    runnable but waiting for a CPU right now: Linux's count of runnable tasks
    (``/proc/loadavg``, the caller included) is above the CPUs this process
    may use.  Where that file is missing, a test that always says yes."""
    try:
        fd = os.open("/proc/loadavg", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return lambda: True
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def waiting() -> bool:
        try:  # "0.50 0.40 0.30 3/96 12345": runnable/total tasks is the fourth field
            return int(os.pread(fd, 128, 0).split()[3].split(b"/")[0]) > cpus
        except OSError:
            return True

    return waiting


class Yielder:
    """For a pass in a cleaner process: after every :attr:`WORK` seconds (wall clock)
    since its last check, the next call sleeps :attr:`REST` seconds if another
    task is waiting for a CPU (``waiting()``, by default
    :func:`tasks_waiting_for_a_cpu`).

    Why, although the process runs at ``SCHED_IDLE``: on the development VM
    (a kernel without full preemption, 250 Hz tick, CPU autogroups) a busy
    ``SCHED_IDLE`` process still delays the broker's acks=all produce.  A
    ``SCHED_IDLE`` spin loop beside a broker raised the p99 of one message in
    flight from 2.8 to 6.5 ms; the same loop resting 0.1 ms after every
    0.5 ms of work did not (1.9 ms).  Presumably a wake-up that does not
    preempt it (a task of another scheduling group, such as a kernel thread
    finishing an ``fdatasync``, is weighed against the broker's whole group)
    waits for the next tick; a rest bounds that wait by :attr:`WORK`.  With
    passes alternating with idle periods beside a probing broker (same run),
    the probes' p99 rose by a median of +62% while passes ran without rests
    (13 runs) and by -2% with them (3 runs; docs/benchmarks.md).  A rest (``time.sleep(20 us)`` lasts ~70 us
    with Linux's default timer slack) would cost a pass ~7% of its speed on
    an idle machine, hence the test first: with no task waiting there is
    nothing to yield to.  Called between batches: a batch's work (up to
    ~1.5 ms for 1000 records) is never split.
    """

    WORK = 0.001
    REST = 0.00002

    __slots__ = ("_clock", "_sleep", "_waiting", "_next")

    def __init__(self, *, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep, waiting: Callable[[], bool] | None = None) -> None:
        self._clock = clock
        self._sleep = sleep
        self._waiting = waiting if waiting is not None else _default_waiting()
        self._next = clock() + self.WORK

    def __call__(self) -> None:
        if self._clock() >= self._next:
            if self._waiting():
                self._sleep(self.REST)
            self._next = self._clock() + self.WORK


@functools.cache
def _default_waiting() -> Callable[[], bool]:
    """One :func:`tasks_waiting_for_a_cpu` per process (it keeps a file open)."""
    return tasks_waiting_for_a_cpu()


Aborted = tuple[int, int, int]
"""An aborted transaction: (abort marker offset, producer id, first offset), as in the index."""


class TxnTracker:
    """Which transactions a batch belongs to, over batches read in offset order
    (Kafka's ``CleanedTransactionMetadata``).

    ``aborted``: the aborted transactions of the partition (any order).  A
    transactional data batch of producer P belongs to P's aborted transaction
    once that transaction's first offset is at or below the batch, until P's
    abort marker; otherwise to a committed one (everything cleaned is below
    the last stable offset, so decided).
    """

    __slots__ = ("_pending", "_aborted", "_committed")

    def __init__(self, aborted: list[Aborted]) -> None:
        self._pending = sorted(aborted, key=lambda txn: txn[2], reverse=True)  # pop() gives the lowest first offset
        self._aborted: dict[int, bool] = {}  # producer id -> a batch of its aborted transaction was seen
        self._committed: set[int] = set()  # producers with a batch of a committed transaction seen

    def _advance(self, offset: int) -> None:
        pending = self._pending
        while pending and pending[-1][2] <= offset:
            _, producer_id, _ = pending.pop()
            self._aborted.setdefault(producer_id, False)

    def data_batch(self, header: BatchHeader) -> bool:
        """Note a data batch; True if it belongs to an aborted transaction."""
        self._advance(header.base_offset + header.last_offset_delta)
        if not header.is_transactional:
            return False
        if header.producer_id in self._aborted:
            self._aborted[header.producer_id] = True
            return True
        self._committed.add(header.producer_id)
        return False

    def marker_discardable(self, header: BatchHeader, marker: int | None) -> bool:
        """Note a control batch; True if no batch of the transaction it ends was seen
        (so no data of it remains and the marker may go once its horizon passed)."""
        self._advance(header.base_offset + header.last_offset_delta)
        producer_id = header.producer_id
        if marker == ControlRecordType.ABORT:
            self._committed.discard(producer_id)
            return not self._aborted.pop(producer_id, False)
        if marker == ControlRecordType.COMMIT:
            self._aborted.pop(producer_id, None)
            if producer_id in self._committed:
                self._committed.discard(producer_id)
                return False
            return True
        return False  # an unknown control type: keep it


def control_type(batch: memoryview | bytes | bytearray) -> int | None:
    """The control record type of a control batch (None if it holds no record)."""
    records = decode_records(batch)
    return control_record_type(records[0]) if records else None


Scanned = dict[int, tuple[memoryview, RecordScan]]
"""Batches already decompressed and scanned by the mapping, by base offset (reused by the rewrite)."""
SCANNED_ENTRY_OVERHEAD = 120
"""Bytes a kept scan result is counted as per record, besides the batch's records data."""


Pause = Callable[[int], None]
"""Called with the bytes of each batch read (and written): a :class:`Throttler` or :class:`Pacer`."""


def build_offset_map(read: Callable[[Span], Iterator[memoryview]], dirty: list[Span], budget_bytes: int, *,
                     pause: Pause | None = None,
                     scanned: Scanned | None = None,
                     aborted: list[Aborted] | None = None) -> tuple[dict[bytes, int], int]:
    """Map each key of the ``dirty`` segments to its latest offset; return the map and
    the offset where it ends (the end of the last segment it covers).

    Stops after the segment during which the estimated map size passed
    ``budget_bytes`` (at least one segment is always mapped).  ``scanned``
    keeps the scans (up to another ``budget_bytes``) so the rewrite of those
    batches need not decompress and scan them again.  Records of ``aborted``
    transactions are not mapped (they must not hide an older committed value).
    A batch's keys enter the map in one ``dict.update`` (later records of a key
    in the batch win, as their offsets are higher); the size of a new entry is
    estimated with the batch's mean key length.
    """
    txns = TxnTracker(aborted or [])
    pause = pause or Pacer()
    offsets: dict[bytes, int] = {}
    size = 0
    kept_bytes = 0
    end = dirty[0].base if dirty else 0
    for span in dirty:
        for batch in read(span):
            pause(len(batch))
            header = parse_batch_header(batch)
            if header.is_control:
                txns.marker_discardable(header, control_type(batch))
                continue
            if txns.data_batch(header):
                continue
            base = header.base_offset
            data = records_data(batch, header)
            scan = scan_records(header, data)
            keys = scan.keys
            if not keys:
                continue
            if scanned is not None and kept_bytes < budget_bytes:
                scanned[base] = (data, scan)
                kept_bytes += len(data) + SCANNED_ENTRY_OVERHEAD * len(keys)
            before = len(offsets)
            if None in keys:  # records without a key are not mapped (a compacted topic refuses them)
                offsets.update((key, base + delta) for key, delta in zip(keys, scan.offset_deltas) if key is not None)
                key_bytes = sum(len(key) for key in keys if key is not None)
            else:
                offsets.update(zip(keys, map(base.__add__, scan.offset_deltas)))
                key_bytes = sum(map(len, keys))
            size += (len(offsets) - before) * (MAP_ENTRY_OVERHEAD + key_bytes // len(keys))
        end = span.next_offset
        if size > budget_bytes:
            break
    return offsets, end


def clean_batch(batch: memoryview, header: BatchHeader, offsets: dict[bytes, int], now_ms: int,
                delete_retention_ms: int, stats: PassStats,
                scanned: tuple[memoryview, RecordScan] | None = None, *,
                txns: TxnTracker | None = None, keep: frozenset[int] | set[int] = frozenset()) -> memoryview | bytearray | None:
    """The batch as a cleaned log keeps it: unchanged, rebuilt with fewer records
    (or a delete horizon), or None when nothing of it remains (see the module docstring).
    ``scanned``: its records data and scan, if the mapping kept them; ``txns``
    tracks the transactions of the batches read so far (this one is noted);
    ``keep``: base offsets of batches kept even if emptied.

    Which records stay is decided for the whole batch at once: record ``i`` is
    superseded when the map holds a later offset for its key, a test run by
    ``map`` over the scan's columns, so the common outcomes -- nothing left,
    or everything -- cost no Python loop over the records.
    """
    stats.batches_read += 1
    txns = txns or TxnTracker([])
    if header.is_control:
        stats.records_read += header.records_count
        discardable = txns.marker_discardable(header, control_type(batch))
        if not discardable or header.base_offset in keep:
            stats.records_kept += header.records_count
            return batch
        if header.has_delete_horizon and header.base_timestamp <= now_ms:
            stats.markers_removed.append(header.base_offset)
            return None
        stats.records_kept += header.records_count
        if header.has_delete_horizon:
            return batch
        data = records_data(batch, header)
        scan = scan_records(header, data)
        return rebuild_batch(batch, header, data, scan, range(len(scan.keys)),
                             delete_horizon=now_ms + delete_retention_ms)
    if scanned is None:
        data = records_data(batch, header)
        scan = scan_records(header, data)
    else:
        data, scan = scanned
    keys = scan.keys
    count = len(keys)
    stats.records_read += count
    if txns.data_batch(header):
        stats.aborted_removed += count
        return rebuild_batch(batch, header, data, scan, []) if header.base_offset in keep else None
    base = header.base_offset
    # latest offset of the key (-1: not mapped) <= this record's offset: nothing later supersedes it
    kept = list(map(le, map(offsets.get, keys, repeat(-1)), map(base.__add__, scan.offset_deltas)))
    if None in keys:  # records without a key go (offsets.get(None) said -1)
        for i, key in enumerate(keys):
            if key is None:
                kept[i] = False
    tombstones = False
    if scan.tombstones:
        horizon_passed = header.has_delete_horizon and header.base_timestamp <= now_ms
        for i in scan.tombstones:
            if kept[i]:
                if horizon_passed:
                    kept[i] = False
                    stats.tombstones_removed += 1
                else:
                    tombstones = True
    kept_count = kept.count(True)
    stats.records_kept += kept_count
    if not kept_count:
        return rebuild_batch(batch, header, data, scan, []) if header.base_offset in keep else None
    needs_horizon = tombstones and not header.has_delete_horizon
    if kept_count == count and not needs_horizon:
        return batch
    return rebuild_batch(batch, header, data, scan, list(compress(range(count), kept)),
                         delete_horizon=now_ms + delete_retention_ms if needs_horizon else None)


def group_spans(spans: list[Span], max_bytes: int) -> list[list[Span]]:
    """Consecutive segments in groups whose sizes add up to at most ``max_bytes`` (each at least one)."""
    groups: list[list[Span]] = []
    total = 0
    for span in spans:
        if groups and total + span.data_bytes <= max_bytes:
            groups[-1].append(span)
            total += span.data_bytes
        else:
            groups.append([span])
            total = span.data_bytes
    return groups


ReadSegment = Callable[[Span], Iterator[memoryview]]
WriteReplacement = Callable[[int, int, Iterator[tuple[int, memoryview | bytearray]]], Replacement]


def clean_segments(read: ReadSegment, write: WriteReplacement, spans: list[Span], first_dirty: int, *,
                   segment_bytes: int, budget_bytes: int, delete_retention_ms: int, now_ms: int,
                   pause: Pause | None = None, aborted: list[Aborted] | None = None,
                   keep: frozenset[int] | set[int] = frozenset()) -> PassStats:
    """One pass over the cleanable ``spans`` (sealed, oldest first, below the last stable
    offset): ``aborted`` is the aborted-transaction index, ``keep`` the batches
    kept for the producer state (see :func:`clean_batch`).  Map the dirty ones
    (from ``first_dirty``), then write a durable replacement (a swap file, not yet
    committed) of every group up to where the map ends.  ``end_offset`` of the
    result is the next first dirty offset.  A failure while rewriting stops the
    pass: it is returned in ``error`` with the replacements written before it (a
    failure while mapping raises).  Blocking: run it in a worker thread or process.
    """
    started = time.perf_counter()
    pause = pause or Pacer()
    stats = PassStats(first_offset=spans[0].base if spans else first_dirty)
    dirty = [span for span in spans if span.next_offset > first_dirty]
    scans: Scanned = {}
    offsets, map_end = build_offset_map(read, dirty, budget_bytes, pause=pause, scanned=scans, aborted=aborted)
    stats.keys = len(offsets)
    stats.map_seconds = time.perf_counter() - started
    stats.end_offset = map_end
    to_clean = [span for span in spans if span.next_offset <= map_end]
    stats.segments_before = len(to_clean)
    txns = TxnTracker(aborted or [])
    for group in group_spans(to_clean, segment_bytes):
        rows = BatchRows.empty()

        def cleaned(group: list[Span] = group, rows: BatchRows = rows) -> Iterator[tuple[int, memoryview | bytearray]]:
            for span in group:
                for payload in read(span):
                    header = parse_batch_header(payload)
                    stats.bytes_read += len(payload)
                    kept = clean_batch(payload, header, offsets, now_ms, delete_retention_ms, stats,
                                       scans.pop(header.base_offset, None), txns=txns, keep=keep)
                    if kept is None:
                        pause(len(payload))
                        continue
                    pause(len(payload) + len(kept))
                    if kept is not payload:
                        header = parse_batch_header(kept)
                    rows.add(header)
                    stats.batches_written += 1
                    stats.bytes_written += len(kept)
                    yield header.base_offset, kept

        try:
            replacement = write(group[0].base, group[-1].next_offset, cleaned())
        except Exception as exc:  # noqa: BLE001 -- reported to the caller with what was written before it
            stats.error = exc
            break
        stats.replacements.append((replacement, rows))
        stats.segments_after += 1 if rows.bases else 0
    stats.seconds = time.perf_counter() - started
    return stats


def commit(wal: WriteAheadLog, stats: PassStats) -> None:
    """Commit the replacements of a pass on disk (:meth:`WriteAheadLog.commit_replacement`),
    in order, with one directory sync each plus one at the end (rather than two
    each: directory syncs queue behind the file system's journal, as the
    log's own fdatasyncs do).  On a failure the uncommitted swap files are
    deleted (a swap left behind would be completed by the next open, over
    segments that may have changed since), the list keeps the committed ones
    and ``error`` is set.  Blocking: run it in a worker thread."""
    committed = 0
    try:
        for replacement, _ in stats.replacements:
            wal.commit_replacement(replacement, sync=False)
            committed += 1
    except Exception as exc:  # noqa: BLE001 -- reported to the caller
        for left, _ in stats.replacements[committed:]:
            try:
                wal.backend.delete_file(left.swap_path)
            except OSError:
                pass
        del stats.replacements[committed:]
        stats.error = stats.error or exc
    if committed:
        try:
            wal.backend.sync_dir(wal.directory)
        except Exception as exc:  # noqa: BLE001 -- the renames are not durable: the next open finishes them
            stats.error = stats.error or exc


def clean_partition(wal: WriteAheadLog, spans: list[Span], first_dirty: int, *, segment_bytes: int,
                    budget_bytes: int, delete_retention_ms: int, now_ms: int,
                    pause: Pause | None = None, aborted: list[Aborted] | None = None,
                    keep: frozenset[int] | set[int] = frozenset()) -> PassStats:
    """:func:`clean_segments` on ``wal``'s own files, then :func:`commit`, in this thread.
    The result's replacements are to be installed on the event loop."""
    stats = clean_segments(
        lambda span: (entry.payload for entry in wal.iter_entries(span.base)),
        wal.write_replacement, spans, first_dirty, segment_bytes=segment_bytes, budget_bytes=budget_bytes,
        delete_retention_ms=delete_retention_ms, now_ms=now_ms, pause=pause, aborted=aborted, keep=keep)
    commit(wal, stats)
    return stats


__all__ = ["MAP_ENTRY_OVERHEAD", "Aborted", "Pacer", "PassStats", "Pause", "Span", "Throttler", "TxnTracker", "Yielder", "build_offset_map", "tasks_waiting_for_a_cpu",
           "clean_batch", "clean_partition",
           "clean_segments", "commit", "control_type", "group_spans"]
