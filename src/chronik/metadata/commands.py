"""Metadata commands: the entries of the metadata log ``__chronik_metadata`` partition 0.

Every change to topics, partitions, configs, brokers and producer-id blocks is
one command.  Commands are *intents*: validation against the current state
happens when the command is applied (in log order, deterministically), so the
same log replayed on any node, at any time, yields the same image and the same
per-command results.

Wire format (version 1): UTF-8 JSON object ``{"v": 1, "type": <name>, ...fields}``.
A reader refuses a version or type it does not know (a newer Chronik wrote it)
instead of guessing.  New fields get defaults so old entries still decode.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

FORMAT_VERSION = 1


class UnknownCommand(ValueError):
    """A metadata log entry this version cannot decode."""


@dataclass(frozen=True, slots=True)
class Command:
    type_name: ClassVar[str] = ""


@dataclass(frozen=True, slots=True)
class RegisterBroker(Command):
    """A node's address: ``host``/``port`` (its first listener's) and, per Kafka listener
    name, ``listeners[name] = [host, port]`` (absent in entries written before listeners existed)."""

    type_name: ClassVar[str] = "register_broker"
    node_id: int
    host: str
    port: int
    rack: str | None = None
    listeners: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CreateTopic(Command):
    type_name: ClassVar[str] = "create_topic"
    name: str
    topic_id: str  # 32 hex digits (a UUID)
    replicas: list[list[int]]  # per partition, leader first
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeleteTopic(Command):
    type_name: ClassVar[str] = "delete_topic"
    name: str
    topic_id: str


@dataclass(frozen=True, slots=True)
class CreatePartitions(Command):
    type_name: ClassVar[str] = "create_partitions"
    name: str
    new_replicas: list[list[int]]  # replicas of each added partition


@dataclass(frozen=True, slots=True)
class AlterTopicConfigs(Command):
    """``replace`` sets the whole explicit config (AlterConfigs); otherwise
    ``set`` and ``delete`` edit it (IncrementalAlterConfigs)."""

    type_name: ClassVar[str] = "alter_topic_configs"
    name: str
    set: dict[str, str] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    replace: bool = False


@dataclass(frozen=True, slots=True)
class AllocateProducerIds(Command):
    type_name: ClassVar[str] = "allocate_producer_ids"
    count: int


@dataclass(frozen=True, slots=True)
class CommitOffsets(Command):
    """A consumer group's committed offsets, one OffsetCommit request each.

    ``offsets`` holds ``[topic, partition, offset, leader_epoch, metadata]``
    entries (leader_epoch -1 = unknown, metadata may be null).  Entries whose
    partition does not exist when the command is applied are skipped.
    """

    type_name: ClassVar[str] = "commit_offsets"
    group: str
    offsets: list[list[Any]]


@dataclass(frozen=True, slots=True)
class DeleteGroup(Command):
    """Forget every committed offset of ``group`` (DeleteGroups)."""

    type_name: ClassVar[str] = "delete_group"
    group: str


@dataclass(frozen=True, slots=True)
class DeleteOffsets(Command):
    """Forget ``group``'s committed offsets of ``[topic, partition]`` entries (OffsetDelete)."""

    type_name: ClassVar[str] = "delete_offsets"
    group: str
    partitions: list[list[Any]]


@dataclass(frozen=True, slots=True)
class ChangeIsr(Command):
    """The leader of a partition changes its in-sync replica set (Kafka's AlterPartition).

    Applied only if the topic still has ``topic_id``, the partition is still
    led by ``leader`` in ``leader_epoch``, and ``isr`` is a set of its
    replicas that contains the leader; otherwise rejected (a stale change).
    """

    type_name: ClassVar[str] = "change_isr"
    name: str
    topic_id: str
    partition: int
    leader: int
    leader_epoch: int
    isr: list[int]


@dataclass(frozen=True, slots=True)
class FenceBroker(Command):
    """The controller has not heard from broker ``node_id`` for a session timeout.

    Applying it fences the broker and moves leadership of every partition it
    led to another in-sync, unfenced replica (see
    :meth:`~chronik.metadata.image.MetadataImage.elect_leaders`); the broker
    also leaves every ISR it was in, unless it is the last member.
    """

    type_name: ClassVar[str] = "fence_broker"
    node_id: int


@dataclass(frozen=True, slots=True)
class UnfenceBroker(Command):
    """The controller hears from fenced broker ``node_id`` again: it is listed
    again, and leads the partitions left without a leader that it may lead."""

    type_name: ClassVar[str] = "unfence_broker"
    node_id: int


@dataclass(frozen=True, slots=True)
class ControlledShutdown(Command):
    """Broker ``node_id`` is stopping (SIGTERM) and asks to be relieved first.

    Applied like :class:`FenceBroker` -- fenced, leadership moved to another
    in-sync unfenced replica, out of every ISR -- except that no unclean
    election happens (the broker still has its data), and the broker stays
    fenced, even while still heard from, until it registers again on restart.
    """

    type_name: ClassVar[str] = "controlled_shutdown"
    node_id: int


@dataclass(frozen=True, slots=True)
class UpsertScramCredential(Command):
    """Set ``user``'s credential for ``mechanism`` (a name of
    :data:`~chronik.metadata.credentials.SCRAM_MECHANISMS`); ``credential`` is
    :meth:`~chronik.metadata.credentials.ScramCredential.to_json`'s form.  Never a password."""

    type_name: ClassVar[str] = "upsert_scram_credential"
    user: str
    mechanism: str
    credential: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeleteScramCredential(Command):
    """Forget ``user``'s credential for ``mechanism`` (RESOURCE_NOT_FOUND if it has none)."""

    type_name: ClassVar[str] = "delete_scram_credential"
    user: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class CreateAcls(Command):
    """Store ACL bindings (:meth:`~chronik.metadata.acls.AclBinding.to_list` form).

    The result holds one entry per binding: None, or ``[error name, message]``
    for a binding that may not be stored; storing one already there is a no-op.
    """

    type_name: ClassVar[str] = "create_acls"
    acls: list[list[Any]]


@dataclass(frozen=True, slots=True)
class DeleteAcls(Command):
    """Delete the stored bindings each filter matches
    (:meth:`~chronik.metadata.acls.AclBindingFilter.to_list` form); the result lists,
    per filter, the bindings it deleted."""

    type_name: ClassVar[str] = "delete_acls"
    filters: list[list[Any]]


@dataclass(frozen=True, slots=True)
class PutTransaction(Command):
    """The transaction coordinator's whole state for one ``transactional_id``
    (Kafka's ``__transaction_state`` record), written at every transition.

    ``state`` is one of Empty, Ongoing, PrepareCommit, PrepareAbort,
    CompleteCommit, CompleteAbort, Dead (Dead removes the id).
    ``partitions`` holds ``[topic, partition]`` entries, ``groups`` the
    consumer groups whose offsets the transaction commits.  ``version`` counts
    the id's writes: the state it replaces had ``version - 1`` (0 for a new id,
    and in commands logged before the field existed).  ``expected`` is
    ``[producer_id, producer_epoch, state, version]`` of the state the writer
    computed from (None: the id was unknown); the command is rejected
    (CONCURRENT_TRANSACTIONS) unless the image still holds that very state, so
    two writers can never both win.  The version is what makes that exact: id,
    epoch and state alone come round again (each transaction of one producer
    epoch is Ongoing once), and a deposed coordinator's command, which the
    metadata submit path retries and forwards to the next controller for up to
    its timeout, must not land on a later transaction.  (A three-element
    ``expected``, logged before the version existed, is compared on those three.)
    Applying CompleteCommit makes the transaction's staged offsets of each
    group (:class:`StageTxnOffsets`) committed offsets; CompleteAbort drops them.
    """

    type_name: ClassVar[str] = "put_transaction"
    transactional_id: str
    producer_id: int
    producer_epoch: int
    state: str
    partitions: list[list[Any]]
    groups: list[str]
    timeout_ms: int
    started_ms: int
    updated_ms: int
    expected: list[Any] | None = None
    last_producer_epoch: int = -1
    version: int = 0


@dataclass(frozen=True, slots=True)
class StageTxnOffsets(Command):
    """TxnOffsetCommit: ``group``'s offsets written inside ``transactional_id``'s
    ongoing transaction of ``producer_id``/``producer_epoch``; ``offsets`` as in
    :class:`CommitOffsets`.  Pending (not visible to OffsetFetch) until the
    transaction completes.  Rejected (INVALID_TXN_STATE) unless that transaction
    is Ongoing with that producer and includes the group."""

    type_name: ClassVar[str] = "stage_txn_offsets"
    transactional_id: str
    group: str
    producer_id: int
    producer_epoch: int
    offsets: list[list[Any]]


PREFERRED_ELECTION = 0
UNCLEAN_ELECTION = 1


@dataclass(frozen=True, slots=True)
class ElectLeaders(Command):
    """Elect leaders (Kafka's ElectLeaders API, and the controller's automatic
    preferred-leader balancing) for ``[topic, partition]`` entries, or for every
    partition when ``partitions`` is None.

    ``election_type`` 0 (preferred): the first replica becomes leader if it is
    in the ISR and unfenced (else PREFERRED_LEADER_NOT_AVAILABLE); 1 (unclean):
    a partition without a live leader gets the first unfenced ISR member, else
    the first unfenced replica (whatever the topic's
    ``unclean.leader.election.enable``: the request is the operator's choice),
    else ELIGIBLE_LEADERS_NOT_AVAILABLE.  A partition that already has the
    leader the election would give is ELECTION_NOT_NEEDED.  Each election bumps
    the leader epoch.  The result lists ``[topic, partition, error name or
    None, message or None]`` per partition (with ``partitions`` None, only the
    partitions that needed an election).
    """

    type_name: ClassVar[str] = "elect_leaders"
    election_type: int
    partitions: list[list[Any]] | None = None


COMMAND_TYPES: dict[str, type[Command]] = {
    cls.type_name: cls
    for cls in (
        RegisterBroker, CreateTopic, DeleteTopic, CreatePartitions, AlterTopicConfigs, AllocateProducerIds,
        CommitOffsets, DeleteGroup, DeleteOffsets, ChangeIsr, FenceBroker, UnfenceBroker,
        ControlledShutdown, ElectLeaders, UpsertScramCredential, DeleteScramCredential, CreateAcls, DeleteAcls,
        PutTransaction, StageTxnOffsets,
    )
}


def encode_command(command: Command) -> bytes:
    body: dict[str, Any] = {"v": FORMAT_VERSION, "type": command.type_name}
    body.update((f.name, getattr(command, f.name)) for f in dataclasses.fields(command))
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def decode_command(payload: bytes | memoryview) -> Command:
    try:
        body = json.loads(bytes(payload))
    except ValueError as exc:
        raise UnknownCommand(f"metadata entry is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("v") != FORMAT_VERSION:
        raise UnknownCommand(f"unsupported metadata command version {body.get('v') if isinstance(body, dict) else body!r}")
    cls = COMMAND_TYPES.get(body.pop("type", None))
    if cls is None:
        raise UnknownCommand(f"unknown metadata command type in {bytes(payload)[:80]!r}")
    body.pop("v")
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in body.items() if k in names})
    except TypeError as exc:
        raise UnknownCommand(f"malformed {cls.type_name} command: {exc}") from None
