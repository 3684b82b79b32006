"""Fault injection through the ``faulty`` backend: EIO, ENOSPC, crashes."""

from __future__ import annotations

import errno
import random

import pytest
import trio

from chronik.storage import (
    CommitterClosed,
    FaultyBackend,
    LogDirectoryFailed,
    WriteAheadLog,
    open_group_committer,
)

DIR = "/data/log"


def entries_of(wal: WriteAheadLog) -> list[tuple[int, bytes]]:
    return [(e.index, bytes(e.payload)) for s in wal.segments() for e in wal.iter_entries(s.base_index)]


async def test_failed_fsync_fails_the_directory_for_good() -> None:
    backend = FaultyBackend()
    async with open_group_committer(backend, DIR) as committer:
        wal = WriteAheadLog.open(committer, DIR)
        await wal.append_durable(0, b"safe")
        backend.fail_syncs(1, errno.EIO)
        pending = [wal.append(i, b"doomed") for i in range(1, 4)]
        for appended in pending:
            with pytest.raises(LogDirectoryFailed) as info:
                await wal.wait_durable(appended)
            assert isinstance(info.value.cause, OSError) and info.value.cause.errno == errno.EIO
        assert committer.failure is not None
        # No retry: later appends fail at once, even though the disk "recovered".
        with pytest.raises(LogDirectoryFailed):
            wal.append(10, b"after")
        # Nothing unacknowledged is readable; the durable prefix still is.
        assert entries_of(wal) == [(0, b"safe")]
        await wal.aclose()


@pytest.mark.parametrize("preallocate", [16 << 10, 64 << 10])
async def test_full_disk_fails_the_directory(preallocate: int) -> None:
    """ENOSPC in a write (small preallocation) or in preallocation itself."""
    backend = FaultyBackend(capacity_bytes=96 * 1024)
    async with open_group_committer(backend, DIR) as committer:
        wal = WriteAheadLog.open(committer, DIR, segment_bytes=1 << 20, preallocate_bytes=preallocate)
        acked = []
        with pytest.raises(LogDirectoryFailed) as info:
            for i in range(1000):
                await wal.append_durable(i, bytes(1000))
                acked.append(i)
        cause = info.value.cause
        assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC
        assert 0 < len(acked) < 1000
        assert committer.failure is not None
        assert [i for i, _ in entries_of(wal)] == acked
        with pytest.raises(LogDirectoryFailed):
            wal.append(5000, b"x")
        await wal.aclose()


@pytest.mark.parametrize("seed", range(20))
async def test_crash_keeps_exactly_the_acknowledged_prefix(seed: int) -> None:
    """Crash at a random moment with appends in flight: every acked entry survives."""
    rng = random.Random(seed)
    backend = FaultyBackend(sync_delay=0.001)
    acked: dict[int, bytes] = {}
    written: dict[int, bytes] = {}
    async with open_group_committer(backend, DIR) as committer:
        wal = WriteAheadLog.open(committer, DIR, segment_bytes=rng.choice([2048, 8192, 1 << 20]), preallocate_bytes=4096)

        async def appender() -> None:
            while True:
                index = 0 if wal.last_index is None else wal.last_index + 1
                payload = rng.randbytes(rng.randrange(1, 700))
                written[index] = payload
                appended = wal.append(index, payload)
                await wal.wait_durable(appended)
                acked[index] = payload

        with trio.move_on_after(rng.uniform(0.005, 0.05)):
            async with trio.open_nursery() as nursery:
                for _ in range(rng.randrange(1, 16)):
                    nursery.start_soon(appender)
        # "Power loss": whatever was not synced is gone, the last write maybe torn.
        crashed = backend.crash(tear=rng.random() < 0.7, rng=rng)
        committer.close()
    async with open_group_committer(crashed, DIR) as committer:
        wal = WriteAheadLog.open(committer, DIR, segment_bytes=1 << 20)
        survivors = dict(entries_of(wal))
        for index, payload in acked.items():
            assert survivors.get(index) == payload, f"acknowledged entry {index} lost"
        for index, payload in survivors.items():
            assert written[index] == payload, f"entry {index} invented"
        assert sorted(survivors) == list(range(len(survivors)))  # a prefix, no holes
        # And the log takes new appends right after what survived.
        nxt = len(survivors)
        await wal.append_durable(nxt, b"after the crash")
        await wal.aclose()


async def test_torn_tail_is_truncated_and_reported() -> None:
    backend = FaultyBackend()
    with trio.CancelScope() as power:  # cancelled at the crash, however slow the machine
        async with open_group_committer(backend, DIR) as committer:
            wal = WriteAheadLog.open(committer, DIR)
            for i in range(5):
                await wal.append_durable(i, b"durable-%d" % i)
            backend.sync_delay = 10.0  # the next commit never finishes before the crash
            wal.append(5, b"x" * 5000)
            await trio.sleep(0.01)
            crashed = backend.crash(tear=True, rng=random.Random(3))
            power.cancel()
            await trio.sleep_forever()
    async with open_group_committer(crashed, DIR) as committer:
        wal = WriteAheadLog.open(committer, DIR)
        assert [i for i, _ in entries_of(wal)] == [0, 1, 2, 3, 4]
        report = wal.recovery
        assert report.truncated_bytes > 0 and report.reason
        assert report.last_index == 4
        await wal.aclose()


async def test_cancelled_committer_fails_waiters_instead_of_hanging() -> None:
    backend = FaultyBackend(sync_delay=1.0)
    outcome: list[BaseException] = []
    with trio.CancelScope() as shutdown:
        async with open_group_committer(backend, DIR) as committer:
            wal = WriteAheadLog.open(committer, DIR)
            first = wal.append(0, b"in flight")
            await trio.sleep(0.01)
            second = wal.append(1, b"queued")
            shutdown.deadline = trio.current_time() + 0.05  # well before the 1 s sync ends
            try:
                await wal.wait_durable(second)
            except BaseException as exc:  # noqa: BLE001 - recording what the waiter sees
                outcome.append(exc)
                raise
    assert first.batch.done.is_set() and second.batch.done.is_set()
    assert isinstance(first.batch.error, CommitterClosed)
    assert isinstance(second.batch.error, CommitterClosed)


async def test_a_kept_failure_is_never_raised_itself_so_refused_appends_pin_nothing() -> None:
    """Every refused append and every waiter of a failed batch gets a fresh LogDirectoryFailed whose
    cause is the kept one; the kept one is never raised, so its traceback cannot collect the frames
    (and the request buffers) of each refused caller -- the leak of 3 x 500 refused 64 KiB produces."""
    backend = FaultyBackend()
    async with open_group_committer(backend, DIR) as committer:
        wal = WriteAheadLog.open(committer, DIR)
        await wal.append_durable(0, b"safe")
        backend.fail_syncs(1, errno.EIO)
        in_batch = [wal.append(i, b"doomed") for i in range(1, 4)]  # one batch, three waiters
        raised = []
        for appended in in_batch:
            with pytest.raises(LogDirectoryFailed) as info:
                await wal.wait_durable(appended)
            raised.append(info.value)
        kept = committer.failure
        assert kept is not None
        for i in range(500):
            with pytest.raises(LogDirectoryFailed) as info:
                wal.append(10 + i, bytes(64 << 10))
            raised.append(info.value)
        with pytest.raises(LogDirectoryFailed) as info:
            committer.submit(wal.active_segment, 0, [b"x"])
        raised.append(info.value)
        assert len({id(e) for e in raised}) == len(raised)  # a fresh one each time
        assert all(e.__cause__ is kept and e.directory == kept.directory and str(e) == str(kept) for e in raised)
        assert kept.__traceback__ is None  # never raised: holds no caller's frames
        assert isinstance(kept.cause, OSError) and kept.cause.errno == errno.EIO
        await wal.aclose()


async def test_preallocation_shrinks_to_what_fits_on_a_nearly_full_disk() -> None:
    """A segment asks for 1 MiB of preallocation; with 100 KiB free it gets what the entry needs,
    so every append that fits succeeds and only one that does not fails the directory."""
    backend = FaultyBackend(capacity_bytes=100 << 10)
    async with open_group_committer(backend, DIR) as committer:
        wal = WriteAheadLog.open(committer, DIR, segment_bytes=4 << 20, preallocate_bytes=1 << 20)
        for i in range(60):
            await wal.append_durable(i, bytes(1000))
        assert committer.failure is None
        with pytest.raises(LogDirectoryFailed):
            for i in range(60, 200):
                await wal.append_durable(i, bytes(1000))
        await wal.aclose()
