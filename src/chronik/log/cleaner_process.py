"""Cleaning passes in a child process, so their CPU work never competes for the broker's GIL.

:class:`CleanerProcess` runs ``python -m chronik.log.cleaner_process
<broker pid>`` once and reuses it for every pass of one cleaner worker:
starting it (importing :mod:`.cleaner`, the storage layer and trio; the
packages :mod:`chronik.log` and :mod:`chronik.protocol` load the rest of
their names lazily) costs about 0.15 s of CPU, which a child per pass would
spend again each time, on a machine where the broker's own threads want the
cores.  The child reads the sealed segments by
name and writes the durable swap files
(:func:`chronik.log.cleaner.clean_segments`); committing them and switching
reads over stays with the broker, which owns the log.

Protocol, on the child's stdin and stdout: frames of a 4-byte big-endian
length and a pickle.  A request is ``(directory, spans, first_dirty,
params)``; the reply is ``("ok", PassStats)`` (the pass ran; a failure
while rewriting is in ``PassStats.error``, as words) or ``("error",
traceback text)`` (it raised).

Lifetime: a thread of the child reads the requests, so it sees its stdin
close at once, even in the middle of a pass, and then exits the process on
the spot (``os._exit``), and it checks that its parent is still the broker
before each batch.  The broker's death closes that pipe (no other process
holds its write end) and reparents the child, so a cleaner never outlives a
killed broker: a swap file written after the restarted broker opened the
log would be completed by its next open, over segments that changed since.  (A
``PR_SET_PDEATHSIG`` would follow the *thread* that started the child, and
the broker's worker threads come and go.)  It also exits if its parent is
already gone when it starts.

Scheduling (:func:`_lower_priority`, applied by the broker as it starts
the child): ``SCHED_IDLE``, in the broker's session.  A broker thread that
wakes up preempts an idle-class task at once, and the cleaner gets a CPU
only when no other task of the session wants it (a weight of 3 against
1024: a small share of a saturated CPU, not none).  Measured with
``bench/cleaner.py`` on a quiet machine, probes overlapping a busy cleaner:
p50 0.31 ms, p99 2.3 ms (cleaner off: 0.40 and 1.7 ms).  A session of its
own instead (whose CPU autogroup, at nice 19, keeps the cleaner's time from
being charged to the broker's group), with ``SCHED_BATCH`` or
``SCHED_IDLE``, doubled that p50 to 0.7-0.9 ms and gave a p99 of 6-7 ms: a
waking task does not preempt another group's at once, so a broker thread
waited for the cleaner's slice to end.

``SCHED_IDLE`` is not enough on its own on a kernel without full preemption
(``PREEMPT_NONE``): the pass also rests a moment after every millisecond of
work (:class:`~chronik.log.cleaner.Yielder`), so a wake-up that does not
preempt it waits at most that long rather than a tick, and reads its segments
in system calls of at most 256 KiB
(:data:`~chronik.storage.interface.SYSCALL_STEP`), so it never holds a CPU in
the kernel for long.
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import traceback
from typing import IO, Any

from .cleaner import PassStats, Span, Throttler, Yielder, clean_segments

NICE = 19
_FRAME = struct.Struct(">I")


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_FRAME.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame, or None at the end of the stream (a frame cut short counts as the end)."""
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    payload = stream.read(size)
    return payload if len(payload) == size else None


class CleanerProcess:
    """One child process that runs cleaning passes, one at a time, started at the first.

    Blocking: call :meth:`run` from a worker thread (never two at once);
    :meth:`close` when the cleaner stops.  A child that died (killed,
    crashed) is replaced at the next pass.
    """

    def __init__(self) -> None:
        self._child: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        # stderr is the broker's (a crash's traceback lands in its log output); a process group of its
        # own, so the terminal's Ctrl-C is the broker's to handle, in the broker's session (see above)
        child = subprocess.Popen([sys.executable, "-m", "chronik.log.cleaner_process", str(os.getpid())],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, process_group=0)
        _lower_priority(child.pid)
        return child

    def run(self, directory: str, spans: list[Span], first_dirty: int, **params: Any) -> PassStats:
        """:func:`~chronik.log.cleaner.clean_segments` over ``directory``'s segment files in the
        child; the replacements are written, not committed.

        :raises RuntimeError: the pass raised, or the child died (the next call starts another).
        """
        with self._lock:
            child = self._child
            if child is not None and child.poll() is not None:  # died since the last pass
                self._discard(child)
                child = None
            if child is None:
                child = self._child = self._start()
            assert child.stdin is not None and child.stdout is not None
            try:
                _write_frame(child.stdin, pickle.dumps((directory, spans, first_dirty, params)))
                reply = _read_frame(child.stdout)
            except OSError:  # BrokenPipeError: it died before reading the request
                reply = None
            if reply is None:
                status = self._discard(child)
                raise RuntimeError(f"cleaner process exited with status {status} during a pass")
            outcome, result = pickle.loads(reply)
            if outcome != "ok":
                raise RuntimeError(f"cleaner process: {result.strip().splitlines()[-1]}\n{result}")
            stats: PassStats = result
            return stats

    def abort(self) -> None:
        """Kill the child, from any thread: a pass in flight fails at once (its :meth:`run`
        raises; the swap files it wrote are left, see :func:`chronik.storage.wal.discard_replacements`),
        a pass already answered stands, and the next pass starts another child."""
        child = self._child
        if child is not None:
            child.kill()

    def close(self) -> None:
        """Stop the child (it exits when its stdin closes); never waits for long. Idempotent."""
        if self._child is not None:
            self._discard(self._child)

    def _discard(self, child: subprocess.Popen[bytes]) -> int:
        """Close the pipes to ``child``, wait for it to exit (killed if it takes over 5 s); its status."""
        if self._child is child:
            self._child = None
        for pipe in (child.stdin, child.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:  # BrokenPipeError flushing a dead child's stdin
                pass
        try:
            return child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()


def _lower_priority(pid: int) -> None:
    """Make process ``pid`` (a child just started) yield the CPU to the broker: ``SCHED_IDLE``
    (and nice 19, which counts where that policy is missing).  Applied by the broker right
    after starting it, so it covers the child's start-up too (importing the
    package, about 0.15 s of CPU); threads the child starts later
    inherit it."""
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):  # not Linux
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, pid, NICE)
    except OSError:
        pass


def _read_requests(requests: queue.SimpleQueue[bytes]) -> None:
    while True:
        frame = _read_frame(sys.stdin.buffer)
        if frame is None:  # the broker closed the pipe or died: stop now, even mid-pass
            os._exit(0)
        requests.put(frame)


def _main() -> None:
    broker = int(sys.argv[1])

    def check_broker() -> None:
        if os.getppid() != broker:  # reparented: the broker is gone (its pipe's end of file is on its way)
            os._exit(1)

    check_broker()
    from ..storage import create_backend
    from ..storage.wal import read_sealed_segment, write_replacement

    backend = create_backend("python")
    requests: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    threading.Thread(target=_read_requests, args=(requests,), daemon=True).start()
    out = sys.stdout.buffer
    while True:
        directory, spans, first_dirty, params = pickle.loads(requests.get())
        try:
            throttler = Throttler(params.pop("io_max_bytes_per_second", sys.float_info.max))
            rest = Yielder()

            def pause(nbytes: int) -> None:
                check_broker()  # before each batch, besides the reader thread's end of file
                throttler(nbytes)
                rest()

            stats = clean_segments(
                lambda span: (payload for _, payload in read_sealed_segment(backend, directory, span.base)),
                lambda first, end, entries: write_replacement(backend, directory, first, end, entries, sync=False),
                spans, first_dirty, pause=pause, **params)
            if stats.replacements:
                backend.sync_dir(directory)  # once for all the swap files: now they are committable
            if stats.error is not None:  # the exception's class may not unpickle in the parent: keep its words
                stats.error = RuntimeError(f"{type(stats.error).__name__}: {stats.error}")
            reply = pickle.dumps(("ok", stats))
        except Exception:  # noqa: BLE001 -- reported to the broker, which marks the partition uncleanable
            reply = pickle.dumps(("error", traceback.format_exc()))
        try:
            _write_frame(out, reply)
        except OSError:  # BrokenPipeError: the broker stopped or died while this pass finished
            os._exit(0)  # quietly, as the reader thread does at end of file: no traceback in its log


if __name__ == "__main__":
    _main()
