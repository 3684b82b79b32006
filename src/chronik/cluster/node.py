"""A running consensus node: the sans-I/O Raft core over real disk, sockets and clock.

:func:`open_raft_node` wires one :class:`~chronik.cluster.raft.RaftNode` to

* :class:`~chronik.cluster.storage.RaftStorage` -- hard state file and the
  replicated log in a write-ahead log (formats documented there);
* :class:`~chronik.cluster.transport.RaftTransport` -- the replication port
  (wire format and loss policy documented there);
* trio's clock (so tests may use ``MockClock``) and a seeded ``random.Random``.

How the driver keeps the core's ordering contract (see :mod:`.raft`)
---------------------------------------------------------------------
Every core call happens on the trio thread, from whichever task has the
event (a connection task for a message, the timer task for ``tick``, the
group committer's task for ``log_durable``, the hard-state writer for
``hard_state_durable``, a caller for ``propose``).  The actions it returns go
to one FIFO queue which is drained at once, synchronously, by the call that
filled it -- unless a drain is already running higher up the stack (a commit
callback that proposes), or a log rewrite is in progress: ``TruncateLog``
and ``InstallSnapshot`` must wait for the WAL's appends in flight, so they
hand the queue to the rewrite task, which does the work durably and then
drains the rest.  So actions run in exactly the order the core made them.  ``PersistHardState`` goes to one
writer task that writes in issue order (a queued write that a newer one
supersedes is skipped; only written states are reported durable).  Log
durability comes from the WAL's ``on_durable`` hook.

Admission: a payload submitted with an :class:`~chronik.metadata.view.Origin`
(a client's request, here or forwarded from a follower with the client's
principal and host) is handed to :attr:`ConsensusNode.admit` on the leader
right before it is proposed, with no checkpoint in between, and only once the
leader has committed an entry of its own epoch (so the state machine it
checks against has every entry earlier leaders committed; until then the
submitter is told to try again, as while there is no leader).  ``admit``
refuses by raising :class:`ProposalRefused` (a Kafka error code), which
reaches the submitter, on whichever node, as final.  Payloads without an
origin (the nodes' own writes) are not checked.

Committed entries are applied in offset order through ``on_commit`` and
:meth:`ConsensusNode.committed`; ``control`` entries (a new leader's no-op)
are skipped but take an offset.

Snapshots: ``on_commit`` also receives :class:`~.messages.Snapshot` objects,
each meaning "reset the state machine to ``data``; the next entry delivered
is at ``end``": at start, the newest snapshot on disk (before any entry, and
before the node serves), and on a follower that installs its leader's
snapshot (log line ``installed snapshot at X from leader N``).  After a
restart the commit end starts at the snapshot's end, so only the entries
after it are delivered again.  The state machine takes snapshots itself and
hands them to :meth:`ConsensusNode.save_snapshot` (state after the entry at
``end - 1``); one task writes them durably, one at a time (a newer one queued
supersedes an older one not yet started), then the core forgets the entries
below and the WAL segments wholly below the older kept snapshot are deleted
(log line ``snapshot taken at offset X``, X = ``end - 1``).

The quorum (Kafka's DescribeQuorum): :meth:`ConsensusNode.describe_quorum`
gives the leader's view (:meth:`RaftNode.quorum <.raft.RaftNode.quorum>`),
its times turned from trio's clock into the node's wall clock (``wall_clock``,
ms since the epoch) -- on the leader, or asked of it over the replication port
by a follower, as a Kafka broker forwards DescribeQuorum to the controller.

A failure of the disk (``LogDirectoryFailed``) or a broken invariant
(``ConsensusError``) propagates out of the task that met it and so out of
:func:`open_raft_node`: the node stops rather than run on a lie.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Mapping

import trio

from ..metadata.view import Origin, QuorumInfo, QuorumReplica, QuorumUnavailable
from ..protocol import ErrorCode
from ..storage import DEFAULT_PROFILE, StorageBackend, create_backend, open_group_committer
from . import raft
from .messages import (
    AppendRequest,
    AppendResponse,
    ForwardRequest,
    Message,
    QuorumRequest,
    QuorumResponse,
    Snapshot,
    SnapshotRequest,
    SnapshotResponse,
)
from .raft import NotLeader, RaftConfig, RaftNode, Role
from .storage import RaftStorage
from .transport import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SEND_QUEUE,
    ForwardAnswer,
    ForwardFailed,
    RaftTransport,
)
from .network import TCP, Network

log = logging.getLogger(__name__)

__all__ = [
    "Admit", "CommitUncertain", "CommittedEntry", "ConsensusNode", "ELECTION_TIMEOUT", "NotLeaderError", "ProposalLost",
    "ProposalRefused", "Snapshot", "open_raft_node",
]

SNAPSHOT_CHUNK_BYTES = 1 << 20
"""Largest piece of a snapshot sent in one SnapshotRequest (at most half the frame limit)."""

_REPLICATION_MESSAGES = (AppendRequest, AppendResponse, SnapshotRequest, SnapshotResponse)
"""The messages that count as a peer's heartbeat (see :attr:`ConsensusNode.last_heard`)."""

RETRY_SECONDS = 0.02
"""Pause before :meth:`ConsensusNode.submit` tries again while there is no (known) leader."""

ELECTION_TIMEOUT = 1.0
"""Default seconds without a leader before a follower campaigns (Kafka's
``controller.quorum.election.timeout.ms``, 1000).  It is also how long a Raft
message may wait in a peer's send queue: one that waited longer is dropped (see
:mod:`.transport`), so the appends queued for a dead peer reach it on its restart
only if it is back within this time."""


class NotLeaderError(Exception):
    """This node does not lead; ``leader_id`` is the leader it knows of (None: unknown)."""

    def __init__(self, node_id: int, leader_id: int | None) -> None:
        super().__init__(f"node {node_id} is not the leader; leader is {leader_id if leader_id is not None else 'unknown'}")
        self.leader_id = leader_id


class CommitUncertain(Exception):
    """A leader took the payload, but its commit was not seen in time: it may still commit."""


class ProposalLost(Exception):
    """The proposal's offset was committed with another leader's entry: it will never commit."""

    def __init__(self, offset: int, epoch: int, committed_epoch: int) -> None:
        super().__init__(f"proposal at offset {offset} (epoch {epoch}) lost to an entry of epoch {committed_epoch}")
        self.offset = offset


class ProposalRefused(Exception):
    """The leader's :attr:`ConsensusNode.admit` refused the payload: ``code`` is a Kafka
    error code (e.g. TOPIC_AUTHORIZATION_FAILED), ``message`` says why.  Nothing was
    proposed; trying again gives the same answer until the leader's state changes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Admit = Callable[[bytes, Origin], None]
"""The leader's check of a payload submitted for a client (see the module docstring):
returns to let it be proposed, raises :class:`ProposalRefused` to refuse it."""


@dataclass(frozen=True, slots=True)
class CommittedEntry:
    offset: int
    epoch: int
    payload: bytes


class OffsetWaiters:
    """Tasks waiting for a position (commit end, durable end, log end) to pass an offset.

    :meth:`wait` returns once :meth:`wake` was called with an end above the
    offset, or at once (after a checkpoint) if the end given to it already
    is.  Waiters sit in a heap ordered by offset (then arrival), so a wake
    pops just the ones it releases.  Cancellation: safe; a cancelled
    waiter's event stays in the heap until the position passes it, then is
    set with no one listening.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, trio.Event]] = []
        self._seq = itertools.count()

    async def wait(self, offset: int, end: int) -> None:
        """Return once the position passes ``offset``; ``end`` is where it is now."""
        if offset < end:
            await trio.lowlevel.checkpoint()
            return
        event = trio.Event()
        heapq.heappush(self._heap, (offset, next(self._seq), event))
        await event.wait()

    def wake(self, end: int) -> None:
        """The position is now ``end``: release every waiter for an offset below it."""
        heap = self._heap
        while heap and heap[0][0] < end:
            heapq.heappop(heap)[2].set()


class ConsensusNode:
    """One running voter; create with :func:`open_raft_node`."""

    def __init__(
        self,
        core: RaftNode,
        storage: RaftStorage,
        listener: trio.abc.Listener[trio.abc.Stream],
        peers: Mapping[int, str],
        rng: random.Random,
        on_commit: Callable[[CommittedEntry | Snapshot], None] | None,
        *,
        max_frame_bytes: int,
        send_queue: int,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_age: float = float("inf"),
        network: Network = TCP,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._core = core
        self._wall_clock = wall_clock
        self._storage = storage
        self._on_commit = on_commit
        self.transport = RaftTransport(
            core.node_id, listener, peers, self._receive, rng, max_frame_bytes=max_frame_bytes, send_queue=send_queue,
            request_timeout=request_timeout, max_age=max_age, network=network,
        )
        storage.on_log_durable = self._log_durable
        self._actions: deque[raft.Action] = deque()
        self._draining = False
        self._rewriting: raft.TruncateLog | raft.InstallSnapshot | None = None  # a log rewrite holding the queue
        self._rewrite_wake = trio.Event()
        self._snapshot_job: Snapshot | None = None  # the newest snapshot handed to save_snapshot, not yet written
        self._snapshot_wake = trio.Event()
        self._hard_states: deque[tuple[int, int | None]] = deque()
        self._hard_wake = trio.Event()
        self._timer_wake = trio.Event()
        self._timer_at = float("inf")
        self._commit_end = core.commit_end  # the snapshot's end after a restart
        self._committed = OffsetWaiters()  # woken once the commit end passes the offset
        self._durable = OffsetWaiters()  # woken once the local log is durable past the offset
        self._logged = OffsetWaiters()  # woken once the local log holds the offset
        self.answer_forwards_when_durable = False
        """Answer a forwarded payload once it is durable in this (the leader's) log, not
        once committed: ``metadata.commit = "leader"`` (see :meth:`submit_durable`)."""
        self.admit: Admit | None = None
        """Checks, on the leader, each payload submitted with an origin before it is
        proposed (see the module docstring); None: every payload is proposed."""
        self._announce_commit = True
        self._closed = False
        self.transport.on_forward = self._answer_forward
        self.transport.on_describe_quorum = self._answer_quorum
        started = trio.current_time()
        self._followed: int | None = None  # the last controller this node followed
        self.last_heard: dict[int, float] = {peer: started for peer in peers}
        """When each peer last took part in replication with this node -- an append or
        snapshot from its leader, an answer to one from its follower -- which needs
        messages to flow both ways (its heartbeat; in memory only, see :mod:`.liveness`).
        Votes do not count: a node asks for them when it does *not* hear its leader, so
        a node cut off in one direction, campaigning in vain, is not live.  Peers not
        heard from yet count from this node's start."""
        self.behind_since: float | None = started
        """Since when this node's commit end has been below the commit end its leader last
        announced; None while it is level.  Starts at this node's start."""
        self.caught_up_once = False
        """Whether this node's commit end has reached a leader's since it started or last
        installed a snapshot: until then its state is whatever its disk had (a snapshot, a
        log) or the snapshot it was sent, and may be out of date."""

    # ------------------------------------------------------------ public view

    @property
    def node_id(self) -> int:
        return self._core.node_id

    @property
    def role(self) -> Role:
        return self._core.role

    @property
    def leader_id(self) -> int | None:
        return self._core.leader_id

    @property
    def term(self) -> int:
        return self._core.term

    @property
    def voted_for(self) -> int | None:
        return self._core.voted_for

    @property
    def log_end(self) -> int:
        return self._core.log_end

    @property
    def commit_end(self) -> int:
        """Offsets below it are committed and have been delivered to ``on_commit``."""
        return self._commit_end

    @property
    def recovered(self) -> raft.DurableState:
        """What this node found on its disk at start (term, vote, log)."""
        return self._storage.recovered

    @property
    def address(self) -> str:
        """The replication address this node listens on (``host:port``)."""
        return self.transport.address

    @property
    def log_start(self) -> int:
        """The first offset still in the log (entries below are in a snapshot)."""
        return self._core.log_start

    def entry(self, offset: int) -> raft.Entry:
        """The entry at ``offset``, between :attr:`log_start` and :attr:`log_end`."""
        return self._core.entry(offset)

    def epoch_at(self, offset: int) -> int | None:
        """The epoch of the entry at ``offset``, None if compacted into a snapshot (or beyond the log)."""
        if self._core.log_start <= offset < self._core.log_end:
            return self._core.entry(offset).epoch
        snapshot = self._core.snapshot
        if snapshot is not None and offset == snapshot.end - 1:
            return snapshot.epoch
        return None

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Take ``snapshot`` -- the state machine after every entry below ``snapshot.end``
        (committed and delivered; ``on_commit`` may call this) -- as this node's
        newest; never blocks.

        It is written durably in the background, then the log below it is
        compacted away.  A snapshot not newer than the log start is ignored.
        """
        if snapshot.end > self._core.commit_end:
            raise ValueError(f"snapshot ending at {snapshot.end} is beyond the commit end {self._core.commit_end}")
        if snapshot.end > self._core.log_start and (self._snapshot_job is None or snapshot.end > self._snapshot_job.end):
            self._snapshot_job = snapshot
            self._snapshot_wake.set()

    # ------------------------------------------------------------ API

    async def propose(self, payload: bytes) -> int:
        """Append ``payload`` to the replicated log; return its offset once committed.

        :raises NotLeaderError: this node does not lead (with the leader's id if known).
        :raises ProposalLost: leadership changed and another entry committed at the offset.

        Cancellation: only the wait ends; the entry may still commit.
        """
        return (await self._propose(payload, durable=False))[0]

    async def propose_durable(self, payload: bytes) -> tuple[int, int]:
        """Append ``payload`` to the replicated log; its ``(offset, epoch)`` once durable in
        this node's log -- replicated and committed in the background, so it *may be lost*
        if this node dies (or loses leadership) before a majority has it.

        :raises NotLeaderError: this node does not lead (with the leader's id if known).
        :raises ProposalLost: leadership changed and another entry took the offset.
        """
        return await self._propose(payload, durable=True)

    def _own_epoch_committed(self) -> bool:
        """Whether this leader has committed (and delivered) an entry of its own epoch, and so
        every entry an earlier leader committed."""
        end = self._commit_end
        return end > 0 and self.epoch_at(end - 1) == self._core.term

    async def _propose(self, payload: bytes, *, durable: bool, origin: Origin | None = None) -> tuple[int, int]:
        if self._closed:
            raise trio.ClosedResourceError("consensus node is closed")
        if origin is not None and self.admit is not None and self._core.role is Role.LEADER:
            if not self._own_epoch_committed():
                await trio.lowlevel.checkpoint()
                raise NotLeaderError(self.node_id, self.node_id)  # not a controller to check against yet: retry
            self.admit(payload, origin)  # raises ProposalRefused; no checkpoint before the proposal
        result, actions = self._core.propose(trio.current_time(), payload)
        epoch = self._core.term
        self._run(actions)
        if isinstance(result, NotLeader):
            await trio.lowlevel.checkpoint()
            raise NotLeaderError(self.node_id, result.leader_id)
        if durable:
            await self._durable.wait(result, self._core.durable_end)
        else:
            await self.wait_committed(result)
        found = self.epoch_at(result)
        if found is None and result < self._core.log_start:  # compacted before we looked
            if self._core.term != epoch or self._core.role is not Role.LEADER:
                raise CommitUncertain(f"offset {result} was committed and compacted while leadership changed")
        elif found != epoch:  # another leader's entry took the offset (or truncated ours)
            raise ProposalLost(result, epoch, -1 if found is None else found)
        return result, epoch

    async def submit(self, payload: bytes, *, timeout: float = 10.0, origin: Origin | None = None) -> int:
        """Commit ``payload`` through the leader, wherever it is; its offset, once committed here.

        On the leader this is :meth:`propose`; on a follower the payload is
        forwarded to the leader (see :meth:`RaftTransport.forward`) and the
        call returns once this node has the offset committed too (so it has
        been delivered to ``on_commit`` here).  While there is no leader, or
        leadership moves, it tries again until ``timeout`` seconds passed.
        With ``origin`` (a client's request) the leader first checks the payload
        with its :attr:`admit` (see the module docstring).

        :raises NotLeaderError: no leader could take the payload in time (``leader_id`` None).
        :raises ProposalRefused: the leader refused the payload (nothing was proposed).
        :raises CommitUncertain: a leader took the payload but its commit was
            not seen here in time; it may or may not commit.

        Cancellation: only the wait ends; the payload may still commit.
        """
        return (await self._submit(payload, timeout, durable=False, origin=origin))[0]

    async def submit_durable(self, payload: bytes, *, timeout: float = 10.0,
                             origin: Origin | None = None) -> tuple[int, int]:
        """Like :meth:`submit`, but return ``(offset, epoch)`` once the leader has the entry
        durable (:meth:`propose_durable`) and this node's log holds it, not committed.

        On a follower this needs the leader to answer forwards early
        (:attr:`answer_forwards_when_durable`); a leader that answers after the
        commit only makes it slower.

        :raises NotLeaderError: no leader could take the payload in time.
        :raises ProposalRefused: the leader refused the payload (nothing was proposed).
        :raises CommitUncertain: a leader took the payload but it did not reach
            this node's log in time (or another entry took its offset here).
        """
        return await self._submit(payload, timeout, durable=True, origin=origin)

    async def _submit(self, payload: bytes, timeout: float, *, durable: bool,
                      origin: Origin | None) -> tuple[int, int]:
        deadline = trio.current_time() + timeout
        while True:
            leader = self._core.leader_id
            try:
                with trio.move_on_at(deadline):
                    if leader == self.node_id:
                        return await self._propose(payload, durable=durable, origin=origin)
                    if leader is not None:
                        answer = await self.transport.forward(
                            leader, payload, max(deadline - trio.current_time(), 0.001),
                            principal=origin.principal if origin is not None else "",
                            client_host=origin.host if origin is not None else "")
                        if answer.error:
                            raise ProposalRefused(answer.error, answer.error_message)
                        if answer.offset >= 0 and not durable:
                            await self.wait_committed(answer.offset)
                            committed = self.epoch_at(answer.offset)  # None: compacted (the leader saw it commit)
                            if committed is not None and committed != answer.term:  # a new leader's entry took the offset: ours is gone
                                raise ProposalLost(answer.offset, answer.term, committed)
                            return answer.offset, answer.term
                        if answer.offset >= 0:
                            await self._logged.wait(answer.offset, self._core.log_end)
                            if self.epoch_at(answer.offset) != answer.term:
                                raise CommitUncertain(f"offset {answer.offset} of leader {leader} was replaced here")
                            return answer.offset, answer.term
                if leader is not None and trio.current_time() >= deadline:
                    what = "the payload did not reach this node's log" if durable else "no commit of the payload seen"
                    raise CommitUncertain(f"{what} within {timeout:g} s (leader {leader})")
            except (NotLeaderError, ProposalLost):
                pass  # never committed: safe to try again
            except ForwardFailed as exc:
                if exc.sent:
                    raise CommitUncertain(str(exc)) from exc
            if trio.current_time() >= deadline:
                raise NotLeaderError(self.node_id, None)
            await trio.sleep(RETRY_SECONDS)

    def _wake(self) -> None:
        self._durable.wake(self._core.durable_end)
        self._logged.wake(self._core.log_end)

    async def _answer_forward(self, request: ForwardRequest) -> ForwardAnswer:
        """A follower's forwarded payload: its offset and epoch once committed here (or, with
        :attr:`answer_forwards_when_durable`, durable here); offset -1 and the leader this node
        knows of when it was not, with an error code when :attr:`admit` refused it."""
        origin = Origin(request.principal, request.client_host) if request.principal else None
        try:
            offset, epoch = await self._propose(request.payload, durable=self.answer_forwards_when_durable,
                                                origin=origin)
            return ForwardAnswer(offset, self.node_id, epoch)
        except ProposalRefused as exc:
            return ForwardAnswer(-1, self.node_id, 0, exc.code, exc.message)
        except NotLeaderError as exc:
            return ForwardAnswer(-1, exc.leader_id if exc.leader_id is not None else -1, 0)
        except ProposalLost:
            return ForwardAnswer(-1, -1, 0)
        except CommitUncertain as exc:
            # No answer says "may have committed": hanging up unanswered does, the
            # follower then reports the outcome as uncertain (ForwardFailed, sent=True).
            raise trio.BrokenResourceError(str(exc)) from exc

    async def describe_quorum(self) -> QuorumInfo:
        """The metadata quorum as its leader sees it now: this node's view if it leads, else
        its leader's, asked over the replication port (waiting at most the transport's
        request timeout).

        :raises QuorumUnavailable: no leader is known, the node asked no longer leads
            (NOT_LEADER_OR_FOLLOWER), or it did not answer in time (REQUEST_TIMED_OUT).

        Cancellation: safe; nothing changes.
        """
        leader = self._core.leader_id
        if leader == self.node_id:
            answer = self._answer_quorum(QuorumRequest(self._core.term, self.node_id, self.node_id, 0))
            await trio.lowlevel.checkpoint()
        elif leader is None:
            await trio.lowlevel.checkpoint()
            raise QuorumUnavailable(ErrorCode.NOT_LEADER_OR_FOLLOWER,
                                    f"node {self.node_id} knows no controller now (an election is under way)")
        else:
            try:
                answer = await self.transport.describe_quorum(leader, self.transport.request_timeout)
            except ForwardFailed as exc:
                raise QuorumUnavailable(ErrorCode.REQUEST_TIMED_OUT, f"controller {leader} did not answer: {exc}") from exc
        if answer.error:
            raise QuorumUnavailable(answer.error, f"node {answer.src} no longer leads the metadata quorum")
        return QuorumInfo(answer.src, answer.term, answer.high_watermark, answer.voters)

    def _answer_quorum(self, request: QuorumRequest) -> QuorumResponse:
        """The quorum as this node sees it if it leads (times on the wall clock), else
        NOT_LEADER_OR_FOLLOWER naming the leader it knows of."""
        now, wall = trio.current_time(), self._wall_clock()
        view = self._core.quorum(now)
        if isinstance(view, NotLeader):
            leader = -1 if view.leader_id is None else view.leader_id
            return QuorumResponse(self._core.term, self.node_id, request.src, request.request_id,
                                  ErrorCode.NOT_LEADER_OR_FOLLOWER, leader, -1, ())

        def wall_ms(at: float | None) -> int:
            return -1 if at is None else int((wall - (now - at)) * 1000)

        voters = tuple(QuorumReplica(v.node_id, -1 if v.end is None else v.end, wall_ms(v.last_fetch),
                                     wall_ms(v.last_caught_up)) for v in view.voters)
        return QuorumResponse(view.epoch, self.node_id, request.src, request.request_id, 0, self.node_id,
                              view.high_watermark, voters)

    async def wait_committed(self, offset: int) -> None:
        """Return once ``offset`` is committed (and delivered to ``on_commit``).

        Cancellation: safe; nothing changes but that the caller stops waiting.
        """
        await self._committed.wait(offset, self._commit_end)

    async def committed(self, start: int = 0) -> AsyncIterator[CommittedEntry]:
        """Every committed command from offset ``start`` on, in order, forever.

        Control entries are skipped, and so are entries compacted into a
        snapshot before the iteration reached them.  Cancellation: ends the iteration.
        """
        offset = start
        while True:
            await self.wait_committed(offset)
            offset = max(offset, self._core.log_start)
            while offset < self._commit_end:
                entry = self._core.entry(offset)
                if not entry.control:
                    yield CommittedEntry(offset, entry.epoch, entry.payload)
                offset += 1

    # ------------------------------------------------------------ events into the core

    def _receive(self, message: Message) -> None:
        now = trio.current_time()
        if isinstance(message, _REPLICATION_MESSAGES):
            self.last_heard[message.src] = now
        if not self._closed:
            self._run(self._core.receive(now, message))
            if isinstance(message, AppendRequest) and message.src == self._core.leader_id \
                    and message.term == self._core.term:
                if self._commit_end >= message.leader_commit:
                    self.behind_since = None
                    self.caught_up_once = True
                elif self.behind_since is None:
                    self.behind_since = now
            self._wake()

    def _log_durable(self, end: int, last_epoch: int) -> None:
        if not self._closed:
            self._run(self._core.log_durable(trio.current_time(), end, last_epoch))
            self._wake()

    # ------------------------------------------------------------ carrying out actions

    def _run(self, actions: list[raft.Action]) -> None:
        self._actions.extend(actions)
        if self._draining or self._rewriting is not None:
            return  # the drain running up the stack, or the rewrite task, will get to them
        self._draining = True
        try:
            while self._actions and self._rewriting is None and not self._closed:
                self._execute(self._actions.popleft())
        finally:
            self._draining = False
        if self._core.next_deadline() < self._timer_at:
            self._timer_wake.set()

    def _execute(self, action: raft.Action) -> None:
        if isinstance(action, raft.Send):
            self.transport.send(action.message)
        elif isinstance(action, raft.AppendLog):
            self._storage.append(action.offset, action.entries)
        elif isinstance(action, raft.PersistHardState):
            self._hard_states.append((action.term, action.voted_for))
            self._hard_wake.set()
        elif isinstance(action, (raft.TruncateLog, raft.InstallSnapshot)):
            self._rewriting = action
            self._rewrite_wake.set()
        elif isinstance(action, raft.CommitAdvanced):
            self._advance_commit(action.commit_end)
        elif isinstance(action, raft.RoleChanged):
            self._announce_commit = True
            if action.role is Role.LEADER:
                log.info("node %d became controller (epoch %d)", self.node_id, action.term)
                # a leader has every committed entry: level with itself, whatever comes next
                self.caught_up_once, self.behind_since = True, None
                # A follower only hears the controller: the others get a fresh
                # start on the liveness table; the old controller keeps its
                # last-heard time, so its death is noticed from when it went quiet.
                now = trio.current_time()
                for peer in self.last_heard:
                    if peer != self._followed:
                        self.last_heard[peer] = max(self.last_heard[peer], now)
            elif action.role is Role.FOLLOWER and action.leader_id is not None:
                self._followed = action.leader_id
                log.info("node %d: follower of %d (epoch %d)", self.node_id, action.leader_id, action.term)
            else:
                log.debug("node %d: %s in epoch %d", self.node_id, action.role.value, action.term)

    def _advance_commit(self, commit_end: int) -> None:
        start = self._commit_end
        if commit_end <= start or start < self._core.log_start:
            return  # nothing new, or an InstallSnapshot further down the queue covers it
        if self._on_commit is not None:
            for offset in range(start, commit_end):
                entry = self._core.entry(offset)
                if not entry.control:
                    self._on_commit(CommittedEntry(offset, entry.epoch, entry.payload))
        self._commit_end = commit_end
        if self._announce_commit:
            self._announce_commit = False
            log.info("node %d: committed offset %d", self.node_id, commit_end - 1)
        else:
            log.debug("node %d: committed offset %d", self.node_id, commit_end - 1)
        self._committed.wake(commit_end)

    # ------------------------------------------------------------ tasks

    async def _run_timer(self) -> None:
        while True:
            self._timer_wake = trio.Event()
            self._timer_at = self._core.next_deadline()
            with trio.move_on_at(self._timer_at):
                await self._timer_wake.wait()
            now = trio.current_time()
            if now >= self._core.next_deadline():
                self._run(self._core.tick(now))

    async def _write_hard_states(self) -> None:
        while True:
            while not self._hard_states:
                self._hard_wake = trio.Event()
                await self._hard_wake.wait()
            term, voted_for = self._hard_states[-1]  # the newest supersedes the queued ones
            self._hard_states.clear()
            await self._storage.write_hard_state(term, voted_for)
            self._run(self._core.hard_state_durable(trio.current_time(), term, voted_for))

    async def _run_rewrites(self) -> None:
        """Carry out a TruncateLog or InstallSnapshot durably, then the actions queued behind it."""
        while True:
            while self._rewriting is None:
                self._rewrite_wake = trio.Event()
                await self._rewrite_wake.wait()
            action = self._rewriting
            if isinstance(action, raft.TruncateLog):
                await self._storage.truncate(action.offset)
                log.info("node %d: truncated the log at offset %d (divergent suffix)", self.node_id, action.offset)
            else:
                snapshot = action.snapshot
                await self._storage.install_snapshot(snapshot, action.discard_log)
                # the state machine jumps to the snapshot, which may be older than what the
                # leader has committed since: not level with the leader until it says so
                self.caught_up_once, self.behind_since = False, trio.current_time()
                self._deliver_snapshot(snapshot)
                log.info("node %d: installed snapshot at %d from leader %s%s", self.node_id, snapshot.end - 1,
                         self._core.leader_id, " (log discarded)" if action.discard_log else "")
            self._rewriting = None
            self._run([])

    def _deliver_snapshot(self, snapshot: Snapshot) -> None:
        """Reset the state machine to ``snapshot``: the commit end is its end."""
        if self._on_commit is not None:
            self._on_commit(snapshot)
        self._commit_end = max(self._commit_end, snapshot.end)
        self._committed.wake(self._commit_end)

    async def _run_snapshots(self) -> None:
        """Write the snapshots handed to :meth:`save_snapshot`, then compact the log below them."""
        while True:
            while self._snapshot_job is None:
                self._snapshot_wake = trio.Event()
                await self._snapshot_wake.wait()
            snapshot, self._snapshot_job = self._snapshot_job, None
            if snapshot.end <= self._core.log_start or not await self._storage.save_snapshot(snapshot):
                continue  # an installed snapshot overtook it
            self._core.compact(snapshot)  # (ignored if an install overtook it meanwhile)
            await self._storage.compact(snapshot.end)
            log.info("node %d: snapshot taken at offset %d (%d bytes)", self.node_id, snapshot.end - 1, len(snapshot.data))

    async def _serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.transport.run)
            nursery.start_soon(self._write_hard_states)
            nursery.start_soon(self._run_rewrites)
            nursery.start_soon(self._run_snapshots)
            nursery.start_soon(self._run_timer)
            task_status.started()


@asynccontextmanager
async def open_raft_node(
    node_id: int,
    voters: Mapping[int, str],
    data_dir: str,
    *,
    rng: random.Random,
    backend: StorageBackend | str | None = None,
    listener: trio.abc.Listener[trio.abc.Stream] | None = None,
    network: Network = TCP,
    election_timeout: float = ELECTION_TIMEOUT,
    heartbeat_interval: float = 0.1,
    on_commit: Callable[[CommittedEntry | Snapshot], None] | None = None,
    commit_profile: str = DEFAULT_PROFILE,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    send_queue: int = DEFAULT_SEND_QUEUE,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    wall_clock: Callable[[], float] = time.time,
) -> AsyncIterator[ConsensusNode]:
    """Run voter ``node_id`` of the cluster ``voters`` (id -> replication ``host:port``).

    Recovers term, vote and log from ``data_dir``, listens on ``listener`` (or
    binds ``voters[node_id]`` on ``network``, real TCP by default), and serves until the block exits.  A backend
    given by name (None: the default) is created and closed here; an
    instance is the caller's.  ``rng`` draws election timeouts and backoff
    jitter.  ``request_timeout``: seconds a Raft message may go unacknowledged before its
    connection is redialled (see :mod:`.transport`); a message queued for a peer for longer
    than ``election_timeout`` is stale and dropped.  ``on_commit`` is called synchronously, in offset order, for every
    committed command, and with a :class:`~.messages.Snapshot` where the state
    machine must reset to one (the newest on disk, first of all; see the
    module docstring).  ``wall_clock`` (seconds since the epoch) dates what
    :meth:`ConsensusNode.describe_quorum` reports.

    Raises :class:`~chronik.cluster.storage.HardStateCorrupt` if the term and
    vote cannot be trusted, :class:`~chronik.cluster.storage.SnapshotCorrupt`
    if no valid snapshot joins the log.  Exit: tasks are cancelled, then the WAL is
    flushed and closed (shielded).  Errors from the body or the node's tasks
    come out as an exception group.
    """
    config = RaftConfig(
        node_id, tuple(sorted(voters)), election_timeout=election_timeout, heartbeat_interval=heartbeat_interval,
        max_snapshot_chunk=max(1, min(SNAPSHOT_CHUNK_BYTES, max_frame_bytes // 2)),  # a chunk always fits a frame
    )
    owned = not isinstance(backend, StorageBackend)
    disk = create_backend(backend) if not isinstance(backend, StorageBackend) else backend
    try:
        if listener is None:
            listener = await network.listen(voters[node_id])
        async with open_group_committer(disk, data_dir, commit_profile) as committer:
            storage = await RaftStorage.open(committer, data_dir)
            recovered = storage.recovered
            log.info(
                "node %d: recovered epoch %d, vote %s, %d log entries",
                node_id, recovered.term, recovered.voted_for, len(recovered.entries),
            )
            if recovered.snapshot is not None:
                log.info("node %d: snapshot loaded at offset %d", node_id, recovered.snapshot.end - 1)
            core = RaftNode(config, recovered, rng.random, trio.current_time())
            peers = {peer: address for peer, address in voters.items() if peer != node_id}
            node = ConsensusNode(
                core, storage, listener, peers, rng, on_commit, max_frame_bytes=max_frame_bytes, send_queue=send_queue,
                request_timeout=request_timeout, max_age=election_timeout, network=network, wall_clock=wall_clock,
            )
            try:
                async with trio.open_nursery() as nursery:
                    if recovered.snapshot is not None:
                        node._deliver_snapshot(recovered.snapshot)  # before any entry, before serving
                    await nursery.start(node._serve)
                    log.info("node %d: replication listening on %s", node_id, node.address)
                    try:
                        yield node
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                node._closed = True
                with trio.CancelScope(shield=True):
                    await storage.aclose()
    finally:
        with trio.CancelScope(shield=True):
            if listener is not None:
                await listener.aclose()
            if owned:
                await disk.aclose()
