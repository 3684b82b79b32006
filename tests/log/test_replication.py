"""The follower append and the high-watermark rules of replicated partitions (memory backend)."""

from __future__ import annotations

import pytest
import trio

from chronik.log import PartitionLog
from chronik.log.partition import DataWatch, OffsetOutOfRange
from chronik.protocol import ProtocolError, parse_batch_header, validate_batch

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


async def test_a_leader_stamps_its_epoch_and_the_epoch_cache_answers_offset_for_leader_epoch(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, batch([1]))  # not leading a replicated partition: unstamped
    assert log.last_epoch == -1 and log.epoch_end(0) == (-1, 1)
    log.lead(frozenset(), leader_epoch=2)
    await append(log, batch([1, 2]))  # offsets 1-2
    log.lead(frozenset(), leader_epoch=5)
    await append(log, batch([1]))  # offset 3
    await append(log, batch([1]))  # offset 4
    assert parse_batch_header(log.read(3, 1 << 20)[0]).partition_leader_epoch == 5
    assert log.last_epoch == 5
    assert log.epoch_end(5) == (5, 5)  # the newest epoch ends at the log end
    assert log.epoch_end(4) == (2, 3)  # 4 is not here: the largest below it, ending where 5 starts
    assert log.epoch_end(2) == (2, 3)
    assert log.epoch_end(1) == (-1, 1)  # older than every epoch here
    await log.aclose()
    reopened = open_log()  # the cache is rebuilt from the batch headers
    assert reopened.epoch_end(4) == (2, 3) and reopened.last_epoch == 5


async def test_truncate_to_cuts_whole_batches_and_the_log_takes_new_ones(open_log: OpenLog) -> None:
    log = open_log(segment_bytes=300)  # several segments
    log.lead(frozenset(), leader_epoch=1)
    infos = [await append(log, batch([1, 2], producer_id=7, producer_epoch=0, base_sequence=2 * n)) for n in range(8)]
    assert len(log.wal.segments()) > 2
    assert await log.truncate_to(7) == 6  # offset 7 is inside the batch 6-7: it goes whole
    assert (log.log_end_offset, log.durable_end, log.high_watermark) == (6, 6, 6)
    assert len(log.read(0, 1 << 20)) == 3
    assert await log.truncate_to(9) == 6  # nothing above: no change
    # the producer state is rolled back too: the cut batch's sequence is accepted again
    again = await append(log, batch([1, 2], producer_id=7, producer_epoch=0, base_sequence=6))
    assert (again.base_offset, again.appended is not None) == (6, True)
    assert infos[3].base_offset == 6
    await log.aclose()
    reopened = open_log(segment_bytes=300)
    assert reopened.log_end_offset == 8 and len(reopened.read(0, 1 << 20)) == 4


async def test_a_returning_old_leader_truncates_the_suffix_the_new_leader_lacks(open_log: OpenLog, committer) -> None:  # type: ignore[no-untyped-def]
    old = open_log()
    old.lead(frozenset({2}), leader_epoch=0)
    for n in range(3):
        await append(old, batch([1], values=[b"acked%d" % n]))
    new = follower_log(committer)
    for stored in old.read(0, 1 << 20, end=old.durable_end):
        await new.wait_durable(new.append_replicated(stored))
    old.record_follower_end(2, 3)
    assert old.high_watermark == 3
    await append(old, batch([1], values=[b"lost"]))  # only the old leader has offset 3
    # the new leader (epoch 1) takes other writes at offset 3
    new.lead(frozenset(), leader_epoch=1)
    await append(new, batch([1], values=[b"new"]))
    # the old leader comes back as a follower: its last epoch (0) ends at 3 on the new leader
    epoch, end = new.epoch_end(old.last_epoch)
    assert (epoch, end) == (0, 3) and end < old.log_end_offset
    old.follow()
    assert await old.truncate_to(min(end, old.epoch_end(epoch)[1])) == 3
    for stored in new.read(old.log_end_offset, 1 << 20, end=new.durable_end):
        await old.wait_durable(old.append_replicated(stored))
    assert old.read(0, 1 << 20, end=4) == new.read(0, 1 << 20, end=4)
    assert old.epoch_end(old.last_epoch) == new.epoch_end(new.last_epoch) == (1, 4)


async def test_a_follower_behind_the_leaders_log_start_restarts_its_log_there(open_log: OpenLog, committer) -> None:  # type: ignore[no-untyped-def]
    leader = open_log(segment_bytes=300)  # several segments, so retention can delete some
    leader.lead(frozenset(), leader_epoch=0)
    for n in range(8):
        await append(leader, batch([1, 2], values=[b"a%d" % n, b"b%d" % n]))
    follower = follower_log(committer)
    follower.follow()
    for stored in leader.read(0, 1 << 20, end=2):  # the follower has offsets 0-1, then goes away
        await follower.wait_durable(follower.append_replicated(stored))
    assert leader.advance_log_start(10) == 10  # DeleteRecords (or retention) while it is away
    assert leader.log_start_offset > follower.log_end_offset == 2
    with pytest.raises(OffsetOutOfRange):
        leader.read(follower.log_end_offset, 1 << 20, end=leader.durable_end)  # what the leader answers
    await follower.restart_at(leader.log_start_offset)
    assert (follower.log_start_offset, follower.log_end_offset, follower.durable_end) == (10, 10, 10)
    assert follower.high_watermark == 10 and follower.read(10, 1 << 20, end=10) == []
    assert len(follower.wal.segments()) == 1 and follower.last_epoch == -1
    for stored in leader.read(10, 1 << 20, end=leader.durable_end):
        await follower.wait_durable(follower.append_replicated(stored))
    with pytest.raises(ValueError):
        await follower.restart_at(12)  # a log holding batches only restarts above its end
    follower.follow_high_watermark(leader.high_watermark)
    assert follower.log_end_offset == leader.log_end_offset == 16
    assert follower.read(10, 1 << 20, end=16) == leader.read(10, 1 << 20, end=16)
    assert follower.epoch_end(0) == (0, 16)
    await follower.aclose()
    reopened = follower_log(committer)  # the restart is durable
    assert (reopened.log_start_offset, reopened.log_end_offset) == (10, 16)
    assert [bytes(b) for b in reopened.read(10, 1 << 20)] == [bytes(b) for b in leader.read(10, 1 << 20)]


async def test_restart_at_survives_a_crash_between_the_log_start_and_the_segments(committer) -> None:  # type: ignore[no-untyped-def]
    follower = follower_log(committer)
    follower.follow()
    await append(follower, batch([1, 2]))
    follower.local.log_start_offset = 50  # as if the crash came after partition.json was replaced
    follower.local.write_partition_file()
    await follower.aclose()
    reopened = follower_log(committer)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (50, 50)
    assert reopened.read(50, 1 << 20, end=50) == []


async def test_the_high_watermark_starts_from_the_checkpoint_capped_by_the_log(open_log: OpenLog, committer) -> None:  # type: ignore[no-untyped-def]
    log = open_log()
    log.lead(frozenset({2}), leader_epoch=0)
    for _ in range(5):
        await append(log, batch([1]))
    log.record_follower_end(2, 3)
    assert log.high_watermark == 3
    await log.aclose()

    def reopen(high_watermark: int | None) -> PartitionLog:
        return PartitionLog.open(committer, "/data/t-0", topic="t", partition=0, topic_id=TOPIC_ID,
                                 segment_bytes=1 << 20, high_watermark=high_watermark)

    leader = reopen(3)  # a restarted leader exposes neither less nor more than it had
    assert (leader.log_end_offset, leader.high_watermark) == (5, 3)
    leader.lead(frozenset({2}), leader_epoch=1)
    assert leader.high_watermark == 3 and len(leader.read(0, 1 << 20)) == 3
    leader.record_follower_end(2, 1)  # a follower behind it does not pull it back
    assert leader.high_watermark == 3
    await leader.aclose()
    assert reopen(99).high_watermark == 5  # never above the log end
    assert reopen(None).high_watermark == 5  # a single node: the durable end
    unknown = reopen(0)  # no checkpoint entry: the log start, until the ISR says more
    assert unknown.high_watermark == 0
    unknown.refresh_high_watermark()  # neither leading nor following: an unreplicated partition
    assert unknown.high_watermark == 5


async def test_a_leaders_log_start_inside_a_batch_is_stored_whole_by_the_restarted_follower(open_log: OpenLog, committer) -> None:  # type: ignore[no-untyped-def]
    leader = open_log(segment_bytes=300)
    await append(leader, batch([1, 2]))  # offsets 0-1
    await append(leader, batch(list(range(10))))  # offsets 2-11, one batch
    assert leader.advance_log_start(5) == 5  # the log start falls inside the batch 2-11
    follower = follower_log(committer)
    follower.follow()
    await follower.restart_at(leader.log_start_offset)
    stored = leader.read(5, 1 << 20, end=leader.durable_end)
    first = parse_batch_header(stored[0])
    assert (first.base_offset, follower.log_end_offset) == (2, 5)
    assert not follower.holds_batches
    await follower.restart_at(first.base_offset)  # an empty log may move back to the batch's base
    assert (follower.log_start_offset, follower.log_end_offset) == (5, 2)
    for data in stored:
        await follower.wait_durable(follower.append_replicated(data))
    assert (follower.log_start_offset, follower.log_end_offset, follower.high_watermark) == (5, 12, 5)
    follower.follow_high_watermark(leader.high_watermark)
    assert follower.high_watermark == 12
    assert follower.read(5, 1 << 20) == leader.read(5, 1 << 20)
    with pytest.raises(OffsetOutOfRange):
        follower.read(2, 1 << 20)  # below the log start, as on the leader
    await follower.aclose()
    reopened = follower_log(committer)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (5, 12)


async def test_a_data_watch_registered_before_an_append_fires_and_leaves_no_event_behind(open_log: OpenLog) -> None:
    """The fetch long-poll's watch: registered in the same step as the read, it catches an
    append made before anyone waits on it; closed after a timeout, it leaves nothing on an
    idle log (one event per timed-out long-poll would otherwise pile up for ever)."""
    busy, idle = open_log(), open_log()
    watch = DataWatch([busy, idle])
    await append(busy, batch([1]))  # before the wait starts
    with trio.fail_after(1):
        await watch.wait()
    watch.close()
    for _ in range(100):
        with DataWatch([idle]) as timed_out, trio.move_on_after(0):
            await timed_out.wait()
    assert not idle._waiters and not busy._waiters
