"""Freed memory handed back to the OS after many connections closed (issue 18)."""

from __future__ import annotations

import platform
import sys
import weakref

import pytest
import trio
import trio.testing

from chronik.server.kafka import accept_connections
from chronik.server.limits import LogLimiter
from chronik.server.memory import MemoryRelease, Released, release_freed_memory, resident_bytes


@pytest.mark.skipif(sys.getallocatedblocks() == 0, reason="CPython's own allocator (pymalloc) counts blocks")
def test_a_release_empties_the_free_lists_that_pin_the_allocator_arenas() -> None:
    """Freed tuples wait on CPython's free lists, still allocated: the release frees them.

    (After 5,000 connections some 6,000 such blocks kept about 400 pools, and
    with them nearly every arena the connections had filled, mapped.)
    """
    pairs = [(i, -i) for i in range(20_000)]  # one 2-tuple each, plus the list's
    del pairs  # the last 2,000 freed wait on the 2-tuple free list
    before = sys.getallocatedblocks()
    done = release_freed_memory()
    assert before - sys.getallocatedblocks() >= 1_500
    assert done.seconds < 1
    if sys.platform == "linux":
        assert done.rss_before is not None and done.rss_after is not None
    if platform.libc_ver()[0] == "glibc":
        assert done.trimmed is not None  # malloc_trim was found and called


def test_resident_bytes_reads_this_process_on_linux() -> None:
    rss = resident_bytes()
    if sys.platform == "linux":
        assert rss is not None and 1 << 20 < rss < 1 << 40


class Recorder:
    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self) -> Released:
        self.times.append(trio.current_time())
        return Released(0, True, 0.001, 2 << 20, 1 << 20)


async def storm(release: MemoryRelease, up_to: int, down_to: int, step: int = 100, pause: float = 0.01) -> None:
    """Connections open one by one up to ``up_to``, then close down to ``down_to`` (``step`` at a time)."""
    for n in range(release.current + 1, up_to + 1):
        release.count(n)
    await trio.sleep(pause)
    n = up_to
    while n > down_to:
        n = max(down_to, n - step)
        release.count(n)
        await trio.sleep(pause)


async def test_one_release_once_a_storm_of_closes_paused(autojump_clock: trio.abc.Clock) -> None:
    recorder = Recorder()
    release = MemoryRelease(min_drop=500, settle=1.0, max_wait=5.0, min_interval=10.0, release=recorder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(release.run)
        await storm(release, 5000, 0)  # due at 2500, still closing: waits for the pause
        closed_at = trio.current_time()
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert len(recorder.times) == 1
    assert recorder.times[0] == pytest.approx(closed_at - 0.01 + 1.0)
    assert release.peak == 0


async def test_no_release_for_drops_too_small_or_not_to_half(autojump_clock: trio.abc.Clock) -> None:
    recorder = Recorder()
    release = MemoryRelease(min_drop=500, release=recorder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(release.run)
        await storm(release, 400, 0)  # everything closed, but only 400
        await trio.sleep(30)
        await storm(release, 3000, 1600)  # 1400 closed, but not half of the peak
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert recorder.times == []


async def test_no_release_when_the_connections_came_back_before_the_pause(autojump_clock: trio.abc.Clock) -> None:
    recorder = Recorder()
    release = MemoryRelease(min_drop=500, settle=1.0, release=recorder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(release.run)
        await storm(release, 2000, 0)
        release.count(1500)  # back before a second without change
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    assert recorder.times == []


async def test_endless_churn_waits_at_most_max_wait_and_releases_at_most_once_per_interval(
        autojump_clock: trio.abc.Clock) -> None:
    recorder = Recorder()
    release = MemoryRelease(min_drop=500, settle=1.0, max_wait=5.0, min_interval=10.0, release=recorder)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(release.run)
        started = trio.current_time()
        for _ in range(20):  # 1000 up and down every 2 s, never a quiet second
            await storm(release, 1000, 0, step=100, pause=0.1)
            for n in range(1, 1001, 100):
                release.count(n)
                await trio.sleep(0.1)
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert recorder.times, "churn never paused: released after max_wait anyway"
    assert recorder.times[0] - started <= 2 + 5.0
    gaps = [b - a for a, b in zip(recorder.times, recorder.times[1:])]
    assert all(gap >= 10.0 for gap in gaps)
    assert len(recorder.times) <= elapsed / 10.0 + 1


async def test_the_accept_loop_keeps_no_reference_to_the_last_connection() -> None:
    """The last connection of a storm is freed when it closes, not when the next one comes.

    (Its stream and sockets otherwise stayed allocated, and kept the allocator
    arena they sat in mapped, while the broker was idle after the storm.)
    """
    handed: list[weakref.ref[trio.SocketStream]] = []
    done = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        handed.append(weakref.ref(stream))
        await stream.aclose()
        del stream
        done.set()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_connections, listeners[0], handle, nursery, LogLimiter(60.0))
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await done.wait()
        await trio.testing.wait_all_tasks_blocked()  # the accept loop waits for the next connection
        assert handed and handed[0]() is None
        await client.aclose()
        nursery.cancel_scope.cancel()
