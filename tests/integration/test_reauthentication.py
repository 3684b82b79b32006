"""SASL re-authentication (KIP-368, ``connections.max.reauth.ms``) with real clients and raw sockets.

One broker with a short session lifetime (:data:`LIFETIME_MS`) on SASL_SSL and
SASL_PLAINTEXT listeners.  Clients that re-authenticate -- librdkafka
(confluent-kafka), kafka-python 3 and the Java client
(:mod:`.test_java_security`) -- produce and consume for several lifetimes on
their connections: no connection is closed for an expired session and the
broker counts re-authentications.  aiokafka does not re-authenticate: its
connections are closed at their first request after the lifetime and it
reconnects.  Raw sockets check the broker's side: the lifetime in
SaslAuthenticate, the close of an expired connection, a renewal on the same
connection, and what a re-authentication may not change.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import socket
import time
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import aiokafka
import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic
import pytest
import trustme

from chronik.protocol import ErrorCode, decode_response

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka

from .brokerproc import BrokerProcess, free_ports
from .raw import request_frame
from .test_security import (
    PASSWORD,
    Secured,
    add_user,
    ask,
    closed,
    connect,
    librdkafka_conf,
    metadata_ok,
    python_conf,
    read_frame,
    sasl_plain_login,
)

#: connections.max.reauth.ms of the broker here: clients re-authenticate at 85-95% of it.
LIFETIME_MS = 2000
LIFETIME = datetime.timedelta(milliseconds=LIFETIME_MS)
#: How long the clients work: several lifetimes.
RUN_SECONDS = 3.5 * LIFETIME_MS / 1000


def start_reauth_broker(root: Path, lifetime_ms: int = LIFETIME_MS) -> Secured:
    """A broker with PLAINTEXT, SASL_PLAINTEXT and SASL_SSL listeners and ``connections.max.reauth.ms``;
    users alice (PASSWORD) and bob ("bob-pw"), SCRAM-SHA-256 and -512; an operator endpoint (/metrics)."""
    ca = trustme.CA()
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    data_dir = root / "data"
    for user, password in (("alice", PASSWORD), ("bob", "bob-pw")):
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            done = add_user(data_dir, user, mechanism, password)
            assert done.returncode == 0, done.stderr
    p1, p2, p3 = free_ports(3)
    listeners = f"PLAINTEXT://127.0.0.1:{p1},SASL_SSL://127.0.0.1:{p2},SASL_PLAINTEXT://127.0.0.1:{p3}"
    broker = BrokerProcess(
        data_dir, "--set", f"listeners={listeners}", "--set", f"advertised.listeners={listeners}",
        "--set", "ssl.keystore.type=PEM", "--set", f"ssl.keystore.location={root / 'server.pem'}",
        "--set", "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "--set", f"connections.max.reauth.ms={lifetime_ms}", "--metrics-listen", "127.0.0.1:0",
        "--group-initial-rebalance-delay-ms", "0", own_listeners=True).start()
    return Secured(broker, {"PLAINTEXT": p1, "SASL_SSL": p2, "SASL_PLAINTEXT": p3}, root)


@pytest.fixture(scope="module")
def reauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    secured = start_reauth_broker(tmp_path_factory.mktemp("reauth"))
    try:
        yield secured
    finally:
        secured.broker.stop()
        assert "Traceback" not in secured.broker.output(), secured.broker.output()


def counters(s: Secured) -> dict[str, float]:
    """The broker's re-authentication counters: ``reauthenticated`` and ``expired_killed``."""
    line = s.broker.wait_for_log(r"operator HTTP .* listening on 127\.0\.0\.1:\d+")
    with urllib.request.urlopen("http://127.0.0.1:" + line.rsplit(":", 1)[1].strip() + "/metrics", timeout=5) as response:
        text = response.read().decode()

    def value(name: str) -> float:
        match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
        assert match, f"{name} not in /metrics"
        return float(match.group(1))

    return {"reauthenticated": value("chronik_sasl_reauthentications_total"),
            "expired_killed": value("chronik_expired_connections_killed_total")}


def deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


def new_topic(s: Secured, prefix: str) -> str:
    """A topic made beforehand (through the PLAINTEXT listener), so a group's first assignment has it."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": s.bootstrap("PLAINTEXT")})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(20)
    return topic


# -- raw sockets: the broker's side ---------------------------------------------------------------------------


def test_the_lifetime_is_given_and_a_request_after_it_closes_the_connection(reauth: Secured) -> None:
    before = counters(reauth)
    with connect(reauth, "SASL_PLAINTEXT") as sock:
        answer = sasl_plain_login(sock, "alice", PASSWORD)
        logged_in = time.monotonic()
        assert answer.error_code == 0 and answer.session_lifetime == LIFETIME
        assert metadata_ok(sock)  # within the lifetime
        time.sleep(max(0.0, logged_in + LIFETIME_MS / 1000 + 0.3 - time.monotonic()))
        sock.sendall(request_frame(3, 9, {"topics": [], "allow_auto_topic_creation": False,
                                          "include_cluster_authorized_operations": False,
                                          "include_topic_authorized_operations": False}))
        assert closed(sock)  # no answer: the session expired without a re-authentication
    assert deltas(before, counters(reauth)) == {"reauthenticated": 0, "expired_killed": 1}
    reauth.broker.wait_for_log(r"closing connection from 127\.0\.0\.1 \(User:alice\) on listener SASL_PLAINTEXT: its SASL "
                               r"session expired \(connections.max.reauth.ms=2000\) and the client sent API 3 v9")


def test_a_session_renewed_on_its_connection_outlives_the_first_lifetime(reauth: Secured) -> None:
    before = counters(reauth)
    with connect(reauth, "SASL_SSL", tls=True) as sock:
        assert sasl_plain_login(sock, "alice", PASSWORD).session_lifetime == LIFETIME
        logged_in = time.monotonic()
        time.sleep(0.75 * LIFETIME_MS / 1000)
        renewed = sasl_plain_login(sock, "alice", PASSWORD)  # SaslHandshake + SaslAuthenticate again
        assert renewed.error_code == 0 and renewed.session_lifetime == LIFETIME
        time.sleep(max(0.0, logged_in + LIFETIME_MS / 1000 + 0.2 - time.monotonic()))  # the first one is over
        assert metadata_ok(sock)
    assert deltas(before, counters(reauth)) == {"reauthenticated": 1, "expired_killed": 0}


def test_a_second_handshake_within_a_second_is_an_ordinary_request(reauth: Secured) -> None:
    """At most one re-authentication per second (as Kafka): a SaslHandshake sooner is answered
    ILLEGAL_SASL_STATE by its handler, and the connection goes on."""
    with connect(reauth, "SASL_PLAINTEXT") as sock:
        assert sasl_plain_login(sock, "alice", PASSWORD).error_code == 0
        assert sasl_plain_login(sock, "alice", PASSWORD).error_code == 0  # the first re-authentication
        assert ask(sock, 17, 1, {"mechanism": "PLAIN"}).error_code == ErrorCode.ILLEGAL_SASL_STATE
        assert metadata_ok(sock)


@pytest.mark.parametrize("user,mechanism,message", [
    ("bob", "PLAIN", "Cannot change principals during re-authentication from User:alice: User:bob"),
    ("alice", "SCRAM-SHA-512", "SASL mechanism 'SCRAM-SHA-512' requested by client is not supported for "
                               "re-authentication of mechanism 'PLAIN'"),
])
def test_a_re_authentication_keeps_the_user_and_the_mechanism(reauth: Secured, user: str, mechanism: str,
                                                               message: str) -> None:
    with connect(reauth, "SASL_PLAINTEXT") as sock:
        assert sasl_plain_login(sock, "alice", PASSWORD).error_code == 0
        assert ask(sock, 17, 1, {"mechanism": mechanism}).error_code == 0
        token = f"\0{user}\0bob-pw".encode() if mechanism == "PLAIN" else b"n,,n=alice,r=abcdefgh"
        refused = ask(sock, 36, 2, {"auth_bytes": token})
        assert refused.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
        assert refused.error_message == message
        sock.shutdown(socket.SHUT_WR)
        assert closed(sock)


def test_a_request_during_a_re_authentication_closes_the_connection(reauth: Secured) -> None:
    with connect(reauth, "SASL_PLAINTEXT") as sock:
        assert sasl_plain_login(sock, "alice", PASSWORD).error_code == 0
        assert ask(sock, 17, 1, {"mechanism": "PLAIN"}).error_code == 0
        sock.sendall(request_frame(3, 9, {"topics": [], "allow_auto_topic_creation": False,
                                          "include_cluster_authorized_operations": False,
                                          "include_topic_authorized_operations": False}))
        assert read_frame(sock) is None  # closed, unanswered


def test_v0_sasl_authenticate_has_no_lifetime_field_but_the_session_still_ends(reauth: Secured) -> None:
    """SaslAuthenticate v0 cannot say the lifetime (Kafka's clients then do not re-authenticate), but the
    session ends all the same, as in Kafka."""
    with connect(reauth, "SASL_PLAINTEXT") as sock:
        assert ask(sock, 17, 1, {"mechanism": "PLAIN"}).error_code == 0
        sock.sendall(request_frame(36, 0, {"auth_bytes": f"\0alice\0{PASSWORD}".encode()}))
        frame = read_frame(sock)
        assert frame is not None and decode_response(36, 0, frame, 4).error_code == 0
        logged_in = time.monotonic()
        assert metadata_ok(sock)
        time.sleep(max(0.0, logged_in + LIFETIME_MS / 1000 + 0.3 - time.monotonic()))
        sock.sendall(request_frame(3, 9, {"topics": [], "allow_auto_topic_creation": False,
                                          "include_cluster_authorized_operations": False,
                                          "include_topic_authorized_operations": False}))
        assert closed(sock)


# -- real clients: several lifetimes of produce and consume on their connections ------------------------------


@pytest.mark.parametrize("mode", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_confluent_kafka_re_authenticates_on_its_connections(reauth: Secured, mode: str) -> None:
    """librdkafka re-authenticates (KIP-368 since librdkafka 2.2): a producer and a group consumer work
    for several lifetimes with no connection closed for an expired session and no error."""
    before = counters(reauth)
    conf = librdkafka_conf(reauth, mode)  # SASL_SSL with SCRAM-SHA-512, SASL_PLAINTEXT with PLAIN
    errors: list[confluent_kafka.KafkaError] = []
    topic = new_topic(reauth, "ck-reauth")
    producer = confluent_kafka.Producer({**conf, "acks": "all", "linger.ms": 5, "error_cb": errors.append})
    consumer = confluent_kafka.Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest",
                                         "enable.auto.commit": False, "error_cb": errors.append})
    acked: list[int] = []
    got: list[int] = []
    try:
        consumer.subscribe([topic])
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < RUN_SECONDS or (len(got) < sent and time.monotonic() - started < 60):
            if time.monotonic() - started < RUN_SECONDS:
                producer.produce(topic, str(sent).encode(), on_delivery=lambda err, msg: err or acked.append(
                    int(msg.value())))
                sent += 1
            producer.poll(0)
            message = consumer.poll(0.05)
            if message is not None and message.error() is None:
                got.append(int(message.value()))
        assert producer.flush(20) == 0
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert sent > 20 and sorted(acked) == list(range(sent)) and got == list(range(sent))
    assert errors == []
    change = deltas(before, counters(reauth))
    assert change["expired_killed"] == 0, change
    assert change["reauthenticated"] >= 3, change  # producer, consumer and coordinator connections, each at least once


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.parametrize("mode", ["SASL_SSL"])  # confluent-kafka covers SASL_PLAINTEXT too
def test_kafka_python_re_authenticates_on_its_connections(reauth: Secured, mode: str) -> None:
    before = counters(reauth)
    conf = python_conf(reauth, mode)
    topic = new_topic(reauth, "kp-reauth")
    producer = kafka.KafkaProducer(acks="all", linger_ms=5, **conf)
    # assigned, not subscribed: under load kafka-python's group member was sometimes assigned nothing ("No
    # partition metadata for topic") and never rejoined, which has nothing to do with re-authentication
    # (the group path with re-authentication: the confluent-kafka and Java tests)
    consumer = kafka.KafkaConsumer(auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=100,
                                   **conf)
    got: list[int] = []
    try:
        consumer.assign([kafka.TopicPartition(topic, 0)])
        started = time.monotonic()
        futures = []
        while time.monotonic() - started < RUN_SECONDS:
            futures.append(producer.send(topic, str(len(futures)).encode()))
            for records in consumer.poll(timeout_ms=50).values():
                got += [int(r.value) for r in records]
        acked = [f.get(20) for f in futures]
        deadline = time.monotonic() + 30
        while len(got) < len(futures) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                got += [int(r.value) for r in records]
    finally:
        producer.close(5)
        consumer.close()
    assert len(acked) > 20 and got == list(range(len(futures)))
    change = deltas(before, counters(reauth))
    assert change["expired_killed"] == 0, change
    assert change["reauthenticated"] >= 2, change  # the producer's and the consumer's connections


def test_aiokafka_does_not_re_authenticate_and_reconnects(reauth: Secured) -> None:
    """aiokafka ignores the session lifetime: its connection is closed at its first request after it, and
    the producer reconnects and delivers everything."""
    before = counters(reauth)
    conf = python_conf(reauth, "SASL_PLAINTEXT")
    topic = new_topic(reauth, "aio-reauth")

    async def run() -> int:
        producer = aiokafka.AIOKafkaProducer(acks="all", **conf)
        await producer.start()
        try:
            sent = 0
            started = time.monotonic()
            while time.monotonic() - started < RUN_SECONDS:
                await producer.send_and_wait(topic, str(sent).encode())
                sent += 1
                await asyncio.sleep(0.05)
            return sent
        finally:
            await producer.stop()

    sent = asyncio.run(run())
    assert sent > 20
    consumer = confluent_kafka.Consumer({**librdkafka_conf(reauth, "SASL_PLAINTEXT"), "group.id": f"g-{topic}",
                                         "auto.offset.reset": "earliest"})
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
    got: list[int] = []
    deadline = time.monotonic() + 30
    while len(got) < sent and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            got.append(int(message.value()))
    consumer.close()
    assert got == list(range(sent))
    assert deltas(before, counters(reauth))["expired_killed"] >= 1
