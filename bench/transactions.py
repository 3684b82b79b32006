"""Transactions benchmark (issue 13): transactional produce against plain produce, EndTxn latency,
read_committed against read_uncommitted; Chronik and, with ``--peer``, Apache Kafka in the same run.

Run:  python bench/transactions.py [--quick] [--transactions 300] [--records 100] [--large-records 1000]
                                   [--producers 4] [--broker-warmup 100] [--plain-passes 5] [--consume-rounds 5]
                                   [--repeat K] [--peer kafka,tansu] [--bootstrap HOST:PORT [--broker-pid PID]]
                                   [--json out.json]

Without ``--bootstrap`` the script starts its own ``python -m chronik serve``
(fresh data directory under ``--data-parent``, default the current directory;
port 0) and stops it at the end; ``--peer`` then runs the same workloads
against Apache Kafka and/or Tansu started here (bench/peers.py), one broker
after the other.  Clients are confluent-kafka (librdkafka), each producer in
its own process (bench/broker.run_clients: spawned, connected and warmed up
before the clock starts, all started together), 100-byte values,
``linger.ms=2``, acks=all.  A plain producer warms up with one record to its
partition; a transactional one with ``init_transactions`` and one committed
one-record transaction.

Workloads, T = ``--transactions``, R = ``--records``, L = ``--large-records``,
N = ``--producers``:

  produce-plain     one idempotent producer, T x R records to one partition,
                    ``--plain-passes`` (5) times over, each pass flushed (one
                    pass of 30,000 records lasts 50-100 ms, too short to time
                    on a busy machine): msg/s, the baseline of the next two rows
  produce-txn       one transactional producer, T transactions of R records
                    (begin, produce, flush, commit): txn/s and msg/s.  Issue
                    13's definition; target: msg/s >= 0.7 x produce-plain
  produce-txn-L     the same T x R records as transactions of L records
                    (T x R / L of them), against produce-plain
  produce-plain-xN  N idempotent producers at once, each T x R records (times
                    the passes) to its own partition of one topic: msg/s (the
                    next row's baseline)
  produce-txn-xN    N transactional producers at once (each its own
                    transactional.id and partition), T transactions of R
                    records each, against produce-plain-xN
  consume-rc        a read_committed consumer reads produce-txn's partition
                    from offset 0 to its end: log offsets/s (the records
                    delivered differ between the two, the log read is the
                    same).  Target: >= 0.9 x consume-ru
  consume-ru        the same partition read_uncommitted: offsets/s.  Each is
                    read ``--consume-rounds`` (5) times, alternating, by a new
                    consumer each time (connected before the clock); the
                    median counts (one read of 30,000 offsets takes ~0.1 s)

Every 4th transaction of every transactional row is aborted (so consume-rc
has aborted records to drop).  EndTxn p50/p99 is ``commit_transaction()`` (or
``abort_transaction()``) after the transaction's records are flushed: the
EndTxn round trip.  Checked, a failure fails the row: each plain topic's high
watermark (records + warm-up records), each transactional topic's (records +
one control marker per transaction), and the records each consumer delivers
(read_committed: exactly the committed ones).

Columns: msg/s (offsets/s for consume), txn/s, EndTxn p50/p99 ms, "x base"
(the row against its baseline row: transactional/plain or
read_committed/read_uncommitted), and broker CPU: user+system seconds of the
broker process (all threads, /proc/PID/task/*/schedstat) from the clients'
start signal to the last result, per million messages (= microseconds per message).

``--broker-warmup T``: before the timed rows, T transactions of R records and
T x R plain records, untimed, on every broker, so that a JIT-compiled broker
(Kafka) is measured warm.  ``--repeat K`` runs every broker K times,
interleaved (Chronik, peers, Chronik, ...), and reports per workload the
median of each figure (of a ratio: of each round's own; the rounds' values
are in the JSON as ``*_each``).  With more than one broker a Markdown table
follows: a line per workload and metric, a column per broker, then Chronik /
peer ratios; the "x plain" lines are each broker's own transactional/plain
ratio.  JSON (``--json``) holds every row and that table.  The exit status is
1 when a row failed or the first broker (Chronik, or the one at
``--bootstrap``) misses a target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import broker as single  # bench/broker.py, next to this script; it puts the repository on sys.path
import peers
from stats import percentile_ms

VALUE = b"v" * 100
LINGER_MS = 2
ABORT_EVERY = 4  # every 4th transaction is aborted
PRODUCER = {"linger.ms": LINGER_MS, "delivery.report.only.error": True}
TARGETS = {"produce-txn": (0.7, ">= 0.7x plain"), "consume-rc": (0.9, ">= 0.9x ru")}  # issue 13: x base


# --------------------------------------------------------------------------------------------
# Client processes (broker.run_clients): each prepares and warms up, then returns its timed part.


def _produce(producer: Any, topic: str, partition: int, on_delivery: Any = None) -> None:
    while True:
        try:
            producer.produce(topic, VALUE, partition=partition, on_delivery=on_delivery)
            return
        except BufferError:  # the local queue is full: serve delivery reports, try again
            producer.poll(0.01)


def client_plain(bootstrap: str, topic: str, partition: int, count: int, passes: int) -> Callable[[], dict]:
    """An idempotent producer (acks=all) sending ``count`` records to one partition ``passes`` times,
    each pass flushed."""
    import confluent_kafka

    errors: list[str] = []

    def on_error(err: Any, msg: Any) -> None:  # delivery.report.only.error: failures only
        if err is not None and len(errors) < 5:
            errors.append(str(err))

    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, **PRODUCER})
    _produce(producer, topic, partition, on_error)  # warm-up: connections, metadata, InitProducerId
    if producer.flush(60) != 0 or errors:
        raise RuntimeError(f"warm-up record not delivered: {errors or 'flush timed out'}")

    def timed() -> dict:
        started = time.monotonic()
        for _ in range(passes):
            for _ in range(count):
                _produce(producer, topic, partition, on_error)
            if left := producer.flush(120):
                raise RuntimeError(f"{left} records not delivered after flush(120)")
        finished = time.monotonic()
        return {"started": started, "finished": finished, "count": count * passes, "transactions": 0,
                "end_txn": [], "errors": errors}

    return timed


def client_txn(bootstrap: str, topic: str, partition: int, transactions: int, records: int,
               transactional_id: str) -> Callable[[], dict]:
    """A transactional producer: ``transactions`` transactions of ``records`` records to one partition,
    every ABORT_EVERY-th aborted; the EndTxn time of each (commit/abort after the flush)."""
    import confluent_kafka

    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                                         **PRODUCER})
    producer.init_transactions(60)
    producer.begin_transaction()  # warm-up: the partition registered once, the leader's connection up
    _produce(producer, topic, partition)
    producer.commit_transaction(60)

    def timed() -> dict:
        end_txn: list[float] = []
        started = time.monotonic()
        for t in range(transactions):
            producer.begin_transaction()
            for _ in range(records):
                _produce(producer, topic, partition)
            if producer.flush(60) != 0:
                raise RuntimeError("records not delivered after flush(60)")
            committing = time.perf_counter()
            if t % ABORT_EVERY == ABORT_EVERY - 1:
                producer.abort_transaction(60)
            else:
                producer.commit_transaction(60)
            end_txn.append(time.perf_counter() - committing)
        finished = time.monotonic()
        return {"started": started, "finished": finished, "count": transactions * records,
                "transactions": transactions, "end_txn": end_txn, "errors": []}

    return timed


def aborted(transactions: int) -> int:
    """How many of ``transactions`` client_txn aborts."""
    return transactions // ABORT_EVERY


# --------------------------------------------------------------------------------------------
# Rows


@dataclass
class Row:
    """One workload on one broker.  Field names follow bench/broker.Row where they mean the same
    (broker.comparison_lines reads them by name)."""

    workload: str
    msgs_per_s: float | None = None  # log offsets/s for the consume rows
    txn_per_s: float | None = None
    p50_ms: float | None = None  # EndTxn
    p99_ms: float | None = None
    vs_base: float | None = None  # this row's msgs_per_s / its baseline row's
    broker_cpu_s: float | None = None  # during the timed part
    count: int | None = None  # messages (log offsets for the consume rows)
    seconds: float | None = None
    target: str = ""
    met: bool | None = None  # None: no target
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_s_per_million(self) -> float | None:
        """Broker CPU seconds per million messages: microseconds per message."""
        if self.broker_cpu_s is None or not self.count:
            return None
        return self.broker_cpu_s / self.count * 1e6


def judge(row: Row) -> None:
    """Set the row's target and whether it is met, if it has one (TARGETS)."""
    if row.workload in TARGETS:
        value, row.target = TARGETS[row.workload]
        row.met = row.vs_base is not None and row.vs_base >= value


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """CPU time of each live thread of a process in nanoseconds (/proc/PID/task/TID/schedstat, first field)."""
    times: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            times[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # the thread ended meanwhile
    return times


class CpuWindow:
    """The broker's CPU seconds between ``start()`` and ``stop()`` (None without a pid).

    Summed over its threads' schedstat (nanoseconds): /proc/PID/stat counts clock ticks (10 ms),
    too coarse for a row that lasts 0.1 s.  If a thread ends inside the window its time is lost
    there, so then the window falls back to the tick count (broker.cpu_seconds)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.before: tuple[dict[int, int], float | None] | None = None
        self.seconds: float | None = None

    def start(self) -> None:
        if self.pid:
            self.before = (thread_cpu_ns(self.pid), single.cpu_seconds(self.pid))

    def stop(self) -> None:
        if not self.pid or self.before is None:
            return
        threads, ticks = self.before
        now, now_ticks = thread_cpu_ns(self.pid), single.cpu_seconds(self.pid)
        if threads and all(t in now for t in threads):
            self.seconds = sum(ns - threads.get(t, 0) for t, ns in now.items()) / 1e9
        elif ticks is not None and now_ticks is not None:
            self.seconds = now_ticks - ticks


class TxnBench:
    """The workloads against one running broker."""

    def __init__(self, args: argparse.Namespace, bootstrap: str, broker: Any, broker_pid: int | None) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.broker = broker
        self.broker_pid = broker_pid
        self.run_id = uuid.uuid4().hex[:6]
        self.rows: dict[str, Row] = {}
        self.consumed: tuple[str, int, int] | None = None  # produce-txn's topic, its records, the committed ones

    def topic(self, name: str, partitions: int = 1) -> str:
        topic = f"bench-{self.run_id}-{name}"
        single.create_topic(self.bootstrap, topic, partitions, 1)
        return topic

    def produce(self, workload: str, client: Callable[..., Callable[[], dict]], kwargs: list[dict[str, Any]],
                topic: str, expected_watermark: int, base: str | None = None) -> Row:
        """Run the clients; the row, with its high watermark checked and its ratio to ``base``."""
        cpu = CpuWindow(self.broker_pid)
        outs = single.run_clients(client, kwargs, self.args.timeout, self.broker, on_go=cpu.start, on_done=cpu.stop)
        count = sum(o["count"] for o in outs)
        transactions = sum(o["transactions"] for o in outs)
        seconds = max(o["finished"] for o in outs) - min(o["started"] for o in outs)
        end_txn = [s for o in outs for s in o["end_txn"]]
        errors = [e for o in outs for e in o["errors"]]
        row = Row(workload, msgs_per_s=count / seconds, txn_per_s=transactions / seconds if transactions else None,
                  p50_ms=percentile_ms(end_txn, 0.5), p99_ms=percentile_ms(end_txn, 0.99), broker_cpu_s=cpu.seconds,
                  count=count, seconds=seconds, error=f"delivery errors: {errors[:3]}" if errors else None,
                  extra={"transactions": transactions, "producers": len(outs)})
        if base is not None and self.rows.get(base) and self.rows[base].msgs_per_s:
            row.vs_base = row.msgs_per_s / self.rows[base].msgs_per_s  # type: ignore[operator]
            row.extra["base"] = base
        partitions = len(kwargs)
        deadline = time.monotonic() + 5  # the last markers follow EndTxn's answer (Kafka's and Chronik's)
        while ((stored := single.high_watermark_sum(self.bootstrap, topic, partitions)) != expected_watermark
               and time.monotonic() < deadline):
            time.sleep(0.1)
        row.extra["high_watermark_sum"] = stored
        if stored != expected_watermark and row.error is None:
            row.error = f"high watermarks add up to {stored}, expected {expected_watermark}"
        return row

    def plain(self, workload: str, producers: int) -> Row:
        topic = self.topic(workload, producers)
        count, passes = self.args.transactions * self.args.records, self.args.plain_passes
        return self.produce(workload, client_plain, [
            dict(bootstrap=self.bootstrap, topic=topic, partition=p, count=count, passes=passes) for p in range(producers)
        ], topic, producers * (count * passes + 1))

    def txn(self, workload: str, producers: int, transactions: int, records: int, base: str) -> Row:
        topic = self.topic(workload, producers)
        row = self.produce(workload, client_txn, [
            dict(bootstrap=self.bootstrap, topic=topic, partition=p, transactions=transactions, records=records,
                 transactional_id=f"bench-{self.run_id}-{workload}-{p}") for p in range(producers)
        ], topic, producers * (transactions * records + transactions + 2), base)  # + markers, + the warm-up txn
        judge(row)
        if workload == "produce-txn":
            committed = (transactions - aborted(transactions)) * records + 1  # + the warm-up record
            self.consumed = (topic, transactions * records + 1, committed)
        return row

    def read(self, isolation: str) -> dict[str, Any]:
        """One read of produce-txn's partition, offset 0 to its end, by a new consumer (connected
        before the clock starts; assigned after)."""
        import confluent_kafka

        assert self.consumed is not None
        topic = self.consumed[0]
        consumer = confluent_kafka.Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"bench-{self.run_id}",
                                             "enable.auto.commit": False, "isolation.level": isolation,
                                             "fetch.wait.max.ms": 10})
        try:
            tp = confluent_kafka.TopicPartition(topic, 0, 0)
            end = consumer.get_watermark_offsets(tp, timeout=10)[1]
            got = 0
            cpu = CpuWindow(self.broker_pid)
            cpu.start()
            started = time.monotonic()
            deadline = started + self.args.timeout
            consumer.assign([tp])
            while True:
                # a short wait: a batch short of 1000 (the last one) would otherwise cost the whole wait
                messages = consumer.consume(1000, 0.005)
                got += sum(1 for m in messages if m.error() is None)
                (position,) = consumer.position([tp])
                if position.offset >= end:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{isolation}: at offset {position.offset} of {end} after {self.args.timeout:.0f} s")
            seconds = time.monotonic() - started
            cpu.stop()
        finally:
            consumer.close()
        return {"seconds": seconds, "records": got, "offsets": end, "cpu_s": cpu.seconds}

    def consume(self) -> list[Row]:
        """consume-rc and consume-ru: ``--consume-rounds`` reads of each, alternating; the median of each."""
        if self.consumed is None:
            raise RuntimeError("nothing to read: produce-txn did not run")
        _, every, committed = self.consumed
        reads: dict[str, list[dict[str, Any]]] = {"read_committed": [], "read_uncommitted": []}
        for _ in range(self.args.consume_rounds):
            for isolation, done in reads.items():
                done.append(self.read(isolation))
        rows = []
        for workload, (isolation, done) in zip(("consume-rc", "consume-ru"), reads.items()):
            expected = committed if isolation == "read_committed" else every
            rates = [d["offsets"] / d["seconds"] for d in done]
            cpus = [d["cpu_s"] for d in done if d["cpu_s"] is not None]
            rate = statistics.median(rates)
            row = Row(workload, msgs_per_s=rate, broker_cpu_s=statistics.median(cpus) if cpus else None,
                      count=done[0]["offsets"], seconds=done[0]["offsets"] / rate,
                      extra={"offsets_per_s_each": rates, "records": [d["records"] for d in done],
                             "expected_records": expected})
            wrong = [d["records"] for d in done if d["records"] != expected]
            if wrong:
                row.error = f"{isolation} delivered {wrong[0]} records, expected {expected}"
            rows.append(row)
        rc, ru = rows
        rc.vs_base = rc.msgs_per_s / ru.msgs_per_s  # type: ignore[operator]
        rc.extra["base"] = "consume-ru"
        judge(rc)
        return rows

    def warm_up(self) -> None:
        """Untimed: ``--broker-warmup`` transactions and as many records without transactions."""
        if self.args.broker_warmup <= 0:
            return
        for name, client, kwargs in (
            ("warmup-plain", client_plain, dict(count=self.args.broker_warmup * self.args.records, passes=1)),
            ("warmup-txn", client_txn, dict(transactions=self.args.broker_warmup, records=self.args.records,
                                            transactional_id=f"bench-{self.run_id}-warmup")),
        ):
            topic = self.topic(name)
            single.run_clients(client, [dict(bootstrap=self.bootstrap, topic=topic, partition=0, **kwargs)],
                               self.args.timeout, self.broker)

    def run(self) -> list[Row]:
        """Every workload in order; a failed one fails its row, not the run (unless the broker died)."""
        a = self.args
        n, large = a.producers, a.large_records
        steps: list[tuple[str, Callable[[str], Row | list[Row]]]] = [
            ("produce-plain", lambda w: self.plain(w, 1)),
            ("produce-txn", lambda w: self.txn(w, 1, a.transactions, a.records, "produce-plain")),
            (f"produce-txn-{large}", lambda w: self.txn(w, 1, max(1, a.transactions * a.records // large), large,
                                                        "produce-plain")),
            (f"produce-plain-x{n}", lambda w: self.plain(w, n)),
            (f"produce-txn-x{n}", lambda w: self.txn(w, n, a.transactions, a.records, f"produce-plain-x{n}")),
            ("consume-rc", lambda w: self.consume()),  # and consume-ru
        ]
        for workload, step in steps:
            try:
                single.check_broker_alive(self.broker)
                done = step(workload)
            except Exception as exc:  # noqa: BLE001 - one failed workload fails its row
                done = Row(workload, error=f"{type(exc).__name__}: {exc}")
            for row in done if isinstance(done, list) else [done]:
                self.rows[row.workload] = row
                print(f"  {row.workload}: " + (row.error.splitlines()[0] if row.error else "done"), flush=True)
            if self.broker is not None and self.broker.proc is not None and self.broker.proc.poll() is not None:
                print("the broker died; skipping the remaining workloads", file=sys.stderr)
                break
        return list(self.rows.values())


# --------------------------------------------------------------------------------------------
# Brokers


def measure(args: argparse.Namespace, name: str) -> single.Measured:
    """Run the workloads against one broker, started here unless ``name`` is "external"."""
    broker: Any = None
    data_dir: str | None = None
    bootstrap, broker_pid = args.bootstrap, args.broker_pid
    rows: list[Row] = []
    failed = False
    try:
        if name != "external":
            data_dir = tempfile.mkdtemp(prefix=f"chronik-bench-txn-{name}-", dir=args.data_parent or os.getcwd())
            broker, _ = single.start_own_broker(args, name, data_dir)
            bootstrap, broker_pid = broker.bootstrap, broker.proc.pid
        single.wait_for_metadata(bootstrap, 60, broker)
        load = single.machine_note()
        print(f"{peers.TITLES.get(name, name)}: broker {bootstrap}" + (f" (pid {broker_pid})" if broker_pid else "")
              + f", load average {load['loadavg']}, {load['cpus']} cpus", flush=True)
        bench = TxnBench(args, bootstrap, broker, broker_pid)
        bench.warm_up()
        rows = bench.run()
        failed = any(r.error for r in rows)
    except Exception as exc:  # noqa: BLE001
        print(f"benchmark of {name} aborted: {type(exc).__name__}: {exc}", file=sys.stderr)
        failed = True
    finally:
        single.stop_own_broker(name, broker, data_dir, failed=failed, keep_data=args.keep_data)
    for row in rows:
        row.extra["broker"] = name
    return single.Measured(name, rows, failed, bootstrap)  # type: ignore[arg-type]


MEDIAN_FIELDS = ("msgs_per_s", "txn_per_s", "p50_ms", "p99_ms", "vs_base", "broker_cpu_s", "count", "seconds")


def median_of(name: str, runs: list[single.Measured]) -> single.Measured:
    """One broker's rows over ``--repeat`` rounds: per workload, the median of each figure (a ratio
    is each round's own, measured against its baseline in the same round); a row's error is kept."""
    if len(runs) == 1:
        return runs[0]
    rows: list[Row] = []
    for workload in dict.fromkeys(r.workload for run in runs for r in run.rows):
        same: list[Row] = [r for run in runs for r in run.rows if r.workload == workload]  # type: ignore[misc]
        row = Row(workload, extra={"broker": name, "rounds": len(same)})
        for key in MEDIAN_FIELDS:
            values = [v for r in same if (v := getattr(r, key)) is not None]
            if values:
                setattr(row, key, statistics.median(values))
            row.extra[f"{key}_each"] = [getattr(r, key) for r in same]
        row.error = next((r.error for r in same if r.error), None)
        judge(row)
        rows.append(row)
    return single.Measured(name, rows, any(run.failed for run in runs), runs[-1].bootstrap)  # type: ignore[arg-type]


def fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def print_table(rows: list[Row]) -> None:
    header = (f"{'workload':<19}{'msg/s':>10}{'txn/s':>9}{'EndTxn p50':>11}{'p99 ms':>8}{'x base':>8}"
              f"  {'target':<15}{'met':<5}{'CPU s/M':>8}")
    print(header)
    print("-" * len(header))
    for row in rows:
        if row.msgs_per_s is None:
            print(f"{row.workload:<19}  ERROR: {(row.error or '?').splitlines()[0]}")
            continue
        met = "-" if row.met is None else "yes" if row.met else "NO"
        print(f"{row.workload:<19}{fmt(row.msgs_per_s, ',.0f'):>10}{fmt(row.txn_per_s, ',.1f'):>9}"
              f"{fmt(row.p50_ms, '.2f'):>11}{fmt(row.p99_ms, '.2f'):>8}{fmt(row.vs_base, '.3f'):>8}"
              f"  {row.target or '-':<15}{met:<5}{fmt(row.cpu_s_per_million, '.1f'):>8}")
        if row.error:
            print(f"{'':<19}  WARNING: {row.error.splitlines()[0]}")
    print("msg/s: offsets/s for consume-*; EndTxn: commit/abort after the flush; x base: msg/s against the baseline"
          " row (plain, or read_uncommitted); CPU s/M: broker CPU seconds per million messages (us per message),"
          " timed part only")


def compared(rows: list[Row]) -> list[tuple[str, str, str, bool]]:
    """broker.comparison_lines's (workload, metric, label, higher is better) lines for these rows."""
    lines: list[tuple[str, str, str, bool]] = []
    for row in rows:
        w = row.workload
        if w.startswith("produce-txn"):
            lines += [(w, "msgs_per_s", "msg/s", True), (w, "txn_per_s", "txn/s", True),
                      (w, "vs_base", "x plain", True), (w, "p50_ms", "EndTxn p50 ms", False),
                      (w, "p99_ms", "EndTxn p99 ms", False)]
        elif w == "consume-rc":
            lines += [(w, "msgs_per_s", "offsets/s", True), (w, "vs_base", "x read_uncommitted", True)]
        else:
            lines.append((w, "msgs_per_s", "offsets/s" if w.startswith("consume") else "msg/s", True))
        lines.append((w, "cpu_s_per_million", "CPU s/M msg", False))
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 transactions per producer instead of 300")
    parser.add_argument("--transactions", type=int, help="T: transactions per producer (default 300; 100 with --quick)")
    parser.add_argument("--records", type=int, default=100, help="R: records per transaction (issue 13: 100)")
    parser.add_argument("--large-records", type=int, default=1000, help="L: records per transaction of the large row")
    parser.add_argument("--producers", type=int, default=4, help="N: producer processes of the -xN rows")
    parser.add_argument("--broker-warmup", type=int, default=100, metavar="T",
                        help="untimed transactions (and as many records without) on every broker before the rows")
    parser.add_argument("--peer", default="", metavar="NAMES",
                        help="also run against these peers, started here: comma-separated kafka (both modes),"
                             " kafka-default, kafka-durable, tansu (bench/peers.py)")
    parser.add_argument("--kafka-heap", default="1G", help="-Xmx/-Xms of the Kafka peer")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="measure this running broker instead of starting Chronik")
    parser.add_argument("--broker-pid", type=int, help="with --bootstrap: the broker's pid, for its CPU time")
    parser.add_argument("--broker-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `chronik serve` (repeatable; shell-split)")
    parser.add_argument("--data-parent", help="where the brokers' temporary data directories go (default: cwd)")
    parser.add_argument("--keep-data", action="store_true", help="keep the brokers' data directories")
    parser.add_argument("--plain-passes", type=int, default=5,
                        help="the plain rows send their T x R records this many times over (a pass lasts only ~0.1 s)")
    parser.add_argument("--consume-rounds", type=int, default=5,
                        help="reads of the produce-txn partition per isolation level, alternating (the median counts)")
    parser.add_argument("--repeat", type=int, default=1, metavar="K",
                        help="run every broker K times, interleaved (Chronik, peers, Chronik, ...); medians count")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-workload timeout in seconds")
    parser.add_argument("--json", type=Path, help="write the rows and the comparison here")
    args = parser.parse_args(argv)
    args.transactions = args.transactions or (100 if args.quick else 300)
    try:
        args.peer = peers.parse_peers(args.peer)
    except ValueError as exc:
        parser.error(str(exc))
    if args.peer and args.bootstrap:
        parser.error("--peer starts its peers itself; it does not combine with --bootstrap")
    if min(args.transactions, args.records, args.large_records, args.producers, args.plain_passes,
           args.consume_rounds, args.repeat) < 1:
        parser.error("--transactions, --records, --large-records, --producers, --plain-passes, --consume-rounds and"
                     " --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = ["external"] if args.bootstrap else ["chronik", *args.peer]
    try:
        single.check_peers(names)
    except peers.PeerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    load_before = single.machine_note()
    print(f"{args.transactions} transactions x {args.records} records per producer, {args.large_records}-record"
          f" transactions, {args.producers} producers in the -x rows, {len(VALUE)} B values", flush=True)
    rounds: dict[str, list[single.Measured]] = {name: [] for name in names}
    for n in range(args.repeat):
        if args.repeat > 1:
            print(f"-- round {n + 1} of {args.repeat}", flush=True)
        for name in names:  # interleaved: each broker once per round, so load swings hit all alike
            rounds[name].append(measure(args, name))
    results = [median_of(name, runs) for name, runs in rounds.items()]
    for result in results:
        print()
        if len(results) > 1:
            print(f"## {peers.TITLES.get(result.broker, result.broker)}")
        print_table(result.rows)  # type: ignore[arg-type]
    load_after = single.machine_note()
    print(f"load average before {load_before['loadavg']}, after {load_after['loadavg']}; {load_after['cpus']} cpus")
    table = None
    if len(results) > 1:
        table = single.comparison_lines(results, compared(results[0].rows or results[-1].rows))  # type: ignore[arg-type]
        print()
        print("\n".join(table))
        print("Chronik / peer: Chronik's figure divided by the peer's, same run, same clients;"
              " 'better' says which direction is better for Chronik.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "transactions": args.transactions, "records": args.records, "large_records": args.large_records,
            "producers": args.producers, "broker_warmup": args.broker_warmup, "value_bytes": len(VALUE),
            "peers": args.peer, "machine_before": load_before, "machine_after": load_after,
            "comparison_markdown": table,
            "rows": [asdict(r) | {"cpu_s_per_million": r.cpu_s_per_million} for m in results for r in m.rows],  # type: ignore[call-overload]
        }, indent=2))
        print(f"json: {args.json}")
    first = results[0]
    missed = any(r.met is False for r in first.rows)  # type: ignore[attr-defined]
    return 1 if missed or any(m.failed for m in results) else 0


if __name__ == "__main__":
    sys.exit(main())
