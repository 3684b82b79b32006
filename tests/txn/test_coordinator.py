"""The transaction coordinator: the sans-I/O state machine, and the driver across a crash."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from chronik.broker import Broker, open_broker
from chronik.config import BrokerConfig
from chronik.metadata import CommandRejected
from chronik.metadata.commands import CreateTopic, RegisterBroker, StageTxnOffsets
from chronik.metadata.image import CommittedOffset, MetadataImage
from chronik.metadata.placement import TopicRequest
from chronik.log import PartitionLog
from chronik.protocol import ErrorCode, Record, encode_batch, validate_batch
from chronik.txn import state as core
from chronik.txn.markers import ClusterMarkerWriter, LocalMarkerWriter

MAX = 900_000


async def write_in_transaction(broker: Broker, pid: int, epoch: int, partition: int) -> PartitionLog:
    """Append one transactional record of producer ``pid`` to ``out``-``partition``, durably."""
    log = await broker.partition_log("out", partition)
    assert log is not None
    data = encode_batch([Record(0, 1, None, b"x")], producer_id=pid, producer_epoch=epoch, base_sequence=0,
                        is_transactional=True)
    await log.wait_durable(log.append_batch(data, validate_batch(data), log_append_time=None))
    return log


def apply(image: MetadataImage, outcome: core.Outcome) -> None:
    assert outcome.put is not None
    image.apply(image.applied_offset + 1, outcome.put)


def test_the_state_machine_from_init_to_commit_and_fencing() -> None:
    image = MetadataImage()
    txns = image.transactions
    first = core.init_producer_id(None, "t", 60000, MAX, -1, -1, 0)
    assert first.needs_producer_id
    outcome = core.init_producer_id(None, "t", 60000, MAX, -1, -1, 0, new_producer_id=42)
    apply(image, outcome)
    assert (outcome.producer_id, outcome.producer_epoch, txns["t"].state) == (42, 0, "Empty")
    # an unknown partition list check happens in the handler; here: add, add again (no write), offsets
    outcome = core.add_partitions(txns["t"], 42, 0, [("a", 0), ("a", 1)], 10)
    apply(image, outcome)
    assert txns["t"].state == "Ongoing" and txns["t"].started_ms == 10
    assert core.add_partitions(txns["t"], 42, 0, [("a", 1)], 11).put is None
    assert core.add_partitions(txns["t"], 42, 0, [("a", 1)], 11, verify_only=True).partition_errors == {
        ("a", 1): ErrorCode.NONE}
    assert core.add_partitions(txns["t"], 42, 0, [("b", 0)], 11, verify_only=True).partition_errors == {
        ("b", 0): ErrorCode.INVALID_TXN_STATE}
    apply(image, core.add_offsets(txns["t"], 42, 0, "g", 12))
    assert txns["t"].groups == ["g"]
    # wrong producer or epoch
    assert core.end_txn(txns["t"], 41, 0, True, 13).error == ErrorCode.INVALID_PRODUCER_ID_MAPPING
    assert core.end_txn(txns["t"], 42, 1, True, 13).error == ErrorCode.PRODUCER_FENCED
    # decide: PrepareCommit with markers, then nothing else moves until complete
    outcome = core.end_txn(txns["t"], 42, 0, True, 13)
    assert outcome.markers
    apply(image, outcome)
    assert txns["t"].state == "PrepareCommit"
    assert core.add_partitions(txns["t"], 42, 0, [("a", 0)], 14).error == ErrorCode.CONCURRENT_TRANSACTIONS
    assert core.init_producer_id(txns["t"], "t", 60000, MAX, -1, -1, 14).error == ErrorCode.CONCURRENT_TRANSACTIONS
    assert core.end_txn(txns["t"], 42, 0, True, 14).error == ErrorCode.CONCURRENT_TRANSACTIONS
    image.apply(image.applied_offset + 1, core.complete(txns["t"], 15))
    assert txns["t"].state == "CompleteCommit"
    assert core.end_txn(txns["t"], 42, 0, True, 16).error == ErrorCode.NONE  # a retry
    assert core.end_txn(txns["t"], 42, 0, False, 16).error == ErrorCode.INVALID_TXN_STATE
    # a new producer: epoch bump; the old one is fenced everywhere
    outcome = core.init_producer_id(txns["t"], "t", 60000, MAX, -1, -1, 17)
    apply(image, outcome)
    assert (outcome.producer_id, outcome.producer_epoch) == (42, 1)
    assert core.add_partitions(txns["t"], 42, 0, [("a", 0)], 18).error == ErrorCode.PRODUCER_FENCED
    # a producer re-initialising with an id/epoch that is not the current one is a zombie (KIP-360)
    assert core.init_producer_id(txns["t"], "t", 60000, MAX, 42, 0, 18).error == ErrorCode.PRODUCER_FENCED
    assert core.init_producer_id(txns["t"], "t", 60001 + MAX, MAX, -1, -1, 18).error == \
        ErrorCode.INVALID_TRANSACTION_TIMEOUT


def test_an_open_transaction_is_aborted_under_a_bumped_epoch_when_fenced_or_timed_out() -> None:
    image = MetadataImage()
    txns = image.transactions
    apply(image, core.init_producer_id(None, "t", 1000, MAX, -1, -1, 0, new_producer_id=7))
    apply(image, core.add_partitions(txns["t"], 7, 0, [("a", 0)], 100))
    assert core.expire(txns["t"], 1100, 10**9) is None
    outcome = core.expire(txns["t"], 1101, 10**9)
    assert outcome is not None and outcome.markers
    apply(image, outcome)
    assert (txns["t"].state, txns["t"].producer_epoch) == ("PrepareAbort", 1)
    image.apply(image.applied_offset + 1, core.complete(txns["t"], 1102))
    # fencing through InitProducerId while Ongoing
    apply(image, core.init_producer_id(txns["t"], "t", 1000, MAX, -1, -1, 1200))
    apply(image, core.add_partitions(txns["t"], 7, 2, [("a", 0)], 1201))
    outcome = core.init_producer_id(txns["t"], "t", 1000, MAX, -1, -1, 1202)
    assert outcome.error == ErrorCode.CONCURRENT_TRANSACTIONS and outcome.markers
    apply(image, outcome)
    assert (txns["t"].state, txns["t"].producer_epoch) == ("PrepareAbort", 3)
    # an idle id expires
    image.apply(image.applied_offset + 1, core.complete(txns["t"], 1300))
    outcome = core.expire(txns["t"], 1300 + 5000 + 1, 5000)
    assert outcome is not None and outcome.put is not None and outcome.put.state == "Dead"
    apply(image, outcome)
    assert "t" not in txns


def test_a_stale_writer_is_rejected_by_the_image() -> None:
    image = MetadataImage()
    apply(image, core.init_producer_id(None, "t", 1000, MAX, -1, -1, 0, new_producer_id=7))
    stale = core.add_partitions(image.transactions["t"], 7, 0, [("a", 0)], 1)
    apply(image, core.init_producer_id(image.transactions["t"], "t", 1000, MAX, -1, -1, 0))
    with pytest.raises(CommandRejected) as raised:
        apply(image, stale)
    assert raised.value.error == "CONCURRENT_TRANSACTIONS"


def test_a_stale_writer_is_rejected_when_the_state_it_saw_has_come_round_again() -> None:
    """Cluster seed 10005 (3 nodes): a controller cut off in a minority timed out producer x1's
    transaction and submitted its PrepareAbort (partitions [t2-0]); the metadata submit path kept
    retrying it and forwarded it to the next controller after the heal, by when x1 had committed that
    transaction and begun the next one, in the same producer epoch, on t4-0, t4-1 and t2-0.  The image
    checked only [producer id, epoch, state] -- Ongoing again -- and took the stale abort: the new
    transaction's markers went to t2-0 only, its records in t4-0 stayed open, and the producer's next
    transaction there committed them with its own.  The state's version tells the two Ongoing apart."""
    image = MetadataImage()
    txns = image.transactions
    apply(image, core.init_producer_id(None, "t", 3000, MAX, -1, -1, 0, new_producer_id=1))
    apply(image, core.add_partitions(txns["t"], 1, 0, [("t2", 0)], 4001))
    stale = core.expire(txns["t"], 7899, 10**9)  # the old controller's timeout abort, delivered late
    assert stale is not None and stale.put is not None and stale.put.state == "PrepareAbort"
    apply(image, core.end_txn(txns["t"], 1, 0, True, 4500))
    image.apply(image.applied_offset + 1, core.complete(txns["t"], 4600))
    apply(image, core.add_partitions(txns["t"], 1, 0, [("t4", 1), ("t4", 0), ("t2", 0)], 9174))
    assert (txns["t"].producer_id, txns["t"].producer_epoch, txns["t"].state) == (1, 0, "Ongoing")
    with pytest.raises(CommandRejected) as raised:
        apply(image, stale)
    assert raised.value.error == "CONCURRENT_TRANSACTIONS"
    assert txns["t"].state == "Ongoing" and txns["t"].partitions == [["t4", 1], ["t4", 0], ["t2", 0]]
    # the current coordinator's own abort of it is taken, and covers every partition
    outcome = core.expire(txns["t"], 9174 + 3001, 10**9)
    assert outcome is not None
    apply(image, outcome)
    assert txns["t"].state == "PrepareAbort" and txns["t"].partitions == [["t4", 1], ["t4", 0], ["t2", 0]]


def test_a_command_logged_before_the_version_existed_replays_as_it_was_applied() -> None:
    """Metadata logs hold PutTransaction commands whose ``expected`` has three elements (no version):
    replayed, they are checked on those three, so an upgraded node rebuilds the same image."""
    from chronik.metadata.commands import PutTransaction, decode_command

    image = MetadataImage()
    old = [
        b'{"v":1,"type":"put_transaction","transactional_id":"t","producer_id":1,"producer_epoch":0,"state":"Empty",'
        b'"partitions":[],"groups":[],"timeout_ms":3000,"started_ms":-1,"updated_ms":1,"expected":null,'
        b'"last_producer_epoch":-1}',
        b'{"v":1,"type":"put_transaction","transactional_id":"t","producer_id":1,"producer_epoch":0,"state":"Ongoing",'
        b'"partitions":[["a",0]],"groups":[],"timeout_ms":3000,"started_ms":2,"updated_ms":2,'
        b'"expected":[1,0,"Empty"],"last_producer_epoch":-1}',
    ]
    for payload in old:
        command = decode_command(payload)
        assert isinstance(command, PutTransaction) and command.version == 0
        image.apply(image.applied_offset + 1, command)
    assert (image.transactions["t"].state, image.transactions["t"].version) == ("Ongoing", 0)
    apply(image, core.end_txn(image.transactions["t"], 1, 0, False, 3))  # a new writer on the old state
    assert (image.transactions["t"].state, image.transactions["t"].version) == ("PrepareAbort", 1)
    assert MetadataImage.from_snapshot(image.to_snapshot()).transactions == image.transactions


class StuckMarkers:
    """A marker writer that never finishes: the broker 'crashes' between the decision and the markers."""

    async def write_markers(self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int,
                            partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], ErrorCode]:
        await trio.sleep_forever()
        raise AssertionError

    def writes_locally(self, partitions: Sequence[tuple[str, int]]) -> bool:
        return True


async def test_a_decision_survives_a_crash_before_its_markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("chronik.txn.coordinator.END_TXN_WAIT_SECONDS", 0.2)
    config = BrokerConfig(data_dir=tmp_path, wal_backend="python")
    async with open_broker(config) as broker:
        await broker.create_topic(TopicRequest("out", 2, 1, {}))
        await broker.create_topic(TopicRequest("in", 1, 1, {}))
        txns = broker.transactions
        error, pid, epoch = await txns.init_producer_id("t", 60000, -1, -1)
        assert error == ErrorCode.NONE
        assert await txns.add_partitions("t", pid, epoch, [("out", 0), ("out", 1)]) == {
            ("out", 0): ErrorCode.NONE, ("out", 1): ErrorCode.NONE}
        assert await txns.add_offsets("t", pid, epoch, "g") == ErrorCode.NONE
        for p in range(2):
            log = await write_in_transaction(broker, pid, epoch, p)
            assert log.last_stable_offset == 0
        assert (await txns.stage_offsets("t", "g", pid, epoch, [["in", 0, 5, -1, None]]))[0] == ErrorCode.NONE
        assert broker.image.group_offsets.get("g") is None
        txns._markers = StuckMarkers()  # type: ignore[assignment]
        assert await txns.end_txn("t", pid, epoch, True) == ErrorCode.NONE
        assert broker.image.transactions["t"].state == "PrepareCommit"
    # restart: the new coordinator finds the decision and writes the markers
    async with open_broker(config) as broker:
        with trio.fail_after(10):
            while broker.image.transactions["t"].state != "CompleteCommit":
                await trio.sleep(0.05)
        for p in range(2):
            log = await broker.partition_log("out", p)
            assert log is not None
            assert log.last_stable_offset == log.high_watermark == 2
            assert log.aborted_transactions(0, 2) == []
        assert broker.image.group_offsets["g"][("in", 0)].offset == 5
        assert broker.image.pending_txn_offsets == {}


def test_transaction_state_and_pending_offsets_survive_a_metadata_snapshot() -> None:
    image = MetadataImage()
    image.apply(0, CreateTopic("in", "0" * 32, [[1]]))
    apply(image, core.init_producer_id(None, "t", 1000, MAX, -1, -1, 0, new_producer_id=7))
    apply(image, core.add_offsets(image.transactions["t"], 7, 0, "g", 1))
    image.apply(image.applied_offset + 1, StageTxnOffsets("t", "g", 7, 0, [["in", 0, 3, -1, "m"]]))
    restored = MetadataImage.from_snapshot(json.loads(json.dumps(image.to_snapshot())))
    assert restored.transactions == image.transactions
    assert restored.pending_txn_offsets == image.pending_txn_offsets == {"g": {7: {("in", 0): CommittedOffset(3, -1, "m")}}}


async def test_timed_out_transactions_abort_and_idle_ids_expire(tmp_path: Path) -> None:
    config = BrokerConfig(data_dir=tmp_path, wal_backend="memory", transactional_id_expiration_ms=1500)
    async with open_broker(config) as broker:
        await broker.create_topic(TopicRequest("out", 1, 1, {}))
        txns = broker.transactions
        assert (await txns.init_producer_id("idle", 60000, -1, -1))[0] == ErrorCode.NONE
        error, pid, _ = await txns.init_producer_id("slow", 200, -1, -1)
        assert await txns.add_partitions("slow", pid, 0, [("out", 0)]) == {("out", 0): ErrorCode.NONE}
        with trio.fail_after(10):
            while broker.image.transactions["slow"].state != "CompleteAbort":
                txns.check_now()
                await trio.sleep(0.02)
        assert broker.image.transactions["slow"].producer_epoch == 1  # the timed-out producer is fenced
        assert await txns.end_txn("slow", pid, 0, True) == ErrorCode.PRODUCER_FENCED
        log = await broker.partition_log("out", 0)
        assert log is not None and log.last_stable_offset == log.high_watermark == 1  # just the abort marker
        with trio.fail_after(10):
            while broker.image.transactions:  # both ids idle for transactional.id.expiration.ms
                txns.check_now()
                await trio.sleep(0.05)


class GatedMarkers:
    """A marker writer that writes (through the real one) only once ``gate`` is set."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.gate = trio.Event()
        self.calls = 0

    async def write_markers(self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int,
                            partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], ErrorCode]:
        self.calls += 1
        await self.gate.wait()
        return await self.real.write_markers(  # type: ignore[attr-defined, no-any-return]
            producer_id, producer_epoch, commit, coordinator_epoch, partitions)

    def writes_locally(self, partitions: Sequence[tuple[str, int]]) -> bool:
        return self.real.writes_locally(partitions)  # type: ignore[attr-defined, no-any-return]


async def test_end_txn_answers_the_durable_decision_and_the_next_request_waits_for_the_markers(
        tmp_path: Path) -> None:
    """As Kafka: EndTxn is answered once PrepareCommit is durable, the markers follow; the
    producer's next AddPartitionsToTxn waits for them and the Complete state (no
    CONCURRENT_TRANSACTIONS, which librdkafka answers with a 20 ms back-off), and so does
    a READ_COMMITTED ListOffsets (wait_markers_written) of the transaction's partition."""
    config = BrokerConfig(data_dir=tmp_path, wal_backend="memory")
    async with open_broker(config) as broker:
        await broker.create_topic(TopicRequest("out", 1, 1, {}))
        txns = broker.transactions
        gated = GatedMarkers(txns._markers)
        txns._markers = gated  # type: ignore[assignment]
        error, pid, epoch = await txns.init_producer_id("t", 60000, -1, -1)
        assert await txns.add_partitions("t", pid, epoch, [("out", 0)]) == {("out", 0): ErrorCode.NONE}
        log = await write_in_transaction(broker, pid, epoch, 0)
        with trio.fail_after(2):  # not held back by the markers
            assert await txns.end_txn("t", pid, epoch, True) == ErrorCode.NONE
        assert broker.image.transactions["t"].state == "PrepareCommit"
        assert log.last_stable_offset == 0  # the marker is not written yet
        added: list[dict[tuple[str, int], ErrorCode]] = []
        stable: list[int] = []

        async def next_transaction() -> None:
            added.append(await txns.add_partitions("t", pid, epoch, [("out", 0)]))

        async def read_committed_latest() -> None:
            await txns.wait_markers_written([("out", 0)])
            stable.append(log.last_stable_offset)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(next_transaction)
            nursery.start_soon(read_committed_latest)
            await trio.sleep(0.1)
            assert added == [] and stable == [] and gated.calls == 1  # waiting for the markers, not refused
            gated.gate.set()
        assert added == [{("out", 0): ErrorCode.NONE}] and stable == [2]
        with trio.fail_after(1):
            await txns.wait_markers_written([("out", 0)])  # nothing under way: at once
        assert broker.image.transactions["t"].state == "Ongoing"
        assert log.last_stable_offset == log.high_watermark == 2  # the record and its commit marker
        assert log.aborted_transactions(0, 2) == []


async def test_end_txn_of_a_transaction_with_group_offsets_answers_once_they_are_committed(tmp_path: Path) -> None:
    config = BrokerConfig(data_dir=tmp_path, wal_backend="memory")
    async with open_broker(config) as broker:
        await broker.create_topic(TopicRequest("in", 1, 1, {}))
        txns = broker.transactions
        gated = GatedMarkers(txns._markers)
        txns._markers = gated  # type: ignore[assignment]
        error, pid, epoch = await txns.init_producer_id("t", 60000, -1, -1)
        assert await txns.add_offsets("t", pid, epoch, "g") == ErrorCode.NONE
        assert (await txns.stage_offsets("t", "g", pid, epoch, [["in", 0, 5, -1, None]]))[0] == ErrorCode.NONE
        answered: list[ErrorCode] = []

        async def commit() -> None:
            answered.append(await txns.end_txn("t", pid, epoch, True))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit)
            await trio.sleep(0.1)
            assert answered == []
            gated.gate.set()
        assert answered == [ErrorCode.NONE]
        assert broker.image.group_offsets["g"][("in", 0)].offset == 5


class _ResetStream(trio.abc.Stream):
    """A connection the peer resets once the request is sent (its node died, say)."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("connection reset by peer")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_a_leader_whose_connection_breaks_leaves_its_markers_failed_not_the_coordinator_dead() -> None:
    """Found by the wired cluster simulation (seed 0): a partition leader that went away while a
    WriteTxnMarkers request was out raised BrokenResourceError through the coordinator's task, which
    took the whole node down; its partitions are failed (retried later) like any unreachable leader's."""
    image = MetadataImage()
    image.apply(0, RegisterBroker(2, "n2", 9092))
    image.apply(1, CreateTopic("out", "0" * 32, [[2]]))
    assert image.topics["out"].partitions[0].leader == 2

    async def no_local_log(topic: str, partition: int) -> None:
        return None

    async def connect(host: str, port: int) -> trio.abc.Stream:
        assert (host, port) == ("n2", 9092)
        return _ResetStream()

    writer = ClusterMarkerWriter(LocalMarkerWriter(lambda: image, no_local_log, 1), lambda: image, 1, connect)
    assert await writer.write_markers(7, 0, True, 0, [("out", 0)]) == {("out", 0): ErrorCode.NETWORK_EXCEPTION}


class EpochRole:
    """This node coordinates, at a coordinator epoch the test moves."""

    def __init__(self, epoch: int) -> None:
        self.coordinator_epoch = epoch

    def coordinator_error(self) -> ErrorCode | None:
        return None


async def test_a_coordinator_fenced_by_a_partition_stops_completing_the_transaction(tmp_path: Path) -> None:
    """As Kafka's coordinator on TRANSACTION_COORDINATOR_FENCED: a partition holds a marker of the
    producer from a newer coordinator epoch, so this coordinator is deposed; its own marker is
    refused there (nothing appended), it does not write the Complete state, and it does not try
    again at that epoch; at a newer epoch of its own it completes the transaction."""
    config = BrokerConfig(data_dir=tmp_path, wal_backend="memory")
    async with open_broker(config) as broker:
        await broker.create_topic(TopicRequest("out", 1, 1, {}))
        txns = broker.transactions
        role = EpochRole(3)
        txns._role = role  # type: ignore[assignment]
        error, pid, epoch = await txns.init_producer_id("t", 60000, -1, -1)
        assert await txns.add_partitions("t", pid, epoch, [("out", 0)]) == {("out", 0): ErrorCode.NONE}
        log = await write_in_transaction(broker, pid, epoch, 0)
        # a newer coordinator (epoch 5) already aborted this producer's transaction here
        await log.wait_durable(log.append_marker(pid, epoch, False, 5, 1))
        end = log.log_end_offset
        assert await txns.end_txn("t", pid, epoch, True) == ErrorCode.NONE  # the decision is durable
        with trio.fail_after(5):
            while "t" in txns._completing:
                await trio.sleep(0.01)
        for _ in range(3):  # the timer does not take it up again at this epoch
            txns.check_now()
            await trio.sleep(0.05)
        assert broker.image.transactions["t"].state == "PrepareCommit" and "t" not in txns._completing
        assert log.log_end_offset == end and log.aborted_transactions(0, end) == [(end - 1, pid, 0)]
        role.coordinator_epoch = 5  # coordinating again, at the newer epoch: it finishes
        with trio.fail_after(10):
            while broker.image.transactions["t"].state != "CompleteCommit":
                txns.check_now()
                await trio.sleep(0.02)
        assert log.log_end_offset == end + 1  # its marker, accepted at the equal epoch
        assert log.aborted_transactions(0, end + 1) == [(end - 1, pid, 0)]  # the abort still stands
