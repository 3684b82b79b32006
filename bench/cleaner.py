"""Log cleaner benchmark: compaction throughput, space reclaimed, produce latency while cleaning.

Run:  python bench/cleaner.py [--mb 64] [--keys 20000] [--batch-records 1000] [--seconds 8] [--rounds 1]
                               [--skip-latency] [--skip-throughput] [--set NAME=VALUE ...] [--json out.json]

1. **Throughput** (in-process, the WAL backend the broker would use): a
   partition log filled with ``--mb`` MB of 256 B records in batches of
   ``--batch-records`` (1000),
   keys drawn from ``--keys`` distinct keys (so each key is updated many
   times), segments of 8 MiB; then one cleaning pass
   (:func:`chronik.log.cleaner.clean_partition`, paced as in the broker's
   cleaner process: no I/O limit, a :class:`~chronik.log.cleaner.Yielder`
   rest after every millisecond of work) over every sealed segment.
   Reports MB/s (bytes read by the pass / its time, map and rewrite
   included, the fsyncs of the swap too), the pass's CPU seconds (on a shared
   machine the wall time includes waiting for a core) and the space reclaimed.
   Target: >= 50 MB/s.
2. **Produce latency** (``python -m chronik serve`` child processes): first
   a warm-up: a small compacted topic gets a few batches, and the probe
   (below) runs until the broker has logged its pass over it, so the cleaner
   process (``python -m chronik.log.cleaner_process``, started at a broker's
   first pass and kept for its lifetime) has started before the measurement.
   Then a compacted topic is filled with ``--mb`` MB of updates while its
   policy is still ``delete``; then, while updates keep streaming into it at
   2 MB/s, it is altered to ``compact`` (so the cleaner has the whole
   backlog to clean) and a probe producer (one 256 B message in flight,
   acks=all, another topic) runs for ``--seconds``.  Once on a broker with
   ``log.cleaner.enable=false`` (the same warm-up steps, minus the cleaner),
   once with the cleaner on; ``--rounds`` pairs, in ABBA order.  Reports
   p50/p99 of each, the p99 increase (pooled, and the median of the rounds'),
   and p50/p99 of the probes that overlapped a time the cleaner process was
   busy (sampled from /proc every 10 ms: runnable, or using CPU), the figure
   the target is about.  Target: <= +20 %.  Separately, labelled "once per
   broker start": p50/p99 of the warm-up's probes that overlapped the
   cleaner process's start-up (importing the package, ~0.3-0.7 s of CPU),
   and of the cleaner-off broker's warm-up probes.  (With
   ``--set log.cleaner.threads=N`` only one of the N processes is warmed.)

Both are run briefly on a shared machine: read the figures as indications.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parents[1]
RECORD_BYTES = 256
BATCH_RECORDS = 1000  # ~256 KB batches, as librdkafka sends them under load (batch.size 1 MB)


def _batches(total_bytes: int, keys: int, seed: int = 14, batch_records: int = BATCH_RECORDS) -> list[bytearray]:
    from chronik.protocol import Record, encode_batch

    rng = random.Random(seed)
    now = int(time.time() * 1000)
    batches = []
    value_len = RECORD_BYTES - 16 - 20  # key (~16 B) and record overhead (~20 B)
    payload = rng.randbytes(value_len)
    made = 0
    while made < total_bytes:
        records = [Record(i, now, b"key-%011d" % rng.randrange(keys), payload) for i in range(batch_records)]
        batch = encode_batch(records)
        batches.append(batch)
        made += len(batch)
    return batches


async def _throughput(mb: int, keys: int, directory: str, batch_records: int = BATCH_RECORDS) -> dict[str, float]:
    from chronik.log import PartitionLog
    from chronik.log import cleaner as _cleaner
    from chronik.log.cleaner import Span
    clean_partition = _cleaner.clean_partition
    from chronik.protocol import validate_batch
    from chronik.storage import create_backend, get_profile, open_group_committer

    backend = create_backend("")
    batches = _batches(mb << 20, keys, batch_records=batch_records)
    async with open_group_committer(backend, directory, get_profile("throughput")) as committer:
        log = PartitionLog.open(committer, f"{directory}/bench-0", topic="bench", partition=0, topic_id="0" * 32,
                                segment_bytes=8 << 20)
        info = None
        for batch in batches:
            info = log.append_batch(batch, validate_batch(batch), log_append_time=None)
        assert info is not None
        await log.wait_durable(info)
        log.wal.roll()
        spans = [Span(*s) for s in log.sealed_segments()]
        before = log.size_bytes()
        started = time.perf_counter()
        run = trio.to_thread.run_sync if not os.environ.get("CLEANER_INLINE") else (lambda f: _now(f))
        cpu = []

        def work():  # type: ignore[no-untyped-def]
            # as in the broker's cleaner process (chronik.log.cleaner_process): no I/O limit, a short rest
            # after every millisecond of work (Yielder)
            cpu_started = time.thread_time()
            rest = _cleaner.Yielder()
            try:
                return clean_partition(
                    log.wal, spans, 0, segment_bytes=8 << 20, budget_bytes=128 << 20, delete_retention_ms=86400000,
                    now_ms=int(time.time() * 1000), pause=lambda _: rest())
            finally:
                cpu.append(time.thread_time() - cpu_started)

        stats = await run(work)
        elapsed = time.perf_counter() - started
        for replacement, rows in stats.replacements:
            for old in log.install_cleaned(replacement, rows):
                old.close()
        after = log.size_bytes()
        await log.aclose()
    await backend.aclose()
    return {"mb_read": stats.bytes_read / 1e6, "seconds": elapsed, "mb_per_s": stats.bytes_read / 1e6 / elapsed,
            "cpu_seconds": cpu[0], "mb_per_cpu_s": stats.bytes_read / 1e6 / cpu[0],
            "map_seconds": stats.map_seconds, "records_read": stats.records_read, "records_kept": stats.records_kept,
            "bytes_before": before, "bytes_after": after, "reclaimed": 1 - after / before}


def _latency(producer_conf: dict, topic: str, seconds: float,
             until: Callable[[], bool] | None = None, limit: float = 120.0) -> list[tuple[float, float]]:
    """(start time, seconds) of each probe: one 256 B message in flight, acks=all; for
    ``seconds``, then on while ``until`` (if given) is false, at most ``limit`` seconds in all."""
    import confluent_kafka

    producer = confluent_kafka.Producer({**producer_conf, "acks": "all", "linger.ms": 0})
    samples: list[tuple[float, float]] = []
    payload = os.urandom(RECORD_BYTES)
    opened = time.monotonic()
    while True:
        elapsed = time.monotonic() - opened
        if elapsed >= limit or (elapsed >= seconds and (until is None or until())):
            break
        done = threading.Event()
        started = time.perf_counter()
        producer.produce(topic, payload, on_delivery=lambda err, msg: done.set())
        while not done.is_set():
            producer.poll(0.001)
        samples.append((started, time.perf_counter() - started))
    producer.flush(10)
    return samples


async def _now(work):  # type: ignore[no-untyped-def]
    return work()  # CLEANER_INLINE=1: on the calling thread, for profilers


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else float("nan")


def _fill(conf: dict, mb: float, keys: int, seed: int, stop: threading.Event | None = None,
          mb_per_s: float | None = None, topic: str = "compacted") -> None:
    import confluent_kafka

    producer = confluent_kafka.Producer({**conf, "linger.ms": 20, "batch.size": 1 << 20, "acks": 1})
    rng = random.Random(seed)
    payload = rng.randbytes(RECORD_BYTES - 16)
    started = time.monotonic()
    sent = 0
    while sent < mb * (1 << 20) and not (stop is not None and stop.is_set()):
        key = b"key-%011d" % rng.randrange(keys)
        while True:
            try:
                producer.produce(topic, payload, key=key)
                break
            except BufferError:  # the client's queue is full: let the broker catch up
                producer.poll(0.05)
        sent += RECORD_BYTES
        if sent % (1 << 16) < RECORD_BYTES:
            producer.poll(0)
            if mb_per_s is not None:
                ahead = sent / (mb_per_s * (1 << 20)) - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    producer.flush(120)


SAMPLE_SECONDS = 0.01
WARMUP_SECONDS = 3.0
WARMUP_TOPIC = "warmup"


def _cleaner_processes(broker_pid: int) -> list[int]:
    """The pids of the broker's child processes running ``chronik.log.cleaner_process`` (from /proc)."""
    try:
        children = [int(pid) for task in os.listdir(f"/proc/{broker_pid}/task")
                    for pid in Path(f"/proc/{broker_pid}/task/{task}/children").read_text().split()]
    except OSError:
        return []
    found = []
    for pid in children:
        try:
            if b"cleaner_process" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def _cleaning_intervals(broker_pid: int, stop: threading.Event) -> list[tuple[float, float]]:
    """When the broker's cleaner process was busy, sampled from /proc every 10 ms until ``stop``:
    a child process of the broker running ``chronik.log.cleaner_process`` that is
    runnable or in disk wait, or used CPU since the previous sample, counts as
    cleaning (an idle kept process sleeps on its stdin; a starting one imports,
    which counts too).  The intervals are merged over gaps shorter than 50 ms."""
    busy: list[tuple[float, float]] = []
    cpu: dict[int, int] = {}
    last = time.perf_counter()
    while not stop.wait(SAMPLE_SECONDS):
        now = time.perf_counter()
        active = False
        for pid in _cleaner_processes(broker_pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used = int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
            if fields[0] in ("R", "D") or used != cpu.get(pid, used):
                active = True
            cpu[pid] = used
        if active:
            if busy and last - busy[-1][1] < 0.05:
                busy[-1] = (busy[-1][0], now)
            else:
                busy.append((last, now))
        last = now
    return busy


def _overlapping(samples: list[tuple[float, float]],
                 busy: list[tuple[float, float]]) -> tuple[list[float], int, float]:
    """The latencies of the probes that overlapped a busy interval of the cleaner process (clipped
    to the probes' window), how many such intervals, and their seconds."""
    window = (samples[0][0], samples[-1][0]) if samples else (0.0, 0.0)
    overlapping = [(max(a, window[0]), min(b, window[1])) for a, b in busy if b > window[0] and a < window[1]]
    during = [latency for t, latency in samples if any(t < b and t + latency > a for a, b in overlapping)]
    return during, len(overlapping), sum(b - a for a, b in overlapping)


def _write_warmup(conf: dict) -> None:
    """Ten batches of 100 keyed 256 B records (50 keys) to the warm-up topic, each sent on its
    own, so its 64 KiB segments roll and the sealed ones are all dirty."""
    import confluent_kafka

    producer = confluent_kafka.Producer({**conf, "linger.ms": 0, "acks": 1})
    payload = bytes(RECORD_BYTES - 16)
    for batch in range(10):
        for n in range(100):
            producer.produce(WARMUP_TOPIC, payload, key=b"key-%011d" % ((batch * 100 + n) % 50))
        producer.flush(30)


class _Broker:
    """A ``python -m chronik serve`` child process on a fresh data directory, its output collected."""

    def __init__(self, directory: str, cleaner: bool, extra: list[str]) -> None:
        data = f"{directory}/broker-{'on' if cleaner else 'off'}"
        shutil.rmtree(data, ignore_errors=True)
        cmd = [sys.executable, "-m", "chronik", "serve", "--data-dir", data, "--listen", "127.0.0.1:0",
               "--set", "log.cleaner.backoff.ms=200", "--set", f"log.cleaner.enable={'true' if cleaner else 'false'}"]
        for setting in extra:
            cmd += ["--set", setting]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.warmed = threading.Event()  # the warm-up topic's pass is logged
        ready = threading.Event()
        port: list[int] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                found = re.search(r"listening for Kafka clients on [^:]+:(\d+)", line)
                if found:
                    port.append(int(found.group(1)))
                    ready.set()
                if f"log cleaner: cleaned {WARMUP_TOPIC}-0 " in line:
                    self.warmed.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(30):
            self.close()
            raise RuntimeError("the broker did not start:\n" + "".join(self.lines))
        self.conf = {"bootstrap.servers": f"127.0.0.1:{port[0]}"}

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _probe_while_busy(broker: _Broker, seconds: float, until: Callable[[], bool] | None = None,
                      limit: float = 120.0) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Probe samples (:func:`_latency`) and, sampled meanwhile, the cleaner process's busy intervals."""
    sampled = threading.Event()
    busy: list[list[tuple[float, float]]] = []
    sampler = threading.Thread(target=lambda: busy.append(_cleaning_intervals(broker.proc.pid, sampled)))
    sampler.start()
    try:
        samples = _latency(broker.conf, "latency", seconds, until, limit)
    finally:
        sampled.set()
        sampler.join()
    return samples, busy[0]


def _one_broker(mb: int, keys: int, seconds: float, directory: str, cleaner: bool,
                extra: list[str]) -> dict[str, object]:
    """One broker's run: ``window`` (probe samples while updates stream into a compacted topic
    whose backlog has just become cleanable), ``busy`` (the intervals during which the cleaner
    process was busy then, :func:`_cleaning_intervals`), ``pass_lines``, and the same two for
    the cleaner's warm-up before (``startup``, ``startup_busy``).

    Warm-up: a topic ``warmup`` (``compact``, 64 KiB segments,
    ``min.cleanable.dirty.ratio=0.01``) gets ten small batches while the
    probe runs, for at least ``WARMUP_SECONDS`` and, with the cleaner on,
    until the broker has logged its pass over it: that first pass starts the
    cleaner process (``python -m chronik.log.cleaner_process``, kept for the
    broker's lifetime; with the default ``log.cleaner.threads=1`` the only
    one), whose start-up a broker pays once in its life.  The broker with the
    cleaner off gets the same topic, writes and probing.  Then the measured
    part: the backlog is written while the compacted topic is
    ``cleanup.policy=delete``; the window starts when it is altered to
    ``compact``, so a cleaner has the whole backlog to clean during the window
    (with the cleaner disabled the same alteration changes nothing), and the
    cleaner process already exists when it opens (checked in /proc).
    """
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

    broker = _Broker(directory, cleaner, extra)
    try:
        conf = broker.conf
        admin = AdminClient(conf)
        for future in admin.create_topics([
            NewTopic("latency", 1, 1),
            NewTopic("compacted", 1, 1, config={"cleanup.policy": "delete", "segment.bytes": str(8 << 20),
                                                "min.cleanable.dirty.ratio": "0.1"}),
            NewTopic(WARMUP_TOPIC, 1, 1, config={"cleanup.policy": "compact", "segment.bytes": str(64 << 10),
                                                 "min.cleanable.dirty.ratio": "0.01"}),
        ]).values():
            future.result(10)
        _latency(conf, "latency", 1.0)  # warm-up of the client and the broker's connection
        writer = threading.Thread(target=_write_warmup, args=(conf,))
        writer.start()
        try:
            startup, startup_busy = _probe_while_busy(
                broker, WARMUP_SECONDS, until=(broker.warmed.is_set if cleaner else None), limit=60.0)
        finally:
            writer.join()
        if cleaner and not (broker.warmed.is_set() and _cleaner_processes(broker.proc.pid)):
            raise RuntimeError("the warm-up pass did not run, or left no cleaner process:\n" + "".join(broker.lines))
        _fill(conf, mb, keys, 1)  # a backlog for the cleaner
        stop = threading.Event()
        streaming = threading.Thread(target=_fill, args=(conf, 1 << 20, keys, 2, stop, 2.0))
        streaming.start()
        try:
            compact = ConfigResource("TOPIC", "compacted", incremental_configs=[
                ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)])
            for future in admin.incremental_alter_configs([compact]).values():
                future.result(10)
            samples, busy = _probe_while_busy(broker, seconds)
        finally:
            stop.set()
            streaming.join()
        return {"window": samples, "busy": busy, "startup": startup, "startup_busy": startup_busy,
                "pass_lines": [line.strip() for line in broker.lines if "log cleaner: cleaned compacted" in line]}
    finally:
        broker.close()


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return (ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2) if ordered else float("nan")


def _produce_latency(mb: int, keys: int, seconds: float, directory: str, rounds: int,
                     extra: list[str]) -> dict[str, object]:
    """``rounds`` of (cleaner off, cleaner on), alternating which goes first (ABBA), samples pooled.

    The ``idle_*``/``cleaning_*``/``during_pass_*`` figures are the measured
    windows, after the warm-up (steady state: the cleaner process exists);
    ``startup_*`` are the warm-up's: with the cleaner on, the probes that
    overlapped the cleaner process's first start (and its first, tiny pass),
    once per broker start; ``startup_off_*`` all the cleaner-off broker's
    probes of the same phase."""
    idle: list[float] = []
    cleaning: list[float] = []
    during: list[float] = []
    startup_on: list[float] = []
    startup_off: list[float] = []
    per_round = []
    lines: list[str] = []
    passes_during = 0
    busy = 0.0
    startup_busy = 0.0
    for n in range(rounds):
        result = {}
        for on in ((False, True) if n % 2 == 0 else (True, False)):
            run = _one_broker(mb, keys, seconds, directory, on, extra)
            samples = run["window"]
            latencies = [latency for _, latency in samples]
            result[on] = latencies
            if on:
                cleaning += latencies
                lines += run["pass_lines"]
                overlapped, count, seconds_busy = _overlapping(samples, run["busy"])
                during += overlapped
                passes_during += count
                busy += seconds_busy
                overlapped, _, seconds_busy = _overlapping(run["startup"], run["startup_busy"])
                startup_on += overlapped
                startup_busy += seconds_busy
            else:
                idle += latencies
                startup_off += [latency for _, latency in run["startup"]]
        per_round.append((_percentile(result[False], 0.99), _percentile(result[True], 0.99)))
    increases = [on / off - 1 for off, on in per_round]
    return {"idle_p50_ms": _percentile(idle, 0.5), "idle_p99_ms": _percentile(idle, 0.99),
            "cleaning_p50_ms": _percentile(cleaning, 0.5), "cleaning_p99_ms": _percentile(cleaning, 0.99),
            "p99_increase": _percentile(cleaning, 0.99) / _percentile(idle, 0.99) - 1,
            "during_pass_p50_ms": _percentile(during, 0.5), "during_pass_p99_ms": _percentile(during, 0.99),
            "during_pass_p99_increase": _percentile(during, 0.99) / _percentile(idle, 0.99) - 1,
            "samples_idle": len(idle), "samples": len(cleaning), "samples_during_pass": len(during),
            "passes_during": passes_during, "seconds_cleaning": busy, "rounds_p99_ms": per_round,
            "rounds_p99_increase": increases, "median_round_p99_increase": _median(increases),
            "startup_p50_ms": _percentile(startup_on, 0.5), "startup_p99_ms": _percentile(startup_on, 0.99),
            "samples_startup": len(startup_on), "seconds_startup": startup_busy / rounds if rounds else 0.0,
            "startup_off_p50_ms": _percentile(startup_off, 0.5), "startup_off_p99_ms": _percentile(startup_off, 0.99),
            "samples_startup_off": len(startup_off),
            "pass_lines": lines[-3:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=64)
    parser.add_argument("--keys", type=int, default=20000)
    parser.add_argument("--batch-records", type=int, default=BATCH_RECORDS,
                        help="records per batch of the throughput measurement's log")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--rounds", type=int, default=1, help="latency rounds (cleaner off and on in each, ABBA)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a broker setting for both brokers of the latency measurement")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="chronik-bench-cleaner-")
    try:
        results: dict[str, object] = {}
        if not args.skip_throughput:
            t = trio.run(_throughput, args.mb, args.keys, directory, args.batch_records)
            results["throughput"] = t
            print(f"cleaner: {t['mb_read']:.1f} MB in {t['seconds']:.2f} s = {t['mb_per_s']:.1f} MB/s "
                  f"(target >= 50; map {t['map_seconds']:.2f} s; {t['cpu_seconds']:.2f} s of CPU = "
                  f"{t['mb_per_cpu_s']:.1f} MB per CPU second), {t['records_kept']} of {t['records_read']} records kept, "
                  f"{100 * t['reclaimed']:.1f}% of the bytes reclaimed")
        if not args.skip_latency:
            latency = _produce_latency(args.mb, args.keys, args.seconds, directory, args.rounds, args.set)
            results["latency"] = latency
            print(f"produce (1 in flight, acks=all), {args.rounds} round(s) of {args.seconds:.0f} s per broker: "
                  f"cleaner off p50 {latency['idle_p50_ms']:.2f} ms p99 {latency['idle_p99_ms']:.2f} ms "
                  f"({latency['samples_idle']} samples); cleaner on p50 {latency['cleaning_p50_ms']:.2f} ms p99 "
                  f"{latency['cleaning_p99_ms']:.2f} ms ({100 * latency['p99_increase']:+.0f}%, target <= +20%)")
            print(f"  while the cleaner process was busy ({latency['passes_during']} interval(s), {latency['seconds_cleaning']:.1f} s, "
                  f"{latency['samples_during_pass']} samples): p50 {latency['during_pass_p50_ms']:.2f} ms "
                  f"p99 {latency['during_pass_p99_ms']:.2f} ms ({100 * latency['during_pass_p99_increase']:+.0f}%); "
                  f"p99 per round (off, on): "
                  + ", ".join(f"({a:.2f}, {b:.2f})" for a, b in latency["rounds_p99_ms"])
                  + f"; median of the per-round p99 increases {100 * latency['median_round_p99_increase']:+.0f}%")
            print(f"  once per broker start, the cleaner process's first start (before the windows above; "
                  f"{latency['seconds_startup']:.2f} s busy per broker, {latency['samples_startup']} samples): "
                  f"p50 {latency['startup_p50_ms']:.2f} ms p99 {latency['startup_p99_ms']:.2f} ms; the same phase "
                  f"with the cleaner off p50 {latency['startup_off_p50_ms']:.2f} ms p99 "
                  f"{latency['startup_off_p99_ms']:.2f} ms ({latency['samples_startup_off']} samples)")
            for line in latency["pass_lines"]:
                print("  ", line)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
