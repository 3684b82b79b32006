"""A deterministic, seeded simulation of a cluster of :class:`RaftNode` voters.

Everything is driven by one ``random.Random(seed)`` and a virtual clock, so a
seed replays exactly.  The world:

* a network that delays (so reorders), drops, duplicates and partitions;
* a disk per node: hard-state writes and log syncs become durable after a
  delay; a crash keeps only what was durable (like ``FaultyBackend.crash``);
  truncation is durable at once and clips syncs in flight;
* crashes and restarts (a restarted node is rebuilt from its disk only);
* clients proposing random payloads to random nodes (following leader hints).

:meth:`Simulation.step` processes one event and then checks the safety
properties; a violation raises :class:`SafetyViolation`.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from chronik.cluster import raft
from chronik.cluster.messages import Entry, Message, VoteRequest, VoteResponse
from chronik.cluster.raft import DurableState, NotLeader, RaftConfig, RaftNode, Role

ELECTION_TIMEOUT = 0.3
HEARTBEAT = 0.05


class SafetyViolation(AssertionError):
    pass


@dataclass
class _Sync:
    target: int  # log end this sync makes durable; clipped by truncation


@dataclass
class Disk:
    """One node's storage; survives crashes of the node."""

    hard: tuple[int, int | None] = (0, None)  # durable
    log: list[Entry] = field(default_factory=list)  # written, durable below durable_len
    durable_len: int = 0
    syncs: list[_Sync] = field(default_factory=list)
    hard_busy_until: float = 0.0

    def crash(self) -> None:
        del self.log[self.durable_len :]
        self.syncs.clear()
        self.hard_busy_until = 0.0

    def recovered(self) -> DurableState:
        return DurableState(term=self.hard[0], voted_for=self.hard[1], entries=tuple(self.log[: self.durable_len]))


@dataclass(frozen=True)
class Faults:
    drop: float = 0.0
    duplicate: float = 0.0
    max_delay: float = 0.01
    max_disk_delay: float = 0.005
    crash_on_persist: float = 0.0  # chance that a node crashes soon after it starts a hard-state write


class Simulation:
    def __init__(self, seed: int, nodes: int, *, pre_vote: bool = True) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
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
        )

    def _start(self, node_id: int) -> None:
        disk = self.disks[node_id]
        self.incarnation[node_id] += 1
        self.applied[node_id] = 0
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
        disk.syncs.remove(sync)
        if sync.target > disk.durable_len:
            disk.durable_len = sync.target
            self._execute(node_id, node.log_durable(self.now, disk.durable_len, disk.log[disk.durable_len - 1].epoch))

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
                if action.offset != len(disk.log):
                    raise self.fail(f"node {node_id} appends at {action.offset}, log ends at {len(disk.log)}")
                disk.log.extend(action.entries)
                sync = _Sync(len(disk.log))
                disk.syncs.append(sync)
                self._schedule(self.now + self._disk_delay(), "sync_done", (node_id, incarnation, sync))
            elif isinstance(action, raft.TruncateLog):
                self._check_truncate(node_id, action.offset)
                del disk.log[action.offset :]
                disk.durable_len = min(disk.durable_len, action.offset)
                for sync in disk.syncs:
                    sync.target = min(sync.target, action.offset)
            elif isinstance(action, raft.CommitAdvanced):
                self._check_commit(node_id, node, action.commit_end)
            elif isinstance(action, raft.RoleChanged):
                if action.role is Role.LEADER:
                    self._check_new_leader(node_id, node, action.term)
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
        # Leader Completeness: a new leader holds every entry committed so far
        if node.log_end < len(self.committed):
            raise self.fail(f"leader {node_id} of term {term} lacks committed offsets from {node.log_end}")
        for offset, entry in enumerate(self.committed):
            if node.entry(offset) != entry:
                raise self.fail(f"leader {node_id} of term {term} has a different entry at committed {offset}")

    def _check_commit(self, node_id: int, node: RaftNode, commit_end: int) -> None:
        start = self.applied[node_id]
        if commit_end <= start:
            raise self.fail(f"node {node_id} commit end went from {start} to {commit_end}")
        for offset in range(start, commit_end):
            entry = node.entry(offset)
            if offset < len(self.committed):
                if self.committed[offset] != entry:
                    raise self.fail(
                        f"node {node_id} applies {entry} at {offset}, committed was {self.committed[offset]}"
                    )
            else:
                # first report of this offset: it must be durable on a majority
                copies = sum(
                    1 for d in self.disks.values() if offset < d.durable_len and d.log[offset] == entry
                )
                if copies < self.majority:
                    raise self.fail(f"offset {offset} committed with {copies} durable copies")
                self.committed.append(entry)
        self.applied[node_id] = commit_end

    def _check_truncate(self, node_id: int, offset: int) -> None:
        log = self.disks[node_id].log
        for at in range(offset, min(len(log), len(self.committed))):
            if log[at] == self.committed[at]:
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
