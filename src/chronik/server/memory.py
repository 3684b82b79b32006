"""Giving freed memory back to the operating system after many connections closed.

Every object of a closed connection is freed by reference counting at once
(nothing waits for the cyclic collector: ``tests/server/test_connection.py``).
But freed is not returned.  Measured with ``bench/connections.py`` (5,000 idle
connections, then all closed): the interpreter's allocated blocks went back
to their count before the connections came, and the resident size stayed
about 30 MiB (the connections' 6 KiB each) higher, because

* CPython's free lists keep freed tuples, lists, dicts and contexts for
  reuse -- some 6,000 of the connections' objects.  Each sits in one of the
  16 KiB pools and 1 MiB arenas the connections filled, and pymalloc unmaps
  an arena only when every pool in it is empty: these few thousand blocks
  kept about 400 pools, and with them nearly every arena, mapped.  Only a
  collection of the oldest generation clears the free lists (a documented
  side effect of :func:`gc.collect`); after a connection storm it finds no
  garbage -- it runs for the free lists;
* glibc keeps freed heap memory (its top, and free pages inside it) until
  ``malloc_trim``.

:func:`release_freed_memory` does both.  What it cannot give back: a pymalloc
arena that still holds one live block.  After 5,000 connections 14-18 arenas
stay mapped, held by 1-14 blocks each: the listener's pending accept (trio's
wait objects, the task's counters), the timer entries and wait objects of
long-lived tasks that re-armed while the connections were open or since,
Prometheus metric values (a new float per update), caches made the first
time connections rested.  Blocks allocated after the storm go to the same
nearly empty pools (pymalloc allocates from the pool that last had room), so
the arenas stay, and RSS stays 20-36 % above its earlier size; with
``PYTHONMALLOC=malloc`` every object lives in glibc's heap, which
``malloc_trim`` returns page by page, and the resident size goes back to
where it was (docs/operations.md, "Memory"; bench/README.md).

:class:`MemoryRelease` decides when: after the open-connection count fell to
half its peak or lower, by at least :data:`MIN_DROP` connections, once
closes paused for :data:`SETTLE` seconds (one release per storm, not one per
halving), and at most once per :data:`MIN_INTERVAL` seconds.  A release
costs one collection of what was not frozen at start-up (``gc.freeze`` in
:mod:`chronik.serve`) plus one ``malloc_trim``: a few milliseconds after
5,000 connections, logged with the resident size before and after.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

log = logging.getLogger(__name__)

#: Connections that must have closed (since the peak) before a release is worth its cost:
#: about 3 MiB of freed connection state.
MIN_DROP = 500
#: Seconds without a connection opening or closing before the release runs.
SETTLE = 1.0
#: Longest wait for that pause once a release is due (connections may churn without end).
MAX_WAIT = 5.0
#: Seconds between two releases, at least.
MIN_INTERVAL = 10.0


@dataclass(frozen=True, slots=True)
class Released:
    """What one :func:`release_freed_memory` did.

    ``collected``: unreachable objects the collection found (reference cycles);
    ``trimmed``: ``malloc_trim``'s answer (memory was returned), None where there
    is no ``malloc_trim`` (not glibc); resident sizes in bytes, None where
    ``/proc`` does not tell.
    """

    collected: int
    trimmed: bool | None
    seconds: float
    rss_before: int | None
    rss_after: int | None


def release_freed_memory() -> Released:
    """Clear CPython's free lists (a collection of the oldest generation), then ``malloc_trim(0)``.

    Synchronous: it blocks the event loop for its duration (a few ms; the
    collection scans only objects not frozen by ``gc.freeze``).
    """
    before = resident_bytes()
    started = time.perf_counter()
    collected = gc.collect(2)
    trimmed = None if _TRIM is None else bool(_TRIM(0))
    seconds = time.perf_counter() - started
    return Released(collected, trimmed, seconds, before, resident_bytes())


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (musl, macOS, Windows have none)."""
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


#: Looked up once, when this module is imported, not at the first release: the
#: lookup creates a few dozen long-lived objects (a ctypes function type) which,
#: made during a release, land in the storm's emptied pools and keep arenas mapped.
_TRIM = _find_malloc_trim()


def resident_bytes() -> int | None:
    """This process's resident set size (Linux ``/proc/self/statm``), or None."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class MemoryRelease:
    """Runs :func:`release_freed_memory` once the open-connection count fell far below its peak.

    :meth:`count` is told the number of open connections each time one opens
    or closes (synchronous, O(1)); :meth:`run` is the task that releases.

    A release is *due* when the count is at most half its peak and at least
    ``min_drop`` below it.  It runs once no connection opened or closed for
    ``settle`` seconds (or ``max_wait`` after it became due), no sooner than
    ``min_interval`` after the previous one, and only if still due then; the
    peak then restarts from the current count.  So one storm of N
    connections costs at most about log2(N / min_drop) releases, however
    they close, and churn below ``min_drop`` none.
    """

    def __init__(self, *, min_drop: int = MIN_DROP, settle: float = SETTLE, max_wait: float = MAX_WAIT,
                 min_interval: float = MIN_INTERVAL, release: Callable[[], Released] = release_freed_memory) -> None:
        self.min_drop, self.settle, self.max_wait, self.min_interval = min_drop, settle, max_wait, min_interval
        self._release = release
        self.peak = 0
        self.current = 0
        self._last_change = -math.inf
        self._became_due = trio.Event()

    def due(self) -> bool:
        return self.peak - self.current >= self.min_drop and 2 * self.current <= self.peak

    def count(self, open_connections: int) -> None:
        """The number of open connections changed to ``open_connections`` (call from the trio thread)."""
        self.current = open_connections
        self.peak = max(self.peak, open_connections)
        self._last_change = trio.current_time()
        if self.due():
            self._became_due.set()

    async def run(self) -> None:
        """Release whenever due, until cancelled (cancellation between releases; a release itself does not yield)."""
        last = -math.inf
        while True:
            await self._became_due.wait()
            self._became_due = trio.Event()
            due_since = trio.current_time()
            while True:
                quiet = min(self._last_change + self.settle, due_since + self.max_wait)
                at = max(quiet, last + self.min_interval)
                if trio.current_time() >= at:
                    break
                await trio.sleep_until(at)
            if not self.due():
                continue  # connections came back meanwhile
            peak, current = self.peak, self.current
            done = self._release()
            last = trio.current_time()
            self.peak = self.current
            self._became_due = trio.Event()  # set by the closes this release already covers
            log.info("%d of %d connections closed: returned freed memory to the OS%s in %.1f ms "
                     "(the collection found %d objects in reference cycles)", peak - current, peak,
                     _rss_change(done), done.seconds * 1000, done.collected)


def _rss_change(done: Released) -> str:
    if done.rss_before is None or done.rss_after is None:
        return ""
    mib = 1024 * 1024
    return f", resident {done.rss_before / mib:.1f} -> {done.rss_after / mib:.1f} MiB"
