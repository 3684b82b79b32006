from __future__ import annotations

import dataclasses
import uuid

import pytest
import trio

from chronik.metadata import (
    AllocateProducerIds,
    AlterTopicConfigs,
    CommandRejected,
    CreatePartitions,
    CreateTopic,
    DeleteTopic,
    MetadataLog,
    RegisterBroker,
    UnknownCommand,
    decode_command,
    encode_command,
)
from chronik.metadata.commands import Command
from chronik.metadata.view import Origin
from chronik.storage import StorageBackend, open_group_committer


def create(name: str, partitions: int = 1, **configs: str) -> CreateTopic:
    return CreateTopic(name, uuid.uuid4().hex, [[1]] * partitions, dict(configs))


def test_every_command_type_is_its_own_frozen_dataclass() -> None:
    """A command class that lost its ``@dataclass`` (as PutTransaction once did in a merge) inherits
    Command's empty fields: constructing it raises TypeError and encoding it would drop every field."""
    from chronik.metadata.commands import COMMAND_TYPES

    for name, cls in COMMAND_TYPES.items():
        params = cls.__dict__.get("__dataclass_params__")
        assert params is not None and params.frozen, name
        assert dataclasses.fields(cls), name


def test_commands_round_trip() -> None:
    commands = [
        RegisterBroker(1, "localhost", 9092, None),
        create("t", 3, **{"retention.ms": "1000"}),
        DeleteTopic("t", "ab" * 16),
        CreatePartitions("t", [[1], [1]]),
        AlterTopicConfigs("t", {"a": "b"}, ["c"], replace=True),
        AllocateProducerIds(1000),
    ]
    for command in commands:
        assert decode_command(encode_command(command)) == command
    with pytest.raises(UnknownCommand):
        decode_command(b'{"v": 99, "type": "create_topic"}')
    with pytest.raises(UnknownCommand):
        decode_command(b'{"v": 1, "type": "launch_rockets"}')
    with pytest.raises(UnknownCommand):
        decode_command(b"\xff garbage")


async def test_submit_applies_in_order_and_survives_restart(backend: StorageBackend, log_dir: str) -> None:
    async with open_group_committer(backend, log_dir) as committer:
        metadata = MetadataLog.open(committer, log_dir)
        seen: list[int] = []
        metadata.add_listener(lambda offset, command, result, error: seen.append(offset))
        await metadata.submit(RegisterBroker(1, "localhost", 9092, None))
        topic = await metadata.submit(create("orders", 3, **{"retention.ms": "60000"}))
        assert topic.name == "orders" and len(topic.partitions) == 3
        with pytest.raises(CommandRejected) as info:
            await metadata.submit(create("orders"))
        assert info.value.error == "TOPIC_ALREADY_EXISTS"
        with pytest.raises(CommandRejected) as info:
            await metadata.submit(create("bad name!"))
        assert info.value.error == "INVALID_TOPIC_EXCEPTION"
        with pytest.raises(CommandRejected) as info:
            await metadata.submit(create("t2", **{"retention.ms": "soon"}))
        assert info.value.error == "INVALID_CONFIG"
        await metadata.submit(CreatePartitions("orders", [[1], [1]]))
        await metadata.submit(AlterTopicConfigs("orders", {"cleanup.policy": "delete"}, ["retention.ms"]))
        first = await metadata.submit(AllocateProducerIds(1000))
        second = await metadata.submit(AllocateProducerIds(1000))
        assert (first, second) == (0, 1000)
        # Concurrent submits share syncs but apply in log order.
        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(metadata.submit, create(f"t{i}"))
        assert seen == list(range(len(seen)))
        image_before = metadata.image.to_snapshot()
        await metadata.aclose()

        reopened = MetadataLog.open(committer, log_dir)
        assert reopened.image.to_snapshot() == image_before
        assert reopened.recovery is not None and reopened.recovery.replayed == len(seen)
        assert len(reopened.image.topics["orders"].partitions) == 5
        assert reopened.image.topics["orders"].configs == {"cleanup.policy": "delete"}
        assert reopened.image.next_producer_id == 2000
        await reopened.submit(DeleteTopic("orders", reopened.image.topics["orders"].topic_id.hex))
        assert "orders" not in reopened.image.topics
        await reopened.aclose()


async def test_snapshots_bound_replay(backend: StorageBackend, log_dir: str) -> None:
    async with open_group_committer(backend, log_dir) as committer:
        metadata = MetadataLog.open(committer, log_dir, snapshot_every=25)
        for i in range(110):
            await metadata.submit(create(f"topic-{i}"))
        expected = metadata.image.to_snapshot()
        await metadata.aclose()
        reopened = MetadataLog.open(committer, log_dir, snapshot_every=25)
        assert reopened.image.to_snapshot() == expected
        assert reopened.recovery is not None
        assert reopened.recovery.snapshot_offset is not None and reopened.recovery.snapshot_offset >= 99
        assert reopened.recovery.replayed < 25
        names = backend.list_dir(f"{log_dir}/__chronik_metadata-0")
        assert len([n for n in names if n.startswith("snapshot-")]) == 2
        # A corrupt newest snapshot falls back to the previous one plus replay.
        newest = sorted(n for n in names if n.startswith("snapshot-"))[-1]
        f = backend.open_file(f"{log_dir}/__chronik_metadata-0/{newest}")
        f.write_durably(30, b"#")
        f.close()
        await reopened.aclose()
        again = MetadataLog.open(committer, log_dir, snapshot_every=25)
        assert again.image.to_snapshot() == expected
        await again.aclose()


def test_malformed_replica_lists_are_rejected_not_crashing_replay() -> None:
    """apply() must only ever raise CommandRejected: anything else in a durable
    command would stop every later replay of the log."""
    from chronik.metadata import CommandRejected, CreatePartitions, CreateTopic, MetadataImage

    image = MetadataImage()
    image.apply(0, CreateTopic(name="t", topic_id="0" * 31 + "1", replicas=[[1]]))
    for offset, command in enumerate([
        CreateTopic(name="u", topic_id="0" * 31 + "2", replicas=[[]]),
        CreateTopic(name="v", topic_id="0" * 31 + "3", replicas=[[1], [1, 2]]),
        CreateTopic(name="w", topic_id="0" * 31 + "4", replicas=[[1, 1]]),
        CreatePartitions(name="t", new_replicas=[[]]),
        CreatePartitions(name="t", new_replicas=[[1, 2]]),
    ], start=1):
        with pytest.raises(CommandRejected) as rejected:
            image.apply(offset, command)
        assert rejected.value.error == "INVALID_REPLICA_ASSIGNMENT"
    assert sorted(image.topics) == ["t"] and len(image.topics["t"].partitions) == 1


def test_isr_changes_are_applied_by_the_leader_and_stale_ones_rejected() -> None:
    from chronik.metadata import CommandRejected, CreateTopic, MetadataImage
    from chronik.metadata.commands import ChangeIsr

    topic_id = "0" * 31 + "1"
    image = MetadataImage()
    image.apply(0, CreateTopic(name="t", topic_id=topic_id, replicas=[[2, 3, 1]]))
    assert image.topics["t"].partitions[0].isr == [2, 3, 1]  # every replica starts in sync
    shrink = ChangeIsr(name="t", topic_id=topic_id, partition=0, leader=2, leader_epoch=0, isr=[2, 1])
    assert decode_command(encode_command(shrink)) == shrink
    image.apply(1, shrink)
    assert image.topics["t"].partitions[0].isr == [2, 1]
    image.apply(2, ChangeIsr(name="t", topic_id=topic_id, partition=0, leader=2, leader_epoch=0, isr=[1, 3, 2]))
    assert image.topics["t"].partitions[0].isr == [2, 3, 1]  # kept in replica order
    for offset, (command, error) in enumerate([
        (ChangeIsr("t", topic_id, 0, 3, 0, [3]), "FENCED_LEADER_EPOCH"),  # not the leader
        (ChangeIsr("t", topic_id, 0, 2, 1, [2]), "FENCED_LEADER_EPOCH"),  # another epoch
        (ChangeIsr("t", topic_id, 0, 2, 0, [1, 3]), "INVALID_REQUEST"),  # without the leader
        (ChangeIsr("t", topic_id, 0, 2, 0, [2, 4]), "INVALID_REQUEST"),  # not a replica
        (ChangeIsr("t", topic_id, 0, 2, 0, [2, 2]), "INVALID_REQUEST"),
        (ChangeIsr("t", topic_id, 1, 2, 0, [2]), "UNKNOWN_TOPIC_OR_PARTITION"),
        (ChangeIsr("t", "f" * 32, 0, 2, 0, [2]), "UNKNOWN_TOPIC_OR_PARTITION"),  # a re-created topic
    ], start=3):
        with pytest.raises(CommandRejected) as rejected:
            image.apply(offset, command)
        assert rejected.value.error == error
    assert image.topics["t"].partitions[0].isr == [2, 3, 1]
    assert MetadataImage.from_snapshot(image.to_snapshot()).topics["t"].partitions[0].isr == [2, 3, 1]


def test_broker_registrations_with_and_without_listener_endpoints() -> None:
    """RegisterBroker entries written before listeners existed still decode; a node's endpoint per
    listener name survives snapshots; a node without the client's listener has no endpoint for it."""
    from chronik.metadata.image import MetadataImage

    old = decode_command(b'{"v": 1, "type": "register_broker", "node_id": 2, "host": "h2", "port": 9092, "rack": null}')
    assert old == RegisterBroker(2, "h2", 9092)
    new = RegisterBroker(3, "h3", 9092, None, {"PLAINTEXT": ["h3", 9092], "SASL_SSL": ["h3.example", 9094]})
    assert decode_command(encode_command(new)) == new
    image = MetadataImage()
    image.apply(1, old)
    image.apply(2, new)
    image = MetadataImage.from_snapshot(image.to_snapshot())
    assert image.brokers[2].endpoint("SASL_SSL") == ("h2", 9092)  # named no listeners: its one address
    assert image.brokers[3].endpoint("SASL_SSL") == ("h3.example", 9094)
    assert image.brokers[3].endpoint(None) == ("h3", 9092)
    assert image.brokers[3].endpoint("SSL") is None
    snapshot = image.to_snapshot()
    for b in snapshot["brokers"]:
        b.pop("listeners")  # a snapshot written before listeners existed
    assert MetadataImage.from_snapshot(snapshot).brokers[3].endpoint("SASL_SSL") == ("h3", 9092)


async def test_a_clients_command_is_checked_before_it_is_appended(backend: StorageBackend, log_dir: str) -> None:
    """With ``authorize`` set, a command submitted with an origin is appended only if the check
    passes (a single node is its own controller); commands without one are not checked."""
    checked: list[tuple[str, Origin]] = []

    def authorize(command: Command, origin: Origin) -> None:
        checked.append((command.type_name, origin))
        if getattr(command, "name", None) == "denied":
            raise CommandRejected("TOPIC_AUTHORIZATION_FAILED", f"{origin.principal} may not CREATE topic 'denied'")

    alice = Origin("User:alice", "10.0.0.1")
    async with open_group_committer(backend, log_dir) as committer:
        metadata = MetadataLog.open(committer, log_dir)
        metadata.authorize = authorize
        await metadata.submit(RegisterBroker(1, "localhost", 9092, None))
        before = metadata.next_offset
        with pytest.raises(CommandRejected) as refused:
            await metadata.submit(create("denied"), alice)
        assert refused.value.error == "TOPIC_AUTHORIZATION_FAILED"
        assert metadata.next_offset == before  # nothing appended
        assert (await metadata.submit(create("allowed"), alice)).name == "allowed"
        assert checked == [("create_topic", alice), ("create_topic", alice)]
        assert set(metadata.image.topics) == {"allowed"}
        await metadata.aclose()
