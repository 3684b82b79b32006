"""Consumer groups on a 3-node cluster: the controller coordinates, and its death moves the groups.

Every node names the controller as the coordinator of every group; the
other nodes answer group requests NOT_COORDINATOR.  Committed offsets are
metadata-log commands, so they are replicated: after kill -9 of the
controller a consumer of the group finds the new coordinator, rejoins, and
resumes from the offsets committed before the kill -- nothing consumed twice
past a commit, nothing skipped.
"""

from __future__ import annotations

import time
from pathlib import Path

import confluent_kafka
from confluent_kafka import TopicPartition

from chronik.protocol import decode_response

from .brokerproc import BrokerProcess
from .clients import Sent, confluent_produce
from .raw import Raw, request_frame
from .test_cluster import IDS, T0, create, eventually, running_cluster

TOPIC = "orders"
PARTITIONS = 3
PER_PARTITION = 40
GROUP = "billing"


def consumer(bootstrap: str) -> confluent_kafka.Consumer:
    return confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 200,
        "topic.metadata.refresh.interval.ms": 500, "reconnect.backoff.max.ms": 200,
    })


def consume(c: confluent_kafka.Consumer, count: int, timeout: float = 30.0,
            missing: set[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """(partition, offset) of the records read, each committed synchronously after it is read:
    ``count`` of them, or (given ``missing``) until every record in ``missing`` was read."""
    got: list[tuple[int, int]] = []
    deadline = time.monotonic() + timeout
    while (len(got) < count) if missing is None else not missing <= set(got):
        assert time.monotonic() < deadline, f"consumed {len(got)}"
        message = c.poll(0.2)
        if message is None or message.error() is not None:
            continue
        got.append((message.partition(), message.offset()))
        while True:  # a commit during the coordinator move fails retriably: retry until it lands
            try:
                c.commit(message=message, asynchronous=False)
                break
            except confluent_kafka.KafkaException as exc:
                assert exc.args[0].retriable() or exc.args[0].code() in (
                    confluent_kafka.KafkaError.NOT_COORDINATOR, confluent_kafka.KafkaError._WAIT_COORD,
                    confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS, confluent_kafka.KafkaError.ILLEGAL_GENERATION,
                    confluent_kafka.KafkaError.UNKNOWN_MEMBER_ID, confluent_kafka.KafkaError._TRANSPORT,
                ), exc
                if exc.args[0].code() in (confluent_kafka.KafkaError.ILLEGAL_GENERATION,
                                          confluent_kafka.KafkaError.UNKNOWN_MEMBER_ID,
                                          confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS):
                    break  # the group rebalanced: this record is consumed again from the last commit
                assert time.monotonic() < deadline, exc
                time.sleep(0.1)
    return got


def heartbeat_error(node: BrokerProcess) -> int:
    with Raw(node) as connection:
        connection.send(request_frame(12, 4, {"group_id": GROUP, "generation_id": 1, "member_id": "m",
                                              "group_instance_id": None}))
        frame = connection.read_frame()
    assert frame is not None
    return decode_response(12, 4, frame, 5).error_code


def test_groups_follow_the_controller_and_keep_commits_across_its_death(tmp_path: Path) -> None:
    with running_cluster(tmp_path, config_files=True) as cluster:
        controller = eventually(cluster.controller)
        others = [i for i in IDS if i != controller]
        create(cluster.nodes[others[0]], TOPIC, PARTITIONS, 3)
        for partition in range(PARTITIONS):
            records = [Sent(f"k{partition}-{n}".encode(), f"v{partition}-{n}".encode(), [], T0)
                       for n in range(PER_PARTITION)]
            assert confluent_produce(cluster.nodes[others[0]].bootstrap, TOPIC, records,
                                     partition=partition) == list(range(PER_PARTITION))
        # only the controller coordinates; the others send clients there
        assert heartbeat_error(cluster.nodes[others[0]]) == 16  # NOT_COORDINATOR
        assert heartbeat_error(cluster.nodes[controller]) == 25  # UNKNOWN_MEMBER_ID: it coordinates

        bootstrap = ",".join(cluster.nodes[i].bootstrap for i in IDS)
        first = consumer(bootstrap)
        first.subscribe([TOPIC])
        before = consume(first, PARTITIONS * PER_PARTITION // 2)
        committed_before = {tp.partition: tp.offset for tp in first.committed(
            [TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)}

        cluster.nodes[controller].kill()
        everything = {(p, o) for p in range(PARTITIONS) for o in range(PER_PARTITION)}
        after = consume(first, 0, timeout=60, missing=everything - set(before))
        first.close()

        # every record was seen; a record read again after the move is one past the last commit only
        assert set(before) | set(after) == everything
        for partition, offset in set(before) & set(after):
            assert offset >= committed_before.get(partition, 0), (partition, offset)

        survivor = consumer(cluster.nodes[others[1]].bootstrap)
        committed = survivor.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=15)
        assert {tp.partition: tp.offset for tp in committed} == {p: PER_PARTITION for p in range(PARTITIONS)}
        survivor.close()
