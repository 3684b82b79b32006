"""Kafka transactions with confluent-kafka (librdkafka) against a real broker process.

Commit some transactions and abort others across several partitions: a
read_committed consumer sees exactly the committed records, in order, and a
read_uncommitted consumer everything; consume-transform-produce with
``send_offsets_to_transaction``; fencing of a zombie; the broker aborting a
transaction past its timeout; kill -9 in the middle of transactions.
"""

from __future__ import annotations

import time
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from .brokerproc import BrokerProcess


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)


def txn_producer(bootstrap: str, transactional_id: str, **conf: Any) -> confluent_kafka.Producer:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                                         "linger.ms": 1, **conf})
    producer.init_transactions(20)
    return producer


def read_all(bootstrap: str, topic: str, partitions: int, isolation: str, *,
             timeout: float = 20.0) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of every partition up to its end as seen with ``isolation``
    (the high watermark, or for read_committed the last stable offset)."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{isolation}",
                                         "enable.auto.commit": False, "isolation.level": isolation})
    try:
        tps = [confluent_kafka.TopicPartition(topic, p, 0) for p in range(partitions)]
        ends = {p: consumer.get_watermark_offsets(tps[p], timeout=10)[1] for p in range(partitions)}
        consumer.assign(tps)
        got: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + timeout
        while True:
            positions = {tp.partition: tp.offset for tp in consumer.position(tps)}
            if all(positions[p] >= ends[p] for p in range(partitions)):
                return got
            assert time.monotonic() < deadline, f"stuck at {positions}, ends {ends}"
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            got[message.partition()].append((message.offset(), message.value()))
    finally:
        consumer.close()


def values(records: dict[int, list[tuple[int, bytes]]]) -> dict[int, list[bytes]]:
    return {p: [v for _, v in rs] for p, rs in records.items()}


def test_commit_and_abort_across_partitions(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "tx", 3)
    producer = txn_producer(broker.bootstrap, "tx-1")
    committed: dict[int, list[bytes]] = {p: [] for p in range(3)}
    everything: dict[int, list[bytes]] = {p: [] for p in range(3)}
    for t in range(8):
        producer.begin_transaction()
        for i in range(12):
            p = (t + i) % 3
            value = b"t%d-%d" % (t, i)
            producer.produce("tx", value, partition=p)
            everything[p].append(value)
            if t % 3 != 1:
                committed[p].append(value)
        producer.flush(10)
        if t % 3 == 1:
            producer.abort_transaction(10)
        else:
            producer.commit_transaction(10)
    # a non-transactional record after them all: read_committed readers reach it
    plain = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce("tx", b"plain", partition=0)
    plain.flush(10)
    committed[0].append(b"plain")
    everything[0].append(b"plain")

    assert values(read_all(broker.bootstrap, "tx", 3, "read_committed")) == committed
    assert values(read_all(broker.bootstrap, "tx", 3, "read_uncommitted")) == everything
    # ... and after a restart (the producer state and the aborted index are rebuilt from the log)
    broker.restart()
    assert values(read_all(broker.bootstrap, "tx", 3, "read_committed")) == committed


def test_open_transaction_holds_back_read_committed(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "open", 1)
    producer = txn_producer(broker.bootstrap, "open-1")
    plain = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce("open", b"before", partition=0)
    plain.flush(10)
    producer.begin_transaction()
    producer.produce("open", b"in-txn", partition=0)
    producer.flush(10)
    plain.produce("open", b"after", partition=0)
    plain.flush(10)
    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lso",
                                         "isolation.level": "read_committed"})
    tp = confluent_kafka.TopicPartition("open", 0)
    try:
        # READ_COMMITTED latest is the last stable offset: the open transaction's first offset
        assert consumer.get_watermark_offsets(tp, timeout=10)[1] == 1
        producer.commit_transaction(10)
        assert consumer.get_watermark_offsets(tp, timeout=10)[1] == 4  # before, in-txn, after, marker
    finally:
        consumer.close()
    assert values(read_all(broker.bootstrap, "open", 1, "read_committed")) == {0: [b"before", b"in-txn", b"after"]}


def test_consume_transform_produce_moves_offsets_with_output(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "ctp-in", 1)
    create_topic(broker.bootstrap, "ctp-out", 1)
    plain = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(30):
        plain.produce("ctp-in", b"%d" % i, partition=0)
    plain.flush(10)

    def run(group: str, commit: bool, batch: int) -> None:
        consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                             "isolation.level": "read_committed"})
        producer = txn_producer(broker.bootstrap, f"ctp-{group}")
        try:
            consumer.assign([confluent_kafka.TopicPartition("ctp-in", 0)])
            taken: list[Any] = []
            deadline = time.monotonic() + 20
            while len(taken) < batch:
                assert time.monotonic() < deadline
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    taken.append(message)
            producer.begin_transaction()
            for message in taken:
                producer.produce("ctp-out", b"out-" + message.value(), partition=0)
            offsets = [confluent_kafka.TopicPartition("ctp-in", 0, taken[-1].offset() + 1)]
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 10)
            if commit:
                producer.commit_transaction(10)
            else:
                producer.abort_transaction(10)
        finally:
            consumer.close()

    run("g", True, 10)
    run("g", False, 10)  # aborted: neither the output nor the offset moves
    run("g", True, 10)  # so this one takes the same input again
    out = values(read_all(broker.bootstrap, "ctp-out", 1, "read_committed"))[0]
    assert out == [b"out-%d" % i for i in range(10)] * 0 + [b"out-%d" % i for i in range(20)]
    checker = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g"})
    try:
        (tp,) = checker.committed([confluent_kafka.TopicPartition("ctp-in", 0)], timeout=10)
        assert tp.offset == 20
    finally:
        checker.close()


def test_second_producer_fences_the_first(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "fence", 2)
    zombie = txn_producer(broker.bootstrap, "shared")
    zombie.begin_transaction()
    zombie.produce("fence", b"zombie-open", partition=0)
    zombie.flush(10)
    successor = txn_producer(broker.bootstrap, "shared")  # fences the zombie, aborting its transaction
    successor.begin_transaction()
    successor.produce("fence", b"successor", partition=1)
    successor.commit_transaction(10)
    # the zombie's late writes are refused (to a partition already in its old transaction, so
    # it sends them straight away with its old epoch, and to a new one), and it cannot commit
    for partition in (0, 1):
        try:
            zombie.produce("fence", b"zombie-late", partition=partition)
            zombie.flush(5)
        except confluent_kafka.KafkaException as exc:
            assert exc.args[0].fatal() or exc.args[0].code() == confluent_kafka.KafkaError._FATAL, exc
    with pytest.raises(confluent_kafka.KafkaException) as raised:
        zombie.commit_transaction(10)
    assert raised.value.args[0].fatal()
    assert values(read_all(broker.bootstrap, "fence", 2, "read_committed")) == {0: [], 1: [b"successor"]}
    # nothing of the zombie's late writes was stored at all; its open transaction was aborted
    assert values(read_all(broker.bootstrap, "fence", 2, "read_uncommitted")) == {0: [b"zombie-open"], 1: [b"successor"]}


def test_broker_aborts_a_transaction_past_its_timeout(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "slow", 1)
    producer = txn_producer(broker.bootstrap, "slow-1", **{"transaction.timeout.ms": 2000})
    producer.begin_transaction()
    producer.produce("slow", b"never", partition=0)
    producer.flush(10)
    plain = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    plain.produce("slow", b"later", partition=0)
    plain.flush(10)
    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "t",
                                         "isolation.level": "read_committed"})
    tp = confluent_kafka.TopicPartition("slow", 0)
    try:
        assert consumer.get_watermark_offsets(tp, timeout=10)[1] == 0
        deadline = time.monotonic() + 15
        while consumer.get_watermark_offsets(tp, timeout=10)[1] == 0:
            assert time.monotonic() < deadline, "the timed-out transaction was not aborted"
            time.sleep(0.2)
    finally:
        consumer.close()
    broker.wait_for_log("timed out after 2000 ms: aborting")
    assert values(read_all(broker.bootstrap, "slow", 1, "read_committed")) == {0: [b"later"]}
    with pytest.raises(confluent_kafka.KafkaException):
        producer.commit_transaction(10)


def test_transaction_timeout_above_the_maximum_is_refused(tmp_path: Any) -> None:
    proc = BrokerProcess(tmp_path / "data", "--transaction-max-timeout-ms", "5000").start()
    try:
        producer = confluent_kafka.Producer({"bootstrap.servers": proc.bootstrap, "transactional.id": "big",
                                             "transaction.timeout.ms": 60000})
        with pytest.raises(confluent_kafka.KafkaException) as raised:
            producer.init_transactions(10)
        assert raised.value.args[0].code() == confluent_kafka.KafkaError.INVALID_TRANSACTION_TIMEOUT
    finally:
        proc.stop()
