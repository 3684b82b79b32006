"""What the parts above the metadata layer are given of it: the current image, and a way to change it.

Cluster services (replication, liveness, leader balancing), the group
coordinator and the request handlers read the image and submit commands;
they receive these two things, not the object that assembles the broker.
Both the single-node :class:`~chronik.metadata.log.MetadataLog` and the
cluster's :class:`~chronik.cluster.metadata.ReplicatedMetadataLog` are a
:class:`MetadataView`.

A command a client asked for (CreateTopics, CreateAcls, ...) is submitted
with its :class:`Origin`, the request's principal and client host; the node
that orders the metadata log (the controller) authorizes it against its own
image with a :data:`CommandCheck` before it takes it, wherever the request
arrived (see :mod:`chronik.security.commands`).  Commands the node writes on
its own behalf (registration, ISR changes, fencing, group and transaction
state) have no origin.

The metadata quorum's state, as its leader reports it (Kafka's
DescribeQuorum): :class:`QuorumInfo`; the single node describes itself, a
cluster node asks its controller (:mod:`chronik.cluster.node`), and
:class:`QuorumUnavailable` says why it could not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from .commands import Command
from .image import MetadataImage


class MetadataView(Protocol):
    """Read access to the metadata: the image as applied so far (replaced or changed in place as commands apply)."""

    @property
    def image(self) -> MetadataImage: ...


Submit: TypeAlias = Callable[[Command], Awaitable[object]]
"""Append a metadata command durably and apply it; returns the command's result.

Raises :class:`~chronik.metadata.image.CommandRejected` with a Kafka error
name.  Cancellation: the command may still be applied."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asked for a metadata change: the Kafka request's authenticated ``principal``
    (``User:name``) and the address of the client it came from (``host``, what ACL
    host matching compares).  Kafka's Envelope carries the same two (KIP-590)."""

    principal: str
    host: str


CommandCheck: TypeAlias = Callable[[Command, Origin], None]
"""Authorize ``command`` for ``origin`` against the checking node's image: returns if
allowed, raises :class:`~chronik.metadata.image.CommandRejected` (a Kafka
``*_AUTHORIZATION_FAILED`` name) if not.  Synchronous and pure (no I/O), so a
metadata log can run it and take the command with no checkpoint in between."""


@dataclass(frozen=True, slots=True)
class QuorumReplica:
    """One voter of the metadata log as the leader reports it (Kafka's DescribeQuorum
    ``ReplicaState``): ``log_end_offset`` is its durable log end as the leader knows it;
    ``last_fetch_timestamp`` / ``last_caught_up_timestamp`` are the leader's wall clock
    (ms since the epoch) when it last heard the replica fetch (take a successful append) /
    when the replica was last caught up with the leader (the leader's own: the time of the
    answer).  -1: unknown (not heard since the leader took office)."""

    replica_id: int
    log_end_offset: int
    last_fetch_timestamp: int
    last_caught_up_timestamp: int


@dataclass(frozen=True, slots=True)
class QuorumInfo:
    """The metadata quorum at one moment, as its leader sees it: the leader, its epoch, the
    high watermark (the committed end of the metadata log) and every voter, by id.  Every
    Chronik node is a voter: there are no observers."""

    leader_id: int
    leader_epoch: int
    high_watermark: int
    voters: tuple[QuorumReplica, ...]


class QuorumUnavailable(Exception):
    """No leader could describe the quorum now: ``error`` is the Kafka error code to answer
    (NOT_LEADER_OR_FOLLOWER while there is no leader or it moved, REQUEST_TIMED_OUT when it
    did not answer), ``message`` says why."""

    def __init__(self, error: int, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
