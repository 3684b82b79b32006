"""Idempotent producers at the log level: retries deduplicated, sequence gaps refused, state rebuilt on reopen."""

from __future__ import annotations

import pytest

from chronik.log import SequenceError
from chronik.protocol import ErrorCode, Record, encode_batch, validate_batch

from .conftest import OpenLog, append, batch

PID = 4000


def produced(base_sequence: int, count: int = 2, epoch: int = 0, pid: int = PID) -> bytearray:
    return batch(list(range(count)), producer_id=pid, producer_epoch=epoch, base_sequence=base_sequence)


async def test_a_retried_batch_is_answered_with_its_original_offset_and_not_stored_again(open_log: OpenLog) -> None:
    log = open_log()
    first = await append(log, produced(0))
    await append(log, produced(2, count=3))
    retry = await append(log, produced(0))
    assert (retry.base_offset, retry.last_offset, retry.appended) == (first.base_offset, first.last_offset, None)
    assert log.log_end_offset == 5
    # A retry of a batch older than the last one is still recognised (up to 5 batches back).
    assert (await append(log, produced(2, count=3))).base_offset == 2
    assert (await append(log, produced(5))).base_offset == 5


async def test_a_retry_of_a_batch_still_in_flight_waits_until_it_is_durable(open_log: OpenLog) -> None:
    log = open_log()
    data = produced(0)
    original = log.append_batch(data, validate_batch(data), log_append_time=None)
    retry = await append(log, produced(0))
    assert retry.base_offset == original.base_offset
    assert log.high_watermark == 2


async def test_a_sequence_gap_is_out_of_order(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, produced(0))
    with pytest.raises(SequenceError) as caught:
        await append(log, produced(5))
    assert caught.value.error == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    with pytest.raises(SequenceError):
        await append(log, produced(1))  # overlaps the last batch without equalling it
    assert log.log_end_offset == 2
    assert (await append(log, produced(2))).base_offset == 2


async def test_epochs_fence_and_restart_sequences(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, produced(0, epoch=1))
    with pytest.raises(SequenceError) as caught:
        await append(log, produced(2, epoch=0))
    assert caught.value.error == ErrorCode.INVALID_PRODUCER_EPOCH
    with pytest.raises(SequenceError) as caught:
        await append(log, produced(2, epoch=2))
    assert caught.value.error == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert (await append(log, produced(0, epoch=2))).base_offset == 2


async def test_unknown_producers_and_plain_batches_are_not_checked(open_log: OpenLog) -> None:
    log = open_log()
    assert (await append(log, produced(17))).base_offset == 0  # no state yet (KIP-360)
    assert (await append(log, batch([1]))).base_offset == 2
    assert (await append(log, batch([1]))).base_offset == 3  # identical plain batches are both stored
    assert (await append(log, produced(0, pid=PID + 1))).base_offset == 4


async def test_producer_state_is_rebuilt_when_the_log_is_reopened(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, produced(0))
    await append(log, produced(2))
    await append(log, produced(0, pid=PID + 1, epoch=3))
    await log.aclose()

    reopened = open_log()
    assert len(reopened.producers) == 2
    retry = await append(reopened, produced(2))
    assert (retry.base_offset, retry.appended) == (2, None)
    with pytest.raises(SequenceError) as caught:
        await append(reopened, produced(7))
    assert caught.value.error == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    with pytest.raises(SequenceError) as caught:
        await append(reopened, produced(2, pid=PID + 1, epoch=2))
    assert caught.value.error == ErrorCode.INVALID_PRODUCER_EPOCH
    assert (await append(reopened, produced(4))).base_offset == 6
    await reopened.aclose()


async def test_idle_producers_expire_and_a_returning_one_is_accepted_at_any_sequence(open_log: OpenLog) -> None:
    """producer.id.expiration.ms: a producer whose newest batch is that old is forgotten (unless a
    transaction of it is open here); the cleaner stops keeping its batch; it may come back mid-sequence."""
    log = open_log()
    await append(log, produced(0))  # max timestamp 1
    await append(log, batch([1, 2], producer_id=PID + 1, producer_epoch=0, base_sequence=0))  # max timestamp 2
    await append(log, encode_batch([Record(0, 5, None, b"t")], producer_id=PID + 2, producer_epoch=0,
                                   base_sequence=0, is_transactional=True))
    assert log.producers.batches_to_keep() == {0, 2, 4}
    assert log.expire_producers(now_ms=1001, expiration_ms=1000) == 1  # only PID's newest batch is 1000 ms old
    assert log.producers.producer_epoch(PID) is None
    assert log.producers.batches_to_keep() == {2, 4}
    assert log.expire_producers(now_ms=10_000, expiration_ms=1000) == 1  # PID + 2 has a transaction open
    assert log.producers.producer_epoch(PID + 2) == 0
    returned = await append(log, produced(7))  # no state: accepted where it left off (KIP-360)
    assert returned.base_offset == 5
    with pytest.raises(SequenceError):
        await append(log, produced(3))  # and checked from there on
