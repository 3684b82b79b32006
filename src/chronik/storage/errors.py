"""Errors raised by the storage layer.

Two kinds matter to callers: :class:`LogDirectoryFailed` (the disk under a log
directory can no longer be trusted: nothing more is written or acknowledged
there) and :class:`CorruptEntryError` (bytes on disk failed their checksum; the
reader gets this error, never the bytes).
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error the storage layer raises on purpose."""

    def again(self) -> "StorageError":
        """A new exception like this one, with this one as its ``__cause__``.

        For errors kept and reported to many callers (a failed directory, a
        failed commit batch): raising the kept object itself would chain each
        raiser's frames -- and everything they reference, such as a produce
        request's buffers -- onto its one traceback, growing it without bound.
        The kept object is never raised; each raise gets a fresh copy.
        """
        new = type(self).__new__(type(self), *self.args)
        new.args = self.args
        new.__dict__.update(self.__dict__)
        new.__cause__ = self
        return new


class LogDirectoryFailed(StorageError):
    """A write or fsync failed; the log directory is closed for writing for good.

    Raised by every pending and later append of the directory.  A failed
    ``fdatasync`` is never retried: after one, the kernel may have dropped the
    dirty pages, so a retry that "succeeds" would acknowledge lost data.
    """

    def __init__(self, directory: str, cause: BaseException) -> None:
        super().__init__(f"log directory {directory!r} failed: {cause}")
        self.directory = directory
        self.cause = cause
        self.__cause__ = cause  # tracebacks of the copies raised (see again()) show the OS error


class CommitterClosed(StorageError):
    """The group committer was shut down before this append became durable."""


class CorruptEntryError(StorageError):
    """An entry on disk failed its length or CRC-32C check."""

    def __init__(self, path: str, position: int, reason: str) -> None:
        super().__init__(f"corrupt WAL entry in {path} at byte {position}: {reason}")
        self.path = path
        self.position = position
        self.reason = reason


class UnknownBackendError(StorageError, ValueError):
    """An unknown or unavailable WAL backend name was asked for."""
