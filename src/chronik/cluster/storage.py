"""Durable state of one Raft voter: the hard state file, snapshots and the replicated log.

Directory ``<data_dir>``::

    hard-state                  term and vote (below), replaced atomically
    hard-state.tmp              a replacement being written; deleted at open
    snapshot-<end:020d>         a snapshot covering offsets below <end> (the newest two kept)
    snapshot-<end:020d>.tmp     one being written; deleted at open
    log/                        a :class:`~chronik.storage.WriteAheadLog`; entry index = offset

Hard state file (version 1, 26 bytes, big-endian)::

    0   4  magic      b"CRHS"
    4   2  version    (1)
    6   8  term       u64
    14  8  voted_for  i64, -1 for none
    22  4  CRC-32C of bytes 0..22

It is written whole to ``hard-state.tmp``, fsynced, renamed over
``hard-state`` and the directory fsynced: a crash leaves the old file or the
new one, never a mix.  Writes are carried out one at a time in the order
issued.

Recovery choice: a *missing* file means a node that never persisted a term
(term 0, no vote).  A file that is present but short, of another version or
failing its CRC is not something the atomic replace can produce; forgetting
the vote in it could let this node vote twice in one term (two leaders), so
:meth:`RaftStorage.open` refuses to start with :class:`HardStateCorrupt`
naming the file.  An operator who knows the node's term may delete the file
only together with the whole data directory (the node then rejoins empty).

Log entry payload (version 1)::

    0   8  epoch   u64, the term of the leader that created the entry
    8   1  flags   bit 0: control (a leader's no-op; carries no command)
    9   .  command bytes

Everything the WAL holds after its own recovery (the longest CRC-valid
prefix) is the log; it is fsynced once at open, so that what the node then
reports durable really is.  Its indices are dense from its first entry on,
which need not be 0 once snapshots dropped the segments below them.

Snapshot file (version 1, big-endian), written whole with
:func:`~chronik.storage.files.replace_file_durably` (temporary file, fsync,
rename, directory fsync)::

    0   4  magic    b"CRSN"
    4   2  version  (1)
    6   8  end      u64, the snapshot covers offsets below it
    14  8  epoch    u64, epoch of the entry at end - 1
    22  4  length   u32, of data
    26  .  data     the state machine's bytes (opaque here; the broker's is the
                    metadata image document of :func:`chronik.metadata.log.encode_image`)
    .   4  CRC-32C of every byte before it

Snapshots and the log (invariants):

* A snapshot is written (durably) before the log below it is dropped, so
  a crash between the two leaves both, never neither.
* The WAL keeps every entry from the *older* of the two kept snapshots on
  (whole segments below it are deleted, after a roll), so a newest snapshot
  that turns out damaged can fall back to the previous one plus the log.
* Installing a snapshot from the leader whose last entry the log does not
  hold (offset and epoch) discards the whole log (the WAL is truncated to
  nothing and goes on at the snapshot's end) and the older snapshots.

Recovery (:meth:`RaftStorage.open`): the newest snapshot that passes its CRC
(damaged ones are skipped with a warning, never trusted), then the log from
its end.  If the log does not reach back to that snapshot's end, it is an
error (:class:`SnapshotCorrupt`) when a newer snapshot was skipped as
damaged -- entries it covered would be lost -- and otherwise a log left
behind by an install cut short by a crash (snapshot durable, old log not
yet discarded), which is then discarded as the install would have; so is a
log whose entry at ``end - 1`` has another epoch than the snapshot says.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import Callable

import crc32c
import trio

from ..storage import (
    Appended, CommitterClosed, EntryLocation, GroupCommitter, MemoryBackend, StorageBackend, StorageError, WriteAheadLog,
)
from ..storage.files import read_file, replace_file_durably
from .messages import Entry, Snapshot
from .raft import DurableState

log = logging.getLogger(__name__)

HARD_STATE_FILE = "hard-state"
LOG_DIR = "log"
SNAPSHOT_PREFIX = "snapshot-"
SNAPSHOTS_KEPT = 2
_SNAPSHOT = struct.Struct(">4sHQQI")
_SNAPSHOT_MAGIC = b"CRSN"
_SNAPSHOT_VERSION = 1
_HARD_STATE = struct.Struct(">4sHQq")
_HARD_MAGIC = b"CRHS"
_HARD_VERSION = 1
_CRC = struct.Struct(">I")
HARD_STATE_BYTES = _HARD_STATE.size + _CRC.size
_ENTRY = struct.Struct(">QB")
_CONTROL = 1


class HardStateCorrupt(StorageError):
    """The hard-state file exists but cannot be trusted; the node must not start."""


class SnapshotCorrupt(StorageError):
    """A snapshot file fails its checks and no older one plus the log can stand in for it."""


def snapshot_name(end: int) -> str:
    return f"{SNAPSHOT_PREFIX}{end:020d}"


def encode_snapshot(snapshot: Snapshot) -> bytes:
    body = _SNAPSHOT.pack(_SNAPSHOT_MAGIC, _SNAPSHOT_VERSION, snapshot.end, snapshot.epoch, len(snapshot.data)) + snapshot.data
    return body + _CRC.pack(crc32c.crc32c(body))


def decode_snapshot(data: bytes, path: str) -> Snapshot:
    """Parse a snapshot file; raises :class:`SnapshotCorrupt` naming ``path`` and what is wrong."""
    if len(data) < _SNAPSHOT.size + _CRC.size:
        raise SnapshotCorrupt(f"{path}: {len(data)} bytes, shorter than a snapshot header")
    if crc32c.crc32c(data[: -_CRC.size]) != _CRC.unpack_from(data, len(data) - _CRC.size)[0]:
        raise SnapshotCorrupt(f"{path}: CRC-32C mismatch")
    magic, version, end, epoch, length = _SNAPSHOT.unpack_from(data)
    if magic != _SNAPSHOT_MAGIC or version != _SNAPSHOT_VERSION:
        raise SnapshotCorrupt(f"{path}: not a version-{_SNAPSHOT_VERSION} snapshot file")
    if length != len(data) - _SNAPSHOT.size - _CRC.size:
        raise SnapshotCorrupt(f"{path}: data length {length} does not match the file size")
    return Snapshot(end, epoch, bytes(data[_SNAPSHOT.size : _SNAPSHOT.size + length]))


def _snapshot_ends(names: list[str]) -> list[int]:
    ends = [int(name[len(SNAPSHOT_PREFIX) :]) for name in names
            if name.startswith(SNAPSHOT_PREFIX) and name[len(SNAPSHOT_PREFIX) :].isdigit()]
    return sorted(ends)


def encode_hard_state(term: int, voted_for: int | None) -> bytes:
    body = _HARD_STATE.pack(_HARD_MAGIC, _HARD_VERSION, term, -1 if voted_for is None else voted_for)
    return body + _CRC.pack(crc32c.crc32c(body))


def decode_hard_state(data: bytes, path: str = HARD_STATE_FILE) -> tuple[int, int | None]:
    if len(data) != HARD_STATE_BYTES:
        raise HardStateCorrupt(f"{path}: {len(data)} bytes, expected {HARD_STATE_BYTES}; refusing to start")
    body = data[: _HARD_STATE.size]
    if crc32c.crc32c(body) != _CRC.unpack_from(data, _HARD_STATE.size)[0]:
        raise HardStateCorrupt(f"{path}: CRC-32C mismatch; refusing to start rather than forget a vote")
    magic, version, term, voted_for = _HARD_STATE.unpack(body)
    if magic != _HARD_MAGIC or version != _HARD_VERSION:
        raise HardStateCorrupt(f"{path}: not a version-{_HARD_VERSION} hard-state file; refusing to start")
    return term, None if voted_for < 0 else voted_for


def encode_entry(entry: Entry) -> bytes:
    return _ENTRY.pack(entry.epoch, _CONTROL if entry.control else 0) + entry.payload


def decode_entry(payload: bytes | memoryview) -> Entry:
    if len(payload) < _ENTRY.size:
        raise StorageError(f"log entry of {len(payload)} bytes is shorter than its {_ENTRY.size}-byte header")
    epoch, flags = _ENTRY.unpack_from(payload)
    return Entry(epoch, bytes(payload[_ENTRY.size :]), bool(flags & _CONTROL))


@dataclass(slots=True)
class _InFlight:
    segment: int
    position_end: int
    offset_end: int
    epoch: int


LOG_SEGMENT_BYTES = 64 << 20
LOG_PREALLOCATE_BYTES = 1 << 20


class RaftStorage:
    """Hard state, snapshots and log of one voter (see the module docstring for the formats).

    Log durability is reported through ``on_log_durable(end, last_epoch)``,
    called from the group committer's task each time a batch makes entries
    durable; hard-state and snapshot durability by the write returning.
    Truncations, snapshot writes, installs and compactions run one at a
    time, in the order called; appends never wait for them.
    """

    wal: WriteAheadLog
    recovered: DurableState
    """What :meth:`open` found: feed it to the core."""

    def __init__(self, backend: StorageBackend, directory: str) -> None:
        """Use :meth:`open`."""
        self.backend = backend
        self.directory = directory
        self.on_log_durable: Callable[[int, int], None] | None = None
        self._first = 0  # the offset of _locations[0]: the log start
        self._locations: list[EntryLocation] = []
        self._in_flight: list[_InFlight] = []
        self._snapshot_end = 0  # end of the newest durable snapshot
        self._lock = trio.Lock()

    @classmethod
    async def open(cls, committer: GroupCommitter, directory: str) -> "RaftStorage":
        """Recover hard state, snapshot and log from ``directory`` (created if missing).

        Raises :class:`HardStateCorrupt` for an untrustworthy hard-state file,
        :class:`SnapshotCorrupt` when the log cannot be joined to a valid
        snapshot, :class:`~chronik.storage.StorageError` for a log that does
        not decode (see the module docstring for the recovery rules).
        """
        backend = committer.backend
        backend.make_dirs(directory)
        names = backend.list_dir(directory)
        for name in names:  # replacements cut short: never reported durable
            if name.endswith(".tmp") and (name.startswith(SNAPSHOT_PREFIX) or name == HARD_STATE_FILE + ".tmp"):
                backend.delete_file(f"{directory}/{name}")
        path = f"{directory}/{HARD_STATE_FILE}"
        data = read_file(backend, path)
        term, voted_for = (0, None) if data is None else decode_hard_state(data, path)
        storage = cls(backend, directory)
        storage.wal = wal = WriteAheadLog.open(
            committer, f"{directory}/{LOG_DIR}", segment_bytes=LOG_SEGMENT_BYTES,
            preallocate_bytes=LOG_PREALLOCATE_BYTES, on_durable=storage._wal_durable,
        )
        try:
            snapshot, skipped = _load_newest_snapshot(backend, directory, names)
            start, start_epoch = (snapshot.end, snapshot.epoch) if snapshot is not None else (0, 0)
            stored: list[tuple[int, Entry, EntryLocation]] = []
            for info in wal.segments():
                for item in wal.iter_entries(info.base_index):
                    if stored and item.index != stored[-1][0] + 1:
                        raise StorageError(
                            f"{directory}/{LOG_DIR}: entry index {item.index} where {stored[-1][0] + 1} was expected"
                        )
                    stored.append((item.index, decode_entry(item.payload), item.location))
            if stored:
                first, end = stored[0][0], stored[-1][0] + 1
                damaged = f" (newer snapshot {', '.join(skipped)} damaged)" if skipped else ""
                if first > start:
                    raise SnapshotCorrupt(
                        f"{directory}: the log starts at offset {first} but no valid snapshot covers the offsets "
                        f"below it{damaged}; refusing to start with entries missing"
                    )
                if start > first and (end < start or stored[start - 1 - first][1].epoch != start_epoch):
                    if skipped:
                        raise SnapshotCorrupt(
                            f"{directory}: the log does not continue snapshot-{start:020d}{damaged}; refusing to start"
                        )
                    # an install cut short: the snapshot is durable, the log it replaces was not discarded yet
                    log.warning("%s: discarding the log [%d, %d), which does not continue the snapshot at %d",
                                directory, first, end, start)
                    wal.truncate(stored[0][2])
                    stored = []
            await _sync_segments(backend, wal)
        except BaseException:
            with trio.CancelScope(shield=True):
                await wal.aclose()
            raise
        kept = [item for item in stored if item[0] >= start]
        storage.recovered = DurableState(
            term=term, voted_for=voted_for, log_start=start, start_epoch=start_epoch,
            entries=tuple(entry for _, entry, _ in kept), snapshot=snapshot,
        )
        storage._first = start
        storage._locations = [location for _, _, location in kept]
        storage._snapshot_end = start
        return storage

    # -- hard state --------------------------------------------------------

    async def write_hard_state(self, term: int, voted_for: int | None) -> None:
        """Make (term, voted_for) durable, replacing the file atomically.

        Callers must not overlap calls (the node runs one writer task, so
        writes land in the order issued).  Cancellation: the write runs to
        its end (shielded); the caller just does not learn that it did.
        """
        with trio.CancelScope(shield=True):
            await self._replace(HARD_STATE_FILE, encode_hard_state(term, voted_for))

    async def _replace(self, name: str, data: bytes) -> None:
        args = (self.backend, self.directory, name, data)
        if isinstance(self.backend, MemoryBackend):
            replace_file_durably(*args)  # instantaneous, and not thread-safe
        else:
            await trio.to_thread.run_sync(replace_file_durably, *args)

    # -- log -----------------------------------------------------------------

    @property
    def log_start(self) -> int:
        return self._first

    @property
    def log_end(self) -> int:
        return self._first + len(self._locations)

    def append(self, offset: int, entries: tuple[Entry, ...]) -> Appended:
        """Queue ``entries`` at ``offset`` (the current end); never blocks."""
        if offset != self.log_end:
            raise StorageError(f"append at offset {offset}, but the log ends at {self.log_end}")
        appended: Appended | None = None
        for entry in entries:
            appended = self.wal.append(self.log_end, encode_entry(entry))
            self._locations.append(appended.location)
        assert appended is not None
        location = appended.location
        self._in_flight.append(
            _InFlight(location.segment, location.position + location.size, self.log_end, entries[-1].epoch)
        )
        return appended

    def _wal_durable(self, segment: int, position_end: int) -> None:
        done = 0
        for item in self._in_flight:
            if (item.segment, item.position_end) > (segment, position_end):
                break
            done += 1
        if done:
            last = self._in_flight[done - 1]
            del self._in_flight[:done]
            if self.on_log_durable is not None:
                self.on_log_durable(last.offset_end, last.epoch)

    async def truncate(self, offset: int) -> None:
        """Drop every entry at or above ``offset`` (never below the log start), durably.

        Waits for appends in flight first (the WAL truncates only a quiet
        log).  Cancellation: shielded; the truncation completes.
        """
        with trio.CancelScope(shield=True):
            async with self._lock:
                await self.wal.flush()
                if offset < self._first:
                    raise StorageError(f"truncation at {offset}, below the log start {self._first}")
                if offset < self.log_end:
                    self.wal.truncate(self._locations[offset - self._first])
                    del self._locations[offset - self._first :]
                self._in_flight.clear()

    # -- snapshots -----------------------------------------------------------

    async def save_snapshot(self, snapshot: Snapshot) -> bool:
        """Write ``snapshot`` (this node's own) durably; False if a newer one is already durable.

        The log is left alone: call :meth:`compact` once the core forgot the
        entries below it.  Cancellation: shielded; the write completes.
        """
        with trio.CancelScope(shield=True):
            async with self._lock:
                if snapshot.end <= self._snapshot_end:
                    return False
                await self._write_snapshot(snapshot)
                return True

    async def compact(self, end: int) -> None:
        """Forget the log below ``end`` (covered by a durable snapshot) and delete
        the WAL segments wholly below the older kept snapshot.

        Rolls the WAL so the segment holding ``end - 1`` can go next time,
        and waits for appends in flight (a segment being written is never
        deleted).  Cancellation: shielded.
        """
        with trio.CancelScope(shield=True):
            async with self._lock:
                self._forget_below(end)
                await self._drop_segments()

    async def install_snapshot(self, snapshot: Snapshot, discard_log: bool) -> None:
        """Make ``snapshot`` (from the leader) the start of the log, durably.

        ``discard_log``: the log does not continue it; truncate it to
        nothing (it goes on at ``snapshot.end``) and delete older snapshots.
        Otherwise keep the entries from ``snapshot.end`` on.  Waits for
        appends in flight first.  Cancellation: shielded; it completes.
        """
        with trio.CancelScope(shield=True):
            async with self._lock:
                await self.wal.flush()
                await self._write_snapshot(snapshot, keep_older=not discard_log)
                if discard_log:
                    await self.wal.flush()
                    first = _first_location(self.wal)
                    if first is not None:
                        self.wal.truncate(first)
                    self._first, self._locations = snapshot.end, []
                    self._in_flight.clear()
                else:
                    self._forget_below(snapshot.end)
                await self._drop_segments()

    async def _write_snapshot(self, snapshot: Snapshot, *, keep_older: bool = True) -> None:
        await self._replace(snapshot_name(snapshot.end), encode_snapshot(snapshot))
        self._snapshot_end = snapshot.end
        ends = _snapshot_ends(self.backend.list_dir(self.directory))
        doomed = [end for end in ends if end < snapshot.end] if not keep_older else ends[:-SNAPSHOTS_KEPT]
        for end in doomed:
            self.backend.delete_file(f"{self.directory}/{snapshot_name(end)}")

    def _forget_below(self, end: int) -> None:
        if end > self._first:
            if end > self.log_end:
                raise StorageError(f"compaction to {end}, beyond the log end {self.log_end}")
            del self._locations[: end - self._first]
            self._first = end

    async def _drop_segments(self) -> None:
        """Delete the WAL segments wholly below the oldest kept snapshot."""
        ends = _snapshot_ends(self.backend.list_dir(self.directory))
        if not ends:
            return
        oldest = ends[0]
        self.wal.roll()
        try:
            await self.wal.flush()  # what was appended to the sealed segments is written before they may go
        except CommitterClosed:
            # The node is stopping (its committer was cancelled mid-commit): keep the
            # segments, a later compaction deletes them.  Raising would turn a clean
            # stop into an error from this shielded clean-up.
            return
        segments = self.wal.segments()
        for current, following in zip(segments, segments[1:]):
            if following.base_index <= oldest:
                self.wal.delete_segment(current.base_index)

    async def aclose(self) -> None:
        """Flush the log and close it (see :meth:`WriteAheadLog.aclose`)."""
        await self.wal.aclose()


def _load_newest_snapshot(backend: StorageBackend, directory: str, names: list[str]) -> tuple[Snapshot | None, list[str]]:
    """The newest snapshot that passes its checks, and the names of newer ones that did not."""
    skipped: list[str] = []
    for end in reversed(_snapshot_ends(names)):
        path = f"{directory}/{snapshot_name(end)}"
        try:
            snapshot = decode_snapshot(read_file(backend, path) or b"", path)
            if snapshot.end != end:
                raise SnapshotCorrupt(f"{path}: holds a snapshot ending at {snapshot.end}")
        except SnapshotCorrupt as exc:
            log.warning("ignoring damaged snapshot: %s", exc)
            skipped.append(snapshot_name(end))
            continue
        return snapshot, skipped
    return None, skipped


def _first_location(wal: WriteAheadLog) -> EntryLocation | None:
    for info in wal.segments():
        if info.data_bytes:  # (a sealed segment a reopen did not scan has entries but no last_index)
            for item in wal.iter_entries(info.base_index):
                return item.location
    return None


async def _sync_segments(backend: StorageBackend, wal: WriteAheadLog) -> None:
    """fsync every segment holding entries: recovery may have kept bytes that
    were written but never synced, and the node is about to call them durable."""
    for info in wal.segments():
        if not info.data_bytes:
            continue
        file = backend.open_file(info.path)
        try:
            header = file.pread(0, 16)
            if isinstance(backend, MemoryBackend):
                file.write_durably(0, header)
            else:
                await trio.to_thread.run_sync(file.write_durably, 0, header)
        finally:
            file.close()
