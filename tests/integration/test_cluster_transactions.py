"""Transactions on a three-node cluster: markers to other nodes' partitions, failover of a
partition leader and of the coordinator (the controller) in the middle of transactions."""

from __future__ import annotations

import time
from pathlib import Path

import confluent_kafka

from .clients import confluent_read_all, end_transaction
from .test_cluster import IDS, Cluster, create, eventually, running_cluster
from .test_failover import leaders

TOPIC = "ctx"
PARTITIONS = 3


def send(producer: confluent_kafka.Producer, tag: str) -> list[tuple[int, bytes]]:
    sent = []
    producer.begin_transaction()
    for i in range(6):
        value = f"{tag}-{i}".encode()
        producer.produce(TOPIC, value, partition=i % PARTITIONS)
        sent.append((i % PARTITIONS, value))
    producer.flush(15)
    return sent


def partition_leaders(cluster: Cluster, node_id: int) -> list[int]:
    return [leader for leader, _, _ in leaders_of(cluster, node_id)]


def leaders_of(cluster: Cluster, node_id: int) -> list[tuple[int, int, list[int]]]:
    return [(p.leader_id, p.leader_epoch, sorted(p.isr_nodes)) for p in cluster.topics(node_id)[TOPIC].partitions]


def test_transactions_survive_a_leader_and_the_coordinator_dying(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        controller = eventually(cluster.controller)
        create(cluster.nodes[controller], TOPIC, PARTITIONS, 3)
        eventually(lambda: TOPIC in cluster.topics(controller)
                   and all(isr == [1, 2, 3] for _, _, isr in leaders_of(cluster, controller)), 20)
        bootstrap = ",".join(node.bootstrap for node in cluster.nodes.values())
        producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "transactional.id": "cluster-1",
                                             "linger.ms": 1, "reconnect.backoff.ms": 50,
                                             "reconnect.backoff.max.ms": 500, "retry.backoff.ms": 100})
        producer.init_transactions(30)
        committed: list[tuple[int, bytes]] = []
        aborted: list[tuple[int, bytes]] = []
        # markers go to partitions led by every node (two of them through WriteTxnMarkers)
        assert sorted(partition_leaders(cluster, controller)) == [1, 2, 3]
        committed += send(producer, "a")
        end_transaction(producer, True, attempts=20, timeout=15, pause=0.5)
        aborted += send(producer, "b")
        end_transaction(producer, False, attempts=20, timeout=15, pause=0.5)

        # kill -9 a partition leader that is not the coordinator, mid-transaction
        in_flight = send(producer, "c")
        victim = next(i for i in IDS if i != controller)
        cluster.nodes[victim].kill()
        eventually(lambda: victim not in partition_leaders(cluster, controller), 20)
        end_transaction(producer, True, attempts=20, timeout=15, pause=0.5)
        committed += in_flight
        cluster.nodes[victim].start()
        eventually(lambda: all(isr == [1, 2, 3] for _, _, isr in leaders_of(cluster, controller)), 30)

        # kill -9 the coordinator (the controller) mid-transaction: the next controller resumes it
        in_flight = send(producer, "d")
        cluster.nodes[controller].kill()
        survivors = tuple(i for i in IDS if i != controller)
        eventually(lambda: len(ids := {cluster.metadata(i).controller_id for i in survivors}) == 1
                   and ids.pop() not in (-1, controller), 30)
        end_transaction(producer, True, attempts=20, timeout=15, pause=0.5)
        committed += in_flight
        aborted += send(producer, "e")
        end_transaction(producer, False, attempts=20, timeout=15, pause=0.5)
        producer.flush(10)

        reader = cluster.nodes[survivors[0]].bootstrap
        got = confluent_read_all(reader, TOPIC, PARTITIONS, "read_committed", timeout=30)
        expected = {p: [v for q, v in committed if q == p] for p in range(PARTITIONS)}
        assert {p: [v for _, v in records] for p, records in got.items()} == expected
        everything = confluent_read_all(reader, TOPIC, PARTITIONS, "read_uncommitted", timeout=30)
        assert sorted(v for records in everything.values() for _, v in records) == sorted(
            v for _, v in committed + aborted)
        # every decided transaction is complete: the last stable offset is the high watermark everywhere
        consumer = confluent_kafka.Consumer({"bootstrap.servers": reader, "group.id": "lso",
                                             "isolation.level": "read_committed"})
        try:
            for p in range(PARTITIONS):
                tp = confluent_kafka.TopicPartition(TOPIC, p)
                assert consumer.get_watermark_offsets(tp, timeout=10)[1] == max(o for o, _ in everything[p]) + 2
        finally:
            consumer.close()
