"""fsync micro-benchmarks: what durable appends cost on this file system.

Run:  python bench/fsync.py [--dir DIR] [--seconds 2] [--record-bytes 512]
                            [--concurrency 1,16,64,256] [--json out.json] [--plot out.png]

Measures, in one run on the same file system (a preallocated 1 GiB file per
row, deleted when the row is done):

* ``raw-write``   one ``os.pwrite`` + one ``os.fdatasync`` per record, no
                  event loop: the per-record baseline.
* ``raw-writev``  ``os.pwritev`` of N records + one ``os.fdatasync``, where N
                  is the concurrency: the limit group commit can reach with N
                  appenders (zero per-record work).
* ``chronik-native`` / ``chronik-python``  N trio tasks appending to a
                  :class:`~chronik.storage.WriteAheadLog` and waiting for
                  durability, group-committed.  These are the rows issue 2's
                  targets are about.
* ``chronik-native-no-poll``  the native rows again (up to 16 appenders)
                  with the profile's polling turned off: both sides of the
                  hand-off to the sync thread sleep at once, as they did
                  before ``CommitProfile.poll_seconds``.
* ``chronik-<backend>-start_now``  one appender that calls
                  ``GroupCommitter.start_now()`` after its append, so the
                  sync starts from its own task instead of the committer
                  task's next scheduler turn (what the broker does at the end
                  of each connection's burst of requests).
* ``chronik-<backend>-1task``  ONE trio task appending N entries, then
                  waiting for the last to be durable (latency: per round of
                  N).  Not "N concurrent appenders": it has the shape of
                  ``raw-writev`` N (one caller, N records per sync), so it
                  shows what the WAL itself costs without N tasks to wake.
* ``trio-tasks (no I/O)``  the closed loop of N trio tasks alone: each
                  waits on an event that is set once all N arrived, with no
                  WAL and no disk -- the ceiling the harness (one trio task
                  per appender) puts on any ``chronik-*`` row.
* ``trio.wrap_file``  N trio tasks each doing write + flush + fdatasync through
                  trio's async file wrapper (a thread hop per call), no group
                  commit.
* ``aiofiles+trio-asyncio``  the same through aiofiles running under
                  trio-asyncio (optional: skipped when not installed).

Prints a table (records/s, syncs/s, p50/p99 append-to-durable latency in ms)
and ratios against the raw numbers; writes JSON and, with matplotlib, a PNG
of latency against concurrency.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Awaitable, Callable

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from stats import percentile_ms  # noqa: E402  (bench/stats.py, next to this script)
from chronik.storage import (  # noqa: E402
    CommitProfile,
    WriteAheadLog,
    available_backends,
    create_backend,
    get_profile,
    open_group_committer,
)

PREALLOCATE = 1 << 30


@dataclass
class Result:
    method: str
    concurrency: int
    records: int
    syncs: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds

    @property
    def syncs_per_s(self) -> float:
        return self.syncs / self.seconds


def percentile(samples: list[float], q: float) -> float:
    value = percentile_ms(samples, q)
    return float("nan") if value is None else value


def preallocated_file(directory: str, name: str) -> int:
    fd = os.open(os.path.join(directory, name), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.posix_fallocate(fd, 0, PREALLOCATE)
    os.fsync(fd)
    return fd


def bench_raw(directory: str, record: bytes, per_sync: int, seconds: float, *, vectored: bool) -> Result:
    """``vectored=False``: one pwrite + fdatasync per record; ``True``: pwritev of ``per_sync`` records."""
    method = "raw-writev" if vectored else "raw-write"
    fd = preallocated_file(directory, f"{method}-{per_sync}")
    latencies: list[float] = []
    offset = syncs = 0
    chunks = [record] * per_sync
    stride = len(record) * per_sync
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline and offset + stride < PREALLOCATE:
        t = time.perf_counter()
        if not vectored:
            os.pwrite(fd, record, offset)
        else:
            os.pwritev(fd, chunks, offset)
        os.fdatasync(fd)
        latencies.append(time.perf_counter() - t)
        offset += stride
        syncs += 1
    elapsed = time.perf_counter() - started
    os.close(fd)
    os.unlink(os.path.join(directory, f"{method}-{per_sync}"))
    return Result(method, per_sync, syncs * per_sync, syncs, elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99))


async def closed_loop(
    concurrency: int, seconds: float, one_append: Callable[[], Awaitable[None]]
) -> tuple[int, list[float], float]:
    """Run ``concurrency`` tasks calling ``one_append`` until ``seconds`` pass."""
    latencies: list[float] = []
    stop = False

    async def worker() -> None:
        while not stop:
            t = time.perf_counter()
            await one_append()
            latencies.append(time.perf_counter() - t)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
        await trio.sleep(seconds)
        stop = True
    return len(latencies), latencies, time.perf_counter() - started


async def bench_chronik(directory: str, backend_name: str, profile: str | CommitProfile, record: bytes, concurrency: int,
                        seconds: float, start_now: bool = False, label: str = "") -> Result:
    """N appenders; with ``start_now`` each calls ``committer.start_now()`` after its append, as the
    broker does at the end of each connection's burst of requests.  ``label`` is appended to the row name."""
    backend = create_backend(backend_name)
    log_dir = os.path.join(directory, f"wal-{backend_name}-{concurrency}")
    try:
        async with open_group_committer(backend, log_dir, profile) as committer:
            wal = WriteAheadLog.open(committer, log_dir, segment_bytes=PREALLOCATE, preallocate_bytes=PREALLOCATE)
            next_index = 0

            async def one_append() -> None:
                nonlocal next_index
                index = next_index
                next_index += 1
                appended = wal.append(index, record)
                if start_now:
                    committer.start_now()
                await wal.wait_durable(appended)

            records, latencies, elapsed = await closed_loop(concurrency, seconds, one_append)
            syncs = committer.stats.batches
            await wal.aclose()
    finally:
        await backend.aclose()
        shutil.rmtree(log_dir, ignore_errors=True)  # 1 GiB preallocated per row
    name = f"chronik-{backend_name}" + ("-start_now" if start_now else "") + label
    return Result(name, concurrency, records, syncs, elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99))


async def bench_chronik_one_task(
    directory: str, backend_name: str, profile: str, record: bytes, per_round: int, seconds: float
) -> Result:
    """One task: append ``per_round`` entries, wait for the last, repeat (the shape of raw-writev)."""
    backend = create_backend(backend_name)
    log_dir = os.path.join(directory, f"wal-{backend_name}-1task-{per_round}")
    try:
        async with open_group_committer(backend, log_dir, profile) as committer:
            wal = WriteAheadLog.open(committer, log_dir, segment_bytes=PREALLOCATE, preallocate_bytes=PREALLOCATE)
            latencies: list[float] = []
            index = 0
            deadline = time.perf_counter() + seconds
            started = time.perf_counter()
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                for _ in range(per_round):
                    appended = wal.append(index, record)
                    index += 1
                await wal.wait_durable(appended)
                latencies.append(time.perf_counter() - t)
            elapsed = time.perf_counter() - started
            syncs = committer.stats.batches
            await wal.aclose()
    finally:
        await backend.aclose()
        shutil.rmtree(log_dir, ignore_errors=True)  # 1 GiB preallocated per row
    return Result(
        f"chronik-{backend_name}-1task", per_round, index, syncs, elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99)
    )


async def bench_harness_only(concurrency: int, seconds: float) -> Result:
    """``closed_loop`` with no WAL and no I/O: each round ends when all tasks arrived."""
    arrived = 0
    release = trio.Event()

    async def one_append() -> None:
        nonlocal arrived, release
        event = release
        arrived += 1
        if arrived == concurrency:
            arrived = 0
            release = trio.Event()
            event.set()
        await event.wait()  # a checkpoint even for the task that set it

    records, latencies, elapsed = await closed_loop(concurrency, seconds, one_append)
    return Result("trio-tasks (no I/O)", concurrency, records, 0, elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99))


async def bench_trio_wrap_file(directory: str, record: bytes, concurrency: int, seconds: float) -> Result:
    path = os.path.join(directory, f"wrap-{concurrency}")
    os.close(preallocated_file(directory, f"wrap-{concurrency}"))
    f = await trio.open_file(path, "r+b", buffering=0)  # unbuffered: one write(2) per call

    async def one_append() -> None:
        await f.write(record)
        await trio.to_thread.run_sync(os.fdatasync, f.fileno())

    records, latencies, elapsed = await closed_loop(concurrency, seconds, one_append)
    await f.aclose()
    os.unlink(path)
    return Result("trio.wrap_file", concurrency, records, records, elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99))


def bench_aiofiles(directory: str, record: bytes, concurrency: int, seconds: float) -> Result | None:
    try:
        import aiofiles
        import aiofiles.os
        import trio_asyncio
    except ImportError:
        return None
    path = os.path.join(directory, f"aiofiles-{concurrency}")
    os.close(preallocated_file(directory, f"aiofiles-{concurrency}"))

    async def run() -> Result:
        async with trio_asyncio.open_loop() as loop:
            f = await trio_asyncio.aio_as_trio(aiofiles.open)(path, "r+b", buffering=0, loop=loop)
            fdatasync = aiofiles.os.wrap(os.fdatasync)

            async def write_and_sync() -> None:
                await f.write(record)
                # The loop is passed explicitly: under trio-asyncio, asyncio.get_running_loop()
                # (aiofiles' default) finds no loop inside aio_as_trio and raises.
                await fdatasync(f.fileno(), loop=loop)

            async def one_append() -> None:
                await trio_asyncio.aio_as_trio(write_and_sync)()

            records, latencies, elapsed = await closed_loop(concurrency, seconds, one_append)
            await trio_asyncio.aio_as_trio(f.close)()
        os.unlink(path)
        return Result("aiofiles+trio-asyncio", concurrency, records, records, elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99))

    return trio.run(run)


def print_table(results: list[Result], raw_write: Result, writev: dict[int, Result]) -> None:
    header = f"{'method':<24}{'appenders':>10}{'records/s':>12}{'syncs/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs writev':>11}{'p50 vs 1 sync':>15}"
    print(header)
    print("-" * len(header))
    for r in results:
        limit = writev.get(r.concurrency)
        ratio = f"{r.records_per_s / limit.records_per_s:.2f}x" if limit and r.method != "raw-writev" else ""
        p50_ratio = f"{r.p50_ms / raw_write.p50_ms:.2f}x"
        print(
            f"{r.method:<24}{r.concurrency:>10}{r.records_per_s:>12,.0f}{r.syncs_per_s:>10,.0f}"
            f"{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}{ratio:>11}{p50_ratio:>15}"
        )


def plot(results: list[Result], path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_lat, ax_rate) = plt.subplots(1, 2, figsize=(12, 4.5))
    for method in dict.fromkeys(r.method for r in results):
        rows = [r for r in results if r.method == method]
        xs = [r.concurrency for r in rows]
        ax_lat.plot(xs, [r.p50_ms for r in rows], marker="o", label=f"{method} p50")
        ax_rate.plot(xs, [r.records_per_s for r in rows], marker="o", label=method)
    for ax in (ax_lat, ax_rate):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent appenders")
        ax.grid(True, alpha=0.3)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("append-to-durable p50 (ms)")
    ax_rate.set_yscale("log")
    ax_rate.set_ylabel("durable records/s")
    ax_lat.legend(fontsize=7)
    ax_rate.legend(fontsize=7)
    fig.suptitle("Chronik fsync micro-benchmark (latency and throughput vs concurrency)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="directory on the file system to measure (default: a temp dir under the cwd)")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    parser.add_argument("--record-bytes", type=int, default=512)
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--profile", default="low-latency", help="WAL profile for the chronik rows")
    parser.add_argument("--skip-comparisons", action="store_true", help="skip trio.wrap_file and aiofiles")
    parser.add_argument("--json", default="bench/results/fsync.json")
    parser.add_argument("--plot", default="bench/results/fsync.png")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    record = os.urandom(args.record_bytes)
    directory = tempfile.mkdtemp(prefix="chronik-fsync-", dir=args.dir or os.getcwd())
    load_before = os.getloadavg()
    results: list[Result] = []
    try:
        raw_write = bench_raw(directory, record, 1, args.seconds, vectored=False)
        results.append(raw_write)
        writev = {n: bench_raw(directory, record, n, args.seconds, vectored=True) for n in levels}
        results.extend(writev.values())
        backends = [b for b in ("native", "python") if b in available_backends()]
        for backend in backends:
            for n in levels:
                results.append(trio.run(bench_chronik, directory, backend, args.profile, record, n, args.seconds))
        profile = get_profile(args.profile)
        if profile.poll_seconds and "native" in backends:  # the same profile without polling, for comparison
            unpolled = dataclasses.replace(profile, poll_seconds=0.0)
            for n in (n for n in levels if n <= 16):
                results.append(trio.run(bench_chronik, directory, "native", unpolled, record, n, args.seconds, False, "-no-poll"))
        for backend in backends:  # a lone appender that starts its commit itself (the broker's burst end)
            results.append(trio.run(bench_chronik, directory, backend, args.profile, record, 1, args.seconds, True))
        for backend in backends:
            for n in levels:
                results.append(trio.run(bench_chronik_one_task, directory, backend, args.profile, record, n, args.seconds))
        for n in levels:
            results.append(trio.run(bench_harness_only, n, min(args.seconds, 1.0)))
        if not args.skip_comparisons:
            for n in levels:
                results.append(trio.run(bench_trio_wrap_file, directory, record, n, args.seconds))
            for n in levels:
                r = bench_aiofiles(directory, record, n, args.seconds)
                if r is not None:
                    results.append(r)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    load = ", ".join(f"{a:.2f}->{b:.2f}" for a, b in zip(load_before, os.getloadavg()))
    print(
        f"record {args.record_bytes} B, {args.seconds:.1f} s per row, profile {args.profile}, cpus {os.cpu_count()}, "
        f"load average (1/5/15 min, before->after) {load}"
    )
    print_table(results, raw_write, writev)
    print(
        "chronik-* rows: N trio tasks, one append + durability wait each (the issue 2 targets); "
        "*-1task rows: one task appending N entries per durability wait, the shape of raw-writev N; "
        "trio-tasks (no I/O): the N-task harness alone, an upper bound for the chronik-* rows."
    )
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(
            [asdict(r) | {"records_per_s": r.records_per_s, "syncs_per_s": r.syncs_per_s} for r in results],
            f,
            indent=2,
        )
    print(f"json: {args.json}")
    if plot(results, args.plot):
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
