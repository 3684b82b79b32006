"""Real clients, driven the same way by every test: produce records, read them back normalised.

Each reader returns :class:`Received` tuples (headers as a list of
``(str, bytes | None)``, timestamp in ms), so results of different clients
compare equal.  kafka-python warns at import time (a deprecated importlib
call) and the project turns warnings into errors, so it is imported here,
under a filter.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import aiokafka
import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.codec


class Received(NamedTuple):
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp: int


class Sent(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp: int


def kafka_python_has(codec: str) -> bool:
    return codec != "snappy" or kafka.codec.has_snappy()


def _deliveries(producer: confluent_kafka.Producer, records: Sequence[Sent], topic: str, partition: int) -> list[int]:
    offsets: list[int | None] = [None] * len(records)
    errors: list[Any] = []

    def on_delivery(i: int):  # type: ignore[no-untyped-def]
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                offsets[i] = msg.offset()
        return report

    for i, r in enumerate(records):
        producer.produce(topic, key=r.key, value=r.value, headers=r.headers or None, timestamp=r.timestamp,
                         partition=partition, on_delivery=on_delivery(i))
    assert producer.flush(30) == 0
    assert not errors, errors
    assert None not in offsets
    return offsets  # type: ignore[return-value]


def confluent_produce(bootstrap: str, topic: str, records: Sequence[Sent], *, partition: int = 0, **conf: Any) -> list[int]:
    """Produce ``records`` (acks=all) and return their acknowledged offsets."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all", **conf})
    return _deliveries(producer, records, topic, partition)


def kafka_python_produce(bootstrap: str, topic: str, records: Sequence[Sent], *, partition: int = 0, **conf: Any) -> list[int]:
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, acks="all", **conf)
    try:
        futures = [producer.send(topic, key=r.key, value=r.value, headers=r.headers, timestamp_ms=r.timestamp,
                                 partition=partition) for r in records]
        producer.flush(30)
        return [f.get(30).offset for f in futures]
    finally:
        producer.close(5)


def aiokafka_produce(bootstrap: str, topic: str, records: Sequence[Sent], *, partition: int = 0, **conf: Any) -> list[int]:
    async def run() -> list[int]:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **conf)
        await producer.start()
        try:
            futures = [await producer.send(topic, r.value, key=r.key, headers=r.headers, timestamp_ms=r.timestamp,
                                           partition=partition) for r in records]
            return [(await f).offset for f in futures]
        finally:
            await producer.stop()

    return asyncio.run(run())


def confluent_consume(bootstrap: str, topic: str, count: int, *, partition: int = 0, offset: int = 0,
                      timeout: float = 20.0, **conf: Any) -> list[Received]:
    """The next ``count`` records of one partition from ``offset`` (fails after ``timeout``)."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                                         "enable.auto.commit": False, **conf})
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, partition, offset)])
        got: list[Received] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            assert time.monotonic() < deadline, f"only {len(got)} of {count} records arrived"
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            got.append(Received(message.offset(), message.key(), message.value(), list(message.headers() or []),
                                message.timestamp()[1]))
        return got
    finally:
        consumer.close()


def kafka_python_consume(bootstrap: str, topic: str, count: int, *, partition: int = 0, offset: int = 0,
                         timeout: float = 20.0, **conf: Any) -> list[Received]:
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **conf)
    try:
        tp = kafka.TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        got: list[Received] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            assert time.monotonic() < deadline, f"only {len(got)} of {count} records arrived"
            for m in consumer.poll(500).get(tp, []):
                got.append(Received(m.offset, m.key, m.value, list(m.headers), m.timestamp))
        return got[:count]
    finally:
        consumer.close()


def aiokafka_consume(bootstrap: str, topic: str, count: int, *, partition: int = 0, offset: int = 0,
                     timeout: float = 20.0, **conf: Any) -> list[Received]:
    async def run() -> list[Received]:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **conf)
        await consumer.start()
        try:
            tp = aiokafka.TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, offset)
            got: list[Received] = []
            async with asyncio.timeout(timeout):
                while len(got) < count:
                    m = await consumer.getone()
                    got.append(Received(m.offset, m.key, m.value, list(m.headers), m.timestamp))
            return got
        finally:
            await consumer.stop()

    return asyncio.run(run())


PRODUCERS = {"confluent": confluent_produce, "kafka-python": kafka_python_produce, "aiokafka": aiokafka_produce}
CONSUMERS = {"confluent": confluent_consume, "kafka-python": kafka_python_consume, "aiokafka": aiokafka_consume}


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)


def confluent_read_all(bootstrap: str, topic: str, partitions: int, isolation: str, *,
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


def end_transaction(producer: confluent_kafka.Producer, commit: bool, *, attempts: int = 10,
                    timeout: float = 10.0, pause: float = 0.2) -> None:
    """Commit or abort, retrying what librdkafka calls retriable (a broker restarting, a
    coordinator or leader moving); raises the last error otherwise."""
    for attempt in range(attempts):
        try:
            if commit:
                producer.commit_transaction(timeout)
            else:
                producer.abort_transaction(timeout)
            return
        except confluent_kafka.KafkaException as exc:
            if not exc.args[0].retriable() or attempt == attempts - 1:
                raise
            time.sleep(pause)
