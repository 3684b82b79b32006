"""Sans-I/O Raft core for the replicated metadata log (``__chronik_metadata`` 0).

:class:`RaftNode` is one voter's consensus state machine.  It never sleeps,
reads a clock, touches a file or draws a random number of its own: the driver
feeds it *events* (:meth:`~RaftNode.tick`, :meth:`~RaftNode.receive`,
:meth:`~RaftNode.propose`, :meth:`~RaftNode.log_durable`,
:meth:`~RaftNode.hard_state_durable`), each with the current time, and carries
out the *actions* each call returns.  The same core runs under trio in the
broker and under a virtual clock in ``tests/cluster/test_raft_simulation.py``.

Terms are Kafka epochs.  Offsets are 0-based and dense; an *end* is exclusive.
The commit end is the high watermark: offsets below it are committed.
Replication is push (see :mod:`chronik.cluster.messages` for why).

Invariants (Raft, section 5), which the simulation checks on every step:

* **Election Safety** -- at most one leader per term.  A vote is granted at
  most once per term, and the term and vote are durable before the grant is
  sent (the core holds every outgoing message until the hard state it was made
  under is reported durable); a candidate counts its own vote only once it is
  durable.
* **Leader Append-Only** -- a leader never truncates or overwrites its log.
* **Log Matching** -- if two logs hold an entry with the same (offset, epoch),
  the logs are identical up to it.  A follower accepts entries only after its
  entry at ``prev_end - 1`` has ``prev_epoch``, and truncates only at the
  first entry whose epoch differs from the leader's (the divergent suffix).
* **Leader Completeness** -- a committed entry is in the log of every leader
  of a later term: votes go only to candidates whose log is at least as
  up-to-date, compared by (last epoch, log end); and a leader commits by
  counting replicas only entries of its own term (section 5.4.2), which then
  commit everything before them.  Only *durable* replicas count, the leader's
  own included.
* **State Machine Safety** -- nodes apply the same entry at each offset: they
  apply only below the commit end, which never moves back and never exceeds
  the prefix known to match the leader.

A leader that hears from no majority for an election timeout steps down
(check quorum).  Pre-vote (on by default) keeps a partitioned node from
raising terms and deposing a healthy leader when it comes back.

Ordering contract for the driver:

1. Carry out the actions of a call in list order, and calls in the order made.
2. :class:`PersistHardState` starts a write of (term, voted_for); report its
   completion with :meth:`RaftNode.hard_state_durable`.  Hard-state writes
   must become durable in the order issued (each overwrites the last).  The
   driver need not delay :class:`Send` actions: the core itself withholds
   every message while a hard-state write is outstanding, releases them from
   :meth:`RaftNode.hard_state_durable`, and drops those made under a term it
   has since left.
3. :class:`AppendLog` writes entries at ``offset`` (always the current end of
   the local log); :class:`TruncateLog` drops every entry at or above
   ``offset`` and must be durable no later than any later append is.  Report
   durability with :meth:`RaftNode.log_durable` (end, epoch of entry end-1);
   a report that no longer matches the log (it predates a truncation) is
   ignored, so a stale report is harmless.
4. :class:`CommitAdvanced` may be acted on at once (apply entries from
   :meth:`RaftNode.entries`, skipping ``control`` ones); committed entries
   never change.  On a follower the commit end may run ahead of its own
   durable end: the entries are durable on a majority already.
5. After every call, wake the node at :meth:`RaftNode.next_deadline` (or
   sooner) with :meth:`RaftNode.tick`.

On restart, rebuild the node from what is durable (:class:`DurableState`):
the hard state, and the log that survived; it starts as a follower whose
commit end is the log start.  Snapshots: the log may start at ``log_start``
with the entry before it (epoch ``start_epoch``) covered by a snapshot; the
core does not yet install snapshots on followers that are behind the leader's
log start (next step: an InstallSnapshot/FetchSnapshot exchange), and
:meth:`RaftNode.compact` discards a committed prefix.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Union

from .messages import AppendRequest, AppendResponse, Entry, Message, VoteRequest, VoteResponse

__all__ = [
    "Action",
    "AppendLog",
    "CommitAdvanced",
    "ConsensusError",
    "DurableState",
    "NotLeader",
    "PersistHardState",
    "RaftConfig",
    "RaftNode",
    "Role",
    "RoleChanged",
    "Send",
    "TruncateLog",
]


class ConsensusError(Exception):
    """An invariant would be broken (a bug, or storage that lied about durability)."""


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class PersistHardState:
    term: int
    voted_for: int | None


@dataclass(frozen=True, slots=True)
class AppendLog:
    offset: int
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class TruncateLog:
    offset: int  # drop entries >= offset


@dataclass(frozen=True, slots=True)
class Send:
    message: Message


@dataclass(frozen=True, slots=True)
class CommitAdvanced:
    commit_end: int  # offsets < commit_end are committed


@dataclass(frozen=True, slots=True)
class RoleChanged:
    role: Role
    term: int
    leader_id: int | None


Action = Union[PersistHardState, AppendLog, TruncateLog, Send, CommitAdvanced, RoleChanged]


@dataclass(frozen=True, slots=True)
class NotLeader:
    """A proposal reached a non-leader; ``leader_id`` is the leader it knows of, if any."""

    leader_id: int | None


# ---------------------------------------------------------------- configuration and state


@dataclass(frozen=True, slots=True)
class RaftConfig:
    node_id: int
    voters: tuple[int, ...]
    election_timeout: float = 1.0  # seconds; each timeout is drawn from [t, 2t)
    heartbeat_interval: float = 0.1
    max_entries_per_append: int = 256
    pre_vote: bool = True
    check_quorum: bool = True

    def __post_init__(self) -> None:
        if len(set(self.voters)) != len(self.voters):
            raise ValueError(f"duplicate voter ids in {self.voters}")
        if self.node_id not in self.voters:
            raise ValueError(f"node {self.node_id} is not one of the voters {self.voters}")
        if not 0 < self.heartbeat_interval < self.election_timeout:
            raise ValueError("need 0 < heartbeat_interval < election_timeout")
        if self.max_entries_per_append < 1:
            raise ValueError("max_entries_per_append must be >= 1")

    @property
    def majority(self) -> int:
        return len(self.voters) // 2 + 1


@dataclass(frozen=True, slots=True)
class DurableState:
    """What a node finds on its disk at start: hard state, and the log that survived."""

    term: int = 0
    voted_for: int | None = None
    log_start: int = 0  # offsets below are covered by a snapshot
    start_epoch: int = 0  # epoch of the entry at log_start - 1 (0 if none)
    entries: tuple[Entry, ...] = ()


_NEVER = float("-inf")


class RaftNode:
    """One voter's consensus state machine; see the module docstring for the contract."""

    def __init__(
        self,
        config: RaftConfig,
        durable: DurableState,
        random: Callable[[], float],
        now: float,
    ) -> None:
        self.config = config
        self._id = config.node_id
        self._others = tuple(v for v in config.voters if v != config.node_id)
        self._random = random
        # hard state: wanted, and as last reported durable
        self._term = durable.term
        self._voted_for = durable.voted_for
        self._durable_hard = (durable.term, durable.voted_for)
        self._held: list[Send] = []
        # log
        self._log_start = durable.log_start
        self._start_epoch = durable.start_epoch
        self._entries: list[Entry] = list(durable.entries)
        self._durable_end = self.log_end
        self._commit = durable.log_start
        # role
        self._role = Role.FOLLOWER
        self._leader: int | None = None
        self._reported = (self._role, self._term, self._leader)
        self._votes: dict[int, bool] = {}
        self._election_deadline = now + self._random_timeout()
        self._last_leader_contact = _NEVER
        self._leader_match_end = 0  # follower: our log matches the current leader's below this
        # leader only
        self._next: dict[int, int] = {}  # where the next AppendRequest to each follower starts
        self._acked: dict[int, int] = {}  # durable part of it
        self._last_heard: dict[int, float] = {}
        self._heartbeat_deadline = _NEVER
        self._quorum_deadline = _NEVER
        self._out: list[Action] = []

    # ------------------------------------------------------------ read-only view

    @property
    def node_id(self) -> int:
        return self._id

    @property
    def role(self) -> Role:
        return self._role

    @property
    def term(self) -> int:
        return self._term

    @property
    def voted_for(self) -> int | None:
        return self._voted_for

    @property
    def leader_id(self) -> int | None:
        return self._leader

    @property
    def log_start(self) -> int:
        return self._log_start

    @property
    def log_end(self) -> int:
        return self._log_start + len(self._entries)

    @property
    def durable_end(self) -> int:
        return self._durable_end

    @property
    def commit_end(self) -> int:
        return self._commit

    def entry(self, offset: int) -> Entry:
        if not self._log_start <= offset < self.log_end:
            raise IndexError(f"offset {offset} outside [{self._log_start}, {self.log_end})")
        return self._entries[offset - self._log_start]

    def entries(self, start: int, end: int) -> list[Entry]:
        if not self._log_start <= start <= end <= self.log_end:
            raise IndexError(f"range [{start}, {end}) outside [{self._log_start}, {self.log_end})")
        return self._entries[start - self._log_start : end - self._log_start]

    def next_deadline(self) -> float:
        """The latest time at which the driver must call :meth:`tick`."""
        if self._role is Role.LEADER:
            if self.config.check_quorum:
                return min(self._heartbeat_deadline, self._quorum_deadline)
            return self._heartbeat_deadline
        return self._election_deadline

    # ------------------------------------------------------------ events

    def tick(self, now: float) -> list[Action]:
        if self._role is Role.LEADER:
            if now >= self._heartbeat_deadline:
                self._heartbeat_deadline = now + self.config.heartbeat_interval
                for peer in self._others:
                    self._send_append(peer)
            if self.config.check_quorum and now >= self._quorum_deadline:
                horizon = now - self.config.election_timeout
                heard = 1 + sum(1 for p in self._others if self._last_heard[p] >= horizon)
                if heard < self.config.majority:
                    self._become_follower(now, self._term, None)
                else:
                    self._quorum_deadline = now + self.config.election_timeout
        elif now >= self._election_deadline:
            if self.config.pre_vote:
                self._start_pre_vote(now)
            else:
                self._start_election(now)
        return self._flush()

    def propose(self, now: float, payload: bytes) -> tuple[int | NotLeader, list[Action]]:
        """Append ``payload`` as a new entry if this node leads; returns its offset.

        The offset is not committed yet: wait for a :class:`CommitAdvanced`
        past it *and* check that the entry there is still the one proposed
        (same epoch); a leader that loses its term may lose the entry.
        """
        if self._role is not Role.LEADER:
            return NotLeader(self._leader), self._flush()
        offset = self.log_end
        self._append_local((Entry(self._term, payload),))
        for peer in self._others:
            if self._next[peer] == offset:  # in step with us: pipeline the new entry now
                self._send_append(peer)
        return offset, self._flush()

    def receive(self, now: float, message: Message) -> list[Action]:
        if message.dst != self._id or message.src not in self.config.voters:
            return self._flush()  # misdelivered, or not a voter: ignore
        if isinstance(message, VoteRequest):
            if message.pre_vote:
                self._on_pre_vote_request(now, message)
            else:
                self._on_vote_request(now, message)
        elif isinstance(message, VoteResponse):
            self._on_vote_response(now, message)
        elif isinstance(message, AppendRequest):
            self._on_append_request(now, message)
        else:
            self._on_append_response(now, message)
        return self._flush()

    def log_durable(self, now: float, end: int, last_epoch: int) -> list[Action]:
        """The local log is durable below ``end``; its entry at ``end - 1`` has ``last_epoch``."""
        if self._durable_end < end <= self.log_end and self._epoch_at(end - 1) == last_epoch:
            self._durable_end = end
            if self._role is Role.LEADER:
                self._maybe_commit()
            elif self._leader is not None and self._leader_match_end > 0:
                self._send(self._append_response(self._leader, True))
        return self._flush()

    def hard_state_durable(self, now: float, term: int, voted_for: int | None) -> list[Action]:
        """A :class:`PersistHardState` write of (term, voted_for) completed."""
        if term >= self._durable_hard[0]:
            self._durable_hard = (term, voted_for)
        if self._durable_hard == (self._term, self._voted_for):
            held, self._held = self._held, []
            self._out.extend(held)
            if self._role is Role.CANDIDATE and voted_for == self._id:
                self._votes[self._id] = True
                self._check_votes(now)
        return self._flush()

    def compact(self, upto: int) -> None:
        """Forget entries below ``upto`` (committed, and covered by a snapshot the caller took)."""
        if not self._log_start <= upto <= self._commit:
            raise ValueError(f"can only compact committed offsets, {upto} not in [{self._log_start}, {self._commit}]")
        if upto > self._log_start:
            self._start_epoch = self._epoch_at(upto - 1)
            del self._entries[: upto - self._log_start]
            self._log_start = upto

    # ------------------------------------------------------------ elections

    def _random_timeout(self) -> float:
        return self.config.election_timeout * (1.0 + self._random())

    def _start_pre_vote(self, now: float) -> None:
        self._set_role(Role.PRE_CANDIDATE, None)
        self._election_deadline = now + self._random_timeout()
        self._votes = {self._id: True}
        self._request_votes(self._term + 1, pre_vote=True)
        self._check_votes(now)

    def _start_election(self, now: float) -> None:
        self._set_hard_state(self._term + 1, self._id)
        self._set_role(Role.CANDIDATE, None)
        self._election_deadline = now + self._random_timeout()
        self._votes = {}  # our own vote counts once it is durable
        self._request_votes(self._term, pre_vote=False)

    def _request_votes(self, term: int, *, pre_vote: bool) -> None:
        last_epoch, end = self._last_epoch(), self.log_end
        for peer in self._others:
            self._send(VoteRequest(term, self._id, peer, last_epoch, end, pre_vote))

    def _check_votes(self, now: float) -> None:
        if sum(self._votes.values()) < self.config.majority:
            return
        if self._role is Role.PRE_CANDIDATE:
            self._start_election(now)
        elif self._role is Role.CANDIDATE:
            self._become_leader(now)

    def _log_up_to_date(self, request: VoteRequest) -> bool:
        return (request.last_epoch, request.log_end) >= (self._last_epoch(), self.log_end)

    def _on_pre_vote_request(self, now: float, request: VoteRequest) -> None:
        leader_alive = self._role is Role.LEADER or (
            self._leader is not None and now - self._last_leader_contact < self.config.election_timeout
        )
        granted = request.term > self._term and not leader_alive and self._log_up_to_date(request)
        term = request.term if granted else self._term
        self._send(VoteResponse(term, self._id, request.src, granted, pre_vote=True))

    def _on_vote_request(self, now: float, request: VoteRequest) -> None:
        if request.term > self._term:
            self._become_follower(now, request.term, None)
        granted = (
            request.term == self._term
            and self._voted_for in (None, request.src)
            and self._log_up_to_date(request)
        )
        if granted:
            if self._voted_for is None:
                self._set_hard_state(self._term, request.src)
            self._election_deadline = now + self._random_timeout()
        self._send(VoteResponse(self._term, self._id, request.src, granted))

    def _on_vote_response(self, now: float, response: VoteResponse) -> None:
        if response.pre_vote:
            if response.granted:
                if self._role is Role.PRE_CANDIDATE and response.term == self._term + 1:
                    self._votes[response.src] = True
                    self._check_votes(now)
            elif response.term > self._term:
                self._become_follower(now, response.term, None)
            return
        if response.term > self._term:
            self._become_follower(now, response.term, None)
        elif self._role is Role.CANDIDATE and response.term == self._term and response.granted:
            self._votes[response.src] = True
            self._check_votes(now)

    def _become_leader(self, now: float) -> None:
        self._set_role(Role.LEADER, self._id)
        end = self.log_end
        for peer in self._others:
            self._next[peer] = end
            self._acked[peer] = 0
            self._last_heard[peer] = now  # a grace period of one election timeout
        self._quorum_deadline = now + self.config.election_timeout
        self._heartbeat_deadline = now + self.config.heartbeat_interval
        # a no-op of our own term: lets us commit the entries of earlier terms (section 5.4.2)
        self._append_local((Entry(self._term, b"", control=True),))
        for peer in self._others:
            self._send_append(peer)
        self._maybe_commit()  # a single voter commits on its own durability

    def _become_follower(self, now: float, term: int, leader: int | None) -> None:
        if term > self._term:
            self._set_hard_state(term, None)
        self._set_role(Role.FOLLOWER, leader)
        self._votes = {}
        self._leader_match_end = 0
        self._election_deadline = now + self._random_timeout()
        if leader is not None:
            self._last_leader_contact = now

    # ------------------------------------------------------------ replication

    def _send_append(self, peer: int) -> None:
        start = self._next[peer]
        if start < self._log_start:
            return  # needs a snapshot: not supported yet (see module docstring)
        begin = start - self._log_start
        batch = tuple(self._entries[begin : begin + self.config.max_entries_per_append])
        self._next[peer] = start + len(batch)  # optimistic: a rejection moves it back
        self._send(AppendRequest(self._term, self._id, peer, start, self._epoch_at(start - 1), batch, self._commit))

    def _on_append_request(self, now: float, request: AppendRequest) -> None:
        if request.term < self._term:
            self._send(AppendResponse(self._term, self._id, request.src, False, 0, 0))
            return
        if self._role is Role.LEADER and request.term == self._term:
            raise ConsensusError(f"two leaders in term {self._term}: {self._id} and {request.src}")
        if request.term > self._term or self._role is not Role.FOLLOWER or self._leader != request.src:
            self._become_follower(now, request.term, request.src)
        self._last_leader_contact = now
        self._election_deadline = now + self._random_timeout()

        prev_end = request.prev_end
        if prev_end > self.log_end:
            self._send(AppendResponse(self._term, self._id, request.src, False, self.log_end, 0))
            return
        if prev_end >= self._log_start and self._epoch_at(prev_end - 1) != request.prev_epoch:
            self._send(AppendResponse(self._term, self._id, request.src, False, self._epoch_start(prev_end - 1), 0))
            return
        for index, entry in enumerate(request.entries):
            offset = prev_end + index
            if offset < self._log_start:
                continue  # below our snapshot: committed, hence the same
            if offset < self.log_end:
                if self._epoch_at(offset) == entry.epoch:
                    continue
                self._truncate(offset)
            self._append_local(request.entries[index:])
            break
        verified = prev_end + len(request.entries)
        self._leader_match_end = max(self._leader_match_end, verified)
        commit = min(request.leader_commit, verified)
        if commit > self._commit:
            self._commit = commit
            self._out.append(CommitAdvanced(commit))
        self._send(self._append_response(request.src, True))

    def _append_response(self, leader: int, success: bool) -> AppendResponse:
        match = self._leader_match_end
        return AppendResponse(self._term, self._id, leader, success, match, min(match, self._durable_end))

    def _on_append_response(self, now: float, response: AppendResponse) -> None:
        if response.term > self._term:
            self._become_follower(now, response.term, None)
            return
        if response.term < self._term or self._role is not Role.LEADER:
            return
        peer = response.src
        self._last_heard[peer] = now
        if response.success:
            self._next[peer] = max(self._next[peer], response.match_end)
            if response.durable_end > self._acked[peer]:
                self._acked[peer] = response.durable_end
                self._maybe_commit()
            if self._next[peer] < self.log_end:
                self._send_append(peer)
        else:
            # any offset at or below the first divergence will do; the follower checks again
            self._next[peer] = max(0, min(response.match_end, self._next[peer] - 1))
            self._send_append(peer)

    def _maybe_commit(self) -> None:
        ends = sorted([self._durable_end, *(self._acked[p] for p in self._others)], reverse=True)
        quorum_end = ends[self.config.majority - 1]
        # section 5.4.2: count replicas only for an entry of our own term
        if quorum_end > self._commit and self._epoch_at(quorum_end - 1) == self._term:
            self._commit = quorum_end
            self._out.append(CommitAdvanced(quorum_end))
            # Tell the followers now rather than at the next heartbeat: a client
            # whose write was forwarded by a follower waits for that node to apply it.
            for peer in self._others:
                self._send_append(peer)

    # ------------------------------------------------------------ local log

    def _epoch_at(self, offset: int) -> int:
        if offset == self._log_start - 1:
            return self._start_epoch
        if offset < self._log_start - 1:
            raise ConsensusError(f"epoch of compacted offset {offset} (log starts at {self._log_start})")
        return self._entries[offset - self._log_start].epoch

    def _last_epoch(self) -> int:
        return self._epoch_at(self.log_end - 1)

    def _epoch_start(self, offset: int) -> int:
        """The first offset of the run of entries that share the epoch at ``offset``."""
        epoch = self._epoch_at(offset)
        while offset > self._log_start and self._epoch_at(offset - 1) == epoch:
            offset -= 1
        return max(offset, self._log_start)

    def _append_local(self, entries: tuple[Entry, ...]) -> None:
        self._out.append(AppendLog(self.log_end, entries))
        self._entries.extend(entries)

    def _truncate(self, offset: int) -> None:
        if offset < self._commit:
            raise ConsensusError(f"node {self._id} asked to truncate committed offset {offset} < {self._commit}")
        del self._entries[offset - self._log_start :]
        self._durable_end = min(self._durable_end, offset)
        self._out.append(TruncateLog(offset))

    # ------------------------------------------------------------ hard state, output

    def _set_hard_state(self, term: int, voted_for: int | None) -> None:
        if term > self._term:
            self._held.clear()  # made under an older term: obsolete
        self._term, self._voted_for = term, voted_for
        self._out.append(PersistHardState(term, voted_for))

    def _set_role(self, role: Role, leader: int | None) -> None:
        if self._role is Role.LEADER and role is not Role.LEADER:
            self._next.clear()
            self._acked.clear()
            self._last_heard.clear()
        self._role, self._leader = role, leader

    def _send(self, message: Message) -> None:
        send = Send(message)
        if self._durable_hard == (self._term, self._voted_for):
            self._out.append(send)
        else:
            self._held.append(send)

    def _flush(self) -> list[Action]:
        state = (self._role, self._term, self._leader)
        if state != self._reported:
            self._reported = state
            self._out.append(RoleChanged(*state))
        out, self._out = self._out, []
        return out
