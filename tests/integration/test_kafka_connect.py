"""Kafka Connect (4.3) in distributed mode against a real broker process.

A worker (``org.apache.kafka.connect.cli.ConnectDistributed`` 4.3, from tests/java/connect)
keeps its configs, offsets and statuses in topics on the broker.  Through its REST API a
FileStreamSource connector reads a file's lines into a topic and a FileStreamSink connector
writes the topic to another file.  The worker is stopped, more lines are written, and a new
worker goes on from the offsets stored on the broker: every line arrives exactly once.

Connect requires its three internal topics to be compacted (cleanup.policy=compact): the test
asks the broker at run time (a validate-only CreateTopics) and is skipped while the broker
refuses compact topics.  (It was checked to pass against an Apache Kafka 4.4 broker.)  Skipped without java and the built Maven project, unless
``CHRONIK_REQUIRE_JAVA=1`` (see test_java.py).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .brokerproc import BrokerProcess, free_ports, running_broker
from .test_java import MISSING, java_command
from .test_kafka_streams import compact_refused

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def worker_properties(bootstrap: str, rest_port: int) -> str:
    return "\n".join([
        f"bootstrap.servers={bootstrap}",
        "group.id=chronik-connect",
        "key.converter=org.apache.kafka.connect.storage.StringConverter",
        "value.converter=org.apache.kafka.connect.storage.StringConverter",
        "config.storage.topic=connect-configs",
        "offset.storage.topic=connect-offsets",
        "status.storage.topic=connect-status",
        "config.storage.replication.factor=1",
        "offset.storage.replication.factor=1",
        "status.storage.replication.factor=1",
        "offset.storage.partitions=2",
        "status.storage.partitions=2",
        "offset.flush.interval.ms=200",
        "scheduled.rebalance.max.delay.ms=0",
        f"listeners=http://127.0.0.1:{rest_port}",
        "plugin.discovery=only_scan",
    ]) + "\n"


def rest(port: int, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="GET" if body is None else "POST",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def eventually(check: Any, timeout: float, what: str, worker: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (urllib.error.URLError, ConnectionError, OSError):
            result = None
        if result:
            return result
        assert worker.poll() is None, f"the Connect worker ended (status {worker.returncode}):\n{log.read_text()[-6000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()[-6000:]}"
        time.sleep(0.2)


@contextmanager
def connect_worker(properties: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A started distributed worker (its REST API answers); stopped with SIGTERM on exit."""
    with log.open("ab") as out:
        worker = subprocess.Popen(java_command("connect", "org.apache.kafka.connect.cli.ConnectDistributed", str(properties)),
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        eventually(lambda: "version" in rest(port, "/"), 120, "the REST API", worker, log)
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def running(port: int, name: str) -> bool:
    status = rest(port, f"/connectors/{name}/status")
    return status["connector"]["state"] == "RUNNING" and [t["state"] for t in status["tasks"]] == ["RUNNING"]


@pytest.fixture
def connect_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path / "data", "--group-initial-rebalance-delay-ms", "0") as proc:
        yield proc


def test_connect_moves_a_file_through_a_topic_and_resumes_after_a_worker_restart(connect_broker: BrokerProcess,
                                                                                 tmp_path: Path) -> None:
    if (refused := compact_refused(connect_broker.bootstrap)) is not None:
        pytest.skip(f"the broker refuses compacted topics, which Connect requires for its internal topics: {refused}")
    (port,) = free_ports(1)
    properties = tmp_path / "worker.properties"
    properties.write_text(worker_properties(connect_broker.bootstrap, port))
    source, sink, log = tmp_path / "in.txt", tmp_path / "out.txt", tmp_path / "connect.log"
    first = [f"line {i}" for i in range(20)]
    source.write_text("".join(f"{line}\n" for line in first))

    def arrived(lines: list[str]) -> bool:
        return sink.is_file() and sink.read_text().splitlines() == lines

    with connect_worker(properties, port, log) as worker:
        rest(port, "/connectors", {"name": "file-source", "config": {
            "connector.class": "FileStreamSource", "tasks.max": "1", "file": str(source), "topic": "connect-lines"}})
        rest(port, "/connectors", {"name": "file-sink", "config": {
            "connector.class": "FileStreamSink", "tasks.max": "1", "file": str(sink), "topics": "connect-lines"}})
        eventually(lambda: running(port, "file-source") and running(port, "file-sink"), 60, "both connectors RUNNING", worker, log)
        eventually(lambda: arrived(first), 60, "the first lines in the sink file", worker, log)
        assert sorted(rest(port, "/connectors")) == ["file-sink", "file-source"]

    second = [f"after the restart {i}" for i in range(10)]
    with source.open("a") as out:
        out.write("".join(f"{line}\n" for line in second))
    with connect_worker(properties, port, log) as worker:
        # the connectors come back from the config topic, and go on from the offsets topic
        # (the source's file position) and the sink's committed group offsets
        eventually(lambda: running(port, "file-source") and running(port, "file-sink"), 60, "both connectors RUNNING again", worker, log)
        eventually(lambda: arrived(first + second), 60, "exactly the new lines after the old ones", worker, log)
        time.sleep(1)  # nothing more arrives
        assert sink.read_text().splitlines() == first + second
