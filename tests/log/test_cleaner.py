"""The log cleaner on the memory backend: what a pass keeps, the swap, recovery of an interrupted swap."""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest

from chronik.log import PartitionLog
from chronik.log.cleaner import Span, clean_partition
from chronik.log.cleaner_manager import LogCleaner
from chronik.metadata.topic_configs import TOPIC_CONFIGS
from chronik.protocol import Compression, Record, compute_crc, decode_records, encode_batch, parse_batch_header
from chronik.storage import GroupCommitter

from .conftest import LOG_DIR, OpenLog, append

NOW = int(time.time() * 1000)


def configs(**overrides: str) -> dict[str, str]:
    values = {name: d.default for name, d in TOPIC_CONFIGS.items()}
    values.update({"cleanup.policy": "compact", "segment.bytes": str(1 << 20)}, **overrides)
    return values


def keyed(pairs: list[tuple[bytes, bytes | None]], *, compression: Compression = Compression.NONE) -> bytearray:
    return encode_batch([Record(i, NOW - 1000 + i, key, value) for i, (key, value) in enumerate(pairs)],
                        compression=compression)


def read_all(log: PartitionLog) -> list[Record]:
    records = []
    for stored in log.read(log.log_start_offset, 1 << 30):
        header = parse_batch_header(stored)
        assert compute_crc(stored) == header.crc
        records.extend(decode_records(stored))
    return records


def cleaner_for(committer: GroupCommitter, log: PartitionLog, topic_configs: Mapping[str, str]) -> LogCleaner:
    return LogCleaner(committer, "/data", [log], lambda _topic: topic_configs, backoff_ms=10)


async def clean_once(cleaner: LogCleaner) -> bool:
    candidates = cleaner.candidates(int(time.time() * 1000))
    return bool(candidates) and await cleaner.clean(candidates[0])


async def fill(log: PartitionLog, rounds: int, keys: int, *, compression: Compression = Compression.NONE) -> dict[bytes, bytes]:
    latest = {}
    for r in range(rounds):
        pairs = [(b"k%d" % k, b"value %d of key %d" % (r, k)) for k in range(keys)]
        latest.update(pairs)
        await append(log, keyed(pairs, compression=compression))
    return latest


@pytest.mark.parametrize("compression", list(Compression))
async def test_a_pass_keeps_the_latest_record_of_each_key_at_its_offset(
        open_log: OpenLog, committer: GroupCommitter, compression: Compression) -> None:
    log = open_log(segment_bytes=4096)
    latest = await fill(log, 60, 5, compression=compression)
    await append(log, keyed([(b"tail", b"active")]))  # the active segment is never cleaned
    before = log.size_bytes()
    cleaner = cleaner_for(committer, log, configs())
    assert await clean_once(cleaner)
    records = read_all(log)
    offsets = [r.offset for r in records]
    assert offsets == sorted(set(offsets)) and offsets[-1] == log.log_end_offset - 1
    assert {r.key: r.value for r in records} == {**latest, b"tail": b"active"}
    assert len([r for r in records if r.key != b"tail"]) <= 5 + 60 * 5 // 4  # at most the uncleaned last segments
    assert log.size_bytes() < before / 2
    for stored in log.read(0, 1 << 30)[:-1]:  # the tail batch is uncompressed
        assert parse_batch_header(stored).compression is compression
    # reopened from disk: the same records at the same offsets
    await log.aclose()
    reopened = open_log(segment_bytes=4096)
    assert [(r.offset, r.key, r.value) for r in read_all(reopened)] == [(r.offset, r.key, r.value) for r in records]
    assert reopened.read(1, 1 << 20)[0] is not None  # a read at a removed offset returns the next batch


async def test_nothing_dirty_means_no_pass_and_the_ratio_gates_it(open_log: OpenLog, committer: GroupCommitter) -> None:
    log = open_log(segment_bytes=4096)
    await fill(log, 40, 5)
    cleaner = cleaner_for(committer, log, configs(**{"min.cleanable.dirty.ratio": "1.0"}))
    assert await clean_once(cleaner)  # everything is dirty at first: ratio 1.0
    assert not await clean_once(cleaner)  # nothing new
    await fill(log, 40, 5)
    assert cleaner.candidates(int(time.time() * 1000)) == []  # dirty, but some of the log is clean: below 1.0
    assert 0 < cleaner.dirtiest_ratio < 1
    overdue = cleaner_for(committer, log, configs(**{"min.cleanable.dirty.ratio": "1.0", "max.compaction.lag.ms": "1"}))
    overdue._first_dirty = dict(cleaner._first_dirty)
    assert [c.overdue for c in overdue.candidates(int(time.time() * 1000))] == [True]


async def test_min_compaction_lag_keeps_new_segments_dirty(open_log: OpenLog, committer: GroupCommitter) -> None:
    log = open_log(segment_bytes=4096)
    await fill(log, 40, 5)
    cleaner = cleaner_for(committer, log, configs(**{"min.compaction.lag.ms": str(3600_000)}))
    assert cleaner.candidates(int(time.time() * 1000)) == []


async def test_tombstones_stay_until_the_delete_horizon_then_go(open_log: OpenLog, committer: GroupCommitter) -> None:
    log = open_log(segment_bytes=2048)
    await fill(log, 20, 4)
    await append(log, keyed([(b"k0", None), (b"k1", None)]))
    await fill(log, 20, 2, compression=Compression.NONE)  # pushes the tombstones out of the active segment
    await append(log, keyed([(b"x%d" % i, b"pad" * 50) for i in range(20)]))
    cleaner = cleaner_for(committer, log, configs(**{"delete.retention.ms": "200"}))
    assert await clean_once(cleaner)
    values = {r.key: r.value for r in read_all(log)}
    assert b"k2" in values and b"k3" in values
    # k0 and k1 were rewritten by fill(20, 2) after their tombstones: latest values, not tombstones
    assert values[b"k0"] is not None
    await append(log, keyed([(b"k2", None)]))
    await append(log, keyed([(b"y%d" % i, b"pad" * 50) for i in range(30)]))
    await append(log, keyed([(b"z%d" % i, b"pad" * 50) for i in range(30)]))
    assert await clean_once(cleaner)
    tombstones = [r for r in read_all(log) if r.value is None]
    assert [r.key for r in tombstones] == [b"k2"]  # kept for delete.retention.ms after its first cleaning
    time.sleep(0.3)
    await append(log, keyed([(b"w%d" % i, b"pad" * 50) for i in range(30)]))
    await append(log, keyed([(b"v%d" % i, b"pad" * 50) for i in range(30)]))
    assert await clean_once(cleaner)
    assert [r for r in read_all(log) if r.value is None] == []
    assert b"k2" not in {r.key for r in read_all(log)}


async def test_an_interrupted_swap_is_completed_or_discarded_on_open(open_log: OpenLog, committer: GroupCommitter) -> None:
    log = open_log(segment_bytes=4096)
    latest = await fill(log, 60, 5)
    expected = [(r.key, r.value) for r in read_all(log)]
    spans = [Span(*s) for s in log.sealed_segments()]
    backend = committer.backend
    # a replacement written but not yet swapped in (".cleaned" only): discarded
    group = spans[:3]
    log.wal.write_replacement(group[0].base, group[-1].next_offset, iter([]))
    swap = [n for n in backend.list_dir(LOG_DIR) if n.endswith(".swap")][0]
    backend.rename_file(f"{LOG_DIR}/{swap}", f"{LOG_DIR}/{group[0].base:020d}.wal.cleaned")
    await log.aclose()
    reopened = open_log(segment_bytes=4096)
    assert [(r.key, r.value) for r in read_all(reopened)] == expected
    assert not [n for n in backend.list_dir(LOG_DIR) if ".cleaned" in n]
    # a durable swap file whose old segments were not all deleted yet: completed
    stats = clean_partition(reopened.wal, [Span(*s) for s in reopened.sealed_segments()], 0, segment_bytes=1 << 20,
                            budget_bytes=1 << 20, delete_retention_ms=0, now_ms=NOW, pause=lambda _: None)
    assert stats.replacements and stats.error is None
    await reopened.aclose()
    again = open_log(segment_bytes=4096)
    assert {r.key: r.value for r in read_all(again)} == latest
    assert len(read_all(again)) < len(expected)
