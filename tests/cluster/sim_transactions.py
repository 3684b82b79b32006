"""Transactional clients of the wired cluster simulation (``cluster_simulation.py``).

:class:`TxnProducer` is a transactional producer as a client library runs one,
through the real request path of whichever node it talks to (the simulation's
:meth:`~.cluster_simulation.ClusterSimulation.call`): FindCoordinator (key type
1) on any node, then InitProducerId, AddPartitionsToTxn and EndTxn on the
coordinator it names, transactional Produce batches (acks=all, its producer id
and epoch, per-partition sequences continuing across its transactions) on each
partition's leader as some node's (maybe stale) metadata names it.  Like a
client it

* looks the coordinator up again on NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE
  or a lost answer, and backs off and retries on COORDINATOR_LOAD_IN_PROGRESS
  and CONCURRENT_TRANSACTIONS;
* retries a produce with the same sequence (idempotence makes that safe) on a
  lost answer or a leader, ISR or timeout error;
* aborts a transaction whose produce fails for good, and re-initialises (a new
  epoch: sequences restart) after any transaction that did not end cleanly --
  half of the time naming its old id and epoch (KIP-360), else as a new
  producer instance, which fences whatever the old one left open;
* gives each request :data:`REQUEST_TIMEOUT` seconds and each operation
  (with its retries) :data:`OPERATION_SECONDS`.

Every transaction ``f"{transactional_id}-{k}"`` writes values
``f"{transactional_id}-{k}-{i}"`` (:func:`tests.txn.history.txn_of` maps them
back) and is recorded in a :class:`~tests.txn.history.History`: a value is
*attempted* once a produce carrying it was sent; the outcome is ``committed``
or ``aborted`` when EndTxn said so, else ``unknown``.

:func:`read_committed` is what a read_committed consumer does with a Fetch
(isolation_level 1) answer: skip control batches, drop the batches of the
aborted transactions the answer lists (from each one's first offset until its
abort marker), and drop records below the fetch offset.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from chronik.broker import Broker
from chronik.protocol import ControlRecordType, ErrorCode, Record, control_record_type, decode_records, encode_batch
from chronik.protocol import parse_batch_header, split_batches

from ..txn.history import History

TIMESTAMP = 1_700_000_000_000
TXN_TIMEOUT_MS = 3000
"""The producers' transaction.timeout.ms (simulated time): the coordinator aborts what they leave open."""
REQUEST_TIMEOUT = 15.0
OPERATION_SECONDS = 8.0
BACKOFF = 0.1
THINK_SECONDS = 0.6
"""Mean pause between two transactions of one producer."""
COMMIT_PROBABILITY = 0.75

FIND_COORDINATOR, INIT_PRODUCER_ID, ADD_PARTITIONS_TO_TXN, END_TXN, PRODUCE, FETCH = 10, 22, 24, 26, 0, 1
VERSIONS = {FIND_COORDINATOR: 3, INIT_PRODUCER_ID: 4, ADD_PARTITIONS_TO_TXN: 3, END_TXN: 3, PRODUCE: 8, FETCH: 11}

FIND_AGAIN = {ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE}
BACK_OFF = {ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, ErrorCode.CONCURRENT_TRANSACTIONS}
PRODUCE_RETRIABLE = {ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.LEADER_NOT_AVAILABLE,
                     ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.NOT_ENOUGH_REPLICAS,
                     ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND, ErrorCode.REQUEST_TIMED_OUT}


class Cluster(Protocol):
    """What the clients use of the simulation."""

    async def call(self, node_id: int, api_key: int, api_version: int, body: dict[str, Any],
                   timeout: float = REQUEST_TIMEOUT) -> Any | None:
        """Send one request to a node and return its decoded answer; None: no answer (node down,
        crashed before answering, or ``timeout``)."""
        ...

    def some_broker(self, rng: random.Random) -> Broker | None:
        """A live node, chosen with ``rng`` (its metadata may be stale)."""
        ...

    def began(self, txn: "SimTxn") -> None:
        """``txn`` is its producer's transaction from now on (sent before its first AddPartitionsToTxn)."""
        ...

    def txn_log(self, what: str) -> None: ...


@dataclass
class SimTxn:
    name: str
    transactional_id: str
    producer_id: int
    producer_epoch: int
    decision: str | None = None
    """``commit``/``abort`` once the coordinator's decision (a Prepare state) is committed metadata."""
    decided_at: float = -1.0


@dataclass
class TxnProducer:
    cluster: Cluster
    transactional_id: str
    rng: random.Random
    history: History
    producer_id: int = -1
    producer_epoch: int = -1
    coordinator: int | None = None
    sequences: dict[tuple[str, int], int] = field(default_factory=dict)
    transactions: int = 0
    clean: bool = False  # initialised, and the last transaction ended cleanly

    async def run(self) -> None:
        """Run transactions until cancelled."""
        while True:
            await trio.sleep(self.rng.expovariate(1 / THINK_SECONDS))
            if not self.clean and not await self._init():
                continue
            await self._transaction()

    # -- requests to the coordinator -------------------------------------------------

    async def _find_coordinator(self) -> int | None:
        if self.coordinator is None:
            via = self.cluster.some_broker(self.rng)
            if via is None:
                return None
            answer = await self.cluster.call(via.node_id, FIND_COORDINATOR, VERSIONS[FIND_COORDINATOR],
                                             {"key": self.transactional_id, "key_type": 1})
            if answer is not None and answer.error_code == 0:
                self.coordinator = int(answer.node_id)
        return self.coordinator

    async def _coordinator_call(self, api_key: int, body: dict[str, Any],
                                error_of: Any = lambda answer: answer.error_code) -> tuple[ErrorCode | None, Any]:
        """(error, answer) of the coordinator's final answer; (None, None): gave up retrying."""
        deadline = trio.current_time() + OPERATION_SECONDS
        while trio.current_time() < deadline:
            node = await self._find_coordinator()
            answer = None
            if node is not None:
                answer = await self.cluster.call(node, api_key, VERSIONS[api_key], body)
            if answer is None:
                self.coordinator = None
            else:
                error = ErrorCode(int(error_of(answer)))
                if error in FIND_AGAIN:
                    self.coordinator = None
                elif error not in BACK_OFF:
                    return error, answer
            await trio.sleep(BACKOFF)
        return None, None

    async def _init(self) -> bool:
        known = self.producer_id >= 0 and self.rng.random() < 0.5  # KIP-360: say who we were
        error, answer = await self._coordinator_call(INIT_PRODUCER_ID, {
            "transactional_id": self.transactional_id, "transaction_timeout": TXN_TIMEOUT_MS,
            "producer_id": self.producer_id if known else -1, "producer_epoch": self.producer_epoch if known else -1})
        if error == ErrorCode.NONE:
            self.producer_id, self.producer_epoch = int(answer.producer_id), int(answer.producer_epoch)
            self.sequences.clear()
            self.clean = True
            self.cluster.txn_log(f"{self.transactional_id}: producer {self.producer_id} epoch {self.producer_epoch}")
            return True
        if error == ErrorCode.PRODUCER_FENCED:
            self.producer_id = self.producer_epoch = -1  # next time as a new instance
        self.cluster.txn_log(f"{self.transactional_id}: init failed ({'gave up' if error is None else error.name})")
        return False

    # -- one transaction ------------------------------------------------------------------

    async def _transaction(self) -> None:
        broker = self.cluster.some_broker(self.rng)
        if broker is None:
            return
        topics = sorted((name, len(topic.partitions)) for name, topic in broker.image.topics.items())
        if not topics:
            return
        every = [(name, index) for name, count in topics for index in range(count)]
        chosen = self.rng.sample(every, min(len(every), self.rng.randint(1, 3)))
        self.transactions += 1
        txn = SimTxn(f"{self.transactional_id}-{self.transactions}", self.transactional_id, self.producer_id,
                     self.producer_epoch)
        written: list[bytes] = []
        self.history.attempted[txn.name] = written
        self.history.outcome[txn.name] = "unknown"
        self.cluster.began(txn)
        self.clean = False
        by_topic: dict[str, list[int]] = {}
        for name, index in chosen:
            by_topic.setdefault(name, []).append(index)
        error, _ = await self._coordinator_call(ADD_PARTITIONS_TO_TXN, {
            "v3_and_below_transactional_id": self.transactional_id, "v3_and_below_producer_id": self.producer_id,
            "v3_and_below_producer_epoch": self.producer_epoch,
            "v3_and_below_topics": [{"name": name, "partitions": indexes} for name, indexes in by_topic.items()]},
            _add_partitions_error)
        produced = error == ErrorCode.NONE
        if not produced:
            self.cluster.txn_log(f"{txn.name}: AddPartitionsToTxn {chosen}: {'gave up' if error is None else error.name}")
        if produced:
            for name, index in chosen:
                for _ in range(self.rng.randint(1, 3)):
                    values = [f"{txn.name}-{len(written) + i}".encode() for i in range(self.rng.randint(1, 2))]
                    written.extend(values)
                    if not await self._produce(name, index, values):
                        produced = False
                        break
                if not produced:
                    break
        commit = produced and self.rng.random() < COMMIT_PROBABILITY
        if commit:
            self.history.commit_requested[txn.name] = len(self.history.observed)
        error, _ = await self._coordinator_call(END_TXN, {
            "transactional_id": self.transactional_id, "producer_id": self.producer_id,
            "producer_epoch": self.producer_epoch, "committed": commit})
        if error == ErrorCode.NONE:
            self.history.outcome[txn.name] = "committed" if commit else "aborted"
            self.clean = produced
        self.cluster.txn_log(f"{txn.name}: {len(written)} record(s) to {chosen}, "
                             f"{'commit' if commit else 'abort'}: {'gave up' if error is None else error.name}")

    async def _produce(self, topic: str, partition: int, values: Sequence[bytes]) -> bool:
        """Append one transactional batch (acks=all), retrying with the same sequence; whether it was."""
        sequence = self.sequences.get((topic, partition), 0)
        batch = bytes(encode_batch([Record(i, TIMESTAMP, None, value) for i, value in enumerate(values)],
                                   producer_id=self.producer_id, producer_epoch=self.producer_epoch,
                                   base_sequence=sequence, is_transactional=True))
        deadline = trio.current_time() + OPERATION_SECONDS
        while trio.current_time() < deadline:
            broker = self.cluster.some_broker(self.rng)
            topic_image = None if broker is None else broker.image.topics.get(topic)
            answer = None
            if topic_image is not None and partition < len(topic_image.partitions):
                answer = await self.cluster.call(topic_image.partitions[partition].leader, PRODUCE, VERSIONS[PRODUCE], {
                    "transactional_id": self.transactional_id, "acks": -1, "timeout": 3000,
                    "topic_data": [{"name": topic, "partition_data": [{"index": partition, "records": batch}]}]})
            if answer is not None:
                error = ErrorCode(int(answer.responses[0].partition_responses[0].error_code))
                if error == ErrorCode.NONE:
                    self.sequences[(topic, partition)] = sequence + len(values)
                    return True
                if error not in PRODUCE_RETRIABLE:
                    self.cluster.txn_log(f"{self.transactional_id}: produce to {topic}-{partition}: {error.name}")
                    return False
            await trio.sleep(BACKOFF)
        return False


def _add_partitions_error(answer: Any) -> int:
    """The one error of an AddPartitionsToTxn (v3) answer: the first that is not OPERATION_NOT_ATTEMPTED."""
    codes = [int(p.partition_error_code) for t in answer.results_by_topic_v3_and_below for p in t.results_by_partition]
    failed = [c for c in codes if c != 0]
    real = [c for c in failed if c != ErrorCode.OPERATION_NOT_ATTEMPTED]
    return (real or failed or [0])[0]


def fetch_body(topic: str, partition: int, offset: int, max_bytes: int = 1 << 20) -> dict[str, Any]:
    """A read_committed Fetch (v11) of one partition from ``offset``, answered at once."""
    return {"replica_id": -1, "max_wait": 0, "min_bytes": 0, "max_bytes": max_bytes, "isolation_level": 1,
            "session_id": 0, "session_epoch": -1, "rack_id": "", "forgotten_topics_data": [],
            "topics": [{"topic": topic, "partitions": [{
                "partition": partition, "current_leader_epoch": -1, "fetch_offset": offset, "log_start_offset": -1,
                "partition_max_bytes": max_bytes}]}]}


@dataclass(frozen=True)
class Committed:
    """One record a read_committed consumer keeps."""

    offset: int
    value: bytes
    transactional: bool


def read_committed(records: bytes | None, aborted: Sequence[Any], fetch_offset: int) -> tuple[list[Committed], int]:
    """The records a read_committed consumer keeps of a Fetch answer, and the offset to fetch next.

    As Kafka's consumer: an aborted transaction (``producer_id``, ``first_offset``) starts
    dropping its producer's transactional batches at the first batch reaching its first
    offset, until that producer's abort marker; control batches are never returned.
    """
    kept: list[Committed] = []
    following = fetch_offset
    if not records:
        return kept, following
    pending = [(int(t.first_offset), int(t.producer_id)) for t in aborted]
    heapq.heapify(pending)
    aborting: set[int] = set()
    for batch in split_batches(records, len(records)):
        header = parse_batch_header(batch)
        following = max(following, header.last_offset + 1)
        while pending and pending[0][0] <= header.last_offset:
            aborting.add(heapq.heappop(pending)[1])
        if header.is_control:
            marker = decode_records(batch)[0]
            if control_record_type(marker) == ControlRecordType.ABORT:
                aborting.discard(header.producer_id)
            continue
        if header.is_transactional and header.producer_id in aborting:
            continue
        kept.extend(Committed(record.offset, record.value or b"", header.is_transactional)
                    for record in decode_records(batch) if record.offset >= fetch_offset)
    return kept, following
