"""Apache Kafka's own command-line tools (kafka-tools 4.x) against a real broker process.

The tools are the main classes ``bin/kafka-*.sh`` run, taken from the Maven artifacts
(``tests/java/tools``, no tarball).  One JVM runs every command in order
(``chronik.tools.ToolRunner``); each test asserts on what one tool printed, as a Kafka user
would read it.  A confluent-kafka producer holds a transaction open while the tools run, for
kafka-transactions to show; ``kafka-transactions abort`` gets a broker (and a JVM) of its own.  Skipped without java and the built Maven project, unless
``CHRONIK_REQUIRE_JAVA=1`` (see test_java.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from .brokerproc import BrokerProcess, running_broker
from .clients import Sent, confluent_produce, confluent_read_all, create_topic
from .raw import Raw
from .test_java import MISSING, java_command

pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

TOPICS = "org.apache.kafka.tools.TopicCommand"
PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
CONFIGS = "org.apache.kafka.tools.ConfigCommand"
GET_OFFSETS = "org.apache.kafka.tools.GetOffsetShell"
PRODUCER_PERF = "org.apache.kafka.tools.ProducerPerformance"
TRANSACTIONS = "org.apache.kafka.tools.TransactionsCommand"
TXN_ID, TXN_TOPIC = "tools-txn", "txn"
"""The transactional id the fixture leaves a transaction open under, and the topic it wrote (partition 1)."""
CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"
QUORUM = "org.apache.kafka.tools.MetadataQuorumCommand"
UNSUPPORTED = {
    "kafka-log-dirs": ("org.apache.kafka.tools.LogDirsCommand", ["--describe"], "DESCRIBE_LOG_DIRS"),
    "kafka-reassign-partitions": ("org.apache.kafka.tools.reassign.ReassignPartitionsCommand", ["--list"],
                                  "LIST_PARTITION_REASSIGNMENTS"),
    "kafka-client-metrics": ("org.apache.kafka.tools.ClientMetricsCommand", ["--list"], "LIST_CONFIG_RESOURCES"),
}
"""Tools README's compatibility section lists as unsupported: tool -> (main class, arguments after
--bootstrap-server, the API the client finds missing)."""


class Ran(NamedTuple):
    status: int
    out: str
    err: str


def commands(bootstrap: str, stdin: Path) -> dict[str, tuple[str | None, str, list[str]]]:
    """name -> (stdin file, main class, arguments), run in this order."""
    b = ["--bootstrap-server", bootstrap]
    group = ["--group", "tools-group"]
    topic_config = ["--entity-type", "topics", "--entity-name", "tools"]
    return {
        "quorum-status": (None, QUORUM, [*b, "describe", "--status"]),
        "create": (None, TOPICS, [*b, "--create", "--topic", "tools", "--partitions", "3", "--replication-factor", "1",
                                  "--config", "retention.ms=3600000"]),
        "quorum-status-after-create": (None, QUORUM, [*b, "describe", "--status"]),
        "quorum-replication": (None, QUORUM, [*b, "describe", "--replication"]),
        "quorum-replication-human": (None, QUORUM, [*b, "describe", "--replication", "--human-readable"]),
        "create-again": (None, TOPICS, [*b, "--create", "--topic", "tools", "--partitions", "3"]),
        "describe": (None, TOPICS, [*b, "--describe", "--topic", "tools"]),
        "alter": (None, TOPICS, [*b, "--alter", "--topic", "tools", "--partitions", "4"]),
        "describe-altered": (None, TOPICS, [*b, "--describe", "--topic", "tools"]),
        "list": (None, TOPICS, [*b, "--list"]),
        "create-console": (None, TOPICS, [*b, "--create", "--topic", "console", "--partitions", "1"]),
        "produce": (str(stdin), PRODUCER, [*b, "--topic", "console", "--reader-property", "parse.key=true",
                                           "--reader-property", "key.separator=:"]),
        "consume": (None, CONSUMER, [*b, "--topic", "console", "--from-beginning", "--max-messages", "3", *group,
                                     "--formatter-property", "print.key=true", "--formatter-property", "print.offset=true"]),
        "groups-list": (None, GROUPS, [*b, "--list"]),
        "groups-describe": (None, GROUPS, [*b, "--describe", *group]),
        "groups-reset": (None, GROUPS, [*b, "--reset-offsets", *group, "--topic", "console", "--to-earliest", "--execute"]),
        "groups-describe-reset": (None, GROUPS, [*b, "--describe", *group]),
        "configs-alter": (None, CONFIGS, [*b, *topic_config, "--alter", "--add-config", "retention.ms=1000000,max.message.bytes=2000000"]),
        "configs-delete": (None, CONFIGS, [*b, *topic_config, "--alter", "--delete-config", "max.message.bytes"]),
        "configs-describe": (None, CONFIGS, [*b, *topic_config, "--describe"]),
        "configs-broker": (None, CONFIGS, [*b, "--entity-type", "brokers", "--entity-name", "1", "--describe", "--all"]),
        "offsets-latest": (None, GET_OFFSETS, [*b, "--topic", "console"]),
        "offsets-earliest": (None, GET_OFFSETS, [*b, "--topic", "console", "--time", "-2"]),
        "producer-perf": (None, PRODUCER_PERF, ["--topic", "perf", "--num-records", "5000", "--record-size", "100",
                                                "--throughput", "-1", "--command-property", f"bootstrap.servers={bootstrap}", "acks=all"]),
        "consumer-perf": (None, CONSUMER_PERF, [*b, "--topic", "perf", "--num-records", "5000"]),
        "txn-list": (None, TRANSACTIONS, [*b, "list"]),
        "txn-describe": (None, TRANSACTIONS, [*b, "describe", "--transactional-id", TXN_ID]),
        "txn-describe-unknown": (None, TRANSACTIONS, [*b, "describe", "--transactional-id", "no-such-txn"]),
        "txn-producers": (None, TRANSACTIONS, [*b, "describe-producers", "--topic", TXN_TOPIC, "--partition", "1"]),
        **{tool: (None, main, [*b, *args]) for tool, (main, args, _) in UNSUPPORTED.items()},
        "delete": (None, TOPICS, [*b, "--delete", "--topic", "tools"]),
        "list-after-delete": (None, TOPICS, [*b, "--list"]),
    }


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Ran]]:
    """Every command's exit status, stdout and stderr, run against one broker."""
    root = tmp_path_factory.mktemp("kafka-tools")
    with running_broker(root / "data", "--group-initial-rebalance-delay-ms", "0") as broker:
        stdin = root / "lines.txt"
        stdin.write_text("k1:v1\nk2:value two\n:no key\n")
        open_transaction = open_a_transaction(broker.bootstrap)
        try:
            yield run_tools(root, commands(broker.bootstrap, stdin))
        finally:
            open_transaction.abort_transaction(30)


def run_tools(root: Path, plan: dict[str, tuple[str | None, str, list[str]]]) -> dict[str, Ran]:
    """Run ``plan`` (name -> (stdin file, main class, arguments)) in one JVM, in order: each command's result."""
    script = root / "commands.tsv"
    script.write_text("".join("\t".join(([f"stdin={i}"] if i else []) + [main, *args]) + "\n"
                              for i, main, args in plan.values()))
    done = subprocess.run(java_command("tools", "chronik.tools.ToolRunner", str(script)),
                          capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-6000:]
    outs = re.split(r"^### \d+ begin\n", done.stdout, flags=re.M)[1:]
    errs = re.split(r"^### \d+ begin .*\n", done.stderr, flags=re.M)[1:]
    assert len(outs) == len(errs) == len(plan), done.stdout + done.stderr[-6000:]
    results = {}
    for name, out, err in zip(plan, outs, errs):
        body, status = re.fullmatch(r"(.*)### \d+ exit (-?\d+)\n", out, flags=re.S).groups()  # type: ignore[union-attr]
        results[name] = Ran(int(status), body, err)
    return results


def open_a_transaction(bootstrap: str) -> confluent_kafka.Producer:
    """A producer with transactional.id TXN_ID and an open transaction: 3 records in TXN_TOPIC partition 1."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TXN_TOPIC, 2, 1)])[TXN_TOPIC].result(15)
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "transactional.id": TXN_ID,
                                         "transaction.timeout.ms": 300000})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(TXN_TOPIC, f"open-{i}".encode(), partition=1)
    assert producer.flush(30) == 0
    return producer


def ok(ran: dict[str, Ran], name: str) -> list[str]:
    """The lines a command printed; it must have succeeded."""
    r = ran[name]
    assert r.status == 0, f"{name} exited {r.status}:\n{r.out}\n{r.err}"
    return r.out.splitlines()


def test_kafka_topics_create_describe_alter_list_delete(ran: dict[str, Ran]) -> None:
    assert ok(ran, "create") == ["Created topic tools."]
    again = ran["create-again"]
    assert again.status == 1 and "Error while executing topic command" in again.out and "already exists" in again.out.lower()
    summary, *partitions = ok(ran, "describe")
    assert re.fullmatch(r"Topic: tools\tTopicId: \S{22}\tPartitionCount: 3\tReplicationFactor: 1\tConfigs: retention.ms=3600000", summary)
    assert [re.sub(r"\tElr: .*", "", line) for line in partitions] == [
        f"\tTopic: tools\tPartition: {p}\tLeader: 1\tReplicas: 1\tIsr: 1" for p in range(3)]
    assert ok(ran, "alter") == []
    assert "PartitionCount: 4" in ok(ran, "describe-altered")[0]
    assert "tools" in ok(ran, "list")
    assert ok(ran, "delete") == []
    assert "tools" not in ok(ran, "list-after-delete")


def test_console_producer_and_consumer(ran: dict[str, Ran]) -> None:
    """Keys parsed at ':' (an empty key stays empty, not null); printed with offset and key."""
    assert ok(ran, "produce") == []
    assert ok(ran, "consume") == ["Offset:0\tk1\tv1", "Offset:1\tk2\tvalue two", "Offset:2\t\tno key"]
    assert "Processed a total of 3 messages" in ran["consume"].err


def test_kafka_consumer_groups_describe_and_reset_offsets(ran: dict[str, Ran]) -> None:
    assert "tools-group" in ok(ran, "groups-list")
    table = [line.split() for line in ok(ran, "groups-describe") if line.strip()]
    assert table == [["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"],
                     ["tools-group", "console", "0", "3", "3", "0", "-", "-", "-"]]
    assert "Consumer group 'tools-group' has no active members." in ran["groups-describe"].err
    reset = [line.split() for line in ok(ran, "groups-reset") if line.strip()]
    assert reset == [["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], ["tools-group", "console", "0", "0"]]
    after = [line.split() for line in ok(ran, "groups-describe-reset") if line.strip()]
    assert after[1] == ["tools-group", "console", "0", "0", "3", "3", "-", "-", "-"]


def test_kafka_configs(ran: dict[str, Ran]) -> None:
    assert ok(ran, "configs-alter") == ["Completed updating config for topic tools."]
    assert ok(ran, "configs-delete") == ["Completed updating config for topic tools."]
    assert ok(ran, "configs-describe") == [
        "Dynamic configs for topic tools are:",
        "  retention.ms=1000000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=1000000, "
        "DEFAULT_CONFIG:log.retention.ms=604800000}"]
    broker = ok(ran, "configs-broker")
    assert broker[0] == "All configs for broker 1 are:"
    assert any(line.startswith("  message.max.bytes=1048588 sensitive=false synonyms={") for line in broker), broker


def test_kafka_get_offsets(ran: dict[str, Ran]) -> None:
    assert ok(ran, "offsets-latest") == ["console:0:3"]
    assert ok(ran, "offsets-earliest") == ["console:0:0"]


def test_producer_and_consumer_perf_tests(ran: dict[str, Ran]) -> None:
    (line,) = ok(ran, "producer-perf")
    assert re.fullmatch(r"5000 records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency, "
                        r"[\d.]+ ms max latency, \d+ ms 50th, \d+ ms 95th, \d+ ms 99th, \d+ ms 99\.9th\.", line), line
    header, row = ok(ran, "consumer-perf")
    columns = dict(zip(header.split(", "), row.split(", ")))
    assert columns["data.consumed.in.nMsg"] == "5000"
    assert float(columns["data.consumed.in.MB"]) == pytest.approx(5000 * 100 / 2**20, abs=0.001)


def table(ran: dict[str, Ran], name: str) -> list[dict[str, str]]:
    """A tab-separated table a tool printed (header line, then rows), as one dict per row."""
    header, *rows = [[cell.strip() for cell in line.rstrip("\t").split("\t")] for line in ok(ran, name)]
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_kafka_transactions_list_describe_and_describe_producers(ran: dict[str, Ran]) -> None:
    """kafka-transactions against a broker with an open transaction (3 records in txn-1)."""
    (listed,) = table(ran, "txn-list")
    assert listed == {"TransactionalId": TXN_ID, "Coordinator": "1", "ProducerId": listed["ProducerId"],
                      "TransactionState": "Ongoing"}
    (described,) = table(ran, "txn-describe")
    started, duration = int(described.pop("CurrentTransactionStartTimeMs")), int(described.pop("TransactionDurationMs"))
    assert described == {"CoordinatorId": "1", "TransactionalId": TXN_ID, "ProducerId": listed["ProducerId"],
                         "ProducerEpoch": "0", "TransactionState": "Ongoing", "TransactionTimeoutMs": "300000",
                         "TopicPartitions": f"{TXN_TOPIC}-1"}
    assert abs(started - time.time() * 1000) < 300_000 and 0 <= duration < 300_000
    unknown = ran["txn-describe-unknown"]
    assert unknown.status == 1 and "could not be found" in unknown.err, unknown
    (producer,) = table(ran, "txn-producers")
    last_timestamp = int(producer.pop("LastTimestamp"))
    assert producer == {"ProducerId": listed["ProducerId"], "ProducerEpoch": "0", "LatestCoordinatorEpoch": "-1",
                        "LastSequence": "2", "CurrentTransactionStartOffset": "0"}
    assert abs(last_timestamp - time.time() * 1000) < 300_000


def quorum_status(ran: dict[str, Ran], name: str) -> dict[str, str]:
    """What ``kafka-metadata-quorum describe --status`` printed, field by field."""
    return dict(re.fullmatch(r"(\w+):\s+(.*)", line).groups() for line in ok(ran, name))  # type: ignore[union-attr]


def test_kafka_metadata_quorum_on_a_single_node(ran: dict[str, Ran]) -> None:
    """The node is the sole voter and leader of its metadata log (epoch 0: it was never elected);
    the high watermark is the metadata log's end, one further after kafka-topics --create (one
    CreateTopic command); the leader's times are the answer's."""
    before, after = quorum_status(ran, "quorum-status"), quorum_status(ran, "quorum-status-after-create")
    high_watermark = int(after.pop("HighWatermark"))
    assert high_watermark == int(before.pop("HighWatermark")) + 1
    assert after == before
    assert re.fullmatch(r"[\w-]{22}", after.pop("ClusterId"))
    assert after == {"LeaderId": "1", "LeaderEpoch": "0", "MaxFollowerLag": "0", "MaxFollowerLagTimeMs": "0",
                     "CurrentVoters": '[{"id": 1}]', "CurrentObservers": "[]"}
    (row,) = table(ran, "quorum-replication")
    fetched, caught_up = int(row.pop("LastFetchTimestamp")), int(row.pop("LastCaughtUpTimestamp"))
    assert row == {"NodeId": "1", "DirectoryId": "AAAAAAAAAAAAAAAAAAAAAA", "LogEndOffset": str(high_watermark),
                   "Lag": "0", "Status": "Leader"}
    assert fetched == caught_up and abs(fetched - time.time() * 1000) < 120_000
    (human,) = table(ran, "quorum-replication-human")
    assert re.fullmatch(r"\d+ ms ago", human["LastFetchTimestamp"]) and human["Status"] == "Leader"


def test_tools_for_apis_chronik_does_not_serve_fail_naming_the_api(ran: dict[str, Ran]) -> None:
    """The tools README lists as unsupported end with status 1 and the client's "The node does
    not support <API>" (Chronik does not advertise the API), not with a hang or a wrong answer."""
    for tool, (_, _, api) in UNSUPPORTED.items():
        r = ran[tool]
        assert r.status == 1 and f"The node does not support {api}" in r.out + r.err, (tool, r)


def read_committed_end(broker: BrokerProcess, topic: str) -> int:
    """ListOffsets latest with READ_COMMITTED: the last stable offset of partition 0."""
    with Raw(broker) as raw:
        answer = raw.call(2, 7, {"replica_id": -1, "isolation_level": 1, "topics": [
            {"name": topic, "partitions": [{"partition_index": 0, "current_leader_epoch": -1, "timestamp": -1}]}]})
    return int(answer.topics[0].partitions[0].offset)


def test_kafka_transactions_abort_of_an_open_transaction_whose_producer_died(tmp_path: Path) -> None:
    """An operator unblocks read_committed readers held back by a transaction whose producer was
    killed (transaction.timeout.ms 15 minutes): describe-producers shows where it starts,
    find-hanging does not count it as hanging (the coordinator still has it open on that
    partition, Kafka's definition), ``abort --start-offset`` writes an abort marker
    (Admin.abortTransaction: WriteTxnMarkers with the producer's epoch and coordinator epoch),
    and then read_committed readers get past it and see none of its records."""
    with running_broker(tmp_path / "data") as broker:
        create_topic(broker.bootstrap, "hang", 1)
        confluent_produce(broker.bootstrap, "hang", [Sent(None, b"before", [], 0)])
        script = textwrap.dedent(f"""
            import os, confluent_kafka
            producer = confluent_kafka.Producer({{"bootstrap.servers": "{broker.bootstrap}",
                                                  "transactional.id": "dies", "transaction.timeout.ms": 900000}})
            producer.init_transactions(30)
            producer.begin_transaction()
            for i in range(3):
                producer.produce("hang", b"open-%d" % i, partition=0)
            assert producer.flush(30) == 0
            os._exit(0)  # killed: neither commits nor aborts
        """)
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        confluent_produce(broker.bootstrap, "hang", [Sent(None, b"after", [], 0)])
        assert read_committed_end(broker, "hang") == 1  # held at the open transaction's first offset
        b = ["--bootstrap-server", broker.bootstrap]
        where = ["--topic", "hang", "--partition", "0"]
        ran = run_tools(tmp_path, {
            "producers": (None, TRANSACTIONS, [*b, "describe-producers", *where]),
            "find-hanging": (None, TRANSACTIONS, [*b, "find-hanging", "--topic", "hang", "--max-transaction-timeout", "0"]),
            "abort": (None, TRANSACTIONS, [*b, "abort", *where, "--start-offset", "1"]),
            "producers-after": (None, TRANSACTIONS, [*b, "describe-producers", *where]),
        })
        # the plain producer is idempotent too (librdkafka's default): two producers, one open transaction
        before = {row["ProducerId"]: row for row in table(ran, "producers")}
        (dead,) = [row for row in before.values() if row["CurrentTransactionStartOffset"] != "None"]
        assert (dead["ProducerEpoch"], dead["LatestCoordinatorEpoch"], dead["LastSequence"],
                dead["CurrentTransactionStartOffset"]) == ("0", "-1", "2", "1")
        assert table(ran, "find-hanging") == []
        assert ok(ran, "abort") == []
        after = {row["ProducerId"]: row for row in table(ran, "producers-after")}
        assert after[dead["ProducerId"]]["CurrentTransactionStartOffset"] == "None"
        assert after[dead["ProducerId"]]["LatestCoordinatorEpoch"] == "0"  # the abort marker's (the tool's 0 for -1)
        assert read_committed_end(broker, "hang") == 6  # before, 3 aborted, after, the abort marker
        committed = confluent_read_all(broker.bootstrap, "hang", 1, "read_committed")
        assert [value for _, value in committed[0]] == [b"before", b"after"]
        everything = confluent_read_all(broker.bootstrap, "hang", 1, "read_uncommitted")
        assert [value for _, value in everything[0]] == [b"before", b"open-0", b"open-1", b"open-2", b"after"]
