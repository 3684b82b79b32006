"""One contract, every backend: file operations, write_and_sync, group commit, the WAL."""

from __future__ import annotations

import random

import pytest
import trio

from chronik.storage import (
    FileWrite,
    StorageBackend,
    StorageError,
    WriteAheadLog,
    open_group_committer,
)
from chronik.storage.committer import COPY_BELOW
from chronik.storage import osfiles, wal as wal_module
from chronik.storage.wal import ENTRY_HEADER, SEGMENT_HEADER, EntryLocation, read_sealed_segment, segment_name


# -- the StorageBackend contract ----------------------------------------------


async def test_file_operations(backend: StorageBackend, log_dir: str) -> None:
    backend.make_dirs(log_dir)
    path = f"{log_dir}/a.bin"
    with pytest.raises(FileNotFoundError):
        backend.open_file(path)
    f = backend.open_file(path, create=True)
    with pytest.raises(FileExistsError):
        backend.open_file(path, create=True)
    assert f.size() == 0
    f.preallocate(4096)
    assert f.size() == 4096
    assert f.pread(0, 16) == bytes(16)
    f.write_durably(10, b"hello")
    assert f.pread(8, 9) == b"\0\0hello\0\0"
    assert f.pread(4090, 100) == bytes(6)  # clipped at the end of the file
    f.truncate(12)
    assert f.size() == 12
    assert f.pread(0, 100) == b"\0" * 10 + b"he"
    f.close()
    backend.rename_file(path, f"{log_dir}/b.bin")
    backend.sync_dir(log_dir)
    assert backend.list_dir(log_dir) == ["b.bin"]
    g = backend.open_file(f"{log_dir}/b.bin")
    assert g.pread(10, 2) == b"he"
    g.close()
    backend.delete_file(f"{log_dir}/b.bin")
    assert backend.list_dir(log_dir) == []


async def test_pread_into_fills_a_buffer_up_to_the_end_of_the_file(backend: StorageBackend, log_dir: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(osfiles, "SYSCALL_STEP", 1000)  # write_durably writes in steps of this many bytes
    backend.make_dirs(log_dir)
    f = backend.open_file(f"{log_dir}/a", create=True)
    data = random.Random(3).randbytes(5000)
    f.write_durably(0, data)
    buf = memoryview(bytearray(3000))
    assert f.pread_into(1000, buf[:2000]) == 2000 and bytes(buf[:2000]) == data[1000:3000]
    assert f.pread_into(4000, buf) == 1000 and bytes(buf[:1000]) == data[4000:]  # short at the end
    assert f.pread_into(5000, buf) == 0
    f.close()


async def test_write_durably_can_allocate_first(backend: StorageBackend, log_dir: str) -> None:
    backend.make_dirs(log_dir)
    f = backend.open_file(f"{log_dir}/a", create=True)
    f.write_durably(0, b"header", allocate=4096)  # a new segment: allocated and headed, one fsync
    assert f.size() == 4096
    assert f.pread(0, 10) == b"header\0\0\0\0"
    f.write_durably(4090, b"end", allocate=1024)  # already long enough: allocates nothing
    assert f.size() == 4096 and f.pread(4088, 8) == b"\0\0end\0\0\0"
    f.close()


async def test_write_and_sync_places_every_write(backend: StorageBackend, log_dir: str) -> None:
    backend.make_dirs(log_dir)
    a = backend.open_file(f"{log_dir}/a", create=True)
    b = backend.open_file(f"{log_dir}/b", create=True)
    a.preallocate(1 << 16)
    chunks = [bytes([i]) * (i + 1) for i in range(200)]
    await backend.write_and_sync(
        [
            FileWrite(a.fd, 100, list(chunks)),
            FileWrite(b.fd, 0, [b"xyz"]),
            FileWrite(a.fd, 50_000, [memoryview(b"tail")]),
        ]
    )
    assert a.pread(100, sum(map(len, chunks))) == b"".join(chunks)
    assert a.pread(50_000, 4) == b"tail"
    assert b.pread(0, 10) == b"xyz"
    stats = backend.stats()
    assert stats.write_calls == 1 and stats.files_synced == 2
    await backend.write_and_sync([])
    a.close()
    b.close()


async def test_write_and_sync_reports_bad_handle(backend: StorageBackend, log_dir: str) -> None:
    backend.make_dirs(log_dir)
    f = backend.open_file(f"{log_dir}/a", create=True)
    fd = f.fd
    f.close()
    with pytest.raises(OSError):
        await backend.write_and_sync([FileWrite(fd, 0, [b"lost"])])
    assert backend.stats().failures == 1


# -- group commit -------------------------------------------------------------


async def test_concurrent_appends_share_syncs(backend: StorageBackend, log_dir: str) -> None:
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=1 << 20, preallocate_bytes=1 << 16)
        durable: list[int] = []

        async def appender(worker: int) -> None:
            for i in range(20):
                index = wal.last_index + 1 if wal.last_index is not None else 0
                appended = wal.append(index, f"w{worker}-{i}".encode())
                await wal.wait_durable(appended)
                assert wal.durable_end(appended.location.segment) >= appended.location.position + appended.location.size
                durable.append(index)

        async with trio.open_nursery() as nursery:
            for w in range(64):
                nursery.start_soon(appender, w)
        await wal.aclose()
    assert sorted(durable) == list(range(64 * 20))
    # 1280 appends from 64 concurrent appenders need far fewer than 1280 syncs.
    assert committer.stats.appends == 1280
    assert committer.stats.batches < 1280 / 4
    assert committer.stats.max_batch_appends > 1


async def test_reopen_returns_every_entry(backend: StorageBackend, log_dir: str) -> None:
    rng = random.Random(7)
    payloads = [rng.randbytes(rng.randrange(0, 3000)) for _ in range(300)]
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=64 << 10, preallocate_bytes=16 << 10)
        assert wal.last_index is None
        for i, payload in enumerate(payloads):
            wal.append(i * 10, payload)
        await wal.flush()
        assert len(wal.segments()) > 3  # rolled by size
        await wal.aclose()
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=64 << 10, preallocate_bytes=16 << 10)
        assert wal.recovery.last_index == 2990
        assert wal.recovery.from_recovery_point and not wal.recovery.truncated
        got = [(e.index, bytes(e.payload)) for s in wal.segments() for e in wal.iter_entries(s.base_index)]
        assert got == [(i * 10, p) for i, p in enumerate(payloads)]
        segments = wal.segments()
        assert [s.base_index for s in segments][0] == 0
        assert all(s.data_bytes <= (64 << 10) for s in segments)
        # appending continues after the last index
        with pytest.raises(ValueError):
            wal.append(2990, b"dup")
        await wal.append_durable(3000, b"next")
        await wal.aclose()


async def test_read_sealed_segment_reads_in_steps_across_entries(backend: StorageBackend, log_dir: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A cleaner process reads a sealed segment in system calls of at most SYSCALL_STEP bytes
    (here 1000), into chunks of _SCAN_CHUNK (here 4096): entries that straddle a step,
    a chunk, or are larger than a chunk come out whole and in order."""
    monkeypatch.setattr(wal_module, "SYSCALL_STEP", 1000)
    monkeypatch.setattr(wal_module, "_SCAN_CHUNK", 4096)
    rng = random.Random(11)
    payloads = [rng.randbytes(rng.choice((0, 10, 999, 1000, 2500, 9000))) for _ in range(60)]
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=1 << 20, preallocate_bytes=16 << 10)
        for i, payload in enumerate(payloads):
            wal.append(i, payload)
        await wal.flush()
        wal.roll()
        base = wal.segments()[0].base_index
        reads: list[int] = []
        real_open = backend.open_file

        def counting_open(path: str, *, create: bool = False):  # type: ignore[no-untyped-def]
            file = real_open(path, create=create)
            pread_into = file.pread_into

            class Counted:
                def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
                    return getattr(file, name)

                def pread_into(self, offset: int, buffer: memoryview) -> int:
                    reads.append(len(buffer))
                    return pread_into(offset, buffer)
            return Counted()

        monkeypatch.setattr(backend, "open_file", counting_open)
        got = [(index, bytes(payload)) for index, payload in read_sealed_segment(backend, log_dir, base)]
        monkeypatch.undo()
        assert got == list(enumerate(payloads))
        assert reads and max(reads) <= 1000
        await wal.aclose()


async def test_read_limits_and_durability(backend: StorageBackend, log_dir: str) -> None:
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=1 << 20)
        base = wal.active_segment.base_index
        pending = wal.append(0, b"a" * 100)
        # Not durable yet: not readable.
        assert wal.read(base, SEGMENT_HEADER.size, 1 << 20) == []
        await wal.wait_durable(pending)
        wal.append(1, b"b" * 5000)
        last = wal.append(2, b"c" * 10)
        await wal.wait_durable(last)
        # At least one whole entry even when larger than max_bytes...
        first = wal.read(base, SEGMENT_HEADER.size, 1)
        assert [e.index for e in first] == [0]
        second = wal.read(base, first[0].location.position + first[0].location.size, 10)
        assert [(e.index, len(e.payload)) for e in second] == [(1, 5000)]
        # ...and never a partial one.
        everything = wal.read(base, SEGMENT_HEADER.size, 100 + ENTRY_HEADER.size + 10)
        assert [e.index for e in everything] == [0]
        everything = wal.read(base, SEGMENT_HEADER.size, 1 << 20)
        assert [bytes(e.payload[:1]) for e in everything] == [b"a", b"b", b"c"]
        await wal.aclose()


async def test_truncate_and_delete_segment(backend: StorageBackend, log_dir: str) -> None:
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=4096, preallocate_bytes=4096)
        locations = [await wal.append_durable(i, bytes([i]) * 1000) for i in range(12)]
        bases = [s.base_index for s in wal.segments()]
        assert len(bases) >= 3
        with pytest.raises(StorageError):
            wal.delete_segment(bases[-1])
        # cut at entry 7: 7..11 gone, also later segments
        wal.truncate(locations[7])
        assert wal.last_index == 6
        await wal.append_durable(7, b"new seven")
        wal.delete_segment(bases[0])
        await wal.aclose()
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=4096, preallocate_bytes=4096)
        got = [(e.index, bytes(e.payload)) for s in wal.segments() for e in wal.iter_entries(s.base_index)]
        assert got[-1] == (7, b"new seven")
        assert [i for i, _ in got] == list(range(bases[1], 8))
        assert not wal.recovery.truncated
        await wal.aclose()


async def test_truncate_refused_with_appends_in_flight(backend: StorageBackend, log_dir: str) -> None:
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir)
        first = await wal.append_durable(0, b"x")
        wal.append(1, b"y")
        with pytest.raises(StorageError):
            wal.truncate(first)
        await wal.aclose()


async def test_index_must_increase(backend: StorageBackend, log_dir: str) -> None:
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, start_index=100)
        with pytest.raises(ValueError):
            wal.append(99, b"below the start")
        wal.append(100, b"ok")
        with pytest.raises(ValueError):
            wal.append(100, b"again")
        await wal.aclose()


async def test_unknown_location_is_rejected(backend: StorageBackend, log_dir: str) -> None:
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir)
        with pytest.raises(KeyError):
            wal.read(12345, SEGMENT_HEADER.size, 100)
        with pytest.raises(KeyError):
            wal.truncate(EntryLocation(12345, SEGMENT_HEADER.size, 0))
        await wal.aclose()


@pytest.mark.parametrize("profile", ["low-latency", "balanced", "throughput"])
async def test_every_profile_commits(backend: StorageBackend, log_dir: str, profile: str) -> None:
    async with open_group_committer(backend, log_dir, profile) as committer:
        wal = WriteAheadLog.open(committer, log_dir)
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(wal.wait_durable, wal.append(i, b"p" * 64))
        assert committer.stats.appends == 50
        await wal.aclose()


async def test_on_durable_reports_positions_without_waiters(backend: StorageBackend, log_dir: str) -> None:
    seen: list[tuple[int, int]] = []
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=2048, on_durable=lambda s, e: seen.append((s, e)))
        appended = [wal.append(i, bytes(300)) for i in range(20)]  # nobody waits
        await wal.flush()
        last = appended[-1].location
        assert seen[-1] == (last.segment, last.position + last.size)
        assert seen == sorted(seen)
        assert {s for s, _ in seen} == {a.location.segment for a in appended}
        await wal.aclose()


async def test_interleaved_small_and_large_payloads_in_two_logs(backend: StorageBackend, log_dir: str) -> None:
    # One committer, two logs (two files per batch); payloads on both sides of
    # COPY_BELOW, so batches mix copied runs with chunks kept by reference.
    rng = random.Random(11)
    sizes = [0, 1, 500, COPY_BELOW - ENTRY_HEADER.size - 1, COPY_BELOW - 1, COPY_BELOW, 3 * COPY_BELOW + 5]
    async with open_group_committer(backend, log_dir) as committer:
        logs = [
            WriteAheadLog.open(committer, f"{log_dir}/{name}", segment_bytes=1 << 20, preallocate_bytes=1 << 16)
            for name in ("a", "b")
        ]
        expected: list[list[tuple[int, bytes]]] = [[], []]
        for round_ in range(6):
            for i in range(40):
                which = rng.randrange(2)
                payload = rng.randbytes(rng.choice(sizes))
                index = len(expected[which])
                logs[which].append(index, payload)
                expected[which].append((index, payload))
            await trio.sleep(0)  # let some batches go while others fill
        for wal in logs:
            await wal.flush()
        for wal, want in zip(logs, expected):
            got = [(e.index, bytes(e.payload)) for s in wal.segments() for e in wal.iter_entries(s.base_index)]
            assert got == want
            await wal.aclose()
        reopened = WriteAheadLog.open(committer, f"{log_dir}/a", segment_bytes=1 << 20)
        got = [(e.index, bytes(e.payload)) for s in reopened.segments() for e in reopened.iter_entries(s.base_index)]
        assert got == expected[0] and not reopened.recovery.truncated
        await reopened.aclose()


async def test_segment_creation_cut_short_leaves_no_segment(backend: StorageBackend, log_dir: str) -> None:
    # A crash while a segment is being created leaves only its temporary file,
    # never a segment without a header; the next open deletes it.
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=1 << 20)
        await wal.append_durable(0, b"kept")
        await wal.aclose()
        leftover = backend.open_file(f"{log_dir}/{segment_name(1)}.tmp", create=True)
        leftover.preallocate(4096)  # zeros: what a crash before the header write leaves
        leftover.close()
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=1 << 20)
        assert [e.payload for e in wal.iter_entries(0)] == [b"kept"]
        assert not any(name.endswith(".tmp") for name in backend.list_dir(log_dir))
        wal.roll()
        await wal.append_durable(1, b"after")
        assert [s.base_index for s in wal.segments()] == [0, 1]
        await wal.aclose()


async def test_close_files_gives_a_log_up(backend: StorageBackend, log_dir: str) -> None:
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=1 << 20)
        await wal.append_durable(0, b"durable")
        wal.close_files()
        wal.close_files()  # idempotent
        with pytest.raises(StorageError):
            wal.append(1, b"refused")
        await wal.aclose()  # nothing left to do
        reopened = WriteAheadLog.open(committer, log_dir, segment_bytes=1 << 20)
        assert [bytes(e.payload) for e in reopened.iter_entries(0)] == [b"durable"]
        await reopened.aclose()


async def test_start_now_hands_a_lone_batch_over_at_once(backend: StorageBackend, log_dir: str) -> None:
    """start_now starts the oldest batch from the caller's task where the backend can (native,
    python), is a no-op elsewhere, and never changes what becomes durable or its order."""
    starts_early = hasattr(backend, "begin_write_and_sync")
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=1 << 20, preallocate_bytes=1 << 16)
        appended = wal.append(0, b"lone")
        committer.start_now()
        assert committer.pending_batches == (0 if starts_early else 1)
        committer.start_now()  # a flush is in progress (or none can start early): nothing happens
        await wal.wait_durable(appended)

        async def appender(worker: int) -> None:
            for i in range(10):
                index = wal.last_index + 1
                await wal.wait_durable(wal.append(index, f"w{worker}-{i}".encode()))
                committer.start_now()

        async with trio.open_nursery() as nursery:
            for w in range(16):
                nursery.start_soon(appender, w)
        assert (committer.stats.started_now > 0) == starts_early
        await wal.aclose()
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=1 << 20, preallocate_bytes=1 << 16)
        assert [e.index for s in wal.segments() for e in wal.iter_entries(s.base_index)] == list(range(161))
        await wal.aclose()


async def test_start_now_waits_for_a_lingering_profile(backend: StorageBackend, log_dir: str) -> None:
    async with open_group_committer(backend, log_dir, "throughput") as committer:
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=1 << 20, preallocate_bytes=1 << 16)
        appended = wal.append(0, b"x")
        committer.start_now()
        assert committer.pending_batches == 1 and committer.stats.started_now == 0
        await wal.wait_durable(appended)
        await wal.aclose()


async def test_a_batch_started_now_settles_when_the_committer_is_cancelled(backend: StorageBackend, log_dir: str) -> None:
    with trio.CancelScope() as scope:
        async with open_group_committer(backend, log_dir) as committer:
            wal = WriteAheadLog.open(committer, log_dir, segment_bytes=1 << 20, preallocate_bytes=1 << 16)
            wal.append(0, b"started")
            committer.start_now()
            scope.cancel()
            await trio.sleep(1)
    assert committer.pending_batches == 0
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=1 << 20, preallocate_bytes=1 << 16)
        if hasattr(backend, "begin_write_and_sync"):  # it was with the backend: the shielded flush finished it
            assert [e.index for s in wal.segments() for e in wal.iter_entries(s.base_index)] == [0]
        await wal.aclose()


# -- the log's last index when the active segment holds no entry ----------------
# A roll leaves an empty active segment until the next append (the partition's
# segment.ms, a metadata snapshot, a kill -9 between a size roll and the write of
# the entry that caused it).  The entries before it are in sealed segments that a
# reopen does not scan; the log's last index must survive anyway.


async def _fill_and_roll(committer, log_dir: str) -> tuple[WriteAheadLog, int]:  # type: ignore[no-untyped-def]
    wal = WriteAheadLog.open(committer, log_dir, segment_bytes=4096, preallocate_bytes=4096)
    for i in range(12):
        await wal.append_durable(i * 3, bytes([i]) * 1000)
    wal.roll()
    assert len(wal.segments()) >= 3 and wal.segments()[-1].data_bytes == 0
    return wal, 33


async def _reopened_last_index(committer, log_dir: str, *, scans_sealed: bool = False) -> int | None:  # type: ignore[no-untyped-def]
    wal = WriteAheadLog.open(committer, log_dir, segment_bytes=4096, preallocate_bytes=4096)
    try:
        assert wal.recovery.last_index == wal.last_index
        # a sealed segment before the recovery point has no last index unless it was scanned
        assert (wal.segments()[-2].last_index is not None) == scans_sealed
        last = wal.last_index
        assert last is not None
        with pytest.raises(ValueError):
            wal.append(last, b"an index already used")
        await wal.append_durable(last + 1, b"appended after the reopen")
        return last
    finally:
        await wal.aclose()


async def test_last_index_survives_a_clean_restart_after_a_roll(backend: StorageBackend, log_dir: str) -> None:
    async with open_group_committer(backend, log_dir) as committer:
        wal, last = await _fill_and_roll(committer, log_dir)
        await wal.aclose()
        assert await _reopened_last_index(committer, log_dir) == last
        assert await _reopened_last_index(committer, log_dir) == last + 1


async def test_last_index_survives_a_crash_right_after_a_roll(backend: StorageBackend, log_dir: str) -> None:
    async with open_group_committer(backend, log_dir) as committer:
        wal, last = await _fill_and_roll(committer, log_dir)
        wal.close_files()  # as a kill -9 leaves it: no recovery point written at close
        assert await _reopened_last_index(committer, log_dir) == last


async def test_last_index_from_an_older_recovery_point_scans_the_sealed_segment(
        backend: StorageBackend, log_dir: str) -> None:
    """Recovery points written before the log's last index was carried say -1 at a
    segment start; the sealed segment before it is scanned to find that index."""
    async with open_group_committer(backend, log_dir) as committer:
        wal, last = await _fill_and_roll(committer, log_dir)
        active = wal.segments()[-1].base_index
        wal.close_files()
        wal_module._write_recovery_point(backend, log_dir, (active, SEGMENT_HEADER.size, -1))
        assert await _reopened_last_index(committer, log_dir, scans_sealed=True) == last


async def test_truncate_to_a_segment_start_after_a_reopen(backend: StorageBackend, log_dir: str) -> None:
    async with open_group_committer(backend, log_dir) as committer:
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=4096, preallocate_bytes=4096)
        for i in range(12):
            await wal.append_durable(i, bytes([i]) * 1000)
        await wal.aclose()
        wal = WriteAheadLog.open(committer, log_dir, segment_bytes=4096, preallocate_bytes=4096)
        active = wal.segments()[-1]
        first_of_active = next(wal.iter_entries(active.base_index))
        wal.truncate(first_of_active.location)  # the sealed segments before it were never scanned
        assert wal.last_index == first_of_active.index - 1
        with pytest.raises(ValueError):
            wal.append(first_of_active.index - 1, b"an index already used")
        await wal.append_durable(first_of_active.index, b"again")
        await wal.aclose()
