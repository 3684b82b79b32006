"""The thread that runs the WAL hot path: ``pwritev`` + ``fdatasync`` off the event loop.

A :class:`SyncWorker` owns one persistent thread and one eventfd.  The group
committer hands it one job per commit batch -- a list of
:class:`~chronik.storage.interface.FileWrite` -- and the trio side sleeps in
``trio.lowlevel.wait_readable(eventfd)`` until the thread is done, so a commit
costs neither a ``trio.to_thread`` hop nor a thread start.  With polling on
(:meth:`SyncWorker.set_polling`, set by the ``low-latency`` commit profile;
native worker only) neither side sleeps right away: the trio side reads the
eventfd between scheduler rounds and the thread watches for the next job,
each for a bounded time, so a lone commit costs no thread wake-up either --
while a :class:`~chronik.storage.polling.PollGovernor` finds that this pays
(it does not when every core is busy).  Two implementations run the very
same job:

* :class:`NativeSyncWorker` -- a C thread (``native/chronik_wal.c`` through the
  cffi extension ``chronik._native_wal``), which never takes the GIL, so Python
  code keeps running while the disk works.  Available when the extension was
  built at install time (:data:`NATIVE_AVAILABLE`).
* :class:`ThreadSyncWorker` -- a Python ``threading.Thread``; the system calls
  release the GIL while they block.

The job (identical in both)
---------------------------
1. For each write, in list order: ``pwritev`` all its chunks at its offset,
   at most ``IOV_MAX`` buffers per call, resuming after partial writes.
2. Only if every write succeeded: ``fdatasync`` each distinct fd of the job
   exactly once, in order of first appearance.
3. Stop at the first failure.  A failed ``fdatasync`` is never retried (the
   kernel may have dropped the dirty pages, so a retry could "succeed" over
   lost data); the caller gets :class:`OSError` and must treat the files as
   failed.

Invariants
----------
* At most one job per worker at a time: the group committer serialises its
  calls, and a concurrent call raises :class:`RuntimeError`.
* When ``write_and_sync`` returns or raises -- even when cancelled -- the
  worker thread has finished with the job and holds no reference to the
  caller's buffers any more.
"""

from __future__ import annotations

import abc
import enum
import errno
import os
import queue
import select
import threading
import time
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Protocol, Sequence

import trio

from .interface import Buffer, FileWrite
from .polling import PollGovernor

try:
    from .._native_wal import ffi as _ffi, lib as _lib
except ImportError as exc:
    NATIVE_AVAILABLE = False
    #: Why ``chronik._native_wal`` could not be imported (``None`` when it could).
    NATIVE_IMPORT_ERROR: ImportError | None = exc
else:
    NATIVE_AVAILABLE = True
    NATIVE_IMPORT_ERROR = None

#: The most buffers one ``pwritev`` call accepts (1024 on Linux).
IOV_MAX = os.sysconf("SC_IOV_MAX")


class SyncWorker(Protocol):
    """A thread that performs ``write_and_sync`` jobs, one at a time."""

    #: ``"native"`` or ``"python"``: the WAL backend this worker implements.
    name: str
    #: ``fdatasync`` calls made since the worker started (failed ones included).
    sync_calls: int
    #: Seconds the worker thread spent inside those ``fdatasync`` calls.
    sync_seconds: float
    #: How long each side of a hand-off polls before sleeping (:meth:`set_polling`).
    poll_seconds: float
    #: Whether the hand-offs poll right now (set, and found to pay on this machine).
    polling: bool

    async def write_and_sync(self, writes: Sequence[FileWrite]) -> None:
        """Write every item at its offset, then ``fdatasync`` every fd touched, once.

        Returns only when all of it is durable.  Raises :class:`OSError` (the
        errno of the failing call; the message names the step, the fd and the
        offset) if any part failed, and :class:`RuntimeError` if the worker is
        closed or another call is in progress.  An empty ``writes`` returns at
        once (after a checkpoint).

        Cancellation: the wait for the worker thread is shielded, because the
        thread is reading the caller's buffers; a cancelled call still returns
        only after the job ended, then raises :class:`trio.Cancelled` -- or
        the job's :class:`OSError` if it failed, which is never swallowed.
        """
        ...

    def begin(self, writes: Sequence[FileWrite]) -> None:
        """Start a non-empty job now (the synchronous first half of ``write_and_sync``)."""
        ...

    async def finish(self, writes: Sequence[FileWrite]) -> None:
        """Wait for the job :meth:`begin` started (the second half of ``write_and_sync``)."""
        ...

    def set_polling(self, seconds: float) -> None:
        """Poll instead of sleeping, for up to ``seconds``, on both sides of each hand-off.

        The waiting trio task polls for the job's end between scheduler
        rounds, and the thread polls for the next job after each one, so a
        lone appender's commit needs no thread wake-up (two of them cost as
        much as a fast ``fdatasync`` on a virtual machine).  Costs CPU while
        commits are in flight or just ended, never when idle.  0 turns it off.
        A worker may decline (and keep sleeping) when polling would slow it
        down; ``poll_seconds`` then stays 0.
        """
        ...

    def close(self) -> None:
        """Stop and join the thread and release the eventfd; idempotent.

        Raises :class:`RuntimeError` while a ``write_and_sync`` is in progress.
        """
        ...


class FailedStep(enum.IntEnum):
    """The step of a job that failed; the values are ``CHRONIK_STEP_*`` of ``chronik_wal.h``."""

    WRITE = 1
    SYNC = 2


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What the worker thread reports about one job (``chronik_result`` in C)."""

    error: int  # 0, or the errno of the failing call
    step: FailedStep | None  # None on success
    index: int  # the failing write (SYNC: the first write to that fd); -1 on success
    sync_calls: int
    sync_ns: int
    started_ns: int = 0  # CLOCK_MONOTONIC when the thread began the job (native only)
    ended_ns: int = 0  # ... and when it ended it

    def raise_for_failure(self, writes: Sequence[FileWrite]) -> None:
        """Raise the :class:`OSError` describing this job's failure, if it failed."""
        if not self.error:
            return
        write = writes[self.index]
        if self.step is FailedStep.WRITE:
            what = f"pwritev of write #{self.index} (fd {write.fd}, offset {write.offset}, {write.nbytes} bytes)"
        else:
            what = f"fdatasync of fd {write.fd} (first written by write #{self.index}, offset {write.offset})"
        raise OSError(self.error, f"{os.strerror(self.error)}: {what} failed; the batch is not durable")


class _EventfdSyncWorker(abc.ABC):
    """Everything both workers share: checks, one job at a time, the shielded wait, errors, counters.

    A subclass owns the thread and sets ``_eventfd``: a non-blocking eventfd
    to which the thread adds 1 when a job has ended.  Its hooks all run on
    the trio thread.
    """

    name: str
    _eventfd: int

    def __init__(self) -> None:
        self._job_in_flight = False
        self._closed = False
        self.sync_calls = 0
        self.sync_seconds = 0.0
        self.poll_seconds = 0.0

    async def write_and_sync(self, writes: Sequence[FileWrite]) -> None:
        """See :meth:`SyncWorker.write_and_sync` (same contract, including cancellation)."""
        if not writes:
            self._check_idle()
            await trio.lowlevel.checkpoint()
            return
        self.begin(writes)
        await self.finish(writes)

    def _check_idle(self) -> None:
        if self._closed:
            raise RuntimeError(f"the {self.name} sync worker is closed")
        if self._job_in_flight:
            raise RuntimeError(f"the {self.name} sync worker runs one write_and_sync at a time")

    def begin(self, writes: Sequence[FileWrite]) -> None:
        """The first half of :meth:`write_and_sync`, synchronous: hand the (non-empty) job to
        the thread now.  :meth:`finish` must follow, whatever happens, before the next job.

        Raises like :meth:`write_and_sync` for a closed or busy worker or an invalid
        write, and then starts nothing.
        """
        self._check_idle()
        for write in writes:
            # A negative fd or offset is a bug upstream, not a disk failure:
            # reported as such instead of failing the log directory.
            if write.fd < 0 or write.offset < 0:
                raise ValueError(f"invalid write: fd {write.fd}, offset {write.offset}")
        self._job_in_flight = True
        try:
            self._submit(writes)
        except BaseException:
            self._job_in_flight = False
            raise

    async def finish(self, writes: Sequence[FileWrite]) -> None:
        """The second half: wait for the job :meth:`begin` started (shielded, as in
        :meth:`write_and_sync`) and raise its failure."""
        try:
            outcome = await self._wait_for_outcome()
        finally:
            self._job_in_flight = False
        self.sync_calls += outcome.sync_calls
        self.sync_seconds += outcome.sync_ns / 1e9
        outcome.raise_for_failure(writes)
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _wait_for_outcome(self) -> JobOutcome:
        """Poll (see :meth:`set_polling`), then sleep until the thread signals the eventfd;
        drain it, collect the outcome.

        Invariant: whenever this returns or raises, the job has ended.  The
        wait is shielded from cancellation.  Only a ``KeyboardInterrupt``
        (trio delivers it to the main task through any shield) or an internal
        trio error can abort it; then this blocks the event loop until the
        thread is done -- at most one ``fdatasync`` -- and re-raises that
        exception instead of reporting the job's outcome (so nothing is
        acknowledged as durable).
        """
        eventfd = self._eventfd
        drained = False
        try:
            with trio.CancelScope(shield=True):
                drained = await self._poll_eventfd()
                if not drained:
                    await trio.lowlevel.wait_readable(eventfd)
        except BaseException:
            if not drained:
                select.select([eventfd], [], [])
            raise
        finally:
            if not drained:
                os.eventfd_read(eventfd)
            outcome = self._collect()
        self._job_noticed(outcome)
        return outcome

    @property
    def polling(self) -> bool:
        return False

    def _poll_window(self) -> float:
        """How long :meth:`_poll_eventfd` may poll for the current job (0: sleep at once)."""
        return 0.0

    def _job_noticed(self, outcome: JobOutcome) -> None:
        """Called once the job's end was noticed and its outcome collected (polling's governor listens)."""

    async def _poll_eventfd(self) -> bool:
        """Read the eventfd between scheduler rounds for up to :meth:`_poll_window`; True once read.

        Polls only while no other task is runnable: then the event loop
        would sleep in ``epoll_wait``, and polling saves the wake-up from
        that sleep when the job ends.  With other tasks to run, the loop
        does not sleep and looks at the eventfd between their rounds anyway.
        False (not read) when polling is off, the time is up or other tasks
        want to run.
        """
        window = self._poll_window()
        if not window:
            return False
        eventfd = self._eventfd
        statistics = trio.lowlevel.current_statistics
        until = time.perf_counter() + window
        while True:
            try:
                os.eventfd_read(eventfd)
            except BlockingIOError:
                if time.perf_counter() >= until or statistics().tasks_runnable:
                    return False
                await trio.lowlevel.cancel_shielded_checkpoint()
            else:
                return True

    def close(self) -> None:
        """See :meth:`SyncWorker.close`."""
        if self._job_in_flight:
            raise RuntimeError(f"cannot close the {self.name} sync worker during write_and_sync")
        if not self._closed:
            self._closed = True
            self._stop()

    @abc.abstractmethod
    def _submit(self, writes: Sequence[FileWrite]) -> None:
        """Hand the job to the thread; raise (and start nothing) if it cannot be started."""

    @abc.abstractmethod
    def _collect(self) -> JobOutcome:
        """The outcome of the job that has ended; makes the worker idle again."""

    @abc.abstractmethod
    def _stop(self) -> None:
        """Join the thread and close the eventfd (called once, never during a job)."""


class NativeSyncWorker(_EventfdSyncWorker):
    """The job on a C thread (``chronik_worker`` of ``native/chronik_wal.c``).

    The C side sees raw pointers into the callers' chunks (``ffi.from_buffer``,
    no copy); the pointer arrays and buffer handles are kept in
    ``_job_buffers`` from submission until the outcome was collected, so they
    outlive the C thread's use of them.  The C thread blocks all signals and
    never touches Python objects or the GIL.  A worker that is garbage
    collected without :meth:`close` is freed by cffi (which joins its thread).
    """

    name = "native"

    def __init__(self) -> None:
        if not NATIVE_AVAILABLE:
            raise RuntimeError(f"the native WAL extension is not available: {NATIVE_IMPORT_ERROR}")
        super().__init__()
        worker = _lib.chronik_worker_new()
        if worker == _ffi.NULL:
            raise OSError(_ffi.errno, f"chronik_worker_new: {os.strerror(_ffi.errno)}")
        self._worker = _ffi.gc(worker, _lib.chronik_worker_free)
        self._eventfd = _lib.chronik_worker_eventfd(self._worker)
        self._result = _ffi.new("chronik_result *")
        self._job_buffers: list[object] = []
        self.governor: PollGovernor | None = None
        self._submitted_ns = 0  # CLOCK_MONOTONIC when the current job was handed over
        self._last_job_ns = 0  # how long the thread took for the previous job

    def set_polling(self, seconds: float) -> None:
        """See :meth:`SyncWorker.set_polling`: the C thread (``chronik_worker_set_poll``)
        and the trio side both poll -- the C thread holds no GIL while it does -- as long
        as a :class:`~chronik.storage.polling.PollGovernor` finds that it pays.

        The trio side polls only when the previous job was shorter than the
        window (a slow disk would make every poll time out in vain).
        """
        if seconds < 0:
            raise ValueError(f"polling time must be >= 0, not {seconds}")
        self.poll_seconds = seconds
        self.governor = PollGovernor() if seconds else None
        self._apply_polling()

    @property
    def polling(self) -> bool:
        """Whether the hand-offs poll now (polling is set and its governor finds it pays)."""
        return self.governor is not None and self.governor.polling

    def _apply_polling(self) -> None:
        _lib.chronik_worker_set_poll(self._worker, round(self.poll_seconds * 1e9) if self.polling else 0)

    def _poll_window(self) -> float:
        if self.polling and self._last_job_ns < self.poll_seconds * 1e9:
            return self.poll_seconds
        return 0.0

    def _job_noticed(self, outcome: JobOutcome) -> None:
        noticed_ns = time.monotonic_ns()
        job_ns = outcome.ended_ns - outcome.started_ns
        self._last_job_ns = job_ns
        if self.governor is not None and self.governor.observe(noticed_ns - self._submitted_ns - job_ns):
            self._apply_polling()

    def _submit(self, writes: Sequence[FileWrite]) -> None:
        c_writes = _ffi.new("chronik_write[]", len(writes))
        c_bufs = _ffi.new("chronik_buf[]", sum(len(write.chunks) for write in writes))
        keep_alive: list[object] = [c_writes, c_bufs]
        next_buf = 0
        for c_write, write in zip(c_writes, writes):
            c_write.fd = write.fd
            c_write.offset = write.offset
            c_write.bufs = c_bufs + next_buf
            c_write.nbufs = len(write.chunks)
            for chunk in write.chunks:
                data = _ffi.from_buffer(chunk)
                keep_alive.append(data)
                c_buf = c_bufs[next_buf]
                c_buf.base = data
                c_buf.len = len(data)
                next_buf += 1
        self._submitted_ns = time.monotonic_ns()
        rc = _lib.chronik_worker_submit(self._worker, c_writes, len(writes))
        if rc < 0:
            raise OSError(-rc, f"chronik_worker_submit: {os.strerror(-rc)}")
        self._job_buffers = keep_alive

    def _collect(self) -> JobOutcome:
        result = self._result
        rc = _lib.chronik_worker_result(self._worker, result)
        if rc < 0:  # the eventfd fired, so the C job must be done: a broken invariant
            raise RuntimeError(f"chronik_worker_result: {os.strerror(-rc)}")
        self._job_buffers = []
        return JobOutcome(
            error=result.err,
            step=FailedStep(result.step) if result.step else None,
            index=result.index,
            sync_calls=result.sync_calls,
            sync_ns=result.sync_ns,
            started_ns=result.started_ns,
            ended_ns=result.ended_ns,
        )

    def _stop(self) -> None:
        _ffi.release(self._worker)


class ThreadSyncWorker(_EventfdSyncWorker):
    """The job on a Python thread (``os.pwritev`` + ``os.fdatasync``).

    Jobs reach the thread through a queue (``None`` asks it to stop); the
    thread stores the outcome, then signals the eventfd.  An unexpected
    exception in the thread (a chunk that is not a buffer) ends that job and
    is re-raised in the caller.  The thread is a daemon so that a worker
    never closed cannot hang interpreter exit.
    """

    name = "python"

    def __init__(self) -> None:
        super().__init__()
        self._eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._jobs: queue.SimpleQueue[Sequence[FileWrite] | None] = queue.SimpleQueue()
        self._outcome: JobOutcome | BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="chronik-sync-worker", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while (writes := self._jobs.get()) is not None:
            try:
                self._outcome = _run_job(writes)
            except BaseException as exc:  # handed to the caller by _collect, never lost
                self._outcome = exc
            os.eventfd_write(self._eventfd, 1)

    def set_polling(self, seconds: float) -> None:
        """Declined (see :meth:`SyncWorker.set_polling`): polling needs the GIL on both sides,
        so the poller and the worker thread would take it from each other -- measured
        here, a lone appender's p50 went from 0.17 to 0.23 ms.  Both keep sleeping."""
        if seconds < 0:
            raise ValueError(f"polling time must be >= 0, not {seconds}")

    def _submit(self, writes: Sequence[FileWrite]) -> None:
        self._jobs.put(writes)

    def _collect(self) -> JobOutcome:
        outcome, self._outcome = self._outcome, None
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None, "the eventfd fired, so the thread stored an outcome"
        return outcome

    def _stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()
        os.close(self._eventfd)


def _run_job(writes: Sequence[FileWrite]) -> JobOutcome:
    """The job of :class:`ThreadSyncWorker`; ``run_job`` of ``chronik_wal.c`` is its C twin."""
    first_write_to: dict[int, int] = {}
    for index, write in enumerate(writes):
        try:
            _pwrite_fully(write.fd, write.offset, write.chunks)
        except OSError as exc:
            return JobOutcome(exc.errno, FailedStep.WRITE, index, sync_calls=0, sync_ns=0)
        first_write_to.setdefault(write.fd, index)
    sync_calls = sync_ns = 0
    for fd, index in first_write_to.items():
        started = time.monotonic_ns()
        try:
            os.fdatasync(fd)
        except OSError as exc:
            error = exc.errno
        else:
            error = 0
        sync_calls += 1
        sync_ns += time.monotonic_ns() - started
        if error:
            return JobOutcome(error, FailedStep.SYNC, index, sync_calls, sync_ns)
    return JobOutcome(0, None, -1, sync_calls, sync_ns)


def _pwrite_fully(fd: int, offset: int, chunks: Iterable[Buffer]) -> None:
    """Write ``chunks`` back to back at ``offset`` of ``fd``, all of them.

    At most :data:`IOV_MAX` buffers per ``pwritev``; after a partial write the
    next call resumes at the first unwritten byte (``EINTR`` is retried by
    Python itself, PEP 475).  Empty chunks are dropped, so every call asks for
    at least one byte and writing nothing means the file cannot grow (``EIO``).
    """
    pending = deque(view for view in (memoryview(chunk).cast("B") for chunk in chunks) if view.nbytes)
    while pending:
        written = os.pwritev(fd, list(islice(pending, IOV_MAX)), offset)
        if written == 0:
            raise OSError(errno.EIO, f"pwritev at offset {offset} of fd {fd} wrote nothing")
        offset += written
        while written:
            head = pending[0]
            if written < head.nbytes:
                pending[0] = head[written:]
                break
            written -= head.nbytes
            pending.popleft()
