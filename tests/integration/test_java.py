"""Apache Kafka's Java client (4.x and 3.9) against real broker processes.

Each test runs one scenario of ``tests/java/checks`` (``chronik.checks.Checks``) in one JVM,
built against kafka-clients 4.x (``tests/java/kafka-4``) and 3.9 (``tests/java/kafka-3.9``):
the program does the work, checks what it got and prints a JSON result that is asserted on
here; the client's own log lines (slf4j-simple, WARN and up) arrive on stderr and must be empty
against a healthy broker.  Needs ``java`` and the built Maven project
(``mvn -q -f tests/java/pom.xml -B package``, which ``.ci/run`` runs); without them the
tests are skipped, unless ``CHRONIK_REQUIRE_JAVA=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from chronik.protocol import decode_response
from chronik.protocol.records import parse_batch_header

from .brokerproc import BrokerProcess, running_broker
from .clients import confluent_consume
from .raw import Raw, fetch_frame
from .test_cluster import Cluster, create, eventually, running_cluster
from .test_failover import FAILOVER_LIMIT, TOPIC, leaders

JAVA_DIR = Path(__file__).resolve().parents[1] / "java"
JAVA = shutil.which("java")
CLIENTS = ("kafka-4", "kafka-3.9")
"""The Maven modules: the same checks built against kafka-clients 4.x and 3.9."""


def _missing() -> str | None:
    if JAVA is None:
        return "java is not installed (the Java client tests need a JDK 17)"
    for module in (*CLIENTS, "tools", "connect"):  # test_kafka_tools/_streams/_connect use the last two
        if not (JAVA_DIR / module / "target" / "classpath.txt").is_file():
            return f"tests/java is not built: run `mvn -q -f tests/java/pom.xml -B package` ({module})"
    return None


MISSING = _missing()
if MISSING is not None and os.environ.get("CHRONIK_REQUIRE_JAVA") == "1":
    raise RuntimeError(f"CHRONIK_REQUIRE_JAVA=1 but {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def java_command(module: str, main: str, *args: str, properties: dict[str, str] | None = None) -> list[str]:
    """``java -cp <module's classes and dependencies> main args``, for a module of tests/java."""
    assert JAVA is not None
    target = JAVA_DIR / module / "target"
    classpath = os.pathsep.join([str(target / "classes"), (target / "classpath.txt").read_text().strip()])
    props = [f"-D{k}={v}" for k, v in (properties or {}).items()]
    return [JAVA, "-XX:TieredStopAtLevel=1", "-Xshare:auto", *props, "-cp", classpath, main, *args]


def parse_result(stdout: str, stderr: str, returncode: int, scenario: str) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), f"no result from Checks {scenario} (exit {returncode}):\n{stderr[-6000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert result["scenario"] == scenario
    assert result["ok"] and returncode == 0, (
        f"Java {result['client']} {scenario} failed: {json.dumps(result['failures'], indent=1)}\n"
        f"client log:\n{stderr[-6000:]}")
    return result


def client_warnings(stderr: str) -> list[str]:
    """The Java client's WARN and ERROR log lines (slf4j-simple prints 'HH:mm:ss.SSS [thread] LEVEL ...')."""
    return [line for line in stderr.splitlines() if re.match(r"\d\d:\d\d:\d\d\.\d+ \[[^]]*\] (WARN|ERROR) ", line)]


def run_checks(module: str, scenario: str, bootstrap: str, *args: str, timeout: float = 120.0,
               properties: dict[str, str] | None = None, quiet: bool = True) -> tuple[dict[str, Any], str]:
    """Run one scenario to its end; returns its JSON result and the client's log (stderr).

    ``quiet``: the client must not have logged a warning or an error."""
    done = subprocess.run(java_command(module, "chronik.checks.Checks", scenario, bootstrap, *args,
                                       properties=properties),
                          capture_output=True, text=True, timeout=timeout, check=False)
    result = parse_result(done.stdout, done.stderr, done.returncode, scenario)
    assert result["client"] == {"kafka-4": "4.4.0", "kafka-3.9": "3.9.2"}[module]
    if quiet:
        assert client_warnings(done.stderr) == [], done.stderr[-6000:]
    return result, done.stderr


@pytest.fixture(scope="module")
def java_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for every scenario (each uses its own topics and groups); no initial rebalance delay.

    No Java client (4.x opens with ApiVersions v5, then v4) asked for an API or version the
    broker does not serve, as far as its log says."""
    with running_broker(tmp_path_factory.mktemp("java") / "data", "--group-initial-rebalance-delay-ms", "0") as proc:
        yield proc
        assert "unsupported API" not in proc.output(), proc.output()


def sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def assert_librdkafka_reads_the_same(bootstrap: str, result: dict[str, Any]) -> None:
    """What the Java producer wrote (every codec) reads the same through librdkafka."""
    by_partition: dict[int, list[dict[str, Any]]] = {}
    for d in result["digests"]:
        by_partition.setdefault(d["partition"], []).append(d)
    assert sorted(by_partition) == [0, 1, 2, 3, 4]
    for partition, digests in by_partition.items():
        got = confluent_consume(bootstrap, result["topic"], len(digests), partition=partition,
                                **{"fetch.message.max.bytes": 4 << 20})
        assert [(g.offset, sha256(g.key), sha256(g.value), g.timestamp) for g in got] == [
            (d["offset"], d["key"], d["value"], d["timestamp"]) for d in digests], partition


@pytest.mark.parametrize("module", CLIENTS)
def test_java_round_trip_byte_for_byte(java_broker: BrokerProcess, module: str) -> None:
    """Keys, null and empty keys and values, repeated/empty/null/binary/unicode headers, explicit
    timestamps, 1 MB records, each codec (none, gzip, snappy, lz4, zstd) on its own partition: the
    Java consumer reads back exactly what the Java producer sent, at the acknowledged offsets,
    and so does librdkafka.  Also a LogAppendTime topic and offsetsForTimes + seek."""
    result, _ = run_checks(module, "roundtrip", java_broker.bootstrap)
    assert result["sent"] == result["received"] == 5 * 49
    assert result["mismatches"] == 0
    assert result["offsetForTime"] == 5
    assert_librdkafka_reads_the_same(java_broker.bootstrap, result)


def stored_batches(broker: BrokerProcess, topic: str, partition: int) -> list[tuple[int, int, int, int]]:
    """(base offset, producer id, producer epoch, base sequence) of each stored batch, read raw."""
    with Raw(broker) as raw:
        raw.send(fetch_frame(topic, 0, partition=partition))
        frame = raw.read_frame()
    assert frame is not None
    records = decode_response(1, 12, frame, 5).responses[0].partitions[0].records
    out, pos = [], 0
    while pos < len(records):
        header = parse_batch_header(records, pos)
        out.append((header.base_offset, header.producer_id, header.producer_epoch, header.base_sequence))
        pos += 12 + header.batch_length
    return out


@pytest.mark.parametrize("module", CLIENTS)
def test_java_idempotent_producer_is_the_default(java_broker: BrokerProcess, module: str) -> None:
    """The default producer (idempotent, acks=all, 5 requests in flight, small batches): every
    record acknowledged at the next offset in send order and consumed exactly once; the stored
    batches carry one producer id and sequence numbers equal to their offsets, and a second
    producer got another id."""
    result, _ = run_checks(module, "idempotent", java_broker.bootstrap)
    first = stored_batches(java_broker, result["topic"], 0)
    assert len(first) > 10  # 1000 records in 512-byte batches
    assert {pid for _, pid, _, _ in first} == {first[0][1]} and first[0][1] >= 0
    assert all(base_sequence == base_offset for base_offset, _, _, base_sequence in first)
    second = stored_batches(java_broker, result["topic"], 2)
    assert second and second[0][1] not in (-1, first[0][1]) and second[0][3] == 0


@pytest.mark.parametrize("module", CLIENTS)
def test_java_consumer_groups(java_broker: BrokerProcess, module: str) -> None:
    """Commit and resume (a new member reads exactly the records after the commit); an eager
    (range) and a cooperative-sticky group of two members, where the first member gives up all
    four partitions (eager) or only the two that move (cooperative); two static members, one
    restarted with the same group.instance.id: it gets its partitions back and the other member
    is not rebalanced."""
    result, _ = run_checks(module, "groups", java_broker.bootstrap)
    assert result["resumed"] == 8
    assert result["eager"]["revoked"] == [[0, 1, 2, 3]] and result["eager"]["assignor"] == "range"
    assert len(result["cooperative"]["revoked"]) == 1 and result["cooperative"]["assignor"] == "cooperative-sticky"
    assert result["eager"]["state"] == result["cooperative"]["state"] == "Stable"
    assert len(result["static"]["partitions"]) == 2


@pytest.mark.parametrize("module", CLIENTS)
def test_java_admin_client(java_broker: BrokerProcess, module: str) -> None:
    """describeCluster, describeMetadataQuorum; createTopics (existing, invalid config), listTopics, createPartitions,
    describeTopics; describeConfigs and incrementalAlterConfigs (SET, DELETE), broker configs;
    listOffsets earliest/latest/max-timestamp/for-timestamp; deleteRecords; electLeaders;
    consumer groups: describe (active, empty), list, listConsumerGroupOffsets,
    alterConsumerGroupOffsets, deleteConsumerGroupOffsets, deleteConsumerGroups; deleteTopics."""
    result, _ = run_checks(module, "admin", java_broker.bootstrap)
    assert result["nodes"] == 1 and result["controller"] == 1
    quorum = result["metadataQuorum"]
    (voter,) = quorum.pop("voters")
    assert quorum == {"leaderId": 1, "leaderEpoch": 0, "highWatermark": voter["logEndOffset"], "observers": 0,
                      "endpoints": {}}
    assert voter["id"] == 1 and voter["directoryId"] == "AAAAAAAAAAAAAAAAAAAAAA" and voter["logEndOffset"] > 0
    assert voter["lastFetchTimestamp"] == voter["lastCaughtUpTimestamp"] > time.time() * 1000 - 120_000
    assert result["listOffsets"]["maxTimestamp"] == [7, 1_700_000_100_000]
    assert result["listOffsets"]["afterDeleteRecords"] == 4
    assert result["electLeaders"] == "ElectionNotNeededException"


@pytest.mark.parametrize("module", CLIENTS)
def test_java_transactions(java_broker: BrokerProcess, module: str) -> None:
    """The transactional producer: commit, abort, sendOffsetsToTransaction (the group's offsets
    appear only with the commit); an open transaction holds read_committed readers at the last
    stable offset; a second producer with the same transactional.id fences the first, whose
    commitTransaction fails with ProducerFencedException, and its open transaction is aborted.
    read_committed consumers read exactly the committed records, read_uncommitted every one."""
    result, _ = run_checks(module, "transactions", java_broker.bootstrap)
    assert result["readCommitted"] == 16 and result["readUncommitted"] == 26
    assert result["zombieCommit"] == "ProducerFencedException"
    open_txn = result["openTransaction"]
    assert open_txn["lastStable"] < open_txn["highWatermark"]
    assert result["endOffsets"] == 26 + 2 * 5  # each of the 5 transactions ended by a marker in both partitions


TELEMETRY_LOGGER = "org.apache.kafka.common.telemetry"


@pytest.mark.parametrize("module", CLIENTS)
def test_java_client_telemetry_is_asked_for_once_per_client(java_broker: BrokerProcess, module: str) -> None:
    """Java clients from 3.7 on ask for a metrics subscription (KIP-714, GetTelemetrySubscriptions)
    when the broker advertises the API.  Chronik, like a Kafka broker with no metrics plugin,
    does not: each client notes that once (at debug level) and never asks again, and logs no
    warning.  The idempotent scenario's three clients (two producers, one consumer) run with
    the telemetry loggers at debug."""
    _, log = run_checks(module, "idempotent", java_broker.bootstrap,
                        properties={f"org.slf4j.simpleLogger.log.{TELEMETRY_LOGGER}": "debug"})
    attempts = [line for line in log.splitlines() if "Creating telemetry subscription request" in line]
    assert 1 <= len(attempts) <= 3 * 2, log[-6000:]  # at most once per client and node
    assert "GetTelemetrySubscriptions" not in java_broker.output()
    assert "unsupported API 71" not in java_broker.output()


# -- a 3-node cluster ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def java_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("java-cluster"), "--group-initial-rebalance-delay-ms", "0") as cluster:
        eventually(cluster.controller, 20)
        yield cluster


def cluster_bootstrap(cluster: Cluster) -> str:
    return ",".join(node.bootstrap for node in cluster.nodes.values())


@pytest.mark.parametrize("module", CLIENTS)
def test_java_round_trip_on_a_cluster(java_cluster: Cluster, module: str) -> None:
    """The single-node round trip with replication factor 3, through every node."""
    result, _ = run_checks(module, "roundtrip", cluster_bootstrap(java_cluster), "3")
    assert result["sent"] == result["received"] == 5 * 49 and result["mismatches"] == 0
    assert_librdkafka_reads_the_same(java_cluster.nodes[3].bootstrap, result)


@pytest.mark.parametrize("module", CLIENTS)
def test_java_transactions_on_a_cluster(java_cluster: Cluster, module: str) -> None:
    """The single-node transactions scenario with replication factor 3, through every node: the
    coordinator, the group coordinator and the partition leaders are spread over the three nodes,
    so markers go to leaders on other nodes and the committed offsets move with the commit."""
    result, _ = run_checks(module, "transactions", cluster_bootstrap(java_cluster), "3")
    assert result["readCommitted"] == 16 and result["readUncommitted"] == 26
    assert result["zombieCommit"] == "ProducerFencedException"
    assert result["openTransaction"]["lastStable"] < result["openTransaction"]["highWatermark"]
    assert result["endOffsets"] == 26 + 2 * 5


@pytest.mark.parametrize("module", CLIENTS)
def test_java_idempotent_producer_groups_and_admin_on_a_cluster(java_cluster: Cluster, module: str) -> None:
    """The single-node idempotent, consumer-group and Admin scenarios with replication factor 3,
    through every node: partition leaders and the group coordinator on different nodes, Admin
    requests forwarded to the controller (createTopics, createPartitions, configs, deleteRecords,
    electLeaders, group offsets, describeMetadataQuorum)."""
    bootstrap = cluster_bootstrap(java_cluster)
    idempotent, _ = run_checks(module, "idempotent", bootstrap, "3")
    assert idempotent["perPartition"] == 1000
    groups, _ = run_checks(module, "groups", bootstrap, "3")
    assert groups["resumed"] == 8
    assert groups["eager"]["revoked"] == [[0, 1, 2, 3]] and len(groups["cooperative"]["revoked"]) == 1
    assert groups["eager"]["state"] == groups["cooperative"]["state"] == "Stable"
    assert len(groups["static"]["partitions"]) == 2
    admin, _ = run_checks(module, "admin", bootstrap, "3")
    assert admin["nodes"] == 3 and admin["controller"] == java_cluster.controller()
    quorum = admin["metadataQuorum"]
    assert quorum["leaderId"] == admin["controller"] and quorum["leaderEpoch"] >= 1 and quorum["observers"] == 0
    assert [v["id"] for v in quorum["voters"]] == [1, 2, 3]
    assert all(v["logEndOffset"] > 0 and v["lastFetchTimestamp"] > 0 for v in quorum["voters"])
    assert quorum["endpoints"] == {str(i): [f"REPLICATION://{address}"] for i, address in java_cluster.replication.items()}
    assert admin["listOffsets"]["maxTimestamp"] == [7, 1_700_000_100_000]
    assert admin["listOffsets"]["afterDeleteRecords"] == 4
    assert admin["electLeaders"] == "ElectionNotNeededException"


class Lines:
    """A child's stdout, line by line, read by a thread (so waits can time out)."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.stream = stream

        def read() -> None:
            for line in stream:
                self.queue.put(line.rstrip("\n"))
            self.queue.put(None)

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()

    def rest(self) -> list[str]:
        """Every line, once the child closed its stdout."""
        self.reader.join(10)
        self.stream.close()
        return self.seen + [line for line in iter(self.queue.get_nowait, None)]

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"the checks program ended before {prefix!r}: {self.seen}"
            self.seen.append(line)
            if line.startswith(prefix):
                return line


@pytest.mark.parametrize("module", CLIENTS)
def test_java_producer_and_consumer_survive_kill_9_of_a_leader(tmp_path: Path, module: str) -> None:
    """A Java producer (idempotent, acks=all) and a consumer group member work on a three-partition
    RF 3 topic; kill -9 of a partition leader (not the controller): every partition takes writes
    and is read again within the failover limit, and every acknowledged record is consumed at
    the offset it was acknowledged at."""
    with running_cluster(tmp_path, "--group-initial-rebalance-delay-ms", "0") as cluster:
        controller = eventually(cluster.controller, 20)
        create(cluster.nodes[controller], TOPIC, 3, 3)
        eventually(lambda: TOPIC in cluster.topics(controller)
                   and all(isr == [1, 2, 3] for _, _, isr in leaders(cluster, controller)))
        stderr = tmp_path / "java.log"
        with stderr.open("w") as log:
            proc = subprocess.Popen(java_command(module, "chronik.checks.Checks", "failover", cluster_bootstrap(cluster),
                                                 "3", TOPIC),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
            assert proc.stdin is not None and proc.stdout is not None
            try:
                lines = Lines(proc.stdout)
                lines.wait_for("READY", 60)
                victim = next(leader for leader, _, _ in leaders(cluster, controller) if leader != controller)
                cluster.nodes[victim].kill()
                proc.stdin.write("mark\n")
                proc.stdin.flush()
                seconds = float(lines.wait_for("WRITABLE", 90).split()[1])
                print(f"Java {module}: leader {victim} killed, every partition written and read again after {seconds:.2f} s")
                time.sleep(0.5)  # some records through the new leader
                proc.stdin.write("stop\n")
                proc.stdin.close()
                proc.wait(180)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        result = parse_result("\n".join(lines.rest()), stderr.read_text(), proc.returncode, "failover")
        assert result["acked"] > 100 and result["consumed"] >= result["acked"]
        assert seconds < FAILOVER_LIMIT * 2  # the Java consumer also finds the new leaders before it reads
