"""One consumer group's membership and rebalance protocol, sans I/O (Kafka's classic protocol).

A :class:`Group` is driven by events -- :meth:`~Group.join`, :meth:`~Group.sync`,
:meth:`~Group.heartbeat`, :meth:`~Group.leave` and :meth:`~Group.tick` (time
passed) -- each given the current time ``now`` in milliseconds of a monotonic
clock.  It never sleeps, reads a clock or does I/O.  JoinGroup and SyncGroup
answers are often *deferred* (a join waits for the other members); the caller
passes an opaque ``token`` with the request and gets back :class:`Reply`
objects, ``(token, answer)``, from whichever later event completes it.  The
caller must call :meth:`~Group.tick` no later than :meth:`~Group.next_deadline`.

States (Kafka's names)::

    Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
      ▲                 ▲        │                                 │ leader's SyncGroup
      └──last member────┤        └── nobody left ──▶ Empty         ▼
          leaves        └────── join / leave / expiry ────────── Stable
    Dead: the group was deleted; every request is refused.

Invariants:

* ``generation`` grows by one each time a rebalance completes.
* In CompletingRebalance and Stable every member has joined the current
  generation; ``leader`` is a member whenever there are members.
* A member waits for at most one join and one sync answer; a token gets
  exactly one reply (a newer request from the same member answers the older
  token with an error first).
* A member awaiting a join or sync answer is not expired by its session
  timeout (its client is blocked in that request); a *new* member awaiting
  its first join is dropped after :data:`NEW_MEMBER_JOIN_TIMEOUT_MS`.
* The leader's assignment is stored and handed out unchanged; the group never
  computes one.

Rebalance timing: a join into an Empty group starts the *initial delay*
(``group.initial.rebalance.delay.ms``): the rebalance completes once no new
member has joined for that delay, and never later than the largest rebalance
timeout after it began.  (Kafka waits in whole delay windows, restarting one
whenever a member joined during the last; measuring from the latest join
completes no later and, for members starting together, one delay after the
last of them.)  Any other rebalance completes as soon as every member and
every member id handed out with MEMBER_ID_REQUIRED has (re)joined, or at the
rebalance timeout, when the members that did not rejoin are removed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from ..protocol.errors import ErrorCode

NEW_MEMBER_JOIN_TIMEOUT_MS = 300_000
"""How long a new member may wait in its first join (Kafka's value)."""

MIN_SESSION_TIMEOUT_MS = 100
MAX_SESSION_TIMEOUT_MS = 1_800_000
"""Accepted session timeouts (Kafka's group.{min,max}.session.timeout.ms; its minimum is 6000)."""

NO_GENERATION = -1


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True, slots=True)
class JoinAnswer:
    """A JoinGroup response; ``members`` is non-empty for the leader only."""

    error: ErrorCode
    member_id: str
    generation_id: int = NO_GENERATION
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: tuple[tuple[str, str | None, bytes], ...] = ()  # (member id, group instance id, metadata)
    skip_assignment: bool = False


@dataclass(frozen=True, slots=True)
class SyncAnswer:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer for the request that was given ``token``."""

    token: Hashable
    answer: JoinAnswer | SyncAnswer


@dataclass(frozen=True, slots=True)
class JoinRequest:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]  # (name, metadata), in the member's order of preference
    require_known_member_id: bool  # JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED


@dataclass(slots=True)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: tuple[tuple[str, bytes], ...]
    last_heartbeat: float
    assignment: bytes = b""
    join_token: Hashable | None = None
    sync_token: Hashable | None = None
    is_new: bool = True

    def metadata_for(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""

    def expires_at(self) -> float | None:
        if self.join_token is not None:
            return self.last_heartbeat + NEW_MEMBER_JOIN_TIMEOUT_MS if self.is_new else None
        if self.sync_token is not None:
            return None
        return self.last_heartbeat + self.session_timeout_ms


@dataclass(slots=True)
class _Rebalance:
    """Timing of the rebalance in progress (PreparingRebalance)."""

    started: float
    timeout_ms: int
    initial_delay_ms: int | None  # set when the group was Empty: wait for more members
    last_new_member: float

    def deadline(self) -> float:
        latest = self.started + self.timeout_ms
        if self.initial_delay_ms is None:
            return latest
        return min(self.last_new_member + self.initial_delay_ms, latest)


class Group:
    """The state machine of one group (see the module docstring)."""

    def __init__(self, group_id: str, *, initial_rebalance_delay_ms: int, new_member_id: Callable[[str], str]) -> None:
        self.group_id = group_id
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self._new_member_id = new_member_id
        self.state = GroupState.EMPTY
        self.generation = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader: str | None = None
        self.members: dict[str, Member] = {}
        self.static_members: dict[str, str] = {}  # group instance id -> member id
        self.pending_members: dict[str, float] = {}  # member id handed out, not yet joined -> expiry
        self._rebalance: _Rebalance | None = None
        self._sync_deadline: float | None = None  # CompletingRebalance: members that have not synced by then go

    # -- queries -------------------------------------------------------------

    @property
    def is_empty(self) -> bool:
        return self.state in (GroupState.EMPTY, GroupState.DEAD)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must next be called (None: no timer needed)."""
        candidates = [t for t in (m.expires_at() for m in self.members.values()) if t is not None]
        candidates.extend(self.pending_members.values())
        if self._rebalance is not None:
            candidates.append(self._rebalance.deadline())
        if self._sync_deadline is not None:
            candidates.append(self._sync_deadline)
        return min(candidates, default=None)

    def subscribed_topics(self) -> set[str] | None:
        """Topics the members subscribe to (consumer protocol), or None if not known."""
        if self.protocol_type != "consumer" or self.state == GroupState.EMPTY:
            return None
        topics: set[str] = set()
        for member in self.members.values():
            decoded = consumer_subscription_topics(member.metadata_for(self.protocol_name))
            if decoded is None:
                return None
            topics.update(decoded)
        return topics

    # -- JoinGroup -----------------------------------------------------------

    def join(self, now: float, token: Hashable, request: JoinRequest) -> list[Reply]:
        """Handle a JoinGroup; the answer for ``token`` is in the result or a later one."""
        replies: list[Reply] = []
        error = self._join_problem(request)
        if error is not None:
            return [Reply(token, JoinAnswer(error, request.member_id))]
        instance_id = request.group_instance_id
        if not request.member_id:
            if instance_id is not None and instance_id in self.static_members:
                return self._replace_static_member(now, token, request)
            member_id = self._new_member_id(instance_id or request.client_id)
            if instance_id is None and request.require_known_member_id:
                self.pending_members[member_id] = now + request.session_timeout_ms
                return [Reply(token, JoinAnswer(ErrorCode.MEMBER_ID_REQUIRED, member_id))]
            self._add_member(now, token, member_id, request, replies)
        elif request.member_id in self.pending_members:
            del self.pending_members[request.member_id]
            self._add_member(now, token, request.member_id, request, replies)
        else:
            member = self.members[request.member_id]
            if self.state == GroupState.PREPARING_REBALANCE or not self._can_resend(member, request):
                self._update_member(now, token, member, request, replies)
                self._prepare_rebalance(now, replies)
            else:
                member.last_heartbeat = now
                self._answer_join(token, member, replies)
                return replies
        self._maybe_complete_join(now, replies)
        return replies

    def _join_problem(self, request: JoinRequest) -> ErrorCode | None:
        if self.state == GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if not MIN_SESSION_TIMEOUT_MS <= request.session_timeout_ms <= MAX_SESSION_TIMEOUT_MS:
            return ErrorCode.INVALID_SESSION_TIMEOUT
        if not request.protocol_type or not request.protocols:
            return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if self.members:
            if request.protocol_type != self.protocol_type:
                return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
            others = [m for m in self.members.values() if m.member_id != request.member_id]
            if others and not self._common_protocols(others) & {name for name, _ in request.protocols}:
                return ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if request.member_id:
            if request.member_id in self.pending_members:
                return None
            fenced = self._fencing_error(request.member_id, request.group_instance_id)
            if fenced is not None:
                return fenced
        return None

    def _can_resend(self, member: Member, request: JoinRequest) -> bool:
        """A rejoin that changes nothing gets the current generation back (no rebalance).

        In Stable a leader's rejoin always rebalances (it asks for a new
        assignment); in CompletingRebalance the leader just gets its answer again.
        """
        if member.protocols != request.protocols:
            return False
        return self.state == GroupState.COMPLETING_REBALANCE or (
            self.state == GroupState.STABLE and member.member_id != self.leader
        )

    def _add_member(self, now: float, token: Hashable, member_id: str, request: JoinRequest, replies: list[Reply]) -> None:
        member = Member(
            member_id, request.group_instance_id, request.client_id, request.client_host,
            request.session_timeout_ms, request.rebalance_timeout_ms, request.protocols, now, join_token=token,
        )
        self.members[member_id] = member
        if request.group_instance_id is not None:
            self.static_members[request.group_instance_id] = member_id
        if self.state == GroupState.EMPTY:  # the first member decides the group's protocol type
            self.protocol_type = request.protocol_type
        if self.leader is None:
            self.leader = member_id
        if self._rebalance is not None:
            self._rebalance.last_new_member = now
        self._prepare_rebalance(now, replies)

    def _update_member(self, now: float, token: Hashable, member: Member, request: JoinRequest, replies: list[Reply]) -> None:
        if member.join_token is not None:  # a retried join: the older request is superseded
            replies.append(Reply(member.join_token, JoinAnswer(ErrorCode.REBALANCE_IN_PROGRESS, member.member_id)))
        member.join_token = token
        member.protocols = request.protocols
        member.client_id = request.client_id
        member.client_host = request.client_host
        member.session_timeout_ms = request.session_timeout_ms
        member.rebalance_timeout_ms = request.rebalance_timeout_ms
        member.last_heartbeat = now

    def _replace_static_member(self, now: float, token: Hashable, request: JoinRequest) -> list[Reply]:
        """A static member restarted (KIP-345): it takes over its old member's place and assignment."""
        assert request.group_instance_id is not None
        replies: list[Reply] = []
        old_id = self.static_members[request.group_instance_id]
        member = self.members.pop(old_id)
        fenced_join = JoinAnswer(ErrorCode.FENCED_INSTANCE_ID, old_id)
        if member.join_token is not None:
            replies.append(Reply(member.join_token, fenced_join))
            member.join_token = None
        if member.sync_token is not None:
            replies.append(Reply(member.sync_token, SyncAnswer(ErrorCode.FENCED_INSTANCE_ID)))
            member.sync_token = None
        member.member_id = self._new_member_id(request.group_instance_id)
        self.members[member.member_id] = member
        self.static_members[request.group_instance_id] = member.member_id
        if self.leader == old_id:
            self.leader = member.member_id
        # As Kafka: only a change of the protocol the group would select rebalances.  The
        # metadata bytes may differ (a restarted consumer owns no partitions and has no
        # generation yet) and are passed on to the leader as they are now.
        member.protocols = request.protocols
        if self.state == GroupState.STABLE and self._select_protocol() == self.protocol_name:
            member.last_heartbeat = now
            member.client_id, member.client_host = request.client_id, request.client_host
            member.session_timeout_ms = request.session_timeout_ms
            member.rebalance_timeout_ms = request.rebalance_timeout_ms
            is_leader = member.member_id == self.leader
            replies.append(Reply(token, JoinAnswer(
                ErrorCode.NONE, member.member_id, self.generation, self.protocol_type, self.protocol_name,
                self.leader or "", self._member_list() if is_leader else (), skip_assignment=is_leader,
            )))
            return replies
        self._update_member(now, token, member, request, replies)
        self._prepare_rebalance(now, replies)
        self._maybe_complete_join(now, replies)
        return replies

    def _answer_join(self, token: Hashable, member: Member, replies: list[Reply]) -> None:
        is_leader = member.member_id == self.leader
        replies.append(Reply(token, JoinAnswer(
            ErrorCode.NONE, member.member_id, self.generation, self.protocol_type, self.protocol_name,
            self.leader or "", self._member_list() if is_leader else (),
        )))

    def _member_list(self) -> tuple[tuple[str, str | None, bytes], ...]:
        return tuple(
            (m.member_id, m.group_instance_id, m.metadata_for(self.protocol_name)) for m in self.members.values()
        )

    # -- rebalancing ---------------------------------------------------------

    def _prepare_rebalance(self, now: float, replies: list[Reply]) -> None:
        if self.state == GroupState.PREPARING_REBALANCE:
            return
        if self.state == GroupState.COMPLETING_REBALANCE:
            self._sync_deadline = None
            for member in self.members.values():
                member.assignment = b""
                if member.sync_token is not None:
                    replies.append(Reply(member.sync_token, SyncAnswer(ErrorCode.REBALANCE_IN_PROGRESS)))
                    member.sync_token = None
        initial = self.initial_rebalance_delay_ms if self.state == GroupState.EMPTY else None
        self._rebalance = _Rebalance(now, self._rebalance_timeout(), initial, now)
        self.state = GroupState.PREPARING_REBALANCE

    def _rebalance_timeout(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def _maybe_complete_join(self, now: float, replies: list[Reply]) -> None:
        rebalance = self._rebalance
        if rebalance is None:
            return
        if rebalance.initial_delay_ms is not None:
            rebalance.timeout_ms = max(rebalance.timeout_ms, self._rebalance_timeout())
            done = now >= rebalance.deadline()
        else:
            everyone_joined = not self.pending_members and all(m.join_token is not None for m in self.members.values())
            done = everyone_joined or now >= rebalance.deadline()
        if done:
            self._complete_join(now, replies)

    def _complete_join(self, now: float, replies: list[Reply]) -> None:
        self._rebalance = None
        for member in [m for m in self.members.values() if m.join_token is None]:
            self._remove_member(member, replies)
        self.generation += 1
        if not self.members:
            self._become_empty()
            return
        self.protocol_name = self._select_protocol()
        if self.leader not in self.members:
            self.leader = next(iter(self.members))
        self.state = GroupState.COMPLETING_REBALANCE
        self._sync_deadline = now + self._rebalance_timeout()
        for member in self.members.values():
            token, member.join_token = member.join_token, None
            member.is_new = False
            member.last_heartbeat = now
            assert token is not None
            self._answer_join(token, member, replies)

    def _become_empty(self) -> None:
        """No members left; the protocol type is kept (ListGroups still shows what the group was)."""
        self.state = GroupState.EMPTY
        self.protocol_name = self.leader = None
        self._rebalance = None
        self._sync_deadline = None

    def _common_protocols(self, members: Iterable[Member]) -> set[str]:
        common: set[str] | None = None
        for member in members:
            names = {name for name, _ in member.protocols}
            common = names if common is None else common & names
        return common or set()

    def _select_protocol(self) -> str:
        """The protocol every member supports that most members prefer (ties: the leader's order)."""
        candidates = self._common_protocols(self.members.values())
        votes: dict[str, int] = {}
        for member in self.members.values():
            choice = next(name for name, _ in member.protocols if name in candidates)
            votes[choice] = votes.get(choice, 0) + 1
        leader = self.members.get(self.leader or "") or next(iter(self.members.values()))
        order = [name for name, _ in leader.protocols if name in candidates]
        return max(order, key=lambda name: (votes.get(name, 0), -order.index(name)))

    # -- SyncGroup -----------------------------------------------------------

    def sync(self, now: float, token: Hashable, member_id: str, group_instance_id: str | None, generation: int,
             protocol_type: str | None, protocol_name: str | None, assignments: dict[str, bytes]) -> list[Reply]:
        """Handle a SyncGroup; the leader's ``assignments`` are stored unchanged."""
        error = self._member_problem(member_id, group_instance_id, generation)
        if error is None and (
            (protocol_type is not None and protocol_type != self.protocol_type)
            or (protocol_name is not None and protocol_name != self.protocol_name)
        ):
            error = ErrorCode.INCONSISTENT_GROUP_PROTOCOL
        if error is None and self.state == GroupState.PREPARING_REBALANCE:
            error = ErrorCode.REBALANCE_IN_PROGRESS
        if error is not None:
            return [Reply(token, SyncAnswer(error))]
        member = self.members[member_id]
        member.last_heartbeat = now
        if self.state == GroupState.STABLE:
            return [Reply(token, self._sync_answer(member))]
        replies: list[Reply] = []
        if member.sync_token is not None:
            replies.append(Reply(member.sync_token, SyncAnswer(ErrorCode.REBALANCE_IN_PROGRESS)))
        member.sync_token = token
        if member_id == self.leader:
            for each in self.members.values():
                each.assignment = assignments.get(each.member_id, b"")
            self.state = GroupState.STABLE
            self._sync_deadline = None
            for each in self.members.values():
                if each.sync_token is not None:
                    replies.append(Reply(each.sync_token, self._sync_answer(each)))
                    each.sync_token = None
                    each.last_heartbeat = now
        return replies

    def _sync_answer(self, member: Member) -> SyncAnswer:
        return SyncAnswer(ErrorCode.NONE, self.protocol_type, self.protocol_name, member.assignment)

    # -- Heartbeat, LeaveGroup, OffsetCommit checks ----------------------------

    def heartbeat(self, now: float, member_id: str, group_instance_id: str | None, generation: int) -> ErrorCode:
        if self.state == GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        fenced = self._fencing_error(member_id, group_instance_id)
        if fenced is not None:
            return fenced
        member = self.members[member_id]
        if self.state == GroupState.PREPARING_REBALANCE:
            member.last_heartbeat = now
            return ErrorCode.REBALANCE_IN_PROGRESS
        if generation != self.generation:
            return ErrorCode.ILLEGAL_GENERATION
        member.last_heartbeat = now
        return ErrorCode.NONE

    def leave(self, now: float, leaving: Iterable[tuple[str, str | None]]) -> tuple[list[ErrorCode], list[Reply]]:
        """Remove members ``(member_id, group_instance_id)``; an error per member, and replies."""
        errors: list[ErrorCode] = []
        replies: list[Reply] = []
        for member_id, instance_id in leaving:
            if self.state == GroupState.DEAD:
                errors.append(ErrorCode.COORDINATOR_NOT_AVAILABLE)
                continue
            if instance_id is not None:
                known = self.static_members.get(instance_id)
                if known is None:
                    errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
                    continue
                if member_id and member_id != known:
                    errors.append(ErrorCode.FENCED_INSTANCE_ID)
                    continue
                member_id = known
            if member_id in self.pending_members:
                del self.pending_members[member_id]
                self._maybe_complete_join(now, replies)
            elif member_id in self.members:
                self._remove_and_rebalance(now, self.members[member_id], replies)
            else:
                errors.append(ErrorCode.UNKNOWN_MEMBER_ID)
                continue
            errors.append(ErrorCode.NONE)
        return errors, replies

    def commit_problem(self, now: float, member_id: str, group_instance_id: str | None, generation: int) -> ErrorCode | None:
        """Why this member may not commit offsets now (None: it may); a valid commit counts as a heartbeat.

        Generation -1 into an Empty group is a commit from a consumer that
        manages its own partitions (``assign()``) or from an admin client.
        """
        if self.state == GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if group_instance_id is not None and self.static_members.get(group_instance_id, member_id) != member_id:
            return ErrorCode.FENCED_INSTANCE_ID
        if generation < 0 and self.state == GroupState.EMPTY:
            return None
        if self.state == GroupState.COMPLETING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        member = self.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation != self.generation:
            return ErrorCode.ILLEGAL_GENERATION
        member.last_heartbeat = now
        return None

    def _member_problem(self, member_id: str, group_instance_id: str | None, generation: int) -> ErrorCode | None:
        if self.state == GroupState.DEAD:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        fenced = self._fencing_error(member_id, group_instance_id)
        if fenced is not None:
            return fenced
        if generation != self.generation:
            return ErrorCode.ILLEGAL_GENERATION
        return None

    def _fencing_error(self, member_id: str, group_instance_id: str | None) -> ErrorCode | None:
        """UNKNOWN_MEMBER_ID or FENCED_INSTANCE_ID unless ``member_id`` is a current member."""
        if group_instance_id is not None:
            known = self.static_members.get(group_instance_id)
            if known is not None and known != member_id:
                return ErrorCode.FENCED_INSTANCE_ID
        if member_id not in self.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return None

    # -- removal and time ----------------------------------------------------

    def _remove_member(self, member: Member, replies: list[Reply]) -> None:
        del self.members[member.member_id]
        if member.group_instance_id is not None and self.static_members.get(member.group_instance_id) == member.member_id:
            del self.static_members[member.group_instance_id]
        if member.join_token is not None:
            replies.append(Reply(member.join_token, JoinAnswer(ErrorCode.UNKNOWN_MEMBER_ID, member.member_id)))
        if member.sync_token is not None:
            replies.append(Reply(member.sync_token, SyncAnswer(ErrorCode.UNKNOWN_MEMBER_ID)))
        if self.leader == member.member_id:
            self.leader = next(iter(self.members), None)

    def _remove_and_rebalance(self, now: float, member: Member, replies: list[Reply]) -> None:
        self._remove_member(member, replies)
        if self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(now, replies)
        self._maybe_complete_join(now, replies)

    def tick(self, now: float) -> list[Reply]:
        """Apply every timeout due at ``now``: expired members, pending ids, rebalance and sync deadlines."""
        replies: list[Reply] = []
        for member_id, expiry in list(self.pending_members.items()):
            if expiry <= now:
                del self.pending_members[member_id]
        for member in list(self.members.values()):
            expiry = member.expires_at()
            if expiry is not None and expiry <= now and member.member_id in self.members:
                self._remove_and_rebalance(now, member, replies)
        if self._sync_deadline is not None and self._sync_deadline <= now:
            late = [m for m in self.members.values() if m.sync_token is None]
            self._sync_deadline = None
            for member in late:
                self._remove_member(member, replies)
            self._prepare_rebalance(now, replies)
        self._maybe_complete_join(now, replies)
        return replies

    def delete(self) -> None:
        """Mark the group Dead (DeleteGroups); only an empty group can be deleted."""
        assert self.is_empty, "only an empty group is deleted"
        self._become_empty()
        self.state = GroupState.DEAD
        self.pending_members.clear()


def consumer_subscription_topics(metadata: bytes) -> list[str] | None:
    """The topics of a consumer-protocol Subscription (INT16 version, then ARRAY of STRING), or None."""
    if len(metadata) < 6:
        return None
    count = int.from_bytes(metadata[2:6], "big", signed=True)
    position, topics = 6, []
    for _ in range(max(count, 0)):
        length = int.from_bytes(metadata[position : position + 2], "big", signed=True)
        position += 2
        if length < 0 or position + length > len(metadata):
            return None
        try:
            topics.append(metadata[position : position + length].decode())
        except UnicodeDecodeError:
            return None
        position += length
    return topics

