"""The write + fdatasync workers: both implementations, one contract."""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path
from typing import Callable, Iterator

import pytest
import trio

import chronik
from chronik.storage import create_backend, get_profile, open_group_committer
from chronik.storage.interface import FileWrite
from chronik.storage.sync_worker import (
    IOV_MAX,
    NATIVE_AVAILABLE,
    NATIVE_IMPORT_ERROR,
    FailedStep,
    NativeSyncWorker,
    SyncWorker,
    ThreadSyncWorker,
)

requires_native = pytest.mark.skipif(not NATIVE_AVAILABLE, reason=f"native extension not built: {NATIVE_IMPORT_ERROR}")

OpenFile = Callable[..., int]


def polling_native_worker() -> NativeSyncWorker:
    """The native worker as the ``low-latency`` profile runs it: polling on both sides."""
    worker = NativeSyncWorker()
    worker.set_polling(get_profile("low-latency").poll_seconds)
    return worker


@pytest.fixture(
    params=[
        pytest.param(NativeSyncWorker, id="native", marks=requires_native),
        pytest.param(polling_native_worker, id="native-polling", marks=requires_native),
        pytest.param(ThreadSyncWorker, id="python"),
    ]
)
def worker(request: pytest.FixtureRequest) -> Iterator[SyncWorker]:
    worker = request.param()
    try:
        yield worker
    finally:
        worker.close()


@pytest.fixture
def open_file(tmp_path: Path) -> Iterator[OpenFile]:
    """``open_file(name, flags=O_RDWR)``: an fd of ``tmp_path/name`` (created), closed after the test."""
    fds: list[int] = []

    def open_(name: str, flags: int = os.O_RDWR) -> int:
        fd = os.open(tmp_path / name, flags | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fds.append(fd)
        return fd

    yield open_
    for fd in fds:
        os.close(fd)


def contents(fd: int) -> bytes:
    return os.pread(fd, os.fstat(fd).st_size, 0)


async def test_writes_land_at_their_offsets(worker: SyncWorker, open_file: OpenFile) -> None:
    fd = open_file("segment")
    await worker.write_and_sync(
        [
            FileWrite(fd, 0, [b"head", bytearray(b"-"), memoryview(b"xxtailxx")[2:6]]),
            FileWrite(fd, 20, [b"gap before me"]),
            FileWrite(fd, 2, [b"AD"]),  # later writes win, in list order
        ]
    )
    assert contents(fd) == b"heAD-tail" + bytes(11) + b"gap before me"
    assert worker.sync_calls == 1
    assert worker.sync_seconds > 0


async def test_more_chunks_than_iov_max(worker: SyncWorker, open_file: OpenFile) -> None:
    fd = open_file("segment")
    chunks = [bytes([i % 251]) * (i % 7) for i in range(2 * IOV_MAX + 123)]  # every 7th chunk empty
    await worker.write_and_sync([FileWrite(fd, 10, chunks)])
    assert contents(fd) == bytes(10) + b"".join(chunks)


async def test_several_files_are_each_synced_once(worker: SyncWorker, open_file: OpenFile) -> None:
    a, b, c = open_file("a"), open_file("b"), open_file("c")
    await worker.write_and_sync(
        [FileWrite(a, 0, [b"a1"]), FileWrite(b, 0, [b"b1"]), FileWrite(a, 2, [b"a2"]), FileWrite(c, 0, [b"c1"])]
    )
    assert (contents(a), contents(b), contents(c)) == (b"a1a2", b"b1", b"c1")
    assert worker.sync_calls == 3


async def test_empty_job_does_nothing(worker: SyncWorker) -> None:
    await worker.write_and_sync([])
    assert worker.sync_calls == 0


def closed_fd() -> int:
    fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    os.close(fd)
    return fd


@pytest.mark.parametrize(
    ("target", "expected"),
    [("closed fd", errno.EBADF), ("read-only fd", errno.EBADF), ("/dev/full", errno.ENOSPC)],
)
async def test_failed_write_raises_and_worker_stays_usable(
    worker: SyncWorker, open_file: OpenFile, target: str, expected: int
) -> None:
    good, other = open_file("good"), open_file("other")
    if target == "closed fd":
        bad = closed_fd()
    elif target == "read-only fd":
        bad = open_file("read-only", os.O_RDONLY)
    else:
        bad = open_file("/dev/full", os.O_WRONLY)  # an absolute name replaces tmp_path
    with pytest.raises(OSError) as failure:
        await worker.write_and_sync(
            [FileWrite(good, 0, [b"before"]), FileWrite(bad, 4096, [b"x" * 10]), FileWrite(other, 0, [b"never"])]
        )
    assert failure.value.errno == expected
    assert f"pwritev of write #1 (fd {bad}, offset 4096, 10 bytes) failed" in str(failure.value)
    assert contents(good) == b"before", "writes before the failure ran"
    assert contents(other) == b"", "the job stops at the first failure"
    assert worker.sync_calls == 0, "nothing is synced once a write failed"

    await worker.write_and_sync([FileWrite(good, 0, [b"after"])])
    assert contents(good) == b"aftere"
    assert worker.sync_calls == 1


async def test_failed_sync_raises_and_stops_syncing(worker: SyncWorker, open_file: OpenFile) -> None:
    first, last = open_file("first"), open_file("last")
    pipe_read, pipe_write = os.pipe()
    try:
        with pytest.raises(OSError) as failure:
            await worker.write_and_sync(
                [
                    FileWrite(first, 0, [b"1"]),
                    FileWrite(pipe_write, 0, []),  # nothing to write; fdatasync of a pipe fails
                    FileWrite(last, 0, [b"2"]),
                ]
            )
    finally:
        os.close(pipe_read)
        os.close(pipe_write)
    assert failure.value.errno == errno.EINVAL
    assert f"fdatasync of fd {pipe_write} (first written by write #1, offset 0) failed" in str(failure.value)
    assert contents(last) == b"2", "every write runs before the first sync"
    assert worker.sync_calls == 2, "the file after the failed sync is not synced"


async def test_partial_write_then_failure(worker: SyncWorker, open_file: OpenFile) -> None:
    """A write crossing RLIMIT_FSIZE is cut short by the kernel, then the retry fails with EFBIG."""
    fd = open_file("limited")
    chunks = [bytes([i]) * 1000 for i in range(100)]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (50_500, hard))  # Python ignores SIGXFSZ
    try:
        with pytest.raises(OSError) as failure:
            await worker.write_and_sync([FileWrite(fd, 0, chunks)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert failure.value.errno == errno.EFBIG
    assert contents(fd) == b"".join(chunks)[:50_500]


async def test_python_worker_resumes_after_short_writes(open_file: OpenFile, monkeypatch: pytest.MonkeyPatch) -> None:
    """Short writes (rare on regular files) resume at the first unwritten byte."""
    fd = open_file("short")
    real_pwritev = os.pwritev
    calls = 0

    def pwritev_at_most_3_bytes(fd: int, buffers: list[memoryview], offset: int) -> int:
        nonlocal calls
        calls += 1
        return real_pwritev(fd, [b"".join(buffers)[:3]], offset)

    monkeypatch.setattr(os, "pwritev", pwritev_at_most_3_bytes)
    worker = ThreadSyncWorker()
    try:
        await worker.write_and_sync([FileWrite(fd, 5, [b"ab", b"", b"cdefg", b"h", b"ijklmnop"])])
    finally:
        worker.close()
    assert contents(fd) == bytes(5) + b"abcdefghijklmnop"
    assert calls == 6


async def test_invalid_arguments_are_not_disk_failures(worker: SyncWorker, open_file: OpenFile) -> None:
    fd = open_file("segment")
    with pytest.raises(ValueError):
        await worker.write_and_sync([FileWrite(fd, -1, [b"x"])])
    with pytest.raises(TypeError):
        await worker.write_and_sync([FileWrite(fd, 0, ["not a buffer"])])  # type: ignore[list-item]
    await worker.write_and_sync([FileWrite(fd, 0, [b"fine"])])
    assert contents(fd) == b"fine"


async def test_concurrent_call_raises(worker: SyncWorker, open_file: OpenFile) -> None:
    fd = open_file("segment")
    outcomes: list[str] = []

    async def write(data: bytes) -> None:
        try:
            await worker.write_and_sync([FileWrite(fd, 0, [data])])
        except RuntimeError:
            outcomes.append("busy")
        else:
            outcomes.append("ok")

    # Both tasks start in the same scheduling batch; the first one's job is
    # in flight until the next I/O poll, so the second must find it busy.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, b"one")
        nursery.start_soon(write, b"two")
    assert sorted(outcomes) == ["busy", "ok"]
    assert contents(fd) in (b"one", b"two")


async def test_already_cancelled_call_still_completes(worker: SyncWorker, open_file: OpenFile) -> None:
    fd = open_file("segment")
    with trio.move_on_after(0) as scope:
        await worker.write_and_sync([FileWrite(fd, 0, [b"durable anyway"])])
    assert scope.cancelled_caught
    assert contents(fd) == b"durable anyway"
    assert worker.sync_calls == 1


async def test_cancel_during_job_waits_for_it(worker: SyncWorker, open_file: OpenFile) -> None:
    fd = open_file("segment")
    data = [os.urandom(1 << 20) for _ in range(8)]
    job_started = trio.Event()

    async def write(cancel_scope: trio.CancelScope) -> None:
        with cancel_scope:
            job_started.set()  # write_and_sync submits before its first checkpoint
            await worker.write_and_sync([FileWrite(fd, 0, data)])
            pytest.fail("write_and_sync returned although cancelled")

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(write, scope)
        await job_started.wait()
        scope.cancel()
    assert scope.cancelled_caught
    assert contents(fd) == b"".join(data)
    assert worker.sync_calls == 1
    await worker.write_and_sync([FileWrite(fd, 0, [b"usable"])])


async def test_failure_is_not_swallowed_by_cancellation(worker: SyncWorker) -> None:
    with trio.move_on_after(0), pytest.raises(OSError) as failure:
        await worker.write_and_sync([FileWrite(closed_fd(), 0, [b"x"])])
    assert failure.value.errno == errno.EBADF


async def test_aborted_wait_still_waits_for_the_job(
    worker: SyncWorker, open_file: OpenFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KeyboardInterrupt pierces cancel shields: the job must still be over when it propagates
    (whether it interrupts the sleep or, with polling, a poll between scheduler rounds)."""
    fd = open_file("segment")

    async def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(trio.lowlevel, "wait_readable", interrupted)
        patch.setattr(trio.lowlevel, "cancel_shielded_checkpoint", interrupted)
        with pytest.raises(KeyboardInterrupt):
            await worker.write_and_sync([FileWrite(fd, 0, [b"x" * (1 << 20)])])
    assert contents(fd) == b"x" * (1 << 20)
    await worker.write_and_sync([FileWrite(fd, 0, [b"usable"])])


async def test_close_is_idempotent_and_final(worker: SyncWorker, open_file: OpenFile) -> None:
    worker.close()
    worker.close()
    with pytest.raises(RuntimeError, match="closed"):
        await worker.write_and_sync([FileWrite(open_file("segment"), 0, [b"x"])])


async def test_close_during_a_job_raises(worker: SyncWorker, open_file: OpenFile,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fd = open_file("segment")
    job_submitted = trio.Event()
    close_tried = trio.Event()
    wait_for_outcome = worker._wait_for_outcome  # type: ignore[attr-defined]

    async def held_wait_for_outcome() -> object:
        # The job is submitted and in flight; keep it so (however fast the
        # disk) until close() has been tried.
        job_submitted.set()
        await close_tried.wait()
        return await wait_for_outcome()

    monkeypatch.setattr(worker, "_wait_for_outcome", held_wait_for_outcome)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(worker.write_and_sync, [FileWrite(fd, 0, [b"x"])])
        await job_submitted.wait()
        with pytest.raises(RuntimeError, match="during write_and_sync"):
            worker.close()
        close_tried.set()
    assert contents(fd) == b"x"


@requires_native
@pytest.mark.parametrize("poll_seconds, sleeps", [(30.0, 0), (1e-6, 1)], ids=["job-ends-while-polling", "poll-time-up"])
async def test_polling_worker_sleeps_only_once_its_poll_time_is_up(
    open_file: OpenFile, monkeypatch: pytest.MonkeyPatch, poll_seconds: float, sleeps: int
) -> None:
    fd = open_file("segment")
    data = [os.urandom(1 << 20) for _ in range(4)]  # milliseconds of work: longer than 1 us of polling
    slept = []
    wait_readable = trio.lowlevel.wait_readable

    async def counted_wait_readable(fd: int) -> None:
        slept.append(fd)
        await wait_readable(fd)

    monkeypatch.setattr(trio.lowlevel, "wait_readable", counted_wait_readable)
    worker = NativeSyncWorker()
    try:
        worker.set_polling(poll_seconds)
        assert worker.poll_seconds == poll_seconds
        await worker.write_and_sync([FileWrite(fd, 0, data)])
        await worker.write_and_sync([FileWrite(fd, 4 << 20, [b"next"])])  # the C thread polled for this one
    finally:
        worker.close()
    assert contents(fd) == b"".join(data) + b"next"
    assert len(slept) >= sleeps and (sleeps or not slept)
    assert worker.sync_calls == 2


@requires_native
async def test_the_native_worker_feeds_its_poll_governor(open_file: OpenFile) -> None:
    """Each job's hand-off overhead reaches the governor; after its first two epochs
    (polling, then sleeping) it has a baseline and has decided."""
    fd = open_file("segment")
    worker = polling_native_worker()
    try:
        governor = worker.governor
        assert governor is not None and worker.polling
        for index in range(2 * governor.epoch_jobs):
            await worker.write_and_sync([FileWrite(fd, index, [b"x"])])
            if index == governor.epoch_jobs - 1:
                assert not worker.polling  # measuring what sleeping costs
        assert governor.last_polling_ns is not None and governor.last_polling_ns > 0
        assert governor.baseline_ns is not None and governor.baseline_ns > 0
        assert worker.polling  # probing polling against that baseline
        worker.set_polling(0)
        assert worker.governor is None and not worker.polling
    finally:
        worker.close()


async def test_python_worker_declines_polling() -> None:
    """Polling would make the poller and the Python thread fight for the GIL."""
    worker = ThreadSyncWorker()
    try:
        worker.set_polling(0.001)
        assert worker.poll_seconds == 0.0
    finally:
        worker.close()


@pytest.mark.parametrize("make", [pytest.param(NativeSyncWorker, marks=requires_native), ThreadSyncWorker])
def test_negative_polling_time_is_refused(make: Callable[[], SyncWorker]) -> None:
    worker = make()
    try:
        with pytest.raises(ValueError, match=">= 0"):
            worker.set_polling(-1.0)
    finally:
        worker.close()


@requires_native
@pytest.mark.parametrize("profile", ["low-latency", "balanced", "throughput"])
async def test_the_commit_profile_sets_the_backends_polling(tmp_path: Path, profile: str) -> None:
    backend = create_backend("native")
    try:
        async with open_group_committer(backend, str(tmp_path), profile):
            assert backend._worker.poll_seconds == get_profile(profile).poll_seconds  # type: ignore[attr-defined]
    finally:
        await backend.aclose()
    assert get_profile("low-latency").poll_seconds > 0 == get_profile("throughput").poll_seconds


def test_native_worker_is_available_when_built() -> None:
    package_dir = Path(chronik.__file__).parent
    if not list(package_dir.glob("_native_wal*.so")):
        pytest.skip("the native extension is not built in this checkout")
    assert NATIVE_AVAILABLE, NATIVE_IMPORT_ERROR


@requires_native
def test_native_step_codes_match_python() -> None:
    from chronik._native_wal import lib

    assert (lib.CHRONIK_STEP_WRITE, lib.CHRONIK_STEP_SYNC) == (FailedStep.WRITE, FailedStep.SYNC)
