"""Peer connections that stall are noticed and redialled; only replication counts as a heartbeat.

Real sockets on 127.0.0.1, no namespaces: a "peer" here is a listener that
accepts and reads but never answers -- what a stalled connection looks like
from the sending side (a cut network, a hung process).  The namespace test
(``tests/integration/test_partition_heal.py``) cuts a real cluster.
"""

from __future__ import annotations

import logging
import random
import socket

import pytest
import trio

from chronik.cluster.messages import Ack, AppendResponse, ReplicaFetchRequest, VoteRequest
from chronik.cluster.network import TCP, listener_address, open_replication_listener
from chronik.cluster.node import open_raft_node
from chronik.cluster.replication import ReplicaManager
from chronik.cluster.transport import FrameReader, RaftTransport, encode_frame
from chronik.log import PartitionLog
from chronik.metrics import BrokerMetrics
from chronik.storage import MemoryBackend, open_group_committer

from ..log.conftest import TOPIC_ID


class SilentPeer:
    """Accepts connections and reads everything sent on them, never answering."""

    def __init__(self, listener: trio.SocketListener) -> None:
        self.listener = listener
        self.address = listener_address(listener)
        self.accepted = 0
        self.frames: list[object] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.serve_listeners(self._swallow, [self.listener], task_status=task_status)

    async def _swallow(self, stream: trio.abc.Stream) -> None:
        self.accepted += 1
        reader = FrameReader()
        async with stream:
            try:
                while data := await stream.receive_some(1 << 16):
                    self.frames.extend(reader.feed(data))
            except trio.BrokenResourceError:
                pass


async def open_silent_peer(nursery: trio.Nursery) -> SilentPeer:
    peer = SilentPeer(await open_replication_listener("127.0.0.1:0"))
    await nursery.start(peer.run)
    return peer


async def test_raft_messages_a_peer_never_acknowledges_make_the_sender_redial(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "chronik.cluster.transport")
    async with trio.open_nursery() as nursery:
        peer = await open_silent_peer(nursery)
        transport = RaftTransport(1, await open_replication_listener("127.0.0.1:0"), {2: peer.address},
                                  lambda message: None, random.Random(1), request_timeout=0.3)
        await nursery.start(transport.run)
        with trio.fail_after(5):
            while peer.accepted < 3:
                transport.send(VoteRequest(1, 1, 2, 0, 0, pre_vote=True))
                await trio.sleep(0.05)
        assert transport.stats.stalls >= 2
        assert len(peer.frames) >= 3  # the messages did go out: nobody acknowledged them
        nursery.cancel_scope.cancel()
    lost = [r.message for r in caplog.records if "lost" in r.message]
    assert len(lost) == 1 and "stalled: no acknowledgement for 0.3 s" in lost[0]  # one line per outage


async def test_acknowledged_raft_messages_keep_one_connection() -> None:
    delivered: list[object] = []
    async with trio.open_nursery() as nursery:
        listeners = {i: await open_replication_listener("127.0.0.1:0") for i in (1, 2)}
        addresses = {i: listener_address(listener) for i, listener in listeners.items()}
        sender = RaftTransport(1, listeners[1], {2: addresses[2]}, lambda m: None, random.Random(1), request_timeout=0.3)
        receiver = RaftTransport(2, listeners[2], {1: addresses[1]}, delivered.append, random.Random(2), request_timeout=0.3)
        await nursery.start(sender.run)
        await nursery.start(receiver.run)
        for n in range(30):  # 1.5 s: five request timeouts
            sender.send(VoteRequest(n + 1, 1, 2, 0, 0, pre_vote=True))
            await trio.sleep(0.05)
        assert len(delivered) == 30
        assert (sender.stats.connects, sender.stats.stalls) == (1, 0)
        nursery.cancel_scope.cancel()


async def test_messages_queued_longer_than_max_age_are_not_sent() -> None:
    """A peer back from an outage gets what Raft sends now, not the stale backlog."""
    delivered: list[object] = []
    async with trio.open_nursery() as nursery:
        down = await open_replication_listener("127.0.0.1:0")
        address = listener_address(down)
        await down.aclose()  # nothing listens there for now: dials are refused
        sender = RaftTransport(1, await open_replication_listener("127.0.0.1:0"), {2: address}, lambda m: None,
                               random.Random(1), max_age=0.2)
        await nursery.start(sender.run)
        for n in range(5):
            sender.send(VoteRequest(n + 1, 1, 2, 0, 0, pre_vote=True))
        await trio.sleep(0.4)
        receiver = RaftTransport(2, await open_replication_listener(address), {}, delivered.append, random.Random(2))
        await nursery.start(receiver.run)
        fresh = VoteRequest(9, 1, 2, 0, 0, pre_vote=True)
        with trio.fail_after(5):
            while not delivered:  # (the sender may be backing off for a while yet)
                sender.send(fresh)
                await trio.sleep(0.05)
        assert set(delivered) == {fresh} and sender.stats.expired >= 5
        nursery.cancel_scope.cancel()


async def test_the_serving_side_acknowledges_raft_messages_and_only_replication_is_a_heartbeat() -> None:
    """A peer's vote requests prove nothing about the way back (a node campaigns when it
    does not hear its leader): they do not refresh ``last_heard``; an append answer does."""
    async with trio.open_nursery() as nursery:
        silent = await open_silent_peer(nursery)
        voters = {1: "127.0.0.1:0", 2: silent.address, 3: silent.address}
        async with open_raft_node(1, voters, "/raft", rng=random.Random(1), backend=MemoryBackend(),
                                  listener=await open_replication_listener("127.0.0.1:0"), election_timeout=60) as node:
            before = node.last_heard[2]
            stream = await TCP.connect(node.address)
            reader = FrameReader()

            async def exchange(message: object, count: int) -> None:
                await stream.send_all(encode_frame(message))  # type: ignore[arg-type]
                with trio.fail_after(5):
                    while not (answers := reader.feed(await stream.receive_some(1 << 16))):
                        pass
                assert answers == [Ack(0, 1, 2, count)]

            await trio.sleep(0.01)
            await exchange(VoteRequest(5, 2, 1, 0, 0, pre_vote=True), 1)
            assert node.last_heard[2] == before
            await exchange(AppendResponse(node.term, 2, 1, False, 0, 0), 2)
            assert node.last_heard[2] > before
            await stream.aclose()
        nursery.cancel_scope.cancel()


def replica_manager(peers: dict[int, str], *, socket_timeout: float) -> ReplicaManager:
    """Node 2's replica manager with only what a fetch loop uses (no metadata, logs or transport)."""
    async def no_submit(command: object) -> object:
        raise AssertionError(f"the fetch loop submitted {command!r}")

    return ReplicaManager(2, None, None, metadata_lag=lambda: None, submit=no_submit,  # type: ignore[arg-type]
                          metrics=BrokerMetrics(process_metrics=False), transport=None, peers=peers,
                          lag_max_seconds=30, socket_timeout=socket_timeout)


async def test_a_fetch_the_leader_never_answers_is_redialled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "chronik.cluster.replication")
    async with trio.open_nursery() as nursery, open_group_committer(MemoryBackend(), "/data") as committer:
        leader = await open_silent_peer(nursery)
        manager = replica_manager({1: leader.address}, socket_timeout=0.6)
        partition_log = PartitionLog.open(committer, "/data/t-0", topic="t", partition=0, topic_id=TOPIC_ID,
                                          segment_bytes=1 << 20)
        partition_log.follow()
        scope = trio.CancelScope()
        nursery.start_soon(manager._fetch_loop, scope, partition_log, 1)
        with trio.fail_after(5):
            while leader.accepted < 2:
                await trio.sleep(0.02)
        scope.cancel()
        assert all(isinstance(frame, ReplicaFetchRequest) for frame in leader.frames) and len(leader.frames) >= 2
        await partition_log.aclose()
        nursery.cancel_scope.cancel()
    assert any("no answer within 0.6 s (replica.socket.timeout.ms)" in r.message for r in caplog.records)


def test_a_replica_socket_timeout_must_exceed_the_fetch_wait() -> None:
    with pytest.raises(ValueError, match="must exceed the 500 ms"):
        replica_manager({}, socket_timeout=0.5)


async def test_peer_sockets_have_keepalive_and_a_user_timeout() -> None:
    listener = await open_replication_listener("127.0.0.1:0")
    async with listener, await TCP.connect(listener_address(listener)) as dialled, await listener.accept() as accepted:
        for stream in (dialled, accepted):
            sock = stream.socket  # type: ignore[attr-defined]
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            if hasattr(socket, "TCP_USER_TIMEOUT"):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 10_000
