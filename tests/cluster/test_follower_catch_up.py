"""A follower whose log ends below its leader's log start catches up (memory backend, no sockets).

Drives the follower half of :class:`~chronik.cluster.replication.ReplicaManager`
with the answers a leader gives: OFFSET_OUT_OF_RANGE with its log start, then
batches from there -- the first of which may start below it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from chronik.cluster.messages import ReplicaFetchResponse
from chronik.cluster.replication import ReplicaManager
from chronik.log import PartitionLog
from chronik.protocol import ErrorCode
from chronik.storage import GroupCommitter, MemoryBackend, open_group_committer

from ..log.conftest import TOPIC_ID, append, batch


@pytest.fixture
async def committer() -> AsyncIterator[GroupCommitter]:
    async with open_group_committer(MemoryBackend(), "/data") as committer:
        yield committer


def open_partition(committer: GroupCommitter, directory: str, segment_bytes: int = 1 << 20) -> PartitionLog:
    return PartitionLog.open(committer, directory, topic="t", partition=0, topic_id=TOPIC_ID, segment_bytes=segment_bytes)


def answer(leader: PartitionLog, error: ErrorCode = ErrorCode.NONE, records: bytes = b"") -> ReplicaFetchResponse:
    return ReplicaFetchResponse(0, 1, 2, int(error), leader.high_watermark, leader.log_start_offset, records,
                                -1, -1, leader.durable_end)


async def test_a_follower_restarts_at_the_leaders_log_start_and_follows_it(committer: GroupCommitter) -> None:
    leader = open_partition(committer, "/data/l/t-0", segment_bytes=400)
    leader.lead(frozenset(), leader_epoch=3)
    for n in range(4):
        await append(leader, batch([1, 2, 3], values=[b"a%d" % n, b"b%d" % n, b"c%d" % n]))  # 0-2, 3-5, 6-8, 9-11
    follower = open_partition(committer, "/data/f/t-0")
    follower.follow()
    await ReplicaManager._store(follower, answer(leader, records=b"".join(leader.read(0, 1 << 20, end=3))))
    assert follower.log_end_offset == 3
    leader.advance_log_start(7)  # DeleteRecords while the follower is away: inside the batch 6-8

    # what the leader answers a fetch from offset 3
    out_of_range = answer(leader, ErrorCode.OFFSET_OUT_OF_RANGE)
    await ReplicaManager._restart_behind_leader(follower, out_of_range, 1)
    assert (follower.log_start_offset, follower.log_end_offset, follower.holds_batches) == (7, 7, False)
    # the next fetch, from 7, gets the whole batch 6-8 first: stored whole, the log start kept at 7
    rest = b"".join(leader.read(7, 1 << 20, end=leader.durable_end))
    await ReplicaManager._store(follower, answer(leader, records=rest))
    assert (follower.log_start_offset, follower.log_end_offset, follower.high_watermark) == (7, 12, 12)
    assert follower.read(7, 1 << 20) == leader.read(7, 1 << 20)
    assert follower.epoch_end(3) == leader.epoch_end(3) == (3, 12)

    # a later DeleteRecords on the leader reaches the follower with the next answer
    leader.advance_log_start(10)
    await ReplicaManager._store(follower, answer(leader))
    assert follower.log_start_offset == 10


class _StaleMetadata:
    """Just what :meth:`ReplicaManager.configure` reads: an image, and whether it is current."""

    def __init__(self, image: object, lag: str | None) -> None:
        self.image = image
        self.lag = lag

    def metadata_lag(self) -> str | None:
        return self.lag


async def test_a_log_opened_on_stale_metadata_keeps_its_checkpointed_high_watermark(committer: GroupCommitter) -> None:
    """A node restarted from an old snapshot whose image names it leader with an ISR of just
    itself must not raise the high watermark to its log end over batches no other replica has
    (seed 15 of the cluster simulation with snapshots): it leads only once current."""
    import uuid
    from types import SimpleNamespace

    import trio

    from chronik.metadata.image import PartitionImage, TopicImage

    first = open_partition(committer, "/data/n1/t-0")
    first.lead(frozenset(), leader_epoch=0)
    for n in range(4):
        await append(first, batch([n]))
    await first.aclose()
    reopened = PartitionLog.open(committer, "/data/n1/t-0", topic="t", partition=0, topic_id=TOPIC_ID,
                                 segment_bytes=1 << 20, high_watermark=2)  # the checkpoint said 2
    assert (reopened.high_watermark, reopened.log_end_offset) == (2, 4)
    old_image = SimpleNamespace(topics={"t": TopicImage("t", uuid.UUID(TOPIC_ID), [
        PartitionImage(replicas=[1, 2, 3], leader=1, leader_epoch=0, isr=[1])], {})})
    manager = ReplicaManager.__new__(ReplicaManager)
    metadata = _StaleMetadata(old_image, "not caught up")
    manager.metadata, manager.metadata_lag, manager.node_id, manager._changed = metadata, metadata.metadata_lag, 1, trio.Event()

    manager.configure(reopened)
    assert reopened.high_watermark == 2  # stale: follows, nothing raises it
    metadata.lag = None  # caught up, and the image still says so: now it leads
    manager.configure(reopened)
    assert reopened.high_watermark == 4
    await reopened.aclose()
