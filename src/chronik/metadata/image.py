"""The metadata image: the state machine the metadata log's commands build.

:meth:`MetadataImage.apply` is deterministic and pure of I/O: given the same
commands in the same order, every node (and every restart) reaches the same
image and the same per-command results.  A command that is not valid against
the current state is *rejected* -- it stays in the log, changes nothing, and
its submitter gets :class:`CommandRejected` with a Kafka error name.

Invariants: topic names and ids are unique among live topics; partition
counts only grow; ``next_producer_id`` only grows; ``applied_offset`` is the
log offset of the last applied command; every committed offset in
``group_offsets`` names a partition of a live topic (deleting a topic deletes
its offsets), and a group with no offsets has no entry.  ``transactions``
holds the transaction coordinator's state per transactional id (see
:class:`~chronik.metadata.commands.PutTransaction`); ``pending_txn_offsets``
the offsets staged by TxnOffsetCommit, per group and producer id, until their
transaction completes (then committed or dropped in the same apply).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .commands import (
    AllocateProducerIds,
    AlterTopicConfigs,
    ChangeIsr,
    Command,
    CommitOffsets,
    ControlledShutdown,
    CreateAcls,
    CreatePartitions,
    CreateTopic,
    DeleteAcls,
    DeleteGroup,
    DeleteOffsets,
    DeleteScramCredential,
    DeleteTopic,
    ElectLeaders,
    FenceBroker,
    PutTransaction,
    RegisterBroker,
    StageTxnOffsets,
    UnfenceBroker,
    UpsertScramCredential,
    PREFERRED_ELECTION,
    UNCLEAN_ELECTION,
)
from .security_image import SecurityImage
from .topic_configs import InvalidConfig, validate_topic_config


class CommandRejected(Exception):
    """A command that was valid to log but not to apply; ``error`` is a Kafka error name."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


@dataclass(slots=True)
class PartitionImage:
    """``leader`` is -1 while the partition is offline (no replica may lead it)."""

    replicas: list[int]
    leader: int
    leader_epoch: int = 0
    isr: list[int] = field(default_factory=list)


@dataclass(slots=True)
class TopicImage:
    name: str
    topic_id: uuid.UUID
    partitions: list[PartitionImage]
    configs: dict[str, str]


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    """One partition's committed offset in a consumer group (leader_epoch -1: unknown)."""

    offset: int
    leader_epoch: int
    metadata: str | None


@dataclass(slots=True)
class TransactionImage:
    """One transactional id's coordinator state (fields as in :class:`~chronik.metadata.commands.PutTransaction`)."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    state: str
    partitions: list[list[Any]]
    groups: list[str]
    timeout_ms: int
    started_ms: int
    updated_ms: int
    last_producer_epoch: int = -1
    version: int = 0


@dataclass(slots=True)
class BrokerImage:
    node_id: int
    host: str
    port: int
    rack: str | None
    fenced: bool = False
    """The controller has not heard from it for a session timeout: not listed, leads nothing."""
    shutting_down: bool = False
    """Fenced by its own ControlledShutdown: stays fenced until it registers again."""
    listeners: dict[str, list[Any]] = field(default_factory=dict)
    """Advertised [host, port] per listener name (empty: registered before listeners existed)."""

    def endpoint(self, listener: str | None) -> tuple[str, int] | None:
        """The address to give a client that came through ``listener`` (None: any): that
        listener's on this node, None if the node has no such listener (Kafka then leaves
        it out of Metadata), its registered address when it named no listeners."""
        if listener is None or not self.listeners:
            return self.host, self.port
        found = self.listeners.get(listener)
        return None if found is None else (str(found[0]), int(found[1]))


NO_LEADER = -1
"""``PartitionImage.leader`` of an offline partition."""

MAX_TOPIC_NAME = 249
_TOPIC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def topic_name_problem(name: str | None) -> str | None:
    """Why ``name`` is not a legal topic name (Kafka's rules), or None."""
    if not name:
        return "topic name is empty"
    if name in (".", ".."):
        return f"topic name {name!r} is not allowed"
    if len(name) > MAX_TOPIC_NAME:
        return f"topic name is longer than {MAX_TOPIC_NAME} characters"
    if not set(name) <= _TOPIC_CHARS:
        return f"topic name {name!r} has characters other than ASCII letters, digits, '.', '_' and '-'"
    return None


class MetadataImage:
    """Topics, brokers and producer-id allocation, as of ``applied_offset``."""

    def __init__(self) -> None:
        self.topics: dict[str, TopicImage] = {}
        self.topics_by_id: dict[uuid.UUID, TopicImage] = {}
        self.brokers: dict[int, BrokerImage] = {}
        self.next_producer_id = 0
        self.applied_offset = -1
        self.group_offsets: dict[str, dict[tuple[str, int], CommittedOffset]] = {}
        self.security = SecurityImage()
        """SCRAM credentials and ACL bindings."""
        self.transactions: dict[str, TransactionImage] = {}
        self.pending_txn_offsets: dict[str, dict[int, dict[tuple[str, int], CommittedOffset]]] = {}

    # -- applying ------------------------------------------------------------

    def apply(self, offset: int, command: Command) -> Any:
        """Apply the command at ``offset``; return its result or raise CommandRejected.

        The offset is recorded as applied either way.
        """
        if offset <= self.applied_offset:
            raise ValueError(f"metadata offset {offset} applied out of order (last {self.applied_offset})")
        self.applied_offset = offset
        handler = getattr(self, f"_apply_{command.type_name}")
        return handler(command)

    def _apply_register_broker(self, c: RegisterBroker) -> None:
        previous = self.brokers.get(c.node_id)
        self.brokers[c.node_id] = BrokerImage(c.node_id, c.host, c.port, c.rack, previous is not None and previous.fenced,
                                              listeners=dict(c.listeners))
        # shutting_down ends here: a restarted node registers again, and the controller unfences it once heard

    def live_brokers(self) -> list[int]:
        """Ids of the registered, unfenced brokers, in order."""
        return sorted(node_id for node_id, b in self.brokers.items() if not b.fenced)

    # -- fencing and leader election -------------------------------------------
    #
    # The election rule, applied deterministically on every node:
    # * fencing broker B: every partition B leads gets, as leader, the first
    #   replica (in replica order) that is in the ISR and unfenced; with none
    #   and ``unclean.leader.election.enable=true`` on the topic, the first
    #   unfenced replica (its ISR becomes just that leader); with none at all
    #   the partition goes offline (leader -1) keeping its ISR, so B can lead
    #   it again when it returns.  Each leader change bumps ``leader_epoch``.
    #   B also leaves every other ISR it is in (never emptying one).
    # * controlled shutdown of B: the same, but never an unclean election (B
    #   is alive and keeps its data; the partition waits for it offline).
    # * unfencing B: every offline partition B may lead (B in its ISR, or the
    #   topic allows unclean election) gets B as leader, epoch + 1.

    def _apply_fence_broker(self, c: FenceBroker) -> list[tuple[str, int]]:
        """Returns the partitions whose leader changed."""
        return self._fence(c.node_id, allow_unclean=True)

    def _apply_controlled_shutdown(self, c: ControlledShutdown) -> list[tuple[str, int]]:
        """Returns the partitions whose leader changed."""
        changed = self._fence(c.node_id, allow_unclean=False)
        self.brokers[c.node_id].shutting_down = True
        return changed

    def _fence(self, node_id: int, *, allow_unclean: bool) -> list[tuple[str, int]]:
        broker = self._broker(node_id)
        broker.fenced = True
        changed = []
        for topic in self.topics.values():
            unclean = allow_unclean and topic.configs.get("unclean.leader.election.enable") == "true"
            for index, partition in enumerate(topic.partitions):
                if node_id not in partition.replicas:
                    continue
                if partition.leader == node_id:
                    candidates = [r for r in partition.isr if r != node_id and not self._fenced(r)]
                    if candidates:
                        partition.leader = candidates[0]
                        partition.isr = [r for r in partition.isr if r != node_id]
                    elif unclean and (others := [r for r in partition.replicas if r != node_id and not self._fenced(r)]):
                        partition.leader, partition.isr = others[0], [others[0]]
                    else:
                        partition.leader = NO_LEADER
                    partition.leader_epoch += 1
                    changed.append((topic.name, index))
                elif node_id in partition.isr and len(partition.isr) > 1:
                    partition.isr = [r for r in partition.isr if r != node_id]
        return changed

    def _apply_unfence_broker(self, c: UnfenceBroker) -> list[tuple[str, int]]:
        """Returns the partitions whose leader changed."""
        self._broker(c.node_id).fenced = False
        changed = []
        for topic in self.topics.values():
            unclean = topic.configs.get("unclean.leader.election.enable") == "true"
            for index, partition in enumerate(topic.partitions):
                if partition.leader != NO_LEADER or c.node_id not in partition.replicas:
                    continue
                if c.node_id in partition.isr:
                    partition.isr = [r for r in partition.isr if r == c.node_id or not self._fenced(r)]
                elif unclean:
                    partition.isr = [c.node_id]
                else:
                    continue
                partition.leader = c.node_id
                partition.leader_epoch += 1
                changed.append((topic.name, index))
        return changed

    def _apply_elect_leaders(self, c: ElectLeaders) -> list[list[Any]]:
        """Returns ``[topic, partition, error name or None, message or None]`` per partition
        (see :class:`~chronik.metadata.commands.ElectLeaders`)."""
        if c.election_type not in (PREFERRED_ELECTION, UNCLEAN_ELECTION):
            raise CommandRejected("INVALID_REQUEST", f"unknown election type {c.election_type!r}")
        everything = c.partitions is None
        wanted = ([[name, index] for name, topic in self.topics.items() for index in range(len(topic.partitions))]
                  if c.partitions is None else c.partitions)
        results: list[list[Any]] = []
        for entry in wanted:
            name, index = entry[0], entry[1]
            topic = self.topics.get(name) if isinstance(name, str) else None
            if topic is None or not isinstance(index, int) or not 0 <= index < len(topic.partitions):
                results.append([name, index, "UNKNOWN_TOPIC_OR_PARTITION", f"partition {name}-{index} does not exist"])
                continue
            error, message = self._elect(topic.partitions[index], c.election_type)
            if not (everything and error == "ELECTION_NOT_NEEDED"):
                results.append([name, index, error, message])
        return results

    def _elect(self, partition: PartitionImage, election_type: int) -> tuple[str | None, str | None]:
        def live(r: int) -> bool:
            return r in self.brokers and not self.brokers[r].fenced

        if election_type == PREFERRED_ELECTION:
            preferred = partition.replicas[0]
            if partition.leader == preferred:
                return "ELECTION_NOT_NEEDED", f"broker {preferred}, the preferred replica, already leads"
            if not live(preferred):
                return "PREFERRED_LEADER_NOT_AVAILABLE", f"the preferred replica {preferred} is fenced or unregistered"
            if preferred not in partition.isr:
                return "PREFERRED_LEADER_NOT_AVAILABLE", f"the preferred replica {preferred} is not in the ISR"
            partition.leader = preferred
        else:
            if partition.leader != NO_LEADER and live(partition.leader):
                return "ELECTION_NOT_NEEDED", f"broker {partition.leader} leads"
            in_sync = [r for r in partition.isr if live(r)]
            others = [r for r in partition.replicas if live(r)]
            if in_sync:
                partition.leader = in_sync[0]
                partition.isr = [r for r in partition.isr if live(r)]
            elif others:
                partition.leader, partition.isr = others[0], [others[0]]
            else:
                return "ELIGIBLE_LEADERS_NOT_AVAILABLE", "no replica is live"
        partition.leader_epoch += 1
        return None, None

    def _broker(self, node_id: int) -> BrokerImage:
        broker = self.brokers.get(node_id)
        if broker is None:
            raise CommandRejected("BROKER_NOT_AVAILABLE", f"broker {node_id} is not registered")
        return broker

    def _fenced(self, node_id: int) -> bool:
        broker = self.brokers.get(node_id)
        return broker is not None and broker.fenced

    def _apply_create_topic(self, c: CreateTopic) -> TopicImage:
        problem = topic_name_problem(c.name)
        if problem:
            raise CommandRejected("INVALID_TOPIC_EXCEPTION", problem)
        if c.name in self.topics:
            raise CommandRejected("TOPIC_ALREADY_EXISTS", f"topic {c.name!r} already exists")
        if not c.replicas:
            raise CommandRejected("INVALID_PARTITIONS", "a topic needs at least one partition")
        self._check_replica_lists(c.replicas, len(c.replicas[0]))
        topic_id = uuid.UUID(hex=c.topic_id)
        if topic_id in self.topics_by_id:
            raise CommandRejected("TOPIC_ALREADY_EXISTS", f"topic id {topic_id} already exists")
        configs = self._checked_configs(c.configs)
        topic = TopicImage(
            c.name,
            topic_id,
            [PartitionImage(list(r), r[0], 0, list(r)) for r in c.replicas],
            configs,
        )
        self.topics[c.name] = topic
        self.topics_by_id[topic_id] = topic
        return topic

    def _apply_delete_topic(self, c: DeleteTopic) -> TopicImage:
        topic = self.topics.get(c.name)
        if topic is None or topic.topic_id.hex != c.topic_id:
            raise CommandRejected("UNKNOWN_TOPIC_OR_PARTITION", f"topic {c.name!r} does not exist")
        del self.topics[c.name]
        del self.topics_by_id[topic.topic_id]
        for group in list(self.group_offsets):
            self._drop_offsets(group, lambda key: key[0] == c.name)
        return topic

    def _apply_create_partitions(self, c: CreatePartitions) -> TopicImage:
        topic = self._topic(c.name)
        if not c.new_replicas:
            raise CommandRejected("INVALID_PARTITIONS", "the partition count can only grow")
        self._check_replica_lists(c.new_replicas, len(topic.partitions[0].replicas))
        topic.partitions.extend(PartitionImage(list(r), r[0], 0, list(r)) for r in c.new_replicas)
        return topic

    def _apply_alter_topic_configs(self, c: AlterTopicConfigs) -> TopicImage:
        topic = self._topic(c.name)
        configs = {} if c.replace else dict(topic.configs)
        for key in c.delete:
            configs.pop(key, None)
        configs.update(self._checked_configs(c.set))
        topic.configs = configs
        return topic

    def _apply_change_isr(self, c: ChangeIsr) -> PartitionImage:
        topic = self.topics.get(c.name)
        if topic is None or topic.topic_id.hex != c.topic_id or not isinstance(c.partition, int) \
                or not 0 <= c.partition < len(topic.partitions):
            raise CommandRejected("UNKNOWN_TOPIC_OR_PARTITION", f"partition {c.name}-{c.partition} does not exist")
        partition = topic.partitions[c.partition]
        if (partition.leader, partition.leader_epoch) != (c.leader, c.leader_epoch):
            raise CommandRejected(
                "FENCED_LEADER_EPOCH",
                f"{c.name}-{c.partition} is led by {partition.leader} in epoch {partition.leader_epoch},"
                f" not by {c.leader} in epoch {c.leader_epoch}",
            )
        if (not isinstance(c.isr, list) or c.leader not in c.isr or len(set(c.isr)) != len(c.isr)
                or not set(c.isr) <= set(partition.replicas)):
            raise CommandRejected("INVALID_REQUEST", f"{c.isr!r} is not an ISR of {c.name}-{c.partition} (replicas {partition.replicas})")
        joining = [r for r in c.isr if r not in partition.isr and self._fenced(r)]
        if joining:
            raise CommandRejected("INELIGIBLE_REPLICA", f"fenced broker(s) {joining} cannot join the ISR of {c.name}-{c.partition}")
        partition.isr = [r for r in partition.replicas if r in c.isr]
        return partition

    def _apply_allocate_producer_ids(self, c: AllocateProducerIds) -> int:
        if c.count <= 0:
            raise CommandRejected("INVALID_REQUEST", "producer id block must not be empty")
        first = self.next_producer_id
        self.next_producer_id += c.count
        return first

    @staticmethod
    def _check_replica_lists(replicas: list[list[int]], replication_factor: int) -> None:
        """Reject replica lists a partition could not be built from (apply must never fail otherwise:
        a command that raised anything but CommandRejected would stop every later replay)."""
        for index, partition_replicas in enumerate(replicas):
            if (not isinstance(partition_replicas, list) or len(partition_replicas) != replication_factor
                    or replication_factor < 1 or len(set(partition_replicas)) != replication_factor
                    or not all(isinstance(r, int) for r in partition_replicas)):
                raise CommandRejected(
                    "INVALID_REPLICA_ASSIGNMENT",
                    f"partition {index}: {partition_replicas!r} is not {replication_factor} distinct broker ids",
                )

    def replica_assignment_problem(self, replicas: list[list[int]], replication_factor: int) -> str | None:
        """Why a manual assignment (replicas per partition, leader first) cannot be used, or None.

        Every partition needs exactly ``replication_factor`` distinct replicas,
        each a registered broker.  (Kafka's error: INVALID_REPLICA_ASSIGNMENT.)
        """
        for index, partition_replicas in enumerate(replicas):
            if len(partition_replicas) != replication_factor:
                return (f"partition {index} of the assignment has {len(partition_replicas)} replica(s),"
                        f" the topic's replication factor is {replication_factor}")
            if len(set(partition_replicas)) != len(partition_replicas):
                return f"partition {index} of the assignment names a broker more than once: {partition_replicas}"
            unknown = sorted(set(partition_replicas) - set(self.brokers))
            if unknown:
                return f"partition {index} of the assignment names unregistered broker(s) {unknown}"
        return None

    # -- consumer group offsets ---------------------------------------------

    def _apply_commit_offsets(self, c: CommitOffsets) -> list[str | None]:
        """Per entry: None if stored, else the Kafka error name (its partition does not exist)."""
        results: list[str | None] = []
        stored = self.group_offsets.get(c.group)
        for topic_name, partition, offset, leader_epoch, metadata in c.offsets:
            topic = self.topics.get(topic_name)
            if topic is None or not 0 <= partition < len(topic.partitions):
                results.append("UNKNOWN_TOPIC_OR_PARTITION")
                continue
            if stored is None:
                stored = self.group_offsets[c.group] = {}
            stored[(topic_name, partition)] = CommittedOffset(offset, leader_epoch, metadata)
            results.append(None)
        return results

    def _apply_delete_group(self, c: DeleteGroup) -> int:
        """Returns how many committed offsets were deleted."""
        return len(self.group_offsets.pop(c.group, {}))

    def _apply_delete_offsets(self, c: DeleteOffsets) -> int:
        """Returns how many committed offsets were deleted."""
        doomed = {(topic, partition) for topic, partition in c.partitions}
        return self._drop_offsets(c.group, doomed.__contains__)

    def _drop_offsets(self, group: str, doomed: Callable[[tuple[str, int]], bool]) -> int:
        stored = self.group_offsets.get(group)
        if stored is None:
            return 0
        keys = [key for key in stored if doomed(key)]
        for key in keys:
            del stored[key]
        if not stored:
            del self.group_offsets[group]
        return len(keys)

    # -- transactions ----------------------------------------------------------

    def _apply_put_transaction(self, c: PutTransaction) -> TransactionImage | None:
        current = self.transactions.get(c.transactional_id)
        expected = None if c.expected is None else list(c.expected)
        seen = None if current is None else [current.producer_id, current.producer_epoch, current.state,
                                             current.version]
        if seen is not None and expected is not None and len(expected) == 3:
            seen = seen[:3]  # logged before commands named the version: replayed as it was applied then
        if seen != expected:
            raise CommandRejected("CONCURRENT_TRANSACTIONS",
                                  f"transactional id {c.transactional_id!r} changed meanwhile ({seen} != {c.expected})")
        if c.state in ("CompleteCommit", "CompleteAbort"):
            for group in c.groups:
                staged = self.pending_txn_offsets.get(group, {}).pop(c.producer_id, None)
                if not self.pending_txn_offsets.get(group, True):
                    del self.pending_txn_offsets[group]
                if staged and c.state == "CompleteCommit":
                    stored = self.group_offsets.setdefault(group, {})
                    for (topic_name, partition), committed in staged.items():
                        topic = self.topics.get(topic_name)
                        if topic is not None and 0 <= partition < len(topic.partitions):
                            stored[(topic_name, partition)] = committed
                    if not stored:
                        del self.group_offsets[group]
        if c.state == "Dead":
            self.transactions.pop(c.transactional_id, None)
            return None
        txn = TransactionImage(c.transactional_id, c.producer_id, c.producer_epoch, c.state,
                               [list(p) for p in c.partitions], list(c.groups), c.timeout_ms, c.started_ms,
                               c.updated_ms, c.last_producer_epoch, c.version)
        self.transactions[c.transactional_id] = txn
        return txn

    def _apply_stage_txn_offsets(self, c: StageTxnOffsets) -> list[str | None]:
        txn = self.transactions.get(c.transactional_id)
        if (txn is None or txn.state != "Ongoing" or txn.producer_id != c.producer_id
                or txn.producer_epoch != c.producer_epoch or c.group not in txn.groups):
            raise CommandRejected("INVALID_TXN_STATE",
                                  f"transactional id {c.transactional_id!r} has no ongoing transaction of producer "
                                  f"{c.producer_id}/{c.producer_epoch} with group {c.group!r}")
        results: list[str | None] = []
        staged = None
        for topic_name, partition, offset, leader_epoch, metadata in c.offsets:
            topic = self.topics.get(topic_name)
            if topic is None or not 0 <= partition < len(topic.partitions):
                results.append("UNKNOWN_TOPIC_OR_PARTITION")
                continue
            if staged is None:
                staged = self.pending_txn_offsets.setdefault(c.group, {}).setdefault(c.producer_id, {})
            staged[(topic_name, partition)] = CommittedOffset(offset, leader_epoch, metadata)
            results.append(None)
        return results

    def _topic(self, name: str) -> TopicImage:
        topic = self.topics.get(name)
        if topic is None:
            raise CommandRejected("UNKNOWN_TOPIC_OR_PARTITION", f"topic {name!r} does not exist")
        return topic

    @staticmethod
    def _checked_configs(configs: dict[str, str]) -> dict[str, str]:
        checked = {}
        for key, value in configs.items():
            try:
                checked[key] = validate_topic_config(key, value)
            except InvalidConfig as exc:
                raise CommandRejected("INVALID_CONFIG", f"{key}: {exc}") from None
        return checked

    def _apply_upsert_scram_credential(self, c: UpsertScramCredential) -> None:
        self.security.upsert_credential(c, CommandRejected)

    def _apply_delete_scram_credential(self, c: DeleteScramCredential) -> None:
        self.security.delete_credential(c, CommandRejected)

    def _apply_create_acls(self, c: CreateAcls) -> list[list[str] | None]:
        return self.security.create_acls(c)

    def _apply_delete_acls(self, c: DeleteAcls) -> list[list[list[Any]]]:
        return self.security.delete_acls(c)

    # -- snapshots -----------------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        return {
            "applied_offset": self.applied_offset,
            "next_producer_id": self.next_producer_id,
            "brokers": [vars_of(b) for b in self.brokers.values()],
            "topics": [
                {
                    "name": t.name,
                    "topic_id": t.topic_id.hex,
                    "configs": t.configs,
                    "partitions": [vars_of(p) for p in t.partitions],
                }
                for t in self.topics.values()
            ],
            "group_offsets": {
                group: [[topic, partition, o.offset, o.leader_epoch, o.metadata] for (topic, partition), o in stored.items()]
                for group, stored in self.group_offsets.items()
            },
            **self.security.to_snapshot(),
            "transactions": [vars_of(t) for t in self.transactions.values()],
            "pending_txn_offsets": {
                group: {
                    str(pid): [[topic, partition, o.offset, o.leader_epoch, o.metadata]
                               for (topic, partition), o in staged.items()]
                    for pid, staged in by_pid.items()
                }
                for group, by_pid in self.pending_txn_offsets.items()
            },
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> "MetadataImage":
        image = cls()
        image.applied_offset = data["applied_offset"]
        image.next_producer_id = data["next_producer_id"]
        for b in data["brokers"]:
            image.brokers[b["node_id"]] = BrokerImage(**b)
        for t in data["topics"]:
            topic = TopicImage(
                t["name"], uuid.UUID(hex=t["topic_id"]), [PartitionImage(**p) for p in t["partitions"]], t["configs"]
            )
            image.topics[topic.name] = topic
            image.topics_by_id[topic.topic_id] = topic
        for group, entries in data.get("group_offsets", {}).items():
            image.group_offsets[group] = {
                (topic_name, partition): CommittedOffset(offset, leader_epoch, metadata)
                for topic_name, partition, offset, leader_epoch, metadata in entries
            }
        image.security.load_snapshot(data)
        for t in data.get("transactions", []):
            image.transactions[t["transactional_id"]] = TransactionImage(**t)
        for group, by_pid in data.get("pending_txn_offsets", {}).items():
            image.pending_txn_offsets[group] = {
                int(pid): {(topic_name, partition): CommittedOffset(offset, leader_epoch, metadata)
                           for topic_name, partition, offset, leader_epoch, metadata in entries}
                for pid, entries in by_pid.items()
            }
        return image

    def copy(self) -> "MetadataImage":
        return copy.deepcopy(self)


def vars_of(obj: Any) -> dict[str, Any]:
    return {name: copy.copy(getattr(obj, name)) for name in obj.__slots__}
