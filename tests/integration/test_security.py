"""TLS listeners, SASL (PLAIN, SCRAM) and mutual TLS, with every client, over real sockets.

One broker runs the issue's exact command form (four listeners: PLAINTEXT,
SSL, SASL_SSL, SASL_PLAINTEXT; certificates made here with ``trustme``;
users added beforehand with ``python -m chronik users add ... --password-stdin``).
Each client -- confluent-kafka, kcat (librdkafka), kafka-python, aiokafka,
kafkajs -- produces, consumes and runs a consumer group over SASL_SSL with
SCRAM-SHA-512, SASL_PLAINTEXT with PLAIN and SSL with a client certificate.
Wrong passwords, unknown users and untrusted certificates get a client-side
authentication error and nothing is served; garbage, broken-off exchanges and
a thousand failed logins leave the broker serving others.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiokafka
import aiokafka.admin
import confluent_kafka
import pytest
import trustme
from confluent_kafka.admin import AdminClient, NewTopic

from chronik.protocol import ErrorCode, decode_response
from chronik.server.kafka import FAILED_AUTHENTICATION_LINGER

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.errors
    from kafka.admin import KafkaAdminClient
    from kafka.admin import NewTopic as KpNewTopic

from .brokerproc import BrokerProcess, free_ports
from .raw import framed, request_frame
from .test_kafkajs import MISSING as KAFKAJS_MISSING
from .test_kafkajs import NODE, SCRIPT, JS_DIR

KCAT = shutil.which("kcat")
PASSWORD = "alice-secret"


@dataclass
class Secured:
    """The running broker, its listeners' ports and the certificate files."""

    broker: BrokerProcess
    ports: dict[str, int]
    dir: Path

    def file(self, name: str) -> str:
        return str(self.dir / name)

    def bootstrap(self, listener: str) -> str:
        return f"127.0.0.1:{self.ports[listener]}"


def add_user(data_dir: Path, user: str, mechanism: str, password: str) -> subprocess.CompletedProcess[str]:
    """The issue's exact form: ``python -m chronik users add --data-dir DIR --user NAME --mechanism M --password-stdin``."""
    return subprocess.run([sys.executable, "-m", "chronik", "users", "add", "--data-dir", str(data_dir), "--user", user,
                           "--mechanism", mechanism, "--password-stdin"], input=password + "\n", capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("security")
    ca = trustme.CA()
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    alice = ca.issue_cert("alice@example.com", common_name="alice")
    alice.private_key_pem.write_to_path(str(root / "alice.key"))
    alice.cert_chain_pems[0].write_to_path(str(root / "alice.pem"))
    rogue = trustme.CA().issue_cert("mallory@example.com", common_name="mallory")  # from a CA the broker does not trust
    rogue.private_key_pem.write_to_path(str(root / "rogue.key"))
    rogue.cert_chain_pems[0].write_to_path(str(root / "rogue.pem"))

    data_dir = root / "data"
    for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
        done = add_user(data_dir, "alice", mechanism, PASSWORD)
        assert done.returncode == 0, done.stderr
    listed = subprocess.run([sys.executable, "-m", "chronik", "users", "list", "--data-dir", str(data_dir)],
                            capture_output=True, text=True, timeout=60)
    assert listed.stdout.split() == ["alice", "SCRAM-SHA-256", "alice", "SCRAM-SHA-512"], listed

    p1, p2, p3, p4 = free_ports(4)
    listeners = (f"PLAINTEXT://127.0.0.1:{p1},SSL://127.0.0.1:{p2},SASL_SSL://127.0.0.1:{p3},"
                 f"SASL_PLAINTEXT://127.0.0.1:{p4}")
    # The issue's exact serve form (its authorizer settings belong to the ACL work, tested there).
    broker = BrokerProcess(
        data_dir, "--set", f"listeners={listeners}", "--set", f"advertised.listeners={listeners}",
        "--set", "ssl.keystore.type=PEM", "--set", f"ssl.keystore.location={root / 'server.pem'}",
        "--set", "ssl.truststore.type=PEM", "--set", f"ssl.truststore.location={root / 'ca.pem'}",
        "--set", "ssl.client.auth=requested",
        "--set", "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "--group-initial-rebalance-delay-ms", "0", own_listeners=True).start()
    try:
        yield Secured(broker, {"PLAINTEXT": p1, "SSL": p2, "SASL_SSL": p3, "SASL_PLAINTEXT": p4}, root)
    finally:
        broker.stop()
        assert "Traceback" not in broker.output(), broker.output()


MODES = ("SASL_SSL", "SASL_PLAINTEXT", "SSL")


def librdkafka_conf(s: Secured, mode: str, *, user: str = "alice", password: str = PASSWORD,
                    cert: str = "alice") -> dict[str, str]:
    """librdkafka properties: SASL_SSL with SCRAM-SHA-512, SASL_PLAINTEXT with PLAIN, SSL with a client certificate."""
    conf = {"bootstrap.servers": s.bootstrap(mode), "security.protocol": mode}
    if mode in ("SSL", "SASL_SSL"):
        conf["ssl.ca.location"] = s.file("ca.pem")
    if mode == "SSL":
        conf |= {"ssl.certificate.location": s.file(f"{cert}.pem"), "ssl.key.location": s.file(f"{cert}.key")}
    else:
        conf |= {"sasl.mechanism": "SCRAM-SHA-512" if mode == "SASL_SSL" else "PLAIN",
                 "sasl.username": user, "sasl.password": password}
    return conf


def python_conf(s: Secured, mode: str, *, user: str = "alice", password: str = PASSWORD) -> dict[str, Any]:
    """kafka-python / aiokafka keyword arguments for the same three modes."""
    conf: dict[str, Any] = {"bootstrap_servers": s.bootstrap(mode), "security_protocol": mode}
    if mode in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=s.file("ca.pem"))
        if mode == "SSL":
            context.load_cert_chain(s.file("alice.pem"), s.file("alice.key"))
        conf["ssl_context"] = context
    if mode != "SSL":
        conf |= {"sasl_mechanism": "SCRAM-SHA-512" if mode == "SASL_SSL" else "PLAIN",
                 "sasl_plain_username": user, "sasl_plain_password": password}
    return conf


def topic_exists(s: Secured, topic: str) -> bool:
    """Asked on the PLAINTEXT listener."""
    return topic in AdminClient({"bootstrap.servers": s.bootstrap("PLAINTEXT")}).list_topics(timeout=10).topics


def new_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


VALUES = [f"v{i}".encode() for i in range(5)]


@pytest.mark.parametrize("mode", MODES)
def test_confluent_kafka(secured: Secured, mode: str) -> None:
    """Admin (create topic; Metadata advertises the listener connected through), produce, group consume, commit."""
    conf = librdkafka_conf(secured, mode)
    topic = new_topic("ck")
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(20)
    metadata = admin.list_topics(timeout=10)
    assert [(b.host, b.port) for b in metadata.brokers.values()] == [("127.0.0.1", secured.ports[mode])]
    producer = confluent_kafka.Producer({**conf, "acks": "all"})
    for value in VALUES:
        producer.produce(topic, value, partition=0)
    assert producer.flush(20) == 0
    consumer = confluent_kafka.Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest",
                                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < len(VALUES) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            got.append(message.value())
    consumer.commit(asynchronous=False)
    committed = consumer.committed([confluent_kafka.TopicPartition(topic, 0)], timeout=10)
    consumer.close()
    assert got == VALUES
    assert committed[0].offset == len(VALUES)


@pytest.mark.parametrize("mode", MODES)
def test_kafka_python(secured: Secured, mode: str) -> None:
    conf = python_conf(secured, mode)
    topic = new_topic("kp")
    admin = KafkaAdminClient(**conf)
    admin.create_topics([KpNewTopic(topic, 1, 1)])
    admin.close()
    producer = kafka.KafkaProducer(acks="all", **conf)
    for value in VALUES:
        producer.send(topic, value).get(20)
    producer.close(5)
    consumer = kafka.KafkaConsumer(topic, group_id=f"g-{topic}", auto_offset_reset="earliest",
                                   enable_auto_commit=False, consumer_timeout_ms=15000, **conf)
    got = []
    for message in consumer:
        got.append(message.value)
        if len(got) == len(VALUES):
            break
    consumer.commit()
    committed = consumer.committed(kafka.TopicPartition(topic, 0))
    consumer.close()
    assert got == VALUES
    assert committed == len(VALUES)


@pytest.mark.parametrize("mode", MODES)
def test_aiokafka(secured: Secured, mode: str) -> None:
    conf = python_conf(secured, mode)
    topic = new_topic("aio")

    async def run() -> tuple[list[bytes], int]:
        admin = aiokafka.admin.AIOKafkaAdminClient(**conf)
        await admin.start()
        try:
            await admin.create_topics([aiokafka.admin.NewTopic(topic, 1, 1)])
        finally:
            await admin.close()
        producer = aiokafka.AIOKafkaProducer(acks="all", **conf)
        await producer.start()
        try:
            for value in VALUES:
                await producer.send_and_wait(topic, value)
        finally:
            await producer.stop()
        consumer = aiokafka.AIOKafkaConsumer(topic, group_id=f"g-{topic}", auto_offset_reset="earliest",
                                             enable_auto_commit=False, **conf)
        await consumer.start()
        try:
            got = [(await asyncio.wait_for(consumer.getone(), 30)).value for _ in VALUES]
            await consumer.commit()
            tp = aiokafka.TopicPartition(topic, 0)
            return got, await consumer.committed(tp)
        finally:
            await consumer.stop()

    got, committed = asyncio.run(run())
    assert got == VALUES
    assert committed == len(VALUES)


def kcat_args(s: Secured, mode: str, **kw: str) -> list[str]:
    assert KCAT is not None
    args = [KCAT]
    for key, value in librdkafka_conf(s, mode, **kw).items():
        args += ["-b", value] if key == "bootstrap.servers" else ["-X", f"{key}={value}"]
    return args


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed")
@pytest.mark.parametrize("mode", MODES)
def test_kcat(secured: Secured, mode: str) -> None:
    """Debian's kcat (librdkafka 2.0.2, whose SCRAM final nonce Kafka also accepts): produce, then consume in a group."""
    topic = new_topic("kcat")
    produced = subprocess.run([*kcat_args(secured, mode), "-P", "-t", topic], input="\n".join(v.decode() for v in VALUES),
                              capture_output=True, text=True, timeout=60)
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run([*kcat_args(secured, mode), "-G", f"g-{topic}", "-X", "auto.offset.reset=earliest",
                               "-c", str(len(VALUES)), "-f", "%s\\n", topic], capture_output=True, text=True, timeout=60)
    assert consumed.returncode == 0, consumed.stderr
    assert sorted(consumed.stdout.split()) == [v.decode() for v in VALUES]


@pytest.mark.skipif(KAFKAJS_MISSING is not None, reason=KAFKAJS_MISSING or "")
@pytest.mark.parametrize("mode", MODES)
def test_kafkajs_group(secured: Secured, mode: str) -> None:
    """kafkajs_check.js's ``group`` scenario (admin, produce, a two-member consumer group, commits) over each mode."""
    security: dict[str, Any] = {}
    if mode in ("SSL", "SASL_SSL"):
        security["ssl"] = {"ca": secured.file("ca.pem")}
        if mode == "SSL":
            security["ssl"] |= {"cert": secured.file("alice.pem"), "key": secured.file("alice.key")}
    if mode != "SSL":
        security["sasl"] = {"mechanism": "scram-sha-512" if mode == "SASL_SSL" else "plain",
                            "username": "alice", "password": PASSWORD}
    assert NODE is not None
    done = subprocess.run([NODE, str(SCRIPT), secured.bootstrap(mode), "group"], cwd=JS_DIR, capture_output=True,
                          text=True, timeout=120, env={**os.environ,
                                                       "CHRONIK_KAFKAJS_SECURITY": json.dumps(security)})
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[-1])
    assert result["ok"], (result["failures"], done.stderr[-3000:])


# -- refused logins: a clear client-side error, nothing served ------------------------------------------------


@pytest.mark.parametrize("mode,user,password", [("SASL_SSL", "alice", "wrong"), ("SASL_SSL", "nobody", PASSWORD),
                                                ("SASL_PLAINTEXT", "alice", "wrong"), ("SASL_PLAINTEXT", "nobody", "x")])
def test_confluent_wrong_credentials(secured: Secured, mode: str, user: str, password: str) -> None:
    assert_login_refused(secured, librdkafka_conf(secured, mode, user=user, password=password))


#: A refused producer's record is dropped (purged) once this many of its connections were refused -- the
#: first and reconnections, each refused alike -- sooner than a message timeout would drop it.
REFUSED_CONNECTIONS = 3


def produce_refused(secured: Secured, conf: dict[str, str],
                    refusal: Callable[[confluent_kafka.KafkaError], bool]) -> list[confluent_kafka.KafkaError]:
    """A producer with ``conf`` sends one record to a new topic until :data:`REFUSED_CONNECTIONS` of its
    errors are ``refusal`` ones (10 s at most), then purges it: the record was never delivered and its
    topic never created.  Returns the producer's errors."""
    topic = new_topic("refused")
    errors: list[confluent_kafka.KafkaError] = []
    producer = confluent_kafka.Producer({**conf, "error_cb": errors.append})
    reports: list[Any] = []
    producer.produce(topic, b"never", on_delivery=lambda err, msg: reports.append(err))
    deadline = time.monotonic() + 10
    while not reports and sum(map(refusal, errors)) < REFUSED_CONNECTIONS and time.monotonic() < deadline:
        producer.poll(0.05)
    producer.purge()
    producer.flush(10)
    assert len(reports) == 1 and reports[0] is not None  # never delivered
    assert not topic_exists(secured, topic)
    return errors


def assert_login_refused(secured: Secured, conf: dict[str, str]) -> None:
    """A producer with ``conf`` gets an authentication error and delivers nothing (its topic is never created)."""
    errors = produce_refused(secured, conf, lambda e: e.code() == confluent_kafka.KafkaError._AUTHENTICATION)
    assert any(e.code() == confluent_kafka.KafkaError._AUTHENTICATION for e in errors), errors
    assert any("Authentication failed" in e.str() for e in errors), errors


def test_confluent_untrusted_client_certificate(secured: Secured) -> None:
    """A certificate from a CA outside the trust store fails the handshake (ssl.client.auth=requested checks one
    given), and the client is told why: the TLS alert (unknown_ca) is sent before the close."""
    errors = produce_refused(secured, librdkafka_conf(secured, "SSL", cert="rogue"),
                             lambda e: "alert unknown ca" in e.str())
    # the broker's alert reaches the client (it used to see only "brokers are down")
    assert any("alert unknown ca" in e.str() for e in errors), errors
    secured.broker.wait_for_log("TLS handshake with 127.0.0.1 on listener SSL .* failed")


#: kafka-python 3 bootstraps for ``bootstrap_timeout_ms`` (30 s by default) whatever the failures; 2.x has no such
#: setting.  Its reconnection backoff grows, so most attempts come early (measured: 13 logged failures in 2.5 s, 15 in 5 s).
KAFKA_PYTHON_BOOTSTRAP = {"bootstrap_timeout_ms": 2500} if int(kafka.__version__.split(".")[0]) >= 3 else {}


@pytest.fixture
def collect_failed_clients(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A failed client leaves sockets unclosed (kafka-python its wake-up socket pair), which the captured
    records of its errors (their tracebacks) keep alive for the whole session: dropped and collected at
    this test's teardown, under its warning filter, not in a later test or at exit."""
    yield
    caplog.get_records("call").clear()
    gc.collect()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.usefixtures("collect_failed_clients")
@pytest.mark.parametrize("client", ["kafka-python", "aiokafka"])
def test_python_clients_wrong_password(secured: Secured, client: str, caplog: pytest.LogCaptureFixture) -> None:
    """Both clients log the broker's SASL_AUTHENTICATION_FAILED message and give up bootstrapping.

    kafka-python retries until its bootstrap timeout: every one of its connections must have read the
    answer.  (It drops what it read when the same read loop meets the end of the stream, so a broker
    that closes right behind the answer makes it see only "socket disconnected"; the broker leaves the
    connection open until the client closes: :func:`chronik.server.connection.linger_until_client_closes`.)
    """
    conf = python_conf(secured, "SASL_SSL", password="wrong")

    async def aiokafka_start() -> None:
        producer = aiokafka.AIOKafkaProducer(**conf)
        try:
            await producer.start()
        finally:
            await producer.stop()

    with caplog.at_level("ERROR"), pytest.raises(Exception):
        if client == "kafka-python":
            kafka.KafkaProducer(request_timeout_ms=5000, max_block_ms=5000, **KAFKA_PYTHON_BOOTSTRAP, **conf)
        else:
            asyncio.run(aiokafka_start())
    assert "SaslAuthenticationFailed" in caplog.text and "invalid credentials" in caplog.text, caplog.text
    assert "socket disconnected" not in caplog.text, caplog.text


# -- raw sockets: the SASL state machine and bad input --------------------------------------------------------


def connect(s: Secured, listener: str, *, tls: bool = False) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", s.ports[listener]), timeout=10)
    if tls:
        context = ssl.create_default_context(cafile=s.file("ca.pem"))
        try:
            sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
        except BaseException:
            sock.close()
            raise
    return sock


def read_frame(sock: socket.socket) -> bytes | None:
    data = b""
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    return data[4:]


#: Response header size of the API versions used here (4: correlation id; 5: plus empty tagged fields).
_HEADER = {(17, 1): 4, (18, 3): 4, (36, 2): 5, (3, 9): 5}


def decode(api_key: int, version: int, frame: bytes) -> Any:
    """The body of a response frame (size prefix removed)."""
    return decode_response(api_key, version, frame, _HEADER[(api_key, version)])


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def closed_after_alert(sock: socket.socket) -> bool:
    """A raw (not TLS) socket to a TLS listener after a failed handshake: the broker closes it, sending at most
    OpenSSL's alert first (a TLS record of type 21, as Kafka's own TLS layer flushes it) -- no other bytes."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received == b"" or (received[:2] == b"\x15\x03" and len(received) == 5 + int.from_bytes(received[3:5], "big"))


def closes_once_the_client_does(sock: socket.socket) -> bool:
    """After an answer that ends the connection (a refused login): the broker's end of stream does not follow
    the answer at once (a client may read both in one go and lose the answer), and comes as soon as the
    client closes its side (plaintext sockets)."""
    sock.settimeout(0.3)
    try:
        early = sock.recv(1)
    except TimeoutError:
        pass
    else:
        raise AssertionError(f"the broker sent {early!r} right after its last answer")
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(3)
    return closed(sock)


def ask(sock: socket.socket, api_key: int, version: int, body: dict[str, Any]) -> Any:
    """Send one request and decode its response (which must come)."""
    sock.sendall(request_frame(api_key, version, body))
    frame = read_frame(sock)
    assert frame is not None, "the broker closed the connection"
    return decode(api_key, version, frame)


def sasl_plain_login(sock: socket.socket, user: str, password: str) -> Any:
    """SaslHandshake v1 (PLAIN) then SaslAuthenticate v2; returns the SaslAuthenticate response."""
    handshake = ask(sock, 17, 1, {"mechanism": "PLAIN"})
    assert handshake.error_code == 0 and "PLAIN" in handshake.mechanisms
    return ask(sock, 36, 2, {"auth_bytes": f"\0{user}\0{password}".encode()})


METADATA = {"topics": [], "allow_auto_topic_creation": False, "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False}


def metadata_ok(sock: socket.socket) -> bool:
    return bool(ask(sock, 3, 9, METADATA).brokers[0].node_id == 1)


def test_sasl_login_then_requests_and_a_failed_login_closes_after_its_answer(secured: Secured) -> None:
    with connect(secured, "SASL_PLAINTEXT") as sock:
        answer = sasl_plain_login(sock, "alice", PASSWORD)
        assert answer.error_code == 0
        assert metadata_ok(sock)
    with connect(secured, "SASL_PLAINTEXT") as sock:
        started = time.monotonic()
        answer = sasl_plain_login(sock, "alice", "wrong")
        assert answer.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
        assert "Invalid username or password" in answer.error_message
        assert time.monotonic() - started >= 0.09  # connection.failed.authentication.delay.ms, default 100
        assert closes_once_the_client_does(sock)


def test_a_refused_client_that_never_closes_is_let_go_after_the_linger(secured: Secured) -> None:
    """What a refused client sends after the answer is read and dropped (so the close is a FIN, not a reset
    that could cost a client its unread answer), and the broker closes after FAILED_AUTHENTICATION_LINGER."""
    with connect(secured, "SASL_PLAINTEXT") as sock:
        assert sasl_plain_login(sock, "alice", "wrong").error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
        started = time.monotonic()
        sock.sendall(request_frame(3, 9, METADATA) * 100)  # never answered
        sock.settimeout(FAILED_AUTHENTICATION_LINGER + 5)
        assert sock.recv(1) == b""  # an orderly end of stream, not ECONNRESET
        assert FAILED_AUTHENTICATION_LINGER - 0.5 < time.monotonic() - started < FAILED_AUTHENTICATION_LINGER + 3


def test_a_request_before_authentication_closes_the_connection(secured: Secured) -> None:
    with connect(secured, "SASL_SSL", tls=True) as sock:
        versions = ask(sock, 18, 3, {"client_software_name": "raw", "client_software_version": "1"})
        assert versions.error_code == 0  # ApiVersions is allowed before authentication
        sock.sendall(request_frame(3, 9, METADATA))
        assert closed(sock)


def test_unknown_mechanism_is_refused(secured: Secured) -> None:
    with connect(secured, "SASL_PLAINTEXT") as sock:
        answer = ask(sock, 17, 1, {"mechanism": "GSSAPI"})
        assert answer.error_code == ErrorCode.UNSUPPORTED_SASL_MECHANISM
        assert sorted(answer.mechanisms) == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
        assert closes_once_the_client_does(sock)


def test_sasl_handshake_on_a_plaintext_listener_is_an_illegal_state(secured: Secured) -> None:
    with connect(secured, "PLAINTEXT") as sock:
        assert ask(sock, 17, 1, {"mechanism": "PLAIN"}).error_code == ErrorCode.ILLEGAL_SASL_STATE


def test_bad_input_leaves_the_broker_serving_others(secured: Secured) -> None:
    """Garbage before and during the TLS handshake, plaintext Kafka on a TLS listener, a SASL
    exchange broken off half-way, a raw token without a handshake: each closes its own connection."""
    for listener in ("SSL", "SASL_SSL"):
        with connect(secured, listener) as sock:  # garbage instead of a ClientHello
            sock.sendall(b"\x00garbage\xff" * 100)
            assert closed(sock)
        with connect(secured, listener) as sock:  # a Kafka request in plaintext: no byte back, only the close
            sock.sendall(request_frame(18, 0, {}))
            assert closed(sock)
        with connect(secured, listener) as sock:  # a ClientHello's start, then garbage
            sock.sendall(bytes.fromhex("160301020001") + b"\xee" * 600)
            assert closed_after_alert(sock)
    with connect(secured, "SASL_SSL", tls=True) as sock:  # handshake, first SCRAM message, then gone
        sock.sendall(request_frame(17, 1, {"mechanism": "SCRAM-SHA-512"}))
        assert read_frame(sock) is not None
        sock.sendall(request_frame(36, 2, {"auth_bytes": b"n,,n=alice,r=abcdef"}))
        assert read_frame(sock) is not None
    with connect(secured, "SASL_PLAINTEXT") as sock:  # SaslAuthenticate without a handshake
        assert ask(sock, 36, 2, {"auth_bytes": b"\0alice\0x"}).error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
        assert closes_once_the_client_does(sock)
    for listener, tls in (("SASL_SSL", True), ("SASL_PLAINTEXT", False)):
        with connect(secured, listener, tls=tls) as sock:
            assert sasl_plain_login(sock, "alice", PASSWORD).error_code == 0
            assert metadata_ok(sock)


def test_a_thousand_failed_logins_in_a_row(secured: Secured) -> None:
    """1,000 wrong passwords (50 connections at a time): each refused, the broker's memory stays
    bounded and a good login still works."""
    before = secured.broker.rss_bytes()
    frames = (request_frame(17, 1, {"mechanism": "PLAIN"}, correlation_id=1),
              request_frame(36, 2, {"auth_bytes": b"\0alice\0wrong"}, correlation_id=2))

    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", secured.ports["SASL_PLAINTEXT"])
        try:
            writer.write(frames[0] + frames[1])
            codes = []
            for api_key, version in ((17, 1), (36, 2)):
                size = int.from_bytes(await reader.readexactly(4), "big")
                codes.append(decode(api_key, version, await reader.readexactly(size)).error_code)
            writer.write_eof()
            assert await reader.read(1) == b""  # then closed, once the client closes its side
            return codes[1]
        finally:
            writer.close()

    async def run() -> list[int]:
        out: list[int] = []
        for _ in range(20):
            out += await asyncio.wait_for(asyncio.gather(*(one() for _ in range(50))), 60)
        return out

    codes = asyncio.run(run())
    assert codes == [ErrorCode.SASL_AUTHENTICATION_FAILED] * 1000
    assert secured.broker.rss_bytes() - before < 64 * 1024 * 1024
    with connect(secured, "SASL_PLAINTEXT") as sock:
        assert sasl_plain_login(sock, "alice", PASSWORD).error_code == 0
        assert metadata_ok(sock)


def test_users_managed_online_with_confluent_admin(secured: Secured) -> None:
    """AlterUserScramCredentials (the client sends a salted password) then a SCRAM login with it;
    DescribeUserScramCredentials; deleting the credential refuses the next login."""
    from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
                                       UserScramCredentialUpsertion)

    admin = AdminClient({"bootstrap.servers": secured.bootstrap("PLAINTEXT")})
    user = f"bob{uuid.uuid4().hex[:6]}"
    upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"bob-pw")
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(20)
    described = admin.describe_user_scram_credentials([user])[user].result(20)
    assert [(i.mechanism, i.iterations) for i in described.scram_credential_infos] == [(ScramMechanism.SCRAM_SHA_256, 8192)]
    everyone = admin.describe_user_scram_credentials().result(20)
    assert {"alice", user} <= set(everyone)
    with pytest.raises(confluent_kafka.KafkaException, match="does not exist"):
        admin.describe_user_scram_credentials(["nobody"])["nobody"].result(20)
    bad = UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 10), b"pw")
    with pytest.raises(confluent_kafka.KafkaException, match="Iterations"):
        admin.alter_user_scram_credentials([bad])["carol"].result(20)

    conf = {**librdkafka_conf(secured, "SASL_SSL", user=user, password="bob-pw"), "sasl.mechanism": "SCRAM-SHA-256"}
    assert AdminClient(conf).list_topics(timeout=10).brokers  # logged in with the new credential

    deletion = UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256)
    admin.alter_user_scram_credentials([deletion])[user].result(20)
    assert_login_refused(secured, conf)


def test_v0_handshake_then_raw_tokens(secured: Secured) -> None:
    """SaslHandshake v0 (pre-KIP-152 clients): the SASL tokens follow as bare length-prefixed frames."""
    with connect(secured, "SASL_PLAINTEXT") as sock:
        sock.sendall(request_frame(17, 0, {"mechanism": "PLAIN"}))
        frame = read_frame(sock)
        assert frame is not None and decode_response(17, 0, frame, 4).error_code == 0
        sock.sendall(framed(f"\0alice\0{PASSWORD}".encode()))
        assert read_frame(sock) == b""  # PLAIN's (empty) server token
        assert metadata_ok(sock)
    with connect(secured, "SASL_PLAINTEXT") as sock:
        sock.sendall(request_frame(17, 0, {"mechanism": "PLAIN"}))
        assert read_frame(sock) is not None
        sock.sendall(framed(b"\0alice\0wrong"))
        assert closed(sock)  # v0 has no error frame: the connection closes


def test_a_cluster_advertises_each_listener_and_shares_users(tmp_path: Path) -> None:
    """Three nodes, each with a PLAINTEXT and a SASL_PLAINTEXT listener: Metadata through either lists
    every node at that listener's address (RegisterBroker carries per-listener endpoints), and a user
    added through one node logs in on another (credentials replicate through the metadata log)."""
    from types import SimpleNamespace

    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

    from .test_cluster import IDS, eventually, running

    ports = free_ports(3 * len(IDS))
    plain, sasl, replication = (dict(zip(IDS, ports[k * len(IDS):(k + 1) * len(IDS)])) for k in range(3))
    peers = [f"--peer={p}@127.0.0.1:{plain[p]}/127.0.0.1:{replication[p]}" for p in IDS]
    nodes = {
        i: BrokerProcess(tmp_path / f"node{i}", "--node-id", str(i), "--replication-listen", f"127.0.0.1:{replication[i]}",
                         *peers, "--set", f"listeners=PLAINTEXT://127.0.0.1:{plain[i]},SASL_PLAINTEXT://127.0.0.1:{sasl[i]}",
                         own_listeners=True)
        for i in IDS}

    def endpoints(client_conf: dict[str, str]) -> dict[int, tuple[str, int]]:
        brokers = AdminClient(client_conf).list_topics(timeout=10).brokers
        return {b.id: (b.host, b.port) for b in brokers.values()}

    with running(SimpleNamespace(nodes=nodes)):  # type: ignore[arg-type]
        # every node registered (through the controller), each with both listeners
        eventually(lambda: endpoints({"bootstrap.servers": f"127.0.0.1:{plain[3]}"}) ==
                   {i: ("127.0.0.1", plain[i]) for i in IDS}, 30)
        upsert = UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"pw")
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{plain[1]}"})
        admin.alter_user_scram_credentials([upsert])["carol"].result(20)
        conf = {"bootstrap.servers": f"127.0.0.1:{sasl[2]}", "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "carol", "sasl.password": "pw"}
        assert eventually(lambda: endpoints(conf) == {i: ("127.0.0.1", sasl[i]) for i in IDS}, 30)
        topic = new_topic("cluster")
        producer = confluent_kafka.Producer({**conf, "acks": "all"})
        producer.produce(topic, b"over SASL", partition=0)
        assert producer.flush(30) == 0


def test_users_cli_takes_the_data_dir_lock_and_deletes(secured: Secured, tmp_path: Path) -> None:
    """``users add`` refuses a running broker's data directory (its lock); ``users delete``/``list`` work offline;
    no password on stdin is an error."""
    locked = add_user(secured.broker.data_dir, "eve", "SCRAM-SHA-256", "pw")
    assert locked.returncode != 0 and "lock" in locked.stderr.lower(), locked
    data_dir = tmp_path / "data"
    assert add_user(data_dir, "dave", "SCRAM-SHA-256", "pw").returncode == 0
    empty = add_user(data_dir, "dave", "SCRAM-SHA-256", "")
    assert empty.returncode == 2 and "no password" in empty.stderr

    def users(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "chronik", "users", *args, "--data-dir", str(data_dir)],
                              capture_output=True, text=True, timeout=60)

    assert users("list").stdout.split() == ["dave", "SCRAM-SHA-256"]
    assert users("delete", "--user", "dave").returncode == 0
    assert users("list").stdout == ""
    missing = users("delete", "--user", "dave")
    assert missing.returncode == 1 and "no such credential" in missing.stderr


@pytest.mark.parametrize("settings,message", [
    (["listeners=SSL://127.0.0.1:0", "ssl.keystore.location=/nonexistent/server.pem"], "cannot load ssl.keystore.location"),
    (["ssl.principal.mapping.rules=RULE:unfinished"], "invalid ssl.principal.mapping.rules"),
    (["listeners=SASL_SSL://127.0.0.1:0"], "ssl.keystore.location"),
])
def test_unusable_tls_settings_stop_start_up_with_one_line(tmp_path: Path, settings: list[str], message: str) -> None:
    from .brokerproc import one_line_error, serve

    done = serve("--data-dir", str(tmp_path / "data"), *(arg for s in settings for arg in ("--set", s)))
    assert message in one_line_error(done)


def test_the_exact_serve_form_with_acls_a_super_user_and_a_sasl_principal(tmp_path: Path) -> None:
    """The issue's whole serve command, authorizer settings included: the super user
    (admin, over SASL_SSL) creates a topic and grants User:alice; alice (SASL_PLAINTEXT,
    PLAIN) is refused before the grant and served after it."""
    ca = trustme.CA()
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    data_dir = tmp_path / "data"
    for user, password in (("admin", "admin-secret"), ("alice", PASSWORD)):
        done = add_user(data_dir, user, "SCRAM-SHA-512", password)
        assert done.returncode == 0, done.stderr
    p1, p2, p3, p4 = free_ports(4)
    listeners = (f"PLAINTEXT://127.0.0.1:{p1},SSL://127.0.0.1:{p2},SASL_SSL://127.0.0.1:{p3},"
                 f"SASL_PLAINTEXT://127.0.0.1:{p4}")
    broker = BrokerProcess(
        data_dir, "--set", f"listeners={listeners}", "--set", f"advertised.listeners={listeners}",
        "--set", "ssl.keystore.type=PEM", "--set", f"ssl.keystore.location={tmp_path / 'server.pem'}",
        "--set", "ssl.truststore.type=PEM", "--set", f"ssl.truststore.location={tmp_path / 'ca.pem'}",
        "--set", "ssl.client.auth=requested",
        "--set", "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "--set", "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "--set", "super.users=User:admin", "--set", "allow.everyone.if.no.acl.found=false",
        "--group-initial-rebalance-delay-ms", "0", own_listeners=True).start()
    try:
        admin_conf = {"bootstrap.servers": f"127.0.0.1:{p3}", "security.protocol": "SASL_SSL",
                      "ssl.ca.location": str(tmp_path / "ca.pem"), "sasl.mechanism": "SCRAM-SHA-512",
                      "sasl.username": "admin", "sasl.password": "admin-secret"}
        alice_conf = {"bootstrap.servers": f"127.0.0.1:{p4}", "security.protocol": "SASL_PLAINTEXT",
                      "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": PASSWORD}
        admin = AdminClient(admin_conf)
        admin.create_topics([NewTopic("secured", 1, 1)])["secured"].result(15)

        def alice_produces() -> confluent_kafka.KafkaError | None:
            producer = confluent_kafka.Producer({**alice_conf, "message.timeout.ms": 5000})
            outcome: list[Any] = []
            producer.produce("secured", b"from alice", on_delivery=lambda err, msg: outcome.append(err))
            producer.flush(10)
            return outcome[0] if outcome else None

        refused = alice_produces()
        assert refused is not None and refused.code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
        from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, ResourcePatternType,
                                           ResourceType)
        grants = [AclBinding(ResourceType.TOPIC, "secured", ResourcePatternType.LITERAL, "User:alice", "*", op,
                             AclPermissionType.ALLOW) for op in (AclOperation.WRITE, AclOperation.READ)]
        grants.append(AclBinding(ResourceType.GROUP, "alice-group", ResourcePatternType.LITERAL, "User:alice", "*",
                                 AclOperation.READ, AclPermissionType.ALLOW))
        for future in admin.create_acls(grants).values():
            assert future.result(10) is None
        assert alice_produces() is None
        consumer = confluent_kafka.Consumer({**alice_conf, "group.id": "alice-group", "auto.offset.reset": "earliest"})
        try:
            consumer.subscribe(["secured"])
            deadline = time.monotonic() + 20
            got = None
            while got is None and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    got = message.value()
            assert got == b"from alice"
        finally:
            consumer.close()
        assert "authorization denied: principal User:alice" in broker.output()
    finally:
        broker.stop()
        assert "Traceback" not in broker.output(), broker.output()
