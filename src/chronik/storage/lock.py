"""The data directory's lock: one process at a time may use a data directory.

Two brokers (or a broker and an offline tool) on one directory would each
believe they own its logs and overwrite each other's acknowledged records.
So, as Kafka does with its ``.lock`` file, whoever opens a data directory
first takes an exclusive ``fcntl`` lock on ``<data_dir>/.lock`` -- before
reading anything else in it -- and holds it until it is done.

The lock file holds the holder's pid (text, one line), written after the
lock is taken; it is only informative (the lock, not the file's existence,
is what counts: a file left behind by a killed process locks nothing, the
kernel drops the lock with the process).

``fcntl`` (POSIX record) locks belong to the process: another process is
refused, the same process is not, and closing *any* descriptor of the file
in the holding process releases the lock -- so nothing but
:class:`DataDirLock` opens the lock file.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .errors import StorageError

LOCK_FILE = ".lock"


class DataDirectoryError(StorageError):
    """The data directory cannot be used: not a directory, not creatable, or locked.

    The message is one line for the operator.
    """


class DataDirectoryLocked(DataDirectoryError):
    """Another process holds the data directory's lock."""

    def __init__(self, directory: str, holder: int | None) -> None:
        who = f"process {holder}" if holder is not None else "another process"
        super().__init__(f"data directory {directory} is in use by {who} (it holds {directory}/{LOCK_FILE});"
                         " stop it first, or give this node a data directory of its own")
        self.directory = directory
        self.holder = holder


def ensure_data_dir(directory: str | os.PathLike[str]) -> str:
    """Create ``directory`` (and its parents) if missing; return it as a string.

    Raises :class:`DataDirectoryError` with a one-line message when the path
    is a file, or cannot be created.
    """
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise DataDirectoryError(f"data directory {path} is not a directory (a file is in the way)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a parent is a file
        raise DataDirectoryError(f"cannot create data directory {path}: a parent of it is not a directory") from None
    except OSError as exc:
        raise DataDirectoryError(f"cannot create data directory {path}: {exc.strerror or exc}") from None
    return str(path)


class DataDirLock:
    """The exclusive lock on one data directory, held from :meth:`acquire` to :meth:`release`.

    Use as a context manager::

        with DataDirLock(data_dir):
            ...  # read and write the directory

    :meth:`acquire` creates the directory if needed (see :func:`ensure_data_dir`)
    and never blocks: if another process holds the lock it raises
    :class:`DataDirectoryLocked` naming that process's pid.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = str(directory)
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self) -> "DataDirLock":
        if self.held:
            return self
        directory = ensure_data_dir(self.directory)
        path = f"{directory}/{LOCK_FILE}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise DataDirectoryError(f"cannot open the lock file {path}: {exc.strerror or exc}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise DataDirectoryLocked(directory, holder) from None
            raise DataDirectoryError(f"cannot lock {path}: {exc.strerror or exc}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is informative only; a full disk must not stop the lock
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the file releases it).  Idempotent."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> "DataDirLock":
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
