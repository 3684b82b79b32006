"""Group commit: many waiting appends become one ``writev`` + one ``fdatasync``.

One :class:`GroupCommitter` serves one log directory.  Appenders call
:meth:`GroupCommitter.submit` (synchronous, never blocks: it only queues the
buffers) and later ``await`` :meth:`GroupCommitter.wait_durable` on the
returned :class:`CommitBatch`.  A single committer task takes the oldest open
batch, hands it to the backend's ``write_and_sync`` (which runs the system
calls off the event-loop thread), and when that returns sets the batch's one
event: every appender in the batch wakes at once -- one wake-up per batch, not
per record.

Batching is natural: while one batch is being written and synced, new appends
gather in the next one.  An appender that has queued everything it has may
call :meth:`GroupCommitter.start_now`: when nothing is being flushed and the
profile does not linger, the oldest batch is handed to the backend at once
from the appender's task (on backends that can start a sync synchronously),
instead of after the committer task's next turn of the scheduler -- one
scheduler round less on the latency of a lone append.  A :class:`CommitProfile` bounds a batch (appends,
bytes) and may *linger* (wait a little for more appends before starting a
sync, trading latency for fewer syncs).

Invariants
----------
* Batches are flushed strictly in submission order, one at a time, so a
  file's bytes reach the disk in append order and "batch N durable" implies
  "every batch before N durable".
* Appends to the same file inside one batch that are contiguous are merged
  into one :class:`FileWrite` (one ``pwritev``); every file in the batch gets
  one ``fdatasync``.
* After each durable batch, every :class:`CommitTarget` it wrote to is told
  the new durable end of its file (``durable_through``) *before* the waiters
  wake.
* A failed ``write_and_sync`` fails the log directory for good: that batch,
  every queued batch and every later ``submit`` raise
  :class:`~chronik.storage.errors.LogDirectoryFailed`.  Nothing is retried,
  nothing not durable is ever reported durable.
* On shutdown (:func:`open_group_committer` exiting) the queue is drained;
  if the committer task is cancelled instead, unflushed batches fail with
  :class:`~chronik.storage.errors.CommitterClosed` (not acknowledged -- they
  may or may not be on disk).
"""

from __future__ import annotations

from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable, Protocol

import trio

from .errors import CommitterClosed, LogDirectoryFailed, StorageError
from .interface import Buffer, FileWrite, StorageBackend


@dataclass(frozen=True, slots=True)
class CommitProfile:
    """Bounds of one commit batch.

    ``linger_seconds`` is how long the committer waits, after the first append
    of an idle period, for more appends before it starts the sync; 0 means
    "sync at once; whatever arrives meanwhile forms the next batch".

    ``poll_seconds`` lets a backend that supports it (``set_polling``: the
    native one) poll instead of sleeping around each commit, for up to that
    long on each side of the hand-off to its sync thread: a lone append then
    costs one ``fdatasync`` plus microseconds instead of two thread wake-ups
    more, at the price of CPU while commits are in flight (never when idle).
    The backend keeps polling only while it measurably lowers that cost
    (:mod:`chronik.storage.polling`).
    """

    name: str
    max_batch_appends: int
    max_batch_bytes: int
    linger_seconds: float
    poll_seconds: float = 0.0


COMMIT_PROFILES: dict[str, CommitProfile] = {
    p.name: p
    for p in (
        # polls up to 0.3 ms: about three fast fdatasyncs here (measured: 0.2-0.5 ms all
        # reach a lone appender's p50 of ~0.1 ms; a slower disk just polls, then sleeps)
        CommitProfile("low-latency", max_batch_appends=4096, max_batch_bytes=8 << 20, linger_seconds=0.0,
                      poll_seconds=0.0003),
        CommitProfile("balanced", max_batch_appends=16384, max_batch_bytes=32 << 20, linger_seconds=0.0005),
        CommitProfile("throughput", max_batch_appends=65536, max_batch_bytes=64 << 20, linger_seconds=0.002),
    )
}
DEFAULT_PROFILE = "low-latency"


def get_profile(name: str) -> CommitProfile:
    try:
        return COMMIT_PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown WAL profile {name!r}; choose one of {', '.join(COMMIT_PROFILES)}") from None


class CommitTarget(Protocol):
    """A file that appends go to; told how far it is durable after each batch."""

    @property
    def fd(self) -> int: ...

    def durable_through(self, end: int) -> None: ...


#: Chunks shorter than this are copied into the batch's own buffer instead of
#: being handed to the backend one by one.  Measured: copying a 16-byte entry
#: header plus a 512-byte payload costs about 45 ns, while every chunk handed
#: over separately costs about 250 ns (the native worker pins and describes
#: it); a copy reaches that cost at roughly 2 KiB.  Longer chunks stay zero-copy.
COPY_BELOW = 2 << 10


class CommitBatch:
    """The appends that will be written and synced together.

    ``done`` is set once, when the batch is durable or has failed (``error``).
    ``full`` (set when a bound is reached) exists only if the committer
    lingers; else it is None.

    Contiguous appends to one file share one :class:`FileWrite`; inside it,
    runs of chunks shorter than :data:`COPY_BELOW` are copied into one
    ``bytearray`` (appended to while the batch is open, never after), longer
    chunks are kept by reference.
    """

    __slots__ = ("writes", "_files", "appends", "nbytes", "done", "error", "full", "opened_at")

    def __init__(self, opened_at: float, lingers: bool = False) -> None:
        self.writes: list[FileWrite] = []
        # fd -> [target, the file's last write, its end offset, that write's open copy buffer or None]
        self._files: dict[int, list] = {}
        self.appends = 0
        self.nbytes = 0
        self.done = trio.Event()
        self.error: StorageError | None = None
        self.full = trio.Event() if lingers else None
        self.opened_at = opened_at

    def add(self, target: CommitTarget, offset: int, chunks: list[Buffer], nbytes: int) -> None:
        fd = target.fd
        file = self._files.get(fd)
        if file is None or file[2] != offset:
            write = FileWrite(fd, offset, [])
            self.writes.append(write)
            file = self._files[fd] = [target, write, offset, None]
        out = file[1].chunks
        copy = file[3]
        for chunk in chunks:
            if len(chunk) < COPY_BELOW:
                if copy is None:
                    copy = bytearray()
                    out.append(copy)
                copy += chunk
            else:
                out.append(chunk)
                copy = None
        file[2] = offset + nbytes
        file[3] = copy
        self.appends += 1
        self.nbytes += nbytes

    def notify_targets(self) -> None:
        for target, _, end, _ in self._files.values():
            target.durable_through(end)

    def finish(self, error: StorageError | None) -> None:
        self.error = error
        self.done.set()


@dataclass(slots=True)
class CommitterStats:
    batches: int = 0
    appends: int = 0
    bytes: int = 0
    max_batch_appends: int = 0
    started_now: int = 0  # batches :meth:`GroupCommitter.start_now` handed to the backend

    @property
    def mean_batch_appends(self) -> float:
        return self.appends / self.batches if self.batches else 0.0


class GroupCommitter:
    """The committer of one log directory (see the module docstring).

    Create it with :func:`open_group_committer`, which runs :meth:`run` in a
    nursery and drains the queue on exit.
    """

    def __init__(self, backend: StorageBackend, directory: str, profile: CommitProfile) -> None:
        self.backend = backend
        self.directory = directory
        self.profile = profile
        set_polling = getattr(backend, "set_polling", None)
        if set_polling is not None:
            set_polling(profile.poll_seconds)
        self.stats = CommitterStats()
        self._queue: deque[CommitBatch] = deque()
        self._flushing = False  # a batch is with the backend (started by run or by start_now)
        self._started: tuple[CommitBatch, Callable[[], Awaitable[None]]] | None = None  # by start_now, not yet awaited
        self._wakeup = trio.Event()
        self._closing = False
        self._failure: LogDirectoryFailed | None = None
        self.on_commit: Callable[[int, int, float], None] | None = None
        """Observer called after each durable batch with (appends, bytes, seconds), before waiters wake."""

    @property
    def failure(self) -> LogDirectoryFailed | None:
        """The error that failed this log directory, or None while healthy."""
        return self._failure

    @property
    def pending_batches(self) -> int:
        return len(self._queue)

    def submit(self, target: CommitTarget, offset: int, chunks: list[Buffer]) -> CommitBatch:
        """Queue ``chunks`` to be written at ``offset`` of ``target``'s file.

        Never blocks.  The buffers must not change until the batch is done.
        Raises :class:`LogDirectoryFailed` once the directory has failed and
        :class:`CommitterClosed` after shutdown began.
        """
        if self._failure is not None:
            raise self._failure.again()
        if self._closing:
            raise CommitterClosed(f"group committer of {self.directory!r} is closed")
        nbytes = sum(map(len, chunks))
        profile = self.profile
        queue = self._queue
        batch = queue[-1] if queue else None
        if batch is None or batch.appends >= profile.max_batch_appends or (
            batch.nbytes and batch.nbytes + nbytes > profile.max_batch_bytes
        ):
            batch = CommitBatch(trio.current_time(), lingers=profile.linger_seconds > 0)
            queue.append(batch)
            self._wakeup.set()
        batch.add(target, offset, chunks, nbytes)
        if batch.full is not None and (
            batch.appends >= profile.max_batch_appends or batch.nbytes >= profile.max_batch_bytes
        ):
            batch.full.set()
        return batch

    def start_now(self) -> None:
        """Start flushing the oldest queued batch now, if nothing is being flushed.

        Only with a profile that does not linger and a backend that can start
        a sync synchronously (``begin_write_and_sync``); otherwise, and when
        a flush is in progress, nothing happens and the committer task takes
        the batch in its turn.  Never blocks.  Call it once everything that
        should share the batch was submitted (a whole produce request).
        """
        if self._flushing or not self._queue or self._closing or self._failure is not None \
                or self.profile.linger_seconds > 0:
            return
        begin = getattr(self.backend, "begin_write_and_sync", None)
        if begin is None:
            return
        batch = self._queue.popleft()
        try:
            wait = begin(batch.writes)
        except OSError as exc:
            batch.finish(self.fail(exc))
            return
        except Exception:
            self._queue.appendleft(batch)  # not started: the committer task meets the problem in its turn
            return
        self._flushing = True
        self._started = (batch, wait)
        self.stats.started_now += 1
        self._wakeup.set()

    async def wait_durable(self, batch: CommitBatch) -> None:
        """Return once ``batch`` is durable; raise its error if it failed.

        Returns (or raises) without yielding when the batch has already
        settled: the connection writer finishes every produce answer a group
        commit made ready in one go, without a trip through the scheduler
        each (see :mod:`chronik.server.connection`).  A batch never settles
        before the first wait on it could start (the append that created it
        returns first), so no loop of appends and waits can spin without
        yielding.

        Cancellation: cancelling the wait does not withdraw the append -- it
        is still written and synced; only this caller stops waiting.
        """
        if not batch.done.is_set():
            await batch.done.wait()
        if batch.error is not None:
            raise batch.error.again()  # shared by every waiter of the batch: never raised itself

    def fail(self, cause: OSError) -> LogDirectoryFailed:
        """Mark the directory failed (e.g. ENOSPC while preallocating) and return the error
        (the kept one: raise ``.again()`` of it, see :meth:`StorageError.again`).

        Queued batches fail now; a batch being flushed finishes as it may, but
        nothing after it is written.
        """
        if self._failure is None:
            self._failure = LogDirectoryFailed(self.directory, cause)
        for batch in self._queue:
            batch.finish(self._failure)
        self._queue.clear()
        self._wakeup.set()
        return self._failure

    def close(self) -> None:
        """Stop accepting appends; the committer drains the queue and exits."""
        self._closing = True
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush batches in order until closed (and drained) or failed.

        Cancellation: a flush in progress finishes (the backend shields it);
        then every unflushed batch fails with :class:`CommitterClosed`, and so
        does every later append.
        """
        task_status.started()
        try:
            while True:
                while not self._queue and self._started is None:
                    if self._closing or self._failure is not None:
                        return
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                if self._started is not None:  # start_now handed a batch to the backend already
                    batch, wait = self._started
                    self._started = None
                    await self._flush(batch, wait)
                    continue
                batch = self._queue[0]
                if batch.full is not None and not self._closing:
                    with trio.move_on_at(batch.opened_at + self.profile.linger_seconds):
                        await batch.full.wait()
                self._queue.popleft()
                self._flushing = True
                await self._flush(batch)
        finally:
            if self._started is not None:
                # started by start_now and never awaited: the backend reads its buffers
                # until it ends, and its outcome decides the batch
                batch, wait = self._started
                self._started = None
                with trio.CancelScope(shield=True):
                    await self._flush(batch, wait)
            # Refuse appends from now on: a task still running (a request being
            # handled while the broker is cancelled) would otherwise queue a batch
            # nobody writes, and whoever waits for it -- a log's shielded close --
            # would wait forever.
            self._closing = True
            closed = CommitterClosed(f"group committer of {self.directory!r} stopped before the append was durable")
            for batch in self._queue:
                batch.finish(self._failure or closed)
            self._queue.clear()

    async def _flush(self, batch: CommitBatch, started_wait: Callable[[], Awaitable[None]] | None = None) -> None:
        """Write and sync ``batch`` (or wait for the sync :meth:`start_now` started), then settle it."""
        started = trio.current_time()
        try:
            if started_wait is not None:
                await started_wait()
            else:
                await self.backend.write_and_sync(batch.writes)
        except OSError as exc:
            batch.finish(self.fail(exc))
            return
        except BaseException:
            batch.finish(CommitterClosed(f"group committer of {self.directory!r} was cancelled mid-commit"))
            raise
        finally:
            self._flushing = False
        stats = self.stats
        stats.batches += 1
        stats.appends += batch.appends
        stats.bytes += batch.nbytes
        stats.max_batch_appends = max(stats.max_batch_appends, batch.appends)
        if self.on_commit is not None:
            self.on_commit(batch.appends, batch.nbytes, trio.current_time() - started)
        batch.notify_targets()
        batch.finish(None)


@asynccontextmanager
async def open_group_committer(
    backend: StorageBackend, directory: str, profile: CommitProfile | str = DEFAULT_PROFILE
) -> AsyncIterator[GroupCommitter]:
    """Run a :class:`GroupCommitter` for ``directory`` for the duration of the block.

    On normal exit the committer stops accepting appends, drains its queue and
    the task ends; on an exception or cancellation it is cancelled (unflushed
    appends fail with :class:`CommitterClosed`).
    """
    if isinstance(profile, str):
        profile = get_profile(profile)
    committer = GroupCommitter(backend, directory, profile)
    async with trio.open_nursery() as nursery:
        await nursery.start(committer.run)
        try:
            yield committer
        except BaseException:
            nursery.cancel_scope.cancel()
            raise
        committer.close()

