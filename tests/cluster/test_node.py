"""Real consensus nodes on loopback sockets: election, replication, failover, restart.

Three :func:`open_raft_node` voters run in one trio test on 127.0.0.1 with
ports chosen by the kernel, each on its own in-memory disk (a
``MemoryBackend`` that outlives the node, like a real disk outlives a
process).  Timeouts are short (150 ms election, 30 ms heartbeat) so the real
clock is fast enough; every wait is bounded.
"""

from __future__ import annotations

import logging
import random
import struct
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import pytest
import trio

from chronik.cluster.node import CommitUncertain, CommittedEntry, ConsensusNode, NotLeaderError, open_raft_node
from chronik.cluster.raft import Role
from chronik.cluster.transport import listener_address, open_replication_listener
from chronik.metadata.view import QuorumInfo, QuorumUnavailable
from chronik.protocol import ErrorCode
from chronik.storage import MemoryBackend

ELECTION = 0.15
HEARTBEAT = 0.03


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


class Cluster:
    """Voters 1..n; each node runs in its own task and can be stopped and restarted."""

    def __init__(self, nursery: trio.Nursery, size: int = 3, seed: int = 1, data: str | None = None) -> None:
        """``data``: a directory for real files on the default backend; None: in-memory disks."""
        self.nursery = nursery
        self.ids = tuple(range(1, size + 1))
        self.seed = seed
        self.data = data
        self.disks: dict[int, MemoryBackend | None] = {i: None if data else MemoryBackend() for i in self.ids}
        self.addresses: dict[int, str] = {}
        self.nodes: dict[int, ConsensusNode] = {}
        self.applied: dict[int, list[CommittedEntry]] = {}
        self._stops: dict[int, trio.CancelScope] = {}
        self._stopped: dict[int, trio.Event] = {}
        self.starts = 0

    async def start_all(self) -> None:
        listeners = {i: await open_replication_listener("127.0.0.1:0") for i in self.ids}
        self.addresses = {i: listener_address(listener) for i, listener in listeners.items()}
        for i in self.ids:
            await self.nursery.start(self._run, i, listeners[i])

    async def start(self, node_id: int) -> ConsensusNode:
        listener = await open_replication_listener(self.addresses[node_id])
        await self.nursery.start(self._run, node_id, listener)
        return self.nodes[node_id]

    def _on_commit(self, node_id: int) -> Callable[[Any], None]:
        """What a (re)started node delivers its committed entries to."""
        applied = self.applied[node_id] = []
        return applied.append

    def _attach(self, node_id: int, node: ConsensusNode) -> None:
        """A node has started (a subclass wires it to its state machine)."""

    async def _run(self, node_id: int, listener: trio.SocketListener, *, task_status: trio.TaskStatus[None]) -> None:
        self.starts += 1
        on_commit = self._on_commit(node_id)
        stopped = self._stopped[node_id] = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self._stops[node_id] = scope
                async with open_raft_node(
                    node_id,
                    self.addresses,
                    f"{self.data or '/data'}/node{node_id}",
                    rng=random.Random(self.seed * 1000 + self.starts),
                    backend=self.disks[node_id],
                    listener=listener,
                    election_timeout=ELECTION,
                    heartbeat_interval=HEARTBEAT,
                    on_commit=on_commit,
                ) as node:
                    self._attach(node_id, node)
                    self.nodes[node_id] = node
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self.nodes.pop(node_id, None)
            stopped.set()

    async def stop(self, node_id: int) -> None:
        self._stops[node_id].cancel()
        await self._stopped[node_id].wait()

    def leader(self) -> ConsensusNode | None:
        """The leader that every running node follows, if there is one."""
        leaders = [n for n in self.nodes.values() if n.role is Role.LEADER]
        if len(leaders) != 1:
            return None
        leader = leaders[0]
        if all(n.leader_id == leader.node_id and n.term == leader.term for n in self.nodes.values()):
            return leader
        return None

    async def wait_leader(self, timeout: float = 3.0) -> ConsensusNode:
        await eventually(lambda: self.leader() is not None, timeout)
        leader = self.leader()
        assert leader is not None
        return leader

    async def propose(self, payload: bytes) -> int:
        """Propose through the current leader, following NotLeader hints (a client would)."""
        with trio.fail_after(3.0):
            while True:
                leader = self.leader()
                if leader is None:
                    await trio.sleep(0.01)
                    continue
                try:
                    return await leader.propose(payload)
                except NotLeaderError:
                    await trio.sleep(0.01)

    def payloads(self, node_id: int) -> list[bytes]:
        return [e.payload for e in self.applied[node_id]]

    async def wait_converged(self) -> None:
        """Every running node has committed and applied the same commands."""
        def same() -> bool:
            ends = {n.commit_end for n in self.nodes.values()}
            logs = {tuple(self.payloads(i)) for i in self.nodes}
            return len(ends) == 1 and len(logs) == 1
        await eventually(same)


@asynccontextmanager
async def running_cluster(seed: int, data: str | None = None) -> AsyncIterator[tuple[Cluster, ConsensusNode]]:
    """Three voters started, and the leader they elected; all stopped at the end."""
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, seed=seed, data=data)
        await cluster.start_all()
        yield cluster, await cluster.wait_leader()
        nursery.cancel_scope.cancel()


async def test_three_nodes_elect_one_leader_replicate_in_order_and_redirect() -> None:
    async with running_cluster(1) as (cluster, leader):
        offsets = [await leader.propose(b"cmd-%d" % i) for i in range(20)]
        assert offsets == sorted(offsets) and len(set(offsets)) == 20
        async with trio.open_nursery() as proposers:  # concurrent proposals commit too
            for i in range(20, 40):
                proposers.start_soon(leader.propose, b"cmd-%d" % i)
        await cluster.wait_converged()
        first = cluster.payloads(1)
        assert first[:20] == [b"cmd-%d" % i for i in range(20)]
        assert sorted(first) == sorted(b"cmd-%d" % i for i in range(40))
        assert all(cluster.payloads(i) == first for i in cluster.ids)
        for follower in (n for n in cluster.nodes.values() if n is not leader):
            with pytest.raises(NotLeaderError) as info:
                await follower.propose(b"nope")
            assert info.value.leader_id == leader.node_id
        assert b"nope" not in cluster.payloads(leader.node_id)


@pytest.mark.parametrize("disk", ["memory", "files"])
async def test_leader_failover_keeps_committed_entries_and_a_restarted_node_catches_up(disk: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with running_cluster(2, str(tmp_path) if disk == "files" else None) as (cluster, old):
        old_id, old_term = old.node_id, old.term
        for i in range(10):
            await old.propose(b"before-%d" % i)
        await cluster.stop(old_id)
        started = trio.current_time()
        new = await cluster.wait_leader(timeout=3.0)
        failover = trio.current_time() - started
        assert new.node_id != old_id and new.term > old_term and failover < 3.0
        for i in range(10):
            await cluster.propose(b"after-%d" % i)
        await cluster.wait_converged()
        expected = [b"before-%d" % i for i in range(10)] + [b"after-%d" % i for i in range(10)]
        assert cluster.payloads(new.node_id) == expected

        restarted = await cluster.start(old_id)
        recovered = restarted.recovered  # from its disk: its own vote, the no-op and the entries it had
        assert (recovered.term, recovered.voted_for) == (old_term, old_id)
        # An entry commits once a majority has it durable, which may be the two
        # followers before the leader's own append ran: its disk may lack the tail.
        own = [e.payload for e in recovered.entries if not e.control]
        assert own == expected[: len(own)] and len(own) >= 1
        assert {e.epoch for e in recovered.entries} == {old_term} and recovered.entries[0].control
        await eventually(lambda: cluster.leader() is not None and len(cluster.nodes) == 3)
        await cluster.propose(b"last")
        await cluster.wait_converged()
        assert cluster.payloads(old_id) == [*expected, b"last"]


async def test_garbage_on_the_replication_port_does_not_disturb_the_cluster(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="chronik.cluster.transport")
    async with running_cluster(3) as (cluster, leader):
        term = leader.term
        host, port = leader.address.rsplit(":", 1)
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", struct.pack(">I", 6) + b"\x01\x63garb"):
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(junk)
                with trio.fail_after(2):
                    assert await stream.receive_some(100) == b""  # the node hung up on us
        await leader.propose(b"still fine")
        await cluster.wait_converged()
        assert cluster.leader() is leader and leader.term == term
        assert cluster.payloads(1) == [b"still fine"]
    assert sum("closing replication connection" in r.getMessage() for r in caplog.records) == 2


async def test_a_returning_leader_truncates_its_uncommitted_suffix(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chronik.cluster.node")
    async with running_cluster(4) as (cluster, old):
        await old.propose(b"committed")
        followers = [i for i in cluster.ids if i != old.node_id]
        for i in followers:
            await cluster.stop(i)
        with trio.move_on_after(0.05):  # alone: these reach only its own log, and never commit
            async with trio.open_nursery() as proposers:
                for i in range(3):
                    proposers.start_soon(old.propose, b"orphan-%d" % i)
        assert old.log_end == 2 + 3  # no-op, "committed", three orphans
        await cluster.stop(old.node_id)
        for i in followers:
            await cluster.start(i)
        await cluster.wait_leader()
        for i in range(4):
            await cluster.propose(b"new-%d" % i)
        await cluster.start(old.node_id)
        await cluster.propose(b"last")
        await cluster.wait_converged()
        expected = [b"committed", *(b"new-%d" % i for i in range(4)), b"last"]
        assert all(cluster.payloads(i) == expected for i in cluster.ids)
    assert any("truncated the log at offset 2" in r.getMessage() for r in caplog.records)


async def test_submit_on_a_follower_is_forwarded_to_the_leader_and_applied_there_first() -> None:
    async with running_cluster(5) as (cluster, leader):
        follower = next(n for n in cluster.nodes.values() if n is not leader)
        offsets = [await follower.submit(b"fwd-%d" % i) for i in range(5)]
        offsets.append(await leader.submit(b"direct"))
        assert offsets == sorted(offsets) and len(set(offsets)) == 6
        # submit returned only once the submitting node had the entry applied
        assert [e.offset for e in cluster.applied[follower.node_id]][:5] == offsets[:5]
        await cluster.wait_converged()
        assert cluster.payloads(leader.node_id) == [*(b"fwd-%d" % i for i in range(5)), b"direct"]
        assert leader.transport.stats.forwarded == 5


async def test_submit_without_a_majority_gives_up_with_not_leader() -> None:
    async with running_cluster(6) as (cluster, leader):
        for i in [i for i in cluster.ids if i != leader.node_id]:
            await cluster.stop(i)
        with pytest.raises((CommitUncertain, NotLeaderError)):  # which one depends on when it steps down
            await leader.submit(b"alone", timeout=0.5)


async def test_every_node_describes_the_quorum_as_the_leader_sees_it() -> None:
    """DescribeQuorum's source: the leader's view, with its times on the wall clock; a follower
    asks the leader over the replication port; without a leader the answer is NOT_LEADER_OR_FOLLOWER."""
    async with running_cluster(7) as (cluster, leader):
        for i in range(5):
            await leader.propose(b"q-%d" % i)
        await cluster.wait_converged()
        end = leader.commit_end

        def level(info: QuorumInfo) -> bool:
            return all(v.log_end_offset == end for v in info.voters)

        for node in cluster.nodes.values():
            with trio.fail_after(3):
                while not level(info := await node.describe_quorum()):
                    await trio.sleep(0.01)
            assert (info.leader_id, info.leader_epoch, info.high_watermark) == (leader.node_id, leader.term, end)
            assert [v.replica_id for v in info.voters] == [1, 2, 3]
            now_ms = time.time() * 1000
            for voter in info.voters:
                assert now_ms - 2000 < voter.last_caught_up_timestamp <= voter.last_fetch_timestamp <= now_ms
        for i in [i for i in cluster.ids if i != leader.node_id]:
            await cluster.stop(i)
        await eventually(lambda: leader.role is not Role.LEADER)  # check quorum: it steps down
        with pytest.raises(QuorumUnavailable) as refused:
            await leader.describe_quorum()
        assert refused.value.error == ErrorCode.NOT_LEADER_OR_FOLLOWER
