"""Compaction of transactional data (Kafka's ``CleanedTransactionMetadata`` rules), memory backend:
aborted data goes, markers go once no data of theirs is left and their horizon passed,
nothing at or above the last stable offset is cleaned, each producer's newest batch stays."""

from __future__ import annotations

import time

from chronik.log import PartitionLog
from chronik.protocol import Record, encode_batch, parse_batch_header
from chronik.storage import GroupCommitter

from .conftest import OpenLog, append
from .test_cleaner import NOW, clean_once, cleaner_for, keyed, read_all
from .test_cleaner import configs as compacted


def configs(**overrides: str) -> dict[str, str]:
    return compacted(**{"min.cleanable.dirty.ratio": "0.01", **overrides})

PAD = 40


def txn(pid: int, seq: int, pairs: list[tuple[bytes, bytes]], epoch: int = 0) -> bytearray:
    records = [Record(i, NOW - 1000 + i, key, value) for i, (key, value) in enumerate(pairs)]
    return encode_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq, is_transactional=True)


async def end_txn(log: PartitionLog, pid: int, commit: bool, epoch: int = 0, coordinator_epoch: int = 1) -> int:
    info = log.append_marker(pid, epoch, commit, coordinator_epoch=coordinator_epoch, timestamp_ms=NOW)
    await log.wait_durable(info)
    return info.base_offset


async def pad(log: PartitionLog, tag: bytes, count: int = PAD) -> None:
    """Plain records under fresh keys, enough to seal the segments before them."""
    await append(log, keyed([(b"%s%d" % (tag, i), b"pad" * 40) for i in range(count)]))


async def clean_past_the_horizon(log: PartitionLog, committer: GroupCommitter) -> None:
    """Three cleaning passes with delete.retention.ms=100, each followed by a pause past
    that horizon and fresh padding, so every marker whose data went can go too."""
    cleaner = cleaner_for(committer, log, configs(**{"delete.retention.ms": "100"}))
    for tag in (b"r", b"s", b"t"):
        assert await clean_once(cleaner)
        time.sleep(0.15)
        await pad(log, tag)
        await pad(log, tag + b"2")


def markers(log: PartitionLog) -> list[int]:
    return [parse_batch_header(b).base_offset for b in log.read(log.log_start_offset, 1 << 30)
            if parse_batch_header(b).is_control]


async def test_aborted_records_go_and_their_marker_after_its_horizon(open_log: OpenLog, committer: GroupCommitter) -> None:
    log = open_log(segment_bytes=2048)
    await append(log, txn(7, 0, [(b"a", b"committed a"), (b"b", b"committed b")]))
    await end_txn(log, 7, True)
    await append(log, txn(7, 2, [(b"a", b"aborted a"), (b"c", b"aborted c")]))
    abort = await end_txn(log, 7, False)
    await append(log, txn(7, 4, [(b"e", b"committed e")]))  # pid 7's newest batches come later
    await end_txn(log, 7, True)
    await pad(log, b"p")
    await pad(log, b"q")
    assert [t.last_offset for t in log.producers.aborted] == [abort]
    cleaner = cleaner_for(committer, log, configs(**{"delete.retention.ms": "200"}))
    assert await clean_once(cleaner)
    values = {r.key: r.value for r in read_all(log)}
    assert values[b"a"] == b"committed a" and values[b"b"] == b"committed b" and b"c" not in values
    assert b"aborted" not in b"".join(r.value or b"" for r in read_all(log))
    # the abort marker stays this pass (its data was seen), as does the aborted index entry
    assert abort in markers(log) and [t.last_offset for t in log.producers.aborted] == [abort]
    await pad(log, b"r")
    await pad(log, b"s")
    assert await clean_once(cleaner)  # no data of the aborted txn left: the marker gets its horizon
    assert abort in markers(log)
    time.sleep(0.3)
    await pad(log, b"t")
    await pad(log, b"u")
    assert await clean_once(cleaner)
    assert abort not in markers(log) and log.producers.aborted == []
    assert b"c" not in {r.key for r in read_all(log)}


async def test_a_marker_stays_while_data_of_its_transaction_remains(open_log: OpenLog, committer: GroupCommitter) -> None:
    log = open_log(segment_bytes=2048)
    await append(log, txn(5, 0, [(b"x", b"old x")]))
    abort5 = await end_txn(log, 5, False)
    await append(log, txn(9, 0, [(b"k", b"kept k")]))
    commit9 = await end_txn(log, 9, True)
    await append(log, txn(5, 1, [(b"y", b"y")], epoch=0))  # pid 5's newest data batch
    await end_txn(log, 5, True)
    await append(log, txn(9, 1, [(b"z", b"z")]))
    await end_txn(log, 9, True)
    await pad(log, b"p")
    await pad(log, b"q")
    await clean_past_the_horizon(log, committer)
    left = markers(log)
    assert commit9 in left  # its data (k) is the latest value of k: still there
    assert abort5 not in left  # its data went in the first pass, then its horizon passed
    assert abort5 not in [t.last_offset for t in log.producers.aborted]
    assert {r.key: r.value for r in read_all(log)}[b"k"] == b"kept k"


async def test_an_aborted_record_never_hides_an_older_committed_value(open_log: OpenLog, committer: GroupCommitter) -> None:
    log = open_log(segment_bytes=2048)
    await append(log, keyed([(b"a", b"committed")]))
    await append(log, txn(3, 0, [(b"a", b"aborted")]))
    await end_txn(log, 3, False)
    await pad(log, b"p")
    await pad(log, b"q")
    assert await clean_once(cleaner_for(committer, log, configs()))
    assert [r.value for r in read_all(log) if r.key == b"a"] == [b"committed"]


async def test_nothing_at_or_above_the_last_stable_offset_is_cleaned(open_log: OpenLog, committer: GroupCommitter) -> None:
    log = open_log(segment_bytes=2048)
    await append(log, keyed([(b"a", b"1")]))
    await pad(log, b"p")
    await append(log, keyed([(b"a", b"2")]))
    await pad(log, b"o")
    open_at = (await append(log, txn(4, 0, [(b"t", b"open")]))).base_offset
    await append(log, keyed([(b"a", b"3")]))
    await pad(log, b"q")
    await pad(log, b"r")
    assert log.last_stable_offset == open_at < log.high_watermark
    assert all(end <= open_at for _, end, *_ in log.sealed_segments())
    cleaner = cleaner_for(committer, log, configs())
    assert await clean_once(cleaner)
    # "a"=1 is superseded by "a"=2 (below the LSO); "a"=2 is not superseded: "a"=3 is above the LSO
    assert [r.value for r in read_all(log) if r.key == b"a"] == [b"2", b"3"]
    assert log.producers.first_unstable_producer() == (4, open_at)
    await end_txn(log, 4, True)
    await pad(log, b"s")
    await pad(log, b"u")
    assert await clean_once(cleaner)
    assert [r.value for r in read_all(log) if r.key == b"a"] == [b"3"]


async def test_each_producers_newest_batch_stays_so_its_state_survives(open_log: OpenLog, committer: GroupCommitter) -> None:
    log = open_log(segment_bytes=2048)
    idem = encode_batch([Record(0, NOW, b"a", b"idempotent")], producer_id=11, producer_epoch=2, base_sequence=0)
    await append(log, idem)
    newest = encode_batch([Record(0, NOW, b"a", b"newest")], producer_id=11, producer_epoch=2, base_sequence=1)
    newest_at = (await append(log, newest)).base_offset
    await append(log, txn(12, 0, [(b"b", b"aborted")]))
    await end_txn(log, 12, False)
    await append(log, keyed([(b"a", b"overwritten by a plain producer")]))
    await pad(log, b"p")
    await pad(log, b"q")
    before = log.producers.describe()
    assert await clean_once(cleaner_for(committer, log, configs()))
    stored = {parse_batch_header(b).base_offset: parse_batch_header(b) for b in log.read(0, 1 << 30)}
    assert stored[newest_at].records_count == 0 and stored[newest_at].base_sequence == 1  # emptied, kept
    assert 0 not in stored
    assert log.producers.describe() == before
    await log.aclose()
    reopened = open_log(segment_bytes=2048)
    assert reopened.producers.describe() == before
    retry = encode_batch([Record(0, NOW, b"a", b"newest")], producer_id=11, producer_epoch=2, base_sequence=1)
    assert reopened.producers.check(parse_batch_header(retry)) == newest_at  # still a retry, not a new batch
    assert reopened.producers.aborted == log.producers.aborted


async def test_each_producers_newest_marker_stays_so_its_coordinator_epoch_survives(
        open_log: OpenLog, committer: GroupCommitter) -> None:
    """With no producer-state snapshots, the coordinator epoch is read back from the markers:
    a producer's newest marker stays even once nothing of its transaction is left."""
    log = open_log(segment_bytes=2048)
    await append(log, txn(13, 0, [(b"x", b"aborted x")]))
    abort = await end_txn(log, 13, False, coordinator_epoch=5)
    # pid 13's newest batch is a later one: only the newest-marker rule keeps the marker
    later = encode_batch([Record(0, NOW, b"y", b"y")], producer_id=13, producer_epoch=1, base_sequence=0)
    await append(log, later)
    await pad(log, b"p")
    await pad(log, b"q")
    before = log.producers.describe()
    assert [(p.producer_id, p.coordinator_epoch) for p in before] == [(13, 5)]
    await clean_past_the_horizon(log, committer)
    assert b"aborted x" not in b"".join(r.value or b"" for r in read_all(log))
    assert abort in markers(log)
    assert log.producers.describe() == before
    await log.aclose()
    assert open_log(segment_bytes=2048).producers.describe() == before
