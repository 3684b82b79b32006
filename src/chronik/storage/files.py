"""Small files replaced atomically and durably (metadata next to the logs).

``replace_file_durably`` writes ``<name>.tmp``, fsyncs it, renames it over
``<name>`` and fsyncs the directory: after a crash the file holds either the
old or the new content, never a mix, and a stale ``.tmp`` is simply
overwritten next time.

``run_blocking`` is how the layers above call such synchronous, fsyncing
backend work without stalling the event loop.
"""

from __future__ import annotations

from typing import Callable, Iterable, TypeVar

import trio

from .interface import SegmentFile, StorageBackend

T = TypeVar("T")


async def run_blocking(backend: StorageBackend, work: Callable[..., T], *args: object) -> T:
    """``work(*args)`` -- blocking calls on ``backend`` -- in a worker thread, so the
    event loop keeps serving meanwhile; inline for the in-memory backends.

    In memory the work is instantaneous and the backend is not thread-safe;
    running it inline also keeps a whole cluster deterministic under trio's
    ``MockClock`` (a worker thread would let the clock jump while it runs).
    Cancellation: once started, the work runs to its end and its result is
    returned (a worker thread is never abandoned).
    """
    from .memory import MemoryBackend

    if isinstance(backend, MemoryBackend):
        result = work(*args)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return result
    return await trio.to_thread.run_sync(work, *args)


def close_files(files: Iterable[SegmentFile]) -> None:
    """Close every file of ``files`` (blocking: the last close of a deleted file frees its
    blocks; see :meth:`~chronik.storage.wal.WriteAheadLog.switch_to_replacement`)."""
    for file in files:
        file.close()


def create_fresh(backend: StorageBackend, path: str) -> SegmentFile:
    """Create ``path`` empty, deleting a leftover of an interrupted earlier attempt first."""
    try:
        backend.delete_file(path)
    except FileNotFoundError:
        pass
    return backend.open_file(path, create=True)


def replace_file_durably(
    backend: StorageBackend, directory: str, name: str, data: bytes, *, preallocate: int = 0, sync_dir: bool = True
) -> None:
    """Atomically replace ``directory/name`` with ``data``, durably (see the module docstring).

    ``preallocate``: the file is first made that long (zero-filled, allocated,
    see :meth:`~chronik.storage.interface.SegmentFile.preallocate`), so
    ``data`` is followed by zeros up to that size; one fsync covers both.
    ``sync_dir`` False leaves the directory sync to the caller, who must do it
    before relying on the new content (files renamed into one directory
    together need one sync, not one each); until then a crash may leave the
    old content (or none), never a mix.
    """
    tmp = f"{directory}/{name}.tmp"
    file = create_fresh(backend, tmp)
    try:
        file.write_durably(0, data, allocate=preallocate)
    finally:
        file.close()
    backend.rename_file(tmp, f"{directory}/{name}")
    if sync_dir:
        backend.sync_dir(directory)


def read_file(backend: StorageBackend, path: str) -> bytes | None:
    """The whole content of ``path``, or None if it does not exist."""
    try:
        file = backend.open_file(path)
    except FileNotFoundError:
        return None
    try:
        return file.pread(0, file.size())
    finally:
        file.close()
