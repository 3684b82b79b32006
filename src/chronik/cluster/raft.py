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
   a report that no longer matches the log (it predates a truncation or a
   snapshot) is ignored, so a stale report is harmless.
4. :class:`CommitAdvanced` may be acted on at once (apply entries from
   :meth:`RaftNode.entries`, skipping ``control`` ones); committed entries
   never change.  On a follower the commit end may run ahead of its own
   durable end: the entries are durable on a majority already.
5. :class:`InstallSnapshot` (a follower, from its leader): make the snapshot
   durable, drop the log below its end (all of it with ``discard_log``), and
   reset the state machine to it; the commit end jumps to the snapshot's end
   (no :class:`CommitAdvanced` says so).  Like a truncation it must be
   carried out, durably, before any later action -- the ``Send`` that
   acknowledges it comes after it in the list.  A :class:`CommitAdvanced`
   queued before it may name offsets the snapshot covers (their entries are
   gone from :meth:`RaftNode.entries`): skip those, the snapshot replaces them.
6. After every call, wake the node at :meth:`RaftNode.next_deadline` (or
   sooner) with :meth:`RaftNode.tick`.

Snapshots and compaction (section 7): the log may start at ``log_start``, the
entries below it covered by a snapshot (:class:`~.messages.Snapshot`, whose
end is ``log_start`` or later; the epoch of the entry at ``log_start - 1`` is
``start_epoch``).  The driver takes a snapshot of its state machine at an
applied offset, makes it durable, and then hands it to
:meth:`RaftNode.compact`, which forgets the entries below it.  A leader that
must send a follower entries below its log start sends its snapshot instead
(:class:`~.messages.SnapshotRequest`, in chunks of at most
``max_snapshot_chunk`` bytes, one at a time, each answered; a lost chunk is
re-sent with the next heartbeat).  A transfer keeps to the snapshot it
started with, and the leader keeps the log after that snapshot until the
follower has it (or has not answered for an election timeout), so a
follower always catches up, however often the leader snapshots.  The follower
installs it once whole: if its own log holds the snapshot's last entry (same
offset and epoch) it keeps the entries after it, else it discards its log;
either way what the snapshot covers is committed, so nothing committed is
lost and no committed entry is ever replaced.

On restart, rebuild the node from what is durable (:class:`DurableState`):
the hard state, the newest snapshot and the log after it; it starts as a
follower whose commit end is the log start (the snapshot's end).

The quorum as its leader sees it (Kafka's DescribeQuorum, KIP-595/KIP-836):
:meth:`RaftNode.quorum` is a pure snapshot of the leader's replication
bookkeeping -- epoch, commit end (the high watermark), and per voter its
durable log end and when the leader last heard a successful append response
from it (Kafka's *last fetch*; push replication's answers are what pulls are
in KRaft) and when it was last caught up.  Caught up follows Kafka's
``LeaderState``: a response reporting an end at or past the leader's own
durable end at that moment means caught up now; one reaching the leader's
durable end as of the previous response means caught up as of that previous
response.  The bookkeeping starts afresh with each term (unknown until the
follower's first answer, as a new KRaft leader's); times are the driver's
clock, as given with each event.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable, Union

from .messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    Message,
    Snapshot,
    SnapshotRequest,
    SnapshotResponse,
    VoteRequest,
    VoteResponse,
)

__all__ = [
    "Action",
    "AppendLog",
    "CommitAdvanced",
    "ConsensusError",
    "DurableState",
    "InstallSnapshot",
    "NotLeader",
    "PersistHardState",
    "QuorumView",
    "RaftConfig",
    "RaftNode",
    "Role",
    "RoleChanged",
    "Send",
    "TruncateLog",
    "VoterProgress",
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
class InstallSnapshot:
    """Replace the log's prefix by ``snapshot`` (see the ordering contract, item 5).

    ``discard_log``: the local log does not continue the snapshot; drop every
    entry (the log goes on at ``snapshot.end``).  Otherwise keep the entries
    at and above ``snapshot.end``.
    """

    snapshot: Snapshot
    discard_log: bool


@dataclass(frozen=True, slots=True)
class RoleChanged:
    role: Role
    term: int
    leader_id: int | None


Action = Union[PersistHardState, AppendLog, TruncateLog, Send, CommitAdvanced, InstallSnapshot, RoleChanged]


@dataclass(frozen=True, slots=True)
class NotLeader:
    """A proposal reached a non-leader; ``leader_id`` is the leader it knows of, if any."""

    leader_id: int | None


@dataclass(frozen=True, slots=True)
class VoterProgress:
    """One voter as its leader sees it (see the module docstring).

    ``end``: its durable log end, the part of its log the leader counts
    towards commit (the leader's own durable end for the leader); None until
    it first answered this leader.  ``last_fetch``/``last_caught_up``: when
    the leader last took a successful append response from it / when it was
    last caught up with the leader's durable end; None if not yet this term.
    The leader's own are the time of the query.  Times are the driver's clock.
    """

    node_id: int
    end: int | None
    last_fetch: float | None
    last_caught_up: float | None


@dataclass(frozen=True, slots=True)
class QuorumView:
    """The metadata quorum as its leader sees it at one moment (:meth:`RaftNode.quorum`).

    ``epoch`` is the leader's term, ``high_watermark`` its commit end;
    ``voters`` every voter, the leader included, by id.
    """

    leader_id: int
    epoch: int
    high_watermark: int
    voters: tuple[VoterProgress, ...]


@dataclass(slots=True)
class _Progress:
    """A leader's record of one follower for :class:`VoterProgress` (None: not this term yet)."""

    end: int | None = None
    last_fetch: float | None = None
    last_caught_up: float | None = None
    leader_end_at_fetch: int | None = None  # the leader's durable end when ``last_fetch`` was taken

    def fetched(self, now: float, end: int, leader_end: int) -> None:
        """A successful response at ``now`` put the follower's durable end at ``end`` while the
        leader's own was ``leader_end``: caught up now, or as of the previous response if it
        reached the leader's end then (Kafka's ``ReplicaState.updateFollowerState``)."""
        if end >= leader_end:
            self.last_caught_up = now
        elif self.leader_end_at_fetch is not None and end >= self.leader_end_at_fetch:
            self.last_caught_up = self.last_fetch  # (no earlier than any caught-up time before it)
        self.leader_end_at_fetch = leader_end
        self.last_fetch = now
        self.end = end


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
    max_snapshot_chunk: int = 1 << 20  # bytes of snapshot per SnapshotRequest (bounds the frame)

    def __post_init__(self) -> None:
        if len(set(self.voters)) != len(self.voters):
            raise ValueError(f"duplicate voter ids in {self.voters}")
        if self.node_id not in self.voters:
            raise ValueError(f"node {self.node_id} is not one of the voters {self.voters}")
        if not 0 < self.heartbeat_interval < self.election_timeout:
            raise ValueError("need 0 < heartbeat_interval < election_timeout")
        if self.max_entries_per_append < 1:
            raise ValueError("max_entries_per_append must be >= 1")
        if self.max_snapshot_chunk < 1:
            raise ValueError("max_snapshot_chunk must be >= 1")

    @property
    def majority(self) -> int:
        return len(self.voters) // 2 + 1


@dataclass(frozen=True, slots=True)
class DurableState:
    """What a node finds on its disk at start: hard state, snapshot, and the log after it.

    With a ``snapshot``, ``log_start`` and ``start_epoch`` are its end and epoch.
    """

    term: int = 0
    voted_for: int | None = None
    log_start: int = 0  # offsets below are covered by a snapshot
    start_epoch: int = 0  # epoch of the entry at log_start - 1 (0 if none)
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None

    def __post_init__(self) -> None:
        if self.snapshot is not None and (self.snapshot.end, self.snapshot.epoch) != (self.log_start, self.start_epoch):
            raise ValueError(f"snapshot ending at {self.snapshot.end} does not start the log at {self.log_start}")


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
        self._snapshot = durable.snapshot  # the newest durable snapshot (what a leader sends)
        self._snapshot_in: tuple[tuple[int, int, int], bytearray] | None = None  # follower: (term, end, epoch), bytes so far
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
        self._snapshot_out: dict[int, tuple[Snapshot, int]] = {}  # peer -> (snapshot being sent, bytes acknowledged)
        self._last_heard: dict[int, float] = {}
        self._progress: dict[int, _Progress] = {}  # for quorum(): what each follower last reported
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

    @property
    def snapshot(self) -> Snapshot | None:
        """The newest snapshot this node holds (taken, installed or recovered)."""
        return self._snapshot

    def quorum(self, now: float) -> QuorumView | NotLeader:
        """The quorum as this leader sees it at ``now`` (see the module docstring); a
        non-leader answers :class:`NotLeader` with the leader it knows of.  Changes nothing."""
        if self._role is not Role.LEADER:
            return NotLeader(self._leader)
        voters = []
        for voter in self.config.voters:
            if voter == self._id:
                voters.append(VoterProgress(voter, self._durable_end, now, now))
            else:
                p = self._progress[voter]
                voters.append(VoterProgress(voter, p.end, p.last_fetch, p.last_caught_up))
        return QuorumView(self._id, self._term, self._commit, tuple(voters))

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
            horizon = now - self.config.election_timeout
            silent = [peer for peer in self._snapshot_out if self._last_heard[peer] < horizon]
            if silent:  # a transfer nobody answers no longer holds back compaction
                for peer in silent:
                    del self._snapshot_out[peer]
                self._trim()
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
        elif isinstance(message, AppendResponse):
            self._on_append_response(now, message)
        elif isinstance(message, SnapshotRequest):
            self._on_snapshot_request(now, message)
        else:
            self._on_snapshot_response(now, message)
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

    def compact(self, snapshot: Snapshot) -> None:
        """Forget the entries below ``snapshot.end``: the driver's state machine
        state there, already durable.  It becomes the snapshot this node sends
        followers that are behind its log start.

        A snapshot that does not reach past the log start is stale (one
        installed from the leader overtook it) and ignored.  Raises
        ValueError for uncommitted offsets, :class:`ConsensusError` if the
        snapshot's epoch is not that of the entry at ``end - 1``.
        """
        end = snapshot.end
        if end > self._commit:
            raise ValueError(f"can only compact committed offsets, {end} > commit end {self._commit}")
        if end < self._log_start or (self._snapshot is not None and end <= self._snapshot.end):
            return
        if self._epoch_at(end - 1) != snapshot.epoch:
            raise ConsensusError(f"snapshot ending at {end} has epoch {snapshot.epoch}, the log {self._epoch_at(end - 1)}")
        self._snapshot = snapshot
        self._durable_end = max(self._durable_end, end)  # the snapshot is durable
        self._trim()

    def _trim(self) -> None:
        """Drop the entries below the newest snapshot -- but a leader keeps those after a
        snapshot it is still sending a follower (until the follower's log matches past
        it), which will need them next."""
        snapshots = [pinned for pinned, _ in self._snapshot_out.values()]
        if self._snapshot is not None:
            snapshots.append(self._snapshot)
        if not snapshots:
            return
        floor = min(snapshots, key=lambda snapshot: snapshot.end)
        if floor.end > self._log_start:
            del self._entries[: floor.end - self._log_start]
            self._log_start, self._start_epoch = floor.end, floor.epoch

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
            self._progress[peer] = _Progress()
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
            self._send_snapshot_chunk(peer)
            return
        begin = start - self._log_start
        batch = tuple(self._entries[begin : begin + self.config.max_entries_per_append])
        self._next[peer] = start + len(batch)  # optimistic: a rejection moves it back
        self._send(AppendRequest(self._term, self._id, peer, start, self._epoch_at(start - 1), batch, self._commit))

    def _heed_leader(self, now: float, request: AppendRequest | SnapshotRequest) -> bool:
        """Take a request only a leader sends: False if it is from an older term (the
        caller answers with a rejection carrying this node's term); else follow its
        sender and restart the election timer, True."""
        if request.term < self._term:
            return False
        if self._role is Role.LEADER and request.term == self._term:
            raise ConsensusError(f"two leaders in term {self._term}: {self._id} and {request.src}")
        if request.term > self._term or self._role is not Role.FOLLOWER or self._leader != request.src:
            self._become_follower(now, request.term, request.src)
        self._last_leader_contact = now
        self._election_deadline = now + self._random_timeout()
        return True

    def _on_append_request(self, now: float, request: AppendRequest) -> None:
        if not self._heed_leader(now, request):
            self._send(AppendResponse(self._term, self._id, request.src, False, 0, 0))
            return

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

    def _leader_takes(self, now: float, response: AppendResponse | SnapshotResponse) -> bool:
        """Whether this leader acts on a follower's response (of its own term); a newer
        term makes it step down.  Records when it last heard from that follower."""
        if response.term > self._term:
            self._become_follower(now, response.term, None)
            return False
        if response.term < self._term or self._role is not Role.LEADER:
            return False
        self._last_heard[response.src] = now
        return True

    def _on_append_response(self, now: float, response: AppendResponse) -> None:
        if not self._leader_takes(now, response):
            return
        peer = response.src
        if response.success:
            self._next[peer] = max(self._next[peer], response.match_end)
            pinned = self._snapshot_out.get(peer)
            if pinned is not None and response.match_end >= pinned[0].end:
                del self._snapshot_out[peer]  # it has the snapshot and the log after it
                self._trim()
            self._progress[peer].fetched(now, max(self._acked[peer], response.durable_end), self._durable_end)
            if response.durable_end > self._acked[peer]:
                self._acked[peer] = response.durable_end
                self._maybe_commit()
            if self._next[peer] < self.log_end:
                self._send_append(peer)
        else:
            # any offset at or below the first divergence will do; the follower checks again
            self._next[peer] = max(0, min(response.match_end, self._next[peer] - 1))
            self._send_append(peer)

    # ------------------------------------------------------------ snapshots (section 7)

    def _send_snapshot_chunk(self, peer: int) -> None:
        """Send ``peer`` the next chunk of our snapshot (again, if unanswered)."""
        pinned = self._snapshot_out.get(peer)
        if pinned is None:
            if self._snapshot is None:
                return  # a log start without a snapshot to send (only in tests): nothing to do
            # The transfer sticks to this snapshot even if we take newer ones meanwhile (else a
            # transfer slower than our snapshot interval would never end), and we keep the log
            # after it until the follower has it (see _trim).
            pinned = self._snapshot_out[peer] = (self._snapshot, 0)
        snapshot, position = pinned
        chunk = snapshot.data[position : position + self.config.max_snapshot_chunk]
        self._send(SnapshotRequest(
            self._term, self._id, peer, snapshot.end, snapshot.epoch, len(snapshot.data), position, chunk
        ))

    def _on_snapshot_request(self, now: float, request: SnapshotRequest) -> None:
        if not self._heed_leader(now, request):
            self._send(SnapshotResponse(self._term, self._id, request.src, request.end, 0, False))
            return

        def answer(received: int, done: bool) -> None:
            self._send(SnapshotResponse(self._term, self._id, request.src, request.end, received, done))

        if request.end <= self._commit:
            answer(request.size, True)  # we have those offsets already (committed)
            return
        key = (request.term, request.end, request.epoch)
        if self._snapshot_in is None or self._snapshot_in[0] != key:
            if request.position != 0:
                answer(0, False)  # a chunk of a snapshot we have not started: from the beginning
                return
            self._snapshot_in = (key, bytearray())
        buffer = self._snapshot_in[1]
        if request.position == len(buffer):
            buffer += request.chunk
        if len(buffer) < request.size:
            answer(len(buffer), False)  # a duplicate or a gap: say where we are
            return
        self._snapshot_in = None
        if len(buffer) > request.size:
            answer(0, False)
            return
        self._install(Snapshot(request.end, request.epoch, bytes(buffer)))
        answer(request.size, True)

    def _install(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` (above our commit end) the start of our log (section 7, steps 6-8)."""
        end = snapshot.end
        keep = self._log_start <= end <= self.log_end and self._epoch_at(end - 1) == snapshot.epoch
        if keep:
            del self._entries[: end - self._log_start]
        else:
            self._entries.clear()
            self._durable_end = end
        self._log_start, self._start_epoch = end, snapshot.epoch
        self._durable_end = max(self._durable_end, end)
        self._snapshot = snapshot
        self._commit = end
        self._leader_match_end = max(self._leader_match_end, end)
        self._out.append(InstallSnapshot(snapshot, not keep))

    def _on_snapshot_response(self, now: float, response: SnapshotResponse) -> None:
        if not self._leader_takes(now, response):
            return
        peer = response.src
        pinned = self._snapshot_out.get(peer)
        if response.done:  # the transfer ends once the follower's log matches past it (see _on_append_response)
            if self._next[peer] < response.end:
                self._next[peer] = response.end
                self._send_append(peer)
            return
        if pinned is None or pinned[0].end != response.end or self._next[peer] >= self._log_start:
            return  # about another transfer (a late answer): the heartbeat goes on with ours
        self._snapshot_out[peer] = (pinned[0], response.received)  # where the follower stands (0: start again)
        self._send_snapshot_chunk(peer)

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
            self._progress.clear()
            self._snapshot_out.clear()
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
