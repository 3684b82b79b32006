"""Kafka Streams (4.x) against a real broker process: a stateful word count, at-least-once.

``chronik.tools.WordCount`` (tests/java/tools) splits lines into words, re-keys them by word
(Streams creates a repartition topic), counts them in a KTable (a RocksDB store backed by a
changelog topic Streams creates) and streams the counts to an output topic.  The application
is stopped, its local state deleted and started again: the counts must go on from where they
were, restored from the changelog.

Streams creates changelog topics with cleanup.policy=compact.  The ``default`` variant runs
only when the broker accepts compact topics (asked at run time with a validate-only
CreateTopics); the ``delete`` variant configures the store's changelog with
cleanup.policy=delete, which a broker without compaction serves today.  (Both variants were
checked to pass against an Apache Kafka 4.4 broker.)  Skipped without java
and the built Maven project, unless ``CHRONIK_REQUIRE_JAVA=1`` (see test_java.py).
"""

from __future__ import annotations

import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from .brokerproc import BrokerProcess, running_broker
from .clients import Sent, confluent_produce
from .test_java import MISSING, Lines, java_command

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture(scope="module")
def streams_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(tmp_path_factory.mktemp("streams") / "data", "--group-initial-rebalance-delay-ms", "0") as proc:
        yield proc


def compact_refused(bootstrap: str) -> str | None:
    """Why the broker refuses a cleanup.policy=compact topic (a validate-only CreateTopics), or None."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic("compact-probe", 1, 1, config={"cleanup.policy": "compact"})],
                                 validate_only=True)["compact-probe"]
    try:
        future.result(15)
    except confluent_kafka.KafkaException as exc:
        return str(exc.args[0])
    return None


def latest_counts(bootstrap: str, topic: str, partitions: int) -> dict[str, int]:
    """The last count of each word in the output topic (read to its end)."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "counts-reader",
                                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                         for p in range(partitions)])
        counts: dict[str, int] = {}
        ended: set[int] = set()
        while len(ended) < partitions:
            message = consumer.poll(5)
            assert message is not None, "the output topic did not answer"
            if message.error() is not None:
                assert message.error().code() == confluent_kafka.KafkaError._PARTITION_EOF, message.error()
                ended.add(message.partition())
                continue
            counts[message.key().decode()] = struct.unpack(">q", message.value())[0]
        return counts
    finally:
        consumer.close()


class App:
    """One run of the word count, until :meth:`stop`."""

    def __init__(self, bootstrap: str, app_id: str, state_dir: Path, policy: str, log: Path) -> None:
        self.log = log.open("a")
        self.proc = subprocess.Popen(
            java_command("tools", "chronik.tools.WordCount", bootstrap, app_id, f"lines-{policy}", f"counts-{policy}",
                         str(state_dir), policy),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        self.lines = Lines(self.proc.stdout)
        self.restored = int(self.lines.wait_for("RESTORED", 150).split()[1])
        self.lines.wait_for("RUNNING", 10)

    def stop(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
            self.lines.wait_for("CLOSED", 60)
            assert self.proc.wait(30) == 0
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.lines.rest()
            self.log.close()


def wait_for_counts(bootstrap: str, topic: str, expected: dict[str, int], app: App, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := latest_counts(bootstrap, topic, 2)) != expected:
        assert app.proc.poll() is None, f"the application ended: {app.lines.seen}\n{app.log.name}"
        assert time.monotonic() < deadline, f"counts {got}, expected {expected}"
        time.sleep(0.2)


@pytest.mark.parametrize("policy", ["default", "delete"])
def test_streams_word_count_restores_its_state_after_a_restart(streams_broker: BrokerProcess, tmp_path: Path,
                                                                policy: str) -> None:
    bootstrap = streams_broker.bootstrap
    if policy == "default" and (refused := compact_refused(bootstrap)) is not None:
        pytest.skip(f"the broker refuses compacted topics, which Streams makes its changelogs: {refused}")
    app_id, lines, counts = f"wordcount-{policy}", f"lines-{policy}", f"counts-{policy}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, 2, 1) for name in (lines, counts)]).values():
        future.result(15)
    log = tmp_path / "streams.log"

    app = App(bootstrap, app_id, tmp_path / "state-1", policy, log)
    try:
        confluent_produce(bootstrap, lines, [Sent(None, b"the quick brown fox", [], 1), Sent(None, b"The end", [], 2)],
                          partition=0)
        confluent_produce(bootstrap, lines, [Sent(None, b"the lazy dog", [], 3)], partition=1)
        first = {"the": 3, "quick": 1, "brown": 1, "fox": 1, "end": 1, "lazy": 1, "dog": 1}
        wait_for_counts(bootstrap, counts, first, app)
    finally:
        app.stop()
    assert app.restored == 0

    topics = admin.list_topics(timeout=10).topics
    changelog, repartition = f"{app_id}-counts-changelog", f"{app_id}-words-repartition"
    assert changelog in topics and repartition in topics, sorted(topics)
    resource = ConfigResource(ConfigResource.Type.TOPIC, changelog)
    configs = admin.describe_configs([resource])[resource].result(15)
    assert configs["cleanup.policy"].value == ("compact" if policy == "default" else "delete")

    # a new run with no local state: the store comes back from the changelog
    app = App(bootstrap, app_id, tmp_path / "state-2", policy, log)
    try:
        assert app.restored >= len(first)
        confluent_produce(bootstrap, lines, [Sent(None, b"the fox returns", [], 4)], partition=1)
        wait_for_counts(bootstrap, counts, {**first, "the": 4, "fox": 2, "returns": 1}, app)
    finally:
        app.stop()
