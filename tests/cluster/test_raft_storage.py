"""A voter's durable state: hard-state file recovery and the replicated log on the WAL."""

from __future__ import annotations

import os

import pytest

from chronik.cluster.messages import Entry
from chronik.cluster.storage import HARD_STATE_FILE, HardStateCorrupt, RaftStorage, encode_hard_state
from chronik.storage import MemoryBackend, create_backend, open_group_committer


async def test_hard_state_survives_reopen_on_real_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    backend = create_backend("python")
    directory = str(tmp_path)
    try:
        async with open_group_committer(backend, directory) as committer:
            storage = await RaftStorage.open(committer, directory)
            assert (storage.recovered.term, storage.recovered.voted_for) == (0, None)  # missing file: fresh
            await storage.write_hard_state(3, None)
            await storage.write_hard_state(3, 2)
            await storage.aclose()
        (tmp_path / (HARD_STATE_FILE + ".tmp")).write_bytes(b"half a write")  # a crash mid-replace
        async with open_group_committer(backend, directory) as committer:
            storage = await RaftStorage.open(committer, directory)
            assert (storage.recovered.term, storage.recovered.voted_for) == (3, 2)
            assert not os.path.exists(tmp_path / (HARD_STATE_FILE + ".tmp"))
            await storage.aclose()
    finally:
        await backend.aclose()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda data: data[:-1], "bytes, expected"),
        (lambda data: data[:10] + bytes([data[10] ^ 1]) + data[11:], "CRC-32C mismatch"),
        (lambda data: b"", "0 bytes"),
    ],
    ids=["torn", "bit-flip", "empty"],
)
async def test_untrustworthy_hard_state_refuses_to_start(damage, message) -> None:  # type: ignore[no-untyped-def]
    """Forgetting a vote could make two leaders in one term: refuse, loudly."""
    backend = MemoryBackend()
    backend.make_dirs("/n")
    file = backend.open_file(f"/n/{HARD_STATE_FILE}", create=True)
    file.write_durably(0, damage(encode_hard_state(5, 1)))
    file.close()
    async with open_group_committer(backend, "/n") as committer:
        with pytest.raises(HardStateCorrupt, match=message):
            await RaftStorage.open(committer, "/n")


async def test_log_appends_report_durability_truncate_and_recover() -> None:
    backend = MemoryBackend()
    reports: list[tuple[int, int]] = []
    entries = (Entry(1, b"", control=True), Entry(1, b"a"), Entry(2, b"b"), Entry(2, b"c"))
    async with open_group_committer(backend, "/n") as committer:
        storage = await RaftStorage.open(committer, "/n")
        storage.on_log_durable = lambda end, epoch: reports.append((end, epoch))
        storage.append(0, entries[:2])
        appended = storage.append(2, entries[2:])
        await storage.wal.wait_durable(appended)
        assert reports[-1] == (4, 2)
        await storage.truncate(2)
        storage.append(2, (Entry(3, b"x"),))
        await storage.aclose()
    async with open_group_committer(backend, "/n") as committer:
        storage = await RaftStorage.open(committer, "/n")
        assert storage.recovered.entries == (*entries[:2], Entry(3, b"x"))
        assert storage.log_end == 3
        await storage.aclose()


# ---------------------------------------------------------------- snapshots

from chronik.cluster.messages import Snapshot  # noqa: E402
from chronik.cluster.storage import SnapshotCorrupt, encode_snapshot, snapshot_name  # noqa: E402


def log_of(n: int, start: int = 0, epoch: int = 1) -> tuple[Entry, ...]:
    return tuple(Entry(epoch, b"cmd-%d" % i) for i in range(start, start + n))


async def fill(storage: RaftStorage, entries: tuple[Entry, ...]) -> None:
    appended = storage.append(storage.log_end, entries)
    await storage.wal.wait_durable(appended)


async def compacted_store(backend, directory: str = "/n") -> None:  # type: ignore[no-untyped-def]
    """Entries 0..19 (epoch 1), snapshots taken at 6, 12 and 15 (the newest two kept)."""
    async with open_group_committer(backend, directory) as committer:
        storage = await RaftStorage.open(committer, directory)
        await fill(storage, log_of(10))
        for end, more in ((6, 5), (12, 3), (15, 2)):
            assert await storage.save_snapshot(Snapshot(end, 1, b"state-%d" % end))
            await storage.compact(end)
            await fill(storage, log_of(more, storage.log_end))
        assert not await storage.save_snapshot(Snapshot(12, 1, b"old"))  # not newer: refused
        assert storage.log_start == 15 and storage.log_end == 20
        # the WAL keeps what the older kept snapshot (12) needs, whole segments below it are gone
        assert storage.wal.segments()[0].base_index == 10
        await storage.aclose()


@pytest.mark.parametrize("disk", ["memory", "files"])
async def test_snapshot_is_durable_and_recovery_replays_only_the_log_after_it(disk: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    backend = MemoryBackend() if disk == "memory" else create_backend("python")
    directory = "/n" if disk == "memory" else str(tmp_path)
    try:
        await compacted_store(backend, directory)
        assert sorted(n for n in backend.list_dir(directory) if n.startswith("snapshot-")) == [
            snapshot_name(12), snapshot_name(15)
        ]
        async with open_group_committer(backend, directory) as committer:
            storage = await RaftStorage.open(committer, directory)
            recovered = storage.recovered
            assert recovered.snapshot == Snapshot(15, 1, b"state-15")
            assert (recovered.log_start, recovered.start_epoch) == (15, 1)
            assert recovered.entries == log_of(5, 15)
            await fill(storage, log_of(1, 20))  # and the log goes on
            await storage.truncate(18)
            assert storage.log_end == 18
            await storage.aclose()
    finally:
        await backend.aclose()


def damage(backend: MemoryBackend, path: str) -> None:
    file = backend.open_file(path)
    data = bytearray(file.pread(0, file.size()))
    data[30] ^= 0xFF
    file.write_durably(0, bytes(data))
    file.close()


async def test_a_damaged_snapshot_falls_back_to_the_older_one_and_the_log(caplog: pytest.LogCaptureFixture) -> None:
    backend = MemoryBackend()
    await compacted_store(backend)
    damage(backend, f"/n/{snapshot_name(15)}")
    async with open_group_committer(backend, "/n") as committer:
        storage = await RaftStorage.open(committer, "/n")
        assert storage.recovered.snapshot == Snapshot(12, 1, b"state-12")
        assert storage.recovered.entries == log_of(8, 12)  # replayed from the log instead
        await storage.aclose()
    assert any("CRC-32C mismatch" in r.getMessage() for r in caplog.records)


async def test_a_damaged_snapshot_the_log_cannot_stand_in_for_refuses_to_start() -> None:
    backend = MemoryBackend()
    await compacted_store(backend)
    damage(backend, f"/n/{snapshot_name(15)}")
    damage(backend, f"/n/{snapshot_name(12)}")  # the log starts at 10: offsets below are in no valid snapshot
    async with open_group_committer(backend, "/n") as committer:
        with pytest.raises(SnapshotCorrupt, match="no valid snapshot covers"):
            await RaftStorage.open(committer, "/n")


async def assert_recovers(backend: MemoryBackend, snapshot: Snapshot, entries: tuple[Entry, ...]) -> None:
    """Reopening the store in ``/n`` recovers ``snapshot`` and, after it, ``entries``."""
    async with open_group_committer(backend, "/n") as committer:
        storage = await RaftStorage.open(committer, "/n")
        assert storage.recovered.snapshot == snapshot
        assert storage.recovered.entries == entries
        await storage.aclose()


async def test_install_keeps_a_continuing_log_or_discards_it() -> None:
    backend = MemoryBackend()
    async with open_group_committer(backend, "/n") as committer:
        storage = await RaftStorage.open(committer, "/n")
        await fill(storage, log_of(10))
        await storage.install_snapshot(Snapshot(5, 1, b"leader-5"), discard_log=False)
        assert (storage.log_start, storage.log_end) == (5, 10)
        await storage.install_snapshot(Snapshot(30, 4, b"leader-30"), discard_log=True)
        assert (storage.log_start, storage.log_end) == (30, 30)
        assert [n for n in backend.list_dir("/n") if n.startswith("snapshot-")] == [snapshot_name(30)]
        await fill(storage, log_of(2, 30, epoch=4))
        await storage.aclose()
    await assert_recovers(backend, Snapshot(30, 4, b"leader-30"), log_of(2, 30, epoch=4))


async def test_a_discarding_install_after_a_restart_discards_the_sealed_segments_too() -> None:
    """A reopen does not scan the sealed WAL segments before its recovery point; the
    log they hold must still go when an installed snapshot discards it."""
    backend = MemoryBackend()
    await compacted_store(backend)  # entries 10..19 in more than one segment
    async with open_group_committer(backend, "/n") as committer:
        storage = await RaftStorage.open(committer, "/n")
        assert len(storage.wal.segments()) > 1
        await storage.install_snapshot(Snapshot(40, 3, b"leader-40"), discard_log=True)
        assert (storage.log_start, storage.log_end) == (40, 40)
        await fill(storage, log_of(2, 40, epoch=3))
        await storage.aclose()
    await assert_recovers(backend, Snapshot(40, 3, b"leader-40"), log_of(2, 40, epoch=3))


async def test_an_install_cut_short_by_a_crash_is_completed_at_open() -> None:
    """The snapshot became durable, the old log (which does not reach it) was not discarded yet."""
    backend = MemoryBackend()
    async with open_group_committer(backend, "/n") as committer:
        storage = await RaftStorage.open(committer, "/n")
        await fill(storage, log_of(4))
        await storage.aclose()
    file = backend.open_file(f"/n/{snapshot_name(8)}", create=True)
    file.write_durably(0, encode_snapshot(Snapshot(8, 2, b"leader-8")))
    file.close()
    async with open_group_committer(backend, "/n") as committer:
        storage = await RaftStorage.open(committer, "/n")
        assert (storage.recovered.log_start, storage.recovered.entries) == (8, ())
        await fill(storage, log_of(1, 8, epoch=2))
        await storage.aclose()
    async with open_group_committer(backend, "/n") as committer:
        storage = await RaftStorage.open(committer, "/n")
        assert storage.recovered.entries == log_of(1, 8, epoch=2)
        await storage.aclose()
