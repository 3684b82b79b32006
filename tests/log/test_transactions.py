"""Transactions at the log level: ongoing transactions, the last stable offset, the aborted index, markers."""

from __future__ import annotations

import pytest

from chronik.log import PartitionLog, SequenceError
from chronik.protocol import ErrorCode, Record, decode_records, encode_batch, parse_batch_header, validate_batch
from chronik.protocol.records import control_record_type

from .conftest import OpenLog, append, batch


def txn_batch(pid: int, seq: int, count: int = 2, epoch: int = 0) -> bytearray:
    records = [Record(i, 1000 + i, None, b"p%d-%d" % (pid, seq + i)) for i in range(count)]
    return encode_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq, is_transactional=True)


async def marker(log: PartitionLog, pid: int, commit: bool, epoch: int = 0) -> int:
    info = log.append_marker(pid, epoch, commit, coordinator_epoch=3, timestamp_ms=5000)
    await log.wait_durable(info)
    return info.base_offset


async def test_the_lso_stops_at_the_first_open_transaction_and_moves_on_its_marker(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, batch([1]))                     # 0 plain
    await append(log, txn_batch(7, 0))                 # 1-2 pid 7
    await append(log, txn_batch(8, 0))                 # 3-4 pid 8
    await append(log, txn_batch(7, 2))                 # 5-6 pid 7
    assert (log.high_watermark, log.last_stable_offset) == (7, 1)
    assert await marker(log, 8, commit=True) == 7      # pid 8 commits: 7 still open from 1
    assert log.last_stable_offset == 1
    assert await marker(log, 7, commit=False) == 8     # pid 7 aborts
    assert log.last_stable_offset == log.high_watermark == 9
    assert log.aborted_transactions(0, 9) == [(8, 7, 1)]
    assert log.aborted_transactions(9, 20) == []       # marker before the range
    assert log.aborted_transactions(0, 1) == []        # first offset at the end of the range


async def test_a_marker_not_yet_durable_still_pins_the_lso(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, txn_batch(7, 0))
    info = log.append_marker(7, 0, False, 0, 1)        # queued, not durable
    assert log.last_stable_offset == 0 and log.high_watermark <= 2
    await log.wait_durable(info)
    assert log.last_stable_offset == 3


async def test_the_marker_batch_is_a_kafka_control_batch(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, txn_batch(7, 0))
    await marker(log, 7, commit=True, epoch=2)
    (data,) = log.read(2, 1 << 20)
    header = validate_batch(bytes(data))
    assert header.is_control and header.is_transactional
    assert (header.producer_id, header.producer_epoch, header.base_offset) == (7, 2, 2)
    (record,) = decode_records(data)
    assert control_record_type(record) == 1
    assert record.key == b"\x00\x00\x00\x01" and record.value == b"\x00\x00\x00\x00\x00\x03"


async def test_a_marker_with_a_bumped_epoch_fences_the_older_producer(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, txn_batch(7, 0, epoch=0))
    await marker(log, 7, commit=False, epoch=1)        # fenced: aborted under epoch 1
    with pytest.raises(SequenceError) as raised:
        await append(log, txn_batch(7, 2, epoch=0))
    assert raised.value.error == ErrorCode.INVALID_PRODUCER_EPOCH
    await append(log, txn_batch(7, 0, epoch=2))        # the new producer starts at sequence 0


async def test_transactions_and_the_aborted_index_are_rebuilt_on_reopen_and_truncation(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, txn_batch(7, 0))                 # 0-1
    await marker(log, 7, commit=False)                 # 2
    await append(log, txn_batch(8, 0))                 # 3-4 open
    await log.aclose()
    reopened = open_log()
    assert reopened.aborted_transactions(0, 10) == [(2, 7, 0)]
    assert reopened.last_stable_offset == 3
    assert reopened.producers.ongoing == {8: 3}
    await reopened.truncate_to(3)                      # the open transaction goes
    assert reopened.last_stable_offset == reopened.high_watermark == 3
    await reopened.truncate_to(2)                      # and the abort marker: 7 is open again
    assert reopened.aborted_transactions(0, 10) == []
    assert reopened.last_stable_offset == 0
    assert parse_batch_header(reopened.read(0, 100)[0]).is_transactional


async def test_aborted_index_entries_below_the_log_start_are_forgotten(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, txn_batch(7, 0))                 # 0-1
    await marker(log, 7, commit=False)                 # 2
    await append(log, txn_batch(7, 2))                 # 3-4
    await marker(log, 7, commit=False)                 # 5
    log.advance_log_start(3)
    assert log.aborted_transactions(0, 10) == [(5, 7, 3)]


def coordinator_epochs(log: PartitionLog) -> dict[int, int]:
    return {p.producer_id: p.coordinator_epoch for p in log.producers.describe()}


async def test_a_marker_from_an_older_coordinator_epoch_is_fenced_and_nothing_is_appended(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, txn_batch(7, 0))                            # 0-1 pid 7, open
    assert coordinator_epochs(log) == {7: -1}                      # no marker yet: any epoch goes
    await log.wait_durable(log.append_marker(7, 0, True, 5, 1))    # 2 commit from coordinator epoch 5
    assert coordinator_epochs(log) == {7: 5}
    await append(log, txn_batch(7, 2))                             # 3-4 the next transaction, open
    end = log.log_end_offset
    with pytest.raises(SequenceError) as raised:
        log.append_marker(7, 0, False, 4, 1)                       # a deposed coordinator's abort
    assert raised.value.error == ErrorCode.TRANSACTION_COORDINATOR_FENCED
    assert (log.log_end_offset, log.last_stable_offset, log.producers.ongoing) == (end, 3, {7: 3})
    assert coordinator_epochs(log) == {7: 5}
    await log.wait_durable(log.append_marker(7, 0, True, 5, 1))    # 5 the same epoch is accepted
    await append(log, txn_batch(7, 4))                             # 6-7
    await log.wait_durable(log.append_marker(7, 0, False, 6, 1))   # 8 a newer epoch is accepted and kept
    assert coordinator_epochs(log) == {7: 6}
    with pytest.raises(SequenceError):
        log.append_marker(7, 0, True, 5, 1)
    # a marker for a producer with no state here is accepted at any epoch; epochs are per producer
    await log.wait_durable(log.append_marker(9, 0, False, 0, 1))   # 9
    assert coordinator_epochs(log) == {7: 6, 9: 0}
    assert log.log_end_offset == 10


async def test_the_coordinator_epoch_survives_a_rebuild_a_new_producer_epoch_and_replication(
        open_log: OpenLog, committer) -> None:  # type: ignore[no-untyped-def]
    from .test_replication import follower_log

    log = open_log()
    await append(log, txn_batch(7, 0))                             # 0-1
    await log.wait_durable(log.append_marker(7, 0, True, 5, 1))    # 2
    await append(log, txn_batch(7, 0, epoch=1))                    # 3-4 pid 7 epoch 1 (InitProducerId bumped it)
    assert coordinator_epochs(log) == {7: 5}                       # kept across the producer epoch
    with pytest.raises(SequenceError):
        log.append_marker(7, 1, False, 4, 1)
    await log.aclose()
    reopened = open_log()                                          # rebuilt from the log: read from the marker
    assert coordinator_epochs(reopened) == {7: 5}
    with pytest.raises(SequenceError) as raised:
        reopened.append_marker(7, 1, False, 4, 1)
    assert raised.value.error == ErrorCode.TRANSACTION_COORDINATOR_FENCED
    await reopened.wait_durable(reopened.append_marker(7, 1, False, 8, 1))  # 5
    await reopened.truncate_to(5)                                  # the epoch-8 marker goes: back to 5
    assert coordinator_epochs(reopened) == {7: 5}
    reopened.append_marker(7, 1, False, 5, 1)                      # 5 again, accepted
    await reopened.wait_durable(reopened.append_marker(7, 1, False, 8, 1))  # 6
    follower = follower_log(committer)                             # a follower (a next leader) copies the markers
    follower.follow()
    for stored in reopened.read(0, 1 << 20):
        info = follower.append_replicated(stored)
    await follower.wait_durable(info)
    assert coordinator_epochs(follower) == {7: 8}
    with pytest.raises(SequenceError):
        follower.append_marker(7, 1, False, 7, 1)
