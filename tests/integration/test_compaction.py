"""Log compaction and the topic configs tools rely on, with real clients against a broker process.

The broker runs with ``log.cleaner.backoff.ms=100`` so passes follow the
data quickly; topics use small segments and ``min.cleanable.dirty.ratio``
0.01 so every sealed segment is cleaned soon.  Each test waits for the
cleaner's INFO line ("log cleaner: cleaned <topic>-<p> offsets A..B") whose
end B covers the data it produced.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

from .brokerproc import BrokerProcess
from .clients import CONSUMERS, Sent, confluent_consume, confluent_produce
from .test_admin import admin, create, described

CLEANER_ARGS = ("--set", "log.cleaner.backoff.ms=100")
COMPACTED = {"cleanup.policy": "compact", "segment.bytes": "16384", "min.cleanable.dirty.ratio": "0.01"}
CRASH_ROUNDS = int(os.environ.get("CHRONIK_CLEANER_CRASH_ROUNDS", "3"))
"""kill -9 rounds of the crash test; raise it for a soak (e.g. 50)."""
SOURCE_TOPIC = 1  # DescribeConfigs: DYNAMIC_TOPIC_CONFIG


@pytest.fixture
def cleaning(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path / "data", *CLEANER_ARGS).start()
    try:
        yield proc
    finally:
        proc.stop()
        assert "Traceback" not in proc.output(), proc.output()


def compacted_topic(broker: BrokerProcess, name: str, partitions: int = 1, **configs: str) -> None:
    create(admin(broker), NewTopic(name, partitions, 1, config={**COMPACTED, **configs}))


def wait_cleaned(broker: BrokerProcess, topic: str, through: int, timeout: float = 30.0, after: int = 0) -> None:
    """Wait for a cleaning pass of ``topic``-0 (logged after line ``after``) whose end is at least ``through``."""
    pattern = re.compile(rf"log cleaner: cleaned {re.escape(topic)}-0 offsets \d+\.\.(\d+)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in broker.log_lines[after:]:
            match = pattern.search(line)
            if match and int(match.group(1)) >= through:
                return
        time.sleep(0.1)
    raise AssertionError(f"no pass of {topic} reached offset {through}:\n{broker.output()}")


def updates(rounds: int, keys: int, tag: str = "") -> tuple[list[Sent], dict[bytes, bytes]]:
    now = int(time.time() * 1000)
    sent = [Sent(b"key-%03d" % k, b"%s round %d of key %d " % (tag.encode(), r, k) + b"x" * 100, [], now)
            for r in range(rounds) for k in range(keys)]
    return sent, {s.key: s.value for s in sent if s.key is not None}


def filler(count: int, tag: str) -> list[Sent]:
    """Distinct keys, enough (incompressible) bytes to roll past the updates' segments."""
    now = int(time.time() * 1000)
    rng = random.Random(tag)
    return [Sent(b"fill-%s-%04d" % (tag.encode(), i), rng.randbytes(200), [], now) for i in range(count)]


def updated_and_cleaned(broker: BrokerProcess, topic: str, rounds: int, keys: int, tag: str, *, fill: int = 200,
                        **conf: str) -> dict[bytes, bytes]:
    """Produce ``rounds`` updates of ``keys`` keys, then a filler that seals their segments; wait
    until a pass cleaned past them; return each key's latest value (the filler's included)."""
    sent, latest = updates(rounds, keys, tag)
    confluent_produce(broker.bootstrap, topic, sent, **{"linger.ms": 5, **conf})
    extra = filler(fill, tag)
    offsets = confluent_produce(broker.bootstrap, topic, extra, **{"linger.ms": 5, **conf})
    latest.update({s.key: s.value for s in extra if s.key is not None})
    wait_cleaned(broker, topic, offsets[0])
    return latest


def segment_bytes(broker: BrokerProcess, topic: str) -> int:
    directory = broker.data_dir / f"{topic}-0"
    return sum(path.stat().st_size for path in directory.glob("*.wal"))


def test_each_key_keeps_its_latest_value_for_every_client(cleaning: BrokerProcess) -> None:
    compacted_topic(cleaning, "state")
    sent, latest = updates(40, 50)
    offsets = confluent_produce(cleaning.bootstrap, "state", sent, **{"linger.ms": 5})
    before = segment_bytes(cleaning, "state")
    fill = filler(200, "a")
    fill_offsets = confluent_produce(cleaning.bootstrap, "state", fill, **{"linger.ms": 5})
    latest.update({s.key: s.value for s in fill if s.key is not None})
    wait_cleaned(cleaning, "state", fill_offsets[0])
    expected = len(latest)
    for name, consume in CONSUMERS.items():
        got = consume(cleaning.bootstrap, "state", expected, offset=0)
        assert {r.key: r.value for r in got} == latest, name
        assert len({r.key for r in got}) == len(got), name  # each key exactly once
        got_offsets = [r.offset for r in got]
        assert got_offsets == sorted(set(got_offsets)) and got_offsets[-1] == fill_offsets[-1], name
        assert got_offsets[0] == offsets[-50], name  # offsets 0..1949 are gone: a gap
    assert offsets[-1] == 1999
    # 2000 updates of 50 keys shrank to the 50 latest ones (plus the filler)
    assert segment_bytes(cleaning, "state") < (before + 200 * 260) * 0.4


def test_a_compacted_topic_refuses_a_record_without_a_key(cleaning: BrokerProcess) -> None:
    compacted_topic(cleaning, "keyed")
    producer = confluent_kafka.Producer({"bootstrap.servers": cleaning.bootstrap, "acks": "all", "retries": 0})
    errors = []
    producer.produce("keyed", value=b"no key", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(10)
    assert [e.code() for e in errors] == [confluent_kafka.KafkaError.INVALID_RECORD]
    assert "without key" in cleaning.wait_for_log("Compacted topic cannot accept message without key")
    assert confluent_produce(cleaning.bootstrap, "keyed", [Sent(b"k", b"v", [], int(time.time() * 1000))]) == [0]


def test_tombstones_stay_for_delete_retention_then_disappear(cleaning: BrokerProcess) -> None:
    compacted_topic(cleaning, "deletes", **{"delete.retention.ms": "3000"})
    sent, latest = updates(5, 10)
    now = int(time.time() * 1000)
    tombstones = [Sent(b"key-%03d" % k, None, [], now) for k in range(3)]
    confluent_produce(cleaning.bootstrap, "deletes", sent + tombstones, **{"linger.ms": 5})
    early = confluent_consume(cleaning.bootstrap, "deletes", 1, offset=0)  # a reader that started before cleaning
    fill_offsets = confluent_produce(cleaning.bootstrap, "deletes", filler(200, "a"), **{"linger.ms": 5})
    wait_cleaned(cleaning, "deletes", fill_offsets[0])
    got = confluent_consume(cleaning.bootstrap, "deletes", 10 + 200, offset=early[0].offset)
    values = {r.key: r.value for r in got}
    assert [values[b"key-%03d" % k] for k in range(3)] == [None, None, None]  # the deletes are still seen
    assert all(values[b"key-%03d" % k] == latest[b"key-%03d" % k] for k in range(3, 10))
    time.sleep(3.2)
    mark = len(cleaning.log_lines)
    more = confluent_produce(cleaning.bootstrap, "deletes", filler(200, "b"), **{"linger.ms": 5})
    wait_cleaned(cleaning, "deletes", more[0], after=mark)
    got = confluent_consume(cleaning.bootstrap, "deletes", 7 + 400, offset=0)
    assert {b"key-%03d" % k for k in range(3)}.isdisjoint(r.key for r in got)
    assert [r for r in got if r.value is None] == []


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_compact_correctly(cleaning: BrokerProcess, codec: str) -> None:
    compacted_topic(cleaning, f"packed-{codec}")
    latest = updated_and_cleaned(cleaning, f"packed-{codec}", 30, 20, codec, fill=300, **{"compression.type": codec})
    for name, consume in CONSUMERS.items():
        if name == "kafka-python" and codec == "snappy":
            from .clients import kafka_python_has
            if not kafka_python_has("snappy"):
                continue
        got = consume(cleaning.bootstrap, f"packed-{codec}", len(latest), offset=0)
        assert {r.key: r.value for r in got} == latest, name
        assert len(got) == len(latest), name


def test_kafkajs_reads_a_compacted_topic(cleaning: BrokerProcess) -> None:
    from .test_kafkajs import MISSING, run_scenario, unb64

    if MISSING is not None:
        pytest.skip(MISSING)
    compacted_topic(cleaning, "kjs-compacted")
    latest = updated_and_cleaned(cleaning, "kjs-compacted", 20, 30, "js", fill=150)
    records = run_scenario(cleaning, "compacted")["records"]
    assert {unb64(r["key"]): unb64(r["value"]) for r in records} == latest
    assert len(records) == len(latest) and int(records[0]["offset"]) > 0


def _stored_codecs(broker: BrokerProcess, topic: str) -> set[int]:
    """The compression id of every batch in the topic's WAL files (entry header 16 bytes, attributes at 21)."""
    codecs = set()
    for path in sorted((broker.data_dir / f"{topic}-0").glob("*.wal")):
        data = path.read_bytes()
        pos = 16
        while pos + 16 <= len(data):
            length = int.from_bytes(data[pos + 4:pos + 8], "big")
            if length == 0:
                break
            batch = data[pos + 16:pos + 16 + length]
            codecs.add(int.from_bytes(batch[21:23], "big") & 7)
            pos += 16 + length
    return codecs


def test_topic_compression_type_recompresses_uncompressed_batches(cleaning: BrokerProcess) -> None:
    create(admin(cleaning), NewTopic("zipped", 1, 1, config={"compression.type": "zstd"}))
    now = int(time.time() * 1000)
    sent = [Sent(b"k%d" % i, b"value %d " % i * 20, [("h", b"x")], now + i) for i in range(100)]
    assert confluent_produce(cleaning.bootstrap, "zipped", sent, **{"compression.type": "none"}) == list(range(100))
    for name, consume in CONSUMERS.items():
        got = consume(cleaning.bootstrap, "zipped", 100)
        assert [(r.key, r.value, r.headers, r.timestamp) for r in got] == [tuple(s) for s in sent], name
    cleaning.stop()
    assert _stored_codecs(cleaning, "zipped") == {4}
    cleaning.start()


def test_kill_9_while_cleaning_keeps_every_latest_value_exactly_once(cleaning: BrokerProcess) -> None:
    compacted_topic(cleaning, "crashy", **{"segment.bytes": "8192"})
    rng = random.Random(14)
    latest: dict[bytes, bytes] = {}
    interrupted = 0
    directory = cleaning.data_dir / "crashy-0"

    def mid_swap() -> bool:
        try:
            return any(p.name.endswith((".cleaned", ".swap")) for p in directory.iterdir())
        except FileNotFoundError:  # a file went while listing
            return False

    for round_ in range(CRASH_ROUNDS):
        sent, acked = updates(rng.randint(2, 6), 300, f"r{round_}")
        confluent_produce(cleaning.bootstrap, "crashy", sent, **{"linger.ms": 2})
        latest.update(acked)
        # kill as soon as a pass writes its replacement (or after a random while if none shows up)
        deadline = time.monotonic() + rng.uniform(0.2, 4.0)  # a pass starts a child process first
        while time.monotonic() < deadline and not mid_swap():
            time.sleep(0.0005)
        time.sleep(rng.uniform(0, 0.005))
        cleaning.kill()
        interrupted += mid_swap()
        cleaning.start()
    print(f"{CRASH_ROUNDS} kill -9 rounds, {interrupted} of them with a cleaning pass cut short on disk")
    end = confluent_produce(cleaning.bootstrap, "crashy", [Sent(b"end", b"end", [], int(time.time() * 1000))])[0]
    latest[b"end"] = b"end"
    got = []
    consumer = confluent_kafka.Consumer({"bootstrap.servers": cleaning.bootstrap, "group.id": "crash-check",
                                         "enable.auto.commit": False})
    try:
        consumer.assign([confluent_kafka.TopicPartition("crashy", 0, 0)])
        deadline = time.monotonic() + 30
        while not got or got[-1].offset() < end:
            assert time.monotonic() < deadline, f"read up to {got[-1].offset() if got else None} of {end}"
            message = consumer.poll(0.5)
            if message is not None:
                assert message.error() is None, message.error()
                got.append(message)
    finally:
        consumer.close()
    offsets = [m.offset() for m in got]
    assert offsets == sorted(set(offsets))
    last_of = {m.key(): m.value() for m in got}
    assert last_of == latest  # every key's newest record is its latest acknowledged value
    pairs = [(m.key(), m.value()) for m in got]
    assert all(pairs.count((key, value)) == 1 for key, value in latest.items())  # exactly once


def test_connect_schema_registry_and_streams_shaped_starts(cleaning: BrokerProcess) -> None:
    client = admin(cleaning)
    # Kafka Connect (distributed): three compacted internal topics, checked through DescribeConfigs
    create(client, NewTopic("connect-configs", 1, 1, config={"cleanup.policy": "compact"}),
           NewTopic("connect-offsets", 25, 1, config={"cleanup.policy": "compact"}),
           NewTopic("connect-status", 5, 1, config={"cleanup.policy": "compact"}))
    for name in ("connect-configs", "connect-offsets", "connect-status"):
        policy = described(client, ConfigResource(ResourceType.TOPIC, name))["cleanup.policy"]
        assert (policy.value, policy.source) == ("compact", SOURCE_TOPIC)
    # Schema Registry: _schemas must be compacted with one partition
    create(client, NewTopic("_schemas", 1, 1, config={"cleanup.policy": "compact"}))
    metadata = client.list_topics("_schemas", timeout=10)
    assert len(metadata.topics["_schemas"].partitions) == 1
    assert described(client, ConfigResource(ResourceType.TOPIC, "_schemas"))["cleanup.policy"].value == "compact"
    # Kafka Streams: a compact,delete windowed changelog and a compacted store changelog, restored from 0
    create(client, NewTopic("app-store-changelog", 1, 1, config={**COMPACTED}),
           NewTopic("app-window-changelog", 1, 1, config={"cleanup.policy": "compact,delete", "retention.ms": "86400000"}))
    window = described(client, ConfigResource(ResourceType.TOPIC, "app-window-changelog"))["cleanup.policy"]
    assert window.value == "compact,delete"
    state = updated_and_cleaned(cleaning, "app-store-changelog", 20, 25, "store")
    restored: dict[bytes | None, bytes | None] = {}
    for record in CONSUMERS["aiokafka"](cleaning.bootstrap, "app-store-changelog", len(state), offset=0):
        restored[record.key] = record.value
    assert restored == state


def test_compaction_configs_describe_normalise_and_refuse(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", "--set", "log.cleanup.policy=compact",
                           "--set", "log.cleaner.min.cleanable.ratio=0.25").start()
    try:
        client = admin(broker)
        create(client, NewTopic("both", 1, 1, config={"cleanup.policy": " delete , compact"}))
        create(client, NewTopic("inherits", 1, 1))
        both = described(client, ConfigResource(ResourceType.TOPIC, "both"))
        assert (both["cleanup.policy"].value, both["cleanup.policy"].source) == ("compact,delete", SOURCE_TOPIC)
        inherits = described(client, ConfigResource(ResourceType.TOPIC, "inherits"))
        static_broker = 4
        assert (inherits["cleanup.policy"].value, inherits["cleanup.policy"].source) == ("compact", static_broker)
        ratio = inherits["min.cleanable.dirty.ratio"]
        assert ratio.value == "0.25"
        assert (ratio.source, list(ratio.synonyms)) == (static_broker, ["log.cleaner.min.cleanable.ratio"])
        for name in ("min.compaction.lag.ms", "max.compaction.lag.ms", "delete.retention.ms", "segment.ms",
                     "segment.bytes", "compression.type"):
            assert name in inherits
        refused = client.create_topics([NewTopic("old-style", 1, 1, config={"message.timestamp.difference.max.ms": "5"}),
                                        NewTopic("typo", 1, 1, config={"cleanup.policy": "compacted"})])
        for name, expected in (("old-style", "not supported by Chronik"), ("typo", "use delete, compact or compact,delete")):
            with pytest.raises(confluent_kafka.KafkaException) as caught:
                refused[name].result(10)
            assert caught.value.args[0].code() == confluent_kafka.KafkaError.INVALID_CONFIG
            assert expected in caught.value.args[0].str()
        broker_configs = described(client, ConfigResource(ResourceType.BROKER, "1"))
        assert broker_configs["log.cleaner.enable"].value == "true"
        assert broker_configs["log.cleaner.threads"].value == "1"
    finally:
        broker.stop()


def test_a_compacted_rf3_topic_survives_its_leader_being_killed_during_cleaning(tmp_path: Path) -> None:
    from .test_cluster import eventually, running_cluster

    with running_cluster(tmp_path, *CLEANER_ARGS) as cluster:
        controller = eventually(cluster.controller)
        client = confluent_kafka.admin.AdminClient({"bootstrap.servers": cluster.nodes[controller].bootstrap})
        client.create_topics([NewTopic("rf3", 1, 3, config=COMPACTED)], operation_timeout=10)["rf3"].result(15)

        def partition() -> object:
            topics = cluster.topics(controller)
            return topics["rf3"].partitions[0] if "rf3" in topics else None

        eventually(lambda: partition() is not None and sorted(partition().isr_nodes) == [1, 2, 3], timeout=20)
        leader = partition().leader_id
        follower = next(i for i in (1, 2, 3) if i not in (leader, controller)) if leader != controller else \
            next(i for i in (1, 2, 3) if i != leader)
        everyone = ",".join(node.bootstrap for node in cluster.nodes.values())
        sent, latest = updates(20, 30, "a")
        confluent_produce(everyone, "rf3", sent, **{"linger.ms": 5})
        # a follower goes away; the leader compacts what it has not fetched
        cluster.nodes[follower].kill()
        sent, more = updates(20, 30, "b")
        latest.update(more)
        confluent_produce(everyone, "rf3", sent, **{"linger.ms": 5})
        fill = filler(150, "c")
        fill_offsets = confluent_produce(everyone, "rf3", fill, **{"linger.ms": 5})
        latest.update({s.key: s.value for s in fill if s.key is not None})
        wait_cleaned(cluster.nodes[leader], "rf3", fill_offsets[0], timeout=60)
        cluster.nodes[leader].kill()  # the leader dies right after (or during) a pass
        cluster.nodes[follower].start()  # the returning follower catches up from the new leader, gaps included
        survivors = [i for i in (1, 2, 3) if i != leader]
        bootstrap = ",".join(cluster.nodes[i].bootstrap for i in survivors)
        eventually(lambda: any(partition_of(cluster, i) for i in survivors), timeout=30)
        got = confluent_consume(bootstrap, "rf3", len(latest), offset=0, timeout=60)
        assert {r.key: r.value for r in got} == latest
        offsets = [r.offset for r in got]
        assert offsets == sorted(set(offsets))
        # the returned follower holds a valid copy: make it the only live replica and read it
        eventually(lambda: sorted(partition_isr(cluster, survivors[0], "rf3")) == survivors, timeout=60)
        other = next(i for i in survivors if i != follower)
        cluster.nodes[leader].start()
        cluster.nodes[other].kill()
        got = confluent_consume(",".join(cluster.nodes[i].bootstrap for i in (follower, leader)), "rf3",
                                len(latest), offset=0, timeout=60)
        assert {r.key: r.value for r in got} == latest


def partition_of(cluster: object, node_id: int) -> bool:
    """Whether ``node_id`` answers Metadata with a leader for rf3-0 (it is up and current)."""
    try:
        topics = cluster.topics(node_id)  # type: ignore[attr-defined]
    except OSError:
        return False
    return "rf3" in topics and topics["rf3"].partitions[0].leader_id > 0


def partition_isr(cluster: object, node_id: int, topic: str) -> list[int]:
    try:
        return list(cluster.topics(node_id)[topic].partitions[0].isr_nodes)  # type: ignore[attr-defined]
    except (OSError, KeyError):
        return []


def test_transactions_compact_to_the_latest_committed_value_for_every_isolation(cleaning: BrokerProcess) -> None:
    from .clients import confluent_read_all, end_transaction
    from .test_transactions import txn_producer

    compacted_topic(cleaning, "txstate", **{"segment.bytes": "8192"})
    producer = txn_producer(cleaning.bootstrap, "compacting")
    latest: dict[bytes, bytes] = {}
    for round_ in range(8):
        for commit in (True, False) if round_ % 2 else (False, True):  # the last transaction aborts
            producer.begin_transaction()
            for k in range(20 if commit else 25):  # keys 20-24 only ever in aborted transactions
                key = b"key-%02d" % k
                value = b"%s|round %d %s|" % (key, round_, b"committed" if commit else b"aborted") + b"x" * 150
                producer.produce("txstate", value, key, partition=0)
                if commit:
                    latest[key] = value
            producer.flush(10)  # librdkafka drops what it has not sent when it aborts
            end_transaction(producer, commit)
    rng = random.Random(7)
    fill = [Sent(b"fill-%04d" % i, b"fill-%04d|" % i + rng.randbytes(200), [], int(time.time() * 1000))
            for i in range(120)]
    offsets = confluent_produce(cleaning.bootstrap, "txstate", fill, **{"linger.ms": 5})
    latest.update({s.key: s.value for s in fill if s.key is not None})
    before = segment_bytes(cleaning, "txstate")
    wait_cleaned(cleaning, "txstate", offsets[0])
    for isolation in ("read_committed", "read_uncommitted"):
        seen = [value for _, value in confluent_read_all(cleaning.bootstrap, "txstate", 1, isolation)[0]]
        assert not [v for v in seen if b"aborted" in v], isolation
        by_key = {value.split(b"|", 1)[0]: value for value in seen}
        assert by_key == latest, isolation
        assert len(seen) == len(by_key), isolation  # one record per key: the latest committed one
    for name, consume in CONSUMERS.items():  # read_uncommitted, over the emptied batches kept for the producer
        got = consume(cleaning.bootstrap, "txstate", len(latest), offset=0)
        assert {r.key: r.value for r in got} == latest, name
    assert segment_bytes(cleaning, "txstate") < before * 0.6
    # the producer's state survived the swaps: it goes on with its next transaction
    producer.begin_transaction()
    producer.produce("txstate", b"key-00|after cleaning|", b"key-00", partition=0)
    end_transaction(producer, True)
    seen = confluent_read_all(cleaning.bootstrap, "txstate", 1, "read_committed")[0]
    assert seen[-1][1] == b"key-00|after cleaning|"
