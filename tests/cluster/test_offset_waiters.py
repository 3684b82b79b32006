"""OffsetWaiters: the one wait/wake mechanism of ConsensusNode (commit, durable and log ends)."""

from __future__ import annotations

import trio
import trio.testing

from chronik.cluster.node import OffsetWaiters


async def test_a_wait_below_the_end_returns_at_once() -> None:
    waiters = OffsetWaiters()
    with trio.testing.assert_checkpoints():
        await waiters.wait(4, end=5)


async def test_wake_releases_exactly_the_offsets_below_the_new_end() -> None:
    waiters = OffsetWaiters()
    released: list[int] = []

    async def wait(offset: int) -> None:
        await waiters.wait(offset, end=0)
        released.append(offset)

    async with trio.open_nursery() as nursery:
        for offset in (7, 3, 5, 3):
            nursery.start_soon(wait, offset)
        await trio.testing.wait_all_tasks_blocked()
        waiters.wake(4)
        await trio.testing.wait_all_tasks_blocked()
        assert released == [3, 3]
        waiters.wake(6)
        await trio.testing.wait_all_tasks_blocked()
        assert released == [3, 3, 5]
        waiters.wake(8)
    assert released == [3, 3, 5, 7]


async def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    waiters = OffsetWaiters()
    with trio.move_on_after(0.01):
        await waiters.wait(1, end=0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiters.wait, 2, 0)
        await trio.testing.wait_all_tasks_blocked()
        waiters.wake(3)  # also sets the cancelled waiter's event: harmless
