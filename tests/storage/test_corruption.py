"""Garbage on disk: recovery truncates to the last good entry and says so."""

from __future__ import annotations

import pytest

from chronik.storage import CorruptEntryError, StorageBackend, WriteAheadLog, open_group_committer
from chronik.storage.wal import ENTRY_HEADER, SEGMENT_HEADER


async def write_entries(backend: StorageBackend, log_dir: str, count: int, **kw: int) -> list:
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, **kw)
        locations = [await wal.append_durable(i, b"entry-%04d" % i * 10) for i in range(count)]
        segments = [s.path for s in wal.segments()]
        await wal.aclose()
    return [locations, segments]


async def reopen(backend: StorageBackend, log_dir: str, **kw: int):  # type: ignore[no-untyped-def]
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, **kw)
        entries = [(e.index, bytes(e.payload)) for s in wal.segments() for e in wal.iter_entries(s.base_index)]
        # the recovered log takes appends again
        nxt = 0 if wal.last_index is None else wal.last_index + 1
        await wal.append_durable(nxt, b"appended after recovery")
        await wal.aclose()
    return wal.recovery, entries


def forget_recovery_point(backend: StorageBackend, log_dir: str) -> None:
    """Simulate a crash: the recovery point of a clean close is not there."""
    backend.delete_file(f"{log_dir}/recovery-point")


def poke(backend: StorageBackend, path: str, offset: int, data: bytes) -> None:
    f = backend.open_file(path)
    f.write_durably(offset, data)
    f.close()


async def test_flipped_byte_mid_file(backend: StorageBackend, log_dir: str) -> None:
    (locations, segments) = await write_entries(backend, log_dir, 20)
    forget_recovery_point(backend, log_dir)
    victim = locations[12]
    poke(backend, segments[-1], victim.position + ENTRY_HEADER.size + 3, b"\xff")
    report, entries = await reopen(backend, log_dir)
    assert [i for i, _ in entries] == list(range(12))
    assert report.truncated_bytes == sum(loc.size for loc in locations[12:])
    assert "CRC" in (report.reason or "")
    assert report.entries_scanned == 12


async def test_garbage_appended_after_the_last_entry(backend: StorageBackend, log_dir: str) -> None:
    (locations, segments) = await write_entries(backend, log_dir, 5)
    forget_recovery_point(backend, log_dir)
    end = locations[-1].position + locations[-1].size
    poke(backend, segments[-1], end, b"\x13\x37garbage!" * 10)
    report, entries = await reopen(backend, log_dir)
    assert [i for i, _ in entries] == list(range(5))
    assert report.truncated_bytes == 100
    assert report.last_index == 4


async def test_cut_in_the_middle_of_an_entry(backend: StorageBackend, log_dir: str) -> None:
    (locations, segments) = await write_entries(backend, log_dir, 5)
    forget_recovery_point(backend, log_dir)
    f = backend.open_file(segments[-1])
    f.truncate(locations[-1].position + 7)
    f.close()
    report, entries = await reopen(backend, log_dir)
    assert [i for i, _ in entries] == list(range(4))
    assert report.truncated_bytes > 0
    assert report.last_index == 3


async def test_corrupt_sealed_segment_is_never_returned(backend: StorageBackend, log_dir: str) -> None:
    (locations, segments) = await write_entries(backend, log_dir, 40, segment_bytes=1024)
    assert len(segments) > 2
    first = locations[0]
    poke(backend, segments[0], first.position + ENTRY_HEADER.size, b"XX")
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=1024)
        with pytest.raises(CorruptEntryError) as info:
            list(wal.iter_entries(first.segment))
        assert "CRC" in str(info.value) and segments[0].split("/")[-1] in str(info.value)
        # later segments still read fine
        assert [e.index for e in wal.iter_entries(wal.segments()[-1].base_index)]
        await wal.aclose()


async def test_hole_in_a_sealed_segment_drops_later_segments(backend: StorageBackend, log_dir: str) -> None:
    """An unsynced tail of a sealed segment (zeros) cuts every later segment."""
    (locations, segments) = await write_entries(backend, log_dir, 40, segment_bytes=1024)
    forget_recovery_point(backend, log_dir)
    hole = locations[5]
    assert hole.segment == locations[0].segment
    poke(backend, segments[0], hole.position, bytes(hole.size))
    report, entries = await reopen(backend, log_dir, segment_bytes=1024)
    assert [i for i, _ in entries] == list(range(5))
    assert report.segments_deleted == len(segments) - 1
    assert report.reason


async def test_not_a_segment_file(backend: StorageBackend, log_dir: str) -> None:
    (_, segments) = await write_entries(backend, log_dir, 3)
    forget_recovery_point(backend, log_dir)
    poke(backend, segments[0], 0, b"NOTMAGIC")
    async with open_group_committer(backend, log_dir) as committer:
        with pytest.raises(CorruptEntryError) as info:
            WriteAheadLog.open(committer, log_dir)
        assert "magic" in str(info.value)


async def test_corrupt_recovery_point_means_full_scan(backend: StorageBackend, log_dir: str) -> None:
    (_, segments) = await write_entries(backend, log_dir, 30, segment_bytes=1024)
    poke(backend, f"{log_dir}/recovery-point", 3, b"\xee")
    report, entries = await reopen(backend, log_dir, segment_bytes=1024)
    assert not report.from_recovery_point
    assert report.entries_scanned == 30 and not report.truncated
    assert [i for i, _ in entries] == list(range(30))


async def test_clean_reopen_scans_nothing(backend: StorageBackend, log_dir: str) -> None:
    await write_entries(backend, log_dir, 30, segment_bytes=1024)
    report, _ = await reopen(backend, log_dir, segment_bytes=1024)
    assert report.from_recovery_point and report.entries_scanned == 0
    assert SEGMENT_HEADER.size == 16
