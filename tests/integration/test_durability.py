"""Restarts keep every acknowledged record: clean stops and SIGKILL in the middle of a produce stream."""

from __future__ import annotations

import threading
import time
from typing import Any

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

from .brokerproc import BrokerProcess
from .clients import Sent, confluent_consume, confluent_produce

T0 = 1_700_000_000_000


def read_partition(broker: BrokerProcess, topic: str, partition: int, count: int) -> dict[int, bytes | None]:
    return {r.offset: r.value for r in confluent_consume(broker.bootstrap, topic, count, partition=partition)}


def test_clean_restart_keeps_topics_records_and_offsets(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("kept", 3, 1, config={"retention.ms": "86400000"})])["kept"].result(10)
    sent = {p: [Sent(b"%d" % p, b"before-%d-%d" % (p, i), [("i", b"%d" % i)], T0 + i) for i in range(50 * (p + 1))]
            for p in range(3)}
    for p, records in sent.items():
        confluent_produce(broker.bootstrap, "kept", records, partition=p, **{"compression.type": "lz4"})
    broker.restart()
    for p, records in sent.items():
        got = confluent_consume(broker.bootstrap, "kept", len(records), partition=p)
        assert [(r.offset, r.value, r.headers, r.timestamp) for r in got] == [
            (i, s.value, s.headers, s.timestamp) for i, s in enumerate(records)]
    # Appends continue from the recovered end, and the topic config survived.
    assert confluent_produce(broker.bootstrap, "kept", [Sent(None, b"after", [], T0)], partition=2) == [150]
    config = admin.describe_configs([confluent_kafka.admin.ConfigResource("topic", "kept")])
    (described,) = config.values()
    assert described.result(10)["retention.ms"].value == "86400000"


class StreamingProducer:
    """Produces numbered records (acks=all, idempotent) in a thread, noting every acknowledged offset."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.acked: dict[bytes, int] = {}
        self.errors: list[Any] = []
        self.stop = threading.Event()
        self.producer = confluent_kafka.Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 2,
            "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 200, "retry.backoff.ms": 50,
        })
        self.thread = threading.Thread(target=self._run)

    def _report(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(err)
        else:
            self.acked[msg.value()] = msg.offset()

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                self.producer.produce(self.topic, value=b"rec-%06d" % i, on_delivery=self._report)
                i += 1
            except BufferError:
                pass
            self.producer.poll(0.001 if i % 20 == 0 else 0)
        assert self.producer.flush(60) == 0

    def wait_for_acks(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"only {len(self.acked)} acknowledged"
            time.sleep(0.01)


def test_sigkill_mid_stream_loses_no_acknowledged_record(broker: BrokerProcess) -> None:
    confluent_produce(broker.bootstrap, "crash", [Sent(None, b"first", [], T0)])
    stream = StreamingProducer(broker.bootstrap, "crash")
    stream.thread.start()
    try:
        stream.wait_for_acks(2000)
        broker.kill()  # SIGKILL while produce requests are in flight
        acked_before_crash = dict(stream.acked)
        broker.start()
        stream.wait_for_acks(len(acked_before_crash) + 2000)
    finally:
        stream.stop.set()
        stream.thread.join(60)
    assert not stream.errors, stream.errors[:5]
    acked = stream.acked
    end = max(acked.values()) + 1
    stored = read_partition(broker, "crash", 0, end)
    for value, offset in acked.items():
        assert stored[offset] == value
    # The idempotent producer's retries of batches that were written but not acknowledged before
    # the crash are recognised after recovery: every record is stored exactly once, in order.
    values = [stored[o] for o in range(1, end)]
    assert values == sorted(values)
    assert len(set(values)) == len(values)
    assert broker.output().count("recovered crash-0") == 1


def test_sigkill_after_acknowledged_topic_creation_keeps_the_topic(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("made", 4, 1)])["made"].result(10)
    offsets = confluent_produce(broker.bootstrap, "made", [Sent(None, b"x", [], T0)], partition=3)
    broker.restart(crash=True)
    metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics("made", timeout=10)
    assert len(metadata.topics["made"].partitions) == 4
    assert read_partition(broker, "made", 3, 1) == {offsets[0]: b"x"}


def test_garbage_behind_the_log_end_is_cut_on_restart_and_nothing_is_lost(broker: BrokerProcess) -> None:
    """Bytes after the last entry (a torn write, or junk) are truncated by recovery, reported,
    never served; every acknowledged record stays and appends continue after them."""
    records = [Sent(b"k", b"v%d" % i, [], T0 + i) for i in range(20)]
    assert confluent_produce(broker.bootstrap, "junk", records) == list(range(20))
    broker.stop()
    (segment,) = sorted((broker.data_dir / "junk-0").glob("*.wal"))
    data = segment.read_bytes()
    end = 16  # after the segment header: walk the entries (crc, length, index, payload)
    while end + 16 <= len(data) and data[end:end + 16] != bytes(16):
        end += 16 + int.from_bytes(data[end + 4:end + 8], "big")
    with segment.open("r+b") as f:
        f.seek(end)
        f.write(b"\x13\x37" * 300)  # junk right behind the last entry
    broker.start()
    broker.wait_for_log(r"junk-0: recovery truncated the log tail")
    got = confluent_consume(broker.bootstrap, "junk", 20)
    assert [(r.offset, r.value) for r in got] == [(i, s.value) for i, s in enumerate(records)]
    assert confluent_produce(broker.bootstrap, "junk", [Sent(None, b"after", [], T0)]) == [20]
    assert [r.value for r in confluent_consume(broker.bootstrap, "junk", 21)][-1] == b"after"


def test_damage_inside_the_durable_log_takes_only_that_partition_offline(broker: BrokerProcess) -> None:
    """A flipped byte inside an acknowledged entry: the broker still starts and serves the
    other partitions; the damaged one answers KAFKA_STORAGE_ERROR; its files are left as they are."""
    assert confluent_produce(broker.bootstrap, "healthy", [Sent(None, b"ok", [], T0)]) == [0]
    assert confluent_produce(broker.bootstrap, "rotten", [Sent(None, b"x" * 200, [], T0)]) == [0]
    broker.stop()
    (segment,) = sorted((broker.data_dir / "rotten-0").glob("*.wal"))
    with segment.open("r+b") as f:
        f.seek(16 + 16 + 100)  # inside the first entry's payload
        original = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([original[0] ^ 0xFF]))
    damaged = segment.read_bytes()
    broker.start()
    broker.wait_for_log(r"partition rotten-0 is offline: .*CRC")
    assert [r.value for r in confluent_consume(broker.bootstrap, "healthy", 1)] == [b"ok"]
    from chronik.protocol import decode_response

    from .raw import Raw, fetch_frame, produce_frame

    with Raw(broker) as connection:
        connection.send(produce_frame("rotten", 0, b"more", correlation_id=1))
        produced = connection.read_frame()
        connection.send(fetch_frame("rotten", 0, correlation_id=2))
        fetched = connection.read_frame()
    assert produced is not None and fetched is not None
    assert decode_response(0, 9, produced, 5).responses[0].partition_responses[0].error_code == 56
    assert decode_response(1, 12, fetched, 5).responses[0].partitions[0].error_code == 56
    assert segment.read_bytes() == damaged
