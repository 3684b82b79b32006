"""A deterministic, seeded simulation of the *wired* cluster: whole brokers, one process.

Where ``simulation.py`` drives the sans-I/O Raft core over model disks and a
model network, this runs the real thing: N complete brokers
(:func:`chronik.broker.open_broker` -- Raft node and transport, replicated
metadata log, partition logs, :class:`~chronik.cluster.replication.ReplicaManager`,
fencing), each on its own :class:`~chronik.storage.FaultyBackend`, talking
over the in-memory :class:`~tests.cluster.simnet.SimNetwork`, under trio's
``MockClock`` with autojump (simulated seconds cost only the CPU they use).

Determinism: everything random comes from the seed -- the actions
(``random.Random(seed)``), the network's delays, each Raft node's election
timeouts, the disks' torn writes, topic ids, and trio's own scheduling
order (trio shuffles the run queue with a module-level ``random.Random``;
it is seeded here as trio's Hypothesis support does).  No threads run: the
in-memory backends do their blocking work inline
(:func:`chronik.storage.files.run_blocking`).  So a seed replays exactly
(within one ``PYTHONHASHSEED``; the tests check the same seed gives the same
run).

The world, one random action at a time (exponential gaps of simulated time):

* produce one record with acks=all or acks=1 to the leader a random node's
  metadata names, through the real Kafka request path
  (:func:`chronik.server.kafka.handle_frame`) in a task of that node;
* create a topic (a metadata command, through whichever node: forwarded to
  the controller), replication factor 3 or all nodes, ``min.insync.replicas``
  1 or 2 (and ``retention.ms`` -1: a record retention deleted is not "lost";
  see ``topic_configs``);
* crash a node: its disk keeps only what was synced (``FaultyBackend.crash``,
  sometimes tearing the newest unsynced write; every disk takes a few
  milliseconds per sync, so there is often something unsynced), its connections die, its
  tasks are cancelled (requests in flight are never acknowledged); restart
  it later on the surviving disk;
* partition the network (one node cut off, or a minority from a majority),
  heal it; break a random connection.

Alongside, through the same request path, with randomness of their own (so a
seed's chaos is the same with or without them): a few transactional producers
(``sim_transactions.py``: FindCoordinator, InitProducerId, AddPartitionsToTxn,
transactional Produce, EndTxn commit or abort, retrying and re-initialising as a
client does) and a read_committed reader (Fetch isolation_level 1, one
partition at a time, dropping aborted transactions' records as a consumer
does).  The brokers' wall clock (``open_broker(clock=...)``: transaction
timeouts, marker timestamps) is simulated time, and a coordinator reaches
other leaders' Kafka listeners (WriteTxnMarkers) over the simulated network.
Every transaction's decision is noted when its PrepareCommit/PrepareAbort
becomes committed metadata (a metadata listener).

Checked on every step (after each action and every ``CHECK_SECONDS``), a
failure raising :class:`SafetyViolation`:

* at most one controller per epoch (sampled, and from every "became
  controller" log line, so a leadership between samples is seen too);
* committed metadata entries never lost or reordered, every node the same:
  each node's Raft entries below its commit end match, offset by offset,
  the entries any node ever had committed there (restarted nodes replay
  from the start and must find the same); and each node applies metadata
  commands in increasing offsets, the same command at each offset;
* high watermarks never go back (per partition log, per node incarnation);
* replicas agree below the high watermark: every batch below a log's high
  watermark is identical to the batch any other replica had at that offset
  below its own;
* no acknowledged acks=all record is lost or moved: once any replica's high
  watermark passes its offset, the batch at that offset is the acknowledged one;
* a read_committed read returns no record of a transaction that is not
  decided to commit at that moment (no aborted or uncommitted reads);
* each transaction's decision is taken once, under its producer's id and epoch.

After the chaos phase the producers stop (what they left open, the
coordinator aborts at the transaction timeout) and everything is healed and
restarted; the cluster must then converge within ``CONVERGE_SECONDS`` (a
controller, every broker unfenced, every partition led with a full ISR and
every replica at the leader's end, no transaction open or deciding and every
last stable offset at the high watermark), and every acks=all record is read
back at its offset from its partition's leader.  Every partition is then read
read_committed from its leader and the transactions' history checked
(``tests/txn/history.py``, as the process-level checker does: no aborted
reads, lost committed writes, partial transactions, duplicates, records out of
the order written, non-monotonic offsets or uncommitted reads), and each
transaction against its decision: all of its records visible if it was decided
to commit, none otherwise, and its producer never told the opposite.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import trio
import trio.testing

from chronik.broker import Broker, open_broker, register_self
from chronik.cluster.raft import Role
from chronik.config import BrokerConfig, HostPort, Peer
from chronik.log.partition import PartitionLog
from chronik.metadata import CreateTopic
from chronik.metadata.commands import PutTransaction
from chronik.metadata.placement import replica_assignment
from chronik.protocol import (
    FrameDecoder, Record, decode_response, encode_batch, encode_frame, encode_request, parse_batch_header,
    request_schema,
)
from chronik.protocol.build import build
from chronik.protocol.headers import response_header_version
from chronik.server.connection import PendingResponse, serve_pipelined
from chronik.server.kafka import handle_frame
from chronik.storage import FaultyBackend

from ..txn.history import History, check, txn_of
from .sim_transactions import FETCH, REQUEST_TIMEOUT, VERSIONS, SimTxn, TxnProducer, fetch_body, read_committed
from .simnet import SimNetwork

DATA_DIR = "/data"
PRODUCE_VERSION = 8  # not flexible: a 4-byte response header
CHECK_SECONDS = 0.05
CONVERGE_SECONDS = 60.0
TIMESTAMP = 1_700_000_000_000
READ_GAP = 0.2
"""Mean simulated seconds between two read_committed reads during the chaos."""
FINAL_READ_SECONDS = 10.0
PREPARING = {"PrepareCommit": "commit", "PrepareAbort": "abort"}
UNSETTLED = ("Ongoing", *PREPARING)


class SafetyViolation(AssertionError):
    pass


@dataclass
class Acked:
    topic: str
    partition: int
    offset: int
    value: bytes
    acks: int
    node: int  # the leader that acknowledged it
    at: float  # when
    confirmed: bool = False


@dataclass
class Incarnation:
    """One run of one node, from start to crash."""

    node_id: int
    number: int
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    broker: Broker | None = None
    nursery: trio.Nursery | None = None
    raft_checked: int = 0  # Raft offsets below it were compared with the committed record
    last_applied: int = -1  # the last metadata offset applied (listener)
    logs: dict[tuple[str, int], tuple[PartitionLog, int, int]] = field(default_factory=dict)  # log, last HW, verified end


class _ControllerLog(logging.Handler):
    """Sees every "node N became controller (epoch E)" line as it happens.

    Installed on the node logger with its level lowered to INFO and
    propagation off; records at or above the level the logger had before go
    on to its parent, so what reaches the test's log capture does not change.
    """

    def __init__(self, record: Callable[[int, int], None], passed_on: int) -> None:
        super().__init__(logging.INFO)
        self._record = record
        self._passed_on = passed_on

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "node %d became controller (epoch %d)":
            node_id, term = record.args  # type: ignore[misc]
            self._record(term, node_id)
        if record.levelno >= self._passed_on:
            logging.getLogger("chronik.cluster").handle(record)


class ClusterSimulation:
    def __init__(self, seed: int, nodes: int, *, chaos_seconds: float = 20.0, action_gap: float = 0.1,
                 snapshots: bool = False, producers: int = 3) -> None:
        self.seed = seed
        self.nodes = list(range(1, nodes + 1))
        self.chaos_seconds = chaos_seconds
        self.action_gap = action_gap
        self.rng = random.Random(seed)
        self.net = SimNetwork(random.Random(f"net-{seed}"))
        # each disk takes a while to sync, so a crash can find unsynced writes to drop
        self.backends = {i: FaultyBackend(sync_delay=self.rng.uniform(0.001, 0.02)) for i in self.nodes}
        self.config_overrides: dict[str, Any] = {}
        if snapshots:  # metadata snapshots every few entries, and the Raft log compacted below them
            self.config_overrides["metadata_snapshot_every"] = random.Random(f"snapshots-{seed}").choice([10, 30])
        peers = tuple(Peer(i, HostPort(f"n{i}", 9092), HostPort(f"n{i}", 9291)) for i in self.nodes)
        self.configs = {
            i: BrokerConfig(
                data_dir=Path(DATA_DIR), node_id=i, peers=peers, wal_backend="faulty", listen=HostPort(f"n{i}", 9092),
                replication_listen=HostPort(f"n{i}", 9291), auto_create_topics_enable=False,
                replica_lag_time_max_ms=3000, broker_session_timeout_ms=1000,
                **self.config_overrides,
            )
            for i in self.nodes
        }
        self.live: dict[int, Incarnation] = {}
        self.incarnations = {i: 0 for i in self.nodes}
        self.trace: list[str] = []
        self.violations: list[str] = []
        self.controllers: dict[int, int] = {}  # epoch -> controller
        self.committed: dict[int, tuple[int, bytes, bool]] = {}  # Raft offset -> (epoch, payload, control)
        self.applied: dict[int, Any] = {}  # metadata offset -> command
        self.batches: dict[tuple[str, int], dict[int, bytes]] = {}  # partition -> base offset -> batch below some HW
        self.acked: list[Acked] = []
        self.produced = 0
        self.outcomes: dict[tuple[int, int], int] = {}  # (acks, error code) -> produce answers
        self.topics_created = 0
        self.unsynced_dropped = 0  # writes the crashes undid
        self.steps = 0
        self.topic_configs = {"retention.ms": "-1"}
        """Configs of every topic created; by default nothing is deleted by retention (the
        records' timestamps are fixed; the brokers' clock moves on from them in simulated time)."""
        self._nursery: trio.Nursery | None = None
        # transactions: the producers' own randomness, so the chaos above replays as without them
        self.history = History()  # every producer's transactions, and what the reader saw
        self.producers = [TxnProducer(self, f"x{n}", random.Random(f"txn-{seed}-{n}"), self.history)
                          for n in range(producers)]
        self.txns: dict[str, SimTxn] = {}  # name -> transaction
        self.txn_open: dict[str, SimTxn] = {}  # transactional id -> its producer's transaction now
        self.txn_trace: list[str] = []
        self.read_from: dict[tuple[str, int], int] = {}  # the read_committed reader's position per partition
        self.final_read: dict[tuple[str, int], list[tuple[int, bytes]]] = {}

    # -- running -----------------------------------------------------------------

    def run(self) -> None:
        """Run the whole simulation (its own ``trio.run`` under an autojumping MockClock)."""
        import trio._core._run as trio_run

        trio_run._r.seed(self.seed)  # trio's scheduling order (see the module docstring)
        node_log = logging.getLogger("chronik.cluster.node")
        level, propagate = node_log.level, node_log.propagate
        handler = _ControllerLog(self._saw_controller, node_log.getEffectiveLevel())
        node_log.addHandler(handler)
        node_log.setLevel(logging.INFO)
        node_log.propagate = False
        try:
            trio.run(self._main, clock=trio.testing.MockClock(autojump_threshold=0))
        except BaseExceptionGroup as group:
            violations, _ = group.split(SafetyViolation)
            while isinstance(violations, BaseExceptionGroup):
                violations = violations.exceptions[0]
            if violations is not None:
                raise violations from None
            raise
        finally:
            node_log.removeHandler(handler)
            node_log.setLevel(level)
            node_log.propagate = propagate

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for i in self.nodes:
                await self._start(i)
            nursery.start_soon(self._watch)
            await self._wait_for(lambda: self._registered() == len(self.nodes), 30.0, "all brokers registered")
            for _ in range(2):
                self._create_topic()
            chaos_end = trio.current_time() + self.chaos_seconds
            async with trio.open_nursery() as clients:
                for producer in self.producers:
                    clients.start_soon(producer.run)
                if self.producers:
                    clients.start_soon(self._read_committed_along)
                while trio.current_time() < chaos_end:
                    await trio.sleep(self.rng.expovariate(1 / self.action_gap))
                    await self._act()
                    self.check()
                clients.cancel_scope.cancel()  # what they left open, the coordinator aborts at its timeout
            await self._heal_all()
            await self._wait_for(lambda: self._converged() and self._transactions_settled(), CONVERGE_SECONDS,
                                 "convergence after healing")
            self._final_check()
            if self.producers:
                await self._final_transactions_check()
            nursery.cancel_scope.cancel()

    async def _start(self, i: int) -> None:
        self.incarnations[i] += 1
        incarnation = Incarnation(i, self.incarnations[i])
        assert self._nursery is not None
        await self._nursery.start(self._run_node, incarnation)
        self.live[i] = incarnation

    async def _run_node(self, incarnation: Incarnation, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        i = incarnation.node_id
        rng = random.Random(f"raft-{self.seed}-{i}-{incarnation.number}")
        try:
            with incarnation.scope:
                async with open_broker(self.configs[i], backend=self.backends[i], network=self.net.node(i), rng=rng,
                                       clock=lambda: TIMESTAMP / 1000 + trio.current_time()) as broker:
                    incarnation.broker = broker
                    broker.metadata.add_listener(
                        lambda offset, command, _result, rejected: self._applied(incarnation, offset, command, rejected))
                    kafka_listener = await self.net.node(i).listen(str(self.configs[i].listen))
                    async with kafka_listener, trio.open_nursery() as nursery:
                        incarnation.nursery = nursery
                        nursery.start_soon(register_self, broker)
                        nursery.start_soon(self._serve_kafka, broker, kafka_listener, nursery)
                        task_status.started()
                        await trio.sleep_forever()
        finally:
            incarnation.done.set()

    @staticmethod
    async def _serve_kafka(broker: Broker, listener: trio.abc.Listener[trio.abc.Stream], nursery: trio.Nursery) -> None:
        """The node's Kafka listener on the simulated network: what other nodes dial (WriteTxnMarkers)."""

        async def serve(stream: trio.abc.Stream) -> None:
            peer = getattr(stream, "peer", "?")
            try:
                await serve_pipelined(stream, FrameDecoder(broker.config.socket_request_max_bytes),
                                      lambda frame: handle_frame(broker, frame, peer))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                await stream.aclose()

        while True:
            nursery.start_soon(serve, await listener.accept())

    async def _crash(self, i: int) -> None:
        if self.rng.random() < 0.5:  # crash in the middle of a sync, when there is one within 0.2 s
            for _ in range(200):
                if any(state.unsynced for state in self.backends[i]._files.values()):
                    break
                await trio.sleep(0.001)
        incarnation = self.live.pop(i)
        # What the disk holds at the instant of the crash; the dying node's
        # shielded clean-up then writes to the old backend, which is thrown away.
        disk = self.backends[i]
        self.unsynced_dropped += sum(len(state.unsynced) for state in disk._files.values())
        self.backends[i] = disk.crash(tear=self.rng.random() < 0.3, rng=random.Random(self.rng.random()))
        self.backends[i].sync_delay = disk.sync_delay
        self.net.kill(i)
        incarnation.scope.cancel()
        await incarnation.done.wait()

    async def _restart(self, i: int) -> None:
        self.net.revive(i)
        await self._start(i)

    async def _heal_all(self) -> None:
        self._log("heal all")
        self.net.heal()
        for i in self.nodes:
            if i not in self.live:
                await self._restart(i)

    async def _wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = trio.current_time() + timeout
        while not predicate():
            if trio.current_time() >= deadline:
                raise self.fail(f"no {what} within {timeout:g} simulated seconds; {self._state()}")
            await trio.sleep(CHECK_SECONDS)
            self.check()

    async def _watch(self) -> None:
        while True:
            await trio.sleep(CHECK_SECONDS)
            self.check()

    # -- actions -----------------------------------------------------------------

    async def _act(self) -> None:
        self.steps += 1
        rng = self.rng
        down = [i for i in self.nodes if i not in self.live]
        choices: list[tuple[float, str]] = [(12, "produce"), (2, "drop")]
        if self.topics_created < 5:
            choices.append((0.5, "create"))
        if len(down) < (len(self.nodes) - 1) // 2 + (1 if rng.random() < 0.2 else 0):
            choices.append((1, "crash"))
        if down:
            choices.append((2, "restart"))
        choices.append((1 if not self.net.cut else 0.2, "partition"))
        if self.net.cut:
            choices.append((1.5, "heal"))
        action = rng.choices([c[1] for c in choices], [c[0] for c in choices])[0]
        if action == "produce":
            for _ in range(rng.randint(1, 4)):
                self._produce()
        elif action == "drop":
            self.net.drop_connection()
        elif action == "create":
            self._create_topic()
        elif action == "crash":
            i = rng.choice(sorted(self.live))
            self._log(f"crash node {i}")
            await self._crash(i)
        elif action == "restart":
            i = rng.choice(down)
            self._log(f"restart node {i}")
            await self._restart(i)
        elif action == "partition":
            shuffled = self.nodes[:]
            rng.shuffle(shuffled)
            cut = rng.randint(1, (len(shuffled) - 1) // 2)
            groups = [set(shuffled[:cut]), set(shuffled[cut:])]
            self._log(f"partition {sorted(groups[0])} | {sorted(groups[1])}")
            self.net.partition(groups)
        elif action == "heal":
            self._log("heal")
            self.net.heal()

    def _some_live(self) -> Incarnation | None:
        live = [incarnation for _, incarnation in sorted(self.live.items()) if incarnation.broker is not None]
        return self.rng.choice(live) if live else None

    # -- clients (transactions) ------------------------------------------------------

    async def call(self, node_id: int, api_key: int, api_version: int, body: dict[str, Any],
                   timeout: float = REQUEST_TIMEOUT) -> Any | None:
        """A client's request to a node, through :func:`handle_frame` in a task of that node (as
        :meth:`_produce` sends its own); its decoded answer, or None when there is none: the node
        is down, crashed before answering (its tasks are cancelled), or took ``timeout``."""
        target = self.live.get(node_id)
        if target is None or target.broker is None or target.nursery is None:
            await trio.sleep(0.01)  # connection refused
            return None
        broker = target.broker
        frame = request_frame(api_key, api_version, body)
        answers: list[bytes] = []
        done = trio.Event()

        async def serve() -> None:
            try:
                result: Any = await handle_frame(broker, frame, "sim")
                while isinstance(result, PendingResponse):
                    result = await result.finish()
                if result is not None:
                    answers.append(b"".join(bytes(b) for b in result))
            finally:
                done.set()

        target.nursery.start_soon(serve)
        with trio.move_on_after(timeout):
            await done.wait()
        if not answers:
            return None
        return decode_response(api_key, api_version, answers[0], 8 + response_header_version(api_key, api_version))

    def some_broker(self, rng: random.Random) -> Broker | None:
        live = [incarnation.broker for _, incarnation in sorted(self.live.items()) if incarnation.broker is not None]
        return rng.choice(live) if live else None

    def began(self, txn: SimTxn) -> None:
        self.txns[txn.name] = txn
        self.txn_open[txn.transactional_id] = txn

    def txn_log(self, what: str) -> None:
        self.txn_trace.append(f"{trio.current_time():9.3f} {what}")

    def _decided(self, command: PutTransaction) -> None:
        """A transaction's decision is committed metadata: note it on the transaction its producer runs."""
        txn = self.txn_open.get(command.transactional_id)
        decision = PREPARING[command.state]
        what = f"{command.state} of {command.transactional_id} (producer {command.producer_id} epoch {command.producer_epoch})"
        if txn is None:
            self.violations.append(f"{what} committed, but its producer began no transaction")
        elif txn.decision is not None:
            self.violations.append(f"{what} committed for {txn.name}, which was decided ({txn.decision}) already")
        elif command.producer_id != txn.producer_id or command.producer_epoch not in (txn.producer_epoch,
                                                                                      txn.producer_epoch + 1):
            self.violations.append(f"{what} committed for {txn.name} of producer {txn.producer_id} epoch "
                                   f"{txn.producer_epoch}")
        else:
            txn.decision, txn.decided_at = decision, trio.current_time()
            self.txn_log(f"{txn.name} decided: {decision}")

    async def _read_committed_along(self) -> None:
        """A read_committed reader during the chaos: one partition at a time, from where it was."""
        rng = random.Random(f"reader-{self.seed}")
        while True:
            await trio.sleep(rng.expovariate(1 / READ_GAP))
            broker = self.some_broker(rng)
            if broker is None:
                continue
            every = [(name, index, partition.leader) for name, topic in sorted(broker.image.topics.items())
                     for index, partition in enumerate(topic.partitions)]
            if every:
                await self._read_committed(*rng.choice(every))

    async def _read_committed(self, topic: str, partition: int, node_id: int) -> None:
        """Read ``topic``-``partition`` read_committed from ``node_id`` on from the reader's position, and
        check each transactional record read is of a transaction decided to commit by now."""
        key = (topic, partition)
        offset = self.read_from.get(key, 0)
        answer = await self.call(node_id, FETCH, VERSIONS[FETCH], fetch_body(topic, partition, offset))
        if answer is None or answer.responses[0].partitions[0].error_code != 0:
            return
        data = answer.responses[0].partitions[0]
        kept, self.read_from[key] = read_committed(data.records, data.aborted_transactions or (), offset)
        for record in kept:
            if not record.transactional:
                continue
            self.history.observed.append((key, record.offset, record.value))
            txn = self.txns.get(txn_of(record.value))
            if txn is None or txn.decision != "commit":
                state = "unknown" if txn is None else txn.decision or "undecided"
                self.violations.append(
                    f"a read_committed fetch from node {node_id} returned {record.value!r} ({topic}-{partition} offset "
                    f"{record.offset}; high watermark {data.high_watermark}, last stable offset "
                    f"{data.last_stable_offset}) of a transaction {state} at that moment")

    def _create_topic(self) -> None:
        via = self._some_live()
        if via is None or via.broker is None or via.nursery is None:
            return
        self.topics_created += 1
        broker = via.broker
        name = f"t{self.topics_created}"
        replication = self.rng.choice([3, len(self.nodes)])
        min_insync = self.rng.choice(["1", "2"])
        partitions = self.rng.randint(1, 3)
        topic_id = uuid.UUID(int=self.rng.getrandbits(128)).hex
        self._log(f"create {name} via node {via.node_id}: {partitions} partition(s), RF {replication}, min ISR {min_insync}")

        async def create() -> None:
            brokers = broker.image.live_brokers()
            if len(brokers) < replication:
                return
            replicas = replica_assignment(broker.image, partitions, replication, this_node=broker.node_id)
            try:
                await broker.submit(CreateTopic(name=name, topic_id=topic_id, replicas=replicas,
                                                configs={"min.insync.replicas": min_insync, **self.topic_configs}))
            except Exception as exc:  # CommandRejected, NotLeaderError, CommitUncertain: the topic may or may not exist
                self._log(f"create {name}: {type(exc).__name__}: {exc}")

        via.nursery.start_soon(create)

    def _produce(self) -> None:
        via = self._some_live()
        if via is None or via.broker is None:
            return
        topics = sorted(via.broker.image.topics.items())
        if not topics:
            return
        name, topic = self.rng.choice(topics)
        partition = self.rng.randrange(len(topic.partitions))
        leader = topic.partitions[partition].leader  # the client's (maybe stale) metadata
        acks = self.rng.choice([-1, -1, 1])
        self.produced += 1
        value = f"seed{self.seed}-record{self.produced}".encode()
        target = self.live.get(leader)
        if target is None or target.broker is None or target.nursery is None:
            return
        broker = target.broker

        async def produce() -> None:
            frame = produce_frame(name, partition, value, acks)
            result: Any = await handle_frame(broker, frame, "sim")
            while isinstance(result, PendingResponse):
                result = await result.finish()
            if result is None:
                return
            payload = b"".join(bytes(b) for b in result)
            response = decode_response(0, PRODUCE_VERSION, payload, 8)
            answer = response.responses[0].partition_responses[0]
            self.outcomes[(acks, answer.error_code)] = self.outcomes.get((acks, answer.error_code), 0) + 1
            if answer.error_code == 0:
                self.acked.append(Acked(name, partition, answer.base_offset, value, acks, target.node_id,
                                        trio.current_time()))

        target.nursery.start_soon(produce)

    # -- checks ------------------------------------------------------------------

    def fail(self, message: str) -> SafetyViolation:
        recent = "\n  ".join(self.trace[-15:])
        transactions = "\n  ".join(self.txn_trace[-15:])
        return SafetyViolation(f"seed {self.seed}, {len(self.nodes)} nodes, t={trio.current_time():.3f}: {message}\n"
                               f"last actions:\n  {recent}"
                               + (f"\nlast transaction events:\n  {transactions}" if transactions else ""))

    def _log(self, what: str) -> None:
        self.trace.append(f"{trio.current_time():9.3f} {what}")

    def _saw_controller(self, term: int, node_id: int) -> None:
        known = self.controllers.setdefault(term, node_id)
        if known != node_id:
            self.violations.append(f"two controllers in epoch {term}: nodes {known} and {node_id}")

    def _applied(self, incarnation: Incarnation, offset: int, command: Any, rejected: Exception | None) -> None:
        if command is None:  # the image was loaded from a snapshot ending at offset
            incarnation.last_applied = offset
            return
        if offset <= incarnation.last_applied:
            self.violations.append(f"node {incarnation.node_id} applied metadata offset {offset} after {incarnation.last_applied}")
        incarnation.last_applied = offset
        known = self.applied.setdefault(offset, command)
        if known is command and rejected is None and isinstance(command, PutTransaction) and command.state in PREPARING:
            self._decided(command)  # (a rejected one -- a stale or repeated write -- decides nothing)
        if known != command:
            self.violations.append(f"node {incarnation.node_id} applied {command} at metadata offset {offset}; "
                                   f"another node applied {known}")

    def check(self) -> None:
        for incarnation in list(self.live.values()):
            if incarnation.broker is not None:
                self._check_node(incarnation)
        self._check_acked()
        if self.violations:
            raise self.fail("; ".join(self.violations))

    def _check_node(self, incarnation: Incarnation) -> None:
        broker = incarnation.broker
        assert broker is not None
        consensus = broker.consensus
        assert consensus is not None
        i = incarnation.node_id
        if consensus.role is Role.LEADER:
            self._saw_controller(consensus.term, i)
        start = max(incarnation.raft_checked, getattr(consensus, "log_start", 0))  # below: compacted into a snapshot
        for offset in range(start, consensus.commit_end):
            try:
                entry = consensus.entry(offset)
            except LookupError:
                continue  # compacted into a snapshot
            got = (entry.epoch, entry.payload, entry.control)
            known = self.committed.setdefault(offset, got)
            if known != got:
                self.violations.append(f"node {i}: committed Raft entry at offset {offset} is (epoch {got[0]}) "
                                       f"{got[1][:60]!r}, but (epoch {known[0]}) {known[1][:60]!r} was committed there")
        incarnation.raft_checked = max(incarnation.raft_checked, consensus.commit_end)
        for partition_log in list(broker.logs):
            key = (partition_log.topic, partition_log.partition)
            if partition_log.closed:
                continue
            hw = partition_log.high_watermark
            seen = incarnation.logs.get(key)
            if seen is None or seen[0] is not partition_log:
                seen = (partition_log, hw, partition_log.log_start_offset)
            if hw < seen[1]:
                self.violations.append(f"node {i}: high watermark of {key[0]}-{key[1]} went back from {seen[1]} to {hw}")
            verified = max(seen[2], partition_log.log_start_offset)  # retention may have deleted the prefix
            if verified < hw:
                known = self.batches.setdefault(key, {})
                for batch in partition_log.read(verified, 1 << 30, end=hw):
                    header = parse_batch_header(batch)
                    data = bytes(batch)
                    other = known.setdefault(header.base_offset, data)
                    if other != data:
                        self.violations.append(
                            f"node {i}: {key[0]}-{key[1]} below its high watermark {hw} has a batch at offset "
                            f"{header.base_offset} that differs from another replica's (below its high watermark)")
                    verified = header.base_offset + header.last_offset_delta + 1
            incarnation.logs[key] = (partition_log, max(hw, seen[1]), max(verified, seen[2]))

    def _check_acked(self) -> None:
        for acked in self.acked:
            if acked.acks != -1 or acked.confirmed:
                continue
            key = (acked.topic, acked.partition)
            batch = self.batches.get(key, {}).get(acked.offset)
            what = (f"acks=all record {acked.value!r} acknowledged by node {acked.node} at t={acked.at:.3f}, "
                    f"{key[0]}-{key[1]} offset {acked.offset},")
            if batch is not None:
                if acked.value not in batch:
                    self.violations.append(f"{what} is not there: another batch took its offset")
                acked.confirmed = True
                continue
            for incarnation in self.live.values():
                seen = incarnation.logs.get(key)
                if seen is not None and seen[2] > acked.offset:
                    self.violations.append(f"{what} is missing below node {incarnation.node_id}'s high watermark")

    # -- convergence ---------------------------------------------------------------

    def _registered(self) -> int:
        for incarnation in self.live.values():
            if incarnation.broker is not None and incarnation.broker.consensus.role is Role.LEADER:  # type: ignore[union-attr]
                return sum(1 for b in incarnation.broker.image.brokers.values() if not b.fenced)
        return 0

    def _leader(self) -> Incarnation | None:
        for incarnation in self.live.values():
            if incarnation.broker is not None and incarnation.broker.consensus.role is Role.LEADER:  # type: ignore[union-attr]
                return incarnation
        return None

    def _converged(self) -> bool:
        controller = self._leader()
        if controller is None or len(self.live) != len(self.nodes) or self._registered() != len(self.nodes):
            return False
        brokers = {i: incarnation.broker for i, incarnation in self.live.items()}
        image = controller.broker.image  # type: ignore[union-attr]
        for broker in brokers.values():
            assert broker is not None and broker.consensus is not None
            if broker.consensus.leader_id != controller.node_id or broker.image.applied_offset != image.applied_offset:
                return False
        for name, topic in image.topics.items():
            for index, partition in enumerate(topic.partitions):
                if partition.leader < 0 or sorted(partition.isr) != sorted(partition.replicas):
                    return False
                leader_log = brokers[partition.leader].logs.get(name, index)  # type: ignore[union-attr]
                if leader_log is None or leader_log.high_watermark != leader_log.log_end_offset:
                    return False
                for replica in partition.replicas:
                    replica_log = brokers[replica].logs.get(name, index)  # type: ignore[union-attr]
                    if replica_log is None or replica_log.log_end_offset != leader_log.log_end_offset \
                            or replica_log.high_watermark != leader_log.log_end_offset:
                        return False
        return True

    def _state(self) -> str:
        parts = [f"live {sorted(self.live)}, cut {sorted(tuple(sorted(c)) for c in self.net.cut)}"]
        controller = self._leader()
        parts.append(f"controller {controller.node_id if controller else None}")
        for i, incarnation in sorted(self.live.items()):
            broker = incarnation.broker
            if broker is None or broker.consensus is None:
                continue
            consensus = broker.consensus
            parts.append(f"node {i}: {consensus.role.value} epoch {consensus.term} leader {consensus.leader_id} "
                         f"commit {consensus.commit_end} applied {broker.image.applied_offset}")
            for name, topic in sorted(broker.image.topics.items()):
                for index, partition in enumerate(topic.partitions):
                    partition_log = broker.logs.get(name, index)
                    ends = "-" if partition_log is None else f"end {partition_log.log_end_offset} hw {partition_log.high_watermark}"
                    if partition_log is not None and partition_log.last_stable_offset != partition_log.high_watermark:
                        ends += (f" last stable offset {partition_log.last_stable_offset} (open transactions: producer "
                                 f"-> first offset {dict(sorted(partition_log.producers.ongoing.items()))})")
                    parts.append(f"  {name}-{index} leader {partition.leader} epoch {partition.leader_epoch} "
                                 f"isr {partition.isr} replicas {partition.replicas}: {ends}")
            fenced = sorted(b for b, found in broker.image.brokers.items() if found.fenced)
            parts.append(f"  fenced {fenced}")
        if controller is not None and controller.broker is not None:
            for transactional_id, txn in sorted(controller.broker.image.transactions.items()):
                parts.append(f"transaction {transactional_id}: producer {txn.producer_id} epoch {txn.producer_epoch} "
                             f"{txn.state} {txn.partitions}")
        return "\n".join(parts)

    def _final_check(self) -> None:
        self.check()
        controller = self._leader()
        assert controller is not None and controller.broker is not None and controller.broker.consensus is not None
        if self.committed and max(self.committed) >= controller.broker.consensus.commit_end:
            raise self.fail(f"Raft offset {max(self.committed)} was committed once, but the controller's commit end "
                            f"is {controller.broker.consensus.commit_end} after healing")
        image = controller.broker.image
        for acked in self.acked:
            if acked.acks != -1:
                continue
            topic = image.topics[acked.topic]
            leader = self.live[topic.partitions[acked.partition].leader].broker
            assert leader is not None
            partition_log = leader.logs.get(acked.topic, acked.partition)
            assert partition_log is not None
            batches = partition_log.read(acked.offset, 1)
            if not batches or parse_batch_header(batches[0]).base_offset != acked.offset \
                    or acked.value not in bytes(batches[0]):
                raise self.fail(f"acks=all record {acked.value!r} ({acked.topic}-{acked.partition} offset "
                                f"{acked.offset}) is not at its offset on the leader after healing")

    def _transactions_settled(self) -> bool:
        """No transaction is open or deciding, and every partition's last stable offset is its high watermark."""
        controller = self._leader()
        if controller is None or controller.broker is None:
            return False
        image = controller.broker.image
        if any(txn.state in UNSETTLED for txn in image.transactions.values()):
            return False
        for name, topic in image.topics.items():
            for index, partition in enumerate(topic.partitions):
                leader = self.live.get(partition.leader)
                leader_log = None if leader is None or leader.broker is None else leader.broker.logs.get(name, index)
                if leader_log is None or leader_log.last_stable_offset != leader_log.high_watermark:
                    return False
        return True

    async def _final_transactions_check(self) -> None:
        """Read every partition read_committed from its leader and check the history (``tests/txn/history.py``),
        and every transaction's records against the coordinator's decision: all of a committed one's, none
        of any other's."""
        controller = self._leader()
        assert controller is not None and controller.broker is not None
        for name, topic in sorted(controller.broker.image.topics.items()):
            for index, partition in enumerate(topic.partitions):
                leader = self.live[partition.leader].broker
                assert leader is not None
                leader_log = leader.logs.get(name, index)
                assert leader_log is not None
                records = self.final_read[(name, index)] = []
                offset = leader_log.log_start_offset
                deadline = trio.current_time() + FINAL_READ_SECONDS
                while offset < leader_log.high_watermark:
                    answer = await self.call(partition.leader, FETCH, VERSIONS[FETCH], fetch_body(name, index, offset))
                    data = None if answer is None else answer.responses[0].partitions[0]
                    if data is None or data.error_code != 0:
                        # a client retries (a new controller answers NOT_LEADER_OR_FOLLOWER while it loads)
                        if trio.current_time() < deadline:
                            await trio.sleep(CHECK_SECONDS)
                            continue
                        raise self.fail(f"the final read_committed fetch of {name}-{index} at offset {offset} from its "
                                        f"leader {partition.leader} failed: {data and data.error_code}")
                    kept, following = read_committed(data.records, data.aborted_transactions or (), offset)
                    if following == offset:
                        raise self.fail(f"the final read_committed fetch of {name}-{index} stopped at offset {offset}, "
                                        f"below the high watermark {leader_log.high_watermark}")
                    records.extend((record.offset, record.value) for record in kept if record.transactional)
                    offset = following
        anomalies = check(self.history, self.final_read)
        if any(anomalies.values()):
            raise self.fail(f"transaction anomalies: {anomalies}")
        visible = {value for records in self.final_read.values() for _, value in records}
        for name, values in self.history.attempted.items():
            txn = self.txns[name]
            outcome = self.history.outcome[name]
            present = sum(1 for value in values if value in visible)
            wrong = None
            if (outcome == "committed") != (txn.decision == "commit") and outcome != "unknown":
                wrong = f"its producer was told {outcome}"
            elif txn.decision == "commit" and present != len(values):
                wrong = f"{present} of its {len(values)} records are visible"
            elif txn.decision != "commit" and present:
                wrong = f"{present} of its {len(values)} records are visible"
            if wrong is not None:
                raise self.fail(f"transaction {name}, decided {txn.decision or 'never'}: {wrong}")

    def transaction_counts(self) -> dict[str, int]:
        outcomes = {name: 0 for name in ("committed", "aborted", "unknown")}
        for outcome in self.history.outcome.values():
            outcomes[outcome] += 1
        outcomes["read_along"] = len(self.history.observed)
        outcomes["read_in_the_end"] = sum(len(records) for records in self.final_read.values())
        return outcomes

    def fingerprint(self) -> tuple[object, ...]:
        return (self.steps, tuple(self.trace), tuple((a.topic, a.partition, a.offset, a.value) for a in self.acked),
                tuple(sorted(self.committed.items())), tuple(sorted(self.controllers.items())), tuple(self.txn_trace),
                tuple(self.history.observed), tuple(sorted(self.final_read.items())))


def produce_frame(topic: str, partition: int, value: bytes, acks: int) -> bytes:
    batch = bytes(encode_batch([Record(0, TIMESTAMP, None, value)]))
    return request_frame(0, PRODUCE_VERSION, {
        "transactional_id": None, "acks": acks, "timeout": 3000,
        "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": batch}]}]})


def request_frame(api_key: int, api_version: int, body: dict[str, Any]) -> bytes:
    """A request as :func:`handle_frame` takes it: the frame without its size."""
    request = build(request_schema(api_key, api_version), body)
    frame = b"".join(bytes(b) for b in encode_frame(encode_request(api_key, api_version, 1, "sim", request)))
    return frame[4:]
