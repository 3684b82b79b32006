"""The write-ahead log: a directory of segment files of checksummed entries.

A :class:`WriteAheadLog` stores opaque payloads, each labelled with a caller
chosen, strictly increasing 64-bit ``index`` (a partition log uses the Kafka
base offset of the record batch; the WAL does not care).  It knows bytes,
positions and indices -- never Kafka types.

On-disk format (version 1, all integers big-endian)
---------------------------------------------------
Directory::

    <base_index:020d>.wal   one file per segment, named by the index of its
                            first entry (or, for an empty log, the start index)
    <base_index:020d>.wal.tmp  a segment being created; renamed to ``.wal``
                            once its header is durable, deleted by recovery
    recovery-point          where recovery may start scanning (see below)
    <base_index:020d>.wal.cleaned  replacement of sealed segments being written
                            (:meth:`WriteAheadLog.write_replacement`); deleted by recovery
    <first:020d>-<next:020d>.wal.swap  a complete, durable replacement of every
                            segment whose base index is in [first, next);
                            recovery finishes the swap (see below)

Segment file::

    0   8  magic  b"CHRNKWAL"
    8   4  format version (1)
    12  4  reserved (0)
    16  ...entries, back to back, then zero bytes up to the preallocated size

Entry::

    0   4  crc      CRC-32C (Castagnoli) of bytes 4 .. 16+length
    4   4  length   payload length in bytes
    8   8  index    caller's label, > the previous entry's index
    16  length      payload

The CRC covers the length and the index, so a zero-filled (preallocated)
region never parses as an entry: the CRC-32C of 12 zero bytes is not zero.

Recovery point file (24 bytes): ``segment_base:u64, position:u64,
last_index:i64`` followed by the CRC-32C of those 24 bytes (28 bytes in all).
Every entry before ``position`` of segment ``segment_base`` (and every earlier
segment) is known complete and durable; ``last_index`` is the index of the
newest entry before ``position``, in that segment or an earlier one (-1 if
there is none, or if it is not known).  At a segment start it is how a reopen
learns the log's last index without scanning the sealed segments: a roll
leaves the active segment empty until the next append.  Files written before
the field carried an earlier segment's index say -1 there; a reopen that finds
-1 and sealed entries before the point scans the newest sealed segment instead.

Invariants
----------
* Entries are appended only at the end of the newest ("active") segment.
  Earlier segments are *sealed*: truncated to their data size when the log
  rolls past them, before the next segment is created.
* ``durable_end`` of a segment only grows (until an explicit truncate); only
  entries below it are returned by :meth:`WriteAheadLog.read`, and every
  returned entry passed its CRC check -- garbage is never handed to a reader.
* Appends are durable in order: the group committer flushes batches in
  submission order.
* Sealed segments are replaced (compaction) only through a swap file, in the
  manner of Kafka's ``.cleaned`` -> ``.swap`` -> replace: the replacement is
  written as ``.cleaned`` and fsynced, renamed to ``.swap`` (the commit point;
  directory fsynced), the old segments are deleted (directory fsynced), and
  the swap file is renamed to ``<first>.wal`` -- or deleted when it holds no
  entry.  On open, a ``.cleaned`` file is deleted (the old segments are
  intact) and a ``.swap`` file completes its swap, so a crash at any moment
  leaves either the old segments or their replacement, never both.  A
  replacement's entries keep their indices (a subset of the old ones).
* After a crash, the log is its longest valid prefix: recovery scans from the
  recovery point, stops at the first entry that is incomplete, fails its
  CRC, or breaks index order, physically truncates the file there (so stale
  bytes can never reappear behind new entries) and deletes every later
  segment.  What it did is reported in a :class:`RecoveryReport`.

Blocking: appends never block (they queue); segment roll and preallocation
run file-system calls with an fsync on the calling thread, once per segment
or per ``preallocate_bytes`` of data.  Reads are ``pread`` calls.
"""

from __future__ import annotations

import errno
import logging
import struct
import time
from array import array
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import crc32c

from .committer import CommitBatch, GroupCommitter
from .errors import CorruptEntryError, StorageError
from .files import create_fresh, replace_file_durably, run_blocking
from .interface import SYSCALL_STEP, Buffer, SegmentFile, StorageBackend

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".wal"
SEGMENT_MAGIC = b"CHRNKWAL"
FORMAT_VERSION = 1
SEGMENT_HEADER = struct.Struct(">8sII")
ENTRY_HEADER = struct.Struct(">IIQ")
RECOVERY_POINT_FILE = "recovery-point"
_CREATING_SUFFIX = ".tmp"  # a segment being created (see _create_segment and files.replace_file_durably)
_CLEANED_SUFFIX = SEGMENT_SUFFIX + ".cleaned"  # a replacement being written
_SWAP_SUFFIX = SEGMENT_SUFFIX + ".swap"  # a durable replacement, to be swapped in
_WRITE_CHUNK = 8 << 20
_RECOVERY_POINT = struct.Struct(">QQq")
_CRC = struct.Struct(">I")  # a CRC-32C, as in entries and the recovery point
MAX_ENTRY_PAYLOAD = (1 << 31) - 1
_SCAN_CHUNK = 4 << 20


def segment_name(base_index: int) -> str:
    return f"{base_index:020d}{SEGMENT_SUFFIX}"


_LENGTH_INDEX = struct.Struct(">IQ")  # the CRC-covered part of ENTRY_HEADER


def entry_crc(length: int, index: int, payload: Buffer) -> int:
    return crc32c.crc32c(payload, crc32c.crc32c(_LENGTH_INDEX.pack(length, index)))


def encode_entry_header(index: int, payload: Buffer) -> bytes:
    length_index = _LENGTH_INDEX.pack(len(payload), index)
    return _CRC.pack(crc32c.crc32c(payload, crc32c.crc32c(length_index))) + length_index


class _InvalidEntry(Exception):
    """An entry that fails its checks (internal: becomes corruption or end of log)."""


def _decode_entry(buf: memoryview, pos: int) -> tuple[int, memoryview, int] | None:
    """Decode the entry at ``buf[pos:]``: ``(index, payload, size)``.

    Returns None if ``buf`` ends before the entry does (read more);
    raises :class:`_InvalidEntry` if the entry is not valid.
    """
    if len(buf) - pos < ENTRY_HEADER.size:
        return None
    crc, length, index = ENTRY_HEADER.unpack_from(buf, pos)
    if length > MAX_ENTRY_PAYLOAD:
        raise _InvalidEntry(f"absurd length {length}")
    end = pos + ENTRY_HEADER.size + length
    if end > len(buf):
        return None
    payload = buf[pos + ENTRY_HEADER.size : end]
    if entry_crc(length, index, payload) != crc:
        raise _InvalidEntry("CRC-32C mismatch" if crc or length or index else "zero bytes (end of data)")
    return index, payload, end - pos


class EntryLocation(NamedTuple):
    """Where an entry lives: segment (by base index), byte position, size on disk.

    A named tuple rather than a frozen dataclass: one is made per append, and
    a tuple is built in half the time.
    """

    segment: int
    position: int
    size: int


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    location: EntryLocation
    payload: memoryview


class Appended(NamedTuple):
    """An append that was queued; ``await wal.wait_durable(appended)`` for durability.

    A named tuple for the same reason as :class:`EntryLocation`.
    """

    index: int
    location: EntryLocation
    batch: CommitBatch


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening the log found and did."""

    segments: int
    entries_scanned: int
    bytes_scanned: int
    truncated_bytes: int  # non-zero bytes cut off behind the last good entry
    segments_deleted: int
    last_index: int | None
    from_recovery_point: bool
    seconds: float
    reason: str | None  # why the tail was cut, if it was

    @property
    def truncated(self) -> bool:
        return self.truncated_bytes > 0 or self.segments_deleted > 0


class Segment:
    """One segment file and its positions (see the module docstring).

    Also the commit target the group committer reports durability to.
    """

    __slots__ = ("base_index", "file", "write_end", "durable_end", "allocated", "last_index", "on_durable")

    def __init__(self, base_index: int, file: SegmentFile, data_end: int, last_index: int | None) -> None:
        self.base_index = base_index
        self.file = file
        self.write_end = data_end
        self.durable_end = data_end
        self.allocated = file.size()
        self.last_index = last_index
        self.on_durable: Callable[[int, int], None] | None = None

    @property
    def fd(self) -> int:
        return self.file.fd

    @property
    def path(self) -> str:
        return self.file.path

    def durable_through(self, end: int) -> None:
        if end > self.durable_end:
            self.durable_end = end
            if self.on_durable is not None:
                self.on_durable(self.base_index, end)


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    base_index: int
    path: str
    data_bytes: int
    last_index: int | None
    active: bool


@dataclass(frozen=True, slots=True)
class WalStats:
    segments: int
    appended_entries: int
    appended_bytes: int
    write_end: int
    durable_end: int
    last_index: int | None


class WriteAheadLog:
    """A segmented, checksummed, group-committed log of indexed entries.

    Open with :meth:`open`; its appends are committed by the directory's
    :class:`~chronik.storage.committer.GroupCommitter`.
    """

    def __init__(
        self,
        committer: GroupCommitter,
        directory: str,
        segments: list[Segment],
        *,
        segment_bytes: int,
        preallocate_bytes: int,
        recovery: RecoveryReport,
        on_durable: Callable[[int, int], None] | None = None,
    ) -> None:
        self._last_index_cache: int | None = recovery.last_index
        self._on_durable = on_durable
        for segment in segments:
            segment.on_durable = on_durable
        self.committer = committer
        self.backend = committer.backend
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.preallocate_bytes = preallocate_bytes
        self.recovery = recovery
        self._segments = segments
        self._last_batch: CommitBatch | None = None
        self._appended_entries = 0
        self._appended_bytes = 0
        self._closed = False
        self._recovery_point: tuple[int, int, int] | None = None  # as last read or written

    # -- opening and recovery ------------------------------------------------

    @classmethod
    def open(
        cls,
        committer: GroupCommitter,
        directory: str,
        *,
        segment_bytes: int = 1 << 30,
        preallocate_bytes: int = 32 << 20,
        start_index: int = 0,
        on_durable: Callable[[int, int], None] | None = None,
        sync_dir: bool = True,
    ) -> "WriteAheadLog":
        """Open (creating if needed) the log in ``directory`` and recover its tail.

        ``start_index`` names the first segment of a brand-new log.  The
        result's :attr:`recovery` says what was scanned and cut.
        ``sync_dir`` False: the first segment of a brand-new log is renamed
        into place without syncing ``directory``; the caller must sync it
        before the first append (a new partition syncs once for its segment
        and its partition file).
        ``on_durable(segment_base, end_position)`` is called (from the
        committer task, before the appenders wake) each time entries of a
        segment become durable -- also for appends nobody waits for.
        """
        if segment_bytes < SEGMENT_HEADER.size + ENTRY_HEADER.size:
            raise ValueError(f"segment_bytes {segment_bytes} is too small")
        started = time.perf_counter()
        backend = committer.backend
        backend.make_dirs(directory)
        names = backend.list_dir(directory)
        swapped = _finish_swaps(backend, directory, names)
        if swapped:
            names = backend.list_dir(directory)
        bases = sorted(
            int(name[: -len(SEGMENT_SUFFIX)])
            for name in names
            if name.endswith(SEGMENT_SUFFIX) and name[: -len(SEGMENT_SUFFIX)].isdigit()
        )
        for name in names:
            if name.endswith(SEGMENT_SUFFIX + _CREATING_SUFFIX):  # a creation cut short by a crash
                backend.delete_file(f"{directory}/{name}")
        point = _read_recovery_point(backend, directory)
        if point is not None and (point[0] not in bases or any(first <= point[0] < end for first, end in swapped)):
            point = None
        scanner = _Recovery(backend, directory)
        segments: list[Segment] = []
        deleted = 0
        for base in bases:
            path = f"{directory}/{segment_name(base)}"
            file = backend.open_file(path)
            if scanner.stopped:
                if scanner.reason is None:
                    scanner.reason = f"{scanner.stopped_at}, before its sealed size; later segments dropped"
                file.close()
                backend.delete_file(path)
                deleted += 1
                continue
            if point is not None and base < point[0]:
                # Before the recovery point: sealed, complete and durable.
                size = file.size()
                segments.append(Segment(base, file, size, None))
                continue
            if point is not None and base == point[0]:
                data_end, last = scanner.scan(file, base, point[1], point[2] if point[2] >= 0 else None)
            else:
                data_end, last = scanner.scan(file, base, SEGMENT_HEADER.size, None)
            segments.append(Segment(base, file, data_end, last))
        if scanner.stopped and deleted:
            backend.sync_dir(directory)
        if not segments:
            segments.append(_create_segment(backend, directory, start_index, min(preallocate_bytes, segment_bytes),
                                            sync_dir=sync_dir))
        last_index = next((s.last_index for s in reversed(segments) if s.last_index is not None), None)
        if last_index is None and point is not None and point[2] >= 0:
            last_index = point[2]  # every scanned segment is empty: the newest entry is before the point
        if last_index is None:
            last_index = _newest_index(segments)  # a point from an older release, or none: scan if needed
        report = RecoveryReport(
            segments=len(segments),
            entries_scanned=scanner.entries,
            bytes_scanned=scanner.bytes,
            truncated_bytes=scanner.truncated_bytes,
            segments_deleted=deleted,
            last_index=last_index,
            from_recovery_point=point is not None,
            seconds=time.perf_counter() - started,
            reason=scanner.reason,
        )
        wal = cls(
            committer,
            directory,
            segments,
            segment_bytes=segment_bytes,
            preallocate_bytes=preallocate_bytes,
            recovery=report,
            on_durable=on_durable,
        )
        wal._recovery_point = point
        return wal

    # -- appending -------------------------------------------------------

    @property
    def last_index(self) -> int | None:
        """Index of the newest entry appended (durable or not), None if empty."""
        return self._last_index_cache

    @property
    def active_segment(self) -> Segment:
        return self._segments[-1]

    def append(self, index: int, payload: Buffer) -> Appended:
        """Queue one entry; never blocks.  ``index`` must exceed :attr:`last_index`.

        The payload buffer must stay unchanged until the append is durable.
        Raises :class:`~chronik.storage.errors.LogDirectoryFailed` if the
        directory has failed.
        """
        # The hot path of every produce: kept to a few attribute reads, one
        # header pack, one CRC and one submit (see bench/fsync.py).
        if self._closed:
            raise StorageError(f"write-ahead log {self.directory!r} is closed")
        last = self._last_index_cache
        if last is not None and index <= last:
            raise ValueError(f"index {index} is not above the last index {last}")
        segment = self._segments[-1]
        if index < segment.base_index:
            raise ValueError(f"index {index} is below the active segment's base {segment.base_index}")
        length = len(payload)
        if length > MAX_ENTRY_PAYLOAD:
            raise ValueError(f"entry of {length} bytes is too large")
        committer = self.committer
        if committer.failure is not None:
            raise committer.failure.again()
        size = ENTRY_HEADER.size + length
        end = segment.write_end + size
        if end > segment.allocated or end > self.segment_bytes:
            segment = self._make_room(segment, index, size)
        position = segment.write_end
        batch = committer.submit(segment, position, [encode_entry_header(index, payload), payload])
        segment.write_end = position + size
        segment.last_index = index
        self._last_index_cache = index
        self._last_batch = batch
        self._appended_entries += 1
        self._appended_bytes += size
        return Appended(index, EntryLocation(segment.base_index, position, size), batch)

    def _make_room(self, segment: Segment, index: int, size: int) -> Segment:
        """The segment an entry of ``size`` bytes goes to: rolled and/or preallocated as needed."""
        try:
            if segment.last_index is not None and segment.write_end + size > self.segment_bytes:
                segment = self._roll(index)
            self._ensure_allocated(segment, segment.write_end + size)
        except OSError as exc:  # a full or failing disk: the directory is done
            raise self.committer.fail(exc).again() from exc
        return segment

    async def wait_durable(self, appended: Appended) -> None:
        """Return once ``appended`` (and everything before it) is durable.

        Raises :class:`~chronik.storage.errors.LogDirectoryFailed` if the
        commit failed.  Cancellation: the append stays queued and will still
        be written; only the wait ends.
        """
        await self.committer.wait_durable(appended.batch)

    async def append_durable(self, index: int, payload: Buffer) -> EntryLocation:
        appended = self.append(index, payload)
        await self.wait_durable(appended)
        return appended.location

    async def flush(self) -> None:
        """Wait until every entry appended so far is durable."""
        if self._last_batch is not None:
            await self.committer.wait_durable(self._last_batch)

    def _ensure_allocated(self, segment: Segment, end: int) -> None:
        """Make the segment at least ``end`` bytes long, ``preallocate_bytes`` more if there is room.

        On a nearly full disk (ENOSPC) only ``end`` is asked for: preallocation
        is an optimisation and must not fail an append that fits.
        """
        if end <= segment.allocated:
            return
        target = max(end, min(segment.allocated + self.preallocate_bytes, max(self.segment_bytes, end)))
        _preallocate_or_less(segment.file.preallocate, target, end)
        segment.allocated = segment.file.size()

    def _roll(self, next_index: int) -> Segment:
        """Seal the active segment and start a new one named ``next_index``."""
        old = self._segments[-1]
        if old.allocated > old.write_end:
            old.file.truncate(old.write_end)
            old.allocated = old.write_end
        new = _create_segment(
            self.backend, self.directory, next_index, min(self.preallocate_bytes, self.segment_bytes)
        )
        new.on_durable = self._on_durable
        self._segments.append(new)
        self._write_recovery_point()
        return new

    def roll(self) -> None:
        """Start a new segment now (e.g. for time-based rolling); no-op if empty."""
        if self._segments[-1].last_index is not None:
            assert self._last_index_cache is not None
            self._roll(self._last_index_cache + 1)

    def restart_at(self, index: int) -> None:
        """Delete every segment and start an empty log whose first segment is named
        ``index``, durably (a follower that fell behind its leader's log start).
        A crash in between leaves no segment, which opens as an empty log.
        Nothing may be in flight."""
        if any(s.durable_end < s.write_end for s in self._segments):
            raise StorageError("cannot restart a write-ahead log while appends are in flight")
        for segment in self._segments:
            segment.file.close()
            self.backend.delete_file(segment.path)
        self.backend.sync_dir(self.directory)
        new = _create_segment(self.backend, self.directory, index, min(self.preallocate_bytes, self.segment_bytes))
        new.on_durable = self._on_durable
        self._segments = [new]
        self._last_index_cache = None
        self._last_batch = None
        self._write_recovery_point()
        self.backend.sync_dir(self.directory)

    def _write_recovery_point(self) -> None:
        """Record where recovery must start: the first segment not fully durable
        (from its start), or else the durable end of the active segment.
        Skipped (no fsyncs) when that is what the file already says."""
        point = self._current_recovery_point()
        if point != self._recovery_point:
            _write_recovery_point(self.backend, self.directory, point)
            self._recovery_point = point

    def _empty_without_recovery_point(self) -> bool:
        """A log that never held an entry and has no recovery point: opening it scans
        nothing either way, so closing it need not write one (a new topic's
        partitions: hundreds of them made every shutdown seconds longer)."""
        return (self._recovery_point is None and len(self._segments) == 1
                and self._segments[0].write_end == SEGMENT_HEADER.size)

    def _current_recovery_point(self) -> tuple[int, int, int]:
        for n, segment in enumerate(self._segments):
            if segment.durable_end < segment.write_end:
                before = _newest_index(self._segments[:n], scan=False)
                point = (segment.base_index, SEGMENT_HEADER.size, -1 if before is None else before)
                break
        else:
            # Everything appended is durable, so the newest entry is the log's last.
            active = self._segments[-1]
            last = self._last_index_cache
            point = (active.base_index, active.durable_end, -1 if last is None else last)
        return point

    # -- reading ---------------------------------------------------------

    def segments(self) -> list[SegmentInfo]:
        last = self._segments[-1]
        return [
            SegmentInfo(s.base_index, s.path, s.write_end - SEGMENT_HEADER.size, s.last_index, s is last)
            for s in self._segments
        ]

    def _segment(self, base_index: int) -> Segment:
        for segment in self._segments:
            if segment.base_index == base_index:
                return segment
        raise KeyError(f"no segment {base_index} in {self.directory!r}")

    def durable_end(self, segment_base: int) -> int:
        return self._segment(segment_base).durable_end

    def read(self, segment_base: int, position: int, max_bytes: int) -> list[Entry]:
        """Durable entries of one segment from ``position``, about ``max_bytes`` of them.

        Returns at least one whole entry if any is durable at ``position``
        (even if larger than ``max_bytes``), never a partial one.  Payloads
        are views into one read buffer, not copies.  Raises
        :class:`CorruptEntryError` if an entry fails its checks.
        """
        segment = self._segment(segment_base)
        end = segment.durable_end
        if position >= end:
            return []
        want = min(end - position, max(max_bytes, ENTRY_HEADER.size))
        buf = memoryview(segment.file.pread(position, want))
        entries: list[Entry] = []
        pos = 0
        while pos < len(buf):
            try:
                decoded = _decode_entry(buf, pos)
            except _InvalidEntry as exc:
                raise CorruptEntryError(segment.path, position + pos, str(exc)) from None
            if decoded is None:
                if entries:
                    break
                # The first entry is larger than max_bytes: read it whole.
                length = ENTRY_HEADER.unpack_from(buf, pos)[1] if len(buf) - pos >= ENTRY_HEADER.size else 0
                whole = ENTRY_HEADER.size + length
                if position + pos + whole > end:
                    raise CorruptEntryError(segment.path, position + pos, "entry runs past the durable end")
                buf = memoryview(segment.file.pread(position + pos, whole))
                position, pos = position + pos, 0
                continue
            index, payload, size = decoded
            entries.append(Entry(index, EntryLocation(segment_base, position + pos, size), payload))
            pos += size
        return entries

    def iter_entries(self, segment_base: int, position: int = SEGMENT_HEADER.size) -> Iterator[Entry]:
        """Every durable entry of one segment from ``position`` (for index rebuilds)."""
        while True:
            entries = self.read(segment_base, position, _SCAN_CHUNK)
            if not entries:
                return
            yield from entries
            last = entries[-1].location
            position = last.position + last.size

    # -- truncation and deletion -------------------------------------------

    def truncate(self, location: EntryLocation) -> None:
        """Remove the entry at ``location`` and every entry after it, durably.

        Only allowed when nothing appended is still waiting to be written.
        """
        if any(s.durable_end < s.write_end for s in self._segments):
            raise StorageError("cannot truncate a write-ahead log while appends are in flight")
        keep = [s for s in self._segments if s.base_index <= location.segment]
        if keep[-1].base_index != location.segment:
            raise KeyError(f"no segment {location.segment} in {self.directory!r}")
        for segment in self._segments[len(keep) :]:
            segment.file.close()
            self.backend.delete_file(segment.path)
        self._segments = keep
        segment = keep[-1]
        if location.position < SEGMENT_HEADER.size or location.position > segment.write_end:
            raise ValueError(f"position {location.position} is outside segment {location.segment}")
        segment.file.truncate(location.position)
        segment.file.preallocate(segment.allocated)  # zeros, so stale bytes never reappear
        segment.write_end = segment.durable_end = location.position
        segment.last_index = None
        for entry in self.iter_entries(segment.base_index):
            segment.last_index = entry.index
        self._last_index_cache = _newest_index(self._segments)
        self._write_recovery_point()
        self.backend.sync_dir(self.directory)

    def write_replacement(self, first: int, end: int, entries: Iterator[tuple[int, Buffer]]) -> "Replacement":
        """Write the replacement of the sealed segments whose base index is in [first, end)
        and make it durable as a swap file (the commit point); return what
        :meth:`commit_replacement` and :meth:`switch_to_replacement` need.

        ``entries`` are ``(index, payload)`` in increasing index order, within
        [first, end).  Safe to call from a worker thread (or, as the module
        function :func:`write_replacement`, another process) while the event
        loop appends and reads: it touches only new files (the caller keeps
        retention and truncation off those segments until it calls
        :meth:`switch_to_replacement`).
        """
        return write_replacement(self.backend, self.directory, first, end, entries)

    def commit_replacement(self, replacement: "Replacement", *, sync: bool = True) -> None:
        """Finish a swap on disk: delete the segments a durable replacement replaces,
        sync the directory, then rename it into place (or delete it when it holds
        no entry) and sync the directory again.

        ``sync=False`` leaves that last sync to the caller, who commits several
        replacements in a row and syncs once at the end: each commit's first
        sync also makes the previous rename durable, and a crash before it
        leaves a swap file whose old segments are gone, which the next open
        completes (as after a crash between the two syncs).

        Blocking (directory fsyncs): call it from the worker thread that ran
        :meth:`write_replacement`.  Reads keep working meanwhile -- they use the
        old segments' open files -- until :meth:`switch_to_replacement`, which
        the caller must run next, on the event loop.
        """
        first, end = replacement.first, replacement.end
        old = [s for s in self._segments if first <= s.base_index < end]
        if not old or old[-1] is self._segments[-1]:
            raise StorageError(f"cannot replace segments [{first}, {end}) of {self.directory!r}: not sealed")
        for segment in old:
            self.backend.delete_file(segment.path)
        self.backend.sync_dir(self.directory)
        if replacement.indexes:
            self.backend.rename_file(replacement.swap_path, f"{self.directory}/{segment_name(first)}")
        else:
            self.backend.delete_file(replacement.swap_path)
        if sync:
            self.backend.sync_dir(self.directory)

    def switch_to_replacement(self, replacement: "Replacement") -> list[SegmentFile]:
        """Serve reads from a committed replacement; return the old segments' files, still
        open, for the caller to close once nothing reads them -- off the event loop
        (:func:`~chronik.storage.files.close_files`): the last close of a deleted
        segment frees its blocks and cached pages, ~2.3 ms per 8 MiB segment on
        the development VM, which would stall every connection of a broker.
        Never blocks on fsync (one open)."""
        first, end = replacement.first, replacement.end
        old = [s for s in self._segments if first <= s.base_index < end]
        new: list[Segment] = []
        if replacement.indexes:
            path = f"{self.directory}/{segment_name(first)}"
            segment = Segment(first, self.backend.open_file(path), replacement.size, replacement.indexes[-1])
            segment.on_durable = self._on_durable
            new.append(segment)
        at = self._segments.index(old[0])
        self._segments[at:at + len(old)] = new
        return [segment.file for segment in old]

    def delete_segment(self, base_index: int) -> None:
        """Delete a sealed segment (retention).  The active segment cannot be deleted."""
        segment = self._segment(base_index)
        if segment is self._segments[-1]:
            raise StorageError("cannot delete the active segment")
        self._segments.remove(segment)
        segment.file.close()
        self.backend.delete_file(segment.path)
        self.backend.sync_dir(self.directory)

    # -- lifecycle ---------------------------------------------------------

    def stats(self) -> WalStats:
        active = self._segments[-1]
        return WalStats(
            segments=len(self._segments),
            appended_entries=self._appended_entries,
            appended_bytes=self._appended_bytes,
            write_end=active.write_end,
            durable_end=active.durable_end,
            last_index=self._last_index_cache,
        )

    async def aclose(self) -> None:
        """Wait for every append to be durable, record the recovery point, close files.

        If the directory failed, or the recovery point cannot be written (no
        space left), files are closed without it: the next open recovers by
        scanning from the previous one.
        Cancellation: files are closed regardless; the recovery point is
        written only if every append was durable.
        """
        if self._closed:
            return
        self._closed = True
        try:
            try:
                await self.flush()
            except StorageError:
                return  # failed directory: the next open recovers by scanning
            if self.committer.failure is None and not self._empty_without_recovery_point():
                try:
                    # Off the event loop (a few fsyncs): a shutdown closes many logs at once.
                    await run_blocking(self.backend, self._write_recovery_point)
                except OSError:
                    pass  # an optimisation only (see above); a full disk must not fail the shutdown
        finally:
            self.close_files()

    def close_files(self) -> None:
        """Close the log's files now, without waiting or writing a recovery point.

        For a log given up on (e.g. found unreadable after :meth:`open`): no
        append may be in flight.  The next open recovers by scanning.
        Idempotent; also called by :meth:`aclose`.
        """
        self._closed = True
        for segment in self._segments:
            segment.file.close()


@dataclass(frozen=True, slots=True)
class Replacement:
    """A durable replacement of the sealed segments in [first, end) (see :meth:`WriteAheadLog.write_replacement`).

    Entry ``i`` of the new segment has index ``indexes[i]`` and lies at byte
    ``positions[i]``, ``sizes[i]`` bytes long: columns of machine integers
    (``array('q')``), which a cleaner process sends back and the owner of the
    log indexes without an object per entry.
    """

    first: int
    end: int
    swap_path: str
    indexes: array[int]
    positions: array[int]
    sizes: array[int]
    size: int


def write_replacement(backend: StorageBackend, directory: str, first: int, end: int,
                      entries: Iterator[tuple[int, Buffer]], *, sync: bool = True) -> Replacement:
    """:meth:`WriteAheadLog.write_replacement` on the files alone (for a cleaner process).

    ``sync=False`` leaves the directory sync that makes the swap file's name
    durable to the caller, who writes several and syncs once: until then the
    replacement is not committable (a crash leaves it a ``.cleaned`` file or a
    complete ``.swap``, either of which the next open handles)."""
    cleaned = f"{directory}/{segment_name(first)}{_CLEANED_SUFFIX[len(SEGMENT_SUFFIX):]}"
    file = create_fresh(backend, cleaned)
    indexes, positions, sizes = array("q"), array("q"), array("q")
    try:
        chunk = bytearray(SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0))
        written = 0
        last = first - 1
        for index, payload in entries:
            if not first <= index < end or index <= last:
                raise ValueError(f"replacement entry {index} is out of order or outside [{first}, {end})")
            last = index
            indexes.append(index)
            positions.append(written + len(chunk))
            sizes.append(ENTRY_HEADER.size + len(payload))
            chunk += encode_entry_header(index, payload)
            chunk += payload
            if len(chunk) >= _WRITE_CHUNK:
                file.write_durably(written, bytes(chunk))
                written += len(chunk)
                chunk = bytearray()
        if chunk:
            file.write_durably(written, bytes(chunk))
            written += len(chunk)
    finally:
        file.close()
    swap = f"{directory}/{first:020d}-{end:020d}{_SWAP_SUFFIX}"
    backend.rename_file(cleaned, swap)
    if sync:
        backend.sync_dir(directory)
    return Replacement(first, end, swap, indexes, positions, sizes, written)


def discard_replacements(backend: StorageBackend, directory: str) -> list[str]:
    """Delete the replacements an abandoned writer left in ``directory`` (``.cleaned`` files and
    ``.swap`` files never committed), durably; return their names.  Only while no
    :meth:`WriteAheadLog.commit_replacement` is under way there: the old segments are
    intact until one starts, so nothing is lost."""
    names = [name for name in backend.list_dir(directory) if name.endswith((_CLEANED_SUFFIX, _SWAP_SUFFIX))]
    for name in names:
        backend.delete_file(f"{directory}/{name}")
    if names:
        backend.sync_dir(directory)
    return names


def read_sealed_segment(backend: StorageBackend, directory: str, base_index: int) -> Iterator[tuple[int, memoryview]]:
    """``(index, payload)`` of every entry of a sealed segment file, read by name (for a
    cleaner process; the owner of the log keeps it from being deleted meanwhile).

    Raises :class:`CorruptEntryError` if an entry fails its checks.
    """
    file = backend.open_file(f"{directory}/{segment_name(base_index)}")
    try:
        yield from _sealed_entries(file)
    finally:
        file.close()


def _sealed_entries(file: SegmentFile) -> Iterator[tuple[int, memoryview]]:
    """``(index, payload)`` of every entry of an open sealed segment (see :func:`read_sealed_segment`)."""
    size = file.size()
    position = SEGMENT_HEADER.size
    while position < size:
        head = memoryview(file.pread(position, ENTRY_HEADER.size))
        buf = _pread_in_steps(file, position, min(size - position, max(_SCAN_CHUNK, _Recovery._needed(head, 0))))
        pos = 0
        while True:
            try:
                decoded = _decode_entry(buf, pos)
            except _InvalidEntry as exc:
                raise CorruptEntryError(file.path, position + pos, str(exc)) from None
            if decoded is None:
                break
            index, payload, entry_size = decoded
            yield index, payload
            pos += entry_size
        if pos == 0:
            raise CorruptEntryError(file.path, position, "entry runs past the end of the sealed segment")
        position += pos


def _pread_in_steps(file: SegmentFile, offset: int, length: int) -> memoryview:
    """Up to ``length`` bytes at ``offset`` (fewer at the end of the file), read with one
    system call per :data:`~chronik.storage.interface.SYSCALL_STEP` bytes into one buffer:
    a cleaner process, even at idle priority, then never holds a CPU in the kernel
    for long (see there)."""
    buf = memoryview(bytearray(length))
    filled = 0
    while filled < length:
        count = file.pread_into(offset + filled, buf[filled : filled + SYSCALL_STEP])
        if count == 0:
            break
        filled += count
    return buf[:filled]


def _finish_swaps(backend: StorageBackend, directory: str, names: list[str]) -> list[tuple[int, int]]:
    """Recovery: drop unfinished replacements, complete durable ones; return the ranges swapped."""
    swapped = []
    for name in names:
        if name.endswith(_CLEANED_SUFFIX):
            backend.delete_file(f"{directory}/{name}")
            log.info("%s: discarded %s, a segment replacement interrupted before it was durable", directory, name)
    for name in sorted(names):
        if not name.endswith(_SWAP_SUFFIX):
            continue
        first_text, _, end_text = name[: -len(_SWAP_SUFFIX)].partition("-")
        if not (first_text.isdigit() and end_text.isdigit()):
            continue
        first, end = int(first_text), int(end_text)
        for other in names:
            if other.endswith(SEGMENT_SUFFIX) and other[: -len(SEGMENT_SUFFIX)].isdigit() \
                    and first <= int(other[: -len(SEGMENT_SUFFIX)]) < end:
                backend.delete_file(f"{directory}/{other}")
        backend.sync_dir(directory)
        swap = backend.open_file(f"{directory}/{name}")
        try:
            empty = swap.size() <= SEGMENT_HEADER.size
        finally:
            swap.close()
        if empty:
            backend.delete_file(f"{directory}/{name}")
        else:
            backend.rename_file(f"{directory}/{name}", f"{directory}/{segment_name(first)}")
        backend.sync_dir(directory)
        log.info("%s: finished the interrupted swap of segments [%d, %d)", directory, first, end)
        swapped.append((first, end))
    return swapped


def _newest_index(segments: list[Segment], *, scan: bool = True) -> int | None:
    """The index of the newest entry in ``segments``, None if they hold none.

    A sealed segment that a reopen did not scan (it lies before the recovery
    point) has ``last_index`` None although it holds entries: with ``scan`` it
    is read once (blocking ``pread`` calls, up to a segment's size) and its
    last index kept; without, None is returned for "not known".
    """
    for segment in reversed(segments):
        if segment.last_index is not None:
            return segment.last_index
        if segment.write_end > SEGMENT_HEADER.size:
            if not scan:
                return None
            segment.last_index = _scan_last_index(segment)
            return segment.last_index
    return None


def _scan_last_index(segment: Segment) -> int | None:
    """The index of the last entry of a sealed segment, read from its start."""
    last: int | None = None
    for last, _ in _sealed_entries(segment.file):
        pass
    return last


def _create_segment(backend: StorageBackend, directory: str, base_index: int, preallocate: int, *,
                    sync_dir: bool = True) -> Segment:
    """Create a segment atomically: built and synced as ``<name>.tmp``, then renamed
    (and the directory synced, unless ``sync_dir`` is False: the caller's job then).

    So a crash mid-creation never leaves a segment file without its header
    (:meth:`WriteAheadLog.open` deletes the leftover temporary file).
    """
    name = segment_name(base_index)
    header = SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0)
    minimum = SEGMENT_HEADER.size + ENTRY_HEADER.size

    def create(size: int) -> None:
        replace_file_durably(backend, directory, name, header, preallocate=size, sync_dir=sync_dir)

    _preallocate_or_less(create, max(preallocate, minimum), minimum)
    return Segment(base_index, backend.open_file(f"{directory}/{name}"), SEGMENT_HEADER.size, None)


def _preallocate_or_less(allocate: Callable[[int], None], size: int, minimum: int) -> None:
    """``allocate(size)``; if the disk has not that much room (ENOSPC), ``allocate(minimum)``.

    So preallocation never turns a nearly full disk into a failed directory:
    only an append that does not fit at all fails.
    """
    try:
        allocate(size)
    except OSError as exc:
        if exc.errno != errno.ENOSPC or size <= minimum:
            raise
        allocate(minimum)


class _Recovery:
    """Scans segment tails in order; remembers where and why the log ends."""

    def __init__(self, backend: StorageBackend, directory: str) -> None:
        self.backend = backend
        self.directory = directory
        self.stopped = False
        self.entries = 0
        self.bytes = 0
        self.truncated_bytes = 0
        self.reason: str | None = None
        self.stopped_at = ""

    def scan(self, file: SegmentFile, base: int, start: int, last_index: int | None) -> tuple[int, int | None]:
        """Validate entries from ``start``; cut the file at the first bad one.

        Returns ``(data_end, last_index)``.  Sets :attr:`stopped` when the
        segment ended before its sealed size (all later segments must go).
        """
        size = file.size()
        header = file.pread(0, SEGMENT_HEADER.size)
        if len(header) < SEGMENT_HEADER.size or SEGMENT_HEADER.unpack(header)[:2] != (SEGMENT_MAGIC, FORMAT_VERSION):
            raise CorruptEntryError(file.path, 0, "not a Chronik WAL segment (bad magic or version)")
        pos = start
        minimum = base if last_index is None else last_index + 1
        reason: str | None = None
        buf = memoryview(b"")
        buf_start = pos
        while True:
            rel = pos - buf_start
            try:
                decoded = _decode_entry(buf, rel)
            except _InvalidEntry as exc:
                reason = str(exc)
                break
            if decoded is None:
                if buf_start + len(buf) >= size:
                    if rel < len(buf):
                        reason = "incomplete entry at the end of the file"
                    break
                buf = memoryview(file.pread(pos, max(_SCAN_CHUNK, self._needed(buf, rel))))
                buf_start = pos
                continue
            index, _, entry_size = decoded
            if index < minimum:
                reason = f"index {index} out of order (expected >= {minimum})"
                break
            minimum = index + 1
            last_index = index
            self.entries += 1
            self.bytes += entry_size
            pos += entry_size
        if pos < size:
            tail = file.pread(pos, size - pos)
            garbage = len(tail.rstrip(b"\0"))
            if garbage or reason not in (None, "zero bytes (end of data)"):
                self.truncated_bytes += garbage
                self.reason = reason
                file.truncate(pos)
                file.preallocate(size)
            self.stopped = True
            self.stopped_at = f"{file.path} ends at byte {pos} of {size}"
        return pos, last_index

    @staticmethod
    def _needed(buf: memoryview, rel: int) -> int:
        if len(buf) - rel >= ENTRY_HEADER.size:
            return ENTRY_HEADER.size + ENTRY_HEADER.unpack_from(buf, rel)[1]
        return ENTRY_HEADER.size


def _read_recovery_point(backend: StorageBackend, directory: str) -> tuple[int, int, int] | None:
    try:
        file = backend.open_file(f"{directory}/{RECOVERY_POINT_FILE}")
    except FileNotFoundError:
        return None
    try:
        raw = file.pread(0, _RECOVERY_POINT.size + _CRC.size)
    finally:
        file.close()
    if len(raw) != _RECOVERY_POINT.size + _CRC.size:
        return None
    body = raw[: _RECOVERY_POINT.size]
    if crc32c.crc32c(body) != _CRC.unpack_from(raw, _RECOVERY_POINT.size)[0]:
        return None
    return _RECOVERY_POINT.unpack(body)


def _write_recovery_point(backend: StorageBackend, directory: str, point: tuple[int, int, int]) -> None:
    body = _RECOVERY_POINT.pack(*point)
    replace_file_durably(backend, directory, RECOVERY_POINT_FILE, body + _CRC.pack(crc32c.crc32c(body)))
