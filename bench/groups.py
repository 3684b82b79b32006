"""Consumer-group benchmark: how fast members get their first record, and how fast one consumer commits.

Run:  python bench/groups.py [--initial-delay-ms 3000] [--members 1,10] [--commits 5000]
                             [--bootstrap HOST:PORT] [--json out.json]

Without ``--bootstrap`` the script starts its own ``python -m chronik serve``
(fresh data directory, port 0, ``--group-initial-rebalance-delay-ms`` as
given) and stops it at the end.  Clients are confluent-kafka (librdkafka).

Workloads:

  first-record-N  N consumers (threads), each connected and warmed up (cluster
                  metadata fetched), subscribe to a pre-filled topic of N
                  partitions at the same instant; the time from subscribe()
                  to each member's first record.  The group has committed
                  offsets (as a restarting application does).  Target: every
                  member within the initial rebalance delay + 100 ms.
  first-record-N-reset  the same for a new group without committed offsets
                  (informational: librdkafka then resets the offset with a
                  ListOffsets it schedules ~100 ms later, whatever the broker).
  commit-sync     one consumer reads a pre-filled partition and commits after
                  every message, synchronously (commit(asynchronous=False)):
                  commits/s.  Target: >= 5,000 commits/s.
  commit-async    the same with asynchronous commits after every message (the
                  client pipelines them) and one final synchronous commit.

Prints one table (workload, result, target, met?) and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import confluent_kafka  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from tests.integration.brokerproc import BrokerProcess  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from stats import Row, report  # noqa: E402

COMMIT_TARGET_PER_S = 5000.0
FIRST_RECORD_SLACK_MS = 100.0


def create_filled_topic(bootstrap: str, topic: str, partitions: int, per_partition: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(partitions * per_partition):
        producer.produce(topic, value=b"x" * 100, partition=i % partitions)
    if producer.flush(30):
        raise RuntimeError("could not fill the topic")


def first_record(bootstrap: str, members: int, initial_delay_ms: float, committed: bool) -> Row:
    name = f"first-record-{members}" + ("" if committed else "-reset")
    topic = group = f"{name}-{time.time_ns()}"
    create_filled_topic(bootstrap, topic, members, 10)
    if committed:
        committer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        committer.commit(offsets=[confluent_kafka.TopicPartition(topic, p, 0) for p in range(members)], asynchronous=False)
        committer.close()
    consumers = []
    for _ in range(members):
        consumer = confluent_kafka.Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        consumer.list_topics(topic, timeout=10)  # connected, metadata known
        consumers.append(consumer)
    go = threading.Barrier(members)
    latencies_ms: list[float] = []
    assigned_ms: list[float] = []
    failures: list[str] = []

    def member(consumer: confluent_kafka.Consumer) -> None:
        go.wait()
        started = time.perf_counter()

        def on_assign(c: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]) -> None:
            assigned_ms.append((time.perf_counter() - started) * 1000)

        consumer.subscribe([topic], on_assign=on_assign)
        deadline = started + 60
        while time.perf_counter() < deadline:
            message = consumer.poll(0.01)
            if message is not None and message.error() is None:
                latencies_ms.append((time.perf_counter() - started) * 1000)
                return
        failures.append("no record within 60 s")

    threads = [threading.Thread(target=member, args=(c,)) for c in consumers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for consumer in consumers:
        consumer.close()
    if failures:
        return Row(name, "; ".join(failures), "", False, {})
    limit = initial_delay_ms + FIRST_RECORD_SLACK_MS
    worst = max(latencies_ms)
    return Row(
        name,
        f"max {worst:.0f} ms, median {statistics.median(latencies_ms):.0f} ms (assigned after {max(assigned_ms):.0f})",
        f"<= {limit:.0f} ms" if committed else "(info)",
        worst <= limit if committed else None,
        {"max_ms": worst, "median_ms": statistics.median(latencies_ms), "min_ms": min(latencies_ms),
         "max_assigned_ms": max(assigned_ms)},
    )


def commit_rate(bootstrap: str, count: int, asynchronous: bool) -> Row:
    topic = group = f"commit-{'async' if asynchronous else 'sync'}-{time.time_ns()}"
    create_filled_topic(bootstrap, topic, 1, count)
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10,
    })
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
    first = consumer.poll(10)  # warm up: fetch and coordinator known
    assert first is not None and first.error() is None, first and first.error()
    consumer.commit(first, asynchronous=False)
    started = time.perf_counter()
    committed = 0
    last = first
    while committed < count - 1:
        message = consumer.poll(10)
        if message is None:
            break
        if message.error() is not None:
            continue
        consumer.commit(message, asynchronous=asynchronous)
        committed += 1
        last = message
    if asynchronous:
        consumer.commit(last, asynchronous=False)
    elapsed = time.perf_counter() - started
    fetched = consumer.committed([confluent_kafka.TopicPartition(topic, 0)], timeout=10)[0].offset
    consumer.close()
    rate = committed / elapsed
    name = "commit-async" if asynchronous else "commit-sync"
    ok = fetched == last.offset() + 1
    return Row(name, f"{rate:,.0f} commits/s ({committed} in {elapsed:.2f} s){'' if ok else ' LOST COMMIT'}",
               f">= {COMMIT_TARGET_PER_S:,.0f}/s", ok and rate >= COMMIT_TARGET_PER_S,
               {"commits_per_s": rate, "commits": committed, "seconds": elapsed})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--initial-delay-ms", type=int, default=3000, help="group.initial.rebalance.delay.ms of the broker")
    parser.add_argument("--members", default="1,10", help="comma-separated member counts for first-record")
    parser.add_argument("--commits", type=int, default=5000, help="commits per commit workload")
    parser.add_argument("--bootstrap", help="measure this broker instead of starting one")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args()

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        data = Path(tempfile.mkdtemp(prefix="chronik-bench-groups-")) / "data"
        broker = BrokerProcess(data, "--group-initial-rebalance-delay-ms", str(args.initial_delay_ms)).start()
        bootstrap = broker.bootstrap
    rows: list[Row] = []
    try:
        for members in (int(m) for m in args.members.split(",")):
            rows.append(first_record(bootstrap, members, args.initial_delay_ms, committed=True))
            rows.append(first_record(bootstrap, members, args.initial_delay_ms, committed=False))
        rows.append(commit_rate(bootstrap, args.commits, asynchronous=False))
        rows.append(commit_rate(bootstrap, args.commits, asynchronous=True))
    finally:
        if broker is not None:
            broker.stop()
    return report(rows, args.json, workload_width=22, result_width=62)


if __name__ == "__main__":
    sys.exit(main())
