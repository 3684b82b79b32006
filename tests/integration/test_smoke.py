"""The first thing a user does: produce with one client, consume with another."""

from __future__ import annotations

import confluent_kafka

from .brokerproc import BrokerProcess


def test_confluent_produce_then_consume(broker: BrokerProcess) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(100):
        producer.produce("smoke", key=f"k{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(10) == 0
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": "g", "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.assign([confluent_kafka.TopicPartition("smoke", 0, 0)])
    got = []
    while len(got) < 100:
        message = consumer.poll(10)
        assert message is not None, f"only {len(got)} messages arrived"
        assert message.error() is None, message.error()
        got.append((message.offset(), message.key(), message.value()))
    consumer.close()
    assert got == [(i, f"k{i}".encode(), f"v{i}".encode()) for i in range(100)]
