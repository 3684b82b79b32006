"""In-memory backends: ``memory`` for tests, and ``faulty`` for fault injection.

Files live in a dict of bytearrays keyed by normalised path.  Nothing survives
the process: ``memory`` is for tests and throw-away brokers only.

:class:`FaultyBackend` models what a real disk can do to a log:

* ``fail_syncs(n, errno)`` -- the next ``n`` ``write_and_sync`` calls write
  their bytes but fail the sync with ``OSError(errno)`` (EIO by default);
* ``capacity_bytes`` -- a write that would grow the total stored size past it
  fails with ``ENOSPC`` before writing anything of that file;
* ``sync_delay`` -- seconds each ``write_and_sync`` takes (a trio sleep), so a
  test can crash the "machine" while a commit is in flight;
* ``crash(tear=...)`` -- returns a new backend holding what a machine would
  find after power loss: every byte written since the file's last successful
  sync is rolled back, except, with ``tear=True``, a random prefix of the
  most recent unsynced write (a torn write).  Metadata operations (create,
  truncate, preallocate, rename, delete) are durable at once, as they are
  followed by fsyncs in the real backends.

The undo log of unsynced writes is what makes ``crash`` exact: each write
remembers the bytes it overwrote (and the file size before it), and a sync
forgets them.
"""

from __future__ import annotations

import errno
import posixpath
import random
from dataclasses import dataclass, field
from typing import Sequence

import trio

from .interface import BackendStats, FileWrite


@dataclass(slots=True)
class _UnsyncedWrite:
    seq: int  # backend-wide order of writes, to find the newest one
    offset: int
    old_bytes: bytes  # what the write overwrote inside the old size
    old_size: int
    new_bytes: bytes


@dataclass(slots=True)
class _MemoryFileState:
    data: bytearray = field(default_factory=bytearray)
    unsynced: list[_UnsyncedWrite] = field(default_factory=list)


class MemoryFile:
    """A handle on one in-memory file; ``fd`` is a key into the backend."""

    __slots__ = ("_backend", "_path", "_fd", "_closed")

    def __init__(self, backend: "MemoryBackend", path: str, fd: int) -> None:
        self._backend = backend
        self._path = path
        self._fd = fd
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    @property
    def fd(self) -> int:
        return self._fd

    def _state(self) -> _MemoryFileState:
        if self._closed:
            raise OSError(errno.EBADF, "file is closed", self._path)
        return self._backend._file_state(self._path)

    def size(self) -> int:
        return len(self._state().data)

    def pread(self, offset: int, length: int) -> bytes:
        return bytes(self._state().data[offset : offset + length])

    def pread_into(self, offset: int, buffer: memoryview) -> int:
        data = self._state().data[offset : offset + len(buffer)]
        buffer[: len(data)] = data
        return len(data)

    def preallocate(self, length: int) -> None:
        data = self._state().data
        if length > len(data):
            self._backend._reserve(length - len(data))
            data.extend(bytes(length - len(data)))
        self._state().unsynced.clear()  # the real backends fsync here

    def truncate(self, length: int) -> None:
        state = self._state()
        if length < len(state.data):
            del state.data[length:]
        else:
            self._backend._reserve(length - len(state.data))
            state.data.extend(bytes(length - len(state.data)))
        state.unsynced.clear()

    def write_durably(self, offset: int, data: bytes, *, allocate: int = 0) -> None:
        state = self._state()
        if allocate > len(state.data):
            self._backend._reserve(allocate - len(state.data))
            state.data.extend(bytes(allocate - len(state.data)))
        end = offset + len(data)
        if end > len(state.data):
            self._backend._reserve(end - len(state.data))
            state.data.extend(bytes(end - len(state.data)))
        state.data[offset:end] = data
        state.unsynced.clear()  # the real backends fsync here

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._backend._handles.pop(self._fd, None)


class MemoryBackend:
    """Files in memory; ``write_and_sync`` runs inline on the trio thread."""

    name = "memory"

    def __init__(self) -> None:
        self._files: dict[str, _MemoryFileState] = {}
        self._dirs: set[str] = {"/"}
        self._handles: dict[int, str] = {}
        self._next_fd = 3
        self._write_seq = 0
        self._stats = BackendStats(backend=self.name)

    # -- helpers ----------------------------------------------------------

    @staticmethod
    def _norm(path: str) -> str:
        return posixpath.normpath(posixpath.join("/", path))

    def _file_state(self, path: str) -> _MemoryFileState:
        try:
            return self._files[path]
        except KeyError:
            raise FileNotFoundError(errno.ENOENT, "no such file", path) from None

    def _reserve(self, extra_bytes: int) -> None:
        """Hook for capacity limits; the plain memory backend never runs out."""

    def _stored_bytes(self) -> int:
        return sum(len(f.data) for f in self._files.values())

    # -- StorageBackend ---------------------------------------------------

    def open_file(self, path: str, *, create: bool = False) -> MemoryFile:
        path = self._norm(path)
        parent = posixpath.dirname(path)
        if parent not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", parent)
        if create:
            if path in self._files:
                raise FileExistsError(errno.EEXIST, "file exists", path)
            self._files[path] = _MemoryFileState()
        elif path not in self._files:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        fd = self._next_fd
        self._next_fd += 1
        self._handles[fd] = path
        return MemoryFile(self, path, fd)

    def delete_file(self, path: str) -> None:
        path = self._norm(path)
        self._file_state(path)
        del self._files[path]

    def rename_file(self, src: str, dst: str) -> None:
        src, dst = self._norm(src), self._norm(dst)
        self._files[dst] = self._file_state(src)
        del self._files[src]
        for fd, p in self._handles.items():
            if p == src:
                self._handles[fd] = dst

    def list_dir(self, directory: str) -> list[str]:
        directory = self._norm(directory)
        if directory not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", directory)
        names = {posixpath.basename(p) for p in self._files if posixpath.dirname(p) == directory}
        names |= {posixpath.basename(d) for d in self._dirs if d != "/" and posixpath.dirname(d) == directory}
        return sorted(names)

    def make_dirs(self, directory: str) -> None:
        directory = self._norm(directory)
        while directory not in self._dirs:
            self._dirs.add(directory)
            directory = posixpath.dirname(directory)

    def remove_dir(self, directory: str) -> None:
        directory = self._norm(directory)
        if self.list_dir(directory):
            raise OSError(errno.ENOTEMPTY, "directory not empty", directory)
        self._dirs.discard(directory)

    def sync_dir(self, directory: str) -> None:
        if self._norm(directory) not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", directory)

    async def write_and_sync(self, writes: Sequence[FileWrite]) -> None:
        """Apply every write, then "sync" each file touched (forget its undo log)."""
        await trio.lowlevel.checkpoint()
        stats = self._stats
        try:
            touched = [self._apply(w) for w in writes]
            await self._before_sync()
        except OSError:
            stats.failures += 1
            raise
        for state in touched:
            state.unsynced.clear()
        stats.write_calls += 1
        stats.files_synced += len({id(s) for s in touched})
        stats.bytes_written += sum(w.nbytes for w in writes)

    def _apply(self, write: FileWrite) -> _MemoryFileState:
        try:
            path = self._handles[write.fd]
        except KeyError:
            raise OSError(errno.EBADF, "bad file handle", str(write.fd)) from None
        state = self._file_state(path)
        payload = b"".join(write.chunks)
        data = state.data
        old_size = len(data)
        end = write.offset + len(payload)
        if end > old_size:
            self._reserve(end - old_size)
            data.extend(bytes(end - old_size))
        old_bytes = bytes(data[write.offset : min(end, old_size)])
        data[write.offset : end] = payload
        self._write_seq += 1
        state.unsynced.append(_UnsyncedWrite(self._write_seq, write.offset, old_bytes, old_size, payload))
        return state

    async def _before_sync(self) -> None:
        """Hook between the writes and the sync of a batch (fault injection)."""

    def stats(self) -> BackendStats:
        return self._stats

    async def aclose(self) -> None:
        self._handles.clear()

    # -- inspection for tests ------------------------------------------------

    def read_whole(self, path: str) -> bytes:
        return bytes(self._file_state(self._norm(path)).data)

    def overwrite(self, path: str, offset: int, data: bytes) -> None:
        """Change bytes behind the log's back (corruption tests); durable at once."""
        state = self._file_state(self._norm(path))
        if offset + len(data) > len(state.data):
            state.data.extend(bytes(offset + len(data) - len(state.data)))
        state.data[offset : offset + len(data)] = data


class FaultyBackend(MemoryBackend):
    """A memory backend that can fail syncs, fill up, be slow, and crash."""

    name = "faulty"

    def __init__(self, *, capacity_bytes: int | None = None, sync_delay: float = 0.0) -> None:
        super().__init__()
        self.capacity_bytes = capacity_bytes
        self.sync_delay = sync_delay
        self._sync_failures_left = 0
        self._sync_errno = errno.EIO

    def fail_syncs(self, count: int = 1, error: int = errno.EIO) -> None:
        """Make the next ``count`` batches fail at the sync step with ``error``."""
        self._sync_failures_left = count
        self._sync_errno = error

    def _reserve(self, extra_bytes: int) -> None:
        if self.capacity_bytes is not None and self._stored_bytes() + extra_bytes > self.capacity_bytes:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")

    async def _before_sync(self) -> None:
        if self.sync_delay:
            await trio.sleep(self.sync_delay)
        if self._sync_failures_left:
            self._sync_failures_left -= 1
            raise OSError(self._sync_errno, f"{errno.errorcode[self._sync_errno]} on fdatasync (injected)")

    def crash(self, *, tear: bool = False, rng: random.Random | None = None) -> "FaultyBackend":
        """What a restarted machine finds: unsynced writes undone (one maybe torn).

        Returns a new backend (same capacity, no delay, no pending failures);
        this one should no longer be used.
        """
        rng = rng or random.Random()
        survivor = FaultyBackend(capacity_bytes=self.capacity_bytes)
        survivor._dirs = set(self._dirs)
        newest: tuple[_MemoryFileState, _UnsyncedWrite] | None = None
        for path, state in self._files.items():
            copy = _MemoryFileState(bytearray(state.data))
            for write in reversed(state.unsynced):
                _undo(copy.data, write)
            if state.unsynced and (newest is None or state.unsynced[-1].seq > newest[1].seq):
                newest = (copy, state.unsynced[-1])
            survivor._files[path] = copy
        if tear and newest is not None:
            copy, write = newest
            kept = rng.randrange(0, len(write.new_bytes) + 1)
            end = write.offset + kept
            if end > len(copy.data):
                copy.data.extend(bytes(end - len(copy.data)))
            copy.data[write.offset : end] = write.new_bytes[:kept]
        return survivor


def _undo(data: bytearray, write: _UnsyncedWrite) -> None:
    data[write.offset : write.offset + len(write.old_bytes)] = write.old_bytes
    if len(data) > write.old_size:
        del data[write.old_size :]
