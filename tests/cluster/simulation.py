"""A deterministic, seeded simulation of a cluster of :class:`RaftNode` voters.

Everything is driven by one ``random.Random(seed)`` and a virtual clock, so a
seed replays exactly.  The world:

* a network that delays (so reorders), drops, duplicates and partitions;
* a disk per node: hard-state writes and log syncs become durable after a
  delay; a crash keeps only what was durable (like ``FaultyBackend.crash``);
  truncation is durable at once and clips syncs in flight;
* crashes and restarts (a restarted node is rebuilt from its disk only);
* clients proposing random payloads to random nodes (following leader hints);
* a state machine per node (the list of applied entries) that snapshots
  itself every ``snapshot_every`` offsets: the snapshot becomes durable after
  a disk delay, then the core and the disk forget the log below it, so
  lagging and restarted nodes catch up through InstallSnapshot (sent in
  chunks of ``snapshot_chunk`` bytes over the same lossy network).

:meth:`Simulation.step` processes one event and then checks the safety
properties; a violation raises :class:`SafetyViolation`.
"""

from __future__ import annotations

import ast
import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from chronik.cluster import raft
from chronik.cluster.messages import Entry, Message, Snapshot, VoteRequest, VoteResponse
from chronik.cluster.raft import DurableState, NotLeader, RaftConfig, RaftNode, Role

ELECTION_TIMEOUT = 0.3
HEARTBEAT = 0.05


class SafetyViolation(AssertionError):
    pass


@dataclass
class _Sync:
    target: int  # log end this sync makes durable; clipped by truncation


def encode_state(entries: list[Entry]) -> bytes:
    """A state machine's snapshot: every entry it applied (so checks can compare it with the committed log)."""
    return repr([(e.epoch, e.payload, e.control) for e in entries]).encode()


def decode_state(data: bytes) -> list[Entry]:
    return [Entry(*fields) for fields in ast.literal_eval(data.decode())]


@dataclass
class Disk:
    """One node's storage; survives crashes of the node.  Offsets are absolute:
    ``log[0]`` is at ``base``, the end of the durable snapshot (0 without one)."""

    hard: tuple[int, int | None] = (0, None)  # durable
    snapshot: Snapshot | None = None  # durable
    base: int = 0
    log: list[Entry] = field(default_factory=list)  # written, durable below durable_end
    durable_end: int = 0
    syncs: list[_Sync] = field(default_factory=list)
    hard_busy_until: float = 0.0

    @property
    def log_end(self) -> int:
        return self.base + len(self.log)

    def crash(self) -> None:
        del self.log[self.durable_end - self.base :]
        self.syncs.clear()
        self.hard_busy_until = 0.0

    def recovered(self) -> DurableState:
        snapshot = self.snapshot
        return DurableState(
            term=self.hard[0], voted_for=self.hard[1], log_start=self.base,
            start_epoch=snapshot.epoch if snapshot is not None else 0,
            entries=tuple(self.log[: self.durable_end - self.base]), snapshot=snapshot,
        )

    def install(self, snapshot: Snapshot, discard_log: bool) -> None:
        """The snapshot is durable; the log below it goes (all of it with ``discard_log``)."""
        self.snapshot = snapshot
        if discard_log:
            self.log.clear()
            self.durable_end = snapshot.end
        else:
            del self.log[: snapshot.end - self.base]
            self.durable_end = max(self.durable_end, snapshot.end)
        self.base = snapshot.end
        if discard_log:
            for sync in self.syncs:  # they were for the discarded entries
                sync.target = min(sync.target, self.base)


@dataclass(frozen=True)
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    max_delay: float = 0.01
    max_disk_delay: float = 0.005
    crash_on_persist: float = 0.0  # chance that a node crashes soon after it starts a hard-state write


class Simulation:
    def __init__(
        self, seed: int, nodes: int, *, pre_vote: bool = True, snapshot_every: int | None = None,
        snapshot_chunk: int | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        # None: chosen by the seed (0 never snapshots)
        self.snapshot_every = snapshot_every if snapshot_every is not None else self.rng.choice((0, 5, 17, 60))
        self.snapshot_chunk = snapshot_chunk if snapshot_chunk is not None else self.rng.choice((64, 700, 1 << 20))
        self.now = 0.0
        self.ids = tuple(range(1, nodes + 1))
        self.majority = nodes // 2 + 1
        self.pre_vote = pre_vote
        self.faults = Faults()
        self.groups: dict[int, int] = {i: 0 for i in self.ids}  # partition: nodes talk within a group
        self.disks = {i: Disk() for i in self.ids}
        self.nodes: dict[int, RaftNode | None] = {}
        self.incarnation = {i: 0 for i in self.ids}
        self.tick_at: dict[int, float] = {}
        self.queue: list[tuple[float, int, str, Any]] = []
        self.seq = 0
        self.steps = 0
        self.trace: deque[tuple[float, str, Any]] = deque(maxlen=40)
        # what the checks remember
        self.leaders: dict[int, int] = {}  # term -> leader
        self.committed: list[Entry] = []  # the one committed sequence, offset = index
        self.applied: dict[int, int] = {i: 0 for i in self.ids}  # per incarnation: commit end applied
        self.machines: dict[int, list[Entry]] = {}  # per node: its state machine (every entry applied)
        self.last_snapshot: dict[int, int] = {}  # per node: where it last took a snapshot
        self.installs = 0
        self.snapshots_taken = 0
        self.accepted: list[tuple[float, bytes]] = []  # proposals a leader took: (time, payload)
        for node_id in self.ids:
            self._start(node_id)

    # ------------------------------------------------------------ scheduling

    def _schedule(self, at: float, kind: str, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, payload))

    def _config(self, node_id: int) -> RaftConfig:
        return RaftConfig(
            node_id,
            self.ids,
            election_timeout=ELECTION_TIMEOUT,
            heartbeat_interval=HEARTBEAT,
            max_entries_per_append=16,
            pre_vote=self.pre_vote,
            max_snapshot_chunk=self.snapshot_chunk,
        )

    def _start(self, node_id: int) -> None:
        disk = self.disks[node_id]
        self.incarnation[node_id] += 1
        snapshot = disk.snapshot
        self.applied[node_id] = self.last_snapshot[node_id] = 0 if snapshot is None else snapshot.end
        self.machines[node_id] = [] if snapshot is None else decode_state(snapshot.data)
        self.nodes[node_id] = RaftNode(self._config(node_id), disk.recovered(), self.rng.random, self.now)
        self._reschedule_tick(node_id)

    def _reschedule_tick(self, node_id: int) -> None:
        node = self.nodes[node_id]
        if node is None:
            return
        deadline = node.next_deadline()
        if self.tick_at.get(node_id) != deadline:
            self.tick_at[node_id] = deadline
            self._schedule(max(deadline, self.now), "tick", (node_id, self.incarnation[node_id], deadline))

    def step(self) -> None:
        at, _, kind, payload = heapq.heappop(self.queue)
        self.now = max(self.now, at)
        self.steps += 1
        self.trace.append((self.now, kind, payload))
        getattr(self, "_on_" + kind)(payload)

    def run_until(self, until: float) -> None:
        while self.queue and self.queue[0][0] <= until:
            self.step()
        self.now = max(self.now, until)

    def fail(self, why: str) -> SafetyViolation:
        lines = [f"{at:9.4f} {kind} {payload!r}" for at, kind, payload in self.trace]
        return SafetyViolation(f"seed {self.seed}, t={self.now:.4f}, step {self.steps}: {why}\n" + "\n".join(lines))

    # ------------------------------------------------------------ events

    def _alive(self, node_id: int, incarnation: int) -> RaftNode | None:
        node = self.nodes[node_id]
        return node if node is not None and self.incarnation[node_id] == incarnation else None

    def _on_tick(self, payload: tuple[int, int, float]) -> None:
        node_id, incarnation, deadline = payload
        node = self._alive(node_id, incarnation)
        if node is None or self.tick_at.get(node_id) != deadline:
            return
        self.tick_at.pop(node_id)
        self._execute(node_id, node.tick(self.now))

    def _on_deliver(self, message: Message) -> None:
        node = self.nodes[message.dst]
        if node is not None:
            self._execute(message.dst, node.receive(self.now, message))

    def _on_hard_durable(self, payload: tuple[int, int, int, int | None]) -> None:
        node_id, incarnation, term, voted_for = payload
        node = self._alive(node_id, incarnation)
        if node is None:
            return  # crashed before the write finished: it never happened
        disk = self.disks[node_id]
        old_term, old_vote = disk.hard
        if term < old_term:
            raise self.fail(f"node {node_id} persisted term went back {old_term} -> {term}")
        if term == old_term and old_vote is not None and voted_for != old_vote:
            raise self.fail(f"node {node_id} changed its durable vote in term {term}: {old_vote} -> {voted_for}")
        disk.hard = (term, voted_for)
        self._execute(node_id, node.hard_state_durable(self.now, term, voted_for))

    def _on_sync_done(self, payload: tuple[int, int, _Sync]) -> None:
        node_id, incarnation, sync = payload
        node = self._alive(node_id, incarnation)
        if node is None:
            return
        disk = self.disks[node_id]
        disk.syncs = [s for s in disk.syncs if s is not sync]  # identity: several syncs may have one target
        if sync.target > disk.durable_end:
            disk.durable_end = sync.target
            epoch = disk.log[disk.durable_end - 1 - disk.base].epoch
            self._execute(node_id, node.log_durable(self.now, disk.durable_end, epoch))

    def _on_snapshot_durable(self, payload: tuple[int, int, Snapshot]) -> None:
        """A snapshot a node took is durable: the disk, then the core, forget the log below it."""
        node_id, incarnation, snapshot = payload
        node = self._alive(node_id, incarnation)
        disk = self.disks[node_id]
        if node is None or snapshot.end <= disk.base:
            return  # crashed before the write finished, or an installed snapshot overtook it
        self._check_snapshot(node_id, snapshot)
        disk.install(snapshot, discard_log=False)
        node.compact(snapshot)
        self.snapshots_taken += 1
        self._reschedule_tick(node_id)

    def _on_propose(self, payload: tuple[int, bytes]) -> None:
        node_id, data = payload
        for _ in range(2):  # one redirect to the leader the node knows of
            node = self.nodes[node_id]
            if node is None:
                return
            result, actions = node.propose(self.now, data)
            self._execute(node_id, actions)
            if not isinstance(result, NotLeader):
                self.accepted.append((self.now, data))
                return
            if result.leader_id is None:
                return
            node_id = result.leader_id

    def _on_crash(self, payload: tuple[int | None, float]) -> None:
        node_id, down_for = payload
        if node_id is None:  # the leader, if there is one
            leaders = [i for i in self.ids if (n := self.nodes[i]) is not None and n.role is Role.LEADER]
            if not leaders:
                return
            node_id = leaders[-1]
        if self.nodes[node_id] is not None:
            self._schedule(self.now + down_for, "restart", node_id)
            self.nodes[node_id] = None
            self.tick_at.pop(node_id, None)
            self.disks[node_id].crash()

    def _on_restart(self, node_id: int) -> None:
        if self.nodes[node_id] is None:
            self._start(node_id)

    def _on_partition(self, groups: dict[int, int]) -> None:
        self.groups = groups

    def _on_faults(self, faults: Faults) -> None:
        self.faults = faults

    # ------------------------------------------------------------ actions

    def _execute(self, node_id: int, actions: list[raft.Action]) -> None:
        node = self.nodes[node_id]
        assert node is not None
        disk = self.disks[node_id]
        incarnation = self.incarnation[node_id]
        for action in actions:
            if isinstance(action, raft.Send):
                self._check_send(node_id, action.message)
                self._send(action.message)
            elif isinstance(action, raft.PersistHardState):
                done = max(self.now + self._disk_delay(), disk.hard_busy_until)  # writes complete in order
                disk.hard_busy_until = done
                self._schedule(done, "hard_durable", (node_id, incarnation, action.term, action.voted_for))
                if self.rng.random() < self.faults.crash_on_persist:
                    down_for = self.rng.uniform(0.001, 0.05)
                    self._schedule(self.rng.uniform(self.now, done), "crash", (node_id, down_for))
            elif isinstance(action, raft.AppendLog):
                if action.offset != disk.log_end:
                    raise self.fail(f"node {node_id} appends at {action.offset}, log ends at {disk.log_end}")
                disk.log.extend(action.entries)
                sync = _Sync(disk.log_end)
                disk.syncs.append(sync)
                self._schedule(self.now + self._disk_delay(), "sync_done", (node_id, incarnation, sync))
            elif isinstance(action, raft.TruncateLog):
                self._check_truncate(node_id, action.offset)
                del disk.log[action.offset - disk.base :]
                disk.durable_end = min(disk.durable_end, action.offset)
                for sync in disk.syncs:
                    sync.target = min(sync.target, action.offset)
            elif isinstance(action, raft.CommitAdvanced):
                self._check_commit(node_id, node, action.commit_end)
                self._maybe_snapshot(node_id, node)
            elif isinstance(action, raft.InstallSnapshot):  # durable at once, like a truncation
                snapshot = action.snapshot
                self._check_snapshot(node_id, snapshot)
                if action.discard_log:
                    self._check_truncate(node_id, snapshot.end)
                disk.install(snapshot, action.discard_log)
                self.machines[node_id] = decode_state(snapshot.data)
                self.applied[node_id] = self.last_snapshot[node_id] = snapshot.end
                self.installs += 1
            elif isinstance(action, raft.RoleChanged):
                if action.role is Role.LEADER:
                    self._check_new_leader(node_id, node, action.term)
        if node.role is Role.LEADER:
            self._check_quorum_view(node_id, node)
        self._reschedule_tick(node_id)

    def _disk_delay(self) -> float:
        return self.rng.uniform(0.0002, self.faults.max_disk_delay)

    def _send(self, message: Message) -> None:
        if self.groups[message.src] != self.groups[message.dst]:
            return
        if self.rng.random() < self.faults.drop:
            return
        copies = 2 if self.rng.random() < self.faults.duplicate else 1
        for _ in range(copies):
            self._schedule(self.now + self.rng.uniform(0.0001, self.faults.max_delay), "deliver", message)

    # ------------------------------------------------------------ safety checks

    def _check_send(self, node_id: int, message: Message) -> None:
        """The ordering contract: what a message says about term and vote is durable first."""
        durable_term, durable_vote = self.disks[node_id].hard
        if isinstance(message, VoteRequest | VoteResponse) and message.pre_vote:
            return  # a pre-vote commits nobody to anything
        if message.term > durable_term:
            raise self.fail(f"node {node_id} sends {message} before term {message.term} is durable")
        if message.term < durable_term:
            return  # whatever it said about its term was durable, or is moot now
        if isinstance(message, VoteResponse) and message.granted and durable_vote != message.dst:
            raise self.fail(f"node {node_id} grants its vote before it is durable: {message}")
        if isinstance(message, VoteRequest) and durable_vote != node_id:
            raise self.fail(f"node {node_id} campaigns before its own vote is durable: {message}")

    def _check_new_leader(self, node_id: int, node: RaftNode, term: int) -> None:
        if self.disks[node_id].hard != (term, node_id):
            raise self.fail(f"node {node_id} leads term {term} before its own vote is durable")
        other = self.leaders.setdefault(term, node_id)
        if other != node_id:
            raise self.fail(f"two leaders in term {term}: {other} and {node_id}")
        # Leader Completeness: a new leader holds every entry committed so far (in its snapshot or log)
        if node.log_end < len(self.committed):
            raise self.fail(f"leader {node_id} of term {term} lacks committed offsets from {node.log_end}")
        if node.log_start:
            if node.snapshot is None or node.snapshot.end < node.log_start:
                raise self.fail(f"leader {node_id} of term {term}: log starts at {node.log_start} without a snapshot")
            self._check_snapshot(node_id, node.snapshot)
        for offset, entry in enumerate(self.committed):
            if offset >= node.log_start and node.entry(offset) != entry:
                raise self.fail(f"leader {node_id} of term {term} has a different entry at committed {offset}")

    def _check_quorum_view(self, node_id: int, node: RaftNode) -> None:
        """What a leader reports of the quorum (DescribeQuorum) is true: its epoch and commit
        end, its own durable end, and -- while no node is in a later term (whose leader may
        have cut a follower's log back) -- no follower's end beyond what that follower holds
        durably, nor beyond the leader's log; times in the past, caught up no later than fetched."""
        view = node.quorum(self.now)
        if not isinstance(view, raft.QuorumView):
            raise self.fail(f"leader {node_id} cannot describe its quorum: {view}")
        if (view.leader_id, view.epoch, view.high_watermark) != (node_id, node.term, node.commit_end):
            raise self.fail(f"leader {node_id} describes its quorum as {view}, term {node.term}, commit end {node.commit_end}")
        if [v.node_id for v in view.voters] != list(self.ids) or view.voters[node_id - 1].end != node.durable_end:
            raise self.fail(f"leader {node_id} lists the voters as {view.voters} (durable end {node.durable_end})")
        newest = max([d.hard[0] for d in self.disks.values()] + [n.term for n in self.nodes.values() if n is not None])
        for voter in view.voters:
            if voter.node_id == node_id or voter.end is None:
                continue
            assert voter.last_fetch is not None and voter.last_fetch <= self.now
            if voter.last_caught_up is not None and voter.last_caught_up > voter.last_fetch:
                raise self.fail(f"leader {node_id} says {voter} caught up after it last fetched")
            if newest == node.term and not voter.end <= min(self.disks[voter.node_id].durable_end, node.log_end):
                raise self.fail(f"leader {node_id} reports {voter}, its durable end is "
                                f"{self.disks[voter.node_id].durable_end}, the leader's log ends at {node.log_end}")

    def _maybe_snapshot(self, node_id: int, node: RaftNode) -> None:
        """Every ``snapshot_every`` applied offsets the state machine snapshots itself."""
        end = self.applied[node_id]
        if not self.snapshot_every or end - self.last_snapshot[node_id] < self.snapshot_every:
            return
        self.last_snapshot[node_id] = end
        snapshot = Snapshot(end, node.entry(end - 1).epoch, encode_state(self.machines[node_id]))
        self._schedule(self.now + self._disk_delay(), "snapshot_durable", (node_id, self.incarnation[node_id], snapshot))

    def _check_snapshot(self, node_id: int, snapshot: Snapshot) -> None:
        """State Machine Safety for snapshots: one holds exactly the committed prefix."""
        if snapshot.end > len(self.committed):
            raise self.fail(f"node {node_id} has a snapshot to {snapshot.end}, only {len(self.committed)} committed")
        if decode_state(snapshot.data) != self.committed[: snapshot.end]:
            raise self.fail(f"node {node_id} has a snapshot to {snapshot.end} that is not the committed prefix")
        if snapshot.end and snapshot.epoch != self.committed[snapshot.end - 1].epoch:
            raise self.fail(f"node {node_id} has a snapshot to {snapshot.end} with the wrong epoch {snapshot.epoch}")

    def _check_commit(self, node_id: int, node: RaftNode, commit_end: int) -> None:
        start = self.applied[node_id]
        if start < node.log_start:
            return  # an InstallSnapshot later in the list covers these offsets (ordering contract, item 5)
        if commit_end <= start:
            raise self.fail(f"node {node_id} commit end went from {start} to {commit_end}")
        machine = self.machines[node_id]
        if len(machine) != start:
            raise self.fail(f"node {node_id} state machine holds {len(machine)} entries, applied {start}")
        for offset in range(start, commit_end):
            entry = node.entry(offset)
            machine.append(entry)
            if offset < len(self.committed):
                if self.committed[offset] != entry:
                    raise self.fail(
                        f"node {node_id} applies {entry} at {offset}, committed was {self.committed[offset]}"
                    )
            else:
                # first report of this offset: it must be durable on a majority
                copies = sum(
                    1 for d in self.disks.values()
                    if d.base <= offset < d.durable_end and d.log[offset - d.base] == entry
                    or offset < d.base and d.snapshot is not None and decode_state(d.snapshot.data)[offset] == entry
                )
                if copies < self.majority:
                    raise self.fail(f"offset {offset} committed with {copies} durable copies")
                self.committed.append(entry)
        self.applied[node_id] = commit_end

    def _check_truncate(self, node_id: int, offset: int) -> None:
        disk = self.disks[node_id]
        for at in range(max(offset, disk.base), min(disk.log_end, len(self.committed))):
            if disk.log[at - disk.base] == self.committed[at]:
                raise self.fail(f"node {node_id} truncates committed entry at {at}")

    # ------------------------------------------------------------ scenario

    def leader(self) -> int | None:
        """The leader of the highest term that some live node leads, if a majority follows it."""
        best: tuple[int, int] | None = None
        for node_id in self.ids:
            node = self.nodes[node_id]
            if node is not None and node.role is Role.LEADER and (best is None or node.term > best[0]):
                best = (node.term, node_id)
        if best is None:
            return None
        term, leader = best
        following = sum(
            1 for n in self.nodes.values() if n is not None and n.term == term and n.leader_id == leader
        )
        return leader if following >= self.majority else None

    def committed_everywhere_since(self, since: float) -> bool:
        """Whether a proposal accepted at or after ``since`` is committed on every node."""
        fresh = {data for at, data in self.accepted if at >= since}
        lowest = min((n.commit_end if n is not None else 0) for n in self.nodes.values())
        return any(e.payload in fresh for e in self.committed[:lowest])

    def schedule_chaos(self, start: float, end: float) -> None:
        """Crashes, restarts, partitions, lossy links and proposals between ``start`` and ``end``."""
        rng = self.rng
        at = start
        while True:
            at += rng.expovariate(1 / 0.15)
            if at >= end:
                break
            choice = rng.random()
            if choice < 0.35:  # a crash, of the leader of the moment half the time
                down_for = rng.choice((rng.uniform(0.001, 0.03), rng.uniform(0.03, 1.0)))
                self._schedule(at, "crash", (rng.choice(self.ids) if choice < 0.18 else None, down_for))
            elif choice < 0.5:
                self._schedule(at, "partition", {i: rng.randrange(2) for i in self.ids})
            elif choice < 0.6:
                self._schedule(at, "partition", {i: 0 for i in self.ids})
            else:
                faults = Faults(
                    drop=rng.choice((0.0, 0.05, 0.3)),
                    duplicate=rng.choice((0.0, 0.1)),
                    max_delay=rng.choice((0.002, 0.01, 0.1)),
                    max_disk_delay=rng.choice((0.001, 0.005, 0.05, 0.2)),
                    crash_on_persist=rng.choice((0.0, 0.0, 0.1)),
                )
                self._schedule(at, "faults", faults)
        self.schedule_proposals(start, end, rate=40.0)

    def schedule_proposals(self, start: float, end: float, *, rate: float) -> None:
        at = start
        while True:
            at += self.rng.expovariate(rate)
            if at >= end:
                return
            self._schedule(at, "propose", (self.rng.choice(self.ids), b"p%d" % self.seq))

    def heal(self, at: float) -> None:
        """From ``at`` on: one partition, a clean network, every node up."""
        self._schedule(at, "partition", {i: 0 for i in self.ids})
        self._schedule(at, "faults", Faults())
        for node_id in self.ids:
            self._schedule(at, "restart", node_id)
