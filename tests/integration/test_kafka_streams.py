"""Kafka Streams (4.x) against a real broker process: a stateful word count, at-least-once and
exactly-once (``processing.guarantee=exactly_once_v2``).

``chronik.tools.WordCount`` (tests/java/tools) splits lines into words, re-keys them by word
(Streams creates a repartition topic), counts them in a KTable (a RocksDB store backed by a
changelog topic Streams creates) and streams the counts to an output topic.  The application
is stopped, its local state deleted and started again: the counts must go on from where they
were, restored from the changelog.

Streams creates changelog topics with cleanup.policy=compact: the ``default`` variant
restores its store from a compacted changelog (a broker that refused compact topics, asked at
run time with a validate-only CreateTopics, would skip it).  (A third variant, a changelog
configured with cleanup.policy=delete for brokers without compaction, was dropped once
compaction landed: its restore path is the same.)  The ``eos`` variant runs the same
topology exactly-once (transactions: each commit writes the output, the changelog, the
repartition records and the input offsets in one transaction); its output, read
``read_committed``, must hold every word's counts 1, 2, ... n once each, in order, and the
restarted application must go on from the restored counts.  Skipped without java
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


def output_records(bootstrap: str, topic: str, partitions: int) -> list[tuple[int, int, str, int]]:
    """(partition, offset, word, count) of every committed record of the output topic, read to its end."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "counts-reader",
                                         "enable.auto.commit": False, "enable.partition.eof": True,
                                         "isolation.level": "read_committed"})
    try:
        consumer.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                         for p in range(partitions)])
        records: list[tuple[int, int, str, int]] = []
        ended: set[int] = set()
        while len(ended) < partitions:
            message = consumer.poll(5)
            assert message is not None, "the output topic did not answer"
            if message.error() is not None:
                assert message.error().code() == confluent_kafka.KafkaError._PARTITION_EOF, message.error()
                ended.add(message.partition())
                continue
            records.append((message.partition(), message.offset(), message.key().decode(),
                            struct.unpack(">q", message.value())[0]))
        return records
    finally:
        consumer.close()


def latest_counts(bootstrap: str, topic: str, partitions: int) -> dict[str, int]:
    """The last count of each word in the output topic (read to its end, read_committed)."""
    return {word: count for _, _, word, count in output_records(bootstrap, topic, partitions)}


class App:
    """One run of the word count, until :meth:`stop`."""

    def __init__(self, bootstrap: str, variant: str, state_dir: Path, log: Path) -> None:
        self.log = log.open("a")
        policy, guarantee = VARIANTS[variant]
        self.proc = subprocess.Popen(
            java_command("tools", "chronik.tools.WordCount", bootstrap, f"wordcount-{variant}", f"lines-{variant}",
                         f"counts-{variant}", str(state_dir), policy, guarantee),
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


VARIANTS = {"default": ("default", "at_least_once"), "eos": ("default", "exactly_once_v2")}
"""variant -> (the changelog's cleanup policy, Streams' processing.guarantee)."""


def assert_exactly_once(bootstrap: str, topic: str, expected: dict[str, int]) -> None:
    """Each word's committed counts are 1, 2, ... its final count, once each and in order, and the
    output was written in transactions (commit markers take offsets no record has)."""
    records = output_records(bootstrap, topic, 2)
    by_word: dict[str, list[int]] = {}
    for _, _, word, count in records:
        by_word.setdefault(word, []).append(count)
    assert by_word == {word: list(range(1, n + 1)) for word, n in expected.items()}
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "counts-reader"})
    try:
        ends = sum(consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), 10)[1] for p in range(2))
    finally:
        consumer.close()
    assert ends > len(records), (ends, records)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_streams_word_count_restores_its_state_after_a_restart(streams_broker: BrokerProcess, tmp_path: Path,
                                                                variant: str) -> None:
    bootstrap = streams_broker.bootstrap
    policy, guarantee = VARIANTS[variant]
    if policy == "default" and (refused := compact_refused(bootstrap)) is not None:
        pytest.skip(f"the broker refuses compacted topics, which Streams makes its changelogs: {refused}")
    app_id, lines, counts = f"wordcount-{variant}", f"lines-{variant}", f"counts-{variant}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, 2, 1) for name in (lines, counts)]).values():
        future.result(15)
    log = tmp_path / "streams.log"

    app = App(bootstrap, variant, tmp_path / "state-1", log)
    try:
        # Streams gives the changelog records their input's timestamps: current ones, so no
        # retention (7 days, checked every 30 s) can delete them between the two runs
        now = int(time.time() * 1000)
        confluent_produce(bootstrap, lines, [Sent(None, b"the quick brown fox", [], now), Sent(None, b"The end", [], now)],
                          partition=0)
        confluent_produce(bootstrap, lines, [Sent(None, b"the lazy dog", [], now)], partition=1)
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
    assert configs["cleanup.policy"].value == "compact"

    # a new run with no local state: the store comes back from the changelog
    app = App(bootstrap, variant, tmp_path / "state-2", log)
    try:
        assert app.restored >= len(first)
        confluent_produce(bootstrap, lines, [Sent(None, b"the fox returns", [], int(time.time() * 1000))], partition=1)
        final = {**first, "the": 4, "fox": 2, "returns": 1}
        wait_for_counts(bootstrap, counts, final, app)
    finally:
        app.stop()
    if guarantee == "exactly_once_v2":
        assert_exactly_once(bootstrap, counts, final)
