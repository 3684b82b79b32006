"""Cluster mode: acks=all is never acknowledged without the in-sync replicas.

Three real nodes and a topic with three partitions, three replicas and
``min.insync.replicas=2``.  An isolated leader (its two peers SIGSTOPped:
from its side its followers and the controller are silent, while it still
serves clients) must acknowledge no acks=all write; with two of three nodes
killed (no metadata majority, so the ISR cannot change) acks=all writes are
not acknowledged either while acks=1 writes still are.  Once the peers are
back, writes are acknowledged again, and every acknowledged record is read
back at its acknowledged offset.  Records that were appended but never
acknowledged may show up later (Kafka allows that), so they are not asserted
absent.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from chronik.protocol import ErrorCode, decode_response

from .clients import confluent_consume
from .raw import Raw, produce_frame
from .test_cluster import IDS, Cluster, eventually, running_cluster
from .test_failover import PARTITIONS, TOPIC, leaders


def create_topic(cluster: Cluster) -> int:
    """The RF 3 topic with min.insync.replicas=2, every ISR full; returns the controller."""
    controller = eventually(cluster.controller)
    admin = AdminClient({"bootstrap.servers": cluster.nodes[controller].bootstrap})
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3, config={"min.insync.replicas": "2"})],
                        operation_timeout=10)[TOPIC].result(15)
    eventually(lambda: TOPIC in cluster.topics(controller)
               and all(isr == [1, 2, 3] for _, _, isr in leaders(cluster, controller)))
    return controller


def produce(bootstrap: str, partition: int, values: list[bytes], acks: str, timeout_ms: int = 4000) -> dict[bytes, Any]:
    """Produce ``values`` to one partition; each value maps to its offset, or to the error it failed with."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 0,
                                         "message.timeout.ms": timeout_ms, "request.timeout.ms": timeout_ms})
    outcome: dict[bytes, Any] = {}

    def report(err: Any, msg: Any) -> None:
        outcome[msg.value()] = err if err is not None else msg.offset()

    for value in values:
        producer.produce(TOPIC, value, partition=partition, on_delivery=report)
    assert producer.flush(timeout_ms / 1000 + 10) == 0
    assert set(outcome) == set(values)
    return outcome


def offsets(outcome: dict[bytes, Any]) -> dict[int, bytes]:
    """The acknowledged part of an outcome, as offset -> value; fails if anything was not acknowledged."""
    assert all(isinstance(o, int) for o in outcome.values()), outcome
    return {offset: value for value, offset in outcome.items()}


def check_log(cluster: Cluster, node_id: int, partition: int, acked: dict[int, bytes], sent: set[bytes]) -> None:
    """Read the partition up to its high watermark through ``node_id``: every acknowledged record is at its
    offset, and everything else there is a record that was sent (unacknowledged ones may have been kept)."""
    got = confluent_consume(cluster.nodes[node_id].bootstrap, TOPIC, max(acked) + 1, partition=partition)
    assert [r.offset for r in got] == list(range(len(got)))
    assert {offset: got[offset].value for offset in acked} == acked
    assert {r.value for r in got} <= sent


@contextmanager
def stopped(cluster: Cluster, node_ids: list[int]) -> Iterator[None]:
    """SIGSTOP these nodes for the block; SIGCONT them however it ends."""
    try:
        for i in node_ids:
            proc = cluster.nodes[i].proc
            assert proc is not None
            os.kill(proc.pid, signal.SIGSTOP)
        yield
    finally:
        for i in node_ids:
            proc = cluster.nodes[i].proc
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)


def test_an_isolated_leader_acknowledges_no_acks_all_writes(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        controller = create_topic(cluster)
        partition, (leader, _, _) = next((p, meta) for p, meta in enumerate(leaders(cluster, controller))
                                         if meta[0] != controller)
        peers = [i for i in IDS if i != leader]
        bootstrap = cluster.nodes[leader].bootstrap
        sent = {b"before-%d" % n for n in range(5)}
        acked = offsets(produce(bootstrap, partition, sorted(sent), "all"))

        with stopped(cluster, peers):
            # a raw acks=-1 produce (broker-side timeout 5 s) and a confluent-kafka one in parallel
            with Raw(cluster.nodes[leader]) as connection:
                connection.send(produce_frame(TOPIC, partition, b"raw-isolated"))
                isolated = [b"isolated-%d" % n for n in range(5)]
                outcome = produce(bootstrap, partition, isolated, "all")
                frame = connection.read_frame()
            sent |= {b"raw-isolated", *isolated}
            assert all(isinstance(err, confluent_kafka.KafkaError) for err in outcome.values()), outcome
            assert frame is not None
            answer = decode_response(0, 9, frame, 5).responses[0].partition_responses[0]
            assert (answer.error_code, answer.base_offset) == (ErrorCode.REQUEST_TIMED_OUT, -1)

        # settled: a controller every node names, and every ISR full again -- the new controller
        # may have fenced the resumed leader out of all of them, including those of the other
        # (empty) partitions whose leaders did not change
        controller = eventually(cluster.controller, 15)
        eventually(lambda: all(isr == [1, 2, 3] for _, _, isr in leaders(cluster, controller)), 20)
        after = [b"after-%d" % n for n in range(5)]
        sent |= set(after)
        new_leader = leaders(cluster, controller)[partition][0]
        acked |= offsets(produce(cluster.nodes[new_leader].bootstrap, partition, after, "all", 10000))
        for i in IDS:
            check_log(cluster, i, partition, acked, sent)


def test_min_insync_replicas_is_enforced_with_two_of_three_nodes_down(tmp_path: Path) -> None:
    with running_cluster(tmp_path, "--replica-lag-time-max-ms", "2000") as cluster:
        controller = create_topic(cluster)
        partition, (leader, _, _) = next((p, meta) for p, meta in enumerate(leaders(cluster, controller))
                                         if meta[0] == controller)
        followers = [i for i in IDS if i != leader]
        bootstrap = cluster.nodes[leader].bootstrap
        sent = {b"before-%d" % n for n in range(5)}
        acked = offsets(produce(bootstrap, partition, sorted(sent), "all"))

        for i in followers:
            cluster.nodes[i].kill()
        all_outcome = produce(bootstrap, partition, [b"all-%d" % n for n in range(5)], "all")
        one = [b"one-%d" % n for n in range(5)]
        one_acked = offsets(produce(bootstrap, partition, one, "1"))
        sent |= {*all_outcome, *one}
        # no majority, so the ISR cannot shrink: acks=all waits for the dead followers and times out
        assert all(isinstance(err, confluent_kafka.KafkaError) for err in all_outcome.values()), all_outcome
        assert leaders(cluster, leader)[partition][2] == [1, 2, 3]

        cluster.nodes[followers[0]].start()
        # majority back: the dead follower is fenced out of the ISR, the restarted one is in it
        survivors = (leader, followers[0])
        # (a node answers no partitions in the moment it becomes controller, before it has
        # applied the earlier epochs' entries: that is not an answer yet)
        eventually(lambda: (state := leaders(cluster, leader)) != [] and state[partition][2] == sorted(survivors), 20)
        new_leader = leaders(cluster, leader)[partition][0]
        back = [b"back-%d" % n for n in range(5)]
        sent |= set(back)
        acked |= offsets(produce(cluster.nodes[new_leader].bootstrap, partition, back, "all", 10000))
        # acks=1 records acknowledged by the only live replica survive: it stayed leader throughout
        assert new_leader == leader
        acked |= one_acked
        for i in survivors:
            check_log(cluster, i, partition, acked, sent)
