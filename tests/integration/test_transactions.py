"""Kafka transactions with confluent-kafka (librdkafka) against a real broker process.

Commit some transactions and abort others across several partitions: a
read_committed consumer sees exactly the committed records, in order, and a
read_uncommitted consumer everything; consume-transform-produce with
``send_offsets_to_transaction``; fencing of a zombie; the broker aborting a
transaction past its timeout; every step over the raw protocol; aiokafka and
kafka-python.  kill -9 in the middle of transactions: ``test_txn_checker.py``.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import aiokafka
import confluent_kafka
import pytest

from chronik.protocol import ErrorCode, Record, encode_batch

from .brokerproc import BrokerProcess, running_broker
from .clients import confluent_read_all, create_topic, kafka
from .raw import Raw, request_frame


def txn_producer(bootstrap: str, transactional_id: str, **conf: Any) -> confluent_kafka.Producer:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                                         "linger.ms": 1, **conf})
    producer.init_transactions(20)
    return producer


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

    assert values(confluent_read_all(broker.bootstrap, "tx", 3, "read_committed")) == committed
    assert values(confluent_read_all(broker.bootstrap, "tx", 3, "read_uncommitted")) == everything
    # ... and after a restart (the producer state and the aborted index are rebuilt from the log)
    broker.restart()
    assert values(confluent_read_all(broker.bootstrap, "tx", 3, "read_committed")) == committed


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
    assert values(confluent_read_all(broker.bootstrap, "open", 1, "read_committed")) == {0: [b"before", b"in-txn", b"after"]}


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
    out = values(confluent_read_all(broker.bootstrap, "ctp-out", 1, "read_committed"))[0]
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
    assert values(confluent_read_all(broker.bootstrap, "fence", 2, "read_committed")) == {0: [], 1: [b"successor"]}
    # nothing of the zombie's late writes was stored at all; its open transaction was aborted
    assert values(confluent_read_all(broker.bootstrap, "fence", 2, "read_uncommitted")) == {0: [b"zombie-open"], 1: [b"successor"]}


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
    assert values(confluent_read_all(broker.bootstrap, "slow", 1, "read_committed")) == {0: [b"later"]}
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


def txn_batch(pid: int, epoch: int, seq: int, value: bytes) -> bytes:
    return bytes(encode_batch([Record(0, 1_700_000_000_000, None, value)], producer_id=pid, producer_epoch=epoch,
                              base_sequence=seq, is_transactional=True))


def produce(raw: Raw, txn_id: str | None, topic: str, partition: int, batch: bytes) -> tuple[int, int]:
    answer = raw.call(0, 9, {"transactional_id": txn_id, "acks": -1, "timeout": 5000, "topic_data": [
        {"name": topic, "partition_data": [{"index": partition, "records": batch}]}]})
    result = answer.responses[0].partition_responses[0]
    return result.error_code, result.base_offset


def fetch(raw: Raw, topic: str, partition: int, isolation: int) -> Any:
    answer = raw.call(1, 11, {
        "replica_id": -1, "max_wait": 0, "min_bytes": 1, "max_bytes": 1 << 20, "isolation_level": isolation,
        "session_id": 0, "session_epoch": -1, "rack_id": "", "forgotten_topics_data": [],
        "topics": [{"topic": topic, "partitions": [{
            "partition": partition, "fetch_offset": 0, "current_leader_epoch": -1, "log_start_offset": -1,
            "partition_max_bytes": 1 << 20}]}]})
    return answer.responses[0].partitions[0]


def add_partitions(raw: Raw, txn_id: str, pid: int, epoch: int, topic: str, partitions: list[int],
                   version: int = 3) -> dict[int, int]:
    answer = raw.call(24, version, {"v3_and_below_transactional_id": txn_id, "v3_and_below_producer_id": pid,
                                    "v3_and_below_producer_epoch": epoch,
                                    "v3_and_below_topics": [{"name": topic, "partitions": partitions}]})
    return {r.partition_index: r.partition_error_code for r in answer.results_by_topic_v3_and_below[0].results_by_partition}


def offset_fetch(raw: Raw, group: str, topic: str, require_stable: bool) -> tuple[int, int]:
    answer = raw.call(9, 7, {"group_id": group, "topics": [{"name": topic, "partition_indexes": [0]}],
                             "require_stable": require_stable})
    partition = answer.topics[0].partitions[0]
    return partition.error_code, partition.committed_offset


def test_the_transaction_protocol_step_by_step(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "raw-out", 2)
    create_topic(broker.bootstrap, "raw-in", 1)
    with Raw(broker) as raw:
        answer = raw.call(10, 3, {"key": "r", "key_type": 1})
        assert (answer.error_code, answer.port) == (0, broker.port)
        answer = raw.call(22, 4, {"transactional_id": "r", "transaction_timeout": 60000, "producer_id": -1,
                                  "producer_epoch": -1})
        assert answer.error_code == 0
        pid, epoch = answer.producer_id, answer.producer_epoch
        # KIP-890 part 1: a transactional batch to a partition not in the transaction is refused
        assert produce(raw, "r", "raw-out", 0, txn_batch(pid, epoch, 0, b"early")) == (ErrorCode.INVALID_TXN_STATE, -1)
        assert produce(raw, None, "raw-out", 0, txn_batch(pid, epoch, 0, b"no-id"))[0] == ErrorCode.INVALID_TXN_STATE
        assert add_partitions(raw, "r", pid, epoch, "raw-out", [0]) == {0: 0}
        assert add_partitions(raw, "r", pid, epoch, "nope", [0]) == {0: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
        assert produce(raw, "r", "raw-out", 0, txn_batch(pid, epoch, 0, b"one")) == (0, 0)
        verify = raw.call(24, 4, {"transactions": [{"transactional_id": "r", "producer_id": pid, "producer_epoch": epoch,
                                                    "verify_only": True,
                                                    "topics": [{"name": "raw-out", "partitions": [0, 1]}]}]})
        results = verify.results_by_transaction[0].topic_results[0].results_by_partition
        assert {r.partition_index: r.partition_error_code for r in results} == {0: 0, 1: ErrorCode.INVALID_TXN_STATE}
        # offsets inside the transaction: pending, so require_stable is told UNSTABLE_OFFSET_COMMIT
        answer = raw.call(25, 3, {"transactional_id": "r", "producer_id": pid, "producer_epoch": epoch, "group_id": "g"})
        assert answer.error_code == 0
        answer = raw.call(28, 3, {"transactional_id": "r", "group_id": "g", "producer_id": pid, "producer_epoch": epoch,
                                  "generation_id": -1, "member_id": "", "group_instance_id": None, "topics": [
                                      {"name": "raw-in", "partitions": [{"partition_index": 0, "committed_offset": 7,
                                                                         "committed_leader_epoch": -1,
                                                                         "committed_metadata": None}]}]})
        assert answer.topics[0].partitions[0].error_code == 0
        assert offset_fetch(raw, "g", "raw-in", True) == (ErrorCode.UNSTABLE_OFFSET_COMMIT, -1)
        assert offset_fetch(raw, "g", "raw-in", False) == (0, -1)
        # read_committed sees nothing yet; the LSO is the transaction's first offset in every answer
        committed_view = fetch(raw, "raw-out", 0, 1)
        assert (committed_view.high_watermark, committed_view.last_stable_offset, len(committed_view.records or b"")) \
            == (1, 0, 0)
        uncommitted_view = fetch(raw, "raw-out", 0, 0)
        assert uncommitted_view.last_stable_offset == 0 and len(uncommitted_view.records) > 0
        answer = raw.call(26, 3, {"transactional_id": "r", "producer_id": pid, "producer_epoch": epoch, "committed": True})
        assert answer.error_code == 0
        assert offset_fetch(raw, "g", "raw-in", True) == (0, 7)
        committed_view = fetch(raw, "raw-out", 0, 1)
        assert (committed_view.high_watermark, committed_view.last_stable_offset) == (2, 2)
        assert committed_view.aborted_transactions == ()
        # an aborted transaction is listed for read_committed readers
        assert add_partitions(raw, "r", pid, epoch, "raw-out", [0]) == {0: 0}
        assert produce(raw, "r", "raw-out", 0, txn_batch(pid, epoch, 1, b"two")) == (0, 2)
        answer = raw.call(26, 3, {"transactional_id": "r", "producer_id": pid, "producer_epoch": epoch, "committed": False})
        assert answer.error_code == 0
        committed_view = fetch(raw, "raw-out", 0, 1)
        assert [(t.producer_id, t.first_offset) for t in committed_view.aborted_transactions] == [(pid, 2)]
        # a new producer of the id fences this one: old epoch refused everywhere, by version
        answer = raw.call(22, 4, {"transactional_id": "r", "transaction_timeout": 60000, "producer_id": -1,
                                  "producer_epoch": -1})
        assert (answer.error_code, answer.producer_id, answer.producer_epoch) == (0, pid, epoch + 1)
        assert add_partitions(raw, "r", pid, epoch, "raw-out", [0]) == {0: ErrorCode.PRODUCER_FENCED}
        assert add_partitions(raw, "r", pid, epoch, "raw-out", [0], version=1) == {0: ErrorCode.INVALID_PRODUCER_EPOCH}
        assert produce(raw, "r", "raw-out", 0, txn_batch(pid, epoch, 2, b"zombie"))[0] == ErrorCode.INVALID_PRODUCER_EPOCH
        answer = raw.call(26, 1, {"transactional_id": "r", "producer_id": pid, "producer_epoch": epoch, "committed": True})
        assert answer.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
        answer = raw.call(26, 3, {"transactional_id": "r", "producer_id": pid + 1, "producer_epoch": epoch + 1,
                                  "committed": True})
        assert answer.error_code == ErrorCode.INVALID_PRODUCER_ID_MAPPING
        answer = raw.call(26, 3, {"transactional_id": "r", "producer_id": pid, "producer_epoch": epoch + 1,
                                  "committed": True})
        assert answer.error_code == ErrorCode.INVALID_TXN_STATE  # nothing is ongoing


def test_aiokafka_transactions(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "aio-tx", 2)

    async def run() -> list[tuple[int, bytes]]:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="aio-1")
        await producer.start()
        try:
            async with producer.transaction():
                for i in range(4):
                    await producer.send("aio-tx", b"c1-%d" % i, partition=i % 2)
            await producer.begin_transaction()
            for i in range(3):
                await producer.send("aio-tx", b"ab-%d" % i, partition=i % 2)
            await producer.abort_transaction()
            async with producer.transaction():
                await producer.send("aio-tx", b"c2-0", partition=1)
        finally:
            await producer.stop()
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level="read_committed",
                                             auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([aiokafka.TopicPartition("aio-tx", p) for p in range(2)])
            got: list[tuple[int, bytes]] = []
            async with asyncio.timeout(20):
                while len(got) < 5:
                    batches = await consumer.getmany(timeout_ms=200)
                    got += [(m.partition, m.value) for messages in batches.values() for m in messages]
            return got
        finally:
            await consumer.stop()

    got = asyncio.run(run())
    assert sorted(got) == [(0, b"c1-0"), (0, b"c1-2"), (1, b"c1-1"), (1, b"c1-3"), (1, b"c2-0")]
    assert [v for p, v in got if p == 1] == [b"c1-1", b"c1-3", b"c2-0"]
    assert values(confluent_read_all(broker.bootstrap, "aio-tx", 2, "read_uncommitted"))[0] == [
        b"c1-0", b"c1-2", b"ab-0", b"ab-2"]


def test_kafka_python_transactions(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "kp-tx", 2)
    producer = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="kp-1")
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(4):
            producer.send("kp-tx", b"c1-%d" % i, partition=i % 2)
        producer.commit_transaction()
        producer.begin_transaction()
        for i in range(2):
            producer.send("kp-tx", b"ab-%d" % i, partition=i % 2)
        producer.flush()
        producer.abort_transaction()
        producer.begin_transaction()
        producer.send("kp-tx", b"c2-0", partition=0)
        producer.commit_transaction()
    finally:
        producer.close(5)
    consumer = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap, isolation_level="read_committed",
                                   auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        consumer.assign([kafka.TopicPartition("kp-tx", p) for p in range(2)])
        got = [(m.partition, m.value) for m in consumer]
    finally:
        consumer.close()
    assert sorted(got) == [(0, b"c1-0"), (0, b"c1-2"), (0, b"c2-0"), (1, b"c1-1"), (1, b"c1-3")]
    assert values(confluent_read_all(broker.bootstrap, "kp-tx", 2, "read_uncommitted"))[1] == [
        b"c1-1", b"c1-3", b"ab-1"]


def test_operators_see_hanging_transactions(broker: BrokerProcess) -> None:
    """ListTransactions, DescribeTransactions and DescribeProducers show an open transaction."""
    create_topic(broker.bootstrap, "ops", 2)
    producer = txn_producer(broker.bootstrap, "ops-1")
    producer.begin_transaction()
    producer.produce("ops", b"x", partition=1)
    producer.flush(10)
    done = txn_producer(broker.bootstrap, "ops-2")
    done.begin_transaction()
    done.produce("ops", b"y", partition=0)
    done.commit_transaction(10)
    time.sleep(0.05)
    with Raw(broker) as raw:
        listed = raw.call(66, 1, {"state_filters": [], "producer_id_filters": [], "duration_filter": -1})
        assert sorted((t.transactional_id, t.transaction_state) for t in listed.transaction_states) == [
            ("ops-1", "Ongoing"), ("ops-2", "CompleteCommit")]
        hanging = raw.call(66, 1, {"state_filters": ["Ongoing", "Bogus"], "producer_id_filters": [],
                                   "duration_filter": 0})
        assert [t.transactional_id for t in hanging.transaction_states] == ["ops-1"]
        assert hanging.unknown_state_filters == ("Bogus",)
        described = raw.call(65, 0, {"transactional_ids": ["ops-1"]})
        (ops,) = described.transaction_states
        assert (ops.error_code, ops.transaction_state, ops.producer_epoch) == (0, "Ongoing", 0)
        assert [(t.topic, t.partitions) for t in ops.topics] == [("ops", (1,))]
        assert ops.transaction_timeout.total_seconds() == 60
        # an unknown id: start time -1 (as Kafka sends it, which kio cannot decode), so read the error code raw
        raw.send(request_frame(65, 0, {"transactional_ids": ["nope"]}))
        frame = raw.read_frame()
        assert frame is not None  # correlation id, tags, throttle time, array length, then the error code
        assert struct.unpack_from(">h", frame, 4 + 1 + 4 + 1)[0] == ErrorCode.TRANSACTIONAL_ID_NOT_FOUND
        producers = raw.call(61, 0, {"topics": [{"name": "ops", "partition_indexes": [0, 1, 7]}]})
        p0, p1, p7 = producers.topics[0].partitions
        assert [(s.producer_id, s.current_txn_start_offset) for s in p1.active_producers] == [(ops.producer_id, 0)]
        assert all(abs(s.last_timestamp - time.time() * 1000) < 60_000  # the newest batch's max timestamp
                   for s in (*p0.active_producers, *p1.active_producers))
        assert [s.current_txn_start_offset for s in p0.active_producers] == [-1]
        assert p7.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    producer.abort_transaction(10)


def test_idle_producer_ids_expire(tmp_path: Any) -> None:
    """producer.id.expiration.ms: DescribeProducers stops listing an idle idempotent producer,
    and the same producer, writing again later, is accepted where its sequence left off."""
    with running_broker(tmp_path / "data", "--set", "producer.id.expiration.ms=1500",
                        "--set", "producer.id.expiration.check.interval.ms=200") as proc:
        create_topic(proc.bootstrap, "idle", 1)
        producer = confluent_kafka.Producer({"bootstrap.servers": proc.bootstrap, "enable.idempotence": True,
                                             "linger.ms": 1})

        def listed() -> list[int]:
            with Raw(proc) as raw:
                described = raw.call(61, 0, {"topics": [{"name": "idle", "partition_indexes": [0]}]})
            return [s.producer_id for s in described.topics[0].partitions[0].active_producers]

        for i in range(3):
            producer.produce("idle", b"before-%d" % i, partition=0)
            producer.flush(10)
        assert len(listed()) == 1
        deadline = time.monotonic() + 10
        while listed() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert listed() == []
        producer.produce("idle", b"after", partition=0)
        assert producer.flush(10) == 0
        assert len(listed()) == 1
        assert values(confluent_read_all(proc.bootstrap, "idle", 1, "read_uncommitted"))[0] == [
            b"before-0", b"before-1", b"before-2", b"after"]


def test_a_marker_from_a_stale_coordinator_epoch_is_fenced(broker: BrokerProcess) -> None:
    """The partition keeps each producer's coordinator epoch (its newest marker's, reported by
    DescribeProducers): a WriteTxnMarkers from an older coordinator epoch is answered
    TRANSACTION_COORDINATOR_FENCED and appends nothing, also after a restart (the epoch is read
    back from the log)."""
    create_topic(broker.bootstrap, "fence", 1)
    producer = txn_producer(broker.bootstrap, "fence-1")
    producer.begin_transaction()
    producer.produce("fence", b"committed", partition=0)
    producer.commit_transaction(10)

    def producer_state(raw: Raw) -> tuple[int, int, int]:
        described = raw.call(61, 0, {"topics": [{"name": "fence", "partition_indexes": [0]}]})
        (state,) = described.topics[0].partitions[0].active_producers
        return state.producer_id, state.producer_epoch, state.coordinator_epoch

    def write_marker(raw: Raw, pid: int, epoch: int, coordinator_epoch: int) -> int:
        answer = raw.call(27, 1, {"markers": [{
            "producer_id": pid, "producer_epoch": epoch, "transaction_result": False,
            "coordinator_epoch": coordinator_epoch, "topics": [{"name": "fence", "partition_indexes": [0]}]}]})
        (marker,) = answer.markers
        (topic,) = marker.topics
        (partition,) = topic.partitions
        assert (marker.producer_id, topic.name, partition.partition_index) == (pid, "fence", 0)
        return int(partition.error_code)

    def log_end() -> int:
        with Raw(broker) as raw:
            answer = raw.call(2, 7, {"replica_id": -1, "isolation_level": 0, "topics": [
                {"name": "fence", "partitions": [{"partition_index": 0, "current_leader_epoch": -1,
                                                  "timestamp": -1}]}]})
        return int(answer.topics[0].partitions[0].offset)

    with Raw(broker) as raw:
        pid, epoch, coordinator_epoch = producer_state(raw)
        assert coordinator_epoch == 0  # the single node's coordinator epoch, from the commit marker
        assert write_marker(raw, pid, epoch, 5) == ErrorCode.NONE  # a newer coordinator's marker
        assert producer_state(raw) == (pid, epoch, 5)
    end = log_end()
    assert end == 3  # record, commit marker, the epoch-5 marker
    for attempt in ("before", "after a restart"):
        with Raw(broker) as raw:
            assert write_marker(raw, pid, epoch, 4) == ErrorCode.TRANSACTION_COORDINATOR_FENCED, attempt
            assert write_marker(raw, pid, epoch, 0) == ErrorCode.TRANSACTION_COORDINATOR_FENCED, attempt
            assert producer_state(raw) == (pid, epoch, 5), attempt
        assert log_end() == end, attempt
        if attempt == "before":
            broker.restart()
    with Raw(broker) as raw:
        assert write_marker(raw, pid, epoch, 5) == ErrorCode.NONE  # the same epoch again is accepted
    assert log_end() == end + 1
    assert values(confluent_read_all(broker.bootstrap, "fence", 1, "read_committed")) == {0: [b"committed"]}
