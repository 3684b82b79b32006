"""Broker benchmark: real librdkafka clients (confluent-kafka) against a Kafka-compatible broker.

Run:  python bench/broker.py [--quick] [--messages N] [--workloads a,b,...]
                             [--bootstrap HOST:PORT [--broker-pid PID]]
                             [--broker-arg=--wal-profile=throughput ...] [--json out.json]

Without ``--bootstrap`` the script starts its own ``python -m chronik serve``
(fresh data directory under ``--data-parent``, port 0) and stops it at the
end; with ``--bootstrap`` it measures whatever broker listens there (Chronik,
Kafka, Redpanda, Tansu ...), so runs can be compared side by side.

Every client runs in its own process (multiprocessing, spawn), connected and
warmed up (metadata fetched, one message delivered to a warm-up topic) before
the clock starts.  Workloads (``--workloads``, default all):

  startup        broker start-up: process spawn -> first successful Metadata
                 (own broker only)
  idle-rss       broker resident memory after start-up, idle (VmRSS from
                 /proc/PID/status; own broker or ``--broker-pid``)
  produce-acks1  N x 256 B, linger.ms=5, acks=1, as fast as the client goes
  produce-acksall  the same with acks=all
  consume        read N x 256 B from offset 0 (the acks=all topic, or a
                 freshly filled one)
  inflight-128   128 single-message requests in flight (linger 0, one
                 message per request), acks=all, closed loop for --seconds;
                 latency produce() -> delivery report
  inflight-1     one producer, one message in flight, acks=all, closed loop
  create-topics  sequential AdminClient.create_topics of one topic at a
                 time: p50/p99 latency and topics/s

One table is printed (workload, msg/s, MB/s, p50 ms, p99 ms, target and the
fraction of the target reached: >= 1.00 means met, for "at most" targets too)
and the same rows are written as JSON.  Targets are issue 3's.  Each workload
has a timeout; a client error, a timeout or a dead broker fails that row (and
the exit status) with the reason, and the broker's log tail is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]  # chronik, and tests.integration's helpers

import peers  # noqa: E402  (bench/peers.py, next to this script)
from stats import percentile_ms  # noqa: E402  (bench/stats.py, next to this script)
from tests.integration.brokerproc import BrokerProcess  # noqa: E402

MESSAGE_BYTES = 256
WORKLOADS = (
    "startup", "idle-rss", "produce-acks1", "produce-acksall", "consume", "inflight-128", "inflight-1", "create-topics",
)
WARMUP_TOPIC = "bench-warmup"
COMMON_CLIENT = {"socket.nagle.disable": True, "log_level": 3}


# --------------------------------------------------------------------------------------------
# Results and targets


@dataclass(frozen=True)
class Target:
    metric: str  # a Row field
    at_least: bool
    value: float
    label: str

    def fraction(self, row: "Row") -> float | None:
        """Fraction of the target reached; >= 1 means met, for "at most" targets too."""
        measured = getattr(row, self.metric)
        if measured is None or measured != measured:
            return None
        if self.at_least:
            return measured / self.value
        return self.value / measured if measured > 0 else float("inf")


TARGETS: dict[str, list[Target]] = {
    "startup": [Target("p50_ms", False, 1000.0, "<= 1 s")],
    "idle-rss": [Target("rss_mb", False, 80.0, "<= 80 MB")],
    "produce-acksall": [Target("msgs_per_s", True, 700_000, ">= 700k msg/s")],
    "consume": [Target("msgs_per_s", True, 900_000, ">= 900k msg/s")],
    "inflight-128": [Target("msgs_per_s", True, 15_000, ">= 15k msg/s")],
    "inflight-1": [Target("p50_ms", False, 0.4, "p50 <= 0.4 ms")],
    "create-topics": [Target("p50_ms", False, 2.0, "p50 <= 2 ms"), Target("msgs_per_s", True, 1000, ">= 1000 topics/s")],
}


@dataclass
class Row:
    workload: str
    msgs_per_s: float | None = None  # topics/s for create-topics
    mb_per_s: float | None = None
    p50_ms: float | None = None  # start-up time for startup
    p99_ms: float | None = None
    rss_mb: float | None = None
    broker_cpu_s: float | None = None  # broker CPU time used during the workload (own broker / --broker-pid)
    count: int | None = None
    seconds: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def target_fractions(self) -> list[tuple[Target, float | None]]:
        return [(t, t.fraction(self)) for t in TARGETS.get(self.workload, [])]

    @property
    def cpu_s_per_million(self) -> float | None:
        """Broker CPU seconds per million messages (topics for create-topics), from /proc/PID/stat."""
        if self.broker_cpu_s is None or not self.count:
            return None
        return self.broker_cpu_s / self.count * 1e6


# --------------------------------------------------------------------------------------------
# Client processes.  Each client function connects and warms up, then returns its timed part;
# the child reports ready, waits for the common start signal, runs it and sends back a dict.


ClientFunction = Callable[..., Callable[[], dict]]


def _child(client: str | ClientFunction, kwargs: dict[str, Any], results: Any, go: Any) -> None:
    try:
        timed = (CLIENTS[client] if isinstance(client, str) else client)(**kwargs)  # prepares, returns the timed callable
        results.put(("ready", os.getpid(), None))
        go.wait()
        results.put(("done", os.getpid(), timed()))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the row
        results.put(("error", os.getpid(), f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"))


def run_clients(client: str | ClientFunction, kwargs_list: list[dict[str, Any]], timeout: float,
                broker: BrokerProcess | None, on_go: Callable[[], None] | None = None,
                on_done: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Run one client process per kwargs, start them together, return their result dicts.

    ``client`` is a name in CLIENTS or a module-level client function of another script (it is
    pickled by reference: the spawned child imports that script as its ``__main__``).
    ``on_go`` is called once every client is ready, just before they are told to start, and
    ``on_done`` once the last result is in, before the clients exit (e.g. to read the broker's CPU
    time around the timed part alone).
    """
    name = client if isinstance(client, str) else client.__name__
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=_child, args=(client, kw, results, go), daemon=True) for kw in kwargs_list]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    try:
        waiting_ready = len(procs)
        done: list[dict[str, Any]] = []
        while len(done) < len(procs):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{name}: no result within {timeout:.0f} s")
            check_broker_alive(broker)
            try:
                kind, pid, payload = results.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if all(not p.is_alive() for p in procs) and results.empty():
                    raise RuntimeError(f"{name}: client processes exited without a result") from None
                continue
            if kind == "error":
                raise RuntimeError(f"{name} client {pid} failed: {payload}")
            if kind == "ready":
                waiting_ready -= 1
                if waiting_ready == 0:
                    if on_go is not None:
                        on_go()
                    go.set()
            else:
                done.append(payload)
        if on_done is not None:
            on_done()
        return done
    finally:
        for p in procs:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)


def _producer(bootstrap: str, **config: Any) -> Any:
    import confluent_kafka

    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, **COMMON_CLIENT, **config})
    # Warm up: metadata plus one delivered message, so connections exist before timing.
    producer.produce(WARMUP_TOPIC, b"warmup")
    if producer.flush(30) != 0:
        raise RuntimeError("warm-up message was not delivered within 30 s")
    return producer


def client_batch_produce(bootstrap: str, topic: str, partitions: int, count: int, acks: str, linger_ms: float) -> Callable[[], dict]:
    from confluent_kafka import KafkaException

    errors: list[str] = []

    def on_error(err: Any, msg: Any) -> None:  # called only for failures (delivery.report.only.error)
        if err is not None and len(errors) < 5:
            errors.append(str(err))

    producer = _producer(
        bootstrap, acks=acks, **{"linger.ms": linger_ms, "queue.buffering.max.messages": 1_000_000,
                                 "queue.buffering.max.kbytes": 1_048_576, "delivery.report.only.error": True,
                                 "compression.type": "none"},
    )
    producer.list_topics(topic, timeout=10)
    value = os.urandom(MESSAGE_BYTES)

    def timed() -> dict:
        produce, poll = producer.produce, producer.poll
        started = time.monotonic()
        partition = 0
        for i in range(count):
            if partitions > 1:
                partition = i % partitions
            while True:
                try:
                    produce(topic, value, partition=partition, on_delivery=on_error)
                    break
                except BufferError:
                    poll(0.001)
        left = producer.flush(120)
        finished = time.monotonic()
        if left:
            raise KafkaException(f"{left} messages not delivered after flush(120)")
        return {"started": started, "finished": finished, "count": count, "errors": errors}

    return timed


def client_closed_loop(bootstrap: str, topic: str, in_flight: int, seconds: float) -> Callable[[], dict]:
    """``in_flight`` messages outstanding, each its own ProduceRequest, acks=all.

    Latency is librdkafka's own (``Message.latency()``: produce() to the broker's
    acknowledgement), as rdkafka_performance reports it.
    """
    producer = _producer(
        bootstrap, acks="all", **{"linger.ms": 0, "batch.num.messages": 1,
                                  "max.in.flight.requests.per.connection": max(in_flight, 1)},
    )
    producer.list_topics(topic, timeout=10)
    value = os.urandom(MESSAGE_BYTES)
    latencies: list[float] = []
    errors: list[str] = []
    outstanding = 0

    def on_delivery(err: Any, msg: Any) -> None:
        nonlocal outstanding
        outstanding -= 1
        if err is not None:
            if len(errors) < 5:
                errors.append(str(err))
        else:
            latencies.append(msg.latency())

    def timed() -> dict:
        nonlocal outstanding
        produce, poll = producer.produce, producer.poll
        started = time.monotonic()
        deadline = started + seconds
        while time.monotonic() < deadline:
            while outstanding < in_flight:
                produce(topic, value, on_delivery=on_delivery)
                outstanding += 1
            poll(1.0)
        finished = time.monotonic()
        counted = len(latencies)  # deliveries inside the window
        producer.flush(30)
        return {"started": started, "finished": finished, "count": counted, "latencies": latencies[:counted], "errors": errors}

    return timed


def client_consume(bootstrap: str, topic: str, partitions: int, count: int) -> Callable[[], dict]:
    import confluent_kafka

    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, **COMMON_CLIENT, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest", "enable.partition.eof": False,
        # librdkafka >= 2.4 postpones the next fetch by fetch.queue.backoff.ms (default 1 s) once
        # queued.min.messages (default 100k) are buffered: with 256 B messages that stalls the
        # consumer for whole seconds whatever the broker does (measured: 0.2-2M msg/s at random).
        "fetch.queue.backoff.ms": 1, "queued.min.messages": 1_000_000,
    })
    consumer.list_topics(topic, timeout=10)

    def timed() -> dict:
        started = time.monotonic()
        consumer.assign([confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in range(partitions)])
        got = nbytes = 0
        errors: list[str] = []
        idle_deadline = time.monotonic() + 30
        while got < count:
            batch = consumer.consume(num_messages=10_000, timeout=1.0)
            if not batch:
                if time.monotonic() > idle_deadline:
                    raise TimeoutError(f"consumed {got} of {count}: nothing arrived for 30 s")
                continue
            idle_deadline = time.monotonic() + 30
            for message in batch:
                if message.error() is not None:
                    if len(errors) < 5:
                        errors.append(str(message.error()))
                    continue
                got += 1
                nbytes += len(message)
        finished = time.monotonic()
        consumer.close()
        return {"started": started, "finished": finished, "count": got, "bytes": nbytes, "errors": errors}

    return timed


def client_create_topics(bootstrap: str, prefix: str, count: int, replication_factor: int) -> Callable[[], dict]:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **COMMON_CLIENT})
    admin.create_topics([NewTopic(f"{prefix}-warmup", 1, replication_factor)])[f"{prefix}-warmup"].result(30)

    def timed() -> dict:
        latencies: list[float] = []
        started = time.monotonic()
        for i in range(count):
            name = f"{prefix}-{i}"
            t = time.perf_counter()
            admin.create_topics([NewTopic(name, 1, replication_factor)], operation_timeout=30)[name].result(30)
            latencies.append(time.perf_counter() - t)
        finished = time.monotonic()
        return {"started": started, "finished": finished, "count": count, "latencies": latencies, "errors": []}

    return timed


CLIENTS: dict[str, ClientFunction] = {
    "batch_produce": client_batch_produce,
    "closed_loop": client_closed_loop,
    "consume": client_consume,
    "create_topics": client_create_topics,
}


# --------------------------------------------------------------------------------------------
# Broker side


def check_broker_alive(broker: BrokerProcess | None) -> None:
    if broker is not None and broker.proc is not None and broker.proc.poll() is not None:
        raise RuntimeError(f"the broker exited with status {broker.proc.returncode}")


def rss_mb(pid: int, key: str = "VmRSS") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, all threads (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_metadata(bootstrap: str, timeout: float, broker: BrokerProcess | None = None) -> float:
    """Poll Metadata until it succeeds; return the monotonic time it did."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, **COMMON_CLIENT})
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=max(0.05, min(1.0, deadline - time.monotonic())))
            return time.monotonic()
        except Exception as exc:  # KafkaException while the broker is not up yet
            check_broker_alive(broker)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no successful Metadata from {bootstrap} within {timeout:.0f} s: {exc}") from exc
            time.sleep(0.005)


def create_topic(bootstrap: str, name: str, partitions: int, replication_factor: int, *, exist_ok: bool = False) -> None:
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **COMMON_CLIENT})
    try:
        admin.create_topics([NewTopic(name, partitions, replication_factor)])[name].result(30)
    except KafkaException as exc:
        if not (exist_ok and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS):
            raise


def high_watermark_sum(bootstrap: str, topic: str, partitions: int) -> int:
    """Records stored in a fresh topic, by its high watermarks (ListOffsets latest)."""
    import confluent_kafka

    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, **COMMON_CLIENT, "group.id": "bench-watermarks"})
    try:
        return sum(consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=10)[1] for p in range(partitions))
    finally:
        consumer.close()


# --------------------------------------------------------------------------------------------
# Workloads: each returns a Row


class Bench:
    def __init__(self, args: argparse.Namespace, bootstrap: str, broker: BrokerProcess | None, broker_pid: int | None) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.broker = broker
        self.broker_pid = broker_pid
        self.run_id = uuid.uuid4().hex[:6]
        self.consume_topic: str | None = None
        # Clients warm up on this topic (see _producer); created here for brokers without auto-creation.
        create_topic(bootstrap, WARMUP_TOPIC, 1, args.replication_factor, exist_ok=True)

    def topic(self, name: str) -> str:
        topic = f"bench-{self.run_id}-{name}"
        create_topic(self.bootstrap, topic, self.args.partitions, self.args.replication_factor)
        return topic

    def batch_produce(self, workload: str, acks: str, topic: str | None = None) -> Row:
        topic = topic or self.topic(workload)
        n, producers = self.args.messages, self.args.producers
        shares = [n // producers + (1 if i < n % producers else 0) for i in range(producers)]
        outs = run_clients(
            "batch_produce",
            [dict(bootstrap=self.bootstrap, topic=topic, partitions=self.args.partitions, count=c, acks=acks,
                  linger_ms=self.args.linger_ms) for c in shares],
            self.args.timeout, self.broker,
        )
        if acks == "all":
            self.consume_topic = topic
        row = self._throughput_row(workload, outs)
        deadline = time.monotonic() + 5  # a broker may publish its high watermark a little after the ack
        while (stored := high_watermark_sum(self.bootstrap, topic, self.args.partitions)) != n and time.monotonic() < deadline:
            time.sleep(0.1)
        row.extra["high_watermark_sum"] = stored
        if stored != n and row.error is None:
            row.error = f"{n} messages acknowledged but the high watermarks add up to {stored}"
        return row

    def warm_broker(self, count: int) -> None:
        """Untimed: produce ``count`` messages (acks=all) and read them back, so that a JIT-compiled broker
        (Kafka) is measured warm, as in production; Chronik gets the same.  After idle-rss."""
        topic = self.topic("broker-warmup")
        outs = run_clients("batch_produce", [dict(bootstrap=self.bootstrap, topic=topic, partitions=self.args.partitions,
                                                  count=count, acks="all", linger_ms=self.args.linger_ms)],
                           self.args.timeout, self.broker)
        outs += run_clients("consume", [dict(bootstrap=self.bootstrap, topic=topic, partitions=self.args.partitions,
                                             count=count)], self.args.timeout, self.broker)
        errors = [e for o in outs for e in o["errors"]]
        if errors:
            raise RuntimeError(f"broker warm-up: {errors[:3]}")

    def consume(self) -> Row:
        if self.consume_topic is None:  # fill a topic first (not timed)
            self.batch_produce("consume-fill", "all")
        outs = run_clients(
            "consume",
            [dict(bootstrap=self.bootstrap, topic=self.consume_topic, partitions=self.args.partitions, count=self.args.messages)],
            self.args.timeout, self.broker,
        )
        row = self._throughput_row("consume", outs)
        row.mb_per_s = outs[0]["bytes"] / row.seconds / 1e6 if row.seconds else None
        return row

    def closed_loop(self, workload: str, in_flight: int) -> Row:
        topic = self.topic(workload)
        outs = run_clients(
            "closed_loop", [dict(bootstrap=self.bootstrap, topic=topic, in_flight=in_flight, seconds=self.args.seconds)],
            self.args.seconds + self.args.timeout, self.broker,
        )
        row = self._throughput_row(workload, outs)
        latencies = outs[0]["latencies"]
        row.p50_ms, row.p99_ms = percentile_ms(latencies, 0.5), percentile_ms(latencies, 0.99)
        return row

    def create_topics(self) -> Row:
        outs = run_clients(
            "create_topics",
            [dict(bootstrap=self.bootstrap, prefix=f"bench-{self.run_id}-ct", count=self.args.topics,
                  replication_factor=self.args.replication_factor)],
            self.args.timeout, self.broker,
        )
        row = self._throughput_row("create-topics", outs)
        row.mb_per_s = None
        latencies = outs[0]["latencies"]
        row.p50_ms, row.p99_ms = percentile_ms(latencies, 0.5), percentile_ms(latencies, 0.99)
        return row

    def _throughput_row(self, workload: str, outs: list[dict[str, Any]]) -> Row:
        count = sum(o["count"] for o in outs)
        seconds = max(o["finished"] for o in outs) - min(o["started"] for o in outs)
        errors = [e for o in outs for e in o["errors"]]
        return Row(
            workload, msgs_per_s=count / seconds, mb_per_s=count * MESSAGE_BYTES / seconds / 1e6, count=count,
            seconds=seconds, error=f"delivery errors: {errors[:3]}" if errors else None,
        )

    def idle_rss(self) -> Row:
        if self.broker_pid is None:
            return Row("idle-rss", error="skipped: needs the own broker or --broker-pid")
        time.sleep(self.args.idle_seconds)
        return Row("idle-rss", rss_mb=rss_mb(self.broker_pid), extra={"idle_seconds": self.args.idle_seconds})

    def run(self, workload: str) -> Row:
        cpu_before = cpu_seconds(self.broker_pid) if self.broker_pid else None
        if not self.args.py_spy or self.broker_pid is None or workload == "idle-rss":
            row = self._run(workload)
        else:
            with py_spy_recording(self.broker_pid, Path(self.args.py_spy), workload, self.args.py_spy_format,
                                  self.args.py_spy_rate, self.args.py_spy_native):
                row = self._run(workload)
        cpu_after = cpu_seconds(self.broker_pid) if self.broker_pid else None
        if cpu_before is not None and cpu_after is not None:
            # Includes the untimed preparation (topic creation, client warm-up): small next to the timed part.
            row.broker_cpu_s = cpu_after - cpu_before
        return row

    def _run(self, workload: str) -> Row:
        if workload == "produce-acks1":
            return self.batch_produce(workload, "1")
        if workload == "produce-acksall":
            return self.batch_produce(workload, "all")
        if workload == "consume":
            return self.consume()
        if workload == "inflight-128":
            return self.closed_loop(workload, 128)
        if workload == "inflight-1":
            return self.closed_loop(workload, 1)
        if workload == "create-topics":
            return self.create_topics()
        if workload == "idle-rss":
            return self.idle_rss()
        raise ValueError(workload)


@contextlib.contextmanager
def py_spy_recording(pid: int, directory: Path, workload: str, output_format: str, rate: int, native: bool) -> Iterator[None]:
    """Sample the broker with py-spy while the block runs (SIGINT makes py-spy write its file).

    Preparation (topic creation, client start-up) is inside the window too;
    the timed part dominates for the full-size workloads.
    """
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("--py-spy needs py-spy on PATH (pip install py-spy)")
    directory.mkdir(parents=True, exist_ok=True)
    suffix = {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}[output_format]
    out = directory / f"{workload}.{suffix}"
    recorder = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", output_format, "--output", str(out),
         *(["--native"] if native else ["--nonblocking"])],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(0.5)  # let py-spy attach
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            _, stderr = recorder.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            recorder.kill()
            _, stderr = recorder.communicate()
        if recorder.returncode not in (0, -signal.SIGINT) or not out.exists():
            print(f"py-spy failed for {workload}: {stderr.strip()[-500:]}", file=sys.stderr)
        else:
            print(f"  profile: {out}", flush=True)


# --------------------------------------------------------------------------------------------
# Output


def fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def write_json_report(path: str, fields: dict[str, Any], rows: list[Row]) -> None:
    """Write ``fields`` plus the rows (each with its targets and the fraction reached) to ``path`` as JSON."""
    report = fields | {"rows": [
        asdict(r) | {"cpu_s_per_million": r.cpu_s_per_million,
                     "targets": [{"label": t.label, "value": t.value, "fraction": f} for t, f in r.target_fractions()]}
        for r in rows
    ]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2))
    print(f"json: {path}")


def print_table(rows: list[Row]) -> None:
    header = (f"{'workload':<17}{'msg/s':>11}{'MB/s':>8}{'p50 ms':>9}{'p99 ms':>9}  {'target':<30}{'vs target':>10}"
              f"{'broker CPU':>12}{'CPU s/M':>10}")
    print(header)
    print("-" * len(header))
    for row in rows:
        if row.error and row.msgs_per_s is None and row.p50_ms is None and row.rss_mb is None:
            print(f"{row.workload:<17}  ERROR: {row.error.splitlines()[0]}")
            continue
        targets = row.target_fractions()
        label = "; ".join(t.label for t, _ in targets)
        fractions = [f for _, f in targets]
        if row.workload == "startup":
            label = f"start-up {row.p50_ms:.0f} ms, {label}"
        if row.workload == "idle-rss":
            label = f"RSS {row.rss_mb:.1f} MB, {label}"
        verdict = ""
        if fractions and all(f is not None for f in fractions):
            worst = min(fractions)  # type: ignore[type-var]
            verdict = f"{worst:.2f}x {'ok' if worst >= 1 else 'MISS'}"
        p50 = None if row.workload == "startup" else row.p50_ms
        cpu = ""
        if row.broker_cpu_s is not None and row.seconds:
            cpu = f"{row.broker_cpu_s:.1f}s {100 * row.broker_cpu_s / row.seconds:.0f}%"
        print(
            f"{row.workload:<17}{fmt(row.msgs_per_s, ',.0f'):>11}{fmt(row.mb_per_s, '.1f'):>8}"
            f"{fmt(p50, '.3f'):>9}{fmt(row.p99_ms, '.3f'):>9}  {label:<30}{verdict:>10}{cpu:>12}"
            f"{fmt(row.cpu_s_per_million, '.1f'):>10}"
        )
        if row.error:
            print(f"{'':<17}  WARNING: {row.error.splitlines()[0]}")
    print("vs target: fraction of the target reached (>= 1.00 met; for 'at most' targets it is target / measured)")
    print("broker CPU: CPU seconds the broker used during the workload (preparation included), and per second of timed run;"
          " CPU s/M: those seconds per million messages (topics for create-*)")


def machine_note() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in load], "python": platform.python_version(),
            "platform": platform.platform()}


# --------------------------------------------------------------------------------------------


def apply_size_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace, workloads: Any,
                        *, quick_messages: int) -> None:
    """Fill the size options left unset (``--quick`` or full size) and check ``--workloads``."""
    args.messages = args.messages or (quick_messages if args.quick else 1_000_000)
    args.seconds = args.seconds or (5.0 if args.quick else 10.0)
    args.topics = args.topics or (200 if args.quick else 1000)
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workloads) - set(workloads)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="measure this running broker instead of starting Chronik")
    parser.add_argument("--broker-pid", type=int, help="with --bootstrap: the broker's pid, for idle-rss")
    parser.add_argument("--peer", default="", metavar="NAMES",
                        help="also run every workload against these peers, started here, and print Chronik/peer ratios:"
                             " comma-separated kafka (both modes), kafka-default, kafka-durable, tansu (bench/peers.py)")
    parser.add_argument("--broker-warmup", type=int, default=0, metavar="N",
                        help="before the timed workloads (after idle-rss), produce and consume N messages untimed on"
                             " every broker, so that a JIT (Kafka's JVM) is warm; default 0")
    parser.add_argument("--kafka-heap", default="1G", help="-Xmx/-Xms of the Kafka peer (kafka-server-start.sh's default)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated subset of {', '.join(WORKLOADS)}")
    parser.add_argument("--messages", type=int, help="N for produce/consume (default 1,000,000; 100,000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: 100k messages, 5 s loops, 200 topics")
    parser.add_argument("--seconds", type=float, help="duration of the closed loops (default 10; 5 with --quick)")
    parser.add_argument("--topics", type=int, help="topics created by create-topics (default 1000; 200 with --quick)")
    parser.add_argument("--producers", type=int, default=1, help="producer processes for the batch produce workloads")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of each benchmark topic")
    parser.add_argument("--replication-factor", type=int, default=1)
    parser.add_argument("--linger-ms", type=float, default=5.0, help="linger.ms of the batch producers")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-workload timeout in seconds")
    parser.add_argument("--idle-seconds", type=float, default=2.0, help="idle time before reading idle RSS")
    parser.add_argument("--data-parent", default=None, help="where the own broker's temporary data dir goes (default: cwd, a real disk; not tmpfs)")
    parser.add_argument("--keep-data", action="store_true", help="keep the own broker's data directory")
    parser.add_argument("--broker-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for `chronik serve` (repeatable; shell-split), e.g. --broker-arg='--wal-profile throughput'")
    parser.add_argument("--json", help="write the rows as JSON here")
    parser.add_argument("--py-spy", metavar="DIR", help="record the broker with py-spy during each workload into DIR/<workload>.svg (own broker or --broker-pid)")
    parser.add_argument("--py-spy-rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--py-spy-native", action="store_true", help="py-spy --native: C frames too (pauses the broker per sample)")
    parser.add_argument("--py-spy-format", default="flamegraph", choices=("flamegraph", "speedscope", "raw"),
                        help="py-spy output format (raw: collapsed stacks, one line per stack with its sample count)")
    args = parser.parse_args(argv)
    apply_size_defaults(parser, args, WORKLOADS, quick_messages=100_000)
    try:
        args.peer = peers.parse_peers(args.peer)
    except ValueError as exc:
        parser.error(str(exc))
    if args.peer and args.bootstrap:
        parser.error("--peer starts its peers itself; it does not combine with --bootstrap")
    if args.producers < 1 or args.partitions < 1 or args.messages < 1:
        parser.error("--producers, --partitions and --messages must be positive")
    return args


@dataclass
class Measured:
    """One broker's rows from a run (Chronik, a peer, or the one at --bootstrap)."""

    broker: str  # "chronik", a peers.PEERS name, or "external"
    rows: list[Row]
    failed: bool
    bootstrap: str | None = None
    peak_rss_mb: float | None = None


def start_own_broker(args: argparse.Namespace, name: str, data_dir: str) -> tuple[Any, float]:
    """Start Chronik or a peer (peers.py) on a fresh directory; return it and the monotonic time it was spawned."""
    if name == "chronik":
        extra = [a for arg in args.broker_arg for a in shlex.split(arg)]
        broker: Any = BrokerProcess(Path(data_dir), *extra)
        spawned = time.monotonic()
        broker.start(timeout=30)
        if broker.port == 0:  # its output ended before the listening line: it exited
            broker.proc.wait(10)
            raise RuntimeError(f"the broker exited during start-up (status {broker.proc.returncode})")
        return broker, spawned
    broker = peers.peer_nodes(name, Path(data_dir), heap=args.kafka_heap)[1]  # formatted: not part of start-up
    spawned = time.monotonic()
    broker.start()
    return broker, spawned


def measure(args: argparse.Namespace, name: str) -> Measured:
    """Run the selected workloads against one broker, started here unless ``name`` is "external"."""
    rows: list[Row] = []
    broker: Any = None
    data_dir: str | None = None
    bootstrap = args.bootstrap
    broker_pid = args.broker_pid
    failed = False
    try:
        if name != "external":
            data_dir = tempfile.mkdtemp(prefix=f"{name}-bench-", dir=args.data_parent or os.getcwd())
            broker, spawned = start_own_broker(args, name, data_dir)
            bootstrap, broker_pid = broker.bootstrap, broker.proc.pid
            up = wait_for_metadata(bootstrap, 60, broker)
            if "startup" in args.workloads:
                rows.append(Row("startup", p50_ms=(up - spawned) * 1000))
        else:
            wait_for_metadata(bootstrap, 30)
            if "startup" in args.workloads:
                rows.append(Row("startup", error="skipped: the broker was started elsewhere (--bootstrap)"))
        load = machine_note()
        print(f"{peers.TITLES.get(name, name)}: broker {bootstrap}" + (f" (pid {broker_pid})" if broker_pid else "")
              + f", {args.messages:,} x {MESSAGE_BYTES} B, load average {load['loadavg']}, {load['cpus']} cpus", flush=True)
        bench = Bench(args, bootstrap, broker, broker_pid)
        warm = args.broker_warmup <= 0
        for workload in (w for w in WORKLOADS if w in args.workloads and w != "startup"):
            try:
                check_broker_alive(broker)
                if not warm and workload != "idle-rss":
                    warm = True
                    bench.warm_broker(args.broker_warmup)
                row = bench.run(workload)
            except Exception as exc:  # noqa: BLE001 - one failed workload fails its row, not the run
                row = Row(workload, error=f"{type(exc).__name__}: {exc}")
            rows.append(row)
            failed |= row.error is not None and not row.error.startswith("skipped")
            print(f"  {workload}: " + (row.error.splitlines()[0] if row.error and row.msgs_per_s is None else "done"), flush=True)
            if broker is not None and broker.proc is not None and broker.proc.poll() is not None:
                print("the broker died; skipping the remaining workloads", file=sys.stderr)
                break
    except Exception as exc:  # noqa: BLE001
        print(f"benchmark of {name} aborted: {type(exc).__name__}: {exc}", file=sys.stderr)
        failed = True
    finally:
        broker_peak = rss_mb(broker_pid, "VmHWM") if broker_pid else None
        stop_own_broker(name, broker, data_dir, failed=failed, keep_data=args.keep_data)
    for row in rows:
        row.extra["broker"] = name
    return Measured(name, rows, failed, bootstrap, broker_peak)


def stop_own_broker(name: str, broker: Any, data_dir: Any, *, failed: bool, keep_data: bool) -> None:
    """Stop a broker this script started (killed if it will not stop), after printing its last
    log lines if the benchmark failed or the broker died; remove its data unless ``keep_data``."""
    if broker is not None:
        if failed or (broker.proc is not None and broker.proc.poll() is not None):
            print(f"---- {name} log (last 30 lines) ----\n" + "\n".join(broker.log_lines[-30:]), file=sys.stderr)
        try:
            broker.stop(timeout=30)
        except Exception:  # noqa: BLE001 - a broker that will not stop is killed
            broker.kill()
    if data_dir is not None and not keep_data:
        shutil.rmtree(data_dir, ignore_errors=True)


# Comparison: (workload, Row field, label, higher is better)
COMPARED: list[tuple[str, str, str, bool]] = [
    ("startup", "p50_ms", "start-up ms", False),
    ("idle-rss", "rss_mb", "idle RSS MB", False),
    ("produce-acks1", "msgs_per_s", "msg/s", True),
    ("produce-acks1", "cpu_s_per_million", "CPU s/M msg", False),
    ("produce-acksall", "msgs_per_s", "msg/s", True),
    ("produce-acksall", "cpu_s_per_million", "CPU s/M msg", False),
    ("consume", "msgs_per_s", "msg/s", True),
    ("consume", "cpu_s_per_million", "CPU s/M msg", False),
    ("inflight-128", "msgs_per_s", "msg/s", True),
    ("inflight-128", "p50_ms", "p50 ms", False),
    ("inflight-128", "p99_ms", "p99 ms", False),
    ("inflight-128", "cpu_s_per_million", "CPU s/M msg", False),
    ("inflight-1", "msgs_per_s", "msg/s", True),
    ("inflight-1", "p50_ms", "p50 ms", False),
    ("inflight-1", "p99_ms", "p99 ms", False),
    ("inflight-1", "cpu_s_per_million", "CPU s/M msg", False),
    ("create-topics", "msgs_per_s", "topics/s", True),
    ("create-topics", "p50_ms", "p50 ms", False),
]


def comparison_lines(results: list[Measured], compared: list[tuple[str, str, str, bool]] = COMPARED) -> list[str]:
    """A Markdown table: one line per (workload, metric), a column per broker, then Chronik/peer ratios.

    A ratio is Chronik's figure divided by the peer's, measured in the same run;
    whether above 1 is better depends on the metric (the "better" column).
    """
    by_broker = {m.broker: {r.workload: r for r in m.rows} for m in results}
    names = [m.broker for m in results]
    peer_names = [n for n in names if n != "chronik"]

    def value(name: str, workload: str, metric: str) -> float | None:
        row = by_broker[name].get(workload)
        v = None if row is None else getattr(row, metric)
        return None if v is None or v != v else float(v)

    warnings: dict[tuple[str, str], str] = {}
    for m in results:
        for r in m.rows:
            if r.error and not r.error.startswith("skipped"):
                warnings[(m.broker, r.workload)] = r.error.splitlines()[0]

    def cell(name: str, workload: str, v: float | None) -> str:
        text = "—" if v is None else f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
        return text + (" ⚠" if v is not None and (name, workload) in warnings else "")

    header = ["workload", "metric", *(peers.TITLES.get(n, n) for n in names), "better",
              *(f"Chronik / {peers.TITLES.get(n, n)}" for n in peer_names)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    workloads = {r.workload for m in results for r in m.rows}
    for workload, metric, label, higher in compared:
        if workload not in workloads:
            continue
        values = {n: value(n, workload, metric) for n in names}
        if all(v is None for v in values.values()):
            continue
        ratios = []
        for n in peer_names:
            c, p = values.get("chronik"), values[n]
            ratios.append(f"{c / p:.2f}×" if c is not None and p else "—")
        lines.append("| " + " | ".join([workload, label, *(cell(n, workload, values[n]) for n in names),
                                        "higher" if higher else "lower", *ratios]) + " |")
    lines += [f"\n⚠ {peers.TITLES.get(n, n)} {w}: {e}" for (n, w), e in warnings.items()]
    return lines


def check_peers(names: list[str]) -> None:
    """Fail early, with one line, when a peer cannot run here (PeerUnavailable)."""
    if any(n.startswith("kafka") for n in names):
        peers.java_binary()
        peers.kafka_classpath()
    if "tansu" in names:
        peers.tansu_binary()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = ["external"] if args.bootstrap else ["chronik", *args.peer]
    try:
        check_peers(names)
    except peers.PeerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    load_before = machine_note()
    results = [measure(args, name) for name in names]
    for result in results:
        print()
        if len(results) > 1:
            print(f"## {peers.TITLES.get(result.broker, result.broker)}")
        print_table(result.rows)
        if result.peak_rss_mb:
            print(f"broker peak RSS {result.peak_rss_mb:.1f} MB")
    load_after = machine_note()
    print(f"load average before {load_before['loadavg']}, after {load_after['loadavg']}; {load_after['cpus']} cpus")
    if len(results) > 1:
        print()
        print("\n".join(comparison_lines(results)))
        print("Chronik / peer: Chronik's figure divided by the peer's, same run, same clients;"
              " 'better' says which direction is better for Chronik.")
    if args.json:
        write_json_report(args.json, {
            "bootstrap": results[0].bootstrap, "own_broker": args.bootstrap is None, "broker_args": args.broker_arg,
            "peers": args.peer, "messages": args.messages, "message_bytes": MESSAGE_BYTES, "seconds": args.seconds,
            "topics": args.topics, "producers": args.producers, "partitions": args.partitions,
            "machine_before": load_before, "machine_after": load_after,
            "broker_peak_rss_mb": {r.broker: r.peak_rss_mb for r in results},
            "comparison_markdown": comparison_lines(results) if len(results) > 1 else None,
        }, [row for r in results for row in r.rows])
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
