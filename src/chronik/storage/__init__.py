"""The disk layer: WAL backends, group commit, and the segmented write-ahead log.

Layering (dependencies point down)::

    wal.WriteAheadLog        segments of CRC-framed entries, recovery, reads
    committer.GroupCommitter one per log directory: many appends -> one sync
    interface.StorageBackend native | python | memory | faulty
    sync_worker              the C or Python thread doing writev + fdatasync

Backend selection: ``native`` when the cffi extension is built, else
``python``; ``memory`` (not durable) for tests.  ``--wal-backend`` /
``CHRONIK_WAL_BACKEND`` overrides; an unknown or unavailable name raises
:class:`UnknownBackendError` with the list of usable names.
"""

from __future__ import annotations

from .committer import COMMIT_PROFILES, DEFAULT_PROFILE, CommitProfile, GroupCommitter, get_profile, open_group_committer
from .errors import CommitterClosed, CorruptEntryError, LogDirectoryFailed, StorageError, UnknownBackendError
from .interface import BackendStats, FileWrite, SegmentFile, StorageBackend
from .memory import FaultyBackend, MemoryBackend
from .sync_worker import NATIVE_AVAILABLE
from .wal import Appended, Entry, EntryLocation, RecoveryReport, WriteAheadLog

__all__ = [
    "Appended",
    "BackendStats",
    "COMMIT_PROFILES",
    "CommitProfile",
    "CommitterClosed",
    "CorruptEntryError",
    "DEFAULT_PROFILE",
    "Entry",
    "EntryLocation",
    "FaultyBackend",
    "FileWrite",
    "GroupCommitter",
    "LogDirectoryFailed",
    "MemoryBackend",
    "RecoveryReport",
    "SegmentFile",
    "StorageBackend",
    "StorageError",
    "TEST_BACKENDS",
    "UnknownBackendError",
    "WriteAheadLog",
    "available_backends",
    "create_backend",
    "default_backend_name",
    "get_profile",
    "open_group_committer",
]

_DURABLE_BACKENDS = ("native", "python")
TEST_BACKENDS = ("memory", "faulty")
"""Backends that keep everything in memory: nothing is durable, no data directory is used."""


def available_backends() -> list[str]:
    """Backend names usable in this install, best first."""
    names = [n for n in _DURABLE_BACKENDS if n != "native" or NATIVE_AVAILABLE]
    return names + list(TEST_BACKENDS)


def default_backend_name() -> str:
    return "native" if NATIVE_AVAILABLE else "python"


def create_backend(name: str | None = None) -> StorageBackend:
    """A new backend by name (None: the default).  Raises UnknownBackendError."""
    name = name or default_backend_name()
    if name not in available_backends():
        why = (
            "the native extension is not built in this install (no C compiler at install time?)"
            if name == "native"
            else "unknown backend"
        )
        raise UnknownBackendError(
            f"WAL backend {name!r} is not available: {why}; usable: {', '.join(available_backends())}"
        )
    if name == "memory":
        return MemoryBackend()
    if name == "faulty":
        return FaultyBackend()
    from .osfiles import OsBackend
    from .sync_worker import NativeSyncWorker, ThreadSyncWorker

    worker = NativeSyncWorker() if name == "native" else ThreadSyncWorker()
    return OsBackend(name, worker)
