"""The follower append and the high-watermark rules of replicated partitions (memory backend)."""

from __future__ import annotations

import pytest
import trio

from chronik.log import PartitionLog
from chronik.log.partition import OffsetOutOfRange
from chronik.protocol import ProtocolError, validate_batch

from .conftest import TOPIC_ID, OpenLog, append, batch


def follower_log(committer, directory: str = "/data/follower/t-0") -> PartitionLog:  # type: ignore[no-untyped-def]
    return PartitionLog.open(committer, directory, topic="t", partition=0, topic_id=TOPIC_ID, segment_bytes=1 << 20)


async def test_a_follower_stores_the_leaders_batches_at_the_leaders_offsets(open_log: OpenLog, committer) -> None:  # type: ignore[no-untyped-def]
    leader = open_log()
    for n in range(3):
        await append(leader, batch([1, 2], values=[b"a%d" % n, b"b%d" % n]))
    follower = follower_log(committer)
    follower.follow()
    infos = [follower.append_replicated(stored) for stored in leader.read(0, 1 << 20)]
    assert [(i.base_offset, i.last_offset) for i in infos] == [(0, 1), (2, 3), (4, 5)]
    await follower.wait_durable(infos[-1])
    assert follower.log_end_offset == follower.durable_end == 6
    assert follower.high_watermark == 0  # the leader has not said where its high watermark is
    follower.follow_high_watermark(4)
    assert follower.high_watermark == 4
    follower.follow_high_watermark(99)
    assert follower.high_watermark == 6  # never above what this replica has durable
    assert follower.read(0, 1 << 20, end=6) == leader.read(0, 1 << 20)  # the same bytes


async def test_a_follower_refuses_a_gap_an_overlap_and_a_partial_batch(open_log: OpenLog, committer) -> None:  # type: ignore[no-untyped-def]
    leader = open_log()
    for _ in range(3):
        await append(leader, batch([1]))
    stored = leader.read(0, 1 << 20)
    follower = follower_log(committer)
    with pytest.raises(OffsetOutOfRange):
        follower.append_replicated(stored[1])  # a gap
    follower.append_replicated(stored[0])
    with pytest.raises(OffsetOutOfRange):
        follower.append_replicated(stored[0])  # an overlap
    with pytest.raises(ProtocolError):
        follower.append_replicated(bytes(stored[1])[:-1])
    assert follower.log_end_offset == 1


async def test_a_leaders_high_watermark_is_the_minimum_over_the_isr(open_log: OpenLog) -> None:
    leader = open_log()
    leader.lead(frozenset({2, 3}))
    for _ in range(4):
        await append(leader, batch([1]))
    assert (leader.durable_end, leader.high_watermark) == (4, 0)
    assert leader.read(0, 1 << 20) == []  # consumers see nothing the ISR lacks
    assert len(leader.read(0, 1 << 20, end=leader.durable_end)) == 4  # followers may fetch it
    leader.record_follower_end(2, 3)
    assert leader.high_watermark == 0
    leader.record_follower_end(3, 2)
    assert leader.high_watermark == 2
    leader.lead(frozenset({2}))  # follower 3 left the ISR
    assert leader.high_watermark == 3
    leader.record_follower_end(2, 4)
    assert leader.high_watermark == 4
    leader.lead(frozenset({2, 3}))  # 3 rejoins behind: the high watermark does not go back
    assert leader.high_watermark == 4
    leader.lead(frozenset())  # alone in the ISR: the durable end
    await append(leader, batch([1]))
    assert leader.high_watermark == 5


async def test_acks_all_waits_for_the_followers(open_log: OpenLog) -> None:
    leader = open_log()
    leader.lead(frozenset({2}))
    info = await append(leader, batch([1, 2, 3]))
    done = []

    async def acks_all() -> None:
        await leader.wait_high_watermark(info.last_offset + 1)
        done.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(acks_all)
        await trio.testing.wait_all_tasks_blocked()
        leader.record_follower_end(2, 2)
        await trio.testing.wait_all_tasks_blocked()
        assert not done
        leader.record_follower_end(2, 3)
    assert done

    info = await append(leader, batch([4]))
    done.clear()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(acks_all)
        await trio.testing.wait_all_tasks_blocked()
        assert not done
        leader.lead(frozenset())  # follower 2 left the ISR: the write is released
    assert done


async def test_a_single_replica_keeps_the_high_watermark_at_the_durable_end(open_log: OpenLog) -> None:
    log = open_log()
    data = batch([1])
    info = log.append_batch(data, validate_batch(data), log_append_time=None)
    assert log.high_watermark == 0
    await log.wait_durable(info)
    assert log.high_watermark == log.durable_end == 1
    await log.wait_high_watermark(1)
