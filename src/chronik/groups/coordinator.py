"""The group coordinator: every group's :class:`~chronik.groups.group.Group`, its timers, and committed offsets.

:class:`GroupCoordinator` is the I/O half of the sans-I/O group core.  It
keeps one :class:`Group` per group id, feeds it requests with the current
time, parks JoinGroup/SyncGroup requests until their :class:`Reply` comes
back, and runs one timer task (:meth:`GroupCoordinator.run`, in a nursery the
owner provides) that calls :meth:`Group.tick` when a group's deadline passes.

Committed offsets live in the metadata image (``image.group_offsets``) and are
written through the metadata log -- one ``CommitOffsets`` command per
OffsetCommit request -- so they are durable before the commit is answered and
survive restarts.  Group *membership* is not persisted: after a restart
members rejoin (their heartbeats get UNKNOWN_MEMBER_ID) and a group that has
offsets is listed as Empty.

Coordinator logic depends on the group id only, so every node of a cluster
can compute the same coordinator for a group.

Which node coordinates is the owner's business, told through a
:class:`CoordinatorRole` (in cluster mode: the controller, once it has
applied the entries of earlier epochs).  While this node does not coordinate,
membership requests get NOT_COORDINATOR (or COORDINATOR_LOAD_IN_PROGRESS) so
clients look the coordinator up again.  When coordination leaves this node,
or its role epoch changes (another node may have coordinated meanwhile), the
in-memory groups are dropped and parked JoinGroup/SyncGroup requests are
answered NOT_COORDINATOR; committed offsets stay, they are in the replicated
metadata image.  The change is noticed by the next request or by
:meth:`GroupCoordinator.run` within :data:`ROLE_CHECK_SECONDS`.

Invariants: a Group object is in ``_groups`` from its first JoinGroup until it
is deleted; a group being deleted is Dead (its requests are refused) until the
deletion is durable; ``_heaped[g]`` is the earliest timer entry queued for
group ``g``, never later than ``g.next_deadline()``.
"""

from __future__ import annotations

import heapq
import logging
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from ..metadata.commands import Command, CommitOffsets, DeleteGroup, DeleteOffsets
from ..metadata.image import CommittedOffset, MetadataImage
from ..protocol.errors import ErrorCode
from .group import Group, GroupState, JoinAnswer, JoinRequest, Reply, SyncAnswer

log = logging.getLogger(__name__)

OFFSET_METADATA_MAX_BYTES = 4096
"""Kafka's offset.metadata.max.bytes default."""

GROUP_TYPE = "classic"

ROLE_CHECK_SECONDS = 0.1
"""How often :meth:`GroupCoordinator.run` checks whether this node still coordinates (cluster mode)."""


class CoordinatorRole(Protocol):
    """Whether this node coordinates groups now."""

    def coordinator_error(self) -> ErrorCode | None:
        """None if this node coordinates; else NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS."""

    @property
    def coordinator_epoch(self) -> int:
        """Changes whenever coordination may have been elsewhere in between (the controller epoch)."""


class StandaloneRole:
    """A single node coordinates every group, always."""

    coordinator_epoch = 0

    def coordinator_error(self) -> ErrorCode | None:
        return None


class MetadataWriter(Protocol):
    """What the coordinator needs of the metadata log."""

    @property
    def image(self) -> MetadataImage: ...

    async def submit(self, command: Command) -> Any: ...

    def append(self, command: Command) -> Any: ...

    async def outcome(self, handle: Any) -> Any: ...


@dataclass(slots=True)
class StagedCommit:
    """An OffsetCommit checked and appended to the metadata log, not yet durable.

    ``errors`` holds one code per offset; the accepted ones (``accepted``, by
    index) are settled by :meth:`GroupCoordinator.finish_commit`.
    """

    errors: list[ErrorCode]
    accepted: list[int]
    pending: Any = None


@dataclass(frozen=True, slots=True)
class OffsetToCommit:
    topic: str
    partition: int
    offset: int
    leader_epoch: int
    metadata: str | None


@dataclass(frozen=True, slots=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: str


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: str
    protocol_type: str
    protocol_name: str
    members: tuple[MemberDescription, ...]


class _Waiter:
    """The token of a parked JoinGroup/SyncGroup request: set once, by the reply
    (or with ``refusal`` when this node stops coordinating)."""

    __slots__ = ("event", "answer", "refusal")

    def __init__(self, refusal: JoinAnswer | SyncAnswer) -> None:
        self.event = trio.Event()
        self.answer: JoinAnswer | SyncAnswer | None = None
        self.refusal = refusal


#: The longest string the protocol carries (INT16 length).
_MAX_STRING = 32767
_UUID_SUFFIX = 37  # "-" and a UUID's 36 characters


def _new_member_id(prefix: str) -> str:
    """``prefix`` (client.id or group.instance.id), "-" and a UUID, as Kafka builds it.

    A legal prefix may be up to 32767 bytes (more once malformed UTF-8 is
    replaced); it is cut, on a character boundary, so that the id still fits
    in a protocol string, where Kafka's own JoinGroup answer would fail to
    encode.
    """
    encoded = prefix.encode()
    if len(encoded) > _MAX_STRING - _UUID_SUFFIX:
        prefix = encoded[: _MAX_STRING - _UUID_SUFFIX].decode(errors="ignore")
    return f"{prefix}-{uuid.uuid4()}"


class GroupCoordinator:
    """Membership, rebalances and committed offsets of every group (see the module docstring)."""

    def __init__(self, metadata: MetadataWriter, *, initial_rebalance_delay_ms: int,
                 role: CoordinatorRole | None = None) -> None:
        self._metadata = metadata
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self._role: CoordinatorRole = role if role is not None else StandaloneRole()
        self._role_epoch = self._role.coordinator_epoch
        self._parked: set[_Waiter] = set()
        self._groups: dict[str, Group] = {}
        self._timers: list[tuple[float, str]] = []
        self._heaped: dict[str, float] = {}
        self._sleeping_until = math.inf
        self._timers_changed = trio.Event()

    @staticmethod
    def _now() -> float:
        return trio.current_time() * 1000.0

    @property
    def image(self) -> MetadataImage:
        return self._metadata.image

    # -- timers ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire group timers (session, rebalance and initial-delay timeouts) until cancelled.

        Cancellation: safe at any point; timers simply stop firing.  Parked
        requests are not answered (their connections are being closed too).
        """
        task_status.started()
        poll = not isinstance(self._role, StandaloneRole)
        while True:
            self._timers_changed = trio.Event()
            self._sleeping_until = self._timers[0][0] if self._timers else math.inf
            wake_at = self._sleeping_until / 1000.0
            if poll:
                wake_at = min(wake_at, trio.current_time() + ROLE_CHECK_SECONDS)
            with trio.move_on_at(wake_at):
                await self._timers_changed.wait()
            if poll:
                self.availability()
            self._fire_due_timers(self._now())

    # -- coordination --------------------------------------------------------------

    def availability(self) -> ErrorCode | None:
        """None if this node coordinates groups now, else the error to answer with.

        Drops every in-memory group (see the module docstring) when
        coordination left this node or its epoch changed.
        """
        error = self._role.coordinator_error()
        epoch = self._role.coordinator_epoch
        if (error == ErrorCode.NOT_COORDINATOR or epoch != self._role_epoch) and (self._groups or self._parked):
            self._resign()
        self._role_epoch = epoch
        return error

    def _resign(self) -> None:
        log.info("no longer coordinating %d group(s); their members will rejoin the new coordinator", len(self._groups))
        for waiter in self._parked:
            if waiter.answer is None:
                waiter.answer = waiter.refusal
                waiter.event.set()
        self._parked.clear()
        self._groups.clear()
        self._timers.clear()
        self._heaped.clear()

    def _fire_due_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            deadline, group_id = heapq.heappop(self._timers)
            if self._heaped.get(group_id) == deadline:
                del self._heaped[group_id]
            group = self._groups.get(group_id)
            if group is not None:
                self._deliver(group.tick(now))
                self._schedule(group)

    def _schedule(self, group: Group) -> None:
        """Make sure a timer fires no later than the group's next deadline."""
        deadline = group.next_deadline()
        if deadline is None or deadline >= self._heaped.get(group.group_id, math.inf):
            return
        self._heaped[group.group_id] = deadline
        heapq.heappush(self._timers, (deadline, group.group_id))
        if deadline < self._sleeping_until:
            self._timers_changed.set()

    @staticmethod
    def _deliver(replies: Iterable[Reply]) -> None:
        for reply in replies:
            waiter = reply.token
            assert isinstance(waiter, _Waiter)
            waiter.answer = reply.answer
            waiter.event.set()

    async def _park(self, group: Group, waiter: _Waiter, replies: list[Reply]) -> Any:
        self._deliver(replies)
        self._schedule(group)
        self._parked.add(waiter)
        try:
            await waiter.event.wait()
        finally:
            self._parked.discard(waiter)
        return waiter.answer

    # -- membership --------------------------------------------------------------

    async def join(self, group_id: str, request: JoinRequest) -> JoinAnswer:
        """JoinGroup: returns when the rebalance this join takes part in completes.

        Cancellation: the join stays registered (as in Kafka, a client that
        went away is removed by its timeouts); only its answer is dropped.
        """
        if not group_id:
            return JoinAnswer(ErrorCode.INVALID_GROUP_ID, request.member_id)
        if (refused := self.availability()) is not None:
            return JoinAnswer(refused, request.member_id)
        group = self._groups.get(group_id)
        if group is None:
            if request.member_id:
                return JoinAnswer(ErrorCode.UNKNOWN_MEMBER_ID, request.member_id)
            group = self._groups[group_id] = Group(
                group_id, initial_rebalance_delay_ms=self.initial_rebalance_delay_ms, new_member_id=_new_member_id,
            )
        waiter = _Waiter(JoinAnswer(ErrorCode.NOT_COORDINATOR, request.member_id))
        answer = await self._park(group, waiter, group.join(self._now(), waiter, request))
        assert isinstance(answer, JoinAnswer)
        return answer

    async def sync(self, group_id: str, member_id: str, group_instance_id: str | None, generation: int,
                   protocol_type: str | None, protocol_name: str | None, assignments: dict[str, bytes]) -> SyncAnswer:
        """SyncGroup: returns the member's assignment once the leader has sent it.

        Cancellation: as for :meth:`join`.
        """
        if group_id and (refused := self.availability()) is not None:
            return SyncAnswer(refused)
        group = self._groups.get(group_id) if group_id else None
        if group is None:
            return SyncAnswer(ErrorCode.INVALID_GROUP_ID if not group_id else ErrorCode.UNKNOWN_MEMBER_ID)
        waiter = _Waiter(SyncAnswer(ErrorCode.NOT_COORDINATOR))
        replies = group.sync(self._now(), waiter, member_id, group_instance_id, generation, protocol_type,
                             protocol_name, assignments)
        answer = await self._park(group, waiter, replies)
        assert isinstance(answer, SyncAnswer)
        return answer

    def heartbeat(self, group_id: str, member_id: str, group_instance_id: str | None, generation: int) -> ErrorCode:
        if group_id and (refused := self.availability()) is not None:
            return refused
        group = self._groups.get(group_id) if group_id else None
        if group is None:
            return ErrorCode.INVALID_GROUP_ID if not group_id else ErrorCode.UNKNOWN_MEMBER_ID
        return group.heartbeat(self._now(), member_id, group_instance_id, generation)

    def leave(self, group_id: str, members: Sequence[tuple[str, str | None]]) -> tuple[ErrorCode, list[ErrorCode]]:
        """LeaveGroup: (group-level error, an error per member)."""
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID, [ErrorCode.INVALID_GROUP_ID] * len(members)
        if (refused := self.availability()) is not None:
            return refused, [refused] * len(members)
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.NONE, [ErrorCode.UNKNOWN_MEMBER_ID] * len(members)
        errors, replies = group.leave(self._now(), members)
        self._deliver(replies)
        self._schedule(group)
        return ErrorCode.NONE, errors

    # -- offsets -------------------------------------------------------------------

    async def commit_offsets(self, group_id: str, member_id: str, group_instance_id: str | None, generation: int,
                             offsets: Sequence[OffsetToCommit], *, unknown_group: ErrorCode) -> list[ErrorCode]:
        """OffsetCommit: an error per entry; the accepted ones are durable when this returns.

        :meth:`stage_commit` then :meth:`finish_commit`.  Cancellation: the
        offsets may still be committed; only the answer is lost.
        """
        staged = self.stage_commit(group_id, member_id, group_instance_id, generation, offsets,
                                   unknown_group=unknown_group)
        return await self.finish_commit(staged)

    def stage_commit(self, group_id: str, member_id: str, group_instance_id: str | None, generation: int,
                     offsets: Sequence[OffsetToCommit], *, unknown_group: ErrorCode) -> StagedCommit:
        """Check an OffsetCommit and append the accepted offsets as one metadata command; never blocks.

        ``unknown_group`` is the error for a generation >= 0 commit to a group
        that does not exist (ILLEGAL_GENERATION before v9, GROUP_ID_NOT_FOUND after);
        a group with committed offsets but no members here answers UNKNOWN_MEMBER_ID.
        Commits staged in this order are applied in this order.
        """
        if not group_id:
            return StagedCommit([ErrorCode.INVALID_GROUP_ID] * len(offsets), [])
        if (refused := self.availability()) is not None:
            return StagedCommit([refused] * len(offsets), [])
        group = self._groups.get(group_id)
        if group is None:
            # a group known only by its offsets (its members joined another coordinator, or
            # this one before a restart) exists, as in Kafka: an unknown member rejoins
            exists = group_id in self.image.group_offsets
            problem = None if generation < 0 else ErrorCode.UNKNOWN_MEMBER_ID if exists else unknown_group
        else:
            problem = group.commit_problem(self._now(), member_id, group_instance_id, generation)
        if problem is not None:
            return StagedCommit([problem] * len(offsets), [])
        errors = [ErrorCode.NONE] * len(offsets)
        accepted: list[int] = []
        topics = self.image.topics
        for index, entry in enumerate(offsets):
            topic = topics.get(entry.topic)
            if topic is None or not 0 <= entry.partition < len(topic.partitions):
                errors[index] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            elif entry.metadata is not None and len(entry.metadata) > OFFSET_METADATA_MAX_BYTES:
                errors[index] = ErrorCode.OFFSET_METADATA_TOO_LARGE
            else:
                accepted.append(index)
        staged = StagedCommit(errors, accepted)
        if accepted:
            staged.pending = self._metadata.append(CommitOffsets(group_id, [
                [e.topic, e.partition, e.offset, e.leader_epoch, e.metadata] for e in (offsets[i] for i in accepted)
            ]))
        return staged

    async def finish_commit(self, staged: StagedCommit) -> list[ErrorCode]:
        """Wait until a staged commit is durable and applied; its error per offset.

        Cancellation: the offsets may still be committed; only the answer is lost.
        """
        errors = staged.errors
        if staged.pending is not None:
            results = await self._metadata.outcome(staged.pending)
            for index, result in zip(staged.accepted, results):
                if result is not None:
                    errors[index] = ErrorCode[result]
        return errors

    def committed_offsets(self, group_id: str, partitions: Iterable[tuple[str, int]] | None,
                          ) -> list[tuple[str, int, CommittedOffset | None]]:
        """OffsetFetch: the committed offset of each partition (None: none); ``None`` asks for all."""
        stored = self.image.group_offsets.get(group_id, {})
        if partitions is None:
            return [(topic, partition, offset) for (topic, partition), offset in sorted(stored.items())]
        return [(topic, partition, stored.get((topic, partition))) for topic, partition in partitions]

    async def delete_offsets(self, group_id: str, partitions: Sequence[tuple[str, int]]) -> tuple[ErrorCode, list[ErrorCode]]:
        """OffsetDelete: (group-level error, an error per partition).

        A non-empty group may only lose offsets of topics its members do not
        subscribe to (GROUP_SUBSCRIBED_TO_TOPIC otherwise).
        Cancellation: the deletion may still happen.
        """
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID, []
        if (refused := self.availability()) is not None:
            return refused, []
        group = self._groups.get(group_id)
        stored = self.image.group_offsets.get(group_id)
        if (group is None and stored is None) or (group is not None and group.state == GroupState.DEAD):
            return ErrorCode.GROUP_ID_NOT_FOUND, []
        subscribed: set[str] = set()
        if group is not None and not group.is_empty:
            found = group.subscribed_topics()
            if found is None:
                return ErrorCode.NON_EMPTY_GROUP, []
            subscribed = found
        errors = []
        doomed = []
        topics = self.image.topics
        for topic_name, partition in partitions:
            topic = topics.get(topic_name)
            if topic is None or not 0 <= partition < len(topic.partitions):
                errors.append(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            elif topic_name in subscribed:
                errors.append(ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC)
            else:
                errors.append(ErrorCode.NONE)
                if stored is not None and (topic_name, partition) in stored:
                    doomed.append([topic_name, partition])
        if doomed:
            await self._metadata.submit(DeleteOffsets(group_id, doomed))
        return ErrorCode.NONE, errors

    # -- administration ------------------------------------------------------------

    def list_groups(self) -> list[GroupListing]:
        """Every group with members or committed offsets (pitfall 18: assign()-only groups too);
        none while this node does not coordinate (admin clients ask every node and merge)."""
        if self.availability() is not None:
            return []
        out = {
            group_id: GroupListing(group_id, group.protocol_type or "", group.state.value)
            for group_id, group in self._groups.items()
            if group.state != GroupState.DEAD
        }
        for group_id in self.image.group_offsets:
            out.setdefault(group_id, GroupListing(group_id, "", GroupState.EMPTY.value))
        return [out[k] for k in sorted(out)]

    def describe(self, group_id: str) -> GroupDescription | None:
        """DescribeGroups; None for a group that does not exist.

        Member metadata, assignments and the protocol name are shown in
        Stable only (as Kafka does); other states list members without them.
        """
        group = self._groups.get(group_id)
        if group is None or group.state == GroupState.DEAD:
            if group_id in self.image.group_offsets:
                return GroupDescription(group_id, GroupState.EMPTY.value, "", "", ())
            return None
        stable = group.state == GroupState.STABLE
        members = tuple(
            MemberDescription(
                m.member_id, m.group_instance_id, m.client_id, m.client_host,
                m.metadata_for(group.protocol_name) if stable else b"", m.assignment if stable else b"",
            )
            for m in group.members.values()
        )
        return GroupDescription(group_id, group.state.value, group.protocol_type or "",
                                (group.protocol_name or "") if stable else "", members)

    async def delete_group(self, group_id: str) -> ErrorCode:
        """DeleteGroups for one group: only an empty group can go; its offsets go with it.

        Cancellation: the deletion may still become durable; the group is
        forgotten either way.
        """
        if (refused := self.availability()) is not None:
            return refused
        group = self._groups.get(group_id)
        has_offsets = group_id in self.image.group_offsets
        if (group is None and not has_offsets) or (group is not None and group.state == GroupState.DEAD):
            return ErrorCode.GROUP_ID_NOT_FOUND
        if group is not None and not group.is_empty:
            return ErrorCode.NON_EMPTY_GROUP
        if group is not None:
            group.delete()
        try:
            if has_offsets:
                await self._metadata.submit(DeleteGroup(group_id))
        finally:
            if group is not None and self._groups.get(group_id) is group:
                del self._groups[group_id]
        log.info("deleted group %s", group_id)
        return ErrorCode.NONE

    def group_state(self, group_id: str) -> GroupState | None:
        group = self._groups.get(group_id)
        return None if group is None else group.state
