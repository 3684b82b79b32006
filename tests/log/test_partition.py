"""PartitionLog on the memory backend: offsets, reads, high watermark, time lookups, retention, reopen."""

from __future__ import annotations

import pytest

from chronik.log import OffsetOutOfRange, PartitionLog
from chronik.protocol import TimestampType, decode_records, parse_batch_header
from chronik.storage import MemoryBackend, open_group_committer

from .conftest import LOG_DIR, TOPIC_ID, OpenLog, append, batch


def offsets_of(views: list[memoryview]) -> list[int]:
    return [record.offset for view in views for record in decode_records(view)]


async def test_offsets_are_dense_and_assigned_by_the_log(open_log: OpenLog) -> None:
    log = open_log()
    infos = [await append(log, batch([10, 11, 12])), await append(log, batch([13])), await append(log, batch([14, 15]))]
    assert [(i.base_offset, i.last_offset) for i in infos] == [(0, 2), (3, 3), (4, 5)]
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (0, 6, 6)
    assert offsets_of(log.read(0, 1 << 20)) == [0, 1, 2, 3, 4, 5]
    # A read from inside a batch returns the whole batch (the consumer skips what it did not ask for).
    assert offsets_of(log.read(4, 1 << 20)) == [4, 5]
    assert offsets_of(log.read(1, 1 << 20)) == [0, 1, 2, 3, 4, 5]
    assert log.read(6, 1 << 20) == []


async def test_records_are_served_exactly_as_stored_apart_from_the_base_offset(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, batch([1]))
    sent = batch([5, 6, 7], values=[b"a", None, b"c" * 100])  # type: ignore[list-item]
    original = bytes(sent)
    await append(log, sent)
    (stored,) = log.read(1, 1 << 20)
    assert bytes(stored[8:]) == original[8:]
    assert parse_batch_header(stored).base_offset == 1


async def test_offsets_outside_the_log_are_out_of_range(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, batch([1, 2]))
    with pytest.raises(OffsetOutOfRange):
        log.read(3, 100)
    with pytest.raises(OffsetOutOfRange):
        log.read(-1, 100)


async def test_nothing_is_readable_before_it_is_durable(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, batch([1]))
    data = batch([2, 3])
    info = log.append_batch(data, parse_batch_header(data), log_append_time=None)
    # No checkpoint since the append: the committer has not run yet.
    assert (log.log_end_offset, log.high_watermark) == (3, 1)
    assert offsets_of(log.read(0, 1 << 20)) == [0]
    assert log.read(1, 1 << 20) == []
    assert log.bytes_available(1) == 0
    await log.wait_durable(info)
    assert log.high_watermark == 3
    assert offsets_of(log.read(1, 1 << 20)) == [1, 2]
    assert log.bytes_available(0) == sum(len(v) for v in log.read(0, 1 << 20))


async def test_read_limit_returns_whole_batches_and_always_the_first(open_log: OpenLog) -> None:
    log = open_log()
    for _ in range(5):
        await append(log, batch([1], values=[b"x" * 1000]))
    size = len(log.read(0, 1)[0])
    assert size > 1000
    assert len(log.read(0, 1)) == 1  # larger than the limit, returned anyway
    assert len(log.read(0, size)) == 1
    assert len(log.read(0, 2 * size + 10)) == 2
    assert len(log.read(0, 1 << 20)) == 5
    assert offsets_of(log.read(3, 2 * size)) == [3, 4]


async def test_read_crosses_segments(open_log: OpenLog) -> None:
    log = open_log(segment_bytes=4096)
    for i in range(20):
        await append(log, batch([i], values=[b"y" * 500]))
    assert len(log.wal.segments()) > 3
    assert offsets_of(log.read(0, 1 << 20)) == list(range(20))
    assert offsets_of(log.read(7, 1 << 20)) == list(range(7, 20))


async def test_offset_for_timestamp_is_per_record_inside_a_batch(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, batch([100, 200, 300]))
    await append(log, batch([400, 350, 500]))  # timestamps need not increase
    assert log.offset_for_timestamp(0) == (0, 100)
    assert log.offset_for_timestamp(100) == (0, 100)
    assert log.offset_for_timestamp(150) == (1, 200)
    assert log.offset_for_timestamp(300) == (2, 300)
    assert log.offset_for_timestamp(301) == (3, 400)
    assert log.offset_for_timestamp(450) == (5, 500)
    assert log.offset_for_timestamp(501) is None


async def test_offset_for_timestamp_with_out_of_order_batches(open_log: OpenLog) -> None:
    log = open_log()
    await append(log, batch([1000]))
    await append(log, batch([10, 20]))
    assert log.offset_for_timestamp(15) == (0, 1000)  # the first offset whose timestamp is >= 15


async def test_max_timestamp_names_the_record_that_has_it(open_log: OpenLog) -> None:
    log = open_log()
    assert log.max_timestamp() is None
    await append(log, batch([100, 900, 300]))
    await append(log, batch([400, 500]))
    assert log.max_timestamp() == (1, 900)
    await append(log, batch([900, 901]))
    assert log.max_timestamp() == (6, 901)


async def test_log_append_time_stamps_the_batch(open_log: OpenLog) -> None:
    log = open_log()
    info = await append(log, batch([1, 2]), log_append_time=777_000)
    assert info.log_append_time == 777_000
    (stored,) = log.read(0, 1 << 20)
    assert parse_batch_header(stored).timestamp_type == TimestampType.LOG_APPEND_TIME
    assert [r.timestamp for r in decode_records(stored)] == [777_000, 777_000]
    assert log.offset_for_timestamp(777_000) == (0, 777_000)


async def test_advance_log_start_moves_forward_only(open_log: OpenLog) -> None:
    log = open_log(segment_bytes=4096)
    for i in range(12):
        await append(log, batch([i * 10], values=[b"z" * 400]))
    assert log.advance_log_start(5) == 5
    assert log.advance_log_start(3) == 5  # never back
    with pytest.raises(OffsetOutOfRange):
        log.read(4, 100)
    assert offsets_of(log.read(5, 1 << 20)) == list(range(5, 12))
    assert log.offset_for_timestamp(0) == (5, 50)
    assert log.wal.segments()[0].base_index <= 5
    with pytest.raises(OffsetOutOfRange):
        log.advance_log_start(13)
    assert log.advance_log_start(12) == 12
    assert log.read(12, 100) == []


async def test_retention_by_bytes_deletes_whole_old_segments(open_log: OpenLog) -> None:
    log = open_log(segment_bytes=4096)
    for i in range(30):
        await append(log, batch([i], values=[b"r" * 500]))
    segments = log.wal.segments()
    assert len(segments) >= 4
    keep = log.size_bytes() // 2
    deleted = log.apply_retention(now_ms=10**6, retention_ms=-1, retention_bytes=keep)
    assert deleted >= 1
    assert log.size_bytes() >= keep  # only whole segments go, never below the limit
    assert log.size_bytes() - keep < segments[0].data_bytes * 2
    assert log.log_start_offset == log.wal.segments()[0].base_index > 0
    assert offsets_of(log.read(log.log_start_offset, 1 << 20)) == list(range(log.log_start_offset, 30))
    assert log.apply_retention(now_ms=10**6, retention_ms=-1, retention_bytes=-1) == 0


async def test_retention_by_time_deletes_expired_segments_even_the_active_one(open_log: OpenLog) -> None:
    log = open_log(segment_bytes=4096)
    for i in range(20):
        await append(log, batch([1000 + i], values=[b"t" * 500]))
    first_segments = len(log.wal.segments())
    for i in range(3):
        await append(log, batch([50_000 + i], values=[b"n" * 500]))
    # Everything before offset 20 is older than 10 s at now=55 s; the newest records are not.
    log.apply_retention(now_ms=55_000, retention_ms=10_000, retention_bytes=-1)
    assert 0 < log.log_start_offset <= 20
    assert offsets_of(log.read(log.log_start_offset, 1 << 20))[-3:] == [20, 21, 22]
    assert len(log.wal.segments()) < first_segments
    # Once everything has expired, the active segment is rolled and the log is emptied.
    log.apply_retention(now_ms=10**9, retention_ms=10_000, retention_bytes=-1)
    assert log.log_start_offset == log.log_end_offset == 23
    assert log.read(23, 100) == []
    assert log.offset_for_timestamp(0) is None
    data = batch([10**9])
    assert (await append(log, data)).base_offset == 23


async def test_reopen_rebuilds_the_index(open_log: OpenLog) -> None:
    log = open_log(segment_bytes=4096)
    for i in range(15):
        await append(log, batch([i * 10, i * 10 + 5], values=[b"a" * 300, b"b"]))
    log.advance_log_start(7)
    before = [bytes(v) for v in log.read(7, 1 << 20)]
    await log.aclose()

    reopened = open_log(segment_bytes=4096)
    assert (reopened.log_start_offset, reopened.log_end_offset, reopened.high_watermark) == (7, 30, 30)
    assert reopened.recovery is not None and reopened.recovery.log_end_offset == 30
    assert [bytes(v) for v in reopened.read(7, 1 << 20)] == before
    assert reopened.offset_for_timestamp(71) == (15, 75)
    assert reopened.max_timestamp() == (29, 145)
    assert (await append(reopened, batch([999]))).base_offset == 30
    await reopened.aclose()


async def test_reopen_of_an_emptied_log_keeps_its_end_offset(open_log: OpenLog) -> None:
    log = open_log(segment_bytes=4096)
    for i in range(10):
        await append(log, batch([i], values=[b"e" * 600]))
    log.apply_retention(now_ms=10**9, retention_ms=1, retention_bytes=-1)
    assert log.log_start_offset == 10
    await log.aclose()
    reopened = open_log(segment_bytes=4096)
    assert (reopened.log_start_offset, reopened.log_end_offset, reopened.high_watermark) == (10, 10, 10)
    assert (await append(reopened, batch([5]))).base_offset == 10
    await reopened.aclose()


async def test_open_refuses_a_directory_of_another_topic_id(open_log: OpenLog, committer) -> None:  # type: ignore[no-untyped-def]
    log = open_log()
    await log.aclose()
    with pytest.raises(ValueError, match="topic id"):
        PartitionLog.open(committer, log.directory, topic="t", partition=0, topic_id="f" * 32, segment_bytes=1 << 20)


async def test_a_damaged_partition_file_is_rewritten_not_fatal(open_log, committer) -> None:  # type: ignore[no-untyped-def]
    from chronik.log.partition import PARTITION_FILE

    log = open_log()
    for ts in (1, 2, 3):
        await append(log, batch([ts]))
    await log.aclose()
    backend = committer.backend
    backend.overwrite(f"{LOG_DIR}/{PARTITION_FILE}", 0, b"\xff{{garbage")
    reopened = open_log()
    assert (reopened.log_start_offset, reopened.log_end_offset) == (0, 3)
    assert len(reopened.read(0, 1 << 20)) == 3
    await reopened.aclose()
    again = open_log()  # the file was rewritten
    assert again.log_end_offset == 3
    await again.aclose()


class _RecordingBackend(MemoryBackend):
    """Remembers every rename into, and every sync of, a directory, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def rename_file(self, src: str, dst: str) -> None:
        super().rename_file(src, dst)
        self.calls.append(("rename", dst))

    def sync_dir(self, directory: str) -> None:
        super().sync_dir(directory)
        self.calls.append(("sync", directory))


async def test_a_new_partition_is_durable_in_its_directory_before_it_is_handed_out() -> None:
    """Its first segment and its partition file are renamed into place, then the
    directory is synced once for both (not once each): a crash before that sync
    leaves at most a partition without them, which the next open creates again."""
    from chronik.log.partition import PARTITION_FILE
    from chronik.storage.wal import segment_name

    backend = _RecordingBackend()
    async with open_group_committer(backend, "/data") as committer:
        log = PartitionLog.open(committer, LOG_DIR, topic="t", partition=0, topic_id=TOPIC_ID, segment_bytes=1 << 20)
        assert backend.calls == [("rename", f"{LOG_DIR}/{segment_name(0)}"), ("rename", f"{LOG_DIR}/{PARTITION_FILE}"),
                                 ("sync", LOG_DIR)]
        await append(log, batch([1]))
        await log.aclose()
        backend.calls.clear()
        reopened = PartitionLog.open(committer, LOG_DIR, topic="t", partition=0, topic_id=TOPIC_ID, segment_bytes=1 << 20)
        assert backend.calls == []  # nothing to create
        await reopened.aclose()
