"""Produce and fetch with real clients over real sockets: round trips, big messages, offsets, long-poll."""

from __future__ import annotations

import random
import subprocess
import threading
import time
import uuid
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from .brokerproc import BrokerProcess
from .clients import (
    CONSUMERS,
    PRODUCERS,
    Received,
    Sent,
    confluent_consume,
    confluent_produce,
    kafka,
    kafka_python_has,
)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
T0 = 1_700_000_000_000
_rng = random.Random(3)

RECORDS = [
    Sent(b"key", b"value", [("h", b"1")], T0),
    Sent(None, b"null key", [], T0 + 1),
    Sent(b"null value", None, [], T0 + 2),
    Sent(b"", b"", [("empty", b""), ("dup", b"a"), ("dup", b"b")], T0 + 3),
    Sent(bytes(range(256)), _rng.randbytes(5000), [("bin", bytes(range(256)))], T0 - 10_000),  # older than the rest
    Sent(b"big", b"abc" * 30_000, [], T0 + 5),
]


@pytest.fixture
def broker(shared_module_broker: BrokerProcess) -> BrokerProcess:
    """One broker for the module (:func:`~.conftest.shared_module_broker`): each test its own topics."""
    return shared_module_broker


def expected(records: list[Sent], offsets: list[int]) -> list[Received]:
    return [Received(o, r.key, r.value, r.headers, r.timestamp) for o, r in zip(offsets, records, strict=True)]


def codec_conf(client: str, codec: str) -> dict[str, object]:
    if client == "confluent":
        return {"compression.type": codec, "linger.ms": 20}
    return {"compression_type": None if codec == "none" else codec, "linger_ms": 20}


@pytest.mark.parametrize("codec", CODECS)
def test_every_client_round_trips_records_byte_for_byte(broker: BrokerProcess, codec: str) -> None:
    """Each client produces the same records; each client reads every client's records back unchanged."""
    clients = [c for c in PRODUCERS if c != "kafka-python" or kafka_python_has(codec)]  # needs python-snappy
    topics = {}
    for client in clients:
        produce = PRODUCERS[client]
        topic = f"rt-{client}-{codec}"
        offsets = produce(broker.bootstrap, topic, RECORDS, **codec_conf(client, codec))
        assert offsets == list(range(len(RECORDS)))
        topics[topic] = expected(RECORDS, offsets)
    for client in clients:
        consume = CONSUMERS[client]
        for topic, want in topics.items():
            assert consume(broker.bootstrap, topic, len(want)) == want, (client, topic)


def test_null_header_values_round_trip(broker: BrokerProcess) -> None:
    records = [Sent(b"k", b"v", [("null", None), ("set", b"x")], T0)]
    confluent_produce(broker.bootstrap, "null-headers", records)
    assert [r.headers for r in confluent_consume(broker.bootstrap, "null-headers", 1)] == [[("null", None), ("set", b"x")]]


def test_records_go_to_the_partition_asked_for(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("three", 3, 1)])["three"].result(10)
    for partition in range(3):
        sent = [Sent(b"p", b"%d-%d" % (partition, i), [], T0 + i) for i in range(partition + 1)]
        assert confluent_produce(broker.bootstrap, "three", sent, partition=partition) == list(range(partition + 1))
    for partition in range(3):
        got = confluent_consume(broker.bootstrap, "three", partition + 1, partition=partition)
        assert [r.value for r in got] == [b"%d-%d" % (partition, i) for i in range(partition + 1)]


def test_one_megabyte_messages_at_the_default_limits(broker: BrokerProcess) -> None:
    """message.max.bytes defaults to 1048588 (Kafka's): a 1,000,000-byte value fits, with any consumer.

    librdkafka's own message.max.bytes (1000000) counts the whole record, so it is raised to the broker's.
    """
    values = [random.Random(i).randbytes(1_000_000) for i in range(3)]
    records = [Sent(b"m%d" % i, v, [], T0 + i) for i, v in enumerate(values)]
    assert confluent_produce(broker.bootstrap, "megabyte", records, **{"message.max.bytes": 1048588}) == [0, 1, 2]
    for client, consume in CONSUMERS.items():
        assert [r.value for r in consume(broker.bootstrap, "megabyte", 3)] == values, client


def test_a_batch_over_message_max_bytes_is_refused(broker: BrokerProcess) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 10_000_000})
    errors: list[confluent_kafka.KafkaError] = []
    producer.produce("too-big", value=b"x" * 1_100_000, on_delivery=lambda err, msg: errors.append(err))
    producer.flush(20)
    assert [e.code() for e in errors] == [confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE]
    # The partition still works, and the refused batch left no trace.
    assert confluent_produce(broker.bootstrap, "too-big", [Sent(None, b"ok", [], T0)]) == [0]


def test_topic_max_message_bytes_allows_larger_messages(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("large", 1, 1, config={"max.message.bytes": str(6 << 20)})])["large"].result(10)
    value = random.Random(9).randbytes(5 << 20)
    assert confluent_produce(broker.bootstrap, "large", [Sent(None, value, [], T0)], **{"message.max.bytes": 8 << 20}) == [0]
    # The consumer's fetch limits are 1 MiB: the first batch is sent whole anyway.
    assert confluent_consume(broker.bootstrap, "large", 1)[0].value == value


def kcat(*args: str, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_kcat_produces_and_consumes(broker: BrokerProcess) -> None:
    """Debian's kcat (librdkafka 2.0.2, default api.version.request) works, including with tagged fields."""
    kcat("-b", broker.bootstrap, "-P", "-t", "kcat", "-K", ":", "-H", "hk=hv", stdin=b"k1:v1\nk2:v2\n:no key\n")
    kcat("-b", broker.bootstrap, "-P", "-t", "kcat", "-z", "snappy", stdin=b"snappy1\nsnappy2\n")
    out = kcat("-b", broker.bootstrap, "-C", "-t", "kcat", "-e", "-f", "%o|%k|%s|%h\\n")
    assert out.decode().splitlines() == [
        "0|k1|v1|hk=hv", "1|k2|v2|hk=hv", "2||no key|hk=hv", "3||snappy1|", "4||snappy2|",
    ]
    listing = kcat("-b", broker.bootstrap, "-L", "-t", "kcat").decode()
    assert 'topic "kcat" with 1 partitions' in listing
    # Produced elsewhere, read by kcat: every codec decodes.
    confluent_produce(broker.bootstrap, "kcat-zstd", [Sent(b"z", b"zstd value", [], T0)], **{"compression.type": "zstd"})
    assert kcat("-b", broker.bootstrap, "-C", "-t", "kcat-zstd", "-e", "-f", "%k=%s %T\\n") == b"z=zstd value %d\n" % T0


# -- ListOffsets ---------------------------------------------------------------

ONE_BATCH = [Sent(None, b"r%d" % i, [], ts) for i, ts in enumerate([1000, 2000, 3000, 2500, 4000])]


@pytest.fixture
def one_batch_topic(broker: BrokerProcess) -> str:
    """A new topic: five records produced as one batch (linger), timestamps 1000, 2000, 3000, 2500, 4000,
    after one other record."""
    topic = f"times-{uuid.uuid4().hex[:8]}"
    confluent_produce(broker.bootstrap, topic, [Sent(None, b"first", [], 500)])
    offsets = confluent_produce(broker.bootstrap, topic, ONE_BATCH, **{"linger.ms": 500, "batch.num.messages": 10})
    assert offsets == [1, 2, 3, 4, 5]
    return topic


def test_offsets_for_times_inside_one_batch_with_confluent(broker: BrokerProcess, one_batch_topic: str) -> None:
    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "t", "enable.auto.commit": False})
    try:
        def lookup(ts: int) -> int:
            (tp,) = consumer.offsets_for_times([confluent_kafka.TopicPartition(one_batch_topic, 0, ts)], 10)
            assert tp.error is None
            return tp.offset

        assert [lookup(ts) for ts in (0, 500, 501, 1000, 1500, 2000, 2001, 2600, 3000, 3001, 4000)] == [
            0, 0, 1, 1, 2, 2, 3, 3, 3, 5, 5]
        assert lookup(4001) == -1  # no such record: Kafka answers offset -1
        assert consumer.get_watermark_offsets(confluent_kafka.TopicPartition(one_batch_topic, 0), 10) == (0, 6)
    finally:
        consumer.close()


def test_list_offsets_specs_with_the_confluent_admin_client(broker: BrokerProcess, one_batch_topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    tp = confluent_kafka.TopicPartition(one_batch_topic, 0)

    def listed(spec: OffsetSpec) -> tuple[int, int]:
        info = admin.list_offsets({tp: spec})[tp].result(10)
        return info.offset, info.timestamp

    assert listed(OffsetSpec.earliest())[0] == 0
    assert listed(OffsetSpec.latest())[0] == 6
    assert listed(OffsetSpec.max_timestamp()) == (5, 4000)
    assert listed(OffsetSpec.for_timestamp(2100)) == (3, 3000)


def test_offsets_for_times_with_kafka_python(broker: BrokerProcess, one_batch_topic: str) -> None:
    consumer = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        tp = kafka.TopicPartition(one_batch_topic, 0)
        found = consumer.offsets_for_times({tp: 2001})[tp]
        assert (found.offset, found.timestamp) == (3, 3000)
        assert consumer.offsets_for_times({tp: 9999})[tp] is None
        assert consumer.beginning_offsets([tp]) == {tp: 0}
        assert consumer.end_offsets([tp]) == {tp: 6}
    finally:
        consumer.close()


def test_list_offsets_of_an_empty_partition(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("empty", 1, 1)])["empty"].result(10)
    tp = confluent_kafka.TopicPartition("empty", 0)
    for spec, want in [(OffsetSpec.earliest(), 0), (OffsetSpec.latest(), 0), (OffsetSpec.max_timestamp(), -1),
                       (OffsetSpec.for_timestamp(5), -1)]:
        assert admin.list_offsets({tp: spec})[tp].result(10).offset == want


# -- long-poll -----------------------------------------------------------------


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_parked_fetch_is_answered_as_soon_as_data_arrives(broker: BrokerProcess, client: str) -> None:
    """With a 20 s max wait, a record produced later reaches the waiting consumer within a second or two."""
    confluent_produce(broker.bootstrap, f"poll-{client}", [Sent(None, b"before", [], T0)])
    got: list[tuple[float, bytes]] = []
    ready = threading.Event()

    def consume() -> None:
        if client == "confluent":
            consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lp",
                                                 "fetch.wait.max.ms": 20_000, "enable.auto.commit": False})
            consumer.assign([confluent_kafka.TopicPartition(f"poll-{client}", 0, 0)])
            deadline = time.monotonic() + 30
            while len(got) < 2 and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is not None and message.error() is None:
                    got.append((time.monotonic(), message.value()))
                    ready.set()
            consumer.close()
        else:
            consumer = kafka.KafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=20_000,
                                           enable_auto_commit=False, request_timeout_ms=40_000)
            tp = kafka.TopicPartition(f"poll-{client}", 0)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            deadline = time.monotonic() + 30
            while len(got) < 2 and time.monotonic() < deadline:
                for m in consumer.poll(200).get(tp, []):
                    got.append((time.monotonic(), m.value))
                    ready.set()
            consumer.close()

    thread = threading.Thread(target=consume)
    thread.start()
    assert ready.wait(20)
    time.sleep(0.5)  # let the consumer's next fetch park on the broker
    produced_at = time.monotonic()
    confluent_produce(broker.bootstrap, f"poll-{client}", [Sent(None, b"after", [], T0)])
    thread.join(40)
    assert [v for _, v in got] == [b"before", b"after"]
    assert got[1][0] - produced_at < 3.0


def test_min_bytes_holds_a_fetch_until_max_wait(broker: BrokerProcess) -> None:
    confluent_produce(broker.bootstrap, "minbytes", [Sent(None, b"small", [], T0)])
    started = time.monotonic()
    got = confluent_consume(broker.bootstrap, "minbytes", 1, **{"fetch.min.bytes": 1_000_000, "fetch.wait.max.ms": 1500})
    assert got[0].value == b"small"
    assert time.monotonic() - started >= 1.0


# -- idempotence and LogAppendTime ----------------------------------------------


def test_idempotent_producer(broker: BrokerProcess) -> None:
    records = [Sent(b"%d" % (i % 7), b"idem-%d" % i, [], T0 + i) for i in range(2000)]
    offsets = confluent_produce(broker.bootstrap, "idem", records, **{
        "enable.idempotence": True, "linger.ms": 1, "batch.num.messages": 50, "max.in.flight.requests.per.connection": 5})
    assert offsets == list(range(2000))
    got = confluent_consume(broker.bootstrap, "idem", 2000)
    assert [r.value for r in got] == [r.value for r in records]


def test_idempotent_kafka_python_producer(broker: BrokerProcess) -> None:
    records = [Sent(None, b"kp-%d" % i, [], T0 + i) for i in range(300)]
    from .clients import kafka_python_produce

    assert kafka_python_produce(broker.bootstrap, "idem-kp", records, enable_idempotence=True) == list(range(300))


def test_log_append_time_topic(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("lat", 1, 1, config={"message.timestamp.type": "LogAppendTime"})])["lat"].result(10)
    before = int(time.time() * 1000)
    confluent_produce(broker.bootstrap, "lat", [Sent(None, b"a", [], 1000), Sent(None, b"b", [], 2000)])
    confluent_produce(broker.bootstrap, "lat", [Sent(None, b"c", [], 3000)], **{"compression.type": "gzip"})
    after = int(time.time() * 1000)
    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lat", "enable.auto.commit": False})
    consumer.assign([confluent_kafka.TopicPartition("lat", 0, 0)])
    seen = []
    deadline = time.monotonic() + 15
    while len(seen) < 3 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen.append(message.timestamp())
    consumer.close()
    assert len(seen) == 3
    for kind, ts in seen:
        assert kind == confluent_kafka.TIMESTAMP_LOG_APPEND_TIME
        assert before <= ts <= after
    got = CONSUMERS["kafka-python"](broker.bootstrap, "lat", 3)
    assert [r.timestamp for r in got] == [ts for _, ts in seen]


def test_data_dir_holds_batches_as_sent(broker: BrokerProcess, tmp_path: Path) -> None:
    """A gzip batch is stored compressed, not re-encoded (its bytes appear in the WAL)."""
    value = b"compress me " * 1000
    confluent_produce(broker.bootstrap, "stored", [Sent(None, value, [], T0)], **{"compression.type": "gzip"})
    wal = b"".join(p.read_bytes() for p in (broker.data_dir / "stored-0").glob("*.wal"))
    assert value not in wal
    assert len(wal.rstrip(b"\0")) < len(value)  # (segments are preallocated with zeros)


# -- Fetch by topic id (v13+) ------------------------------------------------------


def test_fetch_v13_addresses_topics_by_id(broker: BrokerProcess) -> None:
    from chronik.protocol import decode_records, decode_response

    from .raw import Raw, fetch_frame

    confluent_produce(broker.bootstrap, "by-id", [Sent(b"k", b"v%d" % i, [], T0 + i) for i in range(3)])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    described = admin.describe_topics(confluent_kafka.TopicCollection(["by-id"]))["by-id"].result(10).topic_id
    topic_id = uuid.UUID(int=(described.get_most_significant_bits() % (1 << 64)) << 64
                         | described.get_least_significant_bits() % (1 << 64))
    with Raw(broker) as raw:
        for version in (13, 16):
            raw.send(fetch_frame(topic_id, 1, version=version, correlation_id=version))
            response = raw.read_frame()
            assert response is not None
            (topic,) = decode_response(1, version, response, 5).responses
            assert topic.topic_id == topic_id
            (partition,) = topic.partitions
            assert (partition.error_code, partition.high_watermark) == (0, 3)
            assert [r.value for r in decode_records(partition.records)] == [b"v0", b"v1", b"v2"]
        raw.send(fetch_frame(uuid.uuid4(), 0, version=13, correlation_id=1))
        response = raw.read_frame()
        assert response is not None
        (topic,) = decode_response(1, 13, response, 5).responses
        assert topic.partitions[0].error_code == 100  # UNKNOWN_TOPIC_ID


def test_librdkafka_fetches_by_topic_id(broker: BrokerProcess) -> None:
    """confluent-kafka 2.16 negotiates the highest Fetch version served (16) and so uses topic ids."""
    confluent_produce(broker.bootstrap, "rdk-id", [Sent(None, b"x", [], T0)])
    logs: list[str] = []
    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "v", "debug": "protocol",
                                         "enable.auto.commit": False, "logger": _ListLogger(logs)})
    try:
        consumer.assign([confluent_kafka.TopicPartition("rdk-id", 0, 0)])
        message = None
        deadline = time.monotonic() + 15
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
        assert message is not None and message.value() == b"x"
    finally:
        consumer.close()
    assert any("Sent FetchRequest (v16" in line for line in logs), [line for line in logs if "Fetch" in line][:5]


class _ListLogger:
    """A logging.Logger stand-in that librdkafka's debug output goes to."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def log(self, level: int, fmt: str, *args: object) -> None:
        self.lines.append(fmt % args if args else fmt)
