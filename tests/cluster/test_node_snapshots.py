"""Metadata snapshots in cluster mode, on real consensus nodes over loopback sockets.

Three :func:`open_raft_node` voters, each feeding a
:class:`~chronik.cluster.metadata.ReplicatedMetadataLog` that snapshots its
image every few commands (so the Raft log is compacted often), each on its
own in-memory disk that outlives the node.  A node that was down while the
others compacted past its log comes back, gets the leader's snapshot
(InstallSnapshot) and the log after it, and ends with the same image; a
restarted node loads its snapshot and replays only the log after it.
"""

from __future__ import annotations

import logging
import random
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

import pytest
import trio

from chronik.cluster.metadata import ReplicatedMetadataLog
from chronik.cluster.node import CommittedEntry, ConsensusNode, Snapshot
from chronik.metadata.commands import AllocateProducerIds, CreateTopic, RegisterBroker

from .test_node import ELECTION, Cluster, eventually

SNAPSHOT_EVERY = 4


class MetadataCluster(Cluster):
    """Voters 1..3 (:class:`~.test_node.Cluster`), each with a metadata image fed by its Raft log."""

    def __init__(self, nursery: trio.Nursery) -> None:
        super().__init__(nursery, size=3)
        self.metadata: dict[int, ReplicatedMetadataLog] = {}
        self.delivered: dict[int, list[CommittedEntry | Snapshot]] = {}

    def _on_commit(self, node_id: int) -> Callable[[CommittedEntry | Snapshot], None]:
        metadata = self.metadata[node_id] = ReplicatedMetadataLog(submit_timeout=3.0, snapshot_every=SNAPSHOT_EVERY)
        delivered = self.delivered[node_id] = []

        def on_commit(item: CommittedEntry | Snapshot) -> None:
            delivered.append(item)
            metadata.apply_committed(item)
        return on_commit

    def _attach(self, node_id: int, node: ConsensusNode) -> None:
        self.metadata[node_id].node = node

    async def submit(self, command: object) -> None:
        """Through any running node (followers forward to the leader)."""
        node_id = random.Random(self.starts).choice(sorted(self.nodes))
        await self.metadata[node_id].submit(command)  # type: ignore[arg-type]

    async def wait_same_image(self) -> dict[str, object]:
        def same() -> bool:
            leader = self.leader()
            if leader is None or len(self.nodes) != len(self.ids):
                return False
            images = [self.metadata[i].image for i in self.ids]
            return len({image.applied_offset for image in images}) == 1 and images[0].applied_offset >= 0
        await eventually(same)
        snapshots = [self.metadata[i].image.to_snapshot() for i in self.ids]
        assert all(snapshot == snapshots[0] for snapshot in snapshots)
        return snapshots[0]


@asynccontextmanager
async def running_cluster() -> AsyncIterator[MetadataCluster]:
    async with trio.open_nursery() as nursery:
        cluster = MetadataCluster(nursery)
        await cluster.start_all()
        await cluster.wait_leader()
        yield cluster
        nursery.cancel_scope.cancel()


def topic(i: int) -> CreateTopic:
    return CreateTopic(name=f"topic-{i}", topic_id=uuid.UUID(int=i + 1).hex, replicas=[[1 + i % 3]])


async def test_a_node_down_while_the_others_compact_catches_up_from_a_snapshot(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chronik.cluster")
    async with running_cluster() as cluster:
        for i in cluster.ids:
            await cluster.submit(RegisterBroker(node_id=i, host="127.0.0.1", port=9000 + i))
        leader = await cluster.wait_leader()
        victim = next(i for i in cluster.ids if i != leader.node_id)
        await cluster.wait_same_image()
        victim_end = cluster.nodes[victim].log_end
        await cluster.stop(victim)

        for i in range(20):  # the survivors snapshot every 4 commands and compact their logs
            await cluster.submit(topic(i) if i % 2 else AllocateProducerIds(count=1 + i))
        survivors = [cluster.nodes[i] for i in cluster.ids if i != victim]
        await eventually(lambda: all(n.log_start > victim_end for n in survivors))
        # down for more than an election timeout: the appends queued for it (which still
        # carry the entries the survivors compacted away) expire instead of reaching it
        await trio.sleep(3 * ELECTION)

        restarted = await cluster.start(victim)
        image = await cluster.wait_same_image()  # caught up: snapshot, then the log after it
        assert len(image["topics"]) == 10  # type: ignore[arg-type]
        assert any(isinstance(item, Snapshot) for item in cluster.delivered[victim])
        assert restarted.log_start > victim_end
        await cluster.submit(topic(100))  # and it keeps applying what follows
        topics = (await cluster.wait_same_image())["topics"]
        assert "topic-100" in [t["name"] for t in topics]  # type: ignore[attr-defined, index]

        # a restart loads the newest snapshot and replays only the entries after it
        await cluster.stop(victim)
        restarted = await cluster.start(victim)
        first = cluster.delivered[victim][0]
        assert isinstance(first, Snapshot) and restarted.commit_end >= first.end > 0
        await cluster.wait_same_image()
        replayed = [item for item in cluster.delivered[victim] if isinstance(item, CommittedEntry)]
        assert len(replayed) < SNAPSHOT_EVERY + 3
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"node {victim}: installed snapshot at" in m and "from leader" in m for m in messages)
    assert any("snapshot taken at offset" in m for m in messages)
    assert any(f"node {victim}: snapshot loaded at offset" in m for m in messages)
