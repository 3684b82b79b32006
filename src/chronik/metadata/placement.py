"""Replica placement: where a new topic's (or new partitions') replicas go, and whether a request fits.

Pure functions of the metadata image: no I/O, no broker.  The handlers
(CreateTopics, CreatePartitions) and the broker's topic auto-creation call
them with the current image; the metadata log checks the result again when
it applies the command (:meth:`MetadataImage.replica_assignment_problem`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .image import MetadataImage

@dataclass(frozen=True, slots=True)
class PartitionLimits:
    """How many partitions one topic, and all topics together, may have
    (``max_partitions_per_topic``, ``max_partitions``)."""

    per_topic: int
    total: int

    @classmethod
    def of(cls, config: Any) -> "PartitionLimits":
        """The limits a :class:`~chronik.config.BrokerConfig` sets."""
        return cls(config.max_partitions_per_topic, config.max_partitions)


@dataclass(frozen=True, slots=True)
class TopicRequest:
    """A topic to create, as CreateTopics or auto-creation asks for it."""

    name: str
    num_partitions: int
    replication_factor: int
    configs: dict[str, str]
    replicas: list[list[int]] | None = None
    """A manual assignment (replicas per partition, leader first); None: spread over the brokers."""


def topic_request_problem(image: MetadataImage, request: TopicRequest, limits: PartitionLimits,
                          added: int | None = None) -> tuple[str, str] | None:
    """(Kafka error name, message) if the request cannot be served on this cluster (the image's live brokers).

    ``added``: partitions the request adds (default: all of the topic's).
    Over ``limits.per_topic``: INVALID_PARTITIONS; over ``limits.total`` for
    all topics together: POLICY_VIOLATION.
    """
    live_brokers = max(len(image.live_brokers()), 1)
    if request.num_partitions < 1:
        return "INVALID_PARTITIONS", f"number of partitions must be at least 1, not {request.num_partitions}"
    if request.replication_factor < 1:
        return "INVALID_REPLICATION_FACTOR", f"replication factor must be at least 1, not {request.replication_factor}"
    if request.replication_factor > live_brokers:
        return (
            "INVALID_REPLICATION_FACTOR",
            f"replication factor {request.replication_factor} is larger than the {live_brokers} available broker(s)",
        )
    if request.num_partitions > limits.per_topic:
        return ("INVALID_PARTITIONS", f"{request.num_partitions} partitions is more than a topic may have here "
                f"({limits.per_topic}, max_partitions_per_topic)")
    added = request.num_partitions if added is None else added
    existing = sum(len(topic.partitions) for topic in image.topics.values())
    if existing + added > limits.total:
        return ("POLICY_VIOLATION", f"{added} more partition(s) would make {existing + added} in all, more than "
                f"this cluster allows ({limits.total}, max_partitions)")
    return None


def replica_assignment(image: MetadataImage, num_partitions: int, replication_factor: int, first_partition: int = 0,
                       *, this_node: int) -> list[list[int]]:
    """Replicas per partition, leader first, over the image's live (registered, unfenced) brokers.

    ``this_node`` stands in for the brokers when none is registered yet (a
    single node before its registration is applied).  See :func:`assign_replicas`.
    """
    brokers = image.live_brokers() or [this_node]
    return assign_replicas({b: found.rack if (found := image.brokers.get(b)) else None for b in brokers},
                           num_partitions, replication_factor, first_partition)


def assign_replicas(racks: Mapping[int, str | None], num_partitions: int, replication_factor: int,
                    first_partition: int = 0) -> list[list[int]]:
    """Replicas per partition, leader first, spread round-robin over ``racks``' brokers (in its order).

    ``racks`` maps each broker to its rack (``--rack``; None: no rack).
    Without racks, partition *p*'s replicas are the brokers from position
    ``first_partition + p`` on.  When brokers have racks, Kafka's
    rack-aware assignment: the brokers are ordered so that racks alternate
    (first broker of each rack, then the second of each, ...), leaders go
    round-robin over that order, and each partition's followers are the next
    brokers in it whose rack holds none of its replicas yet -- any broker
    once every rack has one.  A broker without a rack counts as a rack of
    its own ("").
    """
    brokers = list(racks)
    rack_of = {b: racks[b] or "" for b in brokers}
    if not any(rack_of.values()):
        return [
            [brokers[(first_partition + p + r) % len(brokers)] for r in range(replication_factor)]
            for p in range(num_partitions)
        ]
    by_rack: dict[str, list[int]] = {}
    for broker in brokers:
        by_rack.setdefault(rack_of[broker], []).append(broker)
    columns = [by_rack[rack] for rack in sorted(by_rack)]
    ordered = [column[i] for i in range(max(map(len, columns))) for column in columns if i < len(column)]
    every_rack = set(by_rack)
    assignment = []
    for p in range(num_partitions):
        start = (first_partition + p) % len(ordered)
        replicas = [ordered[start]]
        candidates = ordered[start + 1:] + ordered[:start]
        while len(replicas) < min(replication_factor, len(ordered)):
            used = {rack_of[r] for r in replicas}
            replicas.append(next(b for b in candidates if b not in replicas
                                 and (rack_of[b] not in used or used >= every_rack)))
        assignment.append(replicas)
    return assignment
