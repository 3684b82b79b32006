"""Consumer groups with real clients: sharing, committing, failing over, static and cooperative members.

The broker runs with a short ``group.initial.rebalance.delay.ms`` and the
clients with short heartbeat intervals and session timeouts, so the whole
file stays well under a minute.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient

from chronik.protocol import decode_response, encode_request, request_schema
from chronik.protocol.build import build
from chronik.protocol.errors import ErrorCode
from chronik.protocol.headers import response_header_version

from .brokerproc import BrokerProcess
from .clients import create_topic
from .raw import Raw

with warnings.catch_warnings():  # kafka-python reads its specs with a deprecated importlib call
    warnings.simplefilter("ignore", DeprecationWarning)
    import aiokafka
    import kafka

INITIAL_DELAY_MS = 100
FAST = {"heartbeat.interval.ms": 200, "session.timeout.ms": 6000}


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for the tests that do not restart it (each uses its own topics and groups)."""
    proc = BrokerProcess(tmp_path_factory.mktemp("groups") / "data",
                         "--group-initial-rebalance-delay-ms", str(INITIAL_DELAY_MS)).start()
    try:
        yield proc
    finally:
        proc.stop()
        assert "Traceback" not in proc.output(), proc.output()


def produce(broker: BrokerProcess, topic: str, count: int, partitions: int) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, value=f"v{i}".encode(), partition=i % partitions)
    assert producer.flush(10) == 0


def wait_until(condition: Callable[[], bool], timeout: float, what: str, *, hold: float = 0.0) -> None:
    """Wait until ``condition`` holds (continuously for ``hold`` seconds)."""
    deadline = time.monotonic() + timeout
    held_since: float | None = None
    while True:
        now = time.monotonic()
        if condition():
            held_since = now if held_since is None else held_since
            if now - held_since >= hold:
                return
        else:
            held_since = None
        if now > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- members of the three client libraries, each polling in its own thread ------


class ConfluentAdapter:
    def __init__(self, bootstrap: str, group: str, topic: str, **extra: Any) -> None:
        self.consumer = confluent_kafka.Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, **FAST, **extra,
        })
        self.consumer.subscribe([topic])

    def poll(self) -> list[tuple[int, int, bytes]]:
        out = []
        for message in self.consumer.consume(100, 0.1):
            assert message.error() is None, message.error()
            out.append((message.partition(), message.offset(), message.value()))
        return out

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def close(self) -> None:
        self.consumer.close()


class KafkaPythonAdapter:
    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.consumer = kafka.KafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
            enable_auto_commit=False, heartbeat_interval_ms=200, session_timeout_ms=6000,
        )

    def poll(self) -> list[tuple[int, int, bytes]]:
        batches = self.consumer.poll(timeout_ms=100)
        return [(r.partition, r.offset, r.value) for records in batches.values() for r in records]

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def close(self) -> None:
        self.consumer.close()


class AiokafkaAdapter:
    """aiokafka driven from one thread through its own event loop."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.consumer = self.loop.run_until_complete(self._start(bootstrap, group, topic))
        except BaseException:
            self.loop.close()
            raise

    @staticmethod
    async def _start(bootstrap: str, group: str, topic: str) -> aiokafka.AIOKafkaConsumer:
        consumer = aiokafka.AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
            enable_auto_commit=False, heartbeat_interval_ms=200, session_timeout_ms=6000,
        )
        await consumer.start()
        return consumer

    def poll(self) -> list[tuple[int, int, bytes]]:
        batches = self.loop.run_until_complete(self.consumer.getmany(timeout_ms=100))
        return [(r.partition, r.offset, r.value) for records in batches.values() for r in records]

    def assignment(self) -> set[int]:
        return {tp.partition for tp in self.consumer.assignment()}

    def close(self) -> None:
        self.loop.run_until_complete(self.consumer.stop())
        self.loop.close()


class Member(threading.Thread):
    """Polls a consumer until stopped, recording records and its current assignment."""

    def __init__(self, make: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.make = make
        self.records: list[tuple[int, int, bytes]] = []
        self.assigned: set[int] = set()
        self.stopping = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            adapter = self.make()
            try:
                while not self.stopping.is_set():
                    self.records.extend(adapter.poll())
                    self.assigned = adapter.assignment()
            finally:
                adapter.close()
        except BaseException as exc:  # reported by stop()
            self.failure = exc

    def stop(self) -> None:
        self.stopping.set()
        self.join(20)
        assert not self.is_alive(), "member did not stop"
        if self.failure is not None:
            raise self.failure


def stop_all(members: list[Member]) -> None:
    """Stop every member's polling first: one leaving rebalances the others, who must not read on."""
    for member in members:
        member.stopping.set()
    for member in members:
        member.stop()


ADAPTERS = {"confluent": ConfluentAdapter, "kafka-python": KafkaPythonAdapter, "aiokafka": AiokafkaAdapter}


@pytest.mark.parametrize("library", list(ADAPTERS))
def test_members_share_partitions_and_read_everything_once(shared_broker: BrokerProcess, library: str) -> None:
    topic, group, partitions, count = f"share-{library}", f"share-{library}", 6, 300
    create_topic(shared_broker.bootstrap, topic, partitions)
    adapter = ADAPTERS[library]
    members = [Member(lambda: adapter(shared_broker.bootstrap, group, topic)) for _ in range(3)]
    for member in members:
        member.start()
    try:
        def settled() -> bool:
            sets = [m.assigned for m in members]
            return all(sets) and sum(map(len, sets)) == partitions and set().union(*sets) == set(range(partitions))

        # members of a stale generation keep their partitions until a heartbeat tells them: wait for a steady state
        wait_until(settled, 20, f"{library} members to share the partitions", hold=1.0)
        produce(shared_broker, topic, count, partitions)
        wait_until(lambda: sum(len(m.records) for m in members) >= count, 20, "every record")
        time.sleep(0.3)  # a duplicate would show up now
        assigned = [set(m.assigned) for m in members]
    finally:
        stop_all(members)
    values = sorted(r[2] for m in members for r in m.records)
    assert values == sorted(f"v{i}".encode() for i in range(count))
    assert sum(map(len, assigned)) == partitions and set().union(*assigned) == set(range(partitions))
    for member, own in zip(members, assigned):  # each read only its own partitions
        assert {r[0] for r in member.records} <= own


def test_commit_close_and_resume_at_the_committed_offset(shared_broker: BrokerProcess) -> None:
    topic, group = "resume", "resume-group"
    create_topic(shared_broker.bootstrap, topic, 1)
    produce(shared_broker, topic, 10, 1)
    config = {"bootstrap.servers": shared_broker.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
              "enable.auto.commit": False, **FAST}
    first = confluent_kafka.Consumer(config)
    first.subscribe([topic])
    seen = []
    while len(seen) < 4:
        message = first.poll(10)
        assert message is not None and message.error() is None
        seen.append(message.offset())
    first.commit(message, asynchronous=False)  # commits offset 4: the next to read
    first.close()
    assert seen == [0, 1, 2, 3]

    second = kafka.KafkaConsumer(topic, bootstrap_servers=shared_broker.bootstrap, group_id=group,
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 heartbeat_interval_ms=200, session_timeout_ms=6000)
    try:
        records: list[int] = []
        deadline = time.monotonic() + 15
        while len(records) < 6 and time.monotonic() < deadline:
            for batch in second.poll(timeout_ms=200).values():
                records.extend(r.offset for r in batch)
        assert records == [4, 5, 6, 7, 8, 9]
        tp = kafka.TopicPartition(topic, 0)
        assert second.committed(tp) == 4
    finally:
        second.close()


KILLABLE_MEMBER = textwrap.dedent("""
    import sys, confluent_kafka
    consumer = confluent_kafka.Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
        "session.timeout.ms": 1500, "heartbeat.interval.ms": 200, "auto.offset.reset": "earliest"})
    consumer.subscribe([sys.argv[3]])
    while True:
        consumer.poll(0.1)
        if consumer.assignment():
            print("assigned", len(consumer.assignment()), flush=True)
""")


def test_killed_member_loses_its_partitions_after_the_session_timeout(shared_broker: BrokerProcess) -> None:
    topic, group, partitions = "failover", "failover-group", 4
    create_topic(shared_broker.bootstrap, topic, partitions)
    child = subprocess.Popen([sys.executable, "-c", KILLABLE_MEMBER, shared_broker.bootstrap, group, topic],
                             stdout=subprocess.PIPE, text=True)
    survivor = Member(lambda: ConfluentAdapter(shared_broker.bootstrap, group, topic, **{"session.timeout.ms": 1500}))
    try:
        assert child.stdout is not None
        assert child.stdout.readline().startswith("assigned")
        survivor.start()
        wait_until(lambda: len(survivor.assigned) == partitions // 2, 15, "the partitions to be shared")
        child.kill()
        killed_at = time.monotonic()
        wait_until(lambda: len(survivor.assigned) == partitions, 15, "the survivor to take over")
        took = time.monotonic() - killed_at
        assert took < 1.5 + 2.0, f"take-over took {took:.1f} s with a 1.5 s session timeout"
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
        survivor.stop()


def test_static_member_restart_keeps_its_assignment_without_a_rebalance(shared_broker: BrokerProcess) -> None:
    topic, group, partitions = "static", "static-group", 4
    create_topic(shared_broker.bootstrap, topic, partitions)
    assignments: dict[str, list[list[int]]] = {"a": [], "b": []}

    def static_member(name: str) -> confluent_kafka.Consumer:
        consumer = confluent_kafka.Consumer({
            "bootstrap.servers": shared_broker.bootstrap, "group.id": group, "group.instance.id": name,
            "heartbeat.interval.ms": 200, "session.timeout.ms": 10000, "auto.offset.reset": "earliest",
        })
        consumer.subscribe([topic], on_assign=lambda c, tps: assignments[name].append(sorted(tp.partition for tp in tps)))
        return consumer

    a, b = static_member("a"), static_member("b")

    def poll_both(until: Callable[[], bool], what: str, *consumers: confluent_kafka.Consumer) -> None:
        deadline = time.monotonic() + 15
        while not until():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {assignments}"
            for consumer in consumers:
                consumer.poll(0.05)

    poll_both(lambda: bool(assignments["a"] and assignments["b"] and
                           len(assignments["a"][-1]) + len(assignments["b"][-1]) == partitions), "assignment", a, b)
    before = dict(a=assignments["a"][-1], b=assignments["b"][-1])
    a.close()  # a static member does not leave the group when it closes
    b_assignments = len(assignments["b"])
    a = static_member("a")
    poll_both(lambda: len(assignments["a"]) >= 2, "the restarted member's assignment", a, b)
    for _ in range(10):  # give a rebalance, if one were triggered, the chance to show
        b.poll(0.05)
        a.poll(0.05)
    assert assignments["a"][-1] == before["a"]
    assert len(assignments["b"]) == b_assignments, "the other member saw a rebalance"
    admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
    described = admin.describe_consumer_groups([group])[group].result(10)
    assert sorted(m.group_instance_id for m in described.members) == ["a", "b"]
    a.close()
    b.close()


def test_cooperative_sticky_moves_only_the_partitions_that_change_owner(shared_broker: BrokerProcess) -> None:
    topic, group, partitions = "coop", "coop-group", 4
    create_topic(shared_broker.bootstrap, topic, partitions)
    events: list[tuple[str, str, list[int]]] = []

    def member(name: str) -> confluent_kafka.Consumer:
        consumer = confluent_kafka.Consumer({
            "bootstrap.servers": shared_broker.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky", **FAST,
        })
        consumer.subscribe(
            [topic],
            on_assign=lambda c, tps: events.append((name, "assign", sorted(tp.partition for tp in tps))),
            on_revoke=lambda c, tps: events.append((name, "revoke", sorted(tp.partition for tp in tps))),
        )
        return consumer

    first = member("first")
    deadline = time.monotonic() + 15
    while len(first.assignment()) < partitions:
        assert time.monotonic() < deadline, events
        first.poll(0.05)
    second = member("second")
    deadline = time.monotonic() + 15
    while not (len(first.assignment()) == 2 and len(second.assignment()) == 2):
        assert time.monotonic() < deadline, events
        first.poll(0.05)
        second.poll(0.05)
    revoked = [e for e in events if e[0] == "first" and e[1] == "revoke" and e[2]]
    assert len(revoked) == 1 and len(revoked[0][2]) == 2, events  # incremental: only the moved partitions
    assert {tp.partition for tp in first.assignment()} | {tp.partition for tp in second.assignment()} == set(range(partitions))
    first.close()
    second.close()


def test_admin_clients_list_and_describe_groups(shared_broker: BrokerProcess) -> None:
    topic, group = "admin-groups", "admin-group"
    create_topic(shared_broker.bootstrap, topic, 2)
    member = Member(lambda: ConfluentAdapter(shared_broker.bootstrap, group, topic, **{"client.id": "described"}))
    member.start()
    try:
        wait_until(lambda: len(member.assigned) == 2, 15, "an assignment")
        admin = AdminClient({"bootstrap.servers": shared_broker.bootstrap})
        listed = admin.list_consumer_groups().result(10)
        states = {g.group_id: g.state for g in listed.valid}
        assert states[group] == confluent_kafka.ConsumerGroupState.STABLE
        stable_only = admin.list_consumer_groups(states={confluent_kafka.ConsumerGroupState.EMPTY}).result(10)
        assert group not in {g.group_id for g in stable_only.valid}
        described = admin.describe_consumer_groups([group])[group].result(10)
        assert described.state == confluent_kafka.ConsumerGroupState.STABLE
        assert described.partition_assignor == "range" and not described.is_simple_consumer_group
        [one] = described.members
        assert one.client_id == "described" and one.host.strip("/") == "127.0.0.1"
        assert sorted(tp.partition for tp in one.assignment.topic_partitions) == [0, 1]
        assert described.coordinator.port == shared_broker.port

        python_admin = kafka.KafkaAdminClient(bootstrap_servers=shared_broker.bootstrap)
        try:
            listed_groups = {g["group_id"]: g for g in python_admin.list_groups()}
            assert listed_groups[group]["protocol_type"] == "consumer"
            assert listed_groups[group]["group_state"] == "Stable"
        finally:
            python_admin.close()
    finally:
        member.stop()
    wait_until(lambda: admin.describe_consumer_groups([group])[group].result(10).state
               == confluent_kafka.ConsumerGroupState.EMPTY, 10, "the group to be empty after the member left")
    assert admin.delete_consumer_groups([group])[group].result(10) is None


def test_offsets_of_assign_only_consumers_survive_a_broker_restart(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", "--group-initial-rebalance-delay-ms", str(INITIAL_DELAY_MS)).start()
    try:
        create_topic(broker.bootstrap, "durable", 3)
        consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "durable-group",
                                             "enable.auto.commit": False})
        committed = [confluent_kafka.TopicPartition("durable", p, 10 * (p + 1), f"meta-{p}") for p in range(3)]
        consumer.commit(offsets=committed, asynchronous=False)  # generation -1: no membership
        consumer.close()
        broker.restart()
        consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "durable-group"})
        fetched = consumer.committed([confluent_kafka.TopicPartition("durable", p) for p in range(3)], timeout=10)
        consumer.close()
        assert [(tp.partition, tp.offset, tp.metadata) for tp in fetched] == [(0, 10, "meta-0"), (1, 20, "meta-1"), (2, 30, "meta-2")]
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        assert "durable-group" in {g.group_id for g in admin.list_consumer_groups().result(10).valid}
    finally:
        broker.stop()
        assert "Traceback" not in broker.output(), broker.output()


# -- error codes, with hand-made requests ----------------------------------------


def call(broker: BrokerProcess, api_key: int, api_version: int, **fields: Any) -> Any:
    """Send one request, return the decoded response."""
    request = build(request_schema(api_key, api_version), fields)
    frame = b"".join(bytes(part) for part in encode_request(api_key, api_version, 7, "raw-test", request))
    with Raw(broker) as connection:
        connection.send(struct.pack(">i", len(frame)) + frame)
        body = connection.read_frame()
    assert body is not None, "connection closed"
    header_size = 4 + (1 if response_header_version(api_key, api_version) >= 1 else 0)
    return decode_response(api_key, api_version, body, header_size)


def test_error_codes_for_bad_group_requests(shared_broker: BrokerProcess) -> None:
    create_topic(shared_broker.bootstrap, "errors", 1)
    protocols = [{"name": "range", "metadata": b""}]
    empty = call(shared_broker, 11, 5, group_id="", session_timeout=6000, rebalance_timeout=6000, member_id="",
                 protocol_type="consumer", protocols=protocols)
    assert empty.error_code == ErrorCode.INVALID_GROUP_ID
    heartbeat = call(shared_broker, 12, 3, group_id="no-such-group", generation_id=1, member_id="m")
    assert heartbeat.error_code == ErrorCode.UNKNOWN_MEMBER_ID
    sync = call(shared_broker, 14, 3, group_id="no-such-group", generation_id=1, member_id="m", assignments=[])
    assert sync.error_code == ErrorCode.UNKNOWN_MEMBER_ID
    first = call(shared_broker, 11, 5, group_id="raw-group", session_timeout=6000, rebalance_timeout=6000,
                 member_id="", protocol_type="consumer", protocols=protocols)
    assert first.error_code == ErrorCode.MEMBER_ID_REQUIRED and first.member_id
    joined = call(shared_broker, 11, 5, group_id="raw-group", session_timeout=6000, rebalance_timeout=6000,
                  member_id=first.member_id, protocol_type="consumer", protocols=protocols)
    assert joined.error_code == ErrorCode.NONE and joined.generation_id == 1 and joined.leader == first.member_id
    member = first.member_id
    wrong_generation = call(shared_broker, 14, 3, group_id="raw-group", generation_id=99, member_id=member, assignments=[])
    assert wrong_generation.error_code == ErrorCode.ILLEGAL_GENERATION
    synced = call(shared_broker, 14, 3, group_id="raw-group", generation_id=1, member_id=member,
                  assignments=[{"member_id": member, "assignment": b"opaque bytes"}])
    assert synced.error_code == ErrorCode.NONE and synced.assignment == b"opaque bytes"
    assert call(shared_broker, 12, 3, group_id="raw-group", generation_id=2, member_id=member).error_code == ErrorCode.ILLEGAL_GENERATION
    assert call(shared_broker, 12, 3, group_id="raw-group", generation_id=1, member_id=member).error_code == ErrorCode.NONE
    commit_topics = [{"name": "errors", "partitions": [{"partition_index": 0, "committed_offset": 1, "committed_metadata": None}]}]
    stale = call(shared_broker, 8, 7, group_id="raw-group", generation_id_or_member_epoch=0, member_id=member, topics=commit_topics)
    assert stale.topics[0].partitions[0].error_code == ErrorCode.ILLEGAL_GENERATION
    stranger = call(shared_broker, 8, 7, group_id="raw-group", generation_id_or_member_epoch=1, member_id="x", topics=commit_topics)
    assert stranger.topics[0].partitions[0].error_code == ErrorCode.UNKNOWN_MEMBER_ID
    unknown_v9 = call(shared_broker, 8, 9, group_id="nope", generation_id_or_member_epoch=3, member_id="x", topics=commit_topics)
    assert unknown_v9.topics[0].partitions[0].error_code == ErrorCode.GROUP_ID_NOT_FOUND
    ok = call(shared_broker, 8, 7, group_id="raw-group", generation_id_or_member_epoch=1, member_id=member, topics=commit_topics)
    assert ok.topics[0].partitions[0].error_code == ErrorCode.NONE
    fetch_group = sys.modules[request_schema(9, 8).__module__].OffsetFetchRequestGroup  # build() cannot make a null array
    fetched = call(shared_broker, 9, 8, groups=[fetch_group(group_id="raw-group", topics=None), {"group_id": "", "topics": []}],
                   require_stable=True)
    assert fetched.groups[0].topics[0].partitions[0].committed_offset == 1
    assert fetched.groups[1].error_code == ErrorCode.INVALID_GROUP_ID
    described = call(shared_broker, 15, 5, groups=["raw-group", "missing"], include_authorized_operations=False)
    assert [(g.group_state, g.protocol_data) for g in described.groups] == [("Stable", "range"), ("Dead", "")]
    assert described.groups[0].members[0].member_assignment == b"opaque bytes"
    missing_v6 = call(shared_broker, 15, 6, groups=["missing"], include_authorized_operations=False)
    assert missing_v6.groups[0].error_code == ErrorCode.GROUP_ID_NOT_FOUND
    deleted = call(shared_broker, 42, 2, groups_names=["raw-group", "missing"])
    assert [r.error_code for r in deleted.results] == [ErrorCode.NON_EMPTY_GROUP, ErrorCode.GROUP_ID_NOT_FOUND]
    coordinator = call(shared_broker, 10, 4, key_type=0, coordinator_keys=["raw-group", "other"])
    assert [(c.node_id, c.port, c.error_code) for c in coordinator.coordinators] == [(1, shared_broker.port, 0)] * 2
    transaction = call(shared_broker, 10, 3, key="tx", key_type=1)
    assert (transaction.error_code, transaction.port) == (ErrorCode.NONE, shared_broker.port)
    left = call(shared_broker, 13, 4, group_id="raw-group", members=[{"member_id": member}, {"member_id": "ghost"}])
    assert [m.error_code for m in left.members] == [ErrorCode.NONE, ErrorCode.UNKNOWN_MEMBER_ID]
    listed = call(shared_broker, 16, 4, states_filter=["empty"])
    assert ("raw-group", "Empty") in [(g.group_id, g.group_state) for g in listed.groups]
    offset_delete = call(shared_broker, 47, 0, group_id="raw-group",
                         topics=[{"name": "errors", "partitions": [{"partition_index": 0}]}])
    assert offset_delete.error_code == 0 and offset_delete.topics[0].partitions[0].error_code == 0
    assert call(shared_broker, 42, 2, groups_names=["raw-group"]).results[0].error_code == ErrorCode.NONE
