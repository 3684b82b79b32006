"""Real files on a local file system: the ``python`` and ``native`` backends.

Both backends share every file operation in this module; they differ only in
the :class:`~chronik.storage.sync_worker.SyncWorker` that performs the hot-path
``writev`` + ``fdatasync`` off the event-loop thread: a C thread behind cffi
(``native``) or a Python thread (``python``).  Either way the trio side waits
on an eventfd, so a commit costs no ``trio.to_thread`` hop.

Metadata operations (create, preallocate, truncate, rename, delete, directory
fsync) run synchronously on the calling thread: they happen once per segment,
not once per append.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Awaitable, Callable, Sequence

from .interface import SYSCALL_STEP, BackendStats, FileWrite
from .sync_worker import SyncWorker


class OsFile:
    """An open file descriptor of a segment (see :class:`~chronik.storage.interface.SegmentFile`)."""

    __slots__ = ("_path", "_fd")

    def __init__(self, path: str, fd: int) -> None:
        self._path = path
        self._fd = fd

    @property
    def path(self) -> str:
        return self._path

    @property
    def fd(self) -> int:
        return self._fd

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def pread(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def pread_into(self, offset: int, buffer: memoryview) -> int:
        return os.preadv(self._fd, [buffer], offset)

    def preallocate(self, length: int) -> None:
        if self._allocate(length):
            os.fsync(self._fd)

    def _allocate(self, length: int) -> bool:
        """Make the file at least ``length`` bytes long (not yet durable); False if it already was."""
        if length <= self.size():
            return False
        try:
            os.posix_fallocate(self._fd, 0, length)
        except OSError as exc:
            # Some file systems (tmpfs on old kernels, some FUSE) cannot
            # allocate; fall back to extending the size with zeros.
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.ftruncate(self._fd, length)
        return True

    def truncate(self, length: int) -> None:
        os.ftruncate(self._fd, length)
        os.fsync(self._fd)

    def write_durably(self, offset: int, data: bytes, *, allocate: int = 0) -> None:
        if allocate:
            self._allocate(allocate)
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view[:SYSCALL_STEP], offset)
            view, offset = view[written:], offset + written
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OsBackend:
    """Files on the local file system, hot path delegated to ``worker``.

    ``name`` is ``"native"`` or ``"python"`` depending on the worker.
    """

    def __init__(self, name: str, worker: SyncWorker) -> None:
        self.name = name
        self._worker = worker
        self._stats = BackendStats(backend=name)

    def open_file(self, path: str, *, create: bool = False) -> OsFile:
        flags = os.O_RDWR | os.O_CLOEXEC
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        return OsFile(path, os.open(path, flags, 0o644))

    def delete_file(self, path: str) -> None:
        os.unlink(path)

    def rename_file(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def list_dir(self, directory: str) -> list[str]:
        return sorted(os.listdir(directory))

    def make_dirs(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)

    def remove_dir(self, directory: str) -> None:
        os.rmdir(directory)

    def sync_dir(self, directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def write_and_sync(self, writes: Sequence[FileWrite]) -> None:
        """Hand the batch to the worker thread and wait on its eventfd.

        Cancellation: the worker shields its wait, so a cancelled caller still
        returns only after the system calls finished.
        """
        if not writes:
            await self._worker.write_and_sync(writes)
            return
        await self.begin_write_and_sync(writes)()

    def begin_write_and_sync(self, writes: Sequence[FileWrite]) -> Callable[[], Awaitable[None]]:
        """Start :meth:`write_and_sync` of a non-empty ``writes`` now, synchronously; return the
        wait for it, which must be awaited (before any other write) whatever happens.

        The group committer uses it to start a commit from the appender's
        task, without waiting for its own task to be scheduled.  Raises, and
        starts nothing, as ``write_and_sync`` would before writing.
        """
        stats = self._stats
        started = time.perf_counter()
        self._worker.begin(writes)

        async def wait() -> None:
            try:
                await self._worker.finish(writes)
            except OSError:
                stats.failures += 1
                raise
            finally:
                stats.sync_seconds_total += time.perf_counter() - started
            stats.write_calls += 1
            stats.files_synced += len({w.fd for w in writes})
            stats.bytes_written += sum(w.nbytes for w in writes)

        return wait

    def set_polling(self, seconds: float) -> None:
        """Let the sync worker poll instead of sleeping around each commit (see
        :meth:`~chronik.storage.sync_worker.SyncWorker.set_polling`); the group
        committer sets it from its profile."""
        self._worker.set_polling(seconds)

    @property
    def polling(self) -> bool:
        """Whether the sync worker polls right now (see :mod:`chronik.storage.polling`)."""
        return self._worker.polling

    def stats(self) -> BackendStats:
        return self._stats

    async def aclose(self) -> None:
        self._worker.close()
