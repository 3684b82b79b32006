"""Hostile and broken input over raw sockets: each gets an error or a closed connection, nothing else breaks.

After every kind of abuse the broker must still serve a fresh connection and
still hold the records stored before, unchanged (the broker fixtures also
fail the test if the broker logged a traceback).  The tests share one broker
(:func:`~.conftest.shared_module_broker`), which holds the stored records from
the start; the memory test, which measures the broker's growth, has its own.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Iterator

import confluent_kafka
import pytest

from chronik.protocol import decode_response

from .brokerproc import BrokerProcess
from .raw import Raw, fetch_frame, framed, produce_frame, raw_header, request_frame
from .clients import Sent, confluent_consume, confluent_produce

STORED = [Sent(b"k%d" % i, b"stored-%d" % i, [("h", b"%d" % i)], 1_700_000_000_000 + i) for i in range(20)]


def store(broker: BrokerProcess) -> BrokerProcess:
    confluent_produce(broker.bootstrap, "kept", STORED, **{"compression.type": "gzip"})
    return broker


def assert_still_serving(broker: BrokerProcess) -> None:
    """The broker runs, answers a fresh connection and holds STORED unchanged."""
    assert broker.proc is not None and broker.proc.poll() is None, broker.output()
    api_versions_answered(broker)
    got = confluent_consume(broker.bootstrap, "kept", len(STORED))
    assert [(r.key, r.value, r.headers, r.timestamp) for r in got] == [tuple(s) for s in STORED]


@pytest.fixture(scope="module")
def module_stored(module_broker: BrokerProcess) -> BrokerProcess:
    return store(module_broker)


@pytest.fixture
def stored(module_stored: BrokerProcess, shared_module_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    """The module's broker, holding STORED in topic "kept"; afterwards: still serving, records unchanged."""
    yield shared_module_broker
    assert_still_serving(shared_module_broker)


@pytest.fixture
def fresh_stored(broker: BrokerProcess) -> Iterator[BrokerProcess]:
    """A broker of the test's own holding STORED in topic "kept"; afterwards: still serving, records unchanged."""
    yield store(broker)
    assert_still_serving(broker)


def api_versions_answered(broker: BrokerProcess, correlation_id: int = 99) -> None:
    with Raw(broker) as raw:
        raw.send(request_frame(18, 3, {"client_software_name": "t", "client_software_version": "1"}, correlation_id))
        response = raw.read_frame()
    assert response is not None
    assert struct.unpack_from(">ih", response) == (correlation_id, 0)


# -- unknown APIs and versions --------------------------------------------------


def test_api_versions_too_new_gets_a_v0_answer_with_the_list(stored: BrokerProcess) -> None:
    with Raw(stored) as raw:
        raw.send(framed(raw_header(18, 99, 4242) + b"\x00whatever a future version sends"))
        response = raw.read_frame()
    assert response is not None
    body = decode_response(18, 0, response, 4)
    assert struct.unpack_from(">i", response)[0] == 4242
    assert body.error_code == 35
    served = {k.api_key: (k.min_version, k.max_version) for k in body.api_keys}
    assert served[18] == (0, 4) and served[0][1] >= 9 and 1 in served


def test_api_versions_v4_as_java_clients_send_it(stored: BrokerProcess) -> None:
    """Java 3.8+ sends v4 (4.x sends v5 first, then v4 after the v0 answer above)."""
    with Raw(stored) as raw:
        raw.send(request_frame(18, 4, {"client_software_name": "apache-kafka-java",
                                       "client_software_version": "4.4.0"}, 4343))
        response = raw.read_frame()
    assert response is not None
    body = decode_response(18, 4, response, 4)
    assert struct.unpack_from(">i", response)[0] == 4343 and body.error_code == 0
    assert {k.api_key: (k.min_version, k.max_version) for k in body.api_keys}[18] == (0, 4)


@pytest.mark.parametrize(("api_key", "version"), [
    (9999, 0), (-5, 0), (0, 99), (1, 3), (22, 99),  # no layout known: nothing the client could decode
    (0, 0), (0, 10), (2, 8), (10, 6),  # a layout is known, but the body does not parse
])
def test_an_unknown_api_or_version_without_a_decodable_answer_closes_the_connection(
        stored: BrokerProcess, api_key: int, version: int) -> None:
    """As Kafka does: a bare correlation id and error code would read as garbage (librdkafka: "Read underflow")."""
    with Raw(stored, timeout=5) as raw:
        raw.send(framed(raw_header(api_key, version, 1) + b"\x01\x02\x03"))
        assert raw.closed_by_broker()
    line = stored.wait_for_log(rf"closing connection from 127\.0\.0\.1: .* v{version} is not supported")
    assert ("unknown API" in line) == (api_key in (9999, -5)), line


@pytest.mark.parametrize("version", [0, 1, 2])
def test_produce_of_message_formats_v0_v1_gets_unsupported_version_in_its_own_layout(
        stored: BrokerProcess, version: int) -> None:
    """Produce v0-v2 (pre-0.11 clients): a response of the request's version naming each partition."""
    message_set = bytes(26)  # its content does not matter: the version is refused before it is read
    body = struct.pack(">hii", -1, 5000, 1) + struct.pack(">h", 4) + b"kept" + struct.pack(">i", 2)
    body += b"".join(struct.pack(">ii", index, len(message_set)) + message_set for index in (0, 3))
    with Raw(stored) as raw:
        for correlation_id in (41, 42):  # the connection stays usable
            raw.send(framed(raw_header(0, version, correlation_id) + body))
            response = raw.read_frame()
            assert response is not None
            correlation, topics, name_length = struct.unpack_from(">iih", response)
            assert (correlation, topics, response[10:10 + name_length]) == (correlation_id, 1, b"kept")
            at = 10 + name_length
            partitions = [struct.unpack_from(">ihq", response, at + 4 + i * (14 + 8 * (version >= 2)))
                          for i in range(struct.unpack_from(">i", response, at)[0])]
            assert partitions == [(0, 35, -1), (3, 35, -1)]
            assert len(response) == at + 4 + 2 * (14 + 8 * (version >= 2)) + 4 * (version >= 1)
    stored.wait_for_log(r"produce v\d is not supported .* message formats v0/v1 \(pre-0\.11 clients\) are not supported")


def test_an_old_kafka_python_producer_is_told_unsupported_version(stored: BrokerProcess) -> None:
    """kafka-python pinned to a 0.10 broker sends Produce v2 without asking ApiVersions: it must decode the
    answer and report UNSUPPORTED_VERSION (confluent-kafka 2.x asks ApiVersions even with
    api.version.request=false, so the raw-frame test above covers librdkafka's layouts)."""
    from kafka import KafkaProducer
    from kafka.errors import UnsupportedVersionError

    for api_version in ((0, 10, 0), (0, 9)):
        producer = KafkaProducer(bootstrap_servers=stored.bootstrap, api_version=api_version, retries=0,
                                 request_timeout_ms=10000, max_block_ms=10000)
        try:
            with pytest.raises(UnsupportedVersionError):
                producer.send("kept", b"old client").get(15)
        finally:
            producer.close(timeout=5)


def test_a_known_unserved_version_with_a_valid_body_gets_a_typed_answer_naming_its_partitions(
        stored: BrokerProcess) -> None:
    """Produce v10 is known to the codec, not served: each partition of the request answered 35."""
    frame = produce_frame("kept", 2, b"future")
    frame = frame[:6] + struct.pack(">h", 10) + frame[8:]  # v9 and v10 bodies are the same but for tags
    with Raw(stored) as raw:
        raw.send(frame)
        response = raw.read_frame()
    assert response is not None
    body = decode_response(0, 10, response, 5)
    assert [(t.name, [(p.index, p.error_code) for p in t.partition_responses]) for t in body.responses] == [
        ("kept", [(2, 35)])]


def test_a_known_but_unserved_version_gets_a_typed_error_response(stored: BrokerProcess) -> None:
    """Fetch v17 is known to the codec but not served: a Fetch v17 response with error 35."""
    with Raw(stored) as raw:
        raw.send(fetch_frame("kept", 0, version=17, correlation_id=5))
        response = raw.read_frame()
    assert response is not None
    assert struct.unpack_from(">i", response)[0] == 5
    assert decode_response(1, 17, response, 5).error_code == 35


# -- broken framing --------------------------------------------------------------


@pytest.mark.parametrize("size", [2**31 - 1, 104857601, -1, -(2**31)])
def test_absurd_frame_sizes_close_the_connection_at_once(stored: BrokerProcess, size: int) -> None:
    with Raw(stored, timeout=5) as raw:
        raw.send(struct.pack(">i", size) + b"\x00" * 16)
        assert raw.closed_by_broker()


def test_a_frame_shorter_than_a_request_header_closes_the_connection(stored: BrokerProcess) -> None:
    with Raw(stored, timeout=5) as raw:
        raw.send(framed(b"\x00\x03\x00"))
        assert raw.closed_by_broker()


def test_a_truncated_request_body_closes_the_connection(stored: BrokerProcess) -> None:
    frame = request_frame(3, 12, {"topics": [{"name": "kept", "topic_id": None}], "allow_auto_topic_creation": False,
                                  "include_topic_authorized_operations": False})
    payload = frame[4:]
    with Raw(stored, timeout=5) as raw:
        raw.send(framed(payload[:-6]))  # a whole frame whose body stops early
        assert raw.closed_by_broker()


def test_clients_disconnecting_mid_request(stored: BrokerProcess) -> None:
    end = log_end(stored, "kept")
    produce = produce_frame("kept", 0, b"never stored")
    fetch = fetch_frame("kept", end, max_wait_ms=30_000)
    for data in (produce[: len(produce) // 2], produce[:3], fetch, fetch + produce[:10]):
        with Raw(stored) as raw:
            raw.send(data)
    # A half-sent produce never reaches the log; the parked fetches are dropped with their connections.
    assert confluent_produce(stored.bootstrap, "kept", [Sent(None, b"next", [], 1)]) == [end]


def log_end(broker: BrokerProcess, topic: str) -> int:
    """The high watermark of ``topic``-0."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "log-end"})
    try:
        return int(consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, 0), 10)[1])
    finally:
        consumer.close()


#: How long a connection holding an incomplete frame must stay open and silent.
STILL_WAITING_AFTER = 1.0


def test_random_bytes(stored: BrokerProcess) -> None:
    """Each of 50 random byte strings gets the one outcome its size prefix calls for, checked every time:
    an impossible size closes the connection, an incomplete frame is waited for, a whole frame is
    answered under its correlation id or closes the connection.

    The incomplete frames' connections stay open side by side, each checked (no answer, not closed)
    once at least :data:`STILL_WAITING_AFTER` has passed since its bytes were sent: one wait for all."""
    rng = random.Random(11)
    outcomes: dict[str, int] = {}
    waiting: list[Raw] = []
    try:
        for _ in range(50):
            data = rng.randbytes(rng.randrange(1, 2000))
            shape = rng.random()
            if shape < 0.3:
                data = framed(data)  # a whole frame of random content
            elif shape < 0.4:
                data = framed(data)[:-1]  # one byte short
            size = struct.unpack_from(">i", data)[0] if len(data) >= 4 else 0
            raw = Raw(stored, timeout=1)
            raw.send(data)
            if size >= 0 and size <= 104857600 and len(data) < 4 + size:
                kind = "waiting"  # checked below
                waiting.append(raw)
            else:
                with raw:
                    if size < 0 or size > 104857600:
                        kind = "closed"
                        assert raw.closed_by_broker(), data[:16].hex()
                    else:
                        kind = "whole frame"
                        try:
                            response = raw.read_frame()
                        except ConnectionResetError:
                            response = None
                        if response is not None:
                            assert len(data) >= 12 and response[:4] == data[8:12]  # its correlation id
            outcomes[kind] = outcomes.get(kind, 0) + 1
        time.sleep(STILL_WAITING_AFTER)  # since the last incomplete frame was sent (the others: longer)
        for raw in waiting:
            raw.sock.settimeout(0.01)
            with pytest.raises(TimeoutError):  # the broker still waits for the rest of the frame
                raw.sock.recv(1)
    finally:
        for raw in waiting:
            raw.sock.close()
    assert outcomes.get("closed", 0) > 10 and outcomes.get("waiting", 0) > 0 and outcomes.get("whole frame", 0) > 5, outcomes
    api_versions_answered(stored)


# -- floods and fuzzing ------------------------------------------------------------


def test_thousands_of_garbage_frames_on_one_connection(stored: BrokerProcess) -> None:
    """5000 pipelined ApiVersions frames of versions nobody serves, with garbage bodies: 5000 answers,
    in order, and the connection lives on."""
    rng = random.Random(5)
    count = 5000
    frames = b"".join(framed(raw_header(18, rng.randrange(5, 32767), i) + rng.randbytes(rng.randrange(60)))
                      for i in range(count))
    with Raw(stored) as raw:
        sender = threading.Thread(target=raw.send, args=(frames,))
        sender.start()
        for i in range(count):
            response = raw.read_frame()
            assert response is not None and struct.unpack_from(">ih", response) == (i, 35)
        sender.join()
        raw.send(request_frame(18, 3, {"client_software_name": "t", "client_software_version": "1"}, 123456))
        response = raw.read_frame()
        assert response is not None and struct.unpack_from(">ih", response) == (123456, 0)


def fuzz_seeds() -> list[bytes]:
    """Valid requests of the APIs that read and write data, to mutate."""
    return [
        produce_frame("fuzzed", 0, b"x" * 30),
        fetch_frame("kept", 3),
        request_frame(3, 12, {"topics": [{"name": "kept", "topic_id": None}], "allow_auto_topic_creation": True,
                              "include_topic_authorized_operations": False}),
        request_frame(2, 7, {"replica_id": -1, "isolation_level": 0, "topics": [{"name": "kept", "partitions": [
            {"partition_index": 0, "current_leader_epoch": -1, "timestamp": t} for t in (-1, -2, -3, 1_700_000_000_005)]}]}),
        request_frame(18, 3, {"client_software_name": "fuzz", "client_software_version": "1.0"}),
        request_frame(22, 4, {"transactional_id": None, "transaction_timeout": 1000, "producer_id": -1, "producer_epoch": -1}),
    ]


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """Flip a few bytes after the size prefix and the API key and version (so the right decoder sees it)."""
    data = bytearray(frame)
    for _ in range(rng.randrange(1, 4)):
        at = rng.randrange(8, len(data))
        data[at] = rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    if rng.random() < 0.1:  # truncate, fixing up the size prefix
        data = data[: rng.randrange(12, len(data))]
        data[:4] = struct.pack(">i", len(data) - 4)
    return bytes(data)


def test_mutated_requests_get_an_answer_or_a_closed_connection(stored: BrokerProcess) -> None:
    rng = random.Random(2024)
    seeds = fuzz_seeds()
    raw = Raw(stored, timeout=2)
    answered = closed = 0
    try:
        for _ in range(1500):
            try:
                raw.send(mutate(rng, rng.choice(seeds)))
                if raw.read_frame() is None:
                    raise ConnectionError
                answered += 1
            except (ConnectionError, TimeoutError):  # closed, or a fetch parked by a mutated max_wait
                closed += 1
                raw.sock.close()
                raw = Raw(stored, timeout=2)
    finally:
        raw.sock.close()
    assert answered > 100 and closed > 100


# -- memory an attacker could pin ----------------------------------------------------------


def test_pipelined_huge_fetches_and_resets_keep_the_broker_memory_bounded(fresh_stored: BrokerProcess) -> None:
    """Clients that ask for 2 GiB answers and never read them, then vanish with a reset.

    Each connection may hold its budget of queued answers (8 MiB) plus the
    one being sent; before the fix each held all 16 answers (and, after a
    reset, kept them until a garbage collection).  On a broker of its own: no other test's memory to
    come and go while it measures.
    """
    stored = fresh_stored
    value = b"h" * 8000
    confluent_produce(stored.bootstrap, "heavy", [Sent(None, value, [], 1_700_000_000_000 + i) for i in range(1000)],
                      **{"linger.ms": 50, "batch.size": 1 << 20})
    huge = fetch_frame("heavy", 0, version=4, max_bytes=2**31 - 1)
    baseline = stored.rss_bytes()
    hogs = []
    for _ in range(3):
        raw = Raw(stored)
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.send(huge * 16)  # 16 answers of ~8 MiB each, never read
        hogs.append(raw)
    for _ in range(200):  # many more that vanish at once
        with Raw(stored) as raw:
            raw.send(huge)
            raw.reset()
    time.sleep(3)
    peak = stored.rss_bytes()
    for raw in hogs:
        raw.reset()
    time.sleep(3)
    after = stored.rss_bytes()
    mib = 1 << 20
    assert peak - baseline < 120 * mib, f"RSS grew by {(peak - baseline) / mib:.0f} MiB with 3 connections not reading"
    assert after - baseline < 40 * mib, f"RSS still {(after - baseline) / mib:.0f} MiB above the start after they closed"
