"""Durable state of one Raft voter: the hard state file and the replicated log.

Directory ``<data_dir>``::

    hard-state          term and vote (below), replaced atomically
    hard-state.tmp      a replacement being written; deleted at open
    log/                a :class:`~chronik.storage.WriteAheadLog`; entry index = offset

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
reports durable really is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

import crc32c
import trio

from ..storage import Appended, EntryLocation, GroupCommitter, MemoryBackend, StorageBackend, StorageError, WriteAheadLog
from ..storage.files import read_file, replace_file_durably
from .messages import Entry
from .raft import DurableState

HARD_STATE_FILE = "hard-state"
LOG_DIR = "log"
_HARD_STATE = struct.Struct(">4sHQq")
_HARD_MAGIC = b"CRHS"
_HARD_VERSION = 1
_CRC = struct.Struct(">I")
HARD_STATE_BYTES = _HARD_STATE.size + _CRC.size
_ENTRY = struct.Struct(">QB")
_CONTROL = 1


class HardStateCorrupt(StorageError):
    """The hard-state file exists but cannot be trusted; the node must not start."""


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


class RaftStorage:
    """Hard state and log of one voter (see the module docstring for the formats).

    Log durability is reported through ``on_log_durable(end, last_epoch)``,
    called from the group committer's task each time a batch makes entries
    durable; hard-state durability by :meth:`write_hard_state` returning.
    """

    wal: WriteAheadLog
    recovered: DurableState
    """What :meth:`open` found: feed it to the core."""

    def __init__(self, backend: StorageBackend, directory: str) -> None:
        """Use :meth:`open`."""
        self.backend = backend
        self.directory = directory
        self.on_log_durable: Callable[[int, int], None] | None = None
        self._locations: list[EntryLocation] = []
        self._in_flight: list[_InFlight] = []

    @classmethod
    async def open(cls, committer: GroupCommitter, directory: str) -> "RaftStorage":
        """Recover hard state and log from ``directory`` (created if missing).

        Raises :class:`HardStateCorrupt` for an untrustworthy hard-state file,
        :class:`~chronik.storage.StorageError` for a log that does not decode.
        """
        backend = committer.backend
        backend.make_dirs(directory)
        names = backend.list_dir(directory)
        if HARD_STATE_FILE + ".tmp" in names:  # a replacement cut short: never reported durable
            backend.delete_file(f"{directory}/{HARD_STATE_FILE}.tmp")
        path = f"{directory}/{HARD_STATE_FILE}"
        data = read_file(backend, path)
        term, voted_for = (0, None) if data is None else decode_hard_state(data, path)
        storage = cls(backend, directory)
        storage.wal = wal = WriteAheadLog.open(committer, f"{directory}/{LOG_DIR}", on_durable=storage._wal_durable)
        entries: list[Entry] = []
        locations: list[EntryLocation] = []
        try:
            for info in wal.segments():
                for stored in wal.iter_entries(info.base_index):
                    if stored.index != len(entries):
                        raise StorageError(
                            f"{directory}/{LOG_DIR}: entry index {stored.index} where {len(entries)} was expected"
                        )
                    entries.append(decode_entry(stored.payload))
                    locations.append(stored.location)
            await _sync_segments(backend, wal)
        except BaseException:
            with trio.CancelScope(shield=True):
                await wal.aclose()
            raise
        storage.recovered = DurableState(term=term, voted_for=voted_for, entries=tuple(entries))
        storage._locations = locations
        return storage

    # -- hard state --------------------------------------------------------

    async def write_hard_state(self, term: int, voted_for: int | None) -> None:
        """Make (term, voted_for) durable, replacing the file atomically.

        Callers must not overlap calls (the node runs one writer task, so
        writes land in the order issued).  Cancellation: the write runs to
        its end (shielded); the caller just does not learn that it did.
        """
        args = (self.backend, self.directory, HARD_STATE_FILE, encode_hard_state(term, voted_for))
        with trio.CancelScope(shield=True):
            if isinstance(self.backend, MemoryBackend):
                replace_file_durably(*args)  # instantaneous, and not thread-safe
            else:
                await trio.to_thread.run_sync(replace_file_durably, *args)

    # -- log -----------------------------------------------------------------

    @property
    def log_end(self) -> int:
        return len(self._locations)

    def append(self, offset: int, entries: tuple[Entry, ...]) -> Appended:
        """Queue ``entries`` at ``offset`` (the current end); never blocks."""
        if offset != len(self._locations):
            raise StorageError(f"append at offset {offset}, but the log ends at {len(self._locations)}")
        appended: Appended | None = None
        for entry in entries:
            appended = self.wal.append(len(self._locations), encode_entry(entry))
            self._locations.append(appended.location)
        assert appended is not None
        location = appended.location
        self._in_flight.append(
            _InFlight(location.segment, location.position + location.size, len(self._locations), entries[-1].epoch)
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
        """Drop every entry at or above ``offset``, durably.

        Waits for appends in flight first (the WAL truncates only a quiet
        log).  Cancellation: shielded; the truncation completes.
        """
        with trio.CancelScope(shield=True):
            await self.wal.flush()
            if offset < len(self._locations):
                self.wal.truncate(self._locations[offset])
                del self._locations[offset:]
            self._in_flight.clear()

    async def aclose(self) -> None:
        """Flush the log and close it (see :meth:`WriteAheadLog.aclose`)."""
        await self.wal.aclose()


async def _sync_segments(backend: StorageBackend, wal: WriteAheadLog) -> None:
    """fsync every segment holding entries: recovery may have kept bytes that
    were written but never synced, and the node is about to call them durable."""
    for info in wal.segments():
        if info.last_index is None:
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
