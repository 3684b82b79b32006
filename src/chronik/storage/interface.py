"""The narrow storage interface every WAL backend implements.

The storage layer knows files, byte positions and durability -- never Kafka
types.  Everything above it (the write-ahead log, partition logs, the
metadata log) is written against the two protocols below, so the same code
runs on the ``native`` (cffi), ``python`` and ``memory``/``faulty`` backends,
and one conformance suite (``tests/storage/test_conformance.py``) holds them
all to the same contract.

Contract shared by all backends
-------------------------------
* ``open_file`` returns a :class:`SegmentFile`; appends never go through the
  handle directly but through :meth:`StorageBackend.write_and_sync`, the one
  hot-path call, which a :class:`~chronik.storage.committer.GroupCommitter`
  issues once per commit batch.
* ``write_and_sync(writes)`` writes every :class:`FileWrite` at its offset (in
  list order), then makes each distinct file durable (``fdatasync``) once.  It
  returns only when all of that is durable, and raises :class:`OSError` if any
  part failed.  A failed call gives no guarantee about which bytes reached the
  disk; callers must treat the files as failed (never retry and report
  success -- the "fsyncgate" lesson).
* It runs the blocking system calls off the event-loop thread (a C thread or a
  worker thread) and is cancellation-safe in one direction only: if the caller
  is cancelled, the system calls still run to completion, because the kernel
  may be reading the caller's buffers.  Implementations shield their wait.
* Metadata operations (create, preallocate, truncate, delete, directory sync)
  are rare and synchronous; ``truncate`` and ``preallocate`` are durable when
  they return.
* ``pread`` returns exactly the bytes in ``[offset, offset+length)`` that were
  written before, clipped at the end of the file.  Reads are synchronous: they
  are served from the page cache in the common case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

Buffer = bytes | bytearray | memoryview


@dataclass(slots=True)
class FileWrite:
    """One contiguous write: ``chunks`` concatenated, placed at ``offset`` of ``fd``.

    ``fd`` is whatever handle the backend uses for the file (a real file
    descriptor for ``python`` and ``native``, a key for ``memory``).  The
    buffers must stay alive and unchanged until ``write_and_sync`` returns.
    """

    fd: int
    offset: int
    chunks: list[Buffer]

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.chunks)


@dataclass(slots=True)
class BackendStats:
    """Counters a backend keeps about its hot path (monotonic since open)."""

    backend: str
    write_calls: int = 0  # write_and_sync calls (= commit batches)
    files_synced: int = 0  # fdatasync calls
    bytes_written: int = 0
    sync_seconds_total: float = 0.0  # wall time inside write_and_sync
    failures: int = 0
    extra: dict[str, float] = field(default_factory=dict)


SYSCALL_STEP = 256 << 10
"""The most bytes :meth:`SegmentFile.write_durably` on real files hands to one ``pwrite`` (and a cleaner
process to one ``pread_into``, see :func:`chronik.storage.wal.read_sealed_segment`).

A kernel built without full preemption (``PREEMPT_NONE``, the default of many
server and VM kernels, this development VM's included) reschedules a process
inside a system call only at the call's end or at a voluntary point, and
copying large page-cache folios has few: a 4 MiB ``pread`` of a file cached in
large folios held a CPU for ~2 ms here, even at ``SCHED_IDLE``, and a broker
thread (or the kernel thread finishing its ``fdatasync``) woken onto that CPU
waited for it.  256 KiB keeps such a wait near 0.1 ms, for a system call more
per 256 KiB (~1 us)."""


@runtime_checkable
class SegmentFile(Protocol):
    """An open file of a log: read, size, preallocate, truncate, close."""

    @property
    def path(self) -> str: ...

    @property
    def fd(self) -> int:
        """The handle to put in :class:`FileWrite` for appends to this file."""
        ...

    def size(self) -> int:
        """The file's current size in bytes, preallocated space included."""
        ...

    def pread(self, offset: int, length: int) -> bytes: ...

    def pread_into(self, offset: int, buffer: memoryview) -> int:
        """Read up to ``len(buffer)`` bytes at ``offset`` into ``buffer`` with one system
        call; the count read (short only at the end of the file, 0 past it)."""
        ...

    def preallocate(self, length: int) -> None:
        """Make the file at least ``length`` bytes long, zero-filled, allocated on disk.

        The size change is made durable before returning, so later
        ``fdatasync`` calls need not journal a size change.
        """
        ...

    def truncate(self, length: int) -> None:
        """Cut the file to ``length`` bytes, durably."""
        ...

    def write_durably(self, offset: int, data: bytes, *, allocate: int = 0) -> None:
        """Write ``data`` at ``offset`` and fsync, on the calling thread.

        For rare, small metadata writes (segment headers, checkpoint files);
        appends go through ``write_and_sync``.  ``allocate``: first make the
        file at least that long, as :meth:`preallocate` does; the one fsync
        then makes both durable (a new segment: its allocation and its header).
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class StorageBackend(Protocol):
    """A family of files in directories, with one batched durable write call."""

    name: str

    def open_file(self, path: str, *, create: bool = False) -> SegmentFile:
        """Open ``path`` for reading and writing; ``create`` makes a new empty file
        (and fails if it exists).  ``FileNotFoundError`` if missing and not ``create``."""
        ...

    def delete_file(self, path: str) -> None: ...

    def rename_file(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` by ``src`` (callers sync the directory after)."""
        ...

    def list_dir(self, directory: str) -> list[str]:
        """Names (not paths) of the entries in ``directory``, sorted."""
        ...

    def make_dirs(self, directory: str) -> None: ...

    def remove_dir(self, directory: str) -> None:
        """Remove an empty directory (``OSError`` if it is not empty)."""
        ...

    def sync_dir(self, directory: str) -> None:
        """Make creations, renames and deletions in ``directory`` durable."""
        ...

    async def write_and_sync(self, writes: Sequence[FileWrite]) -> None:
        """Write each item at its offset, then fdatasync every file touched, once.

        Raises ``OSError`` on any failure.  Cancellation: the write runs to the
        end even if the caller is cancelled (the wait is shielded).
        """
        ...

    def stats(self) -> BackendStats: ...

    async def aclose(self) -> None:
        """Stop background threads.  No ``write_and_sync`` may be in flight."""
        ...
