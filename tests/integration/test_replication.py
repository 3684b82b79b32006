"""Cluster mode, data replication: three real nodes, topics with three replicas, kill -9 and restart.

acks=all is acknowledged only once every in-sync replica has the records;
a killed follower leaves the ISR (``replica.lag.time.max.ms`` is short
here), so min.insync.replicas=3 refuses writes, and rejoins once restarted
and caught up.  At the end the nodes are stopped and every replica's files
are read back: the same batches, byte for byte, at the same offsets.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import trio
from confluent_kafka.admin import AdminClient, NewTopic

from chronik.log import PartitionLog
from chronik.protocol import decode_response
from chronik.storage import create_backend, default_backend_name, open_group_committer

from .clients import Sent, confluent_consume, confluent_produce
from .raw import Raw, produce_frame
from .test_cluster import IDS, T0, Cluster, eventually, running_cluster, stop_all

LAG_MS = 1500


def isr(cluster: Cluster, node_id: int, topic: str) -> list[int]:
    return sorted(cluster.topics(node_id)[topic].partitions[0].isr_nodes)


def raw_produce_error(cluster: Cluster, node_id: int, topic: str) -> int:
    """acks=all produce of one record to partition 0 through ``node_id``: the partition's error code."""
    with Raw(cluster.nodes[node_id], timeout=15) as connection:
        connection.send(produce_frame(topic, 0, b"raw"))
        frame = connection.read_frame()
    assert frame is not None
    return int(decode_response(0, 9, frame, 5).responses[0].partition_responses[0].error_code)


def read_replica(data_dir: Path, topic: str, topic_id: str) -> tuple[int, int, list[bytes]]:
    """(log start, log end, batches from the log start) of one replica's files, read with the broker's own log code."""

    async def read() -> tuple[int, int, list[bytes]]:
        backend = create_backend(default_backend_name())
        try:
            async with open_group_committer(backend, str(data_dir)) as committer:
                log = PartitionLog.open(committer, f"{data_dir}/{topic}-0", topic=topic, partition=0,
                                        topic_id=topic_id, segment_bytes=1 << 30)
                try:
                    batches = [bytes(b) for b in log.read(log.log_start_offset, 1 << 30, end=log.log_end_offset)]
                    return log.log_start_offset, log.log_end_offset, batches
                finally:
                    await log.aclose()
        finally:
            await backend.aclose()

    return trio.run(read)


def stored_batches(data_dir: Path, topic: str, topic_id: str) -> list[bytes]:
    """Every batch in one replica's files (its log starts at 0)."""
    start, _, batches = read_replica(data_dir, topic, topic_id)
    assert start == 0
    return batches


def test_acks_all_replicates_isr_shrinks_and_a_restarted_follower_catches_up(tmp_path: Path) -> None:
    with running_cluster(tmp_path, "--set", f"replica.lag.time.max.ms={LAG_MS}") as cluster:
        controller = eventually(cluster.controller)
        admin = AdminClient({"bootstrap.servers": cluster.nodes[controller].bootstrap})
        topics = [NewTopic("r", 1, 3), NewTopic("strict", 1, 3, config={"min.insync.replicas": "3"})]
        for future in admin.create_topics(topics, operation_timeout=10).values():
            future.result(15)
        meta = {t: eventually(lambda: cluster.topics(controller).get(t)) for t in ("r", "strict")}
        leader = meta["r"].partitions[0].leader_id
        assert meta["strict"].partitions[0].leader_id == leader  # placement starts both at the same broker
        assert isr(cluster, leader, "r") == [1, 2, 3]

        bootstrap = cluster.nodes[leader].bootstrap
        first = [Sent(b"k%d" % n, b"v%d" % n, [], T0 + n) for n in range(20)]
        assert confluent_produce(bootstrap, "r", first) == list(range(20))
        assert [r.value for r in confluent_consume(bootstrap, "r", 20)] == [r.value for r in first]
        assert raw_produce_error(cluster, leader, "strict") == 0

        # kill -9 a follower (not the controller, so the ISR change commits at once)
        victim = next(i for i in IDS if i not in (leader, controller)) if leader != controller else \
            next(i for i in IDS if i != leader)
        cluster.nodes[victim].kill()
        # the first acks=all write waits for the ISR to shrink, then fails; later ones fail at once
        killed_at = time.monotonic()
        assert raw_produce_error(cluster, leader, "strict") in (19, 20)  # NOT_ENOUGH_REPLICAS(_AFTER_APPEND)
        assert time.monotonic() - killed_at < LAG_MS / 1000 + 2.5  # released by the ISR shrink, not the timeout
        eventually(lambda: isr(cluster, leader, "strict") == sorted(set(IDS) - {victim}))
        assert raw_produce_error(cluster, leader, "strict") == 19
        # with min.insync.replicas=1 the two remaining replicas take acks=all writes
        eventually(lambda: isr(cluster, leader, "r") == sorted(set(IDS) - {victim}))
        second = [Sent(None, b"w%d" % n, [], T0 + n) for n in range(10)]
        assert confluent_produce(bootstrap, "r", second) == list(range(20, 30))

        # the restarted follower catches up from its own log end and rejoins the ISR
        cluster.nodes[victim].start()
        eventually(lambda: isr(cluster, leader, "r") == [1, 2, 3], 15)
        eventually(lambda: isr(cluster, leader, "strict") == [1, 2, 3], 15)
        assert raw_produce_error(cluster, leader, "strict") == 0
        assert cluster.nodes[victim].wait_for_log(r"follower caught up on r-0")
        # the leader shrank the ISR, or the controller fenced the victim first (which also takes it out)
        assert re.search(r"strict-0: ISR \[1, 2, 3\] -> \[\d, \d\]", cluster.nodes[leader].output()) \
            or f"fenced broker {victim};" in cluster.nodes[controller].output()
        topic_ids = {t: meta[t].topic_id.hex for t in ("r", "strict")}
        stop_all(cluster)

    for topic, topic_id in topic_ids.items():
        replicas = {i: stored_batches(tmp_path / f"node{i}", topic, topic_id) for i in IDS}
        assert replicas[1] == replicas[2] == replicas[3], topic
    assert sum(len(b) for b in replicas[1]) > 0
    r_batches = stored_batches(tmp_path / f"node{leader}", "r", topic_ids["r"])
    assert b"v19" in b"".join(r_batches) and b"w9" in b"".join(r_batches)
