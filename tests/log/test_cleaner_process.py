"""The cleaner's child process on real files, and the I/O throttle (log.cleaner.io.max.bytes.per.second)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from chronik.log import PartitionLog
from chronik.log.cleaner import Span, Throttler, Yielder, commit, tasks_waiting_for_a_cpu
from chronik.log import cleaner_manager
from chronik.log.cleaner_manager import LogCleaner
from chronik.log.cleaner_process import CleanerProcess, _read_frame, _write_frame
from chronik.metadata.topic_configs import TOPIC_CONFIGS
from chronik.protocol import Record, decode_records, encode_batch
from chronik.storage import GroupCommitter, create_backend, get_profile, open_group_committer
from chronik.storage.files import create_fresh
from chronik.storage.wal import discard_replacements, write_replacement

from .conftest import append

NOW = int(time.time() * 1000)
PARAMS = dict(segment_bytes=1 << 20, budget_bytes=1 << 20, delete_retention_ms=0, now_ms=NOW)


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_throttler_holds_the_average_rate() -> None:
    fake = FakeTime()
    throttle = Throttler(1000.0, clock=fake.clock, sleep=fake.sleep)
    started = fake.now
    for _ in range(100):  # 100 x 50 bytes, with 1 ms of work each: 50 kB/s unthrottled
        fake.now += 0.001
        throttle(50)
    assert fake.slept and max(fake.slept) < 0.1  # it waited, in small steps
    assert 5000 / (fake.now - started) == pytest.approx(1000.0, rel=0.02)


def test_the_throttler_lets_a_slow_pass_be_and_the_default_never_waits() -> None:
    fake = FakeTime()
    slow = Throttler(1000.0, clock=fake.clock, sleep=fake.sleep)
    unlimited = Throttler(clock=fake.clock, sleep=fake.sleep)
    for _ in range(50):
        fake.now += 0.1
        slow(50)  # 500 bytes/s, below the limit
        unlimited(1 << 30)
    assert fake.slept == []
    with pytest.raises(ValueError):
        Throttler(0.0)


def test_the_yielder_rests_after_each_stretch_of_work_when_a_task_waits_for_a_cpu() -> None:
    fake = FakeTime()
    busy = [True]
    rest = Yielder(clock=fake.clock, sleep=fake.sleep, waiting=lambda: busy[0])
    for _ in range(100):  # 100 batches of 0.3 ms each: 30 ms of work
        fake.now += 0.0003
        rest()
    assert fake.slept == [Yielder.REST] * len(fake.slept)
    assert len(fake.slept) == pytest.approx(0.030 / (4 * 0.0003), abs=2)  # once per 4 batches (1.2 ms >= WORK)
    fake.slept.clear()
    busy[0] = False  # nothing waits: no rest
    for _ in range(100):
        fake.now += 0.0003
        rest()
    assert fake.slept == []
    quick = Yielder(clock=fake.clock, sleep=fake.sleep, waiting=lambda: True)
    fake.now += Yielder.WORK / 2
    quick()
    assert fake.slept == []  # not before WORK has passed


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="needs /proc/loadavg")
def test_more_spinning_processes_than_cpus_count_as_tasks_waiting() -> None:
    waiting = tasks_waiting_for_a_cpu()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(len(os.sched_getaffinity(0)) + 1)]
    try:
        deadline = time.monotonic() + 10
        while not waiting() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert waiting()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@asynccontextmanager
async def written_log(directory: Path) -> AsyncIterator[tuple[PartitionLog, dict[bytes, bytes], GroupCommitter]]:
    """A partition on the python backend (real files), 30 updates of 8 keys over sealed segments;
    the latest value of each key; the log's committer."""
    latest: dict[bytes, bytes] = {}
    async with open_group_committer(create_backend("python"), str(directory), get_profile("throughput")) as committer:
        log = PartitionLog.open(committer, f"{directory}/t-0", topic="t", partition=0, topic_id="0" * 32,
                                segment_bytes=2048)
        try:
            for r in range(30):
                pairs = [(b"k%d" % k, b"value %d of %d" % (r, k) + b"." * 40) for k in range(8)]
                latest.update(pairs)
                await append(log, encode_batch([Record(i, NOW - 1000, key, value) for i, (key, value) in enumerate(pairs)]))
            log.wal.roll()
            yield log, latest, committer
        finally:
            await log.aclose()


async def test_the_process_cleans_passes_one_after_another_and_dies_with_its_stdin(tmp_path: Path) -> None:
    process = CleanerProcess()
    async with written_log(tmp_path) as (log, latest, committer):
        spans = [Span(*s) for s in log.sealed_segments()]
        stats = process.run(log.directory, spans, 0, **PARAMS)
        assert stats.error is None and stats.replacements and stats.records_kept == len(latest)
        commit(log.wal, stats)
        for replacement, rows in stats.replacements:
            for old in log.install_cleaned(replacement, rows):
                old.close()
        records = [r for stored in log.read(0, 1 << 30) for r in decode_records(stored)]
        assert {r.key: r.value for r in records} == latest and len(records) == len(latest)
        child = process._child
        assert child is not None
        again = process.run(log.directory, [Span(*s) for s in log.sealed_segments()], stats.end_offset, **PARAMS)
        assert process._child is child  # the same process, started once
        assert again.error is None
        process.close()
    assert child.returncode == 0  # it exited as its stdin closed


async def test_a_dead_process_fails_one_pass_and_the_next_starts_another(tmp_path: Path) -> None:
    process = CleanerProcess()
    async with written_log(tmp_path) as (log, _, _):
        spans = [Span(*s) for s in log.sealed_segments()]
        process.run(log.directory, [], 0, **PARAMS)  # started, nothing to clean
        child = process._child
        assert child is not None
        child.kill()
        child.wait()
        # found dead before the pass: replaced at once
        assert process.run(log.directory, spans, 0, **PARAMS).error is None
        assert process._child is not child
        with pytest.raises(RuntimeError, match="cleaner process: .*FileNotFoundError"):
            process.run(f"{tmp_path}/no-such-log", spans, 0, **PARAMS)
        assert process.run(log.directory, spans, 0, **PARAMS).error is None  # a failed pass leaves it usable
        process.close()


BROKER = """
import os, pickle, subprocess, sys, time
from chronik.log.cleaner_process import _write_frame
child = subprocess.Popen([sys.executable, "-m", "chronik.log.cleaner_process", str(os.getpid())], stdin=subprocess.PIPE)
with open(sys.argv[1], "rb") as f:
    _write_frame(child.stdin, f.read())
print(child.pid, flush=True)
time.sleep(60)
"""


async def test_the_child_exits_when_its_broker_dies_even_mid_pass(tmp_path: Path) -> None:
    """A stand-in broker sends a pass throttled to 200 bytes/s (it would take minutes) and is
    killed with -9: its pipe to the child closes, and the child goes, mid-pass, leaving
    no swap file."""
    async with written_log(tmp_path) as (log, _, _):
        spans = [Span(*s) for s in log.sealed_segments()]
        request = tmp_path / "request"
        request.write_bytes(pickle.dumps((log.directory, spans, 0, {**PARAMS, "io_max_bytes_per_second": 200.0})))
        broker = subprocess.Popen([sys.executable, "-c", BROKER, str(request)], stdout=subprocess.PIPE, text=True)
        assert broker.stdout is not None
        child_pid = int(broker.stdout.readline())
        time.sleep(1.0)
        os.kill(child_pid, 0)  # alive (and busy) while the broker is
        broker.send_signal(signal.SIGKILL)
        broker.wait()
        broker.stdout.close()
        deadline = time.monotonic() + 60  # at nice 19 on a busy machine, it may still be starting
        while not _gone(child_pid):
            assert time.monotonic() < deadline, "the cleaner process outlived its broker"
            time.sleep(0.05)
        assert not [n for n in os.listdir(log.directory) if n.endswith((".swap", ".cleaned"))]


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reaped here if this process became its subreaper
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")  # a zombie has exited
    except FileNotFoundError:
        return True


def test_the_child_runs_at_a_low_priority() -> None:
    process = CleanerProcess()
    try:
        process.run("/nonexistent", [], 0, **PARAMS)
        child = process._child
        assert child is not None
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 19
        assert os.getsid(child.pid) == os.getsid(0)  # the broker's session (and CPU autogroup)
        assert os.getpgid(child.pid) == child.pid != os.getpgid(0)  # not the terminal's Ctrl-C
        if hasattr(os, "sched_getscheduler"):
            assert os.sched_getscheduler(child.pid) == os.SCHED_IDLE
    finally:
        process.close()


async def test_stopping_the_cleaner_abandons_a_pass_in_flight_and_leaves_the_log_as_it_was(tmp_path: Path) -> None:
    async with written_log(tmp_path) as (log, latest, committer):
        before = [(r.offset, r.key, r.value) for stored in log.read(0, 1 << 30) for r in decode_records(stored)]
        configs = {name: d.default for name, d in TOPIC_CONFIGS.items()}
        configs.update({"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"})
        cleaner = LogCleaner(committer, str(tmp_path), [log], lambda _topic: configs, backoff_ms=10,
                             io_max_bytes_per_second=1000.0)  # a pass would take about a minute
        async with trio.open_nursery() as nursery:
            await nursery.start(cleaner.run)
            while not cleaner._running:
                await trio.sleep(0.05)
            await trio.sleep(1.0)  # the process is mid-pass (the first batches read, throttled)
            started = trio.current_time()
            nursery.cancel_scope.cancel()
        assert trio.current_time() - started < 10
        assert not [n for n in os.listdir(log.directory) if n.endswith((".swap", ".cleaned"))]
        assert cleaner.uncleanable == {}
        after = [(r.offset, r.key, r.value) for stored in log.read(0, 1 << 30) for r in decode_records(stored)]
        assert after == before and len(before) > len(latest)


def _deleted_files_open_in(directory: str) -> list[str]:
    """Files of ``directory`` this process still holds open although they were deleted."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(directory) and target.endswith(" (deleted)"):
            found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_a_pass_closes_the_replaced_segments_off_the_event_loop(tmp_path: Path) -> None:
    async with written_log(tmp_path) as (log, latest, committer):
        configs = {name: d.default for name, d in TOPIC_CONFIGS.items()}
        configs.update({"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"})
        cleaner = LogCleaner(committer, str(tmp_path), [log], lambda _topic: configs)
        closed_in: list[bool] = []
        real_close_files = cleaner_manager.close_files

        def close_files(files):  # type: ignore[no-untyped-def]
            files = list(files)
            closed_in.append(bool(files) and threading.current_thread() is not threading.main_thread())
            real_close_files(files)

        cleaner_manager.close_files = close_files  # type: ignore[assignment]
        try:
            [candidate] = cleaner.candidates(NOW)
            assert await cleaner.clean(candidate)
        finally:
            cleaner_manager.close_files = real_close_files  # type: ignore[assignment]
            cleaner.close()
        assert cleaner.uncleanable == {}
        assert closed_in == [True]  # in a worker thread
        assert _deleted_files_open_in(log.directory) == []
        records = [r for stored in log.read(0, 1 << 30) for r in decode_records(stored)]
        assert {r.key: r.value for r in records} == latest and len(records) == len(latest)


async def test_discard_replacements_removes_what_an_abandoned_pass_wrote(tmp_path: Path) -> None:
    async with written_log(tmp_path) as (log, _, committer):
        segments = sorted(n for n in os.listdir(log.directory) if n.endswith(".wal"))
        spans = [Span(*s) for s in log.sealed_segments()]
        backend = committer.backend
        swap = write_replacement(backend, log.directory, spans[0].base, spans[1].next_offset, iter([]))
        cleaned = create_fresh(backend, f"{log.directory}/{spans[2].base:020d}.wal.cleaned")
        cleaned.close()
        assert sorted(discard_replacements(backend, log.directory)) == sorted(
            [Path(swap.swap_path).name, f"{spans[2].base:020d}.wal.cleaned"])
        assert sorted(n for n in os.listdir(log.directory) if n.endswith(".wal")) == segments
        assert not [n for n in os.listdir(log.directory) if n.endswith((".swap", ".cleaned"))]
        assert discard_replacements(backend, log.directory) == []


def test_a_child_started_by_hand_leaves_its_starters_cpu_share_alone() -> None:
    """The priority is the starter's business (:class:`CleanerProcess` lowers it): a child
    started some other way, in its starter's session, changes no autogroup."""
    own = Path("/proc/self/autogroup")
    before = own.read_text() if own.exists() else None
    child = subprocess.Popen([sys.executable, "-m", "chronik.log.cleaner_process", str(os.getpid())],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdin is not None and child.stdout is not None
        _write_frame(child.stdin, pickle.dumps(("/nonexistent", [], 0, PARAMS)))
        assert _read_frame(child.stdout) is not None  # it started, and ran a pass
        if before is not None:
            assert own.read_text() == before
    finally:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.wait(30)
        child.stdout.close()


def test_a_child_whose_broker_stopped_reading_exits_quietly() -> None:
    """The broker stops (or dies) while a pass finishes: the reply meets a closed pipe, and
    the child exits 0 with nothing on the stderr it shares with the broker's log (it printed a
    BrokenPipeError traceback there)."""
    child = subprocess.Popen([sys.executable, "-m", "chronik.log.cleaner_process", str(os.getpid())],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    child.stdout.close()  # nobody reads the reply
    try:
        _write_frame(child.stdin, pickle.dumps(("/nonexistent", [], 0, PARAMS)))
        assert child.wait(60) == 0  # its stdin still open: the failed reply, not end of file, ended it
        assert child.stderr.read() == b""
    finally:
        child.stdin.close()
        child.wait(30)
        child.stderr.close()
